"""Kernels for MUXConv's operators, one op per file, each a ``torch.library`` op: Triton on
CUDA, C++ on fp32 CPU tensors (:mod:`._cpu_kernels`).

Every op keeps the stock PyTorch computation as its reference and its fallback (no Triton,
unsupported dtypes; see :mod:`._triton`); ``norm_act`` has no Triton kernel (its stock path is
as many launches as what it replaces). ``gated_map``, the squeeze-excite's training form, is an
autograd node for eager training rather than a library op: under ``torch.compile`` the layer's
stock expression is what Inductor fuses.
"""
from ._triton import HAS_TRITON, unsupported_reason
from .gated_map import gated_map
from .group_conv import group_conv, pack_weights, reference_group_conv, unpack_weights
from .norm_act import norm_act, reference_norm_act
from .pointwise_conv import pointwise_conv, reference_pointwise_conv
from .se_gate import reference_se_gate, se_gate

__all__ = ['HAS_TRITON', 'gated_map', 'group_conv', 'norm_act', 'pack_weights', 'pointwise_conv',
           'reference_group_conv', 'reference_norm_act', 'reference_pointwise_conv',
           'reference_se_gate', 'se_gate', 'unpack_weights', 'unsupported_reason']
