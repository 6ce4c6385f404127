"""Latency / throughput / peak memory of MUXNet vs MobileNetV2 (and whole configs), one process.

    python tools/analysis_tools/benchmark.py                                 # CPU, batch 1, fp32
    python tools/analysis_tools/benchmark.py --models mobilenetv2 muxnet-m muxnet-l --batch 1 32 \
        --modes eager deploy --device cuda --amp fp16 bf16
    python tools/analysis_tools/benchmark.py --onnx                          # + onnxruntime
    python tools/analysis_tools/benchmark.py --train-step                    # SSDLite train step
    python tools/analysis_tools/benchmark.py --config CONFIG --shape 320     # a whole model

Every model runs in the same process under the same settings: warm-up, then the median and the
inter-quartile spread of ``--runs`` timed forward passes, all models and modes of one precision
and batch size timed in interleaved rounds (a noisy phase of a shared machine hits all alike).
``eager`` is the model as built (eval mode); ``deploy`` is ``mux_backbones.deploy.switch_to_deploy``
(see that module for what it rewrites) applied to *every* model, MobileNetV2 included, plus
channels-last. Ratios are to ``mobilenetv2`` in the same mode, batch, device and precision. This
is a benchmark: tests only check that it runs.
"""
import argparse
import contextlib
import copy
import math
import os
import tempfile
from typing import List, NamedTuple

import torch

import mux_backbones  # noqa: F401  (registers MUXNet, applies stack fixes)
from mux_backbones import MUXNet
from mux_backbones.cli import (PRECISIONS, ToolError, build_model_from_config, exits_cleanly,
                               int_at_least, positive_int, usable_device)
from mux_backbones.deploy import switch_to_deploy
from mux_backbones.layers.block_call import set_block_calls
from mux_backbones.ops import launch_config
from mux_backbones.tuning import (TUNED_KERNELS, choose_training_kernels, precompile_kernels,
                                  tune_kernels)
from mux_backbones.utils.layer_profile import format_layer_costs, profile_forward
from mux_backbones.utils.timing import (Timing, capture_cuda_graph, cpu_description, time_forward,
                                        time_interleaved)


class Row(NamedTuple):
    """One line of the latency table."""
    model: str
    mode: str
    precision: str
    batch: int
    timing: Timing
    ratio: float  # median over MobileNetV2's in the same mode, precision and batch


def build_backbone(name: str) -> torch.nn.Module:
    """``mobilenetv2`` (mmdet's, 1.0, to its 1280-ch head conv) or ``muxnet-<arch>``."""
    if name == 'mobilenetv2':
        from mmdet.models.backbones import MobileNetV2
        model = MobileNetV2(out_indices=(7, ))
    elif name.startswith('muxnet-'):
        try:
            model = MUXNet(name[7:], out_indices=(7, ))
        except ValueError as err:  # MUXNet names the archs it knows
            raise ToolError(f'unknown model "{name}": {err}') from None
    else:
        raise ToolError(f'unknown model "{name}"; use mobilenetv2 or muxnet-<arch>')
    model.eval()  # mmdet's MobileNetV2.train() returns None, so not chained
    return model


def _autocast(device, amp):
    if amp == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[amp])


class CudaGraphed:
    """A model's forward captured once in a CUDA graph and replayed on a static input buffer.

    It holds the model: a graph replays the addresses it captured and keeps no tensor alive, so
    a model freed after its capture leaves the replays reading released memory once a later
    capture's ``empty_cache`` hands its blocks back (``torch.cuda.graph`` empties the cache on
    entry). That was session 40's "illegal memory access" at batch 128, raised in the first
    candidate's replays; at batch 32 the freed blocks were reused by later cases and the
    replays read other models' tensors without faulting.
    """

    def __init__(self, model, x):
        self.model = model
        self.static_x = x.clone()
        with torch.no_grad():
            self.graph, self.static_out = capture_cuda_graph(lambda: model(self.static_x))

    def __call__(self, x):
        if x is not self.static_x:
            self.static_x.copy_(x)
        self.graph.replay()
        return self.static_out


def _prepare(name, mode, batch, args, device, amp='fp32'):
    """The model and input of one case.

    ``eager`` runs as built under autocast (``amp``). The inference modes cast weights and input to
    the precision instead (BN is folded, so half weights are what a deployment runs):
    ``deploy`` is :func:`switch_to_deploy` + channels-last, with MUXNet's kernels (the fused
    Triton forms on CUDA, the C++ kernels' forms on CPU);
    ``deploy-stock`` the same on the stock PyTorch/cuDNN/oneDNN path; ``deploy-modules`` is
    ``deploy`` with each block's modules called one by one (on a CPU ``deploy`` runs a block as
    one call, :mod:`mux_backbones.layers.block_call`); ``deploy-auto`` per block the faster of
    stock and fused (``fused_ops='auto'``); ``graph[-stock|-auto]`` are those in a CUDA graph;
    ``compile`` is ``deploy`` under ``torch.compile(mode='reduce-overhead')`` (Inductor + CUDA
    graphs). MobileNetV2 gets every mode alike (it has no fused kernels).
    """
    model = build_backbone(name).to(device)
    x = torch.randn(batch, 3, args.shape, args.shape, device=device)
    if mode == 'eager':
        return model, x
    dtype = PRECISIONS[amp]
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    if mode.endswith('-auto'):
        switch_to_deploy(model, channels_last=True, fused_ops='auto', example_input=x)
    else:
        switch_to_deploy(model, channels_last=True, fused_ops=not mode.endswith('-stock'))
    if mode == 'deploy-modules':
        set_block_calls(model, False)
    model.to(dtype)
    if device.type == 'cuda' and not mode.endswith('-stock') and (name, amp, batch) not in _READY:
        _READY.add((name, amp, batch))  # the table and Triton's cache are process-wide
        if args.tune_kernels:
            tune_kernels(model, x, kernels=args.tune_kernels)
            save_tuned(args)  # at once: a run that faults later keeps it for the next one
        else:  # its kernels compiled at once, not one by one in the first forward
            precompile_kernels(model, x)
    if mode.startswith('graph'):
        if device.type != 'cuda':
            raise ToolError('--modes graph needs --device cuda')
        model = CudaGraphed(model, x)
    elif mode == 'compile':
        model = torch.compile(model, mode='reduce-overhead' if device.type == 'cuda' else None)
    return model, x


_READY = set()  # the cases whose kernels were tuned or compiled


def bench_models(args, device) -> List[Row]:
    """Every model in every mode, timed interleaved per (precision, batch)."""
    rows = []
    for amp in args.amp:
        if amp == 'fp16' and device.type != 'cuda':
            print(f'skipping fp16 on {device.type} (use bf16)')
            continue
        for batch in args.batch:
            cases = [(name, mode) for mode in args.modes for name in args.models
                     if mode != 'compile' or args.compile_cases is None or
                     (amp, batch) in args.compile_cases]
            fns, inputs = [], []
            for name, mode in cases:
                model, x = _prepare(name, mode, batch, args, device, amp)

                def fn(inp, model=model, amp=amp, mode=mode):
                    with _autocast(device, amp if mode == 'eager' else 'fp32'):
                        return model(inp)

                fns.append(fn)
                inputs.append(x)
            runs = args.runs if batch == 1 else max(5, args.runs // 5)
            results = time_interleaved(fns, inputs, device, args.warmup, runs,
                                       [f'{name} [{mode}, {amp}, batch {batch}]'
                                        for name, mode in cases])
            base = {mode: t.median_ms for (name, mode), t in zip(cases, results)
                    if name == 'mobilenetv2'}
            for (name, mode), t in zip(cases, results):
                rows.append(Row(name, mode, amp, batch, t,
                                t.median_ms / base[mode] if mode in base else float('nan')))
            print_rows([r for r in rows if r.precision == amp and r.batch == batch], flush=True)
    return rows


def vs_mobilenetv2(ratio: float) -> str:
    """The "vs MNv2" column: the ratio, or a dash where MobileNetV2 was not timed alongside."""
    return f'{"-":>10}' if math.isnan(ratio) else f'{ratio:9.2f}x'


def print_rows(rows, flush=False):
    for r in rows:
        t = r.timing
        print(f'{r.model:<12}{r.mode:>13}{r.precision:>6}{r.batch:>6}{t.median_ms:11.3f}'
              f'{t.iqr_ms:8.3f}{t.host_ms:9.3f}{r.batch / t.median_ms * 1e3:10.1f}'
              f'{t.peak_mib:10.0f}{vs_mobilenetv2(r.ratio)}', flush=flush)


def profile_models(args, device):
    """Per-kernel GPU time of each model (deploy-type modes), then per kind of layer: calls,
    device time, bytes and achieved bandwidth against the H200's ~4.8 TB/s
    (:mod:`mux_backbones.utils.layer_profile`), and the time of the fused Triton kernels.

    The kernel table lists the kernels by total device time over 10 forwards.
    """
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    amp, batch = args.profile
    for mode in [m for m in args.modes if not m.startswith('graph') and m != 'compile']:
        for name in args.models:
            model, x = _prepare(name, mode, batch, args, device, amp)
            with torch.no_grad(), _autocast(device, amp if mode == 'eager' else 'fp32'):
                for _ in range(args.warmup):
                    model(x)
                with profile(activities=activities) as prof:
                    for _ in range(10):
                        model(x)
                tables = profile_forward(model, x, runs=10, warmup=1)
            key = 'self_device_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
            print(f'\n== {name} [{mode}, {amp}, batch {batch}] top operators (10 runs) ==')
            print(prof.key_averages().table(sort_by=key, row_limit=15))
            unit = 'GPU' if device.type == 'cuda' else 'CPU'
            print(f'-- {name} [{mode}, {amp}, batch {batch}]: {unit} time per forward by kind of '
                  f'layer (bytes: what a layer reads and writes at least once) --')
            print(format_layer_costs(tables['kind']))
            print(f'-- {name} [{mode}, {amp}, batch {batch}]: the slowest layers --')
            print(format_layer_costs(tables['module'], top=args.profile_top))
            if device.type == 'cuda':
                summary = fused_kernel_summary(prof.key_averages(), tables['kind'], runs=10)
                if summary:
                    print(summary)


# The fused Triton kernels by family: (kernel names, the kind of layer whose bytes they move).
# The layer tables charge them to their layers by launch order (session 40's lease, before that:
# 91% of MUXNet-m's fused forward "outside layers"); this sums them by kernel name, whichever
# layer launched them.
_FUSED_FAMILIES = {
    'spatial convs': (('_forward_kernel', '_forward_one_kernel'), 'FusedGroupConv'),
    'epilogue GEMMs': (('_pointwise_kernel', ), 'PointwiseConv2d'),
    'SE gates': (('_se_gate_kernel', ), None),
    'SE maps': (('_map_sums_kernel', '_scale_map_kernel'), None),
}


def fused_kernel_summary(events, layers, runs: int) -> str:
    """Per family of fused Triton kernels, their device time per forward (from the profiler's
    ``events``, a key-averaged table over ``runs`` forwards) and, where the family is a kind of
    layer's whole work, the bandwidth that time achieves on that kind's bytes (``layers``, rows
    of :func:`~mux_backbones.utils.layer_profile.profile_layers`); '' without fused kernels."""
    moved = {row.kind: row.bytes for row in layers if row.bytes}
    parts = []
    for family, (names, kind) in _FUSED_FAMILIES.items():
        us = sum(e.self_device_time_total for e in events if e.key in names) / runs
        if not us:
            continue
        part = f'{family} {us:.0f} us'
        if moved.get(kind):
            part += f' ({moved[kind] / 2**20:.1f} MiB of {kind}, {moved[kind] / us / 1e6:.2f} TB/s)'
        parts.append(part)
    return 'fused Triton kernels per forward: ' + '; '.join(parts) if parts else ''


def bench_onnx(args):
    """onnxruntime latency of every model's deploy-mode export, timed interleaved."""
    import onnxruntime as ort
    names, fns = [], []
    x = torch.randn(1, 3, args.shape, args.shape)
    feed = {'input': x.numpy()}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            path = os.path.join(tmp, f'{name}.onnx')
            torch.onnx.export(switch_to_deploy(build_backbone(name)), (x, ), path,
                              input_names=['input'], opset_version=17, dynamo=False)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            # Idle sessions must not spin-wait on the cores the timed one is using.
            opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
            sess = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
            names.append(name)
            fns.append(lambda _, sess=sess: sess.run(None, feed))
        results = time_interleaved(fns, [x] * len(fns), torch.device('cpu'), args.warmup,
                                   args.runs)
    base = next((t.median_ms for n, t in zip(names, results) if n == 'mobilenetv2'), None)
    print(f'\nonnxruntime (CPU, {torch.get_num_threads()} threads, batch 1, '
          f'{args.shape}x{args.shape})')
    print(f'{"model":<14}{"median ms":>10}{"IQR":>8}{"vs MNv2":>9}')
    for name, t in zip(names, results):
        ratio = t.median_ms / base if base else float('nan')
        print(f'{name:<14}{t.median_ms:10.2f}{t.iqr_ms:8.2f}{vs_mobilenetv2(ratio)}')


_TRAIN_CASES = {
    # task: (input size, config per backbone)
    'ssdlite': ((320, 320), {'mobilenetv2': 'ssd/ssdlite_mobilenetv2_1xb8-300it_toyvoc.py',
                             'muxnet-m': 'ssd/ssdlite_muxnet-m_1xb8-300it_toyvoc.py'}),
    'pspnet': ((512, 512), {
        'mobilenetv2': 'pspnet/pspnet_mobilenetv2-d8_1xb4-220it_toyade-192x192.py',
        'muxnet-m': 'pspnet/pspnet_muxnet-m-d8_1xb4-220it_toyade-192x192.py'}),
}


def _train_samples(task, batch, size, device):
    if task == 'ssdlite':
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        samples = []
        for _ in range(batch):
            s = DetDataSample(metainfo=dict(img_shape=size, ori_shape=size, scale_factor=(1., 1.),
                                            pad_shape=size, batch_input_shape=size))
            s.gt_instances = InstanceData(
                bboxes=torch.tensor([[20., 30., 150., 200.], [160., 100., 300., 260.]],
                                    device=device),
                labels=torch.tensor([3, 7], device=device))
            samples.append(s)
        return samples
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(batch):
        s = SegDataSample(metainfo=dict(img_shape=size, ori_shape=size, pad_shape=size))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, *size), device=device))
        samples.append(s)
    return samples


def bench_train_step(args, device):
    """Training steps (AMP, channels-last, AdamW) of SSDLite and PSPNet-d8: MobileNetV2 vs
    MUXNet-m on the stock path vs MUXNet-m with ``fused_ops`` (every spatial conv the kernels
    take) vs ``fused_ops`` with each layer's faster form chosen on the device
    (:func:`mux_backbones.tuning.choose_training_kernels`); median time and peak memory."""
    from mmengine.config import Config
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for task in args.train_step:
        size, cfgs = _TRAIN_CASES[task]
        batch = args.train_batch.get(task, 24 if task == 'ssdlite' else 8)
        print(f'\ntraining step {task}, batch {batch}, {size[0]}x{size[1]}, AMP {args.train_amp},'
              f' channels-last, {device}', flush=True)
        print(f'{"backbone":<22}{"median ms":>10}{"IQR":>8}{"peak MiB":>10}{"vs MNv2":>9}')
        base = None
        for label, name, fused in (('mobilenetv2', 'mobilenetv2', False),
                                   ('muxnet-m', 'muxnet-m', False),
                                   ('muxnet-m fused_ops', 'muxnet-m', True),
                                   ('muxnet-m fused, chosen', 'muxnet-m', 'chosen')):
            cfg = Config.fromfile(os.path.join(repo, 'configs', cfgs[name]))
            if name != 'mobilenetv2':  # (whatever the config says)
                cfg.model.backbone.fused_ops = bool(fused)
            model = build_model_from_config(cfg).to(device).train()
            model.to(memory_format=torch.channels_last)
            optim = torch.optim.AdamW(model.parameters(), 1e-4)
            samples = _train_samples(task, batch, size, device)
            inputs = torch.randn(batch, 3, *size, device=device).contiguous(
                memory_format=torch.channels_last)
            with _autocast(device, args.train_amp):  # the dtypes the kernels will see
                if fused and device.type == 'cuda':
                    if args.tune_kernels:
                        tune_kernels(model.backbone, inputs, backward=True,
                                     kernels=args.tune_kernels)
                        save_tuned(args)
                    elif fused is True:
                        # Compiled ahead, not one by one in the first step (what lost session
                        # 24's lease these rows); the chosen row's kernels are these, cached.
                        precompile_kernels(model.backbone, inputs, backward=True)
                if fused == 'chosen':
                    # Its timing captures backward passes in CUDA graphs: should that fail on a
                    # device, the row says so and the next task's rows still run.
                    try:
                        choose_training_kernels(model.backbone, inputs)
                    except Exception as error:
                        print(f'{label:<22}choose_training_kernels failed: {error!r}', flush=True)
                        del model, optim
                        continue

            def step(_, model=model, optim=optim, samples=samples, inputs=inputs):
                with torch.enable_grad():
                    with _autocast(device, args.train_amp):
                        losses = model.loss(inputs, samples)
                    loss = sum(v for k, v in losses.items() if 'loss' in k for v in
                               (v if isinstance(v, (list, tuple)) else [v]))
                    optim.zero_grad()
                    loss.backward()
                    optim.step()

            if device.type == 'cuda':
                torch.cuda.empty_cache()
            t = time_forward(step, None, device, 3, max(5, args.runs // 10))
            base = base or t.median_ms
            print(f'{label:<22}{t.median_ms:10.1f}{t.iqr_ms:8.1f}{t.peak_mib:10.0f}'
                  f'{t.median_ms / base:9.2f}x', flush=True)
            if args.profile_train:
                profile_step(step, f'{task} {label}', device, t.median_ms)
            del model, optim


def profile_step(step, label: str, device, step_ms: float, steps: int = 3):
    """The kernels (on the CPU: operators) of ``steps`` training steps by device time per step,
    and how much of the step's wall time the device was busy (the rest is the host: data
    structures, loss assembly, launches)."""
    from torch.profiler import ProfilerActivity, profile
    on_gpu = device.type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(None)
        if on_gpu:
            torch.cuda.synchronize()
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA] if on_gpu \
        else list(events)

    def ms(event) -> float:  # per step
        return (event.self_device_time_total if on_gpu else event.self_cpu_time_total) / steps / 1e3

    busy = sum(ms(e) for e in kernels)
    # the Triton kernels of mux_backbones.ops (named _<what>_kernel)
    ours = sum(ms(e) for e in kernels if e.key.startswith('_') and e.key.endswith('_kernel'))
    ours = f'; fused Triton kernels {ours:.1f} ms' if on_gpu else ''
    what = 'kernels' if on_gpu else 'operators'
    print(f'  {label}: {"GPU" if on_gpu else "CPU operators"} busy {busy:.1f} ms of the '
          f'{step_ms:.1f} ms step{ours}; top {what} per step:')
    for e in sorted(kernels, key=ms, reverse=True)[:12]:
        print(f'    {ms(e):8.2f} ms {e.count / steps:6.0f}x  {e.key[:90]}')


def bench_config(args, device):
    from mmengine.config import Config
    model = build_model_from_config(Config.fromfile(args.config)).to(device).eval()
    for mode in args.modes:
        m = copy.deepcopy(model)
        x = torch.randn(1, 3, args.shape, args.shape, device=device)
        if mode == 'deploy':
            switch_to_deploy(m, channels_last=True)
            x = x.contiguous(memory_format=torch.channels_last)
        t = time_forward(lambda inp: m._forward(inp), x, device, args.warmup, args.runs)
        print(f'{os.path.basename(args.config)} [{mode}] {args.shape}x{args.shape}: '
              f'{t.median_ms:.2f} ms (IQR {t.iqr_ms:.2f}), peak {t.peak_mib:.0f} MiB')


def parse_args(argv=None):
    """The command line (``argv``, default ``sys.argv[1:]``), completed (presets, defaults)."""
    parser = argparse.ArgumentParser(description='Benchmark MUXNet against MobileNetV2')
    parser.add_argument('--models', nargs='+', default=['mobilenetv2', 'muxnet-m', 'muxnet-l'])
    parser.add_argument('--config', help='benchmark a whole mmdet/mmseg config instead')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch', type=positive_int, nargs='+', default=[1])
    parser.add_argument('--modes', nargs='+', default=['eager', 'deploy'],
                        choices=['eager', 'deploy', 'deploy-stock', 'deploy-modules',
                                 'deploy-auto', 'graph', 'graph-stock', 'graph-auto', 'compile'],
                        help='see _prepare: eager (autocast), deploy (fused kernels; on a CPU '
                        'each block one call), deploy-stock, deploy-modules (deploy module by '
                        'module), deploy-auto (per block the faster), graph[-stock|-auto] '
                        '(those in a CUDA graph), compile (deploy under torch.compile '
                        'reduce-overhead)')
    parser.add_argument('--compile-cases', nargs='+', type=_case, default=None,
                        metavar='PREC:BATCH',
                        help='restrict --modes compile to these cases, e.g. fp16:32 bf16:128 '
                        '(each compile takes ~1 min); default: every case')
    parser.add_argument('--amp', nargs='+', default=['fp32'], choices=['fp32', 'fp16', 'bf16'])
    parser.add_argument('--shape', type=positive_int, default=224)
    parser.add_argument('--threads', type=positive_int, default=None,
                        help='CPU threads (default: torch)')
    parser.add_argument('--warmup', type=int_at_least(0), default=10)
    # A median and an inter-quartile range need at least two timed runs.
    parser.add_argument('--runs', type=int_at_least(2), default=50)
    parser.add_argument('--onnx', action='store_true', help='also time onnxruntime (CPU)')
    parser.add_argument('--profile', nargs='?', type=_case, const=('fp32', 1), default=None,
                        metavar='PREC:BATCH',
                        help='per-kernel GPU time, and per kind of layer time, bytes and '
                        'bandwidth, of one case')
    parser.add_argument('--profile-top', type=positive_int, default=20, metavar='N',
                        help='with --profile: the N slowest layers, each with its bytes and '
                        'bandwidth')
    parser.add_argument('--train-step', nargs='*', choices=sorted(_TRAIN_CASES), default=None,
                        help='also time training steps (default when given bare: ssdlite)')
    parser.add_argument('--train-batch', nargs='+', type=_train_batch, default=[],
                        metavar='[TASK:]N',
                        help='training batch, e.g. 24 or ssdlite:24 pspnet:8')
    parser.add_argument('--train-amp', default='fp16', choices=['fp32', 'fp16', 'bf16'])
    parser.add_argument('--profile-train', action='store_true',
                        help='with --train-step: the top kernels (CPU: operators) of 3 profiled '
                        'steps of each backbone, per step, and the device time the step keeps '
                        'busy')
    parser.add_argument('--target-table', action='store_true',
                        help='the speed goal of docs/speed.md on CUDA: MobileNetV2 vs MUXNet-m, '
                        'every mode at batch 1/32/128 in fp16 and bf16, both training steps')
    parser.add_argument('--target-table-rows', action='store_true',
                        help='print the target table for the cases given (no preset matrix)')
    parser.add_argument('--tune-kernels', nargs='?', const='all', choices=TUNED_KERNELS,
                        default=None,
                        help='tune the fused kernels\' launch configs of every case (CUDA; the '
                        'training steps\' gradient kernels too) before timing it; "gemms": the '
                        '1x1 convs\' GEMMs alone (over --launch-configs\' spatial convs)')
    parser.add_argument('--launch-configs', metavar='FILE',
                        help='tuned launch configs of the fused kernels to run with (written by '
                        'tools/gpu/layer_bench.py --tune --save-configs)')
    parser.add_argument('--save-launch-configs', metavar='FILE',
                        help='with --tune-kernels: write the launch configs this run tuned '
                        '(every case; with --launch-configs, those loaded too) for a later '
                        '--launch-configs')
    args = parser.parse_args(argv)
    if args.target_table:
        args.models = ['mobilenetv2', 'muxnet-m']
        args.modes = ['eager', 'deploy-stock', 'deploy', 'graph-stock', 'graph', 'compile']
        args.batch = [1, 32, 128]
        args.amp = ['fp16', 'bf16']
        args.compile_cases = args.compile_cases or [('fp16', 1), ('fp16', 32), ('bf16', 128)]
        args.train_step = args.train_step or ['ssdlite', 'pspnet']
        args.profile = args.profile or ('fp16', 32)
    if args.train_step == []:
        args.train_step = ['ssdlite']
    if args.profile_train and not args.train_step:
        parser.error('--profile-train needs --train-step')
    if args.save_launch_configs and not args.tune_kernels:
        parser.error('--save-launch-configs needs --tune-kernels')
    args.compile_cases = None if args.compile_cases is None else set(args.compile_cases)
    batches = {}
    for tasks, n in args.train_batch:
        batches.update({t: n for t in tasks})
    args.train_batch = batches
    return args


def _case(text):
    """'fp16:32' -> ('fp16', 32)."""
    prec, _, batch = text.partition(':')
    if prec not in PRECISIONS or not batch.isdigit() or int(batch) < 1:
        raise argparse.ArgumentTypeError(f'expected PREC:BATCH such as fp16:32, got "{text}"')
    return prec, int(batch)


def _train_batch(text):
    """'pspnet:8' -> (['pspnet'], 8); '8' -> (every task, 8)."""
    task, _, n = text.rpartition(':')
    if task and task not in _TRAIN_CASES:
        raise argparse.ArgumentTypeError(f'unknown task "{task}" (use {sorted(_TRAIN_CASES)})')
    return ([task] if task else sorted(_TRAIN_CASES)), positive_int(n)


@exits_cleanly
def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = usable_device(args.device)
    if args.launch_configs:
        try:
            count = launch_config.load(args.launch_configs)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ToolError(f'cannot load launch configs: {err}') from None
        print(f'{count} tuned launch configs from {args.launch_configs}')
    if args.config:
        if not os.path.isfile(args.config):
            raise ToolError(f'config file not found: {args.config}')
        bench_config(args, device)
        return
    for name in args.models:
        build_backbone(name)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu_description()
    print(f'device: {name}; torch {torch.__version__}; input {args.shape}x{args.shape}')
    # host ms: until the forward returned, before the device sync (see utils/timing.py)
    print(f'{"model":<12}{"mode":>13}{"prec":>6}{"batch":>6}{"median ms":>11}{"IQR":>8}'
          f'{"host ms":>9}{"img/s":>10}{"peak MiB":>10}{"vs MNv2":>9}', flush=True)
    rows = bench_models(args, device)
    eager = {(r.model, r.precision, r.batch): r.timing.median_ms for r in rows
             if r.mode == 'eager'}
    for r in rows:
        key = (r.model, r.precision, r.batch)
        if r.mode != 'eager' and key in eager:
            print(f'{r.model} {r.mode} vs eager ({r.precision}, batch {r.batch}): '
                  f'{eager[key] / r.timing.median_ms:.2f}x faster')
    if args.target_table or args.target_table_rows:
        print_target_table(rows)
    if args.train_step:
        bench_train_step(args, device)
    if args.profile:
        profile_models(args, device)
    if args.onnx:
        bench_onnx(args)
    save_tuned(args)


def save_tuned(args):
    """``--save-launch-configs``: the process's tuned launch configs to their file."""
    if args.save_launch_configs:
        launch_config.save(args.save_launch_configs)
        print(f'{len(launch_config.entries())} tuned launch configs -> '
              f'{args.save_launch_configs}', flush=True)


# The goal of the fused kernels (docs/speed.md): MUXNet-m over MobileNetV2, at most.
_GOALS = {('graph', 32): 1.0, ('graph', 128): 1.0, ('graph', 1): 1.0, ('compile', 32): 1.0,
          ('compile', 128): 1.0, ('compile', 1): 1.0, ('deploy', 32): 1.2}


def print_target_table(rows):
    """MUXNet-m / MobileNetV2 per mode, precision and batch, against the goal where one is set;
    with each net's host time (a row whose host time is close to its median is host-bound:
    Python and launch calls, not the kernels, set its time)."""
    print('\ntarget table: MUXNet-m / MobileNetV2 (same mode, precision, batch)')
    print(f'{"mode":<14}{"prec":>6}{"batch":>6}{"MNv2 ms":>10}{"MUXNet-m ms":>13}{"ratio":>8}'
          f'{"goal":>7}  met{"host ms MNv2 / MUXNet-m":>26}')
    base = {(r.mode, r.precision, r.batch): r.timing for r in rows if r.model == 'mobilenetv2'}
    for r in rows:
        key = (r.mode, r.precision, r.batch)
        if r.model != 'muxnet-m' or key not in base:
            continue
        goal = _GOALS.get((r.mode, r.batch))
        verdict = '' if goal is None else ('yes' if r.ratio <= goal else 'NO')
        print(f'{r.mode:<14}{r.precision:>6}{r.batch:>6}{base[key].median_ms:10.3f}'
              f'{r.timing.median_ms:13.3f}{r.ratio:8.2f}'
              f'{"" if goal is None else f"{goal:.1f}":>7}  {verdict:<3}'
              f'{base[key].host_ms:15.3f} / {r.timing.host_ms:.3f}')


if __name__ == '__main__':
    main()
