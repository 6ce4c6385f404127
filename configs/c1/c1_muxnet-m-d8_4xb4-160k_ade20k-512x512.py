# C1 + dilated MUXNet-m (output stride 8) on ADE20K: the paper's Table 3 row (32.42 mIoU).
# Its sibling c1_mobilenetv2-d8_* differs only in the encoder.
_base_ = [
    '../_base_/models/c1_csail.py', '../_base_/models/encoders/muxnet-m-d8.py',
    'mmseg::_base_/datasets/ade20k.py', 'mmseg::_base_/schedules/schedule_160k.py',
    'mmseg::_base_/default_runtime.py'
]
model = dict(**_base_.c1_encoder, data_preprocessor=dict(size=_base_.crop_size))
