"""Generate the embedded default datasets (deterministic; a few seconds on a CPU).

    python tools/dataset_converters/make_toy_data.py                 # both, under data/
    python tools/dataset_converters/make_toy_data.py --task det --out data/my_voc

Detection: ``<out>/toy_voc/VOCdevkit/VOC2007`` (PASCAL VOC layout, 4 VOC classes).
Segmentation: ``<out>/toy_ade/ADEChallengeData2016`` (ADE20K layout, 5 ADE20K classes).
"""
import argparse
import os.path as osp
import shutil

from mux_backbones.cli import ToolError, exits_cleanly, int_at_least
from mux_backbones.datasets.toy_data import make_toy_ade20k, make_toy_voc


def parse_args():
    parser = argparse.ArgumentParser(description='Make the embedded toy VOC / ADE20K datasets')
    parser.add_argument('--out', default='data', help='folder to write the datasets under')
    parser.add_argument('--task', choices=['det', 'seg', 'all'], default='all')
    parser.add_argument('--seed', type=int_at_least(0, 2**32 - 1), default=0,
                        help='random seed, as numpy takes it (0 .. 2**32 - 1)')
    parser.add_argument('--force', action='store_true', help='rewrite existing datasets')
    return parser.parse_args()


def write(make, root: str, seed: int) -> str:
    """``make(root, seed)``, its folder written afresh; one line where it cannot be."""
    shutil.rmtree(root, ignore_errors=True)
    try:
        return make(root, seed=seed)
    except OSError as err:
        raise ToolError(f'cannot write {root}: {err.strerror} ({err.filename})') from None


@exits_cleanly
def main():
    args = parse_args()
    if args.task in ('det', 'all'):
        root = osp.join(args.out, 'toy_voc', 'VOCdevkit')
        if args.force or not osp.exists(osp.join(root, 'VOC2007', 'ImageSets')):
            print('toy VOC written to', write(make_toy_voc, root, args.seed))
        else:
            print('toy VOC already present at', root)
    if args.task in ('seg', 'all'):
        root = osp.join(args.out, 'toy_ade', 'ADEChallengeData2016')
        if args.force or not osp.exists(osp.join(root, 'annotations')):
            print('toy ADE20K written to', write(make_toy_ade20k, root, args.seed))
        else:
            print('toy ADE20K already present at', root)


if __name__ == '__main__':
    main()
