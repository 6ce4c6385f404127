"""Backbones of the suite: the MUXNet arch tables, their stage plan and the builder."""
from .block_spec import BlockSpec, decode_block_string, decode_stage
from .muxnet import MUXNet, arch_settings, muxnet_out_channels
from .stage_plan import MUXNetPlan, StagePlan, make_divisible, plan_stages

__all__ = ['BlockSpec', 'MUXNet', 'MUXNetPlan', 'StagePlan', 'arch_settings',
           'decode_block_string', 'decode_stage', 'make_divisible', 'muxnet_out_channels',
           'plan_stages']
