# SSDLite + MUXNet-m on PASCAL VOC07+12 (320x320), the paper's Table 2 row (68.6 mAP, 0.5B MAdds,
# 3.2M params). Identical to the MobileNetV2 baseline but for the backbone.
_base_ = './ssdlite_mobilenetv2_8xb24-600e_voc0712.py'
from mux_backbones import muxnet_out_channels  # noqa: E402

custom_imports = dict(imports=['mux_backbones'], allow_failed_imports=False)
# Stride-16 map (end of stage 5, 112 ch) and the 1x1 head conv (1280 ch), as MobileNetV2's (4, 7).
backbone_channels = muxnet_out_channels('m', (4, 7))
neck_channels = backbone_channels + (512, 256, 256, 128)
model = dict(
    backbone=dict(
        _delete_=True,
        type='MUXNet',
        arch='m',
        out_indices=(4, 7),
        norm_cfg=dict(type='BN', eps=0.001, momentum=0.03),
        # Made by tools/model_converters/muxnet_official_to_mmengine.py from the official release.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/muxnet-m_in1k.pth',
                      prefix='backbone.')),
    neck=dict(in_channels=backbone_channels, out_channels=neck_channels),
    bbox_head=dict(in_channels=neck_channels))
