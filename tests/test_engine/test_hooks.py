"""The suite's training hooks, on a stand-in runner."""
from types import SimpleNamespace
from unittest import mock

import torch
from mmengine.registry import HOOKS

from mux_backbones import MUXNet
from mux_backbones.engine import ChannelsLastHook, EvaluateBeforeTrainHook


def _runner(model=None, iteration=0):
    return SimpleNamespace(model=model, iter=iteration, val_loop=mock.Mock(),
                           logger=mock.Mock())


def test_hooks_are_registered():
    assert HOOKS.get('ChannelsLastHook') is ChannelsLastHook
    assert HOOKS.get('EvaluateBeforeTrainHook') is EvaluateBeforeTrainHook


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
