# PPM (PSPNet head) + dilated MUXNet-m (output stride 8) on ADE20K: the paper's Table 3 row
# (35.80 mIoU / 76.33 pixel acc). Its sibling pspnet_mobilenetv2-d8_* differs only in the encoder.
_base_ = [
    '../_base_/models/pspnet_csail.py', '../_base_/models/encoders/muxnet-m-d8.py',
    'mmseg::_base_/datasets/ade20k.py', 'mmseg::_base_/schedules/schedule_160k.py',
    'mmseg::_base_/default_runtime.py'
]
model = dict(**_base_.ppm_encoder, data_preprocessor=dict(size=_base_.crop_size))
