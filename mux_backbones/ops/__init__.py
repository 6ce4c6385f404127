"""GPU kernels for MUXConv's operators (Triton), one op per file, each a ``torch.library`` op.

Every op keeps the stock PyTorch computation as its reference and its fallback (CPU, no Triton,
unsupported dtypes; see :mod:`._triton`).
"""
from ._triton import HAS_TRITON, unsupported_reason
from .group_conv import group_conv, pack_weights, reference_group_conv, unpack_weights
from .pointwise_conv import pointwise_conv, reference_pointwise_conv
from .se_gate import reference_se_gate, se_gate

__all__ = ['HAS_TRITON', 'group_conv', 'pack_weights', 'pointwise_conv', 'reference_group_conv',
           'reference_pointwise_conv', 'reference_se_gate', 'se_gate', 'unpack_weights',
           'unsupported_reason']
