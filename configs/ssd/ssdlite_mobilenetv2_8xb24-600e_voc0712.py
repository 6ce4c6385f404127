# SSDLite + MobileNetV2 on PASCAL VOC07+12 (320x320): the paper's Table 2 baseline (67.4 mAP).
# Its sibling ssdlite_muxnet-m_8xb24-600e_voc0712.py differs only in the model.
_base_ = [
    '../_base_/models/ssdlite_mobilenetv2.py', '../_base_/datasets/voc0712_ssd320.py',
    '../_base_/schedules/ssdlite_600e.py'
]
