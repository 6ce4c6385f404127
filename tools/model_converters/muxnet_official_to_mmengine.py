"""Convert an official MUXNet-m/-l ImageNet checkpoint to this project's layout.

    python tools/model_converters/muxnet_official_to_mmengine.py muxnet_m.pth \
        checkpoints/muxnet-m_in1k.pth --arch m

The output is a weights-only checkpoint (``{'state_dict': ..., 'meta': ...}``) of
:class:`mux_backbones.MUXNetClassifier`; a backbone reads it with
``init_cfg=dict(type='Pretrained', checkpoint=OUT, prefix='backbone.')``. Every official key is
mapped and every project weight filled, or the conversion stops with the key at fault.
"""
import argparse
import io
import os.path as osp

import torch

from mux_backbones.cli import check_output_file, exits_cleanly
from mux_backbones.engine.atomic_backend import atomic_write
from mux_backbones.models.official_weights import (convert_official_state_dict,
                                                   load_official_checkpoint)


def parse_args():
    parser = argparse.ArgumentParser(description='Convert an official MUXNet checkpoint')
    parser.add_argument('src', help='official checkpoint (timm-style keys)')
    parser.add_argument('dst', help='output checkpoint path')
    parser.add_argument('--arch', choices=['m', 'l'], required=True, help='MUXNet arch')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='allow full unpickling of SRC (only for files you trust)')
    return parser.parse_args()


@exits_cleanly
def main():
    args = parse_args()
    check_output_file(args.dst, 'output', [(args.src, 'the official checkpoint itself')])
    state = load_official_checkpoint(args.src, trust=args.trust_checkpoint)
    converted = convert_official_state_dict(state, args.arch)
    buffer = io.BytesIO()
    torch.save(dict(state_dict=converted, meta=dict(arch=f'muxnet-{args.arch}',
                                                    source=osp.basename(args.src))), buffer)
    atomic_write(buffer.getvalue(), args.dst)  # never a half-written file under DST
    print(f'converted {len(converted)} tensors of MUXNet-{args.arch} to {args.dst}')


if __name__ == '__main__':
    main()
