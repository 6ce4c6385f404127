"""A deployed CPU model's weights in one buffer (mux_backbones/utils/weight_buffer.py): the same
tensors, values, strides and outputs; what shares storage or is not dense stays; saving, loading,
pickling, copying and moving the model work as before, and write each weight once. (The deployed
models run the C++ kernels' forms, as a CPU user's do.)"""
import copy
import io
import pickle

import torch
from torch import nn

from mux_backbones import MUXNet
from mux_backbones.deploy import switch_to_deploy
from mux_backbones.layers.conv_bn import PointwiseConv2d
from mux_backbones.utils.weight_buffer import _HUGE_PAGE, _memory, gather_weights
from tests.helpers import randomise_bn


def _storages(model):
    return {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]
            if t.is_floating_point()}


def _span(model):
    """Bytes from the first floating-point weight's start to the last one's end."""
    tensors = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
    return max(t.data_ptr() + t.untyped_storage().nbytes() for t in tensors) - \
        min(t.data_ptr() for t in tensors)


def _weight_bytes(model):
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _deployed(gather):
    torch.manual_seed(0)
    model = randomise_bn(MUXNet('tiny', out_indices=(2, 4, 7)))
    return switch_to_deploy(model, channels_last=True, fused_ops=True, gather=gather)


def _input():
    torch.manual_seed(1)
    return torch.randn(2, 3, 45, 37).contiguous(memory_format=torch.channels_last)


def test_gathered_model_computes_the_same_bits(outside_interpreter):
    model, x = _deployed(gather=False), _input()
    with torch.no_grad():
        expected = model(x)
    tensors = {name: t for name, t in [*model.named_parameters(), *model.named_buffers()]
               if t.is_floating_point()}
    layouts = {name: (t.shape, t.stride(), t.clone()) for name, t in tensors.items()}
    assert len(_storages(model)) == len(tensors) > 1
    nbytes = gather_weights(model)
    assert nbytes >= sum(t.numel() * t.element_size() for t in tensors.values())
    assert _span(model) <= nbytes  # (one buffer, each tensor a storage of its own in it)
    assert len(_storages(model)) == len(tensors)
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if name not in tensors:  # (integer buffers: BN's batch counters stay)
            continue
        shape, stride, value = layouts[name]
        assert t is tensors[name] and t.shape == shape and t.stride() == stride
        assert torch.equal(t, value) and t.data_ptr() % 64 == 0
    # (the 1x1 convs' weights keep the kernel's matrix layout)
    assert any(isinstance(m, PointwiseConv2d) and m.kernel_form for m in model.modules())
    with torch.no_grad():
        for out, ref in zip(model(x), expected, strict=True):
            assert torch.equal(out, ref)
    assert gather_weights(model) == 0  # (already one buffer: nothing moves)


def _address(memory):
    return torch.frombuffer(memory, dtype=torch.uint8).data_ptr()


def test_large_buffers_start_at_a_huge_page():
    assert _address(_memory(_HUGE_PAGE)) % _HUGE_PAGE == 0
    assert _address(_memory(_HUGE_PAGE // 2)) % _HUGE_PAGE == 0
    small = _memory(1000)
    assert len(small) == 1000 and _address(small) % 64 == 0


def test_switch_to_deploy_gathers_cpu_models_unless_told_not_to():
    gathered, apart = _deployed(gather=None), _deployed(gather=False)
    assert _span(gathered) < _weight_bytes(gathered) + 64 * len(gathered.state_dict())
    assert not all(t.untyped_storage().resizable() for t in gathered.parameters())
    assert all(t.untyped_storage().resizable() for t in apart.parameters())


def test_saving_loading_copying_and_moving_a_gathered_model(outside_interpreter):
    model, x = _deployed(gather=True), _input()
    with torch.no_grad():
        expected = model(x)
    state = io.BytesIO()
    torch.save(model.state_dict(), state)
    state.seek(0)
    other = _deployed(gather=False)
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    other.load_state_dict(torch.load(state))
    loaded = _deployed(gather=True)  # loaded in place into a gathered model
    span = _span(loaded)
    loaded.load_state_dict(other.state_dict())
    assert _span(loaded) == span
    whole = io.BytesIO()
    torch.save(model, whole)
    whole.seek(0)
    # each weight written once, whatever the serialiser (plain pickle writes a tensor's whole
    # storage, so one storage viewed by all made a pickled MUXNet-m 1.9 GB)
    weights = _weight_bytes(model)
    assert state.getbuffer().nbytes < weights + (64 << 10)
    pickled = pickle.dumps(model)
    assert len(pickled) < 2 * weights
    copies = [other, loaded, copy.deepcopy(model), torch.load(whole, weights_only=False),
              pickle.loads(pickled)]
    with torch.no_grad():
        for copied in copies:
            for out, ref in zip(copied(x), expected, strict=True):
                assert torch.equal(out, ref)
    # moved or converted: memory of their own again, same outputs
    model.to(memory_format=torch.contiguous_format).to(memory_format=torch.channels_last)
    assert len(_storages(model)) > 1
    with torch.no_grad():
        for out, ref in zip(model(x), expected, strict=True):
            torch.testing.assert_close(out, ref)


def test_shared_and_strided_tensors_stay_where_they_are():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight  # tied
    base = torch.randn(4, 8)
    model[2].weight = nn.Parameter(base[:, ::2])  # a strided view: not dense
    tied, strided = model[0].weight, model[2].weight
    assert gather_weights(model) == 4 * 64  # (w0, b0, b1, b2, each at a 64-byte boundary)
    assert model[1].weight is tied and model[0].weight is tied
    assert strided.untyped_storage().data_ptr() == base.untyped_storage().data_ptr()
    assert strided.untyped_storage().resizable()
    assert not tied.untyped_storage().resizable()
