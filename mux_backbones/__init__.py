"""mux_backbones: MUXNet (MUXConv, CVPR 2020) backbones for OpenMMLab dense prediction.

Importing the package registers ``MUXNet`` (and the suite's heads) in the OpenMMLab registries, so
any mmdet/mmseg config reaches it with
``custom_imports=dict(imports=['mux_backbones'], allow_failed_imports=False)``, and applies the
stack fixes of :mod:`mux_backbones.compat`.
"""
from . import compat, datasets, engine  # noqa: F401  (register transforms and hooks)
from .backbones import MUXNet, arch_settings, muxnet_out_channels
from .models import MUXNetClassifier
from .version import __version__

compat.apply()

__all__ = ['MUXNet', 'MUXNetClassifier', 'arch_settings', 'muxnet_out_channels', '__version__']
