"""mm configs for a searched architecture: SSDLite (detection) or PSPNet/PPM (segmentation).

One function writes the config a candidate is trained with during a search (the ``train``
evaluator) and the config a user exports from the Pareto front (``--export-config``), so what was
evaluated is what gets trained. The config inherits a MUXNet config of the suite and replaces the
arch and the channels the neck and heads read from it.
"""
import os
import os.path as osp
from typing import Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# Per task: the default config to inherit, the backbone outputs the heads read, and how the
# model dict wires them (the same wiring as configs/_base_/models/).
_TASKS = dict(
    det=dict(base='configs/ssd/ssdlite_muxnet-m_1xb8-300it_toyvoc.py', out_indices=(4, 7),
             wiring=('backbone_channels = muxnet_out_channels(arch, (4, 7))\n'
                     'neck_channels = backbone_channels + (512, 256, 256, 128)\n'
                     'model = dict(\n'
                     '    backbone=dict(arch=arch),\n'
                     '    neck=dict(in_channels=backbone_channels, out_channels=neck_channels),\n'
                     '    bbox_head=dict(in_channels=neck_channels))\n')),
    seg=dict(base='configs/pspnet/pspnet_muxnet-m-d8_1xb4-220it_toyade-192x192.py',
             out_indices=(5, 6),
             wiring=('deepsup_channels, fc_dim = muxnet_out_channels(arch, (5, 6))\n'
                     'model = dict(\n'
                     '    backbone=dict(arch=arch),\n'
                     '    decode_head=dict(in_channels=fc_dim),\n'
                     '    auxiliary_head=dict(in_channels=deepsup_channels, '
                     'channels=fc_dim // 4))\n')),
)


def check_task(task: str) -> str:
    """``task`` if known; ``ValueError`` naming the tasks otherwise."""
    if task not in _TASKS:
        raise ValueError(f'unknown task "{task}"; choose one of {sorted(_TASKS)}')
    return task


def candidate_config(arch: str, task: str, out_file: str,
                     base_config: Optional[str] = None) -> str:
    """Text of an mm config training ``arch`` on ``task``, to be written at ``out_file``.

    Args:
        arch (str): An arch string (``MUXNetSpace.arch_string``).
        task (str): ``'det'`` or ``'seg'``.
        out_file (str): Where the config will live (its ``_base_`` is relative to it).
        base_config (str, optional): A MUXNet config of the task to inherit (default: the
            suite's toy config of the task).
    """
    spec = _TASKS[check_task(task)]
    base = osp.abspath(base_config or osp.join(REPO, spec['base']))
    if not osp.isfile(base):
        raise ValueError(f'base config not found: {base}')
    rel = osp.relpath(base, osp.dirname(osp.abspath(out_file)))
    return (f'# A MUXNet found by tools/search/search_muxnet.py, on {osp.basename(base)}.\n'
            f'_base_ = {rel!r}\n'
            'from mux_backbones import muxnet_out_channels  # noqa: E402\n\n'
            f'arch = {arch!r}\n' + spec['wiring'])


def write_candidate_config(arch: str, task: str, out_file: str,
                           base_config: Optional[str] = None) -> str:
    """Write :func:`candidate_config` to ``out_file``; returns the path."""
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    with open(out_file, 'w') as f:
        f.write(candidate_config(arch, task, out_file, base_config))
    return out_file
