"""Objectives of the MUXNet search (MUXConv paper, Sec. 4): accuracy up, parameters and MAdds down,
and, beyond the paper, the latency measured on the device the search runs on.

* ``params`` and ``madds``: exact, the project's own counters on the ImageNet classifier at
  224x224, the way the paper's and ``tools/analysis_tools/get_flops.py``'s figures are counted.
* ``latency``: median milliseconds of the backbone in deploy mode (channels-last) per batch
  size, on the current device.
* ``acc``: a score from a pluggable evaluator (``EVALUATORS``):

  - ``train``: a short training from an mm config through the suite's own runner, scored by the
    config's metric (the embedded toy detection set with SSDLite and VOC mAP by default;
    segmentation with the PPM head and mIoU with ``task='seg'``);
  - ``synflow``: a zero-cost score (SynFlow, Tanaka et al., NeurIPS 2020, used as a NAS proxy by
    Abdelfattah et al., ICLR 2021): the log of the summed synaptic saliency of the untrained net,
    seconds per architecture, for budgets training cannot afford.

Every evaluator is a plain callable ``arch string -> float`` (picklable, so an executor can run it
in another process or on a Ray cluster). Results are cached by the search, keyed by the arch.
"""
import hashlib
import math
import os
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple

import torch

from ..backbones.stage_plan import check_out_indices
from ..utils.arguments import check_positive_int

OBJECTIVES = ('acc', 'params', 'madds', 'latency')


def arch_hash(arch: str) -> str:
    """Short stable key of an arch string (cache keys, work-dir names)."""
    return hashlib.sha1(arch.encode()).hexdigest()[:12]


def complexity(arch: str) -> Tuple[float, float]:
    """(params in millions, MAdds in millions) of the arch's ImageNet classifier at 224x224."""
    from ..models import MUXNetClassifier
    from ..utils import count_macs, count_params
    with torch.device('meta'):  # shapes only: counting needs no weights and no arithmetic
        model = MUXNetClassifier(arch)
    return count_params(model) / 1e6, count_macs(model, (1, 3, 224, 224)) / 1e6


def measure_latency(arch: str, device: str = 'cpu', batch_sizes: Sequence[int] = (1, ),
                    shape: int = 224, warmup: int = 3, runs: int = 10) -> Dict[int, float]:
    """Median latency (ms) of the backbone in deploy mode per batch size, on ``device``."""
    from ..backbones import MUXNet
    from ..deploy import switch_to_deploy
    from ..utils.timing import time_forward
    dev = torch.device(device)
    model = switch_to_deploy(MUXNet(arch, out_indices=(7, )).to(dev), channels_last=True)
    out = {}
    for batch in batch_sizes:
        x = torch.randn(batch, 3, shape, shape, device=dev).contiguous(
            memory_format=torch.channels_last)
        out[batch] = time_forward(model, x, dev, warmup, runs).median_ms
    return out


class SynflowEvaluator:
    """Zero-cost accuracy proxy: log SynFlow score of the untrained backbone (higher is better).

    Args:
        shape (int): Input side. Default: 64.
        out_indices (Sequence[int]): Backbone outputs whose sum is the objective R.
            Default: (7, ), the head conv.
    """

    name = 'synflow'
    cheap = True  # seconds per arch: the plot scores the released MUXNets with it too

    def __init__(self, shape: int = 64, out_indices: Sequence[int] = (7, )):
        self.shape = check_positive_int('SynflowEvaluator', 'shape', shape)
        self.out_indices = check_out_indices(out_indices)

    def __call__(self, arch: str) -> float:
        from ..backbones import MUXNet
        torch.manual_seed(0)
        # Float64 and |weights| on an all-ones input: the score is the summed saliency
        # |theta * dR/dtheta| with no sign cancellation; BN in eval mode acts as an affine map.
        model = MUXNet(arch, out_indices=self.out_indices).double().eval()
        with torch.no_grad():
            for p in model.parameters():
                p.abs_()
        x = torch.ones(1, 3, self.shape, self.shape, dtype=torch.float64)
        sum(o.sum() for o in model(x)).backward()
        score = sum((p * p.grad).abs().sum() for p in model.parameters()
                    if p.grad is not None).item()
        return math.log(score) if score > 0 else float('-inf')


class TrainEvaluator:
    """Accuracy of a short training run of the arch, through the suite's own runner.

    Args:
        task (str): ``'det'`` (SSDLite, VOC mAP) or ``'seg'`` (PPM head, mIoU).
        base_config (str, optional): The mm config the candidate configs inherit (see
            :func:`~mux_backbones.search.export.candidate_config`; default: the toy config of
            the task).
        work_root (str): Folder of the candidates' run folders. Default: ``work_dirs/search``.
        max_iters (int, optional): Training iterations (default: the config's).
        metric (str, optional): Metric key (default: ``pascal_voc/mAP`` / ``mIoU``).
        seed (int): Training seed. Default: 0.
        cfg_options (dict, optional): More config overrides, as ``--cfg-options`` takes them.
    """

    name = 'train'
    cheap = False
    _METRICS = dict(det='pascal_voc/mAP', seg='mIoU')

    def __init__(self, task: str = 'det', base_config: Optional[str] = None,
                 work_root: str = 'work_dirs/search', max_iters: Optional[int] = None,
                 metric: Optional[str] = None, seed: int = 0,
                 cfg_options: Optional[dict] = None):
        from .export import check_task
        self.task = check_task(task)
        self.base_config = base_config
        self.work_root = work_root
        self.max_iters = max_iters
        self.metric = metric or self._METRICS[task]
        self.seed = seed
        self.cfg_options = dict(cfg_options or {})

    def __call__(self, arch: str) -> float:
        from mmengine.config import Config
        from mmengine.runner import Runner

        from ..cli import ensure_custom_imports
        from .export import write_candidate_config
        work_dir = osp.join(self.work_root, arch_hash(arch))
        cfg = Config.fromfile(write_candidate_config(
            arch, self.task, osp.join(work_dir, 'candidate.py'), self.base_config))
        ensure_custom_imports(cfg)
        if self.max_iters:
            cfg.train_cfg.max_iters = self.max_iters
        # Evaluate once, after training; keep the log quiet and the folder small.
        cfg.train_cfg.val_interval = cfg.train_cfg.max_iters + 1
        cfg.custom_hooks = [h for h in cfg.get('custom_hooks', [])
                            if h.get('type') != 'EvaluateBeforeTrainHook']
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1)
        cfg.randomness = dict(seed=self.seed)
        cfg.work_dir = work_dir
        cfg.log_level = 'WARNING'
        cfg.merge_from_dict(self.cfg_options)
        runner = Runner.from_cfg(cfg)
        runner.train()
        metrics = runner.val_loop.run()
        if self.metric not in metrics:
            raise KeyError(f'metric "{self.metric}" not in the evaluation {sorted(metrics)}')
        score = float(metrics[self.metric])
        return score / 100 if self.metric in ('mIoU', 'mAcc', 'aAcc') else score


EVALUATORS = dict(train=TrainEvaluator, synflow=SynflowEvaluator)


def build_evaluator(cfg: dict):
    """An evaluator from ``dict(type=<name>, **kwargs)``; ``ValueError`` naming unknown types."""
    cfg = dict(cfg)
    kind = cfg.pop('type', None)
    if kind not in EVALUATORS:
        raise ValueError(f'unknown evaluator "{kind}"; choose one of {sorted(EVALUATORS)}')
    return EVALUATORS[kind](**cfg)


def check_objectives(objectives: Sequence[str]) -> Tuple[str, ...]:
    """The objectives as a tuple; ``ValueError`` naming an unknown or repeated one."""
    objectives = tuple(objectives)
    for name in objectives:
        if name not in OBJECTIVES:
            raise ValueError(f'unknown objective "{name}"; choose from {OBJECTIVES}')
    if len(set(objectives)) != len(objectives) or len(objectives) < 2:
        raise ValueError(f'objectives must be at least two distinct names, got {objectives}')
    return objectives


def default_workers() -> int:
    """Local evaluation processes: one per two cores (torch already uses two threads each)."""
    return max(1, (os.cpu_count() or 2) // 2)
