# Swap MUXNet into any upstream mmseg config: PSPNet-R50-D8 -> PSPNet-MUXNet-m-D8.
_base_ = 'mmseg::pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py'
from mux_backbones import muxnet_out_channels  # noqa: E402

custom_imports = dict(imports=['mux_backbones'], allow_failed_imports=False)
aux, last = muxnet_out_channels('m', (4, 6))
backbone = dict(type='MUXNet', arch='m', output_stride=8, out_indices=(4, 6))
model = dict(pretrained=None, backbone=dict(_delete_=True, **backbone),
             decode_head=dict(in_channels=last, in_index=1),
             auxiliary_head=dict(in_channels=aux, in_index=0))
