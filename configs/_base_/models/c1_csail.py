# The C1 head of the MIT CSAIL semantic-segmentation benchmark (its C1DeepSup), layer for layer
# with mmseg's FCNHead, for the 150 ADE20K classes: on the encoder's last map a 3x3 conv
# (fc_dim -> fc_dim / 4, no bias) + BN + ReLU and a 1x1 classifier, no dropout; the same branch on
# the map before as deep supervision (weight 0.4). The encoder and the channels it gives come
# from an ``encoders/`` piece: ``model = dict(**_base_.c1_encoder, ...)`` in the experiment.
_base_ = 'mmseg::_base_/models/fcn_r50-d8.py'

custom_imports = dict(imports=['mux_backbones'], allow_failed_imports=False)
c1 = dict(type='FCNHead', num_convs=1, kernel_size=3, concat_input=False, dropout_ratio=0.0,
          num_classes=150)
model = dict(
    pretrained=None,
    decode_head=dict(**c1, in_index=1),
    auxiliary_head=dict(**c1, in_index=0))
