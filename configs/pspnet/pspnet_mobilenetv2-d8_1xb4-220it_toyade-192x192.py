# The MobileNetV2 + PPM baseline on the embedded toy ADE20K set, on exactly the schedule of the
# MUXNet-m toy config it inherits: compare the two mIoUs side by side.
_base_ = './pspnet_muxnet-m-d8_1xb4-220it_toyade-192x192.py'

fc_dim = 320
model = dict(
    backbone=dict(
        _delete_=True,
        type='MobileNetV2',
        widen_factor=1.,
        strides=(1, 2, 2, 1, 1, 1, 1),
        dilations=(1, 1, 1, 2, 2, 4, 4),
        out_indices=(5, 6),
        norm_cfg=dict(type='BN', requires_grad=True)),
    decode_head=dict(in_channels=fc_dim),
    auxiliary_head=dict(in_channels=160, channels=fc_dim // 4))
