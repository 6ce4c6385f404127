# The MobileNetV2 + SSDLite baseline on the embedded toy VOC set, on exactly the schedule of the
# MUXNet-m toy config it inherits: compare the two mAPs side by side.
_base_ = './ssdlite_muxnet-m_1xb8-300it_toyvoc.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='MobileNetV2',
        out_indices=(4, 7),
        norm_cfg=dict(type='BN', eps=0.001, momentum=0.03),
        init_cfg=dict(type='TruncNormal', layer='Conv2d', std=0.03)),
    neck=dict(in_channels=(96, 1280), out_channels=(96, 1280, 512, 256, 256, 128)),
    bbox_head=dict(in_channels=(96, 1280, 512, 256, 256, 128)))
