# The toy detection schedule with mmdet's runtime, for a CPU run of a few minutes from scratch:
# 300 iterations of AdamW (lr 1e-3, batch 8), 30-iteration warm-up, cosine decay; the untrained
# model is evaluated too (EvaluateBeforeTrainHook) so the log has a before/after mAP; NHWC on CPU
# (ChannelsLastHook: depth-wise and grouped convs run much faster there).
_base_ = ['mmdet::_base_/schedules/schedule_1x.py', 'mmdet::_base_/default_runtime.py']

max_iters = 300
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters, T_max=max_iters - 30,
         eta_min=1e-5)
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='CheckInvalidLossHook', interval=50, priority='VERY_LOW'),
    dict(type='EvaluateBeforeTrainHook'),
    dict(type='ChannelsLastHook')
]
auto_scale_lr = dict(base_batch_size=8)
randomness = dict(seed=0)
