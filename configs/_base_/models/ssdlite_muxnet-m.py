# SSDLite + MUXNet-m, the paper's Table 2 detector (0.5B MAdds, 3.2M params): the stride-16 map
# (end of stage 5, 112 ch) and the 1x1 head conv (1280 ch), as MobileNetV2's out_indices (4, 7).
_base_ = './ssdlite.py'
from mux_backbones import muxnet_out_channels  # noqa: E402

backbone_channels = muxnet_out_channels('m', (4, 7))
neck_channels = backbone_channels + (512, 256, 256, 128)
model = dict(
    backbone=dict(
        type='MUXNet',
        arch='m',
        out_indices=(4, 7),
        norm_cfg=_base_.ssdlite_norm_cfg,
        # Made by tools/model_converters/muxnet_official_to_mmengine.py from the official release.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/muxnet-m_in1k.pth',
                      prefix='backbone.')),
    neck=dict(in_channels=backbone_channels, out_channels=neck_channels),
    bbox_head=dict(in_channels=neck_channels))
