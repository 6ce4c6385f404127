"""Deploy (inference) mode: a walker that puts every layer of a model into its deploy form.

``switch_to_deploy(model)`` rewrites a model in place for inference, same outputs:

* a layer that owns a deploy form (MUXNet's blocks, channel multiplexing, squeeze-excite: their
  ``switch_to_deploy`` methods, next to their training forms in :mod:`mux_backbones.layers`;
  also other libraries' re-parameterisable blocks) switches itself;
* every mmcv ``ConvModule`` (conv -> BN -> act) becomes one conv with a bias and its activation
  (:func:`mux_backbones.layers.conv_bn.deploy_conv_module`) -- so it works on any OpenMMLab model
  (mmdet's/mmseg's MobileNetV2 too), and a benchmark can give a baseline the same treatment.

With ``fused_ops=True`` MUXNet's spatial convs take the fused Triton kernel
(:mod:`mux_backbones.ops.group_conv`), the squeeze-excite gate its one-launch op, and a block's
expand conv (with its activation) and project conv (with its residual or channel-multiplexing
interleave) the epilogue GEMM (:mod:`mux_backbones.ops.pointwise_conv`); on an fp32 CPU model the
blocks whose spatial conv the C++ kernel computes faster than oneDNN (2 channels per group,
MixConv, a plain depth-wise conv with its activation in the epilogue) take the same fused form
on the ops' C++ kernels, the other blocks with a squeeze-excite (spatial multiplexing) its SE +
project tail after their stock spatial conv, every 1x1 conv the op's C++ GEMM (its activation,
residual add and interleave in the epilogue: faster than BLAS's product alone), and in
eager inference each of those blocks then runs as one C++ call
(:mod:`mux_backbones.layers.block_call`), and each stage of them (an ``nn.Sequential``) as one
call of its blocks' calls -- as do mmdet's MobileNetV2 blocks and stages, their depth-wise
convs on the same kernel, so that a baseline gets the same treatment (ONNX export and tracing
want the stock forms: the default ``fused_ops=None``); a CPU model's weights then go into one
buffer (:mod:`mux_backbones.utils.weight_buffer`); by default the
stock-path forms (merged MixConv kernels, pairwise rewrite of 2-channels-per-group convs).
``fused_ops='auto'`` times both forms of every block on the device with an example input (on CUDA
in CUDA-graph replays, as a captured or compiled model runs) and keeps the faster, so a deployed
model is never slower than either form layer by layer; its log names the blocks it kept
stock, and ``stock_blocks`` rebuilds that mix without timing.
Outputs equal the eval-mode outputs (tested to 1e-4 for every arch). Spatially multiplexed convs
keep their BN: a channel-to-space branch feeds four output channels from one conv channel, which
one folded bias per conv channel cannot express.

:func:`mux_backbones.tuning.tune_kernels` then times the fused kernels' launch configs call by
call on the device and keeps the fastest.
"""
import copy
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmcv.cnn import ConvModule
from mmdet.models.layers import InvertedResidual as MMDetInvertedResidual
from mmengine.logging import print_log
from torch import nn

from .layers import DepthwiseSeparable, FusedGroupConv, InvertedResidual
from .layers.block_call import DeployedInvertedResidual, OneCallStage
from .layers.conv_bn import ConvAct, deploy_conv_module
from .ops._cpu_kernels import cpu_kernels_take
from .utils.hooks import module_inputs
from .utils.timing import device_time_us
from .utils.weight_buffer import gather_weights


def switch_to_deploy(model: nn.Module, channels_last: bool = False,
                     fused_ops: Union[None, bool, str] = None,
                     example_input: Optional[torch.Tensor] = None,
                     gather: Optional[bool] = None,
                     stock_blocks: Sequence[str] = ()) -> nn.Module:
    """Rewrite ``model`` in place for inference (see module docstring) and put it in eval mode.

    Args:
        model (nn.Module): A MUXNet backbone/classifier, a detector/segmentor or any model made of
            mmcv ConvModules.
        channels_last (bool): Also convert the weights to channels-last memory format (feed the
            input in channels-last too).
        fused_ops (bool | str, optional): Use the suite's kernels for MUXNet's blocks (CUDA: the
            fused Triton forms; fp32 CPU: the C++ kernels, see above). None or False (default):
            the stock-path forms. ``'auto'``: per block, whichever form is faster on
            ``example_input``.
        example_input (Tensor, optional): For ``'auto'``: an input ``model(example_input)``
            takes, with the batch, size, dtype, device and memory format it will run with (the
            model may still be fp32: blocks are timed cast to the example's dtype). For a
            detector/segmentor, deploy its backbone this way first, then the whole model.
        gather (bool, optional): Put the deployed model's CPU weights into one buffer on huge
            pages (:func:`mux_backbones.utils.weight_buffer.gather_weights`: a few percent per
            CPU forward at batch 1). None (default): for a model with weights on the CPU.
        stock_blocks (Sequence[str]): MUXNet blocks, by module name, kept on the stock form
            whatever ``fused_ops`` says -- the names ``'auto'`` logs for the blocks it keeps
            there, so a mix it measured can be rebuilt without timing. Default: none.

    Returns:
        nn.Module: The same model object.

    Raises:
        ValueError: ``fused_ops`` is none of the above, ``'auto'`` lacks ``example_input``, or a
            name in ``stock_blocks`` is no MUXNet block of ``model`` not yet deployed.
    """
    model.eval()
    if fused_ops not in (None, True, False, 'auto'):
        raise ValueError(f"fused_ops must be True, False, None or 'auto', got {fused_ops!r}")
    stock = _named_blocks(model, stock_blocks)
    choices: Dict[int, bool] = {}
    if fused_ops == 'auto':
        if example_input is None:
            raise ValueError("fused_ops='auto' needs example_input (what the model will run on)")
        choices = _fastest_forms(model, example_input, channels_last, skip=stock)
        fused_ops = False
    choices.update((id(block), False) for block in stock)
    fused_ops = bool(fused_ops)
    if type(model).__module__.startswith('mux_backbones.layers.'):
        model.switch_to_deploy(fused_ops=choices.get(id(model), fused_ops))  # a single layer
    else:
        _walk(model, fused_ops, choices)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    param = next(model.parameters(), None)
    if gather or gather is None and param is not None and param.device.type == 'cpu':
        gather_weights(model)  # (last: moving or converting the model would undo it)
    return model


def _walk(module: nn.Module, fused_ops: bool, choices: Dict[int, bool]) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, ConvModule):
            deployed = deploy_conv_module(child)
            if fused_ops and isinstance(deployed, ConvAct) and \
                    cpu_kernels_take(deployed.conv.weight):  # a 1x1 conv: the op's CPU GEMM
                deployed.use_cpu_kernel()
            setattr(module, name, deployed)
        elif isinstance(child, MMDetInvertedResidual):  # (MobileNetV2's): its ConvModules, and
            _walk(child, fused_ops, choices)  # with fused_ops on a CPU the one-call runner too
            param = next(child.parameters(), None)
            cpu_kernels = fused_ops and param is not None and cpu_kernels_take(param)
            deployed = DeployedInvertedResidual.from_mmdet(child) if cpu_kernels else None
            if deployed is not None:
                setattr(module, name, deployed)
        elif hasattr(child, 'switch_to_deploy'):
            # (ours, or a user's subclass of ours: a MUXNet variant registered elsewhere)
            if any(cls.__module__.startswith('mux_backbones.') for cls in type(child).__mro__):
                # a block's own choice, or (channel multiplexing) its body's
                key = id(getattr(child, 'body', child))
                child.switch_to_deploy(fused_ops=choices.get(key, fused_ops))
            else:  # another library's re-parameterisable block (mmpretrain's MobileOne, ...)
                child.switch_to_deploy()
        else:
            _walk(child, fused_ops, choices)
            if fused_ops and OneCallStage.fits(child):  # its blocks' calls as one
                setattr(module, name, OneCallStage.from_sequential(child))


def _blocks(model: nn.Module) -> Dict[str, nn.Module]:
    """MUXNet's blocks of ``model`` not yet deployed, by module name (a channel-multiplexed
    block's is its body's: what runs the kernels)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, (InvertedResidual, DepthwiseSeparable)) and not m.deploy}


def _named_blocks(model: nn.Module, names: Sequence[str]) -> list:
    """The blocks ``names`` names (see :func:`_blocks`); ValueError naming any that is not one."""
    if isinstance(names, str):
        names = [names]
    blocks = _blocks(model) if names else {}
    unknown = [name for name in names if name not in blocks]
    if unknown:
        raise ValueError(f'stock_blocks: {unknown} name no MUXNet block of the model that is '
                         f'not yet deployed; its blocks: {list(blocks)}')
    return [blocks[name] for name in names]


# 'auto''s log line, and what comes before its stock blocks there
_AUTO_LOG, _STOCK_KEPT = "switch_to_deploy(fused_ops='auto'): ", '; stock form kept in '


def stock_blocks_logged(log: str) -> List[str]:
    """The blocks the first ``fused_ops='auto'`` log line in ``log`` says it kept on the stock
    form (none where it fused every block, or no such line): what ``stock_blocks`` takes to
    rebuild that model without timing."""
    line = next((line for line in log.splitlines() if _AUTO_LOG in line), '')
    return re.findall(r'([\w.]+) \(fused ', line.partition(_STOCK_KEPT)[2])


@torch.no_grad()
def _fastest_forms(model: nn.Module, example_input: torch.Tensor, channels_last: bool,
                   skip: Sequence[nn.Module] = ()) -> Dict[int, bool]:
    """Per MUXNet block (by ``id``) but those in ``skip``: whether its fused deploy form beats
    its stock one on the input it receives from ``example_input``."""
    names = {m: name for name, m in _blocks(model).items() if m not in skip}
    blocks = list(names)
    # Record in the model's own precision (BN is folded in it); time in the example's.
    param = next(model.parameters(), None)
    inputs = module_inputs(model, blocks, example_input.to(param.dtype) if param is not None
                           else example_input)
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    choices, times, stock = {}, [], []
    for block in blocks:
        x = inputs.get(block)
        if x is None:  # not on the path of this input
            continue
        x = x.to(example_input.dtype)
        forms = []
        for fused in (False, True):
            form = copy.deepcopy(block)
            form.switch_to_deploy(fused_ops=fused)
            forms.append(form.to(dtype=x.dtype, memory_format=memory_format))
        if not any(isinstance(m, FusedGroupConv) or getattr(m, 'fused_ops', False) or
                   getattr(m, 'tail_in_ops', False) for m in forms[1].modules()):
            continue  # the kernels cannot run here (or the block has none): stock form
        x = x.contiguous(memory_format=memory_format) if channels_last else x
        stock_us, fused_us = (device_time_us(lambda f=f: f(x), x.device) for f in forms)
        choices[id(block)] = fused_us < stock_us
        times.append((stock_us, min(stock_us, fused_us)))
        if not choices[id(block)]:
            stock.append(f'{names[block]} (fused {fused_us:.0f} vs stock {stock_us:.0f} us)')
    if times:
        # (the stock blocks named: what reproduces this model's mix of forms; read back by
        # stock_blocks_logged)
        kept = f"{_STOCK_KEPT}{', '.join(stock)}" if stock else ''
        print_log(f'{_AUTO_LOG}fused kernels in {sum(choices.values())} of {len(choices)} '
                  f'blocks; their spatial + SE + project time {sum(t[0] for t in times):.0f} -> '
                  f'{sum(t[1] for t in times):.0f} us{kept}', logger='current')
    return choices


class RawOutputs(nn.Module):
    """A detector/segmentor up to its raw head outputs (``_forward``), as a flat tensor tuple.

    What ONNX export and tracing need: no data samples, no post-processing.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        flat = []

        def walk(out):
            if isinstance(out, (list, tuple)):
                for item in out:
                    walk(item)
            else:
                flat.append(out)

        walk(self.model._forward(x))
        return tuple(flat)


def count_modules(model: nn.Module, types: Tuple[type, ...]) -> int:
    """How many submodules of the given types remain (e.g. BatchNorms after fusing)."""
    return sum(isinstance(m, types) for m in model.modules())
