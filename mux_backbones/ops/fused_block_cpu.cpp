// A MUXNet block's CPU deploy form in one call, fp32 (MUXConv paper Sec. 4's inverted residual
// with its channel-multiplexing interleave, Sec. 3.2).
//
// The fused deploy form on a CPU (mux_backbones/layers/inverted_residual.py) is a handful of
// kernels per block: the expand GEMM and its activation, the spatial conv (this extension's
// group_conv kernel with its activation and the SE's pooling in the epilogue; oneDNN's conv,
// then its activation and a sum; or spatial multiplexing, Sec. 3.1: per scale a pixel
// (un)shuffle, the group-wise conv, the inverse shuffle, then the folded BN, the activation and
// the SE's sums in one pass), the SE gate, the project GEMM with the gate, the residual and the
// interleave. Called from Python one module at a time, the ~20 Python calls between them (~60
// with spatial multiplexing) cost about as much as the kernels of a small layer (batch 1: ~100
// us per block, ~15-30% of a forward), and the gaps let the thread pool's workers fall asleep
// between kernels. Here they are called back to back. Same kernels, same arguments, same order:
// the output equals the modules' to the bit. (Spatial multiplexing's pad, shuffles, copies and
// concatenation only move values: here each scale's are one pass in and one pass out,
// move_scale, and none for the identity scale, whose kernel reads and writes its channels in
// place.) FusedChainCPU runs a stage's blocks so, one after the other, in one call.
#include "fused_block_cpu.h"

#include <ATen/Parallel.h>

#include <tuple>

#include "cpu_vector.h"

namespace {

using mux_backbones::FusedBlockCPU;

// (N*H*W, C) rows of a map: a view of a channels-last map (or of a channel slice of one), as
// PointwiseConv2d takes its input.
at::Tensor rows_of(const at::Tensor& x) { return x.permute({0, 2, 3, 1}).reshape({-1, x.size(1)}); }

// In place, as the deploy form's activation modules (activate_in_place) apply theirs.
void activate_(at::Tensor& t, int64_t act) {
  if (act == mux_backbones::kRelu) {
    at::relu_(t);
  } else if (act == mux_backbones::kSilu) {
    at::silu_(t);
  } else if (act == mux_backbones::kRelu6) {
    at::hardtanh_(t, 0.0, 6.0);
  }
}

// `x` zero-padded at the bottom and right to a multiple of `multiple` (SpatialMuxConv's).
at::Tensor pad_to_multiple(const at::Tensor& x, int64_t multiple) {
  const int64_t pad_h = (multiple - x.size(2) % multiple) % multiple;
  const int64_t pad_w = (multiple - x.size(3) % multiple) % multiple;
  return pad_h || pad_w ? at::constant_pad_nd(x, {0, pad_w, 0, pad_h}, 0) : x;
}

int64_t round_up(int64_t v, int64_t multiple) { return (v + multiple - 1) / multiple * multiple; }

// Spatial multiplexing's moves of a scale's channels, each one pass between channels-last maps
// (what pad + pixel_(un)shuffle + contiguous + crop + cat do in several). Values are moved, not
// computed: the bits are the modules'. `src` is (N, C, H, W) with channels innermost (any pixel
// stride: a channel slice of a map), `dst` a compact channels-last map or a channel slice of one;
// a source pixel past src's H x W reads as zero (the modules' zero padding), and dst's size
// crops (into a scale's slot of the concatenated map).
//   kUnshuffle (pixel_unshuffle(2)): dst[c*4 + i*2 + j, h, w] = src[c, 2h + i, 2w + j] -- into
//              a space-to-channel scale's half-size map, and out of a channel-to-space one's;
//   kShuffle (pixel_shuffle(2)):     dst[k, 2h + i, 2w + j] = src[4k + 2i + j, h, w] -- into
//              a channel-to-space scale's double-size map, and out of a space-to-channel one's.
enum Move { kUnshuffle, kShuffle };

void move_scale(const at::Tensor& src, at::Tensor& dst, Move move) {
  const int64_t N = dst.size(0), C = dst.size(1), H = dst.size(2), W = dst.size(3);
  const int64_t SH = src.size(2), SW = src.size(3);
  const int64_t s_n = src.stride(0), s_h = src.stride(2), s_w = src.stride(3);
  const int64_t d_n = dst.stride(0), d_h = dst.stride(2), d_w = dst.stride(3);
  const float* sp = src.data_ptr<float>();
  float* dp = dst.data_ptr<float>();
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / H, h = row % H;
      for (int64_t w = 0; w < W; ++w) {
        float* out = dp + n * d_n + h * d_h + w * d_w;
        const float* in = sp + n * s_n;
        if (move == kUnshuffle) {
          for (int64_t i = 0; i < 2; ++i) {
            for (int64_t j = 0; j < 2; ++j) {
              const int64_t sh = 2 * h + i, sw = 2 * w + j;
              const bool inside = sh < SH && sw < SW;
              const float* pixel = in + sh * s_h + sw * s_w;
              for (int64_t c = 0; c < C / 4; ++c) out[c * 4 + i * 2 + j] = inside ? pixel[c] : 0.f;
            }
          }
        } else {
          const int64_t sh = h / 2, sw = w / 2, phase = (h % 2) * 2 + (w % 2);
          const bool inside = sh < SH && sw < SW;
          const float* pixel = in + sh * s_h + sw * s_w;
          for (int64_t k = 0; k < C; ++k) out[k] = inside ? pixel[4 * k + phase] : 0.f;
        }
      }
    }
  });
}

}  // namespace

// Defined next to their ops (group_conv_cpu.cpp, se_gate_cpu.cpp, norm_act_cpu.cpp,
// pointwise_conv_cpu.cpp).
at::Tensor group_conv_into(const at::Tensor& x, const at::Tensor& y, const at::Tensor& weight,
                           const c10::optional<at::Tensor>& bias,
                           const std::vector<int64_t>& splits,
                           const std::vector<int64_t>& kernel_sizes,
                           const std::vector<int64_t>& dilations, int64_t stride,
                           int64_t channels_per_group, int64_t act, int64_t pool_tile_h,
                           int64_t pool_tile_w);
at::Tensor se_gate_forward(const at::Tensor& sums, double inv_pixels, const at::Tensor& w_reduce,
                           const at::Tensor& b_reduce, const at::Tensor& w_expand,
                           const at::Tensor& b_expand, int64_t act);
at::Tensor norm_act_into(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                         const at::Tensor& shift, int64_t act, bool with_sums);
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
    const at::Tensor expanded = pointwise_conv_forward(rows_of(x), expand_weight, expand_bias,
                                                       c10::nullopt, c10::nullopt, expand_act,
                                                       c10::nullopt);
    hidden = expanded.view({N, H, W, expanded.size(1)}).permute({0, 3, 1, 2});
  }
  at::Tensor y, sums;
  if (spatial == kKernel) {  // (x a channel slice of a wider map: read in place)
    y = at::empty({N, hidden.size(1), (H + stride - 1) / stride, (W + stride - 1) / stride},
                  x.options().memory_format(at::MemoryFormat::ChannelsLast));
    sums = group_conv_into(hidden, y, conv_weight, conv_bias, splits, kernel_sizes, dilations,
                           stride, channels_per_group, conv_act, pool_tile_h, pool_tile_w);
  } else if (spatial == kSpatialMux) {
    std::tie(y, sums) = spatial_mux(hidden, se_reduce_weight.defined());
  } else {
    y = at::conv2d(hidden, conv_weight, conv_bias, {stride, stride}, conv_padding, conv_dilation,
                   conv_groups);
    activate_(y, conv_act);
    if (se_reduce_weight.defined()) sums = y.sum({2, 3}, false, at::kFloat);
  }
  const int64_t OH = y.size(2), OW = y.size(3);
  c10::optional<at::Tensor> gate;  // none: a block without a squeeze-excite
  if (se_reduce_weight.defined())
    gate = se_gate_forward(sums, 1.0 / static_cast<double>(OH * OW), se_reduce_weight,
                           se_reduce_bias, se_expand_weight, se_expand_bias, se_act);
  c10::optional<at::Tensor> residual_rows, kept_rows;
  if (residual) residual_rows = rows_of(x);
  if (kept.has_value() && kept->defined()) kept_rows = rows_of(*kept);
  const at::Tensor out = pointwise_conv_forward(rows_of(y), project_weight, project_bias,
                                                residual_rows, kept_rows, 0, gate);
  return out.view({N, OH, OW, out.size(1)}).permute({0, 3, 1, 2});
}

at::Tensor FusedChainCPU::forward(const at::Tensor& x) const {
  at::Tensor h = x;
  for (const Step& step : steps) {
    if (step.processed > 0) {
      h = step.block.forward(h.slice(1, 0, step.processed), h.slice(1, step.processed),
                             step.pool_tile_h, step.pool_tile_w);
    } else {
      h = step.block.forward(h, c10::nullopt, step.pool_tile_h, step.pool_tile_w);
    }
  }
  return h;
}

std::tuple<at::Tensor, at::Tensor> FusedBlockCPU::spatial_mux(const at::Tensor& x,
                                                              bool with_sums) const {
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  const int64_t out_h = (H + stride - 1) / stride, out_w = (W + stride - 1) / stride;
  const std::vector<at::Tensor> parts = x.split_with_sizes(splits, 1);
  // The scales' outputs go straight into their channels of the concatenated map.
  at::Tensor joined = at::empty({N, x.size(1), out_h, out_w},
                                x.options().memory_format(at::MemoryFormat::ChannelsLast));
  int64_t offset = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const int64_t k = kernel_sizes[i], d = dilations[i], scale = scales[i], c = splits[i];
    const at::Tensor& w = scale_weights[i];
    const c10::optional<at::Tensor>& b = scale_biases[i];
    at::Tensor slot = joined.narrow(1, offset, c);
    offset += c;
    if (!scale_on_kernel[i]) {  // oneDNN's conv: the modules' own steps, then into the slot
      at::Tensor y;
      auto conv = [&](const at::Tensor& in) {
        return at::conv2d(in, w, b, {stride, stride}, {d * (k / 2), d * (k / 2)}, {d, d},
                          in.size(1) / channels_per_group);
      };
      if (scale == 0) {
        y = conv(parts[i]);
      } else if (scale < 0) {
        y = at::pixel_shuffle(conv(at::pixel_unshuffle(pad_to_multiple(parts[i], 2 * stride), 2)),
                              2);
      } else {
        y = at::pixel_unshuffle(conv(at::pixel_shuffle(pad_to_multiple(parts[i], stride), 2)), 2);
      }
      slot.copy_(y.slice(2, 0, out_h).slice(3, 0, out_w));
      continue;
    }
    // The group_conv kernel (the op's own call, no epilogue): scale 0 reads its channels of x
    // and writes its slot in place; the others' maps are made in one pass from the slice, and
    // moved back in one more. Weights come packed (the scale's deploy form), or are packed here.
    const at::Tensor packed = w.dim() == 1 ? w : w.permute({2, 3, 1, 0}).reshape(-1).contiguous();
    if (scale == 0) {
      group_conv_into(parts[i], slot, packed, b, {c}, {k}, {d}, stride, channels_per_group, 0, 0,
                      0);
      continue;
    }
    const int64_t hp = round_up(H, scale < 0 ? 2 * stride : stride);
    const int64_t wp = round_up(W, scale < 0 ? 2 * stride : stride);
    const auto options = x.options().memory_format(at::MemoryFormat::ChannelsLast);
    at::Tensor in = scale < 0 ? at::empty({N, 4 * c, hp / 2, wp / 2}, options)
                              : at::empty({N, c / 4, 2 * hp, 2 * wp}, options);
    move_scale(parts[i], in, scale < 0 ? kUnshuffle : kShuffle);
    at::Tensor y = at::empty(
        {N, in.size(1), (in.size(2) + stride - 1) / stride, (in.size(3) + stride - 1) / stride},
        options);
    group_conv_into(in, y, packed, b, {in.size(1)}, {k}, {d}, stride, channels_per_group, 0, 0,
                    0);
    move_scale(y, slot, scale < 0 ? kShuffle : kUnshuffle);
  }
  const at::Tensor sums = norm_act_into(joined, joined, norm_scale, norm_shift, conv_act,
                                        with_sums);
  return {joined, sums};
}

}  // namespace mux_backbones
