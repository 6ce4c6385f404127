# Dilated MobileNetV2 1.0 (output stride 8, mmseg's -d8 models) as the encoder of the CSAIL heads
# (pspnet_csail.py, c1_csail.py), tapped as the CSAIL benchmark does: its 160-ch stage (deep
# supervision) and 320-ch stage (fc_dim).
deepsup_channels, fc_dim = 160, 320
csail_encoder = dict(
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
    auxiliary_head=dict(in_channels=deepsup_channels, channels=fc_dim // 4))
