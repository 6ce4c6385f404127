// A MUXNet block's CPU deploy form in one call, fp32 (MUXConv paper Sec. 4's inverted residual
// with its channel-multiplexing interleave, Sec. 3.2).
//
// The fused deploy form on a CPU (mux_backbones/layers/inverted_residual.py) is a handful of
// kernels per block: the expand GEMM and its activation, the spatial conv (this extension's
// group_conv kernel with its activation and the SE's pooling in the epilogue, or oneDNN's conv
// with its activation and a sum), the SE gate, the project GEMM with the gate, the residual and
// the interleave. Called from Python one module at a time, the ~20 Python calls between them
// cost about as much as the kernels of a small layer (batch 1: ~100 us per block, ~15% of a
// MUXNet-m forward), and the gaps let the thread pool's workers fall asleep between kernels.
// Here they are called back to back. Same kernels, same arguments, same order: the output
// equals the modules' to the bit.
#include "fused_block_cpu.h"

#include <tuple>

namespace {

using mux_backbones::FusedBlockCPU;

// (N*H*W, C) rows of a map: a view of a channels-last map (or of a channel slice of one), as
// PointwiseConv2d takes its input.
at::Tensor rows_of(const at::Tensor& x) { return x.permute({0, 2, 3, 1}).reshape({-1, x.size(1)}); }

// In place, as the deploy form's activation modules (activate_in_place) apply theirs.
void activate_(at::Tensor& t, int64_t act) {
  if (act == 1) {
    at::relu_(t);
  } else if (act == 2) {
    at::silu_(t);
  } else if (act == 3) {
    at::hardtanh_(t, 0.0, 6.0);
  }
}

}  // namespace

// Defined next to their ops (group_conv_cpu.cpp, se_gate_cpu.cpp, pointwise_conv_cpu.cpp).
std::tuple<at::Tensor, at::Tensor> group_conv_forward(
    const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const std::vector<int64_t>& splits, const std::vector<int64_t>& kernel_sizes,
    const std::vector<int64_t>& dilations, int64_t stride, int64_t channels_per_group,
    int64_t act, int64_t pool_tile_h, int64_t pool_tile_w);
at::Tensor se_gate_forward(const at::Tensor& sums, double inv_pixels, const at::Tensor& w_reduce,
                           const at::Tensor& b_reduce, const at::Tensor& w_expand,
                           const at::Tensor& b_expand, int64_t act);
at::Tensor pointwise_conv_forward(const at::Tensor& rows, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias,
                                  const c10::optional<at::Tensor>& residual,
                                  const c10::optional<at::Tensor>& kept, int64_t act,
                                  const c10::optional<at::Tensor>& scale);

namespace mux_backbones {

at::Tensor FusedBlockCPU::forward(const at::Tensor& x, const c10::optional<at::Tensor>& kept,
                                  int64_t pool_tile_h, int64_t pool_tile_w) const {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat,
              "FusedBlockCPU: x must be a 4-d fp32 CPU tensor");
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  at::Tensor hidden = x;
  if (expand_weight.defined()) {
    at::Tensor expanded = at::addmm(expand_bias, rows_of(x), expand_weight);
    activate_(expanded, expand_act);
    hidden = expanded.view({N, H, W, expanded.size(1)}).permute({0, 3, 1, 2});
  }
  at::Tensor y, sums;
  if (on_kernel) {
    std::tie(y, sums) = group_conv_forward(hidden.contiguous(at::MemoryFormat::ChannelsLast),
                                           conv_weight, conv_bias, splits, kernel_sizes,
                                           dilations, stride, channels_per_group, conv_act,
                                           pool_tile_h, pool_tile_w);
  } else {
    y = at::conv2d(hidden, conv_weight, conv_bias, {stride, stride}, conv_padding,
                   conv_dilation, conv_groups);
    activate_(y, conv_act);
    sums = y.sum({2, 3}, false, at::kFloat);
  }
  const int64_t OH = y.size(2), OW = y.size(3);
  const at::Tensor gate = se_gate_forward(sums, 1.0 / static_cast<double>(OH * OW),
                                          se_reduce_weight, se_reduce_bias, se_expand_weight,
                                          se_expand_bias, se_act);
  c10::optional<at::Tensor> residual_rows, kept_rows;
  if (residual) residual_rows = rows_of(x);
  if (kept.has_value() && kept->defined()) kept_rows = rows_of(*kept);
  const at::Tensor out = pointwise_conv_forward(rows_of(y), project_weight, project_bias,
                                                residual_rows, kept_rows, 0, gate);
  return out.view({N, OH, OW, out.size(1)}).permute({0, 3, 1, 2});
}

}  // namespace mux_backbones
