# The embedded toy VOC set (200 trainval / 150 test images on real photographs, small, overlapping
# objects of 4 of the 20 VOC classes), read by the stock VOCDataset/VOCMetric at 320x320.
# Make it with: python tools/dataset_converters/make_toy_data.py
_base_ = './voc0712_ssd320.py'

data_root = 'data/toy_voc/VOCdevkit/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(320, 320), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
loader = dict(batch_size=8, num_workers=2, persistent_workers=True)
train_dataloader = dict(
    **loader,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='VOCDataset',
        data_root=data_root,
        ann_file='VOC2007/ImageSets/Main/trainval.txt',
        data_prefix=dict(sub_data_root='VOC2007/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(**loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
