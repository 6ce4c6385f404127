# The paper's MobileNetV2 + C1 baseline (34.84 mIoU), on the schedule of the MUXNet-m C1 config.
_base_ = './c1_muxnet-m-d8_4xb4-160k_ade20k-512x512.py'

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
    decode_head=dict(in_channels=fc_dim, channels=fc_dim // 4),
    auxiliary_head=dict(in_channels=160, channels=fc_dim // 4))
