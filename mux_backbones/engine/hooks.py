"""Training hooks of the suite (registered in mmengine's HOOKS, so every scope finds them)."""
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..tuning import choose_training_kernels, kernel_layers


def _is_device_type(name: str) -> bool:
    """Whether torch knows ``name`` as a device type (``'cuda'``, not ``'cuda:0'`` or ``'gpu'``)."""
    try:
        return torch.device(name).type == name
    except RuntimeError:
        return False


@HOOKS.register_module()
class EvaluateBeforeTrainHook(Hook):
    """Run the validation loop once before the first training iteration.

    Gives the "before" metric of a run (e.g. the mAP/mIoU of the untrained model) in the same log
    and with the same evaluator as the "after" one. Skipped when resuming mid-run.
    """

    priority = 'LOW'

    def before_train(self, runner) -> None:
        if runner.iter > 0 or runner.val_loop is None:
            return
        runner.logger.info('Evaluating the model before training')
        runner.val_loop.run()


@HOOKS.register_module()
class ChannelsLastHook(Hook):
    """Keep the model's 4-D weights, and so its activations, in channels-last memory format.

    Mobile nets are dominated by depth-wise and small grouped convs, which oneDNN runs much faster
    on channels-last (NHWC) tensors: a training step of SSDLite-MUXNet-m at batch 8, 320x320 on 2
    CPU cores drops from 1.25 s to 0.80 s. The conv kernels follow the weights' layout, so NCHW
    batches from the data preprocessor switch to NHWC at the first conv. The parameters stay the
    same objects (the optimizer keeps them) and checkpoints load either way.

    Args:
        devices (str | Sequence[str]): Device type(s) to apply it on. Default: ``('cpu', )``:
            on CUDA, cuDNN has no fast NHWC half-precision kernel for 2-channels-per-group convs.
    """

    priority = 'VERY_HIGH'

    def __init__(self, devices=('cpu', )):
        # One name is one device type, not the letters of one ('cuda' -> 'c', 'u', ...).
        self.devices = (devices, ) if isinstance(devices, str) else tuple(devices)
        for device in self.devices:
            if not isinstance(device, str) or not _is_device_type(device):
                raise ValueError(f'ChannelsLastHook: devices must be device types such as '
                                 f'"cpu" or "cuda", got {device!r}')

    def before_run(self, runner) -> None:
        param = next(runner.model.parameters(), None)
        if param is None or param.device.type not in self.devices:
            return
        runner.model.to(memory_format=torch.channels_last)
        runner.logger.info(f'ChannelsLastHook: model weights in channels-last format on '
                           f'{param.device.type}')


@HOOKS.register_module()
class ChooseTrainingKernelsHook(Hook):
    """Before training, keep the suite's kernels only in the spatial convs where they are faster.

    For a MUXNet backbone built with ``fused_ops=True``: runs
    :func:`mux_backbones.tuning.choose_training_kernels` on the backbone with one batch of the
    training data, preprocessed and under the optimizer wrapper's autocast as a training step
    has it, so each spatial conv trains in whichever form -- the kernel, the stock conv (cuDNN,
    oneDNN), or the stock forward with the kernel's gradients -- ran its forward + backward
    fastest on this device. Use it in a config as
    ``custom_hooks = [dict(type='ChooseTrainingKernelsHook')]``; the checkpoint is the same
    either way. Runs on resuming too (the choice is not saved). Where the timing fails on the
    device, it says so in the log and training goes on with the layers as configured.
    """

    priority = 'LOW'  # after ChannelsLastHook and anything else that changes the model

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        backbone = getattr(model, 'backbone', model)
        if not kernel_layers(backbone):
            runner.logger.info('ChooseTrainingKernelsHook: the backbone has no layer with '
                               '`fused_ops=True`: nothing to choose')
            return
        data = model.data_preprocessor(next(iter(runner.train_dataloader)), True)
        try:
            with runner.optim_wrapper.optim_context(model):
                choose_training_kernels(backbone, data['inputs'])
        except RuntimeError as error:  # an optional speed-up must not end the run
            runner.logger.warning(f'ChooseTrainingKernelsHook: timing the layers failed '
                                  f'({error}); training with the kernels as configured')
