// A MUXNet block's CPU deploy form as one call (fused_block_cpu.cpp), fp32: what the block's
// modules (mux_backbones/layers/inverted_residual.py) compute one Python call at a time.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>
#include <vector>

namespace mux_backbones {

// The block's tensors are the modules' own (views of the same storage, e.g. a 1x1 conv's
// weight as its (C_in, C_out) matrix), so loading new weights into the modules in place is seen
// here; mux_backbones/layers/block_call.py builds one per block and rebuilds it when the
// modules' tensors are replaced.
struct FusedBlockCPU {
  // Expand 1x1 conv: (C_in, C_mid) matrix and bias; undefined for a block without one (a
  // depth-wise separable block). Activation code as in cpu_vector.h (Act).
  at::Tensor expand_weight, expand_bias;
  int64_t expand_act = 0;
  // Spatial conv, one of three forms (`spatial`): kKernel, the group_conv kernel's (packed
  // weight, its activation and the SE's pooling in its epilogue); kStockConv, a stock conv
  // (oneDNN), followed by the activation and a sum for the SE; kSpatialMux, spatial
  // multiplexing (MUXConv Sec. 3.1: per scale its channels shuffled, convolved and shuffled
  // back, then the folded BN, the activation and the SE's sums in one pass, norm_act).
  enum Spatial : int64_t { kKernel = 0, kStockConv = 1, kSpatialMux = 2 };
  int64_t spatial = kKernel;
  at::Tensor conv_weight, conv_bias;
  std::vector<int64_t> splits, kernel_sizes, dilations;  // the kernel's layout (and the scales')
  int64_t stride = 1, channels_per_group = 1, conv_act = 0;
  std::vector<int64_t> conv_padding{0, 0}, conv_dilation{1, 1};  // the stock conv's
  int64_t conv_groups = 1;
  // kSpatialMux: per scale (-1 space-to-channel, 0, +1 channel-to-space) its conv's weight --
  // packed as the group_conv kernel reads it, or (C, cpg, k, k) -- and bias (if any), whether
  // the group_conv kernel computes it (else oneDNN, from the (C, cpg, k, k) weight), and the
  // BN after the fold-back as a per-channel scale and shift (SpatialMuxConv's deploy form,
  // fold_norm); its activation is conv_act.
  std::vector<int64_t> scales;
  std::vector<at::Tensor> scale_weights;
  std::vector<c10::optional<at::Tensor>> scale_biases;
  std::vector<bool> scale_on_kernel;
  at::Tensor norm_scale, norm_shift;
  // Squeeze-excite: reduce (S, C) and expand (C, S) linear layers, activation between them;
  // undefined: a block without one (another library's, e.g. MobileNetV2's; a kernel-form conv
  // then pools nothing worth using, pool tile 0 x 0).
  at::Tensor se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias;
  int64_t se_act = 0;
  // Project 1x1 conv: (C_mid, C_out) matrix and bias; `residual`: the block adds its input.
  at::Tensor project_weight, project_bias;
  bool residual = false;

  // The block on x (N, C_in, H, W), channels innermost (a channels-last map or a channel slice
  // of one); with `kept` (the copied channels of channel multiplexing, like x) the output
  // interleaved with them channel by channel. Channels-last output. The pool tile is the
  // group_conv kernel's for this input size, as the Python planner gives the modules' own call
  // (so the SE's partial sums are theirs); unused with a stock conv.
  at::Tensor forward(const at::Tensor& x, const c10::optional<at::Tensor>& kept,
                     int64_t pool_tile_h, int64_t pool_tile_w) const;

 private:
  // kSpatialMux's convs, BN and activation; the SE's (N, C) sums `with_sums`.
  std::tuple<at::Tensor, at::Tensor> spatial_mux(const at::Tensor& x, bool with_sums) const;
};

// A run of blocks (a stage of a deployed model) as one call: the blocks' calls back to back, each
// on the previous one's output, without a return to Python between them. A step of channel
// multiplexing (MUXConv Sec. 3.2) gives its block the first `processed` channels and the rest as
// the kept channels its output is interleaved with; `processed` 0: the block takes them all.
// mux_backbones/layers/block_call.py (OneCallStage) builds one per input size: each step's pool
// tile is the one its block's own call plans for the size it receives.
struct FusedChainCPU {
  struct Step {
    FusedBlockCPU block;  // (a copy: the same tensors)
    int64_t processed, pool_tile_h, pool_tile_w;
  };
  std::vector<Step> steps;

  void append(const FusedBlockCPU& block, int64_t processed, int64_t pool_tile_h,
              int64_t pool_tile_w) {
    steps.push_back({block, processed, pool_tile_h, pool_tile_w});
  }
  at::Tensor forward(const at::Tensor& x) const;
};

}  // namespace mux_backbones
