"""Print a config as the tools see it: its ``_base_`` files merged, ``--cfg-options`` applied.

    python tools/misc/print_config.py configs/ssd/ssdlite_muxnet-m_8xb24-600e_voc0712.py
    python tools/misc/print_config.py CONFIG --cfg-options model.backbone.arch=l --save-path full.py

As mmdet's and mmseg's ``print_config``; here a config with a MUXNet backbone is also checked as
``train.py`` checks it (the backbone's arguments, the channels its neck or heads read, the
dataloaders' sizes), and a last line names what the backbone hands on: each output's channels
and stride. ``--save-path`` writes the merged config (``.py``, ``.json`` or ``.yaml``), a file
that reads without the upstream ``mmdet::``/``mmseg::`` bases.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config

from mux_backbones.cli import (ToolError, cfg_options_action, check_folder_can_be_made,
                               check_output_file, exits_cleanly, read_config)
from mux_backbones.cli.config import check_backbone_arguments, check_dataloaders

SAVE_FORMATS = ('.py', '.json', '.yaml', '.yml')


def parse_args():
    parser = argparse.ArgumentParser(description='Print the whole config')
    parser.add_argument('config', help='config file')
    parser.add_argument('--cfg-options', nargs='+', action=cfg_options_action(),
                        help='override settings of the config, as key=value pairs')
    parser.add_argument('--save-path', help='also write the merged config to this file '
                        f'({", ".join(SAVE_FORMATS)})')
    return parser.parse_args()


def backbone_outputs(cfg: Config) -> str:
    """What a MUXNet ``model.backbone`` hands on, in words; empty for other backbones."""
    from mux_backbones.backbones import MUXNet, arch_settings
    backbone = cfg.get('model', {}).get('backbone', None) or {}
    if str(backbone.get('type', '')).rpartition('.')[2] != MUXNet.__name__:
        return ''
    net = MUXNet(**{k: v for k, v in backbone.items() if k not in ('type', 'init_cfg')})
    outputs = ', '.join(f'{info["num_chs"]} ch at stride {info["reduction"]}'
                        for info in net.feature_info)
    name = f'MUXNet-{net.arch}' if net.arch in arch_settings else 'MUXNet'
    return f'backbone {name} gives {outputs} (out_indices {net.out_indices})'


@exits_cleanly
def main():
    args = parse_args()
    if args.save_path:
        if not args.save_path.endswith(SAVE_FORMATS):
            raise ToolError(f'--save-path {args.save_path}: give a {", ".join(SAVE_FORMATS)} '
                            f'file')
        check_output_file(args.save_path, '--save-path', [(args.config, 'the config itself')])
        check_folder_can_be_made(osp.dirname(args.save_path) or '.', 'the folder of --save-path')
    cfg = read_config(args.config, args.cfg_options)
    check_backbone_arguments(cfg)
    check_dataloaders(cfg)
    print(cfg.pretty_text)
    summary = backbone_outputs(cfg)
    if summary:
        print(f'# {summary}')
    if args.save_path:
        os.makedirs(osp.dirname(osp.abspath(args.save_path)), exist_ok=True)
        cfg.dump(args.save_path)
        print(f'# saved {args.save_path}')


if __name__ == '__main__':
    main()
