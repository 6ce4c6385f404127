# SSDLite + MobileNetV2 on PASCAL VOC07+12 (320x320): the paper's baseline (Table 2, 67.4 mAP),
# on exactly the schedule of the MUXNet-m config that inherits from this file.
# mmdet's COCO SSDLite recipe (model, 120 epochs x RepeatDataset 5 = "600e", cosine LR) with the
# VOC0712 data of mmdet::pascal_voc/ssd300_voc0712.py resized to 320.
_base_ = 'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'

model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://mmdet/mobilenet_v2')),
    bbox_head=dict(num_classes=20))

dataset_type = 'VOCDataset'
data_root = 'data/VOCdevkit/'
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
voc_subset = dict(type=dataset_type, data_root=data_root,
                  filter_cfg=dict(filter_empty_gt=True, min_size=32), pipeline=train_pipeline)
train_dataloader = dict(
    batch_size=24,
    num_workers=4,
    dataset=dict(
        _delete_=True,
        type='RepeatDataset',
        times=5,
        dataset=dict(
            type='ConcatDataset',
            # VOCDataset adds `dataset_type` to its metainfo, which ConcatDataset would reject.
            ignore_keys=['dataset_type'],
            datasets=[
                dict(**voc_subset, ann_file='VOC2007/ImageSets/Main/trainval.txt',
                     data_prefix=dict(sub_data_root='VOC2007/')),
                dict(**voc_subset, ann_file='VOC2012/ImageSets/Main/trainval.txt',
                     data_prefix=dict(sub_data_root='VOC2012/')),
            ])))
val_dataloader = dict(
    batch_size=8,
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='VOC2007/ImageSets/Main/test.txt',
        data_prefix=dict(sub_data_root='VOC2007/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# VOC07 test protocol: 11-point AP at IoU 0.5.
val_evaluator = dict(_delete_=True, type='VOCMetric', metric='mAP', eval_mode='11points')
test_evaluator = val_evaluator

default_hooks = dict(checkpoint=dict(interval=5, max_keep_ckpts=3, save_best='auto'))
custom_imports = dict(imports=['mux_backbones'], allow_failed_imports=False)
