"""Backbones of the suite."""
from .block_spec import BlockSpec, decode_block_string, decode_stage
from .muxnet import MUXNet, arch_settings, make_divisible, muxnet_out_channels

__all__ = ['BlockSpec', 'MUXNet', 'arch_settings', 'decode_block_string', 'decode_stage',
           'make_divisible', 'muxnet_out_channels']
