# PPM (PSPNet head) + dilated MUXNet-m (output stride 8) on ADE20K, the paper's Table 3 row
# (35.80 mIoU / 76.33 pixel acc). Heads as the CSAIL benchmark's PPMDeepsup: PPM at scales
# (1, 2, 3, 6) with 512 channels and dropout 0.1 on the last map, plus a deep-supervision branch
# (3x3 conv to fc_dim/4 + BN + ReLU + dropout 0.1 + 1x1 classifier, weight 0.4) on the map before.
_base_ = 'mmseg::pspnet/pspnet_r50-d8_4xb4-160k_ade20k-512x512.py'
from mux_backbones import muxnet_out_channels  # noqa: E402

custom_imports = dict(imports=['mux_backbones'], allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)
# Ends of stage 6 (160 ch) and stage 7 (200 ch = fc_dim), both at stride 8 once dilated.
deepsup_channels, fc_dim = muxnet_out_channels('m', (5, 6))
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='MUXNet',
        arch='m',
        output_stride=8,
        out_indices=(5, 6),
        norm_cfg=norm_cfg,
        # Made by tools/model_converters/muxnet_official_to_mmengine.py from the official release.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/muxnet-m_in1k.pth',
                      prefix='backbone.')),
    decode_head=dict(in_channels=fc_dim, in_index=1, channels=512, pool_scales=(1, 2, 3, 6),
                     dropout_ratio=0.1, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=deepsup_channels, in_index=0, channels=fc_dim // 4,
                        num_convs=1, kernel_size=3, concat_input=False, dropout_ratio=0.1,
                        norm_cfg=norm_cfg))
