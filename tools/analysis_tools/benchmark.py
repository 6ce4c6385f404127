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
import os
import tempfile
from typing import List, NamedTuple

import torch

import mux_backbones  # noqa: F401  (registers MUXNet, applies stack fixes)
from mux_backbones import MUXNet
from mux_backbones.cli import (ToolError, build_model_from_config, exits_cleanly, int_at_least,
                               positive_int)
from mux_backbones.deploy import switch_to_deploy
from mux_backbones.utils.timing import Timing, time_forward, time_interleaved


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
    dtype = torch.float16 if amp == 'fp16' else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _prepare(name, mode, batch, args, device):
    model = build_backbone(name).to(device)
    x = torch.randn(batch, 3, args.shape, args.shape, device=device)
    if mode == 'deploy':
        switch_to_deploy(model, channels_last=True)
        x = x.contiguous(memory_format=torch.channels_last)
    elif mode == 'compile':
        model = torch.compile(model)
    return model, x


def bench_models(args, device) -> List[Row]:
    """Every model in every mode, timed interleaved per (precision, batch)."""
    rows = []
    for amp in args.amp:
        if amp == 'fp16' and device.type != 'cuda':
            print(f'skipping fp16 on {device.type} (use bf16)')
            continue
        for batch in args.batch:
            cases = [(name, mode) for mode in args.modes for name in args.models]
            fns, inputs = [], []
            for name, mode in cases:
                model, x = _prepare(name, mode, batch, args, device)

                def fn(inp, model=model, amp=amp):
                    with _autocast(device, amp):
                        return model(inp)

                fns.append(fn)
                inputs.append(x)
            runs = args.runs if batch == 1 else max(5, args.runs // 5)
            results = time_interleaved(fns, inputs, device, args.warmup, runs)
            base = {mode: t.median_ms for (name, mode), t in zip(cases, results)
                    if name == 'mobilenetv2'}
            for (name, mode), t in zip(cases, results):
                rows.append(Row(name, mode, amp, batch, t,
                                t.median_ms / base[mode] if mode in base else float('nan')))
    return rows


def profile_models(args, device):
    """torch.profiler table of the top operators of each model (batch 1), per mode."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    for mode in args.modes:
        for name in args.models:
            model, x = _prepare(name, mode, 1, args, device)
            with torch.no_grad():
                for _ in range(args.warmup):
                    model(x)
                with profile(activities=activities) as prof:
                    for _ in range(10):
                        model(x)
            key = 'self_cuda_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
            print(f'\n== {name} [{mode}] top operators (10 runs) ==')
            print(prof.key_averages().table(sort_by=key, row_limit=12))


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
        print(f'{name:<14}{t.median_ms:10.2f}{t.iqr_ms:8.2f}{ratio:9.2f}x')


def bench_train_step(args, device):
    """SSDLite-MUXNet-m vs SSDLite-MobileNetV2 training step (synthetic batch)."""
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.structures import InstanceData
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(f'\ntraining step, batch {args.train_batch}, 320x320, {device}')
    print(f'{"config":<42}{"median ms":>10}{"IQR":>8}{"peak MiB":>10}{"vs MNv2":>9}')
    base = None
    for cfg_name in ('ssdlite_mobilenetv2_1xb8-300it_toyvoc', 'ssdlite_muxnet-m_1xb8-300it_toyvoc'):
        cfg = Config.fromfile(os.path.join(repo, 'configs/ssd', cfg_name + '.py'))
        model = build_model_from_config(cfg).to(device).train()
        optim = torch.optim.AdamW(model.parameters(), 1e-3)
        samples = []
        for _ in range(args.train_batch):
            s = DetDataSample(metainfo=dict(img_shape=(320, 320), ori_shape=(320, 320),
                                            scale_factor=(1., 1.), pad_shape=(320, 320),
                                            batch_input_shape=(320, 320)))
            s.gt_instances = InstanceData(
                bboxes=torch.tensor([[20., 30., 150., 200.], [160., 100., 300., 260.]],
                                    device=device),
                labels=torch.tensor([3, 7], device=device))
            samples.append(s)
        inputs = torch.randn(args.train_batch, 3, 320, 320, device=device)

        def step(_):
            with torch.enable_grad():
                losses = model.loss(inputs, samples)
                loss = sum(v for k, v in losses.items() if 'loss' in k for v in
                           (v if isinstance(v, (list, tuple)) else [v]))
                optim.zero_grad()
                loss.backward()
                optim.step()

        t = time_forward(step, None, device, 2, max(5, args.runs // 10))
        base = base or t.median_ms
        print(f'{cfg_name:<42}{t.median_ms:10.1f}{t.iqr_ms:8.1f}{t.peak_mib:10.0f}'
              f'{t.median_ms / base:9.2f}x')


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


def parse_args():
    parser = argparse.ArgumentParser(description='Benchmark MUXNet against MobileNetV2')
    parser.add_argument('--models', nargs='+', default=['mobilenetv2', 'muxnet-m', 'muxnet-l'])
    parser.add_argument('--config', help='benchmark a whole mmdet/mmseg config instead')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch', type=positive_int, nargs='+', default=[1])
    parser.add_argument('--modes', nargs='+', default=['eager', 'deploy'],
                        choices=['eager', 'deploy', 'compile'])
    parser.add_argument('--amp', nargs='+', default=['fp32'], choices=['fp32', 'fp16', 'bf16'])
    parser.add_argument('--shape', type=positive_int, default=224)
    parser.add_argument('--threads', type=positive_int, default=None,
                        help='CPU threads (default: torch)')
    parser.add_argument('--warmup', type=int_at_least(0), default=10)
    # A median and an inter-quartile range need at least two timed runs.
    parser.add_argument('--runs', type=int_at_least(2), default=50)
    parser.add_argument('--onnx', action='store_true', help='also time onnxruntime (CPU)')
    parser.add_argument('--profile', action='store_true', help='print torch.profiler tables')
    parser.add_argument('--train-step', action='store_true',
                        help='also time SSDLite-MUXNet-m vs SSDLite-MobileNetV2 training steps')
    parser.add_argument('--train-batch', type=positive_int, default=24)
    return parser.parse_args()


@exits_cleanly
def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
        if device.type == 'cuda' and not torch.cuda.is_available():
            raise RuntimeError('CUDA is not available on this machine')
        torch.empty(1, device=device)
    except RuntimeError as err:
        raise ToolError(f'device "{args.device}" is not usable: '
                        f'{str(err).splitlines()[0]}') from None
    if args.config:
        if not os.path.isfile(args.config):
            raise ToolError(f'config file not found: {args.config}')
        bench_config(args, device)
        return
    for name in args.models:
        build_backbone(name)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else \
        f'CPU, {torch.get_num_threads()} threads'
    print(f'device: {name}; torch {torch.__version__}; input {args.shape}x{args.shape}')
    rows = bench_models(args, device)
    print(f'{"model":<12}{"mode":>8}{"prec":>6}{"batch":>6}{"median ms":>11}{"IQR":>8}'
          f'{"img/s":>9}{"peak MiB":>10}{"vs MNv2":>9}')
    for r in rows:
        t = r.timing
        print(f'{r.model:<12}{r.mode:>8}{r.precision:>6}{r.batch:>6}{t.median_ms:11.2f}'
              f'{t.iqr_ms:8.2f}{r.batch / t.median_ms * 1e3:9.1f}{t.peak_mib:10.0f}'
              f'{r.ratio:9.2f}x')
    eager = {(r.model, r.precision, r.batch): r.timing.median_ms for r in rows
             if r.mode == 'eager'}
    for r in rows:
        key = (r.model, r.precision, r.batch)
        if r.mode != 'eager' and key in eager:
            print(f'{r.model} {r.mode} vs eager ({r.precision}, batch {r.batch}): '
                  f'{eager[key] / r.timing.median_ms:.2f}x faster')
    if args.profile:
        profile_models(args, device)
    if args.onnx:
        bench_onnx(args)
    if args.train_step:
        bench_train_step(args, device)


if __name__ == '__main__':
    main()
