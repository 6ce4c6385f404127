"""The 1x1-conv GEMM with bias, activation, residual and channel interleave in its epilogue
against its stock reference (Triton interpreter on CPU): both weight layouts, an input scale,
channel slices of wider maps as inputs, sizes that are no multiple of the blocks or the
vectors, half precision, gradients, the custom-op registration, the fallback and bad
arguments; tuned launch configs (chosen, recorded, launched, compiled ahead)."""
import sys
import warnings

import pytest
import torch

from mux_backbones.ops import (_triton, launch_config, pointwise_conv, reference_pointwise_conv,
                               reference_se_gate, se_gate)
from mux_backbones.ops._triton import next_power_of_2
from mux_backbones.ops.launch_config import LaunchConfig, _run_compile_jobs, recorded_calls
from mux_backbones.ops.pointwise_conv import (_pointwise_conv, alignment, call_key, candidates,
                                              compile_jobs, launch_blocks, tune_pointwise_conv)
from .conftest import pointwise_inputs as _inputs
from .conftest import se_gate_params

gemm = sys.modules['mux_backbones.ops.pointwise_conv']

triton = pytest.importorskip('triton')
pytestmark = pytest.mark.skipif(not _triton.interpreting(),
                                reason='CPU kernel tests need TRITON_INTERPRET=1')


@pytest.mark.parametrize('weight_rows', [False, True])
@pytest.mark.parametrize('samples,pixels,k,c', [(2, 30, 20, 12), (1, 49, 96, 80),
                                                (3, 7, 40, 20), (2, 300, 130, 24)])
def test_epilogues_against_the_reference(samples, pixels, k, c, weight_rows):
    """Every epilogue (bias, act, + residual, + interleave), reductions over several K blocks,
    output channels over several N blocks, rows over several M blocks."""
    rows, weight, bias, residual, kept = _inputs(samples, pixels, k, c, weight_rows)
    for *args, act in ((None, None, None, 'none'), (bias, None, None, 'silu'),
                       (bias, residual, None, 'none'), (bias, residual, kept, 'relu6'),
                       (None, None, kept, 'relu')):
        got = pointwise_conv(rows, weight, *args, act=act)
        want = reference_pointwise_conv(rows, weight, *args, act=act)
        assert got.shape == want.shape == (samples * pixels, 2 * c if args[2] is not None else c)
        assert got.is_contiguous() and got.dtype == rows.dtype
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # A per-sample input scale (the SE gate) as the tiles are loaded
    gate = torch.rand(samples, k)
    got = pointwise_conv(rows, weight, bias, residual, kept, scale=gate)
    scaled = (rows.reshape(samples, pixels, k) * gate[:, None]).flatten(0, 1)
    torch.testing.assert_close(got, pointwise_conv(scaled, weight, bias, residual, kept),
                               atol=1e-4, rtol=1e-4)
    # The interleave is channel multiplexing's cat + 2-group shuffle
    out = pointwise_conv(rows, weight, bias, residual, kept)
    torch.testing.assert_close(out[:, 1::2], kept)
    torch.testing.assert_close(out[:, 0::2], pointwise_conv(rows, weight, bias, residual))


@pytest.mark.parametrize('samples,pixels,k,c,tiles,squeeze,act,dtype', [
    (2, 30, 20, 12, 3, 5, 'relu', torch.float32),
    (3, 49, 130, 24, 37, 1, 'silu', torch.float32),  # K over several blocks, many tiles
    (1, 7, 96, 40, 1, 24, 'relu6', torch.float32),
    (2, 20, 40, 20, 5, 10, 'silu', torch.float16)])
def test_gate_computed_in_the_kernel_is_the_gate_ops(samples, pixels, k, c, tiles, squeeze, act,
                                                     dtype):
    """A launch that computes its scale as the SE gate of pooled sums (what a deployed block's
    launches run, ``block_launches.GATE_IN_GEMM``) gives the bits of the gate op's launch
    followed by the GEMM reading its gate: same order of summation, same rounding."""
    rows, weight, bias, residual, kept = _inputs(samples, pixels, k, c, dtype=dtype)
    se_weights = [t.contiguous() for t in se_gate_params(k, squeeze, dtype)]
    sums = torch.randn(samples, tiles, k) * pixels / tiles
    gate = se_gate(sums, pixels, *se_weights, act=act)
    want = pointwise_conv(rows, weight, bias, residual, kept, scale=gate)
    plan, args = gemm._planned(rows, weight, bias, residual, kept, 'none', gate)
    got = torch.empty_like(want)
    plan.gated_launch(gemm.Gate(tiles, squeeze, 1.0 / pixels, act), *args[:5], sums, se_weights,
                      got)
    assert torch.equal(got, want)
    tol = 2e-2 if dtype == torch.float16 else 1e-4
    torch.testing.assert_close(got.float(), reference_pointwise_conv(
        *(t.float() for t in (rows, weight, bias, residual, kept)),
        scale=reference_se_gate(sums, 1.0 / pixels, *se_weights, act).float()),
        atol=tol, rtol=tol)


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


@pytest.mark.parametrize('weight_rows', [False, True])
def test_gradients_match_the_reference(weight_rows):
    inputs = _inputs(2, 9, 12, 6, weight_rows, grads=True)
    scale = torch.rand(2, 12, requires_grad=True)
    got = pointwise_conv(*inputs, act='silu', scale=scale)
    want = reference_pointwise_conv(*inputs, act='silu', scale=scale)
    inputs.append(scale)
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad((got * g).sum(), inputs),
                    torch.autograd.grad((want * g).sum(), inputs)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_custom_op_registration():
    rows, weight, bias, residual, kept = _inputs(2, 8, 16, 8, True)
    gate = torch.rand(2, 16)
    for args in ((rows, weight, None, None, None, 'none', None),
                 (rows, weight, bias, residual, kept, 'silu', None),
                 (rows, weight, bias, residual, kept, 'none', gate)):
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
    with pytest.raises(ValueError, match=r'weight must be \(8, C\)'):
        pointwise_conv(rows, torch.randn(2, 8, 4))  # one weight for all rows
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
    with pytest.raises(ValueError, match=r'scale must be \(N, 8\)'):
        pointwise_conv(rows, weight, scale=torch.rand(0, 8))  # no samples for 12 rows


@pytest.mark.parametrize('kernels', ['triton', 'cpu'])
def test_empty_batch(kernels, request):
    """No rows (an empty batch: a scale of no samples) give no rows of the output's width, and
    gradients of the inputs' shapes."""
    if kernels == 'cpu':
        request.getfixturevalue('outside_interpreter')
    rows, weight, bias, residual, kept = _inputs(0, 6, 8, 4, False, grads=True)
    scale = torch.rand(0, 8, requires_grad=True)
    out = pointwise_conv(rows, weight, bias, residual, kept, 'relu', scale)
    assert out.shape == (0, 8)
    out.sum().backward()
    for t in (rows, weight, bias, residual, kept, scale):
        assert t.grad is not None and t.grad.shape == t.shape and not t.grad.any()


@pytest.fixture
def clean_launch_configs():
    launch_config.forget()
    yield
    launch_config.forget()


def test_candidates():
    """The planner's launch first, no repeats, tiles no taller than a sample's rows need,
    wide channel blocks for wide outputs, 8 warps for the largest tiles, pipelined or not."""
    for rows, k, c in ((12544, 16, 96), (49, 480, 80), (3136, 24, 960)):
        configs = candidates(rows, k, c)
        assert configs[-1] == launch_config.STOCK  # cuBLAS + passes, timed like the others
        configs = configs[:-1]
        assert configs[0] == LaunchConfig(*launch_blocks(rows, k, c)[:2], 4, 3)
        assert len(set(configs)) == len(configs) >= 4
        assert {config.num_stages for config in configs} == {1, 3}
        assert all(config.tile_h <= max(32, next_power_of_2(rows))
                   for config in configs[1:])
        assert all(config.num_warps == (8 if config.tile_h * config.tile_w > 4096 else 4)
                   for config in configs[1:])
    assert max(config.tile_w for config in candidates(3136, 24, 960)) == 128
    assert max(config.tile_h for config in candidates(49, 480, 80)) == 64
    # Several row tiles per program: K in one block, a sample's rows for every tile, as wide
    # as C (up to 128), pipelined
    looped = [config for config in candidates(12544, 16, 96) if config.tiles_per_program > 1]
    assert {(config.tile_h, config.tiles_per_program) for config in looped} == \
        {(64, 4), (64, 16), (128, 4), (128, 16)}
    assert all(config.tile_w == 128 and config.num_stages == 3 for config in looped)
    assert [config for config in candidates(300, 40, 20) if config.tiles_per_program > 1] == \
        [LaunchConfig(64, 32, 4, 3, 4)]
    for rows, k, c in ((49, 480, 80), (12544, 160, 96), (196, 24, 96)):
        assert all(config.tiles_per_program == 1 for config in candidates(rows, k, c))
    with pytest.raises(ValueError, match='K <= 128'):
        launch_blocks(12544, 160, 96, LaunchConfig(64, 64, 4, 3, 4))


@pytest.mark.parametrize('weight_rows', [False, True])
@pytest.mark.parametrize('samples,pixels,k,c,config,dtype', [
    (2, 300, 20, 12, LaunchConfig(32, 16, 4, 3, 4), torch.float32),  # last program's tail
    (1, 700, 96, 40, LaunchConfig(64, 64, 4, 3, 4), torch.float32),  # K past one 64 block
    (3, 130, 40, 24, LaunchConfig(16, 32, 4, 3, 2), torch.float16),
    (2, 64, 24, 24, LaunchConfig(16, 16, 4, 3, 16), torch.float32)])  # tiles past the rows
def test_several_row_tiles_per_program(samples, pixels, k, c, config, dtype, weight_rows):
    """A launch whose programs run several row tiles in turn (weight tile, bias and scale
    loaded once) computes what the planner's launch does, with every epilogue, an input
    scale and the SE gate computed in the kernel; its grid has the fewer programs."""
    rows, weight, bias, residual, kept = _inputs(samples, pixels, k, c, weight_rows, dtype=dtype)
    scale = torch.rand(samples, k, dtype=dtype)
    tol = 2e-2 if dtype == torch.float16 else 1e-4
    for args in ((bias, None, None, 'silu', None), (bias, residual, kept, 'none', scale),
                 (None, residual, None, 'relu', scale)):
        plan, planned = gemm._planned(rows, weight, *args)
        want = pointwise_conv(rows, weight, *args[:3], act=args[3], scale=args[4])
        got = torch.empty_like(want)
        plan.launch(*planned[:5], planned[6], got, config)
        torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)
    launch = plan.kernel_launch(config)
    assert launch.meta['TILES'] == config.tiles_per_program
    assert launch.grid[0] == -(-pixels // (config.tile_h * config.tiles_per_program)) * \
        -(-c // config.tile_w)
    se_weights = [t.contiguous() for t in se_gate_params(k, 4, dtype)]
    sums = torch.randn(samples, 3, k) * pixels / 3
    gate = se_gate(sums, pixels, *se_weights, act='relu')
    want = pointwise_conv(rows, weight, bias, residual, kept, scale=gate)
    plan, planned = gemm._planned(rows, weight, bias, residual, kept, 'none', gate)
    got = torch.empty_like(want)
    plan.gated_launch(gemm.Gate(3, 4, 1.0 / pixels, 'relu'), *planned[:5], sums, se_weights,
                      got, config)
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


def _timer_preferring(wanted, key):
    """A stand-in for the GPU timer: the config ``wanted`` is fast, every other slow."""
    def time_us(fn):
        fn()
        return 1.0 if launch_config.lookup(key) == wanted else 5.0
    return time_us


@pytest.mark.parametrize('weight_rows', [False, True])
def test_tuned_config_is_kept_and_launched(weight_rows, clean_launch_configs, monkeypatch):
    """``tune_pointwise_conv`` keeps the fastest candidate for the call's signature; later calls
    with that signature launch it (tile, warps, pipeline depth) and still equal the reference;
    another signature runs the planner's launch."""
    rows, weight, bias, residual, kept = _inputs(2, 70, 40, 20, weight_rows)
    scale = torch.rand(2, 40)
    args = (rows, weight, bias, residual, kept, 'silu', scale)
    configs = candidates(70, 40, 20)
    wanted = configs[-2]  # the last kernel config
    assert wanted not in (configs[0], launch_config.STOCK)
    times = tune_pointwise_conv(*args, time_us=_timer_preferring(wanted, call_key(*args)))
    assert list(times) == configs and min(times, key=times.get) == wanted
    assert launch_config.lookup(call_key(*args)) == wanted
    launched = []
    real = gemm._Call.launch
    monkeypatch.setattr(gemm._Call, 'launch',
                        lambda self, *a: launched.append(a[-1]) or real(self, *a))
    torch.testing.assert_close(pointwise_conv(*args[:5], act='silu', scale=scale),
                               reference_pointwise_conv(*args), atol=1e-4, rtol=1e-4)
    pointwise_conv(rows, weight, bias)  # another signature
    assert launched == [wanted, None]


def test_launch_plans_are_cached_and_follow_the_table(clean_launch_configs, monkeypatch):
    """A call signature is planned once (the eager forward's Python cost); the cached plan is
    replaced when the tuned table changes or the TF32 switch the kernel reads flips."""
    rows, weight, bias, residual, _ = _inputs(2, 30, 20, 12, False)
    args = (rows, weight, bias, residual, None, 'silu', None)
    plan = gemm._planned(*args)[0]
    assert gemm._planned(*args)[0] is plan and plan.config is None
    assert gemm._planned(rows[:-2], *args[1:3], residual[:-2], *args[4:])[0] is not plan
    config = LaunchConfig(32, 16, 4, 1)
    launch_config.record(call_key(*args), config)
    assert gemm._planned(*args)[0].config == config
    launched = []
    real = gemm._Call.launch
    monkeypatch.setattr(gemm._Call, 'launch',
                        lambda self, *a: launched.append(a[-1]) or real(self, *a))
    torch.testing.assert_close(pointwise_conv(*args[:5], act='silu'),
                               reference_pointwise_conv(*args), atol=1e-4, rtol=1e-4)
    launch_config.forget()
    pointwise_conv(*args[:5], act='silu')
    assert launched == [config, None]
    # (set by hand: pytest's monkeypatch cannot restore this attribute of torch's in every
    # pytest version -- it is a property of a module object)
    matmul, tf32 = torch.backends.cuda.matmul, torch.backends.cuda.matmul.allow_tf32
    try:
        matmul.allow_tf32 = False
        assert gemm._planned(*args)[0].meta['PRECISION'] == 'ieee'
        matmul.allow_tf32 = True
        assert gemm._planned(*args)[0].meta['PRECISION'] == 'tf32'
    finally:
        matmul.allow_tf32 = tf32


def test_tuning_skips_configs_that_fail(clean_launch_configs, monkeypatch):
    """A config that does not build (e.g. out of shared memory) is skipped with a warning; with
    none left, nothing is recorded."""
    real, failing = gemm._Call.launch, {8}

    def launch(self, *args):
        config = args[-1]
        if config is not None and config.num_warps in failing:
            raise RuntimeError('out of resources: shared memory')
        return real(self, *args)

    monkeypatch.setattr(gemm._Call, 'launch', launch)
    rows, weight, bias, _, _ = _inputs(1, 300, 24, 130, False)
    key = call_key(rows, weight, bias, None, None, 'none', None)
    with pytest.warns(RuntimeWarning, match=r'config \(\d+, \d+, 8, \d(, \d+)?\) failed.*shared'):
        times = tune_pointwise_conv(rows, weight, bias,
                                    time_us=_timer_preferring(LaunchConfig(128, 128, 8, 3), key))
    assert times and all(config.num_warps != 8 for config in times)
    assert launch_config.lookup(key) == min(times, key=times.get)
    failing.add(4)  # no kernel config builds: the stock path it is
    launch_config.forget()
    with pytest.warns(RuntimeWarning, match='failed'):
        assert list(tune_pointwise_conv(rows, weight, bias, time_us=lambda fn: 1.0)) == \
            [launch_config.STOCK]
    assert launch_config.lookup(key) == launch_config.STOCK


def test_calls_are_recorded_and_compile_ahead():
    """The op's calls are recorded (what ``tune_kernels`` replays); ``compile_jobs`` lists one
    launch per candidate as picklable jobs that rebuild the call's layout (strides included)."""
    rows, weight, bias, residual, kept = _inputs(2, 30, 20, 12, False)
    with recorded_calls('pointwise_conv') as calls:
        pointwise_conv(rows, weight, bias, residual, kept, act='relu')
    assert len(calls) == 1 and calls[0][0] is rows and calls[0][5] == 'relu'
    jobs = compile_jobs(*calls[0])  # the stock path compiles nothing
    assert [job[4] for job in jobs] == [tuple(c) for c in candidates(60, 20, 12)[:-1]]
    assert jobs[0][1][0] == ((60, 20), (40, 1), 'float32')  # a channel slice of a wider map
    assert _run_compile_jobs(jobs[:2]) == 2
    # the launch computing its scale as an SE gate, from the sums and the SE's weights
    se_weights = [t.contiguous() for t in se_gate_params(20, 5)]
    sums = torch.randn(2, 3, 20)
    gated = compile_jobs(rows, weight, bias, residual, kept, 'relu', torch.rand(2, 20),
                         current_only=True, gate=gemm.Gate(3, 5, 1 / 30, 'relu'),
                         se_tensors=(sums, *se_weights))
    assert len(gated) == 1 and gated[0][5] == gemm.Gate(3, 5, 1 / 30, 'relu')
    assert gated[0][6][0] == ((2, 3, 20), (60, 20, 1), 'float32')
    assert _run_compile_jobs(gated) == 1
    assert compile_jobs(rows.double(), weight.double()) == []  # nothing the kernel would run


def test_tuning_keeps_the_stock_path_where_it_is_faster(clean_launch_configs, monkeypatch):
    """Where cuBLAS and separate passes beat every kernel config, the tuned entry is the stock
    path: later calls of that signature run it (no kernel launch) with the same result."""
    rows, weight, bias, residual, kept = _inputs(2, 40, 24, 16, False)
    args = (rows, weight, bias, residual, kept, 'relu', torch.rand(2, 24))
    times = tune_pointwise_conv(*args, time_us=_timer_preferring(launch_config.STOCK,
                                                                 call_key(*args)))
    assert min(times, key=times.get) == launch_config.STOCK
    assert launch_config.lookup(call_key(*args)) == launch_config.STOCK
    monkeypatch.setattr(gemm._Call, 'launch', lambda *a: pytest.fail('the kernel launched'))
    torch.testing.assert_close(pointwise_conv(*args[:5], act='relu', scale=args[6]),
                               reference_pointwise_conv(*args))
