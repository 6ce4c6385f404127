# SSDLite + MUXNet-m on PASCAL VOC07+12 (320x320): the paper's Table 2 row (68.6 mAP, 0.5B MAdds,
# 3.2M params). Its sibling ssdlite_mobilenetv2_8xb24-600e_voc0712.py differs only in the model.
_base_ = [
    '../_base_/models/ssdlite_muxnet-m.py', '../_base_/datasets/voc0712_ssd320.py',
    '../_base_/schedules/ssdlite_600e.py'
]
