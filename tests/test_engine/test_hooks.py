"""The suite's training hooks, on a stand-in runner."""
import contextlib
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from mmengine.registry import HOOKS

from mux_backbones import MUXNet
from mux_backbones.engine import (ChannelsLastHook, ChooseTrainingKernelsHook,
                                  EvaluateBeforeTrainHook, hooks)


def _runner(model=None, iteration=0):
    return SimpleNamespace(model=model, iter=iteration, val_loop=mock.Mock(),
                           logger=mock.Mock())


def test_hooks_are_registered():
    assert HOOKS.get('ChannelsLastHook') is ChannelsLastHook
    assert HOOKS.get('EvaluateBeforeTrainHook') is EvaluateBeforeTrainHook
    assert HOOKS.get('ChooseTrainingKernelsHook') is ChooseTrainingKernelsHook


def test_evaluate_before_train_runs_once_at_start_only():
    hook = EvaluateBeforeTrainHook()
    fresh, resumed = _runner(), _runner(iteration=120)
    hook.before_train(fresh)
    hook.before_train(resumed)
    fresh.val_loop.run.assert_called_once()
    resumed.val_loop.run.assert_not_called()


def test_channels_last_hook_keeps_parameters_and_outputs():
    model = MUXNet('tiny').eval()
    params = list(model.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    ChannelsLastHook().before_run(_runner(model))
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert all(a is b for a, b in zip(params, model.parameters()))  # the optimizer's objects
    with torch.no_grad():
        out = model(x)
    assert out[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=1e-5)


def test_channels_last_hook_skips_other_devices():
    model = MUXNet('tiny')
    ChannelsLastHook(devices=('cuda', )).before_run(_runner(model))
    assert all(m.weight.is_contiguous() for m in model.modules()
               if isinstance(m, torch.nn.Conv2d))


def test_channels_last_hook_devices_argument():
    # A config's devices='cpu' means the CPU, not the letters c, p, u.
    model = MUXNet('tiny')
    ChannelsLastHook(devices='cpu').before_run(_runner(model))
    assert model.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    for bad in ('gpu', ('cpu', 0)):
        with pytest.raises(ValueError, match='device types'):
            ChannelsLastHook(devices=bad)


class _Detector(torch.nn.Module):
    """A stand-in for an mm model: a backbone and a data preprocessor."""

    def __init__(self, fused_ops):
        super().__init__()
        self.backbone = MUXNet('tiny', fused_ops=fused_ops)
        self.data_preprocessor = mock.Mock(
            side_effect=lambda batch, training: {'inputs': batch['inputs'] * 2,
                                                 'training': training})


def test_choose_training_kernels_hook(monkeypatch):
    """The hook runs the choice on the backbone, with a preprocessed training batch, inside the
    optimizer wrapper's context (its autocast); without kernel layers it does nothing."""
    calls, contexts = [], []
    monkeypatch.setattr(hooks, 'choose_training_kernels',
                        lambda model, x: calls.append((model, x, list(contexts))))

    @contextlib.contextmanager
    def optim_context(model):
        contexts.append(model)
        yield
        contexts.pop()

    batch = {'inputs': torch.ones(2, 3, 32, 32)}
    models = [_Detector(True), _Detector(False)]
    for model in models:
        runner = SimpleNamespace(model=model, train_dataloader=[batch], logger=mock.Mock(),
                                 optim_wrapper=SimpleNamespace(optim_context=optim_context))
        ChooseTrainingKernelsHook().before_train(runner)
    assert len(calls) == 1  # the stock model: nothing to choose, said once in the log
    runner.logger.info.assert_called_once()
    backbone, x, inside = calls[0]
    assert backbone is models[0].backbone and inside == [models[0]]
    torch.testing.assert_close(x, batch['inputs'] * 2)


def test_choose_training_kernels_hook_survives_a_failed_timing(monkeypatch):
    """A timing the device refuses (e.g. a CUDA-graph capture) is logged as a warning; training
    goes on with the layers as configured."""
    def refuse(model, x):
        raise RuntimeError('operation not permitted when stream is capturing')

    monkeypatch.setattr(hooks, 'choose_training_kernels', refuse)
    model = _Detector(True)
    runner = SimpleNamespace(model=model, train_dataloader=[{'inputs': torch.ones(2, 3, 32, 32)}],
                             logger=mock.Mock(), optim_wrapper=SimpleNamespace(
                                 optim_context=lambda model: contextlib.nullcontext()))
    ChooseTrainingKernelsHook().before_train(runner)
    warning = runner.logger.warning.call_args[0][0]
    assert 'timing the layers failed (operation not permitted' in warning
