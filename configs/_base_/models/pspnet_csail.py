# The PPM head of the MIT CSAIL semantic-segmentation benchmark (its PPMDeepsup), as mmseg's
# PSPHead, for the 150 ADE20K classes: pooling at (1, 2, 3, 6) to 512 channels, dropout 0.1, on
# the encoder's last map; deep supervision (3x3 conv to fc_dim / 4 + BN + ReLU + dropout 0.1 + 1x1
# classifier, weight 0.4) on the map before. The encoder and the channels it gives come from an
# ``encoders/`` piece: ``model = dict(**_base_.ppm_encoder, ...)`` in the experiment.
_base_ = 'mmseg::_base_/models/pspnet_r50-d8.py'

custom_imports = dict(imports=['mux_backbones'], allow_failed_imports=False)
model = dict(
    pretrained=None,
    decode_head=dict(in_index=1, channels=512, pool_scales=(1, 2, 3, 6), dropout_ratio=0.1,
                     num_classes=150),
    auxiliary_head=dict(in_index=0, num_convs=1, kernel_size=3, concat_input=False,
                        dropout_ratio=0.1, num_classes=150))
