# The paper's MobileNetV2 + PPM baseline (35.76 mIoU): the MUXNet-m config with mmseg's dilated
# MobileNetV2 (output stride 8), tapped at its 160- and 320-channel stages as CSAIL's encoder.
_base_ = './pspnet_muxnet-m-d8_4xb4-160k_ade20k-512x512.py'

fc_dim = 320
model = dict(
    backbone=dict(
        _delete_=True,
        type='MobileNetV2',
        widen_factor=1.,
        strides=(1, 2, 2, 1, 1, 1, 1),
        dilations=(1, 1, 1, 2, 2, 4, 4),
        out_indices=(5, 6),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint='mmcls://mobilenet_v2')),
    decode_head=dict(in_channels=fc_dim),
    auxiliary_head=dict(in_channels=160, channels=fc_dim // 4))
