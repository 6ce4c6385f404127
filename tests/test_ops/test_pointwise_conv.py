"""The 1x1-conv GEMM with bias, activation, residual and channel interleave in its epilogue
against its stock reference (Triton interpreter on CPU): shared and per-sample weights, channel
slices of wider maps as inputs, sizes that are no multiple of the blocks or the vectors, half
precision, gradients, the custom-op registration, the fallback and bad arguments."""
import warnings

import pytest
import torch

from mux_backbones.ops import _triton, pointwise_conv, reference_pointwise_conv
from mux_backbones.ops.pointwise_conv import _pointwise_conv, alignment, launch_blocks

triton = pytest.importorskip('triton')
pytestmark = pytest.mark.skipif(not _triton.interpreting(),
                                reason='CPU kernel tests need TRITON_INTERPRET=1')


def _inputs(samples, pixels, k, c, per_sample, dtype=torch.float32, grads=False):
    """Rows and the block's residual / kept halves as channel slices of wider maps (the views a
    channel-multiplexed block passes)."""
    torch.manual_seed(k + c)
    rows = torch.randn(samples * pixels, 2 * k, dtype=dtype)[:, :k]
    weight = (torch.randn(samples, k, c, dtype=dtype) if per_sample else
              torch.randn(c, k, dtype=dtype).t())  # the transposed view PointwiseConv2d passes
    bias = torch.randn(c, dtype=dtype)
    block = torch.randn(samples * pixels, 2 * c, dtype=dtype)
    tensors = [rows, weight, bias, block[:, :c], block[:, c:]]
    if grads:
        tensors = [t.detach().requires_grad_() for t in tensors]
    return tensors


@pytest.mark.parametrize('per_sample', [False, True])
@pytest.mark.parametrize('samples,pixels,k,c', [(2, 30, 20, 12), (1, 49, 96, 80),
                                                (3, 7, 40, 20), (2, 300, 130, 24)])
def test_epilogues_against_the_reference(samples, pixels, k, c, per_sample):
    """Every epilogue (bias, act, + residual, + interleave), reductions over several K blocks,
    output channels over several N blocks, rows over several M blocks."""
    rows, weight, bias, residual, kept = _inputs(samples, pixels, k, c, per_sample)
    for *args, act in ((None, None, None, 'none'), (bias, None, None, 'silu'),
                       (bias, residual, None, 'none'), (bias, residual, kept, 'relu6'),
                       (None, None, kept, 'relu')):
        got = pointwise_conv(rows, weight, *args, act=act)
        want = reference_pointwise_conv(rows, weight, *args, act=act)
        assert got.shape == want.shape == (samples * pixels, 2 * c if args[2] is not None else c)
        assert got.is_contiguous() and got.dtype == rows.dtype
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    if not per_sample:  # a per-sample input scale (the SE gate) as the tiles are loaded
        gate = torch.rand(samples, k)
        got = pointwise_conv(rows, weight, bias, residual, kept, scale=gate)
        scaled = (rows.reshape(samples, pixels, k) * gate[:, None]).flatten(0, 1)
        torch.testing.assert_close(got, pointwise_conv(scaled, weight, bias, residual, kept),
                                   atol=1e-4, rtol=1e-4)
    # The interleave is channel multiplexing's cat + 2-group shuffle
    out = pointwise_conv(rows, weight, bias, residual, kept)
    torch.testing.assert_close(out[:, 1::2], kept)
    torch.testing.assert_close(out[:, 0::2], pointwise_conv(rows, weight, bias, residual))


def test_half_precision():
    rows, weight, bias, residual, kept = _inputs(2, 20, 40, 20, True, torch.float16)
    got = pointwise_conv(rows, weight, bias, residual, kept)
    want = reference_pointwise_conv(*(t.float() for t in (rows, weight, bias, residual, kept)))
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=2e-2)


def test_output_dtype_follows_the_rows():
    """As the fake implementation says: the rows' dtype, whatever the epilogue tensors' (an
    autocast model's fp32 residual), in the kernel and in the reference alike."""
    rows, weight, bias, residual, kept = _inputs(1, 8, 16, 8, False)
    for fn in (pointwise_conv, reference_pointwise_conv):
        out = fn(rows.half(), weight, bias, residual, kept)
        assert out.dtype == torch.float16


def test_rows_with_strided_columns_are_copied_not_misread():
    rows, weight, bias, residual, kept = _inputs(1, 12, 16, 8, False)
    strided = torch.randn(12, 32)[:, ::2]  # no unit column stride: the op takes a copy
    torch.testing.assert_close(pointwise_conv(strided, weight, bias, residual, kept),
                               reference_pointwise_conv(strided, weight, bias, residual, kept))


def test_vector_width_and_blocks():
    """The alignment hint divides every size and row stride; blocks respect tl.dot's minimum."""
    assert alignment(2, 40, 80, 120) == 8 and alignment(2, 12, 24) == 4
    assert alignment(4, 40, 80) == 4 and alignment(2, 7, 8) == 1
    block_m, block_n, block_k = launch_blocks(300, 8, 1000)
    assert block_m >= 16 and block_n == 64 and block_k == 16


@pytest.mark.parametrize('per_sample', [False, True])
def test_gradients_match_the_reference(per_sample):
    inputs = _inputs(2, 9, 12, 6, per_sample, grads=True)
    scale = None if per_sample else torch.rand(2, 12, requires_grad=True)
    got = pointwise_conv(*inputs, act='silu', scale=scale)
    want = reference_pointwise_conv(*inputs, act='silu', scale=scale)
    inputs += [scale] if scale is not None else []
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad((got * g).sum(), inputs),
                    torch.autograd.grad((want * g).sum(), inputs)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_custom_op_registration():
    rows, weight, bias, residual, kept = _inputs(2, 8, 16, 8, True)
    gate = torch.rand(2, 16)
    for args in ((rows, weight, None, None, None, 'none', None),
                 (rows, weight, bias, residual, kept, 'silu', None),
                 (rows, weight[0], bias, residual, kept, 'none', gate)):
        torch.library.opcheck(_pointwise_conv, args,
                              test_utils=('test_schema', 'test_faketensor',
                                          'test_aot_dispatch_static'))


def test_torch_compile_sees_one_node():
    rows, weight, bias, residual, kept = _inputs(1, 16, 16, 8, False)

    def fn(r):
        return pointwise_conv(r, weight, bias, residual, kept).relu()

    compiled = torch.compile(fn, backend='aot_eager', fullgraph=True)
    torch.testing.assert_close(compiled(rows), fn(rows))


def test_unsupported_input_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(_triton, '_warned', set())
    rows, weight, bias, residual, kept = (t.double() for t in _inputs(1, 6, 8, 4, False))
    with pytest.warns(RuntimeWarning, match='pointwise_conv: dtype torch.float64 is not'):
        got = pointwise_conv(rows, weight, bias, residual, kept)
    torch.testing.assert_close(got, reference_pointwise_conv(rows, weight, bias, residual, kept))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # only once per reason
        pointwise_conv(rows, weight, bias, residual, kept)


def test_bad_arguments():
    rows, weight, bias, residual, kept = _inputs(2, 6, 8, 4, False)
    with pytest.raises(ValueError, match=r'expects \(M, K\) rows'):
        pointwise_conv(rows[None], weight)
    with pytest.raises(ValueError, match=r'weight must be \(8, C\)'):
        pointwise_conv(rows, weight.t())
    with pytest.raises(ValueError, match='do not split into 5 samples'):
        pointwise_conv(rows, torch.randn(5, 8, 4))
    with pytest.raises(ValueError, match='bias must be'):
        pointwise_conv(rows, weight, bias[:3])
    with pytest.raises(ValueError, match='residual must be'):
        pointwise_conv(rows, weight, bias, residual[:5])
    with pytest.raises(ValueError, match='kept must be'):
        pointwise_conv(rows, weight, bias, residual, kept[:, :3])
    with pytest.raises(ValueError, match='act must be one of'):
        pointwise_conv(rows, weight, act='gelu')
    with pytest.raises(ValueError, match=r'scale must be \(N, 8\)'):
        pointwise_conv(rows, weight, scale=torch.rand(5, 8))
    with pytest.raises(ValueError, match='not both'):
        pointwise_conv(rows, torch.randn(2, 8, 4), scale=torch.rand(2, 8))
