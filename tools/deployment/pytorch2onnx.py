"""Export a MUXNet backbone, or a detector/segmentor up to its raw head outputs, to ONNX.

    python tools/deployment/pytorch2onnx.py --arch m --shape 224 224 --out muxnet-m.onnx
    python tools/deployment/pytorch2onnx.py --config CONFIG [--checkpoint CKPT] --shape 320 320 \
        --out ssdlite.onnx

The model is put in deploy mode (BN folded, see ``mux_backbones.deploy``) before export, and the
ONNX file is checked with onnxruntime against PyTorch (``--atol``, default 1e-4). Post-processing
(NMS, resizing) stays outside the graph. A layer the exporter cannot handle ends with a one-line
message naming it.
"""
import argparse
import os.path as osp
import sys

import torch

import mux_backbones  # noqa: F401
from mux_backbones import MUXNet, arch_settings
from mux_backbones.deploy import RawOutputs, switch_to_deploy


def build(args):
    if args.arch:
        if args.arch not in arch_settings:
            sys.exit(f'error: unknown arch "{args.arch}"; choose from {", ".join(arch_settings)}')
        return MUXNet(args.arch, out_indices=tuple(args.out_indices))
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint

    from mux_backbones.apis import build_model_from_config
    if not osp.isfile(args.config):
        sys.exit(f'error: config file not found: {args.config}')
    model = build_model_from_config(Config.fromfile(args.config))
    if args.checkpoint:
        from mux_backbones.compat import mmengine_checkpoint_types
        with mmengine_checkpoint_types():
            load_checkpoint(model, args.checkpoint, map_location='cpu')
    return RawOutputs(model)


def main():
    parser = argparse.ArgumentParser(description='Export to ONNX and verify with onnxruntime')
    parser.add_argument('--arch', help='MUXNet arch (backbone export)')
    parser.add_argument('--out-indices', type=int, nargs='+', default=[7])
    parser.add_argument('--config', help='mmdet/mmseg config (whole-model export)')
    parser.add_argument('--checkpoint', help='weights for --config')
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 224], help='height width')
    parser.add_argument('--out', required=True, help='output .onnx file')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--atol', type=float, default=1e-4)
    args = parser.parse_args()
    if bool(args.arch) == bool(args.config):
        sys.exit('error: give either --arch or --config')
    model = build(args)
    model.eval()
    switch_to_deploy(model)
    x = torch.randn(1, 3, *args.shape)
    try:
        with torch.no_grad():
            torch.onnx.export(model, (x, ), args.out, input_names=['input'],
                              opset_version=args.opset, dynamo=False)
    except Exception as err:  # the exporter raises many types; report the first line only
        sys.exit(f'error: ONNX export failed: {str(err).splitlines()[0]}')
    try:
        import onnxruntime as ort
    except ImportError:
        print(f'exported {args.out} (onnxruntime not installed: not verified)')
        return
    with torch.no_grad():
        ref = model(x)
    ref = list(ref) if isinstance(ref, (list, tuple)) else [ref]
    sess = ort.InferenceSession(args.out, providers=['CPUExecutionProvider'])
    outs = sess.run(None, {'input': x.numpy()})
    diff = max(float((torch.from_numpy(o) - r).abs().max()) for o, r in zip(outs, ref))
    if diff > args.atol:
        sys.exit(f'error: onnxruntime differs from PyTorch by {diff:.2e} (> {args.atol})')
    print(f'exported {args.out}: {len(outs)} outputs, max |onnxruntime - torch| = {diff:.2e}')


if __name__ == '__main__':
    main()
