# SSDLite + MobileNetV2 from scratch on the embedded toy VOC set: the baseline of the default CPU
# detection job (its sibling ssdlite_muxnet-m_1xb8-300it_toyvoc.py), same data and schedule.
_base_ = [
    '../_base_/models/ssdlite_mobilenetv2.py', '../_base_/datasets/toy_voc.py',
    '../_base_/schedules/toy_det_300it.py'
]
# From scratch, with the conv init of mmdet's SSDLite scratch recipe.
model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='TruncNormal', layer='Conv2d',
                                         std=0.03)))
