"""Export a MUXNet backbone, or a detector/segmentor up to its raw head outputs, to ONNX.

    python tools/deployment/pytorch2onnx.py --arch m [--checkpoint CKPT] --shape 224 224 \
        --out muxnet-m.onnx
    python tools/deployment/pytorch2onnx.py --config CONFIG [--checkpoint CKPT] --shape 320 320 \
        --out ssdlite.onnx

The model is put in deploy mode (BN folded, see ``mux_backbones.deploy``) before export, and the
ONNX file is checked with onnxruntime against PyTorch (``--atol``, default 1e-4). Post-processing
(NMS, resizing) stays outside the graph. A layer the exporter cannot handle ends with a one-line
message naming it. With ``--arch``, ``--checkpoint`` may be a backbone's, a classifier's or a
detector's/segmentor's checkpoint (``MUXNet.load_pretrained``: the keys under ``backbone.`` when
there are any).
"""
import argparse
import os.path as osp
import warnings

import torch

import mux_backbones  # noqa: F401
from mux_backbones import MUXNet
from mux_backbones.cli import (ToolError, build_model_from_config, check_output_file, exits_cleanly,
                               float_at_least, int_at_least, positive_int)
from mux_backbones.deploy import RawOutputs, switch_to_deploy
from mux_backbones.engine import load_weights


def supported_opsets():
    """The opsets torch's TorchScript exporter writes (7..20 in torch 2.11-2.13); asked up front,
    since the exporter refuses others only after tracing, with the whole graph printed."""
    try:
        from torch.onnx import _constants
        return _constants.ONNX_MIN_OPSET, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    except (ImportError, AttributeError):  # private names: another torch may move them
        return 7, 20


def build(args):
    if args.arch:
        try:
            backbone = MUXNet(args.arch, out_indices=tuple(args.out_indices or (7, )))
        except ValueError as err:  # MUXNet names the archs and indices it accepts
            raise ToolError(str(err)) from None
        if args.checkpoint:
            backbone.load_pretrained(args.checkpoint)
        return backbone
    from mmengine.config import Config
    if not osp.isfile(args.config):
        raise ToolError(f'config file not found: {args.config}')
    model = build_model_from_config(Config.fromfile(args.config))
    if args.checkpoint:
        load_weights(model, args.checkpoint, prefix='')  # exact: every key must fit
    return RawOutputs(model)


@exits_cleanly
def main():
    parser = argparse.ArgumentParser(description='Export to ONNX and verify with onnxruntime')
    parser.add_argument('--arch', help='MUXNet arch (backbone export)')
    parser.add_argument('--out-indices', type=int, nargs='+',
                        help='backbone outputs to export (--arch; default: 7, the head conv)')
    parser.add_argument('--config', help='mmdet/mmseg config (whole-model export)')
    parser.add_argument('--checkpoint',
                        help='weights for the model (--config) or the backbone (--arch)')
    parser.add_argument('--shape', type=positive_int, nargs=2, default=[224, 224],
                        help='height width')
    parser.add_argument('--out', required=True, help='output .onnx file')
    parser.add_argument('--opset', type=int_at_least(*supported_opsets()), default=17)
    parser.add_argument('--atol', type=float_at_least(0), default=1e-4,
                        help='largest |onnxruntime - torch| accepted')
    args = parser.parse_args()
    if bool(args.arch) == bool(args.config):
        raise ToolError('give either --arch or --config')
    check_output_file(args.out, '--out', [(args.checkpoint, 'the checkpoint'),
                                          (args.config, 'the config')])
    if args.config and args.out_indices:
        raise ToolError('--out-indices goes with --arch; a config names its own '
                        '(--cfg-options is not read here: edit the config)')
    model = build(args)
    model.eval()
    switch_to_deploy(model)
    x = torch.randn(1, 3, *args.shape)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The input's shape is fixed (--shape), so the layers' shape tests that the tracer
            # warns about hold for the exported graph; and the TorchScript exporter is chosen
            # on purpose (dynamo=False), so its deprecation notice says nothing to act on.
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            warnings.simplefilter('ignore', DeprecationWarning)
            torch.onnx.export(model, (x, ), args.out, input_names=['input'],
                              opset_version=args.opset, dynamo=False)
    except Exception as err:  # the exporter raises many types; report the first line only
        raise ToolError(f'ONNX export failed: {str(err).splitlines()[0]}') from None
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
        raise ToolError(f'onnxruntime differs from PyTorch by {diff:.2e} (> {args.atol})')
    print(f'exported {args.out}: {len(outs)} outputs, max |onnxruntime - torch| = {diff:.2e}')


if __name__ == '__main__':
    main()
