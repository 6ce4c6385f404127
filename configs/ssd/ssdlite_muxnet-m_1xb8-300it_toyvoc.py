# SSDLite + MUXNet-m trained from scratch on the embedded toy VOC set (200 trainval / 150 test images
# on real photographs, small, overlapping objects of 4 of the 20 VOC classes): the suite's default
# CPU job (~4.5 minutes on 2 cores). The model keeps all 20 VOC classes, so the stock
# VOCDataset/VOCMetric apply unchanged (VOC mAP averages over the classes that have ground truth).
# Make the data with: python tools/dataset_converters/make_toy_data.py
_base_ = './ssdlite_muxnet-m_8xb24-600e_voc0712.py'

data_root = 'data/toy_voc/VOCdevkit/'
max_iters = 300
# From scratch (no network, no pretrained weights), with the conv init of mmdet's SSDLite scratch
# recipe, as the MobileNetV2 baseline that inherits this file.
model = dict(
    backbone=dict(init_cfg=dict(_delete_=True, type='TruncNormal', layer='Conv2d', std=0.03)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(320, 320), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='VOCDataset',
        data_root=data_root,
        ann_file='VOC2007/ImageSets/Main/trainval.txt',
        data_prefix=dict(sub_data_root='VOC2007/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters, T_max=max_iters - 30,
         eta_min=1e-5)
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(_delete_=True, type='CheckpointHook', by_epoch=False, interval=100,
                    max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(base_batch_size=8)
custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='CheckInvalidLossHook', interval=50, priority='VERY_LOW'),
    dict(type='EvaluateBeforeTrainHook'),  # logs the untrained model's mAP too
    dict(type='ChannelsLastHook')  # NHWC on CPU: depth-wise/grouped convs run much faster
]
randomness = dict(seed=0)
