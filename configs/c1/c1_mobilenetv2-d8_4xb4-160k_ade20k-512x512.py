# C1 + dilated MobileNetV2 on ADE20K: the paper's Table 3 baseline (34.84 mIoU).
# Its sibling c1_muxnet-m-d8_* differs only in the encoder.
_base_ = [
    '../_base_/models/c1_csail.py', '../_base_/models/encoders/mobilenetv2-d8.py',
    'mmseg::_base_/datasets/ade20k.py', 'mmseg::_base_/schedules/schedule_160k.py',
    'mmseg::_base_/default_runtime.py'
]
model = dict(**_base_.c1_encoder, data_preprocessor=dict(size=_base_.crop_size))
