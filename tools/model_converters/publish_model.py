"""Turn a training checkpoint into the file to publish, as mmdet's and mmseg's ``publish_model``.

    python tools/model_converters/publish_model.py work_dirs/RUN/iter_300.pth \
        checkpoints/ssdlite_muxnet-m_toyvoc.pth --config CONFIG
    # -> checkpoints/ssdlite_muxnet-m_toyvoc-1a2b3c4d.pth

What a resumable checkpoint carries beyond the weights (optimizer state, scheduler state, the
message hub's statistics, an EMA hook's raw weights) is left out: only ``--save-keys`` (default
``meta`` and ``state_dict``) are kept, every weight as a contiguous CPU tensor. The file's
SHA-256 prefix is appended to its name, so a download can be checked against it. The result is
read back as plain ``torch.load(..., weights_only=True)`` reads it, with no allow-list, before it
is written (atomically). With ``--config`` the weights must also fill that config's model
exactly. It serves ``tools/test.py``, ``load_from`` and a backbone's ``init_cfg=dict(
type='Pretrained', checkpoint=FILE, prefix='backbone.')`` alike. (mmengine's checkpoint hook
publishes the last checkpoint when training ends, given ``published_keys``; this tool serves
any checkpoint, after the fact.)
"""
import argparse
import hashlib
import io
import os.path as osp
import re
from typing import Optional, Sequence

import torch

from mux_backbones.cli import ToolError, check_folder_can_be_made, check_output_file, exits_cleanly
from mux_backbones.engine.atomic_backend import atomic_write
from mux_backbones.engine.checkpoint import check_state_dict, read_checkpoint, state_dict_of

HASH_CHARS = 8  # (as OpenMMLab's published files: NAME-xxxxxxxx.pth)


def parse_args():
    parser = argparse.ArgumentParser(description='Make a training checkpoint publishable')
    parser.add_argument('in_file', help='training checkpoint (e.g. work_dirs/RUN/iter_300.pth)')
    parser.add_argument('out_file', help='output name; its SHA-256 prefix is appended')
    parser.add_argument('--save-keys', nargs='+',
                        help='top-level keys to keep, each required (state_dict always); '
                        'default: meta and state_dict, meta where the file has it')
    parser.add_argument('--config', help='check that the weights fill this config\'s model')
    return parser.parse_args()


def publishable(checkpoint: dict, save_keys: Optional[Sequence[str]], source: str) -> dict:
    """The parts of ``checkpoint`` to publish, weights contiguous on CPU.

    Args:
        checkpoint (dict): A training checkpoint, or a bare state dict.
        save_keys (Sequence[str], optional): Top-level keys to keep, each required; None keeps
            ``meta`` where there is one. ``state_dict`` is always kept.
        source (str): What to name in errors.
    """
    state = state_dict_of(checkpoint, source)
    if not isinstance(checkpoint.get('state_dict'), dict):  # a bare state dict
        checkpoint = dict(state_dict=checkpoint)
    if save_keys is None:
        save_keys = [key for key in ('meta', ) if key in checkpoint]
    save_keys = list(dict.fromkeys(list(save_keys) + ['state_dict']))
    missing = [key for key in save_keys if key not in checkpoint]
    if missing:
        raise ToolError(f'--save-keys {missing[0]}: {source} has no such key (it has '
                        f'{", ".join(sorted(checkpoint))})')
    kept = {key: checkpoint[key] for key in save_keys}
    kept['state_dict'] = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return kept


def serialize(kept: dict, source: str) -> bytes:
    """``kept`` as file bytes that plain weights-only loading reads back."""
    for key, value in kept.items():
        try:
            torch.load(io.BytesIO(_saved({key: value})), weights_only=True)
        except Exception as err:  # torch raises several types for refused globals
            reason = re.search(r'Unsupported global: GLOBAL ([\w.]+)', str(err))
            raise ToolError(f'{source}: its "{key}" would not load weights-only (it pickles '
                            f'{reason.group(1) if reason else "an object torch refuses"}); '
                            f'leave it out with --save-keys') from None
    return _saved(kept)


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def hashed_name(out_file: str, data: bytes) -> str:
    """``out_file`` without its ``.pth``, then ``-`` and the data's SHA-256 prefix, ``.pth``."""
    stem = out_file[:-len('.pth')] if out_file.endswith('.pth') else out_file
    return f'{stem}-{hashlib.sha256(data).hexdigest()[:HASH_CHARS]}.pth'


def check_fits_config(state: dict, config: str, source: str) -> None:
    """Refuse weights that do not fill the model of ``config`` exactly, naming the first key."""
    from mux_backbones.cli import build_model_from_config, read_config
    model = build_model_from_config(read_config(config))
    check_state_dict(model.state_dict(), state, source)


@exits_cleanly
def main():
    args = parse_args()
    check_output_file(args.out_file, 'out_file')
    check_folder_can_be_made(osp.dirname(args.out_file) or '.', 'the folder of out_file')
    source = f'checkpoint {args.in_file}'
    raw = read_checkpoint(args.in_file, training_state=True)
    kept = publishable(raw, args.save_keys, source)
    if args.config:
        check_fits_config(kept['state_dict'], args.config, source)
    data = serialize(kept, source)
    out = hashed_name(args.out_file, data)
    check_output_file(out, 'out_file', [(args.in_file, 'the checkpoint itself')])
    atomic_write(data, out)
    dropped = sorted(set(raw) - set(kept)) if isinstance(raw.get('state_dict'), dict) else []
    print(f'published {out}: {len(kept["state_dict"])} tensors, {len(data) / 2**20:.2f} MiB '
          f'(left out: {", ".join(dropped) or "nothing"})')


if __name__ == '__main__':
    main()
