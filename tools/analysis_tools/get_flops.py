"""Params and MAdds of a MUXNet arch (ImageNet classifier) or of a whole mmdet/mmseg model.

    python tools/analysis_tools/get_flops.py --arch m                   # 224x224 classifier
    python tools/analysis_tools/get_flops.py --arch all
    python tools/analysis_tools/get_flops.py configs/ssd/ssdlite_muxnet-m_8xb24-600e_voc0712.py
    python tools/analysis_tools/get_flops.py CONFIG --shape 512 512

MAdds are conv + linear multiply-adds of one forward pass (torch FlopCounterMode), the way the
paper's and the official release's figures were counted; whole models are measured up to their raw
head outputs (no NMS / resize). The paper's figure is printed next to each measurement.
"""
import argparse
import os.path as osp

import torch

import mux_backbones
from mux_backbones import MUXNetClassifier, arch_settings
from mux_backbones.cli import (ToolError, build_model_from_config, cfg_options_action,
                               exits_cleanly, positive_int)
from mux_backbones.utils import PAPER_RESULTS, count_macs, count_params

_PAPER_KEYS = {
    'ssdlite_muxnet-m': 'ssdlite_muxnet-m', 'ssd300_muxnet-l': 'ssd_muxnet-l',
    'ssdlite_mobilenetv2': 'ssdlite_mobilenetv2', 'pspnet_muxnet-m': 'ppm_muxnet-m',
    'pspnet_mobilenetv2': 'ppm_mobilenetv2', 'c1_muxnet-m': 'c1_muxnet-m',
    'c1_mobilenetv2': 'c1_mobilenetv2'
}


def parse_args():
    parser = argparse.ArgumentParser(description='Count params and MAdds')
    parser.add_argument('config', nargs='?', help='an mmdet/mmseg config (or use --arch)')
    parser.add_argument('--arch', help=f'MUXNet arch: {", ".join(arch_settings)} or "all"')
    parser.add_argument('--shape', type=positive_int, nargs='+', help='input height [width]')
    parser.add_argument('--cfg-options', nargs='+', action=cfg_options_action(), default=None,
                        help='override settings of the config, as key=value pairs')
    return parser.parse_args()


def _fmt(params: int, macs: int) -> str:
    return f'{params / 1e6:7.3f}M params  {macs / 1e6:9.1f}M MAdds'


def _paper_line(key: str) -> str:
    ref = PAPER_RESULTS.get(key)
    if not ref:
        return ''
    text = f'paper: {ref["params"]}M params, {ref["madds"]}M MAdds'
    if 'official_params' in ref:
        text += f' (official code: {ref["official_params"]}M, {ref["official_madds"]}M)'
    return text


def measure_arch(arch: str, shape) -> None:
    try:
        model = MUXNetClassifier(arch)
    except ValueError as err:  # MUXNet names the archs it knows
        raise ToolError(str(err)) from None
    params, macs = count_params(model), count_macs(model, (1, 3, *shape))
    line = f'MUXNet-{arch:<4s} {shape[0]}x{shape[1]}: {_fmt(params, macs)}'
    ref = _paper_line(f'muxnet-{arch}')
    print(f'{line}   | {ref}' if ref else line)


def measure_config(path: str, shape, cfg_options) -> None:
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = build_model_from_config(cfg)  # counting needs no weights
    if shape is None:
        crop = cfg.get('crop_size', None) or (cfg.get('input_size', None), ) * 2
        shape = tuple(crop) if crop[0] else (512, 512)
    params = count_params(model)
    macs = count_macs(model, (1, 3, *shape), forward=lambda x: model._forward(x))
    name = osp.splitext(osp.basename(path))[0]
    print(f'{name} {shape[0]}x{shape[1]}: {_fmt(params, macs)}')
    key = next((v for k, v in _PAPER_KEYS.items() if name.startswith(k)), None)
    if key:
        print(f'  {_paper_line(key)}')


@exits_cleanly
def main():
    args = parse_args()
    if bool(args.config) == bool(args.arch):
        raise ToolError('give either a config or --arch')
    if args.arch and args.cfg_options:
        raise ToolError('--cfg-options goes with a config, not --arch')
    shape = None
    if args.shape:
        if len(args.shape) not in (1, 2):
            raise ToolError('--shape takes one or two numbers')
        shape = tuple(args.shape) * (3 - len(args.shape))
    torch.set_grad_enabled(False)
    if args.arch:
        for arch in list(arch_settings) if args.arch == 'all' else [args.arch]:
            measure_arch(arch, shape or (224, 224))
    else:
        if not osp.isfile(args.config):
            raise ToolError(f'config file not found: {args.config}')
        measure_config(args.config, shape, args.cfg_options)


if __name__ == '__main__':
    assert mux_backbones  # registers MUXNet before any config is built
    main()
