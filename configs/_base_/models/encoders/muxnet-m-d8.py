# Dilated MUXNet-m (output stride 8) as the encoder of the CSAIL heads (pspnet_csail.py,
# c1_csail.py): the ends of stage 6 (160 ch, deep supervision) and stage 7 (200 ch = fc_dim).
# The channels are muxnet_out_channels('m', (5, 6)), written out because a base config without
# `_base_` may not import (mmengine would take it for a lazy-import config); a test checks them.
deepsup_channels, fc_dim = 160, 200
# The encoder wired into the PPM head (ppm_encoder) and the C1 head (c1_encoder): the last map
# feeds the decode head, the one before the deep-supervision branch; C1 and deep supervision
# are fc_dim / 4 wide (PPM is 512 wide, set by its head piece).
ppm_encoder = dict(
    backbone=dict(
        _delete_=True,
        type='MUXNet',
        arch='m',
        output_stride=8,
        out_indices=(5, 6),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        # Made by tools/model_converters/muxnet_official_to_mmengine.py from the official release.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/muxnet-m_in1k.pth',
                      prefix='backbone.')),
    decode_head=dict(in_channels=fc_dim),
    auxiliary_head=dict(in_channels=deepsup_channels, channels=fc_dim // 4))
c1_encoder = dict(ppm_encoder, decode_head=dict(in_channels=fc_dim, channels=fc_dim // 4))
