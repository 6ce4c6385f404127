"""The speed tools run and report: benchmark.py (tables, ratios, onnxruntime, configs) and the
ONNX exporter, and both turn bad input into one clear line instead of a traceback."""
import os
import os.path as osp
import re
import shlex
import subprocess
import sys

import pytest
import torch

from mux_backbones.utils.timing import cpu_bf16_native
from ..helpers import TEST_THREADS
from .helpers import REPO, load_tool, run_tool, write_det_config

BENCH = 'tools/analysis_tools/benchmark.py'
EXPORT = 'tools/deployment/pytorch2onnx.py'
FAST = ('--shape', '64', '--runs', '3', '--warmup', '1', '--threads', str(TEST_THREADS))
# The benchmark's CPU deploy mode runs the CPU's own kernel (C++), not Triton's interpreter,
# which this test process switches on for the Triton kernel tests.
COMPILED = {'TRITON_INTERPRET': '0'}


def _clean_failure(proc, *expected):
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error:'), last
    for text in expected:
        assert text in last, last


def test_benchmark_prints_comparison_table():
    out = run_tool(BENCH, '--models', 'mobilenetv2', 'muxnet-tiny', '--modes', 'eager', 'deploy',
                   'deploy-modules', '--onnx', *FAST, extra_env=COMPILED).stdout
    assert 'vs MNv2' in out and 'median ms' in out
    # the CPU's vector ISA and bf16 support: the tables' numbers depend on both
    isa = torch.backends.cpu.get_cpu_capability()
    assert re.search(
        rf'device: CPU \({isa}, bf16 (native|emulated)\), {TEST_THREADS} threads;', out)
    rows = [line.split() for line in out.splitlines()
            if line.split()[:1] in (['mobilenetv2'], ['muxnet-tiny'])]
    # Table rows (model, mode, fp32, batch, median, IQR, host, img/s, peak, ratio) and
    # onnxruntime rows.
    table = [r for r in rows if len(r) == 10 and r[2] == 'fp32']
    assert {(r[0], r[1]) for r in table} == {(m, mode) for m in ('mobilenetv2', 'muxnet-tiny')
                                             for mode in ('eager', 'deploy', 'deploy-modules')}
    # on the CPU the call is the whole run: its host time is (at most) the median
    assert all(0 < float(r[6]) <= float(r[4]) and r[9].endswith('x') for r in table)
    assert next(r for r in table if r[0] == 'mobilenetv2')[9] == '1.00x'
    assert 'muxnet-tiny deploy vs eager' in out
    assert 'onnxruntime' in out and len([r for r in rows if len(r) == 4]) == 2


def test_target_table_with_host_times():
    """``--target-table-rows``: MUXNet-m over MobileNetV2 per mode, the goal where one is set,
    and both nets' host times (what tells a host-bound row)."""
    out = run_tool(BENCH, '--models', 'mobilenetv2', 'muxnet-m', '--modes', 'eager', 'deploy',
                   '--batch', '1', '--target-table-rows', *FAST, extra_env=COMPILED).stdout
    table = out.partition('target table: MUXNet-m / MobileNetV2')[2].splitlines()
    assert 'host ms MNv2 / MUXNet-m' in table[1]
    rows = [line.split() for line in table[2:4]]
    assert [r[0] for r in rows] == ['eager', 'deploy'] and all(len(r) == 9 for r in rows)
    for mode, prec, batch, base, muxnet, ratio, host_base, _, host_muxnet in rows:
        assert float(ratio) == pytest.approx(float(muxnet) / float(base), abs=0.01)
        assert 0 < float(host_base) <= float(base) and 0 < float(host_muxnet) <= float(muxnet)


def test_host_time_without_a_gpu():
    """tools/gpu/host_time.py: the fused forward's host time up to Triton's launcher, module by
    module with Triton's launch and as block launches with direct launches, and per kernel its
    launches and Triton's preparation per launch (Triton's JIT code, nothing launched); it
    needs the interpreter's kernel path."""
    pytest.importorskip('triton')
    out = run_tool('tools/gpu/host_time.py', '--arch', 'tiny', '--shape', '64', '--runs', '3',
                   extra_env={'TRITON_INTERPRET': '1'}).stdout
    found = re.search(r'modules, launches through Triton: host time up to Triton\'s launcher '
                      r'([\d.]+) ms per forward', out)
    direct = re.search(r'block launches, direct launches: host time up to Triton\'s launcher '
                       r'([\d.]+) ms per forward', out)
    assert found and direct, out
    total = float(found.group(1))
    assert float(direct.group(1)) > 0
    rows = {r[0]: r[1:] for r in (line.split() for line in out.splitlines())
            if r and r[0].startswith('_') and r[0].endswith('_kernel')}
    assert {'_forward_one_kernel', '_pointwise_kernel', '_se_gate_kernel'} <= set(rows)
    assert all(int(launches) > 0 and float(prep) > 0 for launches, prep, _ in rows.values())
    triton, python = map(float, re.search(r'preparation ([\d.]+) ms, the layers\' and ops\' '
                                          r'Python ([\d.]+) ms', out).groups())
    assert triton > 0 and python > 0 and triton + python == pytest.approx(total, abs=0.02)
    proc = run_tool('tools/gpu/host_time.py', check=False, extra_env={'TRITON_INTERPRET': '0'})
    assert proc.returncode != 0 and 'set TRITON_INTERPRET=1' in proc.stderr
    proc = run_tool('tools/gpu/host_time.py', '--arch', 'q', check=False,
                    extra_env={'TRITON_INTERPRET': '1'})
    assert proc.returncode == 2 and "invalid choice: 'q'" in proc.stderr


def test_host_time_of_a_training_step():
    """``host_time.py --train``: a fused_ops training step's host time with the squeeze-excites on
    their Triton training form and on their stock form, each kernel's launches per step (the
    training form's seven per SE among them), MobileNetV2's step in the same harness, and the
    step's GPU kernels against MobileNetV2's: its stock operators (no SE's, no in-place SiLU and
    the copy autograd makes for one, one BN per BN layer) plus the Triton launches."""
    pytest.importorskip('triton')
    out = run_tool('tools/gpu/host_time.py', '--arch', 'tiny', '--shape', '64', '--batch', '2',
                   '--runs', '2', '--train', extra_env={'TRITON_INTERPRET': '1'}).stdout
    times = re.findall(r'squeeze-excites on their (Triton training|stock) form.*: ([\d.]+) ms '
                       r'per step', out)
    assert [t[0] for t in times] == ['Triton training', 'stock'], out
    assert all(float(t[1]) > 0 for t in times)
    against = re.search(r'MobileNetV2 \(mmdet\'s, stock operators, the same harness\): ([\d.]+) ms '
                        r'per step; the fused step ([\d.]+) ms, ([\d.]+)x', out)
    assert against, out
    baseline_ms, fused_ms, ratio = map(float, against.groups())
    assert baseline_ms > 0 and fused_ms > 0 and abs(ratio - fused_ms / baseline_ms) < 0.02
    launches = {r[0]: int(r[1]) for r in (line.split() for line in out.splitlines())
                if len(r) == 2 and r[0].endswith('_kernel')}
    ses = int(re.search(r'stock form \((\d+) of them\)', out).group(1))
    assert ses > 0 and launches['_gate_backward_kernel'] == ses
    assert launches['_map_sums_kernel'] == launches['_scale_map_kernel'] == 2 * ses
    assert launches['_weight_grad_kernel'] > 0  # (the group conv's gradients)
    line = re.search(r'MobileNetV2 (\d+) \(stock operators\); MUXNet-tiny fused_ops (\d+) = '
                     r'(\d+) stock operators \+ (\d+) inside the ops \+ (\d+) Triton launches '
                     r'\(([\d.]+)x\); its stock operators: (.*); inside the ops: (.*)', out)
    assert line, out
    baseline, total, stock, inside, triton = map(int, line.groups()[:5])
    assert baseline > 0 and total == stock + inside + triton and triton == sum(launches.values())
    counts = dict(item.rsplit(' ', 1) for item in line.group(7).split(', '))
    assert sum(map(int, counts.values())) == stock
    # inside the group conv op: its gradient's zeroed buffer, one per conv (of one or more
    # kernel-size groups, a weight-gradient launch each) and step, and no operator that hands
    # back its input (``to`` the weight's own dtype)
    inside_counts = dict(item.rsplit(' ', 1) for item in line.group(8).split(', '))
    assert sum(map(int, inside_counts.values())) == inside
    assert 0 < int(inside_counts['zeros']) <= launches['_weight_grad_kernel']
    assert 'to' not in inside_counts
    assert counts['native_batch_norm'] == counts['native_batch_norm_backward']
    assert not {'silu_', 'sigmoid', 'mean', 'addmm', 'view'} & set(counts)


def test_kernel_sass_compiles_the_launch_plans_offline():
    """tools/gpu/kernel_sass.py: every fused-kernel launch of a model compiled for sm_90 without
    a GPU, with vector loads where the channels allow and a total."""
    triton = pytest.importorskip('triton')
    if not osp.exists(osp.join(osp.dirname(triton.__file__), 'backends/nvidia/bin/nvdisasm')):
        pytest.skip("this Triton has no CUDA backend tools")
    out = run_tool('tools/gpu/kernel_sass.py', '--arch', 'tiny', '--shape', '64', '--batch', '2',
                   extra_env={'TRITON_INTERPRET': '0'}).stdout
    convs, _, gemms = out.partition('\nepilogue GEMMs (')
    header, *rows = [line.split() for line in convs.splitlines() if line.startswith('layer')]
    assert len(rows) >= 8 and all(r[1] == 'forward' for r in rows)
    assert any('128x' in line for line in convs.splitlines()[2:])  # 16-byte loads
    # resident warps per SM (of 64) and waves, from each launch's registers and grid
    warps, waves = header.index('warps'), header.index('waves')
    assert all(0 < int(r[warps]) <= 64 and float(r[waves]) >= 0 for r in rows)
    assert 'issue-bound total, forward' in convs
    # the epilogue GEMMs: expand convs with their activation, projects with a residual (one of
    # them also interleaving) computing their SE gate (batch 2's few programs: the block
    # launches' choice)
    header, *rows = [line.split() for line in gemms.splitlines() if line.startswith('layer')]
    epilogues = [r[header.index('epilogue')] for r in rows]
    assert '+gate+res+mux' in epilogues and '+relu' in epilogues
    assert all(e.startswith(('+gate', '+relu', '+silu')) for e in epilogues)
    assert '+gate' in epilogues
    assert all('STG.128' in line for line in gemms.splitlines()[2:-1])  # 16-byte stores


def test_kernel_sass_compiles_the_squeeze_excite_training_form(tmp_path):
    """The squeeze-excite training form's seven launches (``ops.gated_map``), as
    ``kernel_sass.py --backward`` compiles them for sm_90: a map over several 64-channel
    program blocks and pixel tiles, fp16 and fp32 (the interpreter's tests cannot compile)."""
    triton = pytest.importorskip('triton')
    if not osp.exists(osp.join(osp.dirname(triton.__file__), 'backends/nvidia/bin/nvdisasm')):
        pytest.skip("this Triton has no CUDA backend tools")
    script = """
import os, sys
sys.path.insert(0, os.path.join(os.getcwd(), 'tools', 'gpu'))
import kernel_sass as k
for dtype in ('fp16', 'fp32'):
    for what, launch, fp32 in k.se_training_launches((24, 120, 40, 40), 20, 'silu', dtype):
        meta = {key: v for key, v in launch.meta.items() if key != 'num_warps'}
        kernel = k.compile_kernel(launch._jit(), meta, launch.scalars, dtype,
                                  launch.meta['num_warps'], fp32_pointers=fp32)
        regs = k.analyse(kernel)[0]
        print(dtype, what.replace(' ', '_'), regs, k._memory_ops(kernel))
"""
    (tmp_path / 'se_sass.py').write_text(script)
    out = run_tool(str(tmp_path / 'se_sass.py'),
                   extra_env={'TRITON_INTERPRET': '0'}).stdout.split('\n')
    rows = [line.split() for line in out if line]
    assert [r[1] for r in rows[:7]] == ['sums', 'gate', 'gated_map', 'grad_sums', 'gate_grad',
                                        'weight_grad', 'input_grad']
    assert len(rows) == 14 and all(0 < int(r[2]) <= 255 for r in rows)
    # the map passes of a channels-last fp16 map: 16-byte loads (and stores of the gated map)
    assert 'LDG.E.128' in ' '.join(rows[0]) or 'LDG.128' in ' '.join(rows[0])


def test_kernel_sass_analyses_tuned_launch_configs(tmp_path):
    """``--launch-configs``: the launches a tuned table makes (its tile and warps), not the
    planner's."""
    import importlib

    import torch

    from mux_backbones import MUXNet
    from mux_backbones.layers import FusedGroupConv
    from mux_backbones.ops import launch_config
    from mux_backbones.utils.hooks import module_inputs
    triton = pytest.importorskip('triton')
    if not osp.exists(osp.join(osp.dirname(triton.__file__), 'backends/nvidia/bin/nvdisasm')):
        pytest.skip("this Triton has no CUDA backend tools")
    ops = importlib.import_module('mux_backbones.ops.group_conv')
    model = MUXNet('tiny', out_indices=(7, )).eval().switch_to_deploy(channels_last=True,
                                                                      fused_ops=True)
    convs = [m for m in model.modules() if isinstance(m, FusedGroupConv)]
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    conv = convs[-1]
    shape = (2, ) + tuple(module_inputs(model, [conv], x)[conv].shape[1:])
    key = ops.tuning_key(shape, 'float16', 'NVIDIA H200', conv.splits, conv.kernel_sizes,
                         conv.dilations, conv.stride, conv.channels_per_group)
    # and two epilogue GEMMs at batch 2: the last (the head conv + its activation) with a tuned
    # config, the first through an SE gate tuned to the stock path
    gemm = importlib.import_module('mux_backbones.ops.pointwise_conv')
    with launch_config.recorded_calls('pointwise_conv') as calls, torch.no_grad():
        model(x)

    def gemm_key(call):  # of the call at batch 2: per sample through an SE gate, else one
        rows, weight, bias, residual, kept, act, scale = call
        plan = gemm._planned(rows, weight, bias, residual, kept, act, scale)[0]
        samples, per_sample = (2, plan.per_sample) if scale is not None else \
            (1, 2 * plan.per_sample)
        return gemm.tuning_key(gemm.launch_meta(torch.float16, per_sample, *plan.args[2:]),
                               'float16', 'NVIDIA H200', samples, per_sample, plan.k, plan.c)

    launch_config.forget()
    try:
        launch_config.record(key, (2, 4, 8))
        launch_config.record(gemm_key(calls[-1]), (128, 16, 8, 1))
        first = next(i for i, call in enumerate(calls) if call[6] is not None)
        launch_config.record(gemm_key(calls[first]), launch_config.STOCK)  # tuned to cuBLAS
        launch_config.save(str(tmp_path / 'tuned.json'))
    finally:
        launch_config.forget()
    out = run_tool('tools/gpu/kernel_sass.py', '--arch', 'tiny', '--shape', '64', '--batch', '2',
                   '--launch-configs', str(tmp_path / 'tuned.json'),
                   extra_env={'TRITON_INTERPRET': '0'}).stdout
    assert '3 tuned launch configs from' in out
    convs, _, gemms = out.partition('\nepilogue GEMMs (')
    rows = [line.split() for line in convs.splitlines() if line.startswith('layer')][1:]
    assert rows[-1][7].startswith('2x4x') and all(not r[7].startswith('2x4x') for r in rows[:-1])
    tiles = [line.split()[5] for line in gemms.splitlines()[2:-1]]  # tile(/warps/stages)
    assert tiles[-1].startswith('128x16x') and tiles[-1].endswith('/8/1')
    assert tiles[first] == 'stock' and tiles.count('stock') == 1
    assert not any('/' in tile for tile in tiles[:-1])


def test_benchmark_whole_config():
    cfg = osp.join(REPO, 'configs/ssd/ssdlite_muxnet-m_1xb8-300it_toyvoc.py')
    out = run_tool(BENCH, '--config', cfg, '--modes', 'eager', 'deploy', *FAST).stdout
    assert '[eager]' in out and '[deploy]' in out and 'ms' in out


@pytest.mark.parametrize('args,expected', [
    (('--models', 'muxnet-zz'), 'unknown model "muxnet-zz"'),
    (('--device', 'cuda:99'), 'device "cuda:99" is not usable'),
    (('--device', 'tpu'), 'device "tpu" is not usable'),
    (('--config', 'configs/ssd/no_such_config.py'), 'config file not found'),
])
def test_benchmark_bad_input(args, expected):
    _clean_failure(run_tool(BENCH, *args, *FAST, check=False), expected)


def test_benchmark_saves_launch_configs_only_when_tuning():
    proc = run_tool(BENCH, '--save-launch-configs', 'tuned.json', *FAST, check=False)
    assert proc.returncode == 2 and '--save-launch-configs needs --tune-kernels' in proc.stderr


def test_export_backbone_and_detector(tmp_path):
    out = run_tool(EXPORT, '--arch', 'tiny', '--shape', '64', '64', '--out',
                   str(tmp_path / 'tiny.onnx')).stdout
    assert 'max |onnxruntime - torch|' in out and osp.getsize(tmp_path / 'tiny.onnx') > 0
    cfg = write_det_config(tmp_path, str(tmp_path / 'unused'))
    out = run_tool(EXPORT, '--config', cfg, '--shape', '96', '96', '--out',
                   str(tmp_path / 'ssdlite.onnx')).stdout
    assert 'outputs, max |onnxruntime - torch|' in out


def test_export_backbone_with_a_classifier_checkpoint(tmp_path):
    """--arch with --checkpoint: the classifier's backbone weights are what the ONNX file holds,
    up to a truncated backbone's last stage (the unbuilt stages' keys are not refused)."""
    import onnxruntime as ort

    from mux_backbones import MUXNet
    from mux_backbones.models import MUXNetClassifier
    classifier = MUXNetClassifier('tiny', num_classes=5)
    for module in classifier.modules():  # BN statistics that are not the initial ones
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
    ckpt = str(tmp_path / 'classifier.pth')
    torch.save({'state_dict': classifier.state_dict()}, ckpt)
    out = str(tmp_path / 'tiny.onnx')
    run_tool(EXPORT, '--arch', 'tiny', '--out-indices', '4', '--checkpoint', ckpt, '--shape',
             '32', '32', '--out', out)
    x = torch.randn(1, 3, 32, 32)
    (onnx_out, ) = ort.InferenceSession(out, providers=['CPUExecutionProvider']).run(
        None, {'input': x.numpy()})
    reference = MUXNet('tiny', out_indices=(4, )).eval()
    assert reference.load_pretrained(ckpt) == len(reference.state_dict())
    with torch.no_grad():
        (expected, ) = reference(x)
        (fresh, ) = MUXNet('tiny', out_indices=(4, )).eval()(x)
    torch.testing.assert_close(torch.from_numpy(onnx_out), expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(fresh, expected, atol=1e-3)


def test_export_bad_input(tmp_path):
    _clean_failure(run_tool(EXPORT, '--arch', 'zz', '--out', str(tmp_path / 'x.onnx'),
                            check=False), 'unknown MUXNet arch "zz"')
    _clean_failure(run_tool(EXPORT, '--out', str(tmp_path / 'x.onnx'), check=False),
                   'either --arch or --config')
    _clean_failure(run_tool(EXPORT, '--arch', 'tiny', '--checkpoint', str(tmp_path / 'no.pth'),
                            '--out', str(tmp_path / 'x.onnx'), check=False),
                   'checkpoint not found')
    weights = tmp_path / 'weights.pth'
    weights.write_bytes(b'kept')
    _clean_failure(run_tool(EXPORT, '--arch', 'tiny', '--checkpoint', str(weights), '--out',
                            str(weights), check=False),
                   'is the checkpoint: it would be overwritten')
    assert weights.read_bytes() == b'kept'
    cfg = write_det_config(tmp_path, str(tmp_path / 'unused'))
    _clean_failure(run_tool(EXPORT, '--config', cfg, '--out-indices', '4', '--out',
                            str(tmp_path / 'x.onnx'), check=False),
                   '--out-indices goes with --arch')
    # A user layer the exporter has no ONNX mapping for: one line naming the operator.
    (tmp_path / 'unexportable_backbone.py').write_text(
        'import torch\n'
        'from mmdet.registry import MODELS\n'
        'from mux_backbones import MUXNet\n\n\n'
        '@MODELS.register_module()\n'
        'class HistogramMUXNet(MUXNet):\n'
        '    def forward(self, x):\n'
        '        return tuple(o + torch.histc(o).mean() for o in super().forward(x))\n')
    with open(cfg, 'a') as f:
        f.write("custom_imports = dict(imports=['mux_backbones', 'unexportable_backbone'])\n"
                "model['backbone']['type'] = 'HistogramMUXNet'\n")
    proc = run_tool(EXPORT, '--config', cfg, '--shape', '96', '96', '--out',
                    str(tmp_path / 'x.onnx'), check=False, extra_path=str(tmp_path))
    _clean_failure(proc, 'ONNX export failed', 'aten::histc')


def test_layer_bench_variants_name_the_planner_constants():
    """tools/gpu/layer_bench.py (CUDA only) re-times the fused kernel per --variants column; a
    constant it cannot set is a usage error before any GPU work."""
    proc = run_tool('tools/gpu/layer_bench.py', '--variants', 'LANE_WASTE=3', 'WINDOW_ALIGN=4',
                    check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert '"WINDOW_ALIGN=4": expected NAME=INTEGER with NAME one of LANE_WASTE' in proc.stderr


def test_launch_config_files_on_the_command_line(tmp_path):
    """layer_bench.py writes tuned launch configs only when it tunes (a usage error before any
    GPU work otherwise); benchmark.py refuses a file that is not one, in one line."""
    proc = run_tool('tools/gpu/layer_bench.py', '--save-configs', str(tmp_path / 'c.json'),
                    check=False)
    assert proc.returncode == 2 and '--save-configs needs --tune' in proc.stderr
    bad = tmp_path / 'bad.json'
    bad.write_text('{"configs": []}')
    proc = run_tool(BENCH, '--models', 'muxnet-tiny', '--launch-configs', str(bad), *FAST,
                    check=False)
    _clean_failure(proc, 'cannot load launch configs', 'not a launch-config file')
    good = tmp_path / 'good.json'
    good.write_text('{"format": "mux_backbones.launch_configs/1", "configs": [{"key": '
                    '["group_conv", "cpu", "float32", [1, 8, 9, 9], [8], [3], [1], 1, 1], '
                    '"config": {"tile_h": 4, "tile_w": 8, "num_warps": 2}}]}')
    out = run_tool(BENCH, '--models', 'muxnet-tiny', '--modes', 'deploy', '--tune-kernels',
                   '--launch-configs', str(good), *FAST).stdout  # (tuning: CUDA only)
    assert '1 tuned launch configs from' in out and 'muxnet-tiny' in out


def test_layer_bench_tunes_convs_and_gemms_end_to_end(tmp_path, monkeypatch, capsys):
    """tools/gpu/layer_bench.py's whole run as a GPU lease makes it -- per-layer times, a
    --variants column, --tune of every spatial conv and epilogue GEMM, the SE/tail/expand
    table, the saved launch configs -- checked on the CPU under the Triton interpreter with a
    stand-in timer, so a lease's minutes do not go to a broken tool."""
    import json

    from mux_backbones.ops import launch_config
    from mux_backbones.utils import timing
    pytest.importorskip('triton')
    bench = load_tool('tools/gpu/layer_bench.py')

    def fake_time_us(fn, device=None, **kwargs):
        fn()
        return 2.0

    monkeypatch.setattr(bench, 'device_time_us', fake_time_us)
    monkeypatch.setattr(timing, 'device_time_us', fake_time_us)  # the tuners' default timer
    saved = tmp_path / 'tuned.json'
    monkeypatch.setattr(sys, 'argv', [
        'layer_bench.py', '--arch', 'tiny', '--batch', '1', '--shape', '32', '--amp', 'fp32',
        '--device', 'cpu', '--variants', 'LANE_WASTE=3', '--tune', '--save-configs', str(saved)])
    launch_config.forget()
    try:
        bench.main()
    finally:
        launch_config.forget()
    out = capsys.readouterr().out
    print(out)
    convs, _, gemms = out.partition('\n\nblock ')
    assert 'tuned us' in convs and convs.count('\nlayer') >= 8
    se_rows = [line.split() for line in gemms.splitlines()[1:]]
    tails = [token for row in se_rows for token in row if token.startswith('+se')]
    assert '+se+res+mux' in tails and '+se' in tails  # every SE block's tail
    assert any(row[:1] == ['conv_head'] for row in se_rows)  # and the head conv's GEMM
    header = gemms.splitlines()[0]
    assert header.count('tuned') == 2 and header.count('epilogue us') == 2
    keys = [row['key'][0] for row in json.loads(saved.read_text())['configs']]
    assert 'group_conv' in keys and 'pointwise_conv' in keys


def test_benchmark_profile_by_kind_of_layer():
    """``--profile``: the top operators, then per kind of layer its calls, time, bytes and
    achieved bandwidth, for every model (on the CPU: CPU time), then its slowest layers by
    name."""
    out = run_tool(BENCH, '--models', 'mobilenetv2', 'muxnet-tiny', '--modes', 'deploy',
                   '--profile', 'fp32:1', '--profile-top', '5', *FAST,
                   extra_env=COMPILED).stdout
    slowest = out.split('the slowest layers --')[1:]
    assert len(slowest) == 2
    for table in slowest:
        lines = table.splitlines()
        assert lines[1].split()[:3] == ['slowest', '5', 'layers']
        rows = [line.split() for line in lines[2:9]]
        assert rows[5][:2] == ['(outside', 'layers)'] and rows[6][0] == 'total'
        assert all(r[1].startswith('(') for r in rows[:5])  # "<name> (<Kind>)"
    tables = out.split('time per forward by kind of layer')[1:]
    assert len(tables) == 2
    for table in tables:
        rows = [line.split() for line in table.splitlines()[2:]]
        rows = rows[:next(i for i, r in enumerate(rows) if r[:1] == ['total']) + 1]
        conv = next(r for r in rows if r[0] == 'Conv2d')
        assert float(conv[1]) > 0 and float(conv[-3]) > 0 and float(conv[-2]) >= 0  # MiB, TB/s
        assert rows[-2][:2] == ['(outside', 'layers)'] and rows[-1][0] == 'total'


def test_ratio_column_without_mobilenetv2_alongside():
    """``--models muxnet-xs`` alone has no MobileNetV2 row to divide by: a dash, not "nanx",
    in the same width as a ratio (the row keeps its column count)."""
    column = load_tool(BENCH).vs_mobilenetv2
    assert column(float('nan')).split() == ['-'] and column(1.234).split() == ['1.23x']
    assert len(column(float('nan'))) == len(column(1.234))


def test_cuda_graphed_model_outlives_its_capture(monkeypatch):
    """A graph-mode case holds its model: a CUDA graph keeps no tensor alive, and a model freed
    after its capture left the replays reading blocks a later capture's ``empty_cache`` had
    released (session 40's batch-128 "illegal memory access" in MobileNetV2's graph-stock
    warm-up). The stand-in graph, like CUDA's, drops the captured callable."""
    import gc
    import weakref
    bench = load_tool(BENCH)

    class Graph:
        replays = 0

        def replay(self):
            Graph.replays += 1

    monkeypatch.setattr(bench, 'capture_cuda_graph', lambda fn: (Graph(), fn()))
    model = torch.nn.Conv2d(3, 4, 1)
    alive = weakref.ref(model)
    graphed = bench.CudaGraphed(model, torch.randn(1, 3, 4, 4))
    del model
    gc.collect()
    assert alive() is not None
    out = graphed(torch.zeros(1, 3, 4, 4))
    assert Graph.replays == 1 and out.shape == (1, 4, 4, 4)
    assert graphed.static_x.abs().sum() == 0  # the new input copied into the captured buffer


def test_fused_kernel_summary_by_family():
    """The fused Triton kernels' time per forward by family, with the bandwidth on the bytes of
    the kind of layer a family is the whole work of: both spatial-conv kernels count (session
    40's H200 profile left out ``_forward_one_kernel``, 283 of its 380 us), other kernels do not;
    no fused kernel, no line."""
    from mux_backbones.utils.layer_profile import LayerCost
    summary = load_tool(BENCH).fused_kernel_summary

    class Event:
        def __init__(self, key, us):
            self.key, self.self_device_time_total = key, us

    events = [Event('_forward_kernel', 970.0), Event('_forward_one_kernel', 2830.0),
              Event('_pointwise_kernel', 4970.0), Event('_se_gate_kernel', 560.0),
              Event('aten::cudnn_convolution', 300.0), Event('_weight_grad_kernel', 99.0)]
    layers = [LayerCost('FusedGroupConv', 18, 5.8, 380e6), LayerCost('Conv2d', 1, 54.2, 29e6),
              LayerCost('(outside layers)', 0, 809.0, None)]
    assert summary(events, layers, runs=10) == (
        'fused Triton kernels per forward: spatial convs 380 us (362.4 MiB of FusedGroupConv, '
        '1.00 TB/s); epilogue GEMMs 497 us; SE gates 56 us')
    assert summary(events[-2:], layers, runs=10) == ''


def test_benchmark_training_step_with_profile():
    """``--train-step``: SSDLite training steps of MobileNetV2, MUXNet-m and MUXNet-m with
    ``fused_ops``, all layers and as chosen in one table with ratios and peak memory, and with
    ``--profile-train`` each step's top operators (kernels on a GPU). In bf16 where the CPU has
    bf16 instructions (the kernels' stock fallback: nothing to choose), else fp32 (each served
    conv timed both ways): emulated bf16 would take the test past its time limit."""
    amp = 'bf16' if cpu_bf16_native() else 'fp32'
    out = run_tool(BENCH, '--train-step', 'ssdlite', '--train-batch', '2', '--train-amp',
                   amp, '--runs', '10', '--models', 'mobilenetv2', '--modes', 'eager',
                   '--batch', '1', '--shape', '64', '--warmup', '1', '--threads', str(TEST_THREADS),
                   '--profile-train', extra_env={'TRITON_INTERPRET': '0'}).stdout
    table = out.partition('training step ssdlite, batch 2, 320x320')[2]
    rows = [line.split() for line in table.splitlines()]
    labels = [' '.join(r[:-4]) for r in rows if len(r) >= 5 and r[-1].endswith('x')]
    assert labels == ['mobilenetv2', 'muxnet-m', 'muxnet-m fused_ops', 'muxnet-m fused, chosen']
    assert next(r for r in rows if r[:1] == ['mobilenetv2'])[-1] == '1.00x'
    assert table.count('CPU operators busy') == 4
    assert 'ssdlite muxnet-m fused_ops: CPU operators busy' in table


def test_check_kernels_rehearsal(monkeypatch, capsys):
    """tools/gpu/check_kernels.py (the GPU lease's first phase) with ``--quick``: every check on
    small shapes in the interpreter, one line each, all passing; without the interpreter a clear
    one-line refusal. (In this process: its kernels under the suite's interpreter checks.)"""
    pytest.importorskip('triton')
    if os.environ.get('TRITON_INTERPRET') != '1':
        pytest.skip('the rehearsal runs the kernels in Triton\'s interpreter')
    check_kernels = load_tool('tools/gpu/check_kernels.py')
    # what the check sets for a GPU, put back after the test
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', torch.backends.cudnn.allow_tf32)
    monkeypatch.setattr(sys, 'argv', ['check_kernels.py', '--quick'])
    with pytest.raises(SystemExit) as done:
        check_kernels.main()
    out = capsys.readouterr().out
    assert done.value.code == 0, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith(('ok', 'FAIL'))]
    assert len(lines) >= 7 + 4 + 4 + 6 + 2 and all(line.startswith('ok') for line in lines)
    assert any(line.startswith('ok   pointwise_conv') for line in lines)
    assert sum(line.startswith('ok   gated_map') for line in lines) == 4
    assert any('(max rel err, kernel gradients vs stock)' in line for line in lines)
    assert any('block launches and direct launches equal the modules' in line for line in lines)
    assert any('with the SE gate in the project GEMMs' in line for line in lines)
    assert 'kernel check: all passed' in out
    # the next lease's: the deploy checks alone (the training ones passed on the H200)
    monkeypatch.setattr(sys, 'argv', ['check_kernels.py', '--quick', '--model-only',
                                      '--deploy-only'])
    with pytest.raises(SystemExit) as done:
        check_kernels.main()
    out = capsys.readouterr().out
    assert done.value.code == 0, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith(('ok', 'FAIL'))]
    assert len(lines) == 3 and 'deploy (fused kernels) vs eval' in lines[0]
    monkeypatch.setenv('TRITON_INTERPRET', '0')
    with pytest.raises(SystemExit, match='set TRITON_INTERPRET=1'):
        check_kernels.main()


def _gpu_check_plan(tmp_path, script='tools/gpu/gpu_check.sh', **env):
    """``(name, cap, command)`` of the phases ``gpu_check.sh SPEED_ONLY=1 DRY_RUN=1`` plans (run
    by ``script``), and its whole output."""
    proc = subprocess.run(['bash', script], cwd=REPO, capture_output=True,
                          text=True, check=True, env=dict(
                              os.environ, SPEED_ONLY='1', DRY_RUN='1', OUT=str(tmp_path), **env))
    return re.findall(r'\] (\w+) \(cap (\d+)s\): (.*)', proc.stdout), proc.stdout


def test_gpu_check_plans_valid_phases_and_runs_only_those_named(tmp_path):
    """The GPU lease's script (``tools/gpu/gpu_check.sh SPEED_ONLY=1``) rehearsed without a GPU
    (``DRY_RUN=1``): its phases in priority order, each tool there and every benchmark command
    one the benchmark's parser takes (a lease's minutes never go to a mistyped flag), a
    committed launch-config table (``LAUNCH_CONFIGS``) on the tuned rows; ``PHASES`` runs only
    the phases it names, the others said to be skipped."""
    parse_args = load_tool(BENCH).parse_args
    table = tmp_path / 'tuned.json'
    table.write_text('{}\n')
    planned, _ = _gpu_check_plan(tmp_path / 'all', LAUNCH_CONFIGS=str(table))
    names = [name for name, _, _ in planned]
    assert names[:15] == [
        'check_kernels', 'layer_bench', 'bench_fp16_b32', 'bench_fp16_b32_graph',
        'bench_fp16_b32_blocking', 'fault_sanitizer', 'bench_profile', 'bench_graph_more',
        'bench_graph_b128', 'fault_probe_b128', 'fault_sanitizer_b128', 'bench_tune_gemms',
        'bench_train', 'bench_compile', 'graph_gate_b1'] and len(names) == len(set(names)) == 23
    for name, cap, command in planned:
        argv = shlex.split(command)
        script = next(a for a in argv if a.endswith('.py'))
        assert osp.isfile(osp.join(REPO, script)), (name, script)
        if script == BENCH:
            args = parse_args(argv[argv.index(BENCH) + 1:])
            assert args.device == 'cuda' and ('muxnet-m' in args.models), name
    commands = {name: command for name, _, command in planned}
    assert f'--launch-configs {table}' in commands['bench_fp16_b32']
    assert f'--launch-configs {table}' in commands['bench_compile']
    cases = {name: (a.amp, a.batch, a.modes) for name in ('bench_graph_more', 'bench_graph_b128')
             for a in [parse_args(shlex.split(commands[name])[2:])]}
    assert cases == {'bench_graph_more': (['fp16', 'bf16'], [1, 32], ['graph-stock', 'graph']),
                     'bench_graph_b128': (['fp16', 'bf16'], [128], ['graph-stock', 'graph'])}
    # (the batch-128 probes: planned only after a fault there; always in a dry run)
    assert '--batch 128 --amp fp16' in commands['fault_probe_b128']
    assert commands['fault_sanitizer_b128'].endswith(commands['fault_probe_b128'])
    modes = {name: parse_args(shlex.split(commands[name])[2:]).modes
             for name in ('bench_fp16_b32', 'bench_fp16_b32_graph')}
    assert modes == {'bench_fp16_b32': ['eager', 'deploy-stock', 'deploy'],
                     'bench_fp16_b32_graph': ['graph-stock', 'graph', 'graph-auto']}
    # (planned only when the rows before it failed with a CUDA error; always in a dry run)
    assert commands['bench_fp16_b32_blocking'].startswith('env CUDA_LAUNCH_BLOCKING=1 ')
    assert parse_args(shlex.split(commands['bench_train'])[2:]).train_step == ['ssdlite', 'pspnet']
    # No table (layer_bench left out, no LAUNCH_CONFIGS): the batch-32 rows tune and save their
    # own, and the phases after them load what they saved.
    planned, _ = _gpu_check_plan(tmp_path / 'inline',
                                 PHASES='bench_fp16_b32 bench_fp16_b32_graph bench_compile')
    commands = {name: command for name, _, command in planned}
    assert list(commands) == ['bench_fp16_b32', 'bench_fp16_b32_graph', 'bench_compile']
    args = parse_args(shlex.split(commands['bench_fp16_b32'])[2:])
    saved = str(tmp_path / 'inline' / 'launch_configs.json')
    assert args.tune_kernels and args.save_launch_configs == saved
    assert f'--launch-configs {saved}' in commands['bench_fp16_b32_graph']
    assert f'--launch-configs {saved}' in commands['bench_compile']
    planned, out = _gpu_check_plan(tmp_path / 'some', PHASES='bench_train host_time')
    assert [name for name, _, _ in planned] == ['bench_train', 'host_time']
    assert 'check_kernels skipped: not in PHASES' in out


def test_gpu_check_probes_the_graph_rows_mix_of_forms(tmp_path):
    """Where the batch-32 graph rows faulted, the sanitizer's probe rebuilds their graph-auto
    model from their log (the blocks ``fused_ops='auto'`` says it kept stock there)."""
    (_, _, command), = _gpu_check_plan(tmp_path, PHASES='fault_sanitizer')[0]
    assert 'fault_probe.py --batch 32 ' in command
    assert command.endswith(f' --stock-blocks-from {tmp_path}/bench_fp16_b32_graph.txt')


def test_next_lease_plans_its_phases_with_the_committed_table(tmp_path):
    """``tools/gpu/next_lease.sh`` (the one command the docs name for the next H200 lease)
    plans exactly its phases, in gpu_check's priority order, and runs the tuned rows with the
    committed launch-config table, a file this repository holds."""
    planned, _ = _gpu_check_plan(tmp_path, 'tools/gpu/next_lease.sh')
    assert [name for name, _, _ in planned] == [
        'check_kernels', 'bench_profile', 'bench_graph_more', 'bench_graph_b128',
        'fault_probe_b128', 'fault_sanitizer_b128', 'bench_tune_gemms', 'bench_train',
        'bench_compile', 'graph_gate_b1', 'host_time']
    commands = {name: command for name, _, command in planned}
    table = 'tools/gpu/tuned/h200_muxnet-m_fp16_b32.json'
    assert osp.isfile(osp.join(REPO, table))
    assert f'--launch-configs {table}' in commands['bench_graph_b128']
    assert commands['check_kernels'].endswith('check_kernels.py --model-only --deploy-only')
    assert {name: cap for name, cap, _ in planned}['check_kernels'] == '60'
    # the GEMMs alone re-tuned over the committed table, the table saved to come back
    tune = load_tool(BENCH).parse_args(shlex.split(commands['bench_tune_gemms'])[2:])
    assert tune.tune_kernels == 'gemms' and tune.launch_configs == table
    assert tune.save_launch_configs.endswith('launch_configs_gemms.json')
    # the fused forms alone, their slowest layers by name
    assert ' --modes deploy --runs 2 --profile fp16:32 --profile-top 25 ' in \
        commands['bench_profile']


def test_device_stack_rehearsal_stubs_mmcv_everywhere_and_skips_only_its_calls(tmp_path):
    """``tools/gpu/rehearse_device_stack.sh`` puts the lease's mmcv stand-in in every process it
    starts (the tools' subprocesses too) and reports skipped a test that failed only by calling
    an mmcv op; any other failure stays a failure. (A stack folder already complete: no
    downloads, this machine's torch.)"""
    stack = tmp_path / 'stack'
    (stack / 'torch-prepared').mkdir(parents=True)
    (stack / 'torch-prepared' / '.complete').touch()
    probe = tmp_path / 'test_probe.py'
    probe.write_text(
        'import importlib, subprocess, sys\n'
        'def test_calls_nms():\n'  # as mmcv's extension loader reaches it
        '    importlib.import_module("mmcv._ext").nms()\n'
        'def test_subprocess_sees_the_stub():\n'
        '    code = "import importlib; importlib.import_module(\'mmcv._ext\').nms()"\n'
        '    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)\n'
        '    assert out.returncode == 0, out.stderr\n'
        'def test_real_failure():\n'
        '    assert 1 == 2\n'
        'def test_passes():\n'
        '    assert True\n')
    proc = subprocess.run(
        ['bash', 'tools/gpu/rehearse_device_stack.sh', '-q', '-p', 'no:cacheprovider',
         '--rootdir', str(tmp_path), '-rsf', str(probe)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, STACK_DIR=str(stack), DEVICE_TORCH='prepared'))
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert '1 failed, 1 passed, 2 skipped' in out, out
    assert 'FAILED' in out and 'test_real_failure' in out
    assert out.count("calls an mmcv op: needs mmcv's extension for this torch") == 2, out


def test_fault_probe_rehearsal_and_locating(tmp_path):
    """tools/gpu/fault_probe.py (a GPU lease's tool) runs end to end on the CPU, with the stock
    blocks a benchmark's log names, and its per-module forward names the module whose work
    raised, with its input shapes."""
    log = tmp_path / 'bench.txt'
    log.write_text("12/01 00:09:19 - mmengine - INFO - switch_to_deploy(fused_ops='auto'): fused "
                   'kernels in 9 of 11 blocks; their spatial + SE + project time 253 -> 171 us; '
                   'stock form kept in layer2.1.body (fused 41 vs stock 38 us), layer7.0 '
                   '(fused 12 vs stock 11 us)\n')
    out = run_tool('tools/gpu/fault_probe.py', '--device', 'cpu', '--arch', 'tiny', '--batch',
                   '2', '--shape', '64', '--amp', 'fp32', '--stock-blocks-from', str(log)).stdout
    assert 'no fault: MUXNet-tiny deploy fp32 batch 2 (planner launch configs; stock form in ' \
        'layer2.1.body layer7.0)' in out
    for flags in (['--tune'], ['--gpu-plans']):  # (--gpu-plans: only in the interpreter)
        proc = run_tool('tools/gpu/fault_probe.py', '--device', 'cpu', *flags, check=False)
        assert proc.returncode != 0 and ('need --device cuda' in proc.stderr or
                                         'under TRITON_INTERPRET=1' in proc.stderr)
    # On the CPU with the launches a GPU plans for a large batch, every access checked.
    out = run_tool('tools/gpu/fault_probe.py', '--device', 'cpu', '--gpu-plans',
                   '--large-batch-plan', '--arch', 'tiny', '--batch', '2', '--shape', '40',
                   '--amp', 'fp32', extra_env={'TRITON_INTERPRET': '1'}).stdout
    assert 'no fault: MUXNet-tiny deploy fp32 batch 2 (GPU large-batch planner launch ' \
        'configs)' in out
    probe = load_tool('tools/gpu/fault_probe.py')

    class Faulty(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError('CUDA error: an illegal memory access was encountered')

    class FaultyAfterChild(torch.nn.Module):  # its own work after a clean child faults
        def __init__(self):
            super().__init__()
            self.child = torch.nn.Identity()

        def forward(self, x):
            return Faulty()(self.child(x))

    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Sequential(Faulty()))
    (where, shapes), trace = probe.located_forward(model, torch.zeros(1, 3, 4, 4))
    assert where == '1.0' and shapes == '(1, 3, 4, 4)' and 'illegal memory access' in trace
    model = torch.nn.Sequential(torch.nn.Identity(), FaultyAfterChild())
    (where, _), _ = probe.located_forward(model, torch.zeros(1, 3, 4, 4))
    assert where == '1'  # not its child, which returned clean
    assert probe.located_forward(torch.nn.Identity(), torch.zeros(1)) is None


def test_prebuilt_triton_cache_serves_tritons_own_lookups(tmp_path):
    """tools/gpu/prebuild_triton_cache.py: a deployed model's launches compiled for sm_90 without
    a GPU (the GPU's plans, Triton's own specialisation), the cache cut to what a hit reads, and
    Triton's own JIT path then finding every kernel -- an entry taken out is the one it adds."""
    triton = pytest.importorskip('triton')
    if not osp.exists(osp.join(osp.dirname(triton.__file__), 'backends/nvidia/bin/ptxas')):
        pytest.skip("this Triton has no CUDA backend tools")
    script = """
import os, shutil, sys
sys.path.insert(0, os.path.join(os.getcwd(), 'tools', 'gpu'))
import prebuild_triton_cache as p
from triton.backends.compiler import GPUTarget
cache = os.environ['TRITON_CACHE_DIR']
p.MODEL, p.IMAGE = 'muxnet-tiny', 32
p.plan_as_on_the_gpu()
p.stand_in_libcuda(os.environ['LIBCUDA_DIR'])
tool = p.CompileForTarget(GPUTarget('cuda', 90, 32))
tool.install()
case = ('deploy', 'fp32', 2, None)
print('case', p.run_case(*case))
print('counts', tool.compiled, tool.failed, tool.repeated)
print('kept', p.prune(cache))
files = {e: os.listdir(os.path.join(cache, e)) for e in os.listdir(cache)}
kernels = sorted(e for e, names in files.items() if any(n.endswith('.cubin') for n in names))
launchers = [e for e, names in files.items() if any(n.endswith('.so') for n in names)]
print('entries', len(files), len(kernels), len(launchers))
from triton.backends.nvidia import driver
print('launcher_per_signature', hasattr(driver, 'make_launcher'))  # (Triton before 3.9)
print('suffixes', sorted({n.rsplit('.', 1)[-1] for e in kernels for n in files[e]}))
shutil.rmtree(os.path.join(cache, kernels[0]))
print('missed', sorted(p.verify(tool.target, [case], cache)) == [kernels[0]])
import json, types
p.write_manifest(cache, types.SimpleNamespace(capability=90, cases=['deploy'],
                                              launch_configs=p.TABLE), tool)
with open(os.path.join(cache, p.MANIFEST)) as f:
    print('manifest', json.load(f)['kernel_sources_sha256'])
"""
    (tmp_path / 'prebuild.py').write_text(script)
    cache = tmp_path / 'cache'
    out = run_tool(str(tmp_path / 'prebuild.py'), extra_env={
        'TRITON_INTERPRET': '0', 'TRITON_CACHE_DIR': str(cache),
        'LIBCUDA_DIR': str(tmp_path)}).stdout
    lines = dict(line.split(' ', 1) for line in out.splitlines() if ' ' in line)
    assert lines['case'] == 'deploy fp32 batch 2'
    compiled, failed, repeated = map(int, lines['counts'].split())
    # the spatial convs and epilogue GEMMs of every block, each specialisation compiled once
    assert compiled >= 10 and failed == 0 and repeated > 0
    entries, kernels, launchers = map(int, lines['entries'].split())
    assert int(lines['kept']) == compiled == kernels and entries == kernels + launchers
    # a C launcher per kernel signature where this Triton builds them (fewer: shared)
    assert (0 < launchers < kernels) if lines['launcher_per_signature'] == 'True' \
        else launchers == 0
    assert lines['suffixes'] == "['cubin', 'json']"
    assert lines['missed'] == 'True'
    # the manifest's digest of the kernel sources is the one gpu_check.sh computes on the device
    # to say whether the carried cache was built from the tree it runs
    with open(osp.join(REPO, 'tools', 'gpu', 'gpu_check.sh')) as f:
        digest = next(line.strip()[len('DIGEST='):] for line in f
                      if line.strip().startswith('DIGEST='))
    on_device = subprocess.run(['bash', '-c', f'echo {digest}'], cwd=REPO, check=True,
                               capture_output=True, text=True).stdout.strip()
    assert lines['manifest'] == on_device and len(on_device) == 64
    # the device unpacks the cache at one absolute path: any other is refused at once
    proc = run_tool('tools/gpu/prebuild_triton_cache.py', '--no-verify', check=False,
                    extra_env={'TRITON_INTERPRET': '0', 'TRITON_CACHE_DIR': str(cache)})
    assert proc.returncode != 0 and 'TRITON_CACHE_DIR=/tmp/mux_triton_cache' in proc.stderr
