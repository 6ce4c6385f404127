"""Config plumbing of the tools, for mmdet and mmseg configs alike.

The tools stay thin (Config -> --cfg-options -> Runner.from_cfg, as in mmdet/mmseg); what differs
between detection and segmentation (visualisation, result dumping) is dispatched here on the
config's ``default_scope``. Also here: the config changes a tool makes on the user's behalf
(atomic checkpoint writes, visualisation), the checks of a distributed launcher's needs, of a
MUXNet backbone's arguments, of the channels its neck or heads read and of the dataloaders'
sizes before a runner builds the model, and the exact check of a checkpoint against the model
a runner built.
"""
import copy
import inspect
import os
import os.path as osp
import sys
from typing import Optional

from mmengine.config import Config

from ..engine.atomic_backend import BACKEND_NAME
from ..engine.checkpoint import check_state_dict, read_checkpoint, state_dict_of
from ..utils.arguments import is_int
from .args import ToolError


def load_config(path: str, args) -> Config:
    """Read a config, apply ``--launcher`` and ``--cfg-options``; exits if the file is missing."""
    if not osp.isfile(path):
        raise ToolError(f'config file not found: {path}')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    check_launcher(args.launcher)
    cfg = Config.fromfile(path)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    ensure_custom_imports(cfg)
    check_backbone_arguments(cfg)
    check_dataloaders(cfg)
    set_work_dir(cfg, args.work_dir)
    return cfg


def read_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config for a tool without a runner: ``--cfg-options`` applied, ``mux_backbones``
    among its imports; a missing file ends in one line."""
    if not osp.isfile(path):
        raise ToolError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    ensure_custom_imports(cfg)
    return cfg


_DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def check_dataloaders(cfg: Config) -> None:
    """A dataloader's ``batch_size`` and ``num_workers``, checked in one line before the runner.

    torch's ``DataLoader`` refuses a batch size below 1, a negative worker count and
    ``persistent_workers`` without workers with a ValueError from deep inside the runner. The
    last one is what ``--cfg-options train_dataloader.num_workers=0`` (workers off, to debug)
    meets in every mmdet/mmseg config, which keep their workers alive: there is nothing to keep
    alive then, so ``persistent_workers`` is turned off with a note instead.
    """
    for name in _DATALOADERS:
        loader = cfg.get(name, None)
        if not isinstance(loader, dict):
            continue
        batch, workers = loader.get('batch_size', 1), loader.get('num_workers', 0)
        if not is_int(batch) or batch < 1:
            raise ToolError(f'{name}.batch_size must be a positive integer, got {batch!r}')
        if not is_int(workers) or workers < 0:
            raise ToolError(f'{name}.num_workers must be an integer >= 0, got {workers!r}')
        if workers == 0 and loader.get('persistent_workers', False):
            loader['persistent_workers'] = False
            print(f'note: {name}.num_workers is 0, so its persistent_workers is turned off '
                  f'(there are no workers to keep alive)')


def check_launcher(launcher: str) -> None:
    """A distributed launcher's needs, named in one line before mmengine's ``init_dist``.

    mmengine 0.10.7 binds each process to an accelerator (``torch.cuda.set_device(local_rank)``
    on CUDA machines) and wraps the model in DDP with that device: without one, each process
    ends in a traceback from inside torch, and so does a rank with no GPU of its own.
    """
    if launcher == 'none':
        return
    import torch
    from mmengine.device import get_device
    device = get_device()
    if device in ('cpu', 'mps'):
        raise ToolError(f'--launcher {launcher} needs one GPU per process and torch sees none '
                        f'({device} only): run the tool without --launcher')
    if launcher != 'pytorch':
        return
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        raise ToolError('--launcher pytorch: RANK and WORLD_SIZE are not set; start the tool '
                        'with torchrun (tools/dist_train.sh, tools/dist_test.sh)')
    local_rank = int(os.environ['LOCAL_RANK'])
    if device == 'cuda' and local_rank >= torch.cuda.device_count():
        raise ToolError(f'--launcher pytorch: local rank {local_rank} has no GPU (this node has '
                        f'{torch.cuda.device_count()}): start at most that many processes per '
                        'node')


def check_amp_device(cfg: Config) -> None:
    """mmengine's ``AmpOptimWrapper`` (``--amp``) asserts an accelerator when it is built, deep
    in the runner: named here in one line instead, on a machine with none."""
    wrapper = cfg.get('optim_wrapper', None) or {}
    if wrapper.get('type') not in ('AmpOptimWrapper', 'mmengine.AmpOptimWrapper'):
        return
    from mmengine.device import get_device
    if get_device() in ('cpu', 'mps'):
        raise ToolError('optim_wrapper AmpOptimWrapper (--amp) trains on a GPU only (mmengine '
                        'asserts one): train without --amp here, or set optim_wrapper.type='
                        'OptimWrapper')


def check_backbone_arguments(cfg: Config) -> None:
    """Build a MUXNet ``model.backbone`` alone first, so a bad argument ends in one line.

    The runner builds the model deep inside mmengine's registry, where MUXNet's ``ValueError``
    (which names the argument) would arrive under a long traceback; an unknown key would end in
    a bare ``TypeError``. Other backbones are left to their own builders.
    """
    from ..backbones import MUXNet
    model = cfg.get('model', None)
    backbone = model.get('backbone', None) if isinstance(model, dict) else None
    if backbone is not None and not isinstance(backbone, dict):  # the registry's TypeError
        raise ToolError(f'model.backbone must be a dict such as dict(type=\'MUXNet\', '
                        f'arch=\'m\'), got {backbone!r}')
    if backbone is None:
        return
    kind = backbone.get('type', None)
    named = isinstance(kind, str) and kind.rpartition('.')[2] == MUXNet.__name__
    if not (named or isinstance(kind, type) and issubclass(kind, MUXNet)):
        return
    cls = kind if isinstance(kind, type) else MUXNet
    args = {key: value for key, value in backbone.items() if key != 'type'}
    try:
        inspect.signature(cls).bind(**args)
    except TypeError as err:  # an argument MUXNet does not have
        raise ToolError(f'model.backbone: {err}') from None
    try:
        backbone = cls(**args)
    except ValueError as err:
        raise ToolError(f'model.backbone: {err}') from None
    check_channels_read(model, tuple(backbone.out_channels), backbone.out_indices)


def check_channels_read(model: dict, channels: tuple, out_indices: tuple) -> None:
    """The neck's (or the decode heads') ``in_channels`` against the backbone's outputs.

    A config computes them when it is read (``muxnet_out_channels``), so a ``--cfg-options``
    change of the backbone's ``out_indices`` or ``widen_factor`` leaves them stale, and the
    first training step would end in a conv's channel error inside the neck.
    """
    fix = (f'the backbone gives {channels} at out_indices {out_indices}; compute them with '
           f'mux_backbones.muxnet_out_channels(arch, out_indices, widen_factor), as the '
           f'shipped configs do')
    neck = model.get('neck', None)
    if isinstance(neck, dict) and isinstance(neck.get('in_channels', None), (list, tuple)):
        if tuple(neck['in_channels']) != channels:
            raise ToolError(f'model.neck.in_channels {tuple(neck["in_channels"])}: {fix}')
        return
    if neck is not None:
        return  # a neck of another kind, or a chain of necks: their own business
    for key in ('decode_head', 'auxiliary_head'):
        heads = model.get(key, None)
        for i, head in enumerate(heads if isinstance(heads, (list, tuple)) else [heads]):
            if not isinstance(head, dict) or 'in_channels' not in head:
                continue
            name = key if isinstance(heads, dict) else f'{key}[{i}]'
            index, given = head.get('in_index', -1), head['in_channels']
            indices = list(index) if isinstance(index, (list, tuple)) else [index]
            if not all(isinstance(j, int) and -len(channels) <= j < len(channels)
                       for j in indices):
                raise ToolError(f'model.{name}.in_index {index} reads outside the '
                                f'{len(channels)} backbone outputs; {fix}')
            read = [channels[j] for j in indices]
            if list(given if isinstance(given, (list, tuple)) else [given]) != read:
                raise ToolError(f'model.{name}.in_channels {given} at in_index {index}: {fix}')


def task_of(cfg: Config) -> str:
    """``'det'`` or ``'seg'``, from the config's default scope."""
    scope = cfg.get('default_scope', None)
    if scope == 'mmdet':
        return 'det'
    if scope == 'mmseg':
        return 'seg'
    raise ToolError(f'config {cfg.filename}: default_scope is {scope!r}; expected an mmdet '
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
    """``--work-dir`` wins, then the config's ``work_dir``, then ``work_dirs/<config name>``; a
    path that cannot be a folder ends in one line."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(cfg.filename))[0])
    check_folder_can_be_made(cfg.work_dir, 'work_dir')


def check_folder_can_be_made(path: str, what: str) -> None:
    """One line where ``path`` cannot become a folder (it, or a folder above it, is a file, or
    the nearest existing folder is not writable). Nothing is made: a tool writes nothing before
    its inputs are known good, and the runner makes the folder itself, deep in its set-up,
    where such an error would be a traceback."""
    existing = osp.abspath(path)
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        raise ToolError(f'{what} {path} cannot be made: {existing} is a file')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ToolError(f'{what} {path} cannot be made: {existing} is not writable')


def build_model_from_config(cfg: Config):
    """Build ``cfg.model`` in the config's scope without loading pretrained backbone weights.

    For analysis tools (MAdds, benchmarks, export) that need the architecture, not the weights.
    """
    from mmengine.registry import DefaultScope
    if task_of(cfg) == 'det':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    check_backbone_arguments(cfg)
    model_cfg = cfg.model
    model_cfg.pop('pretrained', None)
    model_cfg.backbone['init_cfg'] = None
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(model_cfg)


def enable_visualization(cfg: Config, show_dir: Optional[str], show: bool = False,
                         wait_time: float = 2.0) -> None:
    """Turn on the visualization hook so predictions are drawn over the test images."""
    if show and sys.platform.startswith('linux') and not (os.environ.get('DISPLAY') or
                                                          os.environ.get('WAYLAND_DISPLAY')):
        # found otherwise at the first image, after the model is built (an OpenCV/Qt abort)
        raise ToolError('--show needs a display and this session has none (DISPLAY is not '
                        'set): use --show-dir DIR to save the drawings instead')
    if show_dir and osp.exists(show_dir) and not osp.isdir(show_dir):
        raise ToolError(f'--show-dir {show_dir} is a file: give a folder to save the drawings in')
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise ToolError('the config has no "visualization" hook in default_hooks')
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


# What mmdet's test tool puts in for a detection config without its own test-time augmentation:
# each image's boxes from all its views merged by NMS.
_DET_TTA_MODEL = dict(type='DetTTAModel',
                      tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))


def use_test_time_augmentation(cfg: Config) -> None:
    """``--tta``: the config's ``tta_model`` wraps its model and its ``tta_pipeline`` replaces the
    test pipeline, as mmdet's and mmseg's test tools do.

    mmseg's dataset and runtime bases define both (six scales, each with and without a flip);
    this suite's VOC bases define a flip. A detection config without them gets mmdet's
    default: ``DetTTAModel`` over the test pipeline with and without a horizontal flip. A
    segmentation config without them is refused in one line (mmseg's tool: a KeyError).
    """
    from ..datasets import leaf_datasets
    task = task_of(cfg)
    datasets = list(leaf_datasets(cfg.test_dataloader.dataset))
    if task == 'det':
        if 'tta_model' not in cfg:
            cfg.tta_model = copy.deepcopy(_DET_TTA_MODEL)
        if 'tta_pipeline' not in cfg:
            cfg.tta_pipeline = flip_views(datasets[0].pipeline)
    missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
    if missing:
        raise ToolError(f'--tta needs {" and ".join(missing)} in the config (mmseg\'s dataset '
                        f'bases define tta_pipeline, its default_runtime tta_model)')
    for dataset in datasets:
        dataset.pipeline = copy.deepcopy(cfg.tta_pipeline)
    cfg.model = dict(**cfg.tta_model, module=cfg.model)


def flip_views(pipeline: list) -> list:
    """A detection test pipeline run on each image as it is and flipped horizontally.

    The flip goes before the annotations are loaded, and the unflipped view comes first:
    ``DetTTAModel`` maps every view's boxes back to the image but keeps the first view's data
    sample, whose ground truth a VOC metric reads (mmdet's own default flips the loaded boxes
    and puts the flipped view first). The packer keeps the flip in each view's meta data.
    """
    types = [t.get('type') if isinstance(t, dict) else None for t in pipeline]
    if not types or not str(types[-1]).endswith('PackDetInputs'):
        raise ToolError('--tta: the test pipeline does not end in PackDetInputs; give the '
                        'config a tta_pipeline')
    at = types.index('LoadAnnotations') if 'LoadAnnotations' in types else len(types) - 1
    pack = copy.deepcopy(pipeline[-1])
    if 'meta_keys' in pack:  # (PackDetInputs' default keys hold the flip)
        pack['meta_keys'] = tuple(pack['meta_keys']) + tuple(
            key for key in ('flip', 'flip_direction') if key not in pack['meta_keys'])
    views = [[dict(type='RandomFlip', prob=0.), dict(type='RandomFlip', prob=1.)]]
    views += [[copy.deepcopy(t)] for t in pipeline[at:-1]] + [[pack]]
    return copy.deepcopy(pipeline[:at]) + [dict(type='TestTimeAug', transforms=views)]


def use_atomic_checkpoints(cfg: Config) -> bool:
    """Have the checkpoint hook write through the ``atomic_local`` backend.

    Only where the config chose no storage backend itself (``backend_args``/``file_client_args``
    or an ``out_dir`` on remote storage). Returns whether it did.
    """
    hook = cfg.get('default_hooks', {}).get('checkpoint')
    if not hook or hook.get('backend_args') or hook.get('file_client_args') or \
            '://' in str(hook.get('out_dir') or ''):
        return False
    hook['backend_args'] = dict(backend=BACKEND_NAME)
    return True


def verify_checkpoint(model, path: str) -> dict:
    """Refuse a checkpoint that does not fill ``model`` exactly (or cannot be read), in one line.

    mmengine's runner loads ``load_from`` and resumes non-strictly: another model's weights
    evaluate as an ordinary, wrong result behind one warning. The tools call this first.

    Returns:
        dict: The checkpoint as read.
    """
    from mmengine.model import BaseTTAModel, is_model_wrapper
    model = model.module if is_model_wrapper(model) else model
    model = model.module if isinstance(model, BaseTTAModel) else model  # (as mmengine loads it)
    checkpoint = read_checkpoint(path, training_state=True)
    check_state_dict(model.state_dict(), state_dict_of(checkpoint, f'checkpoint {path}'),
                     f'checkpoint {path}')
    return checkpoint


def _schedule_length(cfg: Config):
    """``(unit, key, length)`` of the config's training loop: ``('iter', 'max_iters', N)`` or
    ``('epoch', 'max_epochs', N)``, N None where the config sets none."""
    train = cfg.get('train_cfg', None) or {}
    loop = train.get('type', '')
    by_epoch = train.get('by_epoch', 'max_epochs' in train) or \
        getattr(loop, '__name__', str(loop)).endswith('EpochBasedTrainLoop')
    key = 'max_epochs' if by_epoch else 'max_iters'
    return ('epoch' if by_epoch else 'iter'), key, train.get(key, None)


def check_schedule_length(cfg: Config) -> None:
    """A training schedule of no iterations or epochs trains nothing and says nothing (mmengine's
    loop ends at once): refused in one line instead."""
    _, key, length = _schedule_length(cfg)
    if length is not None and (not is_int(length) or length < 1):
        raise ToolError(f'train_cfg.{key} must be a positive integer, got {length!r}')


def finished_schedule_note(cfg: Config, checkpoint: dict) -> Optional[str]:
    """A note where a checkpoint to resume from has trained the whole schedule already.

    mmengine then advances its loop to the end and stops without a word; the checkpoint's
    ``meta`` holds the epoch and iteration it was saved at.
    """
    unit, key, length = _schedule_length(cfg)
    done = (checkpoint.get('meta') or {}).get(unit, None) if isinstance(checkpoint, dict) else None
    if not is_int(length) or not is_int(done) or done < length:
        return None
    return (f'note: the checkpoint resumed from was saved at {unit} {done} and train_cfg.{key} '
            f'is {length}: there is nothing left to train (raise train_cfg.{key} to train on)')
