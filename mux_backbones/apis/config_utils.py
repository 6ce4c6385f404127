"""Shared logic of ``tools/train.py`` and ``tools/test.py`` for mmdet and mmseg configs.

The tools stay thin (Config -> --cfg-options -> Runner.from_cfg, as in mmdet/mmseg); what differs
between detection and segmentation (visualisation, result dumping, sanity checks of the config)
is dispatched here on the config's ``default_scope``.
"""
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config


def add_runner_args(parser) -> None:
    """Arguments ``tools/train.py`` and ``tools/test.py`` share (as mmdet's/mmseg's tools)."""
    from mmengine.config import DictAction
    parser.add_argument('--work-dir', help='the dir to save logs, models and metrics')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, as key=value pairs')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(path: str, args) -> Config:
    """Read a config, apply ``--launcher`` and ``--cfg-options``; exits if the file is missing."""
    if not osp.isfile(path):
        raise SystemExit(f'config file not found: {path}')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(path)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    ensure_custom_imports(cfg)
    set_work_dir(cfg, args.work_dir)
    return cfg


def task_of(cfg: Config) -> str:
    """``'det'`` or ``'seg'``, from the config's default scope."""
    scope = cfg.get('default_scope', None)
    if scope == 'mmdet':
        return 'det'
    if scope == 'mmseg':
        return 'seg'
    raise ValueError(f'config {cfg.filename}: default_scope is {scope!r}; expected an mmdet '
                     f'("mmdet") or mmseg ("mmseg") config')


def ensure_custom_imports(cfg: Config) -> None:
    """Make sure the config imports ``mux_backbones`` so MUXNet and the fixes are registered."""
    imports = cfg.get('custom_imports', None) or dict(imports=[], allow_failed_imports=False)
    names = list(imports.get('imports', []))
    if 'mux_backbones' not in names:
        names.append('mux_backbones')
    imports['imports'] = names
    cfg.custom_imports = imports


def set_work_dir(cfg: Config, work_dir: Optional[str]) -> None:
    """``--work-dir`` wins, then the config's ``work_dir``, then ``work_dirs/<config name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(cfg.filename))[0])


def build_model_from_config(cfg: Config):
    """Build ``cfg.model`` in the config's scope without loading pretrained backbone weights.

    For analysis tools (MAdds, benchmarks, export) that need the architecture, not the weights.
    """
    from mmengine.registry import DefaultScope
    if task_of(cfg) == 'det':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    model_cfg = cfg.model
    model_cfg.pop('pretrained', None)
    model_cfg.backbone['init_cfg'] = None
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(model_cfg)


def _iter_dicts(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _iter_dicts(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _iter_dicts(v)


def check_segmentation_config(cfg: Config) -> None:
    """Reject crop sizes the network's output stride cannot handle, with the setting named.

    A crop must give the deepest feature map at least one pixel per bin of the coarsest pooling
    (PPM) level and at least 2x2 pixels otherwise.
    """
    crop = cfg.get('crop_size', None)
    model = cfg.get('model', {})
    backbone = model.get('backbone', {})
    if crop is None or backbone.get('type') != 'MUXNet':
        return
    output_stride = backbone.get('output_stride') or 32
    if backbone.get('strides') is not None:
        output_stride = 2
        for s in backbone['strides']:
            output_stride *= s
    pool_scales = model.get('decode_head', {}).get('pool_scales', (2, ))
    need = output_stride * max(max(pool_scales), 2)
    crop = (crop, crop) if isinstance(crop, int) else tuple(crop)
    if len(crop) != 2 or min(crop) < need:
        raise ValueError(f'crop_size={crop} is too small for output stride {output_stride} '
                         f'(decode head pool scales {tuple(pool_scales)}): each side must be at '
                         f'least {need} pixels')
    for d in _iter_dicts(cfg.get('train_dataloader', {})):
        if d.get('type') == 'RandomCrop' and 'crop_size' in d:
            c = d['crop_size']
            c = (c, c) if isinstance(c, int) else tuple(c)
            if min(c) < need:
                raise ValueError(f'train pipeline RandomCrop crop_size={c} is too small for '
                                 f'output stride {output_stride}: each side must be >= {need}')


def enable_visualization(cfg: Config, show_dir: Optional[str], show: bool = False,
                         wait_time: float = 2.0) -> None:
    """Turn on the visualization hook so predictions are drawn over the test images."""
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise ValueError('the config has no "visualization" hook in default_hooks')
    vis = hooks['visualization']
    vis['draw'] = True
    if task_of(cfg) == 'det':
        if show_dir:
            vis['test_out_dir'] = show_dir
        vis['show'] = show
        vis['wait_time'] = wait_time
    else:
        vis['interval'] = 1
        vis['show'] = show
        vis['wait_time'] = wait_time
        if show_dir:
            cfg.visualizer['save_dir'] = show_dir
            cfg.visualizer['vis_backends'] = [dict(type='LocalVisBackend')]


def insert_seg_map_validation(cfg: Config) -> None:
    """Insert ``ValidateSegMap`` after every ``LoadAnnotations`` of the segmentation loaders."""
    num_classes = cfg.get('model', {}).get('decode_head', {}).get('num_classes', 150)
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader', None)
        if not loader:
            continue
        for ds in _iter_dicts(loader.get('dataset', {})):
            pipeline = ds.get('pipeline')
            if not isinstance(pipeline, list):
                continue
            types = [t.get('type') for t in pipeline if isinstance(t, dict)]
            if 'ValidateSegMap' in types or 'LoadAnnotations' not in types:
                continue
            at = types.index('LoadAnnotations') + 1
            pipeline.insert(at, dict(type='ValidateSegMap', num_classes=num_classes))
