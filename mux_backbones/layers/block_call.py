"""A deployed block's CPU form run as one C++ call (``ops/fused_block_cpu.cpp``).

(Its form on the Triton kernels runs as its planned launches instead: ``.block_launches``.)

On a CPU, :meth:`InvertedResidual.switch_to_deploy` with ``fused_ops`` gives a block (paper
Sec. 4's inverted residual; inside channel multiplexing, Sec. 3.2, with its interleave) a form
of a handful of kernels: the expand GEMM and its activation, the spatial conv -- on the
group-conv kernel (activation and the squeeze-excite's pooling in its epilogue), on oneDNN, or
spatial multiplexing's shuffles, per-scale convs and folded BN (Sec. 3.1) -- the SE gate, and the
project GEMM that applies the gate and adds the residual and interleaves in its epilogue. Run
one module at a time they cost ~20 Python calls per block (~60 with spatial multiplexing) -- at
batch 1 as much as the kernels of a small layer, and gaps in which the thread pool's workers
fall asleep.
:class:`BlockCall` hands the block's tensors to the extension once; each forward is then one
call that runs the same kernels with the same arguments in the same order (the output is the
modules' to the bit).

A stage of such blocks (an ``nn.Sequential`` of them, channel multiplexing included) then runs
as one call too, :class:`OneCallStage`: the blocks' calls back to back without a return to Python
between them.

The baseline gets the same treatment: the deploy walker gives mmdet's MobileNetV2 blocks
(expand, depth-wise, project, residual; no SE) a deploy form, :class:`DeployedInvertedResidual`,
that runs as one call of the same runner, and its stages the same stage call -- so a
benchmark's ``deploy`` compares like with like.

A call runs only where nothing needs the modules one by one: inference (gradients off, the block
in eval mode) in plain eager mode (no compile, trace, or dispatch / function mode, no CPU
autocast), fp32 CPU input with its channels innermost, no hook on the block's layers (a FLOP
counter or a feature hook still sees every layer). Everywhere else the block's modules run as
before.
"""
from collections import OrderedDict
from typing import Dict, NamedTuple, Optional, Tuple

import torch
from torch import nn

from ..ops._cpu_kernels import cpu_kernels, cpu_kernels_take
from ..ops._dispatch import plain_eager
from ..ops.group_conv import _ACT_CODE, forward_plan
from ._eager import hook_dicts, hooked
from .block_launches import BlockLaunches
from .conv_bn import ConvAct, PointwiseConv2d, activation_name
from .fused_group_conv import FusedGroupConv, GroupConv2d, kernel_can_run
from .spatial_mux_conv import SpatialMuxConv
from .squeeze_excite import SqueezeExcite


def _act_code(act: nn.Module) -> Optional[int]:
    """The extension's code for ``act`` where it repeats the module exactly: torch's own
    activation modules (its in-place ops); None for others, e.g. mmcv's Swish, whose
    ``x * sigmoid(x)`` rounds otherwise (those blocks keep their modules)."""
    name = activation_name(act)
    if name is None or not type(act).__module__.startswith('torch.'):
        return None
    return _ACT_CODE[name]


def _kernel_conv(module: nn.Module) -> Optional[Tuple[PointwiseConv2d, int]]:
    """The biased 1x1 conv of a deployed ConvAct in its CPU kernel form
    (:meth:`ConvAct.use_cpu_kernel`) and the code of the activation its GEMM applies; None for
    any other layer (its modules compute what the call would not repeat)."""
    if not (isinstance(module, ConvAct) and isinstance(module.conv, PointwiseConv2d) and
            module.conv.kernel_form and module.conv.bias is not None):
        return None
    if module.epilogue_act is not None:
        return module.conv, _ACT_CODE[module.epilogue_act]
    return (module.conv, 0) if isinstance(module.act, nn.Identity) else None


def _plain_fp32_cpu(t: torch.Tensor) -> bool:
    return type(t) in (torch.Tensor, nn.Parameter) and t.dtype is torch.float32 and t.is_cpu


def _se_fits(se: SqueezeExcite) -> bool:
    """A deployed SE whose gate the extension's kernel computes as the module's op does."""
    return se.deploy and activation_name(se.act) is not None and \
        se.conv_reduce.bias is not None and se.conv_expand.bias is not None and \
        se.conv_reduce.weight.is_contiguous() and se.conv_expand.weight.is_contiguous()


# FusedBlockCPU::Spatial, the block's spatial conv form.
_KERNEL, _STOCK_CONV, _SPATIAL_MUX = 0, 1, 2


def _same_conv(conv: nn.Module, stride: int) -> bool:
    """A plain conv the group-conv kernel could compute (``"same"`` zero padding, square odd
    kernel, 1 or 2 channels per group: the layout the extension assumes) at ``stride``."""
    return type(conv) in (nn.Conv2d, GroupConv2d) and kernel_can_run(conv) and \
        conv.stride == (stride, stride)


def _scale_layout(conv: nn.Module, stride: int) -> Optional[Tuple[int, int, int, bool]]:
    """A spatial multiplexing scale's conv as the extension runs it: ``(kernel size, dilation,
    channels per group, on the group-conv kernel)``; None for a form it does not run. Its deploy
    form on the kernel (:class:`FusedGroupConv`, packed weights, no activation) or a plain conv,
    on the kernel where ``GroupConv2d.forward`` would take it in inference, else oneDNN's."""
    if isinstance(conv, FusedGroupConv):
        if len(conv.splits) != 1 or conv.stride != stride or conv.act != 'none' or \
                not conv.weight.is_contiguous():
            return None
        return conv.kernel_sizes[0], conv.dilations[0], conv.channels_per_group, True
    if not _same_conv(conv, stride):
        return None
    return (conv.kernel_size[0], conv.dilation[0], conv.in_channels // conv.groups,
            isinstance(conv, GroupConv2d) and conv.cpu_kernel_serves())


def _set_spatial(fused, block: nn.Module) -> Optional[int]:
    """Give ``fused`` the block's spatial conv (with its norm and activation); returns its
    channels, or None where the form is not one the extension runs."""
    spatial, norm = block.depthwise_conv, block.depthwise_norm
    act = _act_code(block.depthwise_act)
    if isinstance(spatial, FusedGroupConv):  # norm and activation are its own
        if not spatial.weight.is_contiguous():
            return None
        fused.spatial = _KERNEL
        fused.conv_weight, fused.conv_bias = spatial.weight, spatial.bias
        fused.splits, fused.kernel_sizes = spatial.splits, spatial.kernel_sizes
        fused.dilations, fused.stride = spatial.dilations, spatial.stride
        fused.channels_per_group, fused.conv_act = spatial.channels_per_group, \
            _ACT_CODE[spatial.act]
        return sum(spatial.splits)
    if act is None:
        return None
    fused.conv_act = act
    if type(spatial) is nn.Conv2d and isinstance(norm, nn.Identity) and \
            spatial.bias is not None and _same_conv(spatial, spatial.stride[0]):
        fused.spatial = _STOCK_CONV
        fused.conv_weight, fused.conv_bias = spatial.weight, spatial.bias
        fused.stride, fused.conv_groups = spatial.stride[0], spatial.groups
        fused.conv_padding, fused.conv_dilation = list(spatial.padding), list(spatial.dilation)
        return spatial.in_channels
    if isinstance(spatial, SpatialMuxConv) and spatial.norm_scale is not None and \
            isinstance(norm, nn.Identity) and isinstance(block.depthwise_act, nn.Identity):
        # per scale: (kernel size, dilation, channels per group, on the group-conv kernel)
        layouts = [_scale_layout(c, spatial.stride) for c in spatial.convs]
        if None in layouts or len({cpg for _, _, cpg, _ in layouts}) != 1:
            return None
        fused.spatial = _SPATIAL_MUX
        fused.splits, fused.scales = spatial.splits, list(spatial.scales)
        fused.kernel_sizes = [k for k, _, _, _ in layouts]
        fused.dilations = [d for _, d, _, _ in layouts]
        fused.stride, fused.channels_per_group = spatial.stride, layouts[0][2]
        fused.scale_weights = [c.weight for c in spatial.convs]  # (packed: FusedGroupConv's)
        fused.scale_biases = [c.bias for c in spatial.convs]
        fused.scale_on_kernel = [on for _, _, _, on in layouts]
        fused.norm_scale, fused.norm_shift = spatial.norm_scale, spatial.norm_shift
        fused.conv_act = _ACT_CODE[spatial.act]  # (applied with the norm)
        return spatial.in_channels
    return None


class BlockCall:
    """A deployed block (:class:`~.inverted_residual._ResidualBlock`) as one call of the CPU
    extension. Build it with :meth:`build`; call it where :meth:`takes` says so.

    It holds the modules' own tensors (views of them), so weights loaded into the modules in
    place are seen; the block drops it when its tensors are moved, converted or replaced (its
    ``_apply``, a ``load_state_dict`` post-hook) and leaves it out of pickles and copies.
    """

    def __init__(self, block: nn.Module, fused, conv_channels: int,
                 fused_conv: Optional[FusedGroupConv]):
        """(Use :meth:`build`.) ``fused``: the extension's ``FusedBlockCPU`` holding the block's
        tensors; ``conv_channels``: the spatial conv's; ``fused_conv``: the block's
        :class:`FusedGroupConv` (None: another spatial form, no pool tile to plan)."""
        self._fused = fused
        self._conv_channels = conv_channels
        self._fused_conv = fused_conv
        self._pool_tile = (None, (0, 0))  # (input size, the kernel's pool tile for it)
        self._hook_dicts = hook_dicts(block)

    @classmethod
    @torch.no_grad()
    def build(cls, block: nn.Module) -> Optional['BlockCall']:
        """The block's call, or None where its deploy form is not one the extension runs (an
        SE-less block, an activation it does not repeat exactly, a model not on fp32 CPU
        tensors, the extension switched off)."""
        kernels = cpu_kernels()
        se, project = block.se, _kernel_conv(block.project_conv)
        with_se = isinstance(se, SqueezeExcite)
        if kernels is None or project is None or project[1] != 0 or \
                not (with_se or isinstance(se, nn.Identity)) or \
                with_se and not _se_fits(se) or \
                not all(_plain_fp32_cpu(t) for t in [*block.parameters(), *block.buffers()]
                        if t.is_floating_point()):
            return None
        fused = kernels.FusedBlockCPU()
        expand = getattr(block, 'expand_conv', None)
        if expand is not None:
            expand = _kernel_conv(expand)
            if expand is None:
                return None
            conv, fused.expand_act = expand
            fused.expand_weight, fused.expand_bias = conv.matrix(), conv.bias
        channels = _set_spatial(fused, block)
        if channels is None:
            return None
        if with_se:
            fused.se_reduce_weight = se.conv_reduce.weight
            fused.se_reduce_bias = se.conv_reduce.bias
            fused.se_expand_weight = se.conv_expand.weight
            fused.se_expand_bias = se.conv_expand.bias
            fused.se_act = _ACT_CODE[activation_name(se.act)]
        fused.project_weight, fused.project_bias = project[0].matrix(), project[0].bias
        fused.residual = block.has_residual
        spatial = block.depthwise_conv
        pooled = with_se and isinstance(spatial, FusedGroupConv)  # (its pool tile to plan)
        return cls(block, fused, channels, spatial if pooled else None)

    def takes(self, x: torch.Tensor, kept: Optional[torch.Tensor]) -> bool:
        """Whether this forward's inputs and hooks let it run as the call (see the module's
        docstring; the mode -- inference, plain eager -- is what :meth:`OneCallBlock._one_call`
        checks first)."""
        if not _plain_input(x):
            return False
        if kept is not None and (type(kept) is not torch.Tensor or kept.stride(1) != 1 or
                                 not cpu_kernels_take(kept)):
            return False
        return not hooked(self._hook_dicts)

    def pool_tile(self, shape: torch.Size) -> Tuple[int, int]:
        """The group-conv kernel's pool tile for an input of ``shape``, as the module's own call
        plans it ((0, 0): no pooling in the kernel)."""
        cached, tile = self._pool_tile
        if self._fused_conv is not None and shape != cached:
            conv, (n, _, h, w) = self._fused_conv, shape
            tile = forward_plan((n, self._conv_channels, h, w), torch.float32,
                                torch.device('cpu'), conv.splits, conv.kernel_sizes,
                                conv.dilations, conv.stride, conv.channels_per_group, conv.act,
                                True, True).pool_tile
            self._pool_tile = (shape, tile)  # (one assignment: safe between threads)
        return tile

    def __call__(self, x: torch.Tensor, kept: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self._fused.forward(x, kept, *self.pool_tile(x.shape))


def _plain_input(x: torch.Tensor) -> bool:
    """An input a call runs on: a plain fp32 CPU map with elements (an empty batch runs the
    modules) and its channels innermost, gradients and CPU autocast off."""
    return not torch.is_grad_enabled() and type(x) is torch.Tensor and x.dim() == 4 and \
        x.numel() > 0 and x.stride(1) == 1 and cpu_kernels_take(x) and \
        not torch.is_autocast_enabled('cpu')


class OneCallBlock:
    """What a block whose deploy form can run as one call shares -- :class:`BlockCall` on the
    CPU kernels, :class:`~.block_launches.BlockLaunches` on the Triton kernels: the call
    built on first use (:meth:`_one_call`) and dropped whenever the block's tensors may have
    changed -- moved or converted (``_apply``), loaded (a ``load_state_dict`` post-hook:
    ``assign=True`` replaces them) -- and left out of pickles and copies. A mixin before
    ``nn.Module``; the block calls :meth:`_init_one_call` in ``__init__`` and sets
    ``cpu_block_call`` where its deploy form runs on the CPU kernels."""

    def _init_one_call(self) -> None:
        self.cpu_block_call = False  # deploy on a CPU: run as one call where it can
        self.block_calls = True  # False: the modules one by one (set_block_call)
        self._block_call = None  # not built yet; False: built, the form does not fit
        self.register_load_state_dict_post_hook(_drop_one_call)

    def _one_call(self, x: torch.Tensor, kept: Optional[torch.Tensor] = None):
        """The block's output as one call, or None where the modules must run."""
        # Inference in plain eager mode only, checked before anything is built (a compile or
        # trace must not build the extension's object into its graph).
        if self.training or not plain_eager():
            return None
        call = getattr(self, '_block_call', None)  # (absent: a model pickled before it)
        if call is None:
            if not getattr(self, 'block_calls', True):
                call = False
            elif getattr(self, 'cpu_block_call', False):
                call = BlockCall.build(self) or False
            else:  # the fused form on the Triton kernels (CUDA; the CPU under the interpreter)
                call = BlockLaunches.build(self) or False
            self._block_call = call
        if call and call.takes(x, kept):
            return call(x, kept)
        return None

    def one_call_step(self) -> Optional[Tuple['OneCallBlock', int]]:
        """This block as a step of its stage's call (:class:`OneCallStage`): itself, taking all
        its input's channels (0), where it is set to run as one call; else None."""
        return (self, 0) if getattr(self, 'cpu_block_call', False) else None

    def set_block_call(self, enabled: bool) -> None:
        """Run as one call where the deploy form allows (``enabled``) or module by module."""
        self.block_calls = enabled
        self.cpu_block_call = enabled and self._runs_on_cpu_kernels()
        self._block_call = None

    def _runs_on_cpu_kernels(self) -> bool:
        raise NotImplementedError

    def _apply(self, fn, *args, **kwargs):
        self._block_call = None  # tensors moved or converted (to, half, ...): built again
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()  # (pickle, deepcopy): the call is not copied, but rebuilt
        state['_block_call'] = None
        return state


def _drop_one_call(block: OneCallBlock, incompatible_keys) -> None:
    block._block_call = None


class DeployedInvertedResidual(OneCallBlock, nn.Module):
    """The deploy form the walker (:func:`mux_backbones.deploy.switch_to_deploy`) gives another
    library's inverted residual -- mmdet's MobileNetV2 block: expand 1x1 conv (optional),
    depth-wise conv, linear 1x1 project, residual add, no squeeze-excite -- so that a baseline
    gets the same treatment as MUXNet's blocks: on the CPU kernels (``fused_ops``, fp32 CPU) its
    1x1 convs on the op's GEMM, its depth-wise conv and activation on the group-conv kernel
    where that serves, one call per block in eager inference (the same runner, no SE), else
    its modules as before.

    Args:
        expand_conv (ConvAct, optional): The deployed expand conv and its activation.
        depthwise_conv (nn.Conv2d): The depth-wise conv, BN folded.
        depthwise_act (nn.Module): Its activation.
        project_conv (ConvAct): The deployed project conv (no activation).
        has_residual (bool): Add the input to the output.
    """

    def __init__(self, expand_conv: Optional[ConvAct], depthwise_conv: nn.Conv2d,
                 depthwise_act: nn.Module, project_conv: ConvAct, has_residual: bool):
        super().__init__()
        self._init_one_call()
        for conv_act in (expand_conv, project_conv):  # (their GEMMs: what the call runs)
            if conv_act is not None:
                conv_act.use_cpu_kernel()
        if expand_conv is not None:
            self.expand_conv = expand_conv
        # The depth-wise conv on the group-conv kernel with its activation in the epilogue
        # where that beats oneDNN's conv + an activation pass, as in MUXNet's blocks.
        fused = FusedGroupConv.from_convs([depthwise_conv], None, depthwise_act)
        if fused is not None and fused.cpu_kernel_serves():
            depthwise_conv, depthwise_act = fused, nn.Identity()
        self.depthwise_conv, self.depthwise_norm = depthwise_conv, nn.Identity()
        self.depthwise_act, self.se = depthwise_act, nn.Identity()
        self.project_conv = project_conv
        self.has_residual = has_residual
        self.set_block_call(True)

    @classmethod
    def from_mmdet(cls, block: nn.Module) -> Optional['DeployedInvertedResidual']:
        """The deploy form of mmdet's ``InvertedResidual`` after its ConvModules were deployed
        (None where it has a squeeze-excite or parts of another kind)."""
        parts = [getattr(block, 'expand_conv', None) if block.with_expand_conv else None,
                 block.depthwise_conv, block.linear_conv]
        if block.with_se or not all(isinstance(p, ConvAct) for p in parts[1:]) or \
                parts[0] is not None and not isinstance(parts[0], ConvAct):
            return None
        expand, depthwise, project = parts
        return cls(expand, depthwise.conv, depthwise.act, project,
                   block.with_res_shortcut).train(block.training)

    def _runs_on_cpu_kernels(self) -> bool:
        return True  # (the walker builds this form for the CPU kernels only)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._one_call(x)
        if out is not None:
            return out
        expand = getattr(self, 'expand_conv', None)
        out = self.depthwise_act(self.depthwise_conv(expand(x) if expand is not None else x))
        project = self.project_conv
        if self.has_residual and project.conv.kernel_call(out):  # in the GEMM, as the call does
            return project.conv(out, residual=x)
        out = project(out)
        return x + out if self.has_residual else out


class _Chain(NamedTuple):
    """What a stage's calls were built from, and the calls."""
    steps: tuple  # per module of the stage: (the module, its _state)
    hook_dicts: Tuple[dict, ...]  # every submodule's forward (pre-)hooks, as they were built
    # per input shape the extension's FusedChainCPU; None: the stage cannot run as one call
    fused: Dict[torch.Size, object]


_SHAPES_KEPT = 8  # calls kept per stage (one per input size: e.g. a test's multi-scale sizes)


class OneCallStage(nn.Sequential):
    """A stage of blocks (an ``nn.Sequential``: MUXNet's, mmdet's MobileNetV2's) whose blocks all
    run as one call each (:class:`BlockCall`, steps by their ``one_call_step``: a block, or
    channel multiplexing around one) -- run as one call itself: the blocks' calls back to back
    in the extension (``FusedChainCPU``), on the same tensors, with the same arguments (the
    output is the blocks' to the bit), without returning to Python between them. At batch 1
    that return costs ~10-30 us per block (the stage, the block's and channel multiplexing's
    module calls, the checks, the slices): measured, MUXNet-m's CPU forward 5-6% faster as one
    call per stage, MobileNetV2's 1-3%.

    The deploy walker (:func:`mux_backbones.deploy.switch_to_deploy` with ``fused_ops`` on a
    CPU) gives a stage this class (same children, names and state-dict keys). Its first forward
    for an input shape runs the blocks one by one and builds the call from what they did (each
    block's pool tile is planned for the size it receives; the calls of the last few shapes are
    kept); later forwards of that shape are the call, where the blocks' own calls would run:
    inference in plain eager mode, a plain fp32 CPU input with its channels innermost, no hook
    on any of the stage's modules. The calls are built again when a block's call is (its
    tensors moved, converted or loaded) or a block is replaced; they are left out of pickles
    and copies. Elsewhere the blocks run as before.
    """

    def __init__(self, *args):
        super().__init__(*args)
        self._chain: Optional[_Chain] = None

    @staticmethod
    def fits(stage: nn.Module) -> bool:
        """Whether ``stage`` is a plain ``nn.Sequential`` (a subclass may have a forward of its
        own) whose every module is a step of a call."""
        return type(stage) is nn.Sequential and len(stage) > 0 and \
            all(_state(m)[0] is not None for m in stage)

    @classmethod
    def from_sequential(cls, stage: nn.Sequential) -> 'OneCallStage':
        """The stage with the same children under the same names (training mode kept)."""
        return cls(OrderedDict(stage.named_children())).train(stage.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and plain_eager() and _plain_input(x):
            chain = self._chain
            if chain is None or not self._current(chain) or x.shape not in chain.fused:
                return self._build(x)
            fused = chain.fused[x.shape]
            if fused is not None and not hooked(chain.hook_dicts):
                return self._run(chain, fused, x)
        return super().forward(x)

    def _run(self, chain: _Chain, fused, x: torch.Tensor) -> torch.Tensor:
        return fused.forward(x)

    def _current(self, chain: _Chain) -> bool:
        """Whether ``chain`` was built from this stage's blocks as they are now."""
        modules = self._modules.values()
        return len(modules) == len(chain.steps) and all(
            module is built and _state(module) == state
            for module, (built, state) in zip(modules, chain.steps))

    def _build(self, x: torch.Tensor) -> torch.Tensor:
        """The stage run block by block on ``x`` (its output); the call for ``x``'s shape built
        from what its blocks did."""
        shapes, out = [], x
        for module in self:
            shapes.append(out.shape)
            out = module(out)
        states = [_state(module) for module in self]
        fused = None
        kernels = cpu_kernels()
        if kernels is not None and all(step is not None and call for step, call in states):
            fused = kernels.FusedChainCPU()
            for ((block, processed), call), shape in zip(states, shapes):
                if processed:  # (channel multiplexing: its block takes the first channels)
                    shape = torch.Size((shape[0], processed, *shape[2:]))
                fused.append(call._fused, processed, *call.pool_tile(shape))
        chain = self._chain
        if chain is None or not self._current(chain) or len(chain.fused) >= _SHAPES_KEPT:
            chain = self._chain = _Chain(tuple(zip(self, states)), hook_dicts(self), {})
        chain.fused[x.shape] = fused
        return out

    def _apply(self, fn, *args, **kwargs):
        self._chain = None  # (tensors moved or converted: built again, as the blocks' calls)
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()  # (pickle, deepcopy): built again on first use
        state['_chain'] = None
        return state


def _state(module: nn.Module):
    """A stage module's step (its ``one_call_step``: the block and the channels it takes, None:
    not a step now) and the call that block has built (a BlockCall; False: its form does not
    fit; None: not built yet)."""
    step_of = getattr(module, 'one_call_step', None)
    step = step_of() if step_of is not None else None
    return step, (getattr(step[0], '_block_call', None) if step is not None else None)


def set_block_calls(model: nn.Module, enabled: bool) -> nn.Module:
    """Let a deployed model's blocks run as one call each where they can (``enabled``, what
    ``switch_to_deploy(..., fused_ops=True)`` sets up on a CPU) or module by module (e.g. to
    compare the two or time each layer). Returns ``model``."""
    for block in model.modules():
        if isinstance(block, OneCallBlock):
            block.set_block_call(enabled)
    return model
