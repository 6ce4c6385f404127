# C1 + dilated MUXNet-m (output stride 8) on ADE20K, the paper's Table 3 row (32.42 mIoU).
# The CSAIL benchmark's C1DeepSup, layer for layer, with mmseg's FCNHead: on the last map a 3x3
# conv (fc_dim -> fc_dim/4, no bias) + BN + ReLU and a 1x1 classifier, no dropout; the same branch
# on the map before as deep supervision (weight 0.4).
_base_ = 'mmseg::fcn/fcn_r50-d8_4xb4-160k_ade20k-512x512.py'
from mux_backbones import muxnet_out_channels  # noqa: E402

custom_imports = dict(imports=['mux_backbones'], allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)
deepsup_channels, fc_dim = muxnet_out_channels('m', (5, 6))
c1 = dict(type='FCNHead', num_convs=1, kernel_size=3, concat_input=False, dropout_ratio=0.0,
          norm_cfg=norm_cfg, num_classes=150, align_corners=False)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='MUXNet',
        arch='m',
        output_stride=8,
        out_indices=(5, 6),
        norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/muxnet-m_in1k.pth',
                      prefix='backbone.')),
    decode_head=dict(**c1, in_channels=fc_dim, in_index=1, channels=fc_dim // 4),
    auxiliary_head=dict(**c1, in_channels=deepsup_channels, in_index=0, channels=fc_dim // 4))
