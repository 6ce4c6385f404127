# SSDLite + MUXNet-m from scratch on the embedded toy VOC set: the suite's default CPU detection job
# (~4.5 minutes on 2 cores). Its sibling ssdlite_mobilenetv2_1xb8-300it_toyvoc.py is the baseline
# on exactly this data and schedule. Make the data with tools/dataset_converters/make_toy_data.py.
_base_ = [
    '../_base_/models/ssdlite_muxnet-m.py', '../_base_/datasets/toy_voc.py',
    '../_base_/schedules/toy_det_300it.py'
]
# From scratch (no network, no pretrained weights), with the conv init of mmdet's SSDLite scratch
# recipe. fused_ops: on the CPU the 2-channels-per-group convs and MixConvs train on the C++
# kernels, and the 5x5 depth-wise conv takes its gradients from them (~7% less time per
# iteration here; on CUDA: the Triton kernels; the same state dict either way).
model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='TruncNormal', layer='Conv2d',
                                         std=0.03), fused_ops=True))
