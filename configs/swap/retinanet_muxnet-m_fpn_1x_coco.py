# Swap MUXNet into any upstream mmdet config: RetinaNet-R50-FPN -> RetinaNet-MUXNet-m-FPN.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
from mux_backbones import muxnet_out_channels  # noqa: E402

custom_imports = dict(imports=['mux_backbones'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='MUXNet', arch='m', out_indices=(2, 4, 6)),
    neck=dict(in_channels=list(muxnet_out_channels('m', (2, 4, 6)))))
