# PASCAL VOC07+12 trainval / VOC07 test at 320x320 with SSD's augmentation (expand, min-IoU crop,
# photometric distortion), 5 repeats of the training set per epoch (mmdet's SSDLite recipe's
# "600e" = 120 epochs x 5), VOC07 11-point mAP at IoU 0.5.
_base_ = 'mmdet::_base_/datasets/voc0712.py'

input_size = 320
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Expand', mean=[123.675, 116.28, 103.53], to_rgb=True, ratio_range=(1, 4)),
    dict(type='MinIoURandomCrop', min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5),
         saturation_range=(0.5, 1.5), hue_delta=18),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
voc_subset = dict(type='VOCDataset', data_root=_base_.data_root,
                  filter_cfg=dict(filter_empty_gt=True, min_size=32), pipeline=train_pipeline)
train_dataloader = dict(
    batch_size=24,
    num_workers=4,
    batch_sampler=None,  # fixed-size inputs: no aspect-ratio grouping
    dataset=dict(
        times=5,
        dataset=dict(datasets=[
            dict(**voc_subset, ann_file='VOC2007/ImageSets/Main/trainval.txt',
                 data_prefix=dict(sub_data_root='VOC2007/')),
            dict(**voc_subset, ann_file='VOC2012/ImageSets/Main/trainval.txt',
                 data_prefix=dict(sub_data_root='VOC2012/')),
        ])))
val_dataloader = dict(batch_size=8, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# Test-time augmentation (tools/test.py --tta): each image as is and flipped, the boxes of both
# views merged by NMS. The flip comes before the annotations are read and the unflipped view
# first, because DetTTAModel keeps the first view's ground truth for VOCMetric.
tta_model = dict(type='DetTTAModel',
                 tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.45), max_per_img=200))
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(input_size, input_size), keep_ratio=False)],
        [dict(type='RandomFlip', prob=0.), dict(type='RandomFlip', prob=1.)],
        [dict(type='LoadAnnotations', with_bbox=True)],
        [dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                               'scale_factor', 'flip', 'flip_direction'))],
    ])
]
