# The toy segmentation schedule with mmseg's runtime, for a CPU run of a few minutes from scratch:
# 220 iterations of AdamW (lr 1e-3, batch 4), 20-iteration warm-up, poly decay; the untrained
# model is evaluated too (EvaluateBeforeTrainHook) so the log has a before/after mIoU.
_base_ = ['mmseg::_base_/schedules/schedule_160k.py', 'mmseg::_base_/default_runtime.py']

max_iters = 220
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=20, end=max_iters, by_epoch=False)
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=130, max_keep_ckpts=2))
custom_hooks = [dict(type='EvaluateBeforeTrainHook')]
randomness = dict(seed=0)
