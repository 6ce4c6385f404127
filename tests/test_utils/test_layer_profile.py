"""The per-layer-kind profile: every module's own time counted once, bytes a leaf layer reads
and writes (in-place writes counted, pass-throughs not), the table adding up."""
import pytest
import torch
from torch import nn

from mux_backbones.utils.layer_profile import LayerCost, format_layer_costs, profile_layers


class Residual(nn.Module):
    """A block with layers and an operator of its own (the add)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)
        self.act = nn.ReLU(inplace=True)
        self.skip = nn.Identity()

    def forward(self, x):
        return self.act(self.conv(x)) + self.skip(x)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Residual(), Residual()).eval()


def test_rows_per_kind_with_bytes():
    model, x = _model(), torch.randn(2, 3, 16, 16)
    rows = profile_layers(model, x, runs=3, warmup=1)
    by_kind = {r.kind: r for r in rows}
    assert set(by_kind) == {'Conv2d', 'ReLU', 'Identity', 'Residual (own ops)',
                            'Sequential (own ops)', '(outside layers)'}
    assert rows[-1].kind == '(outside layers)'
    assert by_kind['Conv2d'].calls == 3 and by_kind['Residual (own ops)'].calls == 2
    fmap = 2 * 8 * 16 * 16 * 4
    convs = (2 * 3 * 16 * 16 + 8 * 3 * 9 + 8) * 4 + fmap + 2 * (2 * fmap + (64 + 8) * 4)
    assert by_kind['Conv2d'].bytes == convs
    assert by_kind['ReLU'].bytes == 2 * 2 * fmap  # in place: read and written, twice
    assert not by_kind['Identity'].bytes  # handed through: nothing moved
    assert by_kind['Residual (own ops)'].bytes is None  # its add: time only
    assert all(r.time_us >= 0 for r in rows) and by_kind['Conv2d'].time_us > 0
    assert by_kind['Conv2d'].tbps > 0 and by_kind['Residual (own ops)'].tbps is None


def test_each_range_counted_once():
    """A layer's own time excludes its sublayers', so the rows add up to the whole forward (on
    the CPU: the outermost range's time, nothing outside it)."""
    model, x = _model(), torch.randn(1, 3, 32, 32)
    rows = profile_layers(model, x, runs=2, warmup=1)
    assert rows[-1].time_us == pytest.approx(0, abs=1e-6)
    own = sum(r.time_us for r in rows)
    assert own > 0
    # no hooks or ranges are left behind
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_table():
    rows = [LayerCost('FusedGroupConv', 18, 600.0, 281 * 2**20),
            LayerCost('InvertedResidual (own ops)', 17, 40.0, None),
            LayerCost('(outside layers)', 0, 10.0, None)]
    text = format_layer_costs(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ['layer', 'kind', 'calls']
    fused = lines[1].split()
    assert fused[0] == 'FusedGroupConv' and fused[3] == '92%' and fused[4] == '281.0'
    assert float(fused[5]) == pytest.approx(281 * 2**20 / 600 / 1e6, abs=0.01)
    assert float(fused[6]) == pytest.approx(281 * 2**20 / 4.8e6, abs=0.1)
    assert lines[-1].split()[:2] == ['total', '650.0']


def test_gpu_attribution_from_the_kernels():
    """On the GPU a layer's time is the kernels it and its sublayers launched (a range's own
    GPU-side annotation span is no kernel, even if attached to it), minus its sublayers'; the
    total counts every kernel once, so unlinked kernels show as outside every layer."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import Kernel

    from mux_backbones.utils.layer_profile import _PREFIX, _costs

    def cpu(name, kernels=(), children=()):
        return SimpleNamespace(name=name, device_type=DeviceType.CPU, cpu_children=list(children),
                               kernels=[Kernel(k, 0, us) for k, us in kernels])

    def kernel(name, us):
        return SimpleNamespace(name=name, device_type=DeviceType.CUDA, self_device_time_total=us)

    conv = cpu(_PREFIX + 'block.conv', children=[cpu('aten::conv', [('cudnn_conv', 30.0)])])
    block = cpu(_PREFIX + 'block', [(_PREFIX + 'block', 55.0), ('_pointwise_kernel', 20.0)],
                [conv, cpu('aten::add', [('add_kernel', 5.0)])])
    events = [block, conv, kernel('cudnn_conv', 30.0), kernel('_pointwise_kernel', 20.0),
              kernel('add_kernel', 5.0), kernel(_PREFIX + 'block', 55.0),
              kernel('unlinked_kernel', 7.0)]
    range_kind = {_PREFIX + 'block': 'Block (own ops)', _PREFIX + 'block.conv': 'Conv2d'}
    rows = _costs(events, range_kind, {}, {}, runs=1, on_gpu=True)
    by_kind = {r.kind: r.time_us for r in rows}
    assert by_kind == {'Conv2d': 30.0, 'Block (own ops)': 25.0, '(outside layers)': 7.0}


def test_triton_launches_matched_to_their_layers_by_order():
    """Kernels Triton's launcher issued reach the profiler under no range (session 40, H200);
    each is charged to the layer whose range was open at its launch, the n-th kernel of a name
    to the n-th launch of it. A name whose counts disagree stays outside every layer; a matched
    kernel a range happens to hold counts once."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import Interval, Kernel

    from mux_backbones.utils.layer_profile import _PREFIX, _costs, match_launches

    def cpu(name, kernels=(), children=()):
        return SimpleNamespace(name=name, device_type=DeviceType.CPU, cpu_children=list(children),
                               kernels=[Kernel(k, 0, us) for k, us in kernels])

    def kernel(name, start, us):
        return SimpleNamespace(name=name, device_type=DeviceType.CUDA, self_device_time_total=us,
                               time_range=Interval(start, start + us))

    expand, project = _PREFIX + 'b.expand', _PREFIX + 'b.project'
    conv = _PREFIX + 'b.conv'
    events = [cpu(_PREFIX + 'b', children=[cpu(expand), cpu(conv), cpu(project)]),
              cpu(expand), cpu(conv, [('_forward_kernel', 9.0)]), cpu(project),
              # listed out of order: the match goes by start time
              kernel('_pointwise_kernel', 50, 30.0), kernel('_pointwise_kernel', 0, 10.0),
              kernel('_forward_kernel', 20, 9.0), kernel('_se_gate_kernel', 40, 2.0)]
    launches = [('_pointwise_kernel', expand), ('_forward_kernel', conv),
                ('_se_gate_kernel', project), ('_se_gate_kernel', project),  # one never ran
                ('_pointwise_kernel', project)]
    assert match_launches(events, launches) == {
        '_pointwise_kernel': [(expand, 10.0), (project, 30.0)], '_forward_kernel': [(conv, 9.0)]}
    range_kind = {_PREFIX + 'b': 'Block (own ops)', expand: 'PointwiseConv2d',
                  project: 'PointwiseConv2d', conv: 'FusedGroupConv'}
    rows = _costs(events, range_kind, {}, {}, runs=1, on_gpu=True, launches=launches)
    by_kind = {r.kind: r.time_us for r in rows}
    assert by_kind == {'PointwiseConv2d': 40.0, 'FusedGroupConv': 9.0, 'Block (own ops)': 0.0,
                       '(outside layers)': 2.0}


def test_profile_forward_per_layer_and_kind():
    """One profiled run gives both tables; a layer's row names it and its kind, and the layers
    of a kind add up to the kind's row."""
    from mux_backbones.utils.layer_profile import profile_forward
    model, x = _model(), torch.randn(2, 3, 16, 16)
    tables = profile_forward(model, x, runs=2, warmup=1)
    by_layer = {r.kind: r for r in tables['module']}
    by_kind = {r.kind: r for r in tables['kind']}
    assert {'0 (Conv2d)', '1.conv (Conv2d)', '2.conv (Conv2d)', '1 (Residual (own ops))',
            '(outside layers)'} <= set(by_layer)
    convs = ['0 (Conv2d)', '1.conv (Conv2d)', '2.conv (Conv2d)']
    assert sum(by_layer[n].bytes for n in convs) == by_kind['Conv2d'].bytes
    assert by_layer['1.conv (Conv2d)'].bytes == 2 * (2 * 8 * 16 * 16 * 4) + (64 + 8) * 4
    assert all(by_layer[n].calls == 1 for n in convs)
