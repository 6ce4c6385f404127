# PPM (PSPNet head) + dilated MobileNetV2 on ADE20K: the paper's Table 3 baseline (35.76 mIoU).
# Its sibling pspnet_muxnet-m-d8_* differs only in the encoder.
_base_ = [
    '../_base_/models/pspnet_csail.py', '../_base_/models/encoders/mobilenetv2-d8.py',
    'mmseg::_base_/datasets/ade20k.py', 'mmseg::_base_/schedules/schedule_160k.py',
    'mmseg::_base_/default_runtime.py'
]
model = dict(**_base_.ppm_encoder, data_preprocessor=dict(size=_base_.crop_size))
