"""The one-launch squeeze-excite gate against its stock reference (Triton interpreter on CPU):
odd widths, every activation, partial sums, half precision, gradients, the custom-op
registration, the fallback and bad arguments."""
import warnings

import pytest
import torch

from mux_backbones.ops import _triton, reference_se_gate, se_gate
from mux_backbones.ops.se_gate import _se_gate
from .conftest import se_gate_params as _params

triton = pytest.importorskip('triton')
pytestmark = pytest.mark.skipif(not _triton.interpreting(),
                                reason='CPU kernel tests need TRITON_INTERPRET=1')


@pytest.mark.parametrize('act', ['none', 'relu', 'silu', 'relu6'])
@pytest.mark.parametrize('batch,channels,squeeze', [(2, 48, 12), (3, 37, 5), (1, 300, 20)])
# numpy in the interpreter: the sigmoid of a large negative logit takes exp -> inf -> 0 (so does
# the GPU, silently)
@pytest.mark.filterwarnings('ignore:overflow encountered in exp:RuntimeWarning')
def test_gate(act, batch, channels, squeeze):
    """Channel counts beyond one program block, squeeze widths that are no power of two."""
    params = _params(channels, squeeze)
    sums = torch.randn(batch, channels) * 40
    got = se_gate(sums, 49, *params, act=act)
    want = reference_se_gate(sums, 1 / 49, *params, act)
    assert got.shape == want.shape == (batch, channels) and got.dtype == want.dtype
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('tiles,channels', [(5, 24), (37, 150)])
def test_partial_sums_over_tiles(tiles, channels):
    """(N, T, C) partial sums, as the fused conv's pooling writes them, add up inside the op
    (several blocks of tiles per load, a ragged last one)."""
    params = _params(channels, 6)
    parts = torch.randn(2, tiles, channels) * 10
    torch.testing.assert_close(se_gate(parts, 60, *params, act='silu'),
                               se_gate(parts.sum(1), 60, *params, act='silu'))


def test_half_precision_weights():
    params = _params(40, 8, torch.float16)
    sums = torch.randn(2, 40) * 10
    got = se_gate(sums, 9, *params, act='silu')
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, reference_se_gate(sums, 1 / 9, *params, 'silu'),
                               atol=2e-3, rtol=2e-3)


def test_gradients_match_the_reference():
    params = _params(20, 6, grads=True)
    sums = (torch.randn(2, 20) * 5).requires_grad_()
    inputs = [sums] + params
    got = se_gate(sums, 25, *params, act='silu')
    want = reference_se_gate(sums, 1 / 25, *params, 'silu')
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad((got * g).sum(), inputs),
                    torch.autograd.grad((want * g).sum(), inputs)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_custom_op_registration():
    params = _params(12, 4)
    for sums in (torch.randn(2, 12), torch.randn(2, 3, 12)):
        torch.library.opcheck(_se_gate, (sums, 0.25, *params, 'relu'),
                              test_utils=('test_schema', 'test_faketensor',
                                          'test_aot_dispatch_static'))


def test_unsupported_input_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(_triton, '_warned', set())
    params = _params(6, 2, torch.float64)
    sums = torch.randn(1, 6, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match='se_gate: dtype torch.float64 is not supported'):
        got = se_gate(sums, 4, *params)
    torch.testing.assert_close(got, reference_se_gate(sums, 0.25, *params, 'relu'))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # only once per reason
        se_gate(sums, 4, *params)


def test_bad_arguments():
    params = _params(6, 2)
    sums = torch.randn(1, 6)
    with pytest.raises(ValueError, match=r'\(N, C\) channel sums'):
        se_gate(sums[0], 4, *params)
    with pytest.raises(ValueError, match='reduce weight'):
        se_gate(torch.randn(1, 7), 4, *params)
    with pytest.raises(ValueError, match='expand weight'):
        se_gate(sums, 4, params[0], params[1], params[2].t(), params[3])
    with pytest.raises(ValueError, match='act must be'):
        se_gate(sums, 4, *params, act='gelu')
    with pytest.raises(ValueError, match='pixels'):
        se_gate(sums, 0, *params)
