# PPM + dilated MUXNet-m from scratch on the embedded toy ADE20K set: the suite's default CPU
# segmentation job. Its sibling pspnet_mobilenetv2-d8_1xb4-220it_toyade-192x192.py is the baseline
# on exactly this data and schedule. Make the data with tools/dataset_converters/make_toy_data.py.
_base_ = [
    '../_base_/models/pspnet_csail.py', '../_base_/models/encoders/muxnet-m-d8.py',
    '../_base_/datasets/toy_ade.py', '../_base_/schedules/toy_seg_220it.py'
]
model = dict(**_base_.ppm_encoder, data_preprocessor=dict(size=_base_.crop_size))
model['backbone']['init_cfg'] = None  # from scratch: no network
# On the CPU the 2-channels-per-group convs and MixConvs (dilated here) train on the C++ kernels,
# and the 5x5 and dilated depth-wise convs take their gradients from them (~14% less time per
# iteration here; on CUDA: the Triton kernels; the same state dict either way).
model['backbone']['fused_ops'] = True
