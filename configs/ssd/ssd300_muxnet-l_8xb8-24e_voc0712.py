# SSD300 + MUXNet-l on PASCAL VOC07+12, the paper's Table 2 row (73.8 mAP, 1.4B MAdds, 9.9M params).
# mmdet's SSD300 VOC0712 recipe; the VGG16 backbone is replaced by MUXNet-l tapped at strides 16 and
# 32, so the six SSD levels are 19, 10, 5, 3, 2, 1 (as SSDLite) with plain (not depth-wise) convs.
_base_ = 'mmdet::pascal_voc/ssd300_voc0712.py'
from mux_backbones import muxnet_out_channels  # noqa: E402

custom_imports = dict(imports=['mux_backbones'], allow_failed_imports=False)
backbone_channels = muxnet_out_channels('l', (4, 7))
neck_channels = backbone_channels + (512, 256, 256, 256)
model = dict(
    # ImageNet normalisation of the MUXNet weights (VGG16 used std 1).
    data_preprocessor=dict(std=[58.395, 57.12, 57.375]),
    backbone=dict(
        _delete_=True,
        type='MUXNet',
        arch='l',
        out_indices=(4, 7),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/muxnet-l_in1k.pth',
                      prefix='backbone.')),
    neck=dict(
        in_channels=backbone_channels,
        out_channels=neck_channels,
        level_strides=(2, 2, 2, 2),
        level_paddings=(1, 1, 1, 1),
        l2_norm_scale=None),
    bbox_head=dict(
        in_channels=neck_channels,
        anchor_generator=dict(
            _delete_=True,
            type='SSDAnchorGenerator',
            scale_major=False,
            input_size=300,
            strides=[16, 32, 64, 100, 150, 300],
            basesize_ratio_range=(0.2, 0.9),
            ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]])))
