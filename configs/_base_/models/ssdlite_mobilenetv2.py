# SSDLite + MobileNetV2 1.0, the paper's Table 2 baseline (0.7B MAdds, 3.4M params): mmdet's
# backbone tapped at its 96-ch stride-16 stage and its 1280-ch head conv.
_base_ = './ssdlite.py'

neck_channels = (96, 1280, 512, 256, 256, 128)
model = dict(
    backbone=dict(
        type='MobileNetV2',
        out_indices=(4, 7),
        norm_cfg=_base_.ssdlite_norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://mmdet/mobilenet_v2')),
    neck=dict(in_channels=neck_channels[:2], out_channels=neck_channels),
    bbox_head=dict(in_channels=neck_channels))
