"""GPU check of the fused kernels (compiled Triton, not the interpreter): each kernel against the
stock PyTorch reference in fp32/fp16/bf16, forward and gradients, on MUXNet-m's own layer shapes,
the squeeze-excite gate on its SE shapes, the squeeze-excite's training form (``gated_map``) on
its SE maps, the epilogue GEMM on its channel-multiplexed blocks'
shapes (project: SE-gated input, residual, interleave; expand: activation); then whole MUXNet-m
with ``fused_ops`` against the stock path in training and in deploy mode.

    python tools/gpu/check_kernels.py [--model-only [--deploy-only]]  # one line per check;
                                                                       # exit 1 on a mismatch

``--quick`` rehearses the same checks on the CPU under Triton's interpreter
(``TRITON_INTERPRET=1``) with small shapes, fp16 ops (the unit tests cover fp32; the interpreter
has no bf16) and MUXNet-tiny in fp32, so a GPU lease never finds this tool broken.
"""
import argparse
import copy
import os
import sys
from typing import NamedTuple, Optional, Tuple

import torch

from mux_backbones import MUXNet
from mux_backbones.layers import KERNEL_GRADIENTS, GroupConv2d, MixedConv2d, block_launches
from mux_backbones.layers.block_call import set_block_calls
from mux_backbones.ops import (_launch, gated_map, group_conv, pack_weights, pointwise_conv,
                               reference_group_conv, reference_pointwise_conv, reference_se_gate,
                               se_gate)

# (splits, kernel sizes, dilations, stride, channels per group, H) taken from MUXNet-m's layers
_CASES = [
    ([24], [3], [1], 1, 1, 112),
    ([48, 32, 32], [3, 5, 7], [1, 1, 1], 2, 1, 56),
    ([120, 120, 120, 120], [3, 5, 7, 9], [1, 1, 1, 1], 2, 1, 28),
    ([92, 89, 89, 89, 89], [3, 5, 7, 9, 11], [1, 1, 1, 1, 1], 2, 1, 14),  # unaligned groups
    ([120], [3], [1], 1, 2, 28),  # 8-aligned channels (alignment hints)
    ([240], [5], [1], 1, 2, 14),
    ([480], [5], [4], 1, 2, 64),
]
_TOL = {torch.float32: 2e-3, torch.float16: 2e-2, torch.bfloat16: 6e-2}


class Setup(NamedTuple):
    """Where and how big the checks run."""
    device: str = 'cuda'
    batch: int = 8  # of the conv checks
    samples: int = 32  # of the SE-gate and GEMM checks
    shrink: int = 1  # map sides divided by this (at least 5 pixels)
    arch: str = 'm'
    image: int = 224
    model_batch: int = 4
    dtypes: Tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)
    # the training check's precisions (None: fp32, first: the others' reference) -- on the CPU,
    # fp16 autocast casts other ops than on CUDA, so the stock path it is compared with is
    # another computation there
    autocast: Tuple[Optional[torch.dtype], ...] = (None, torch.float16)

    def side(self, size: int) -> int:
        return max(5, size // self.shrink)


FULL = Setup()
QUICK = Setup('cpu', 1, 2, 16, 'tiny', 32, 2, (torch.float16, ), (None, ))


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def _report(failures, what: str, dtype, errs) -> None:
    """One line per check; a relative error above the dtype's tolerance is a failure."""
    ok = max(errs) < _TOL[dtype]
    if not ok:
        failures.append(f'{what} {dtype}')
    print(f'{"ok  " if ok else "FAIL"} {what} {str(dtype)[6:]:>8}: max rel err {max(errs):.1e}',
          flush=True)


def check_ops(failures, setup: Setup = FULL):
    dev = setup.device
    for splits, ks, dils, stride, cpg, size in _CASES:
        for dtype in setup.dtypes:
            torch.manual_seed(0)
            c, size = sum(splits), setup.side(size)
            x = torch.randn(setup.batch, c, size, size, device=dev, dtype=dtype).contiguous(
                memory_format=torch.channels_last).requires_grad_()
            ws = [torch.randn(n, cpg, k, k, device=dev, requires_grad=True) * 0.2
                  for n, k in zip(splits, ks)]
            bias = torch.randn(c, device=dev, requires_grad=True)
            w = pack_weights(ws)
            y, pool = group_conv(x, w, bias, splits, ks, dils, stride, cpg, 'silu', True)
            xr = x.detach().float().requires_grad_()
            ref = reference_group_conv(xr, w, bias, splits, ks, dils, stride, cpg, 'silu')
            g = torch.randn_like(ref)
            grads = torch.autograd.grad((y.float() * g).sum(), [x] + ws + [bias])
            rgrads = torch.autograd.grad((ref * g).sum(), [xr] + ws + [bias])
            errs = [_rel(y, ref), _rel(pool.sum(1), ref.sum((2, 3)))] + \
                [_rel(a, b) for a, b in zip(grads, rgrads)]
            _report(failures, f'group_conv k{ks} cpg{cpg} stride{stride} dil{dils[0]}', dtype,
                    errs)


def check_se_gate(failures, setup: Setup = FULL):
    # (channels, squeeze) of MUXNet-m's squeeze-excites
    dev, n = setup.device, setup.samples
    for c, s in ((96, 4), (240, 10), (480, 20), (960, 40)):
        for dtype in setup.dtypes:
            torch.manual_seed(0)
            params = [torch.randn(*shape, device=dev, dtype=dtype) * 0.3
                      for shape in ((s, c), (s, ), (c, s), (c, ))]
            parts = torch.randn(n, 7, c, device=dev) * 30
            errs = [_rel(se_gate(parts, 196, *params, act='silu'),
                         reference_se_gate(parts, 1 / 196, *params, 'silu'))]
            _report(failures, f'se_gate C{c} S{s}', dtype, errs)


def check_gated_map(failures, setup: Setup = FULL):
    """The squeeze-excite's training form on MUXNet-m's SE maps at batch ``samples``, channels-last
    as the model trains, with the block's SiLU before it: the map's output and the input's and
    weights' gradients against autograd through the stock expression in fp32 (the parameters
    fp32, as under AMP)."""
    dev, n = setup.device, setup.samples
    for c, s, side in ((96, 4, 56), (240, 10, 14), (480, 20, 7), (960, 40, 7)):
        side = setup.side(side)
        for dtype in setup.dtypes:
            torch.manual_seed(0)
            params = [(torch.randn(*shape, device=dev) * 0.3).requires_grad_()
                      for shape in ((s, c), (s, ), (c, s), (c, ))]
            x = torch.randn(n, c, side, side, device=dev, dtype=dtype).contiguous(
                memory_format=torch.channels_last).requires_grad_()
            out = gated_map(x, *params, 'silu', 'silu')
            g = torch.randn_like(out)
            grads = torch.autograd.grad(out, [x, *params], g)
            xr = x.detach().float().requires_grad_()
            w1, b1, w2, b2 = params
            yr = torch.nn.functional.silu(xr)
            hidden = torch.nn.functional.silu(yr.mean((2, 3)) @ w1.t() + b1)
            ref = yr * torch.sigmoid(hidden @ w2.t() + b2)[:, :, None, None]
            rgrads = torch.autograd.grad(ref, [xr, *params], g.float())
            errs = [_rel(out, ref)] + [_rel(a, b) for a, b in zip(grads, rgrads)]
            _report(failures, f'gated_map {n}x{c}x{side}x{side} S{s}', dtype, errs)


def check_pointwise_conv(failures, setup: Setup = FULL):
    # (pixels, hidden K, processed C) of MUXNet-m's channel-multiplexed blocks at batch 32: rows
    # aligned to 4, 8 (not 16: the ALIGN hint) and 16 elements (each ~3 compiles per dtype)
    dev, n = setup.device, setup.samples
    for side, k, c in ((56, 48, 12), (14, 240, 40), (7, 480, 80)):
        pixels = setup.side(side) ** 2
        for dtype in setup.dtypes:
            torch.manual_seed(0)
            rows = torch.randn(n * pixels, k, device=dev, dtype=dtype)
            block = torch.randn(n * pixels, 2 * c, device=dev, dtype=dtype)
            bias = torch.randn(c, device=dev, dtype=dtype)
            shared = torch.randn(c, k, device=dev, dtype=dtype).t() * k ** -0.5
            gate = torch.rand(n, k, device=dev, dtype=dtype)  # an SE gate on the input
            errs = [_rel(pointwise_conv(rows, shared, bias, block[:, :c], block[:, c:], scale=g),
                         reference_pointwise_conv(rows.float(), shared.float(), bias.float(),
                                                  block[:, :c].float(), block[:, c:].float(),
                                                  scale=g if g is None else g.float()))
                    for g in (gate, None)]
            _report(failures, f'pointwise_conv {pixels}px K{k} -> C{c} (+se)+res+mux', dtype, errs)
            expand = torch.randn(k, 6 * k, device=dev, dtype=dtype) * k ** -0.5  # + act
            errs = [_rel(pointwise_conv(rows, expand, act='silu'),
                         reference_pointwise_conv(rows.float(), expand.float(), act='silu'))]
            _report(failures, f'pointwise_conv {pixels}px K{k} -> C{6 * k} +silu', dtype, errs)


def _train_errors(run, reference) -> Tuple[float, float]:
    """(outputs, weight gradients) max relative errors of a training pass ``(outputs, grads)``
    against another; a gradient's against the largest reference gradient (some are zero up to
    rounding, e.g. a BN bias before a train-mode BN, where any relative error is noise)."""
    (out, grads), (ref_out, ref_grads) = run, reference
    scale = max(g.float().norm() for g in ref_grads)
    return (max(_rel(a, b) for a, b in zip(out, ref_out)),
            max(((a.float() - b.float()).norm() / scale).item()
                for a, b in zip(grads, ref_grads)))


def check_model(failures, setup: Setup = FULL, training: bool = True):
    """Whole MUXNet with ``fused_ops`` against the stock path: training (outputs and weight
    gradients, fp32 and autocast; left out without ``training``), then the deploy forms."""
    torch.manual_seed(0)
    # fp32 means fp32 here: cuDNN's convs would run in TF32 on an H100/H200 (PyTorch's default),
    # the kernels do not, and the fp32 run is the half-precision runs' reference.
    torch.backends.cudnn.allow_tf32 = False
    dev, arch = setup.device, setup.arch
    stock = MUXNet(arch, out_indices=(2, 4, 7)).to(dev)
    fused = MUXNet(arch, out_indices=(2, 4, 7), fused_ops=True).to(dev)
    fused.load_state_dict(stock.state_dict())
    # every spatial conv with the stock forward and the kernels' gradients (a form
    # choose_training_kernels may pick per layer)
    grads_only = copy.deepcopy(fused)
    for m in grads_only.modules():
        if isinstance(m, (GroupConv2d, MixedConv2d)):
            m.fused_ops = KERNEL_GRADIENTS
    x = torch.randn(setup.model_batch, 3, setup.image, setup.image, device=dev).contiguous(
        memory_format=torch.channels_last)

    def autocast(dtype):  # (None: fp32, no autocast)
        return torch.autocast(torch.device(dev).type, dtype=dtype or torch.float32,
                              enabled=dtype is not None)

    for dtype in setup.autocast if training else ():
        name = 'fp32' if dtype is None else f'{str(dtype)[6:]} autocast'
        outs = []
        for model in (stock, fused, grads_only):
            model.zero_grad()
            with autocast(dtype):
                out = model(x)
            sum(o.float().square().mean() for o in out).backward()
            outs.append((out, [p.grad.clone() for p in model.parameters()]))
        if dtype is None:
            reference = outs[0]  # the stock path in fp32: what each half-precision run is off by
        for (out, grads), form in zip(outs[1:], ('fused', 'kernel gradients')):
            err_out, err_grad = _train_errors((out, grads), outs[0])
            ok = err_out < 2e-2 and err_grad < 5e-2
            against_fp32 = ''
            if dtype is not None:
                # Half precision: a form may differ from the stock run by more than the fixed
                # bounds as long as it is no further from fp32 than the stock run is (each
                # rounds at other places: a kernel keeps fp32 between its fused steps).
                own, stock_own = _train_errors((out, grads), reference), \
                    _train_errors(outs[0], reference)
                ok = ok or all(o <= 1.25 * s for o, s in zip(own, stock_own))
                against_fp32 = (f'; vs fp32: outputs {own[0]:.1e} (stock {stock_own[0]:.1e}), '
                                f'weight grads {own[1]:.1e} (stock {stock_own[1]:.1e})')
            if not ok:
                failures.append(f'MUXNet-{arch} train {name} ({form})')
            print(f'{"ok  " if ok else "FAIL"} MUXNet-{arch} training {name}: outputs '
                  f'{err_out:.1e}, weight grads {err_grad:.1e} (max rel err, {form} vs stock'
                  f'{against_fp32})', flush=True)
    if not training:  # the BN statistics the training passes leave: a well-conditioned eval
        with torch.no_grad():  # model (fp16 deploy of the initial statistics: 1.5e-1 off)
            for dtype in setup.autocast:
                with autocast(dtype):
                    stock(x)
    # The training passes moved each model's BN statistics by its own batch statistics: compare
    # the deploy forms from the same state, so only the kernels differ.
    fused.load_state_dict(stock.state_dict())
    stock.eval()
    fused.eval().switch_to_deploy(channels_last=True)
    with torch.no_grad():
        err = max(_rel(a, b) for a, b in zip(fused(x), stock(x)))
        fused.half()
        err16 = max(_rel(a, b) for a, b in zip(fused(x.half()), stock(x)))
    ok = err < 1e-3 and err16 < 2e-2
    if not ok:
        failures.append(f'MUXNet-{arch} deploy')
    print(f'{"ok  " if ok else "FAIL"} MUXNet-{arch} deploy (fused kernels) vs eval: fp32 '
          f'{err:.1e}, fp16 weights {err16:.1e}', flush=True)
    # Eager deploy runs each fused block as its planned launches, each launch after its first
    # straight to the compiled kernel: with the gate op's own launches, the same kernels and
    # arguments as the modules run through Triton's kernel[grid], so the same bits; with the
    # project GEMMs computing the SE gate (block_launches.GATE_IN_GEMM, 'auto' by default),
    # the gate op's arithmetic in another kernel, whose reductions may sum in another order.
    policy = block_launches.GATE_IN_GEMM
    with torch.no_grad():
        xh = x.half()
        set_block_calls(fused, False)
        _launch.DIRECT = False
        try:
            modules = fused(xh)
        finally:
            set_block_calls(fused, True)
            _launch.DIRECT = True
        block_launches.GATE_IN_GEMM = '0'
        try:
            launched = [fused(xh) for _ in range(2)]  # (the second: every launch direct)
        finally:
            block_launches.GATE_IN_GEMM = policy
        gated = fused(xh) if policy != '0' else modules
    same = all(torch.equal(a, b) for run in launched for a, b in zip(run, modules))
    err_gated = max(_rel(a, b) for a, b in zip(gated, modules))
    if not same:
        failures.append(f'MUXNet-{arch} deploy block launches')
    if err_gated > 1e-2:
        failures.append(f'MUXNet-{arch} deploy block launches, SE gate in the GEMM')
    print(f'{"ok  " if same else "FAIL"} MUXNet-{arch} deploy, fp16: block launches and direct '
          f'launches {"equal" if same else "DIFFER FROM"} the modules through Triton\'s launch',
          flush=True)
    print(f'{"ok  " if err_gated <= 1e-2 else "FAIL"} MUXNet-{arch} deploy, fp16: block launches '
          f'with the SE gate in the project GEMMs (GATE_IN_GEMM={policy}) vs the modules: '
          f'{err_gated:.1e} (max rel err)', flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model-only', action='store_true', help='only the whole-model checks')
    parser.add_argument('--deploy-only', action='store_true',
                        help='of the whole-model checks only the deploy ones (the training ones '
                        'compile every gradient kernel: ~100 s of a lease)')
    parser.add_argument('--quick', action='store_true',
                        help='small shapes and MUXNet-tiny on the CPU under TRITON_INTERPRET=1 '
                        '(a rehearsal of the tool, not a check of compiled kernels)')
    args = parser.parse_args()
    setup = QUICK if args.quick else FULL
    if args.quick and os.environ.get('TRITON_INTERPRET') != '1':
        sys.exit('error: --quick runs the kernels in the interpreter: set TRITON_INTERPRET=1')
    if not args.quick and not torch.cuda.is_available():
        sys.exit('error: no CUDA device')
    failures = []
    if not args.model_only:
        check_ops(failures, setup)
        check_se_gate(failures, setup)
        check_gated_map(failures, setup)
        check_pointwise_conv(failures, setup)
    check_model(failures, setup, training=not args.deploy_only)
    print('kernel check:', 'all passed' if not failures else f'FAILED: {failures}')
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
