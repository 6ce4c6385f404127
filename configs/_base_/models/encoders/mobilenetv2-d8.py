# Dilated MobileNetV2 1.0 (output stride 8, mmseg's -d8 models) as the encoder of the CSAIL heads
# (pspnet_csail.py, c1_csail.py), tapped as the CSAIL benchmark does: its 160-ch stage (deep
# supervision) and 320-ch stage (fc_dim).
deepsup_channels, fc_dim = 160, 320
# The encoder wired into the PPM head (ppm_encoder) and the C1 head (c1_encoder): the last map
# feeds the decode head, the one before the deep-supervision branch; C1 and deep supervision
# are fc_dim / 4 wide (PPM is 512 wide, set by its head piece).
ppm_encoder = dict(
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
c1_encoder = dict(ppm_encoder, decode_head=dict(in_channels=fc_dim, channels=fc_dim // 4))
