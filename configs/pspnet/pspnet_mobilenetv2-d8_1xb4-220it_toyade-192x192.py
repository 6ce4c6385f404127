# PPM + dilated MobileNetV2 from scratch on the embedded toy ADE20K set: the baseline of the default
# CPU segmentation job (its sibling pspnet_muxnet-m-d8_1xb4-220it_toyade-192x192.py).
_base_ = [
    '../_base_/models/pspnet_csail.py', '../_base_/models/encoders/mobilenetv2-d8.py',
    '../_base_/datasets/toy_ade.py', '../_base_/schedules/toy_seg_220it.py'
]
model = dict(**_base_.ppm_encoder, data_preprocessor=dict(size=_base_.crop_size))
model['backbone']['init_cfg'] = None  # from scratch: no network
