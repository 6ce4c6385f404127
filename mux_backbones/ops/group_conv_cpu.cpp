// CPU kernel of the fused group-wise conv (mux_backbones/ops/group_conv.py), fp32, NHWC.
//
// oneDNN has no fast path for a conv with 2 channels per group (4-10x a depth-wise conv of the
// same size), and a MixConv reaches it as one conv per kernel size or as one zero-padded conv
// at the largest size. This kernel computes every kernel-size group of a layer at its own size,
// 1 or 2 channels per group, straight into the channels-last output.
//
// Work: one output row of one image per task (torch's intra-op thread pool); per group, blocks
// of PW output pixels x CB vectors of 8 channels held in registers across all taps, so each
// tap's weights are loaded once per block and its inputs once per pixel. A pair partner of a
// 2-channels-per-group conv is the loaded vector with neighbours swapped. The vectors are GCC's
// generic vector type: AVX/AVX-512 or NEON, whatever the compiler targets (built with
// -march=native on the machine that runs it, see _cpu_kernels.py). With pool tiles it also sums
// its output per tile for the squeeze-excite that follows (the op's `with_pool`).
#include <ATen/ATen.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#include "cpu_vector.h"
#include "group_conv_cpu.h"

namespace {

using namespace mux_backbones;

// One kernel-size group as one image row of it sees it. Pointers are at the group's first
// channel (x at the image, y at the output row); channels are `group` wide, `C` apart per pixel.
struct Group {
  const float* x;
  const float* w;
  const float* bias;  // nullptr: none
  float* y;
  int64_t H, W, C, OW, K, dil, stride, pad, group;
  int act;
  // Squeeze-excite pooling: the row's sums per tile of `tile_w` output columns, `C` apart per
  // tile (nullptr: no pooling). Each task owns its row, so no two threads add to one sum.
  float* row_sums;
  int64_t tile_w;
};

// PW output pixels from ow0 on (npix of them exist) x CB vectors of 8 channels from c on.
template <int CPG, int PW, int CB>
void pixel_block(const Group& g, int64_t oh, int64_t ow0, int64_t npix, int64_t c) {
  vec8 acc[PW][CB];
  for (int b = 0; b < CB; ++b) {
    const vec8 init = g.bias ? load8(g.bias + c + 8 * b) : vec8{};
    for (int p = 0; p < PW; ++p) acc[p][b] = init;
  }
  for (int64_t kh = 0; kh < g.K; ++kh) {
    const int64_t ih = oh * g.stride - g.pad + kh * g.dil;
    if (ih < 0 || ih >= g.H) continue;
    const float* x_row = g.x + ih * g.W * g.C + c;
    for (int64_t kw = 0; kw < g.K; ++kw) {
      vec8 w_own[CB], w_partner[CB];
      load_tap<CPG, CB>(g.w + (kh * g.K + kw) * CPG * g.group + c, g.group, w_own, w_partner);
      const int64_t iw0 = ow0 * g.stride - g.pad + kw * g.dil;
      // Inside the map for every pixel of the block: no per-pixel bounds test.
      const bool inside = npix == PW && iw0 >= 0 && iw0 + (PW - 1) * g.stride < g.W;
      for (int p = 0; p < PW; ++p) {
        const int64_t iw = iw0 + p * g.stride;
        if (!inside && (p >= npix || iw < 0 || iw >= g.W)) continue;
        apply_tap<CPG, CB>(acc[p], x_row + iw * g.C, w_own, w_partner);
      }
    }
  }
  for (int p = 0; p < npix; ++p) {
    float* out = g.y + (ow0 + p) * g.C + c;
    float* sums = g.row_sums ? g.row_sums + (ow0 + p) / g.tile_w * g.C + c : nullptr;
    for (int b = 0; b < CB; ++b) {
      const vec8 v = activate(acc[p][b], g.act);
      store8(out + 8 * b, v);
      if (sums) store8(sums + 8 * b, load8(sums + 8 * b) + v);
    }
  }
}

// Channels past the last full vector (a group size not a multiple of 8), one at a time.
template <int CPG>
void channel_tail(const Group& g, int64_t oh, int64_t c) {
  for (int64_t ow = 0; ow < g.OW; ++ow) {
    for (int64_t o = c; o < g.group; ++o) {
      float acc = g.bias ? g.bias[o] : 0.f;
      for (int64_t kh = 0; kh < g.K; ++kh) {
        const int64_t ih = oh * g.stride - g.pad + kh * g.dil;
        if (ih < 0 || ih >= g.H) continue;
        for (int64_t kw = 0; kw < g.K; ++kw) {
          const int64_t iw = ow * g.stride - g.pad + kw * g.dil;
          if (iw < 0 || iw >= g.W) continue;
          const float* xp = g.x + (ih * g.W + iw) * g.C;
          const float* tap = g.w + (kh * g.K + kw) * CPG * g.group;
          if (CPG == 1) {
            acc += xp[o] * tap[o];
          } else {
            const int64_t first = o & ~int64_t(1);
            acc += xp[first] * tap[o] + xp[first + 1] * tap[g.group + o];
          }
        }
      }
      const float v = activate(acc, g.act);
      g.y[ow * g.C + o] = v;
      if (g.row_sums) g.row_sums[ow / g.tile_w * g.C + o] += v;
    }
  }
}

template <int CPG>
void group_row(const Group& g, int64_t oh) {
  constexpr int PW = 4;
  int64_t c = 0;
  for (; c + 16 <= g.group; c += 16)
    for (int64_t ow = 0; ow < g.OW; ow += PW)
      pixel_block<CPG, PW, 2>(g, oh, ow, std::min<int64_t>(PW, g.OW - ow), c);
  for (; c + 8 <= g.group; c += 8)
    for (int64_t ow = 0; ow < g.OW; ow += PW)
      pixel_block<CPG, PW, 1>(g, oh, ow, std::min<int64_t>(PW, g.OW - ow), c);
  if (c < g.group) channel_tail<CPG>(g, oh, c);
}

}  // namespace

// The op's forward: x (N, C, H, W) fp32 channels-last, weight packed as pack_weights() does
// (per group: taps, then channels per group, then channels), optional (C,) bias, activation
// code `act`; "same" padding, output ceil(H / stride) x ceil(W / stride), channels-last.
// With pool_tile_h, pool_tile_w > 0 also the squeeze-excite's pooling (the op's `with_pool`):
// (N, T, C) fp32 sums of the activated output over its pool_tile_h x pool_tile_w tiles, T of
// them in row-major order; otherwise an empty pool tensor.
std::tuple<at::Tensor, at::Tensor> group_conv_forward(
    const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const std::vector<int64_t>& splits, const std::vector<int64_t>& kernel_sizes,
    const std::vector<int64_t>& dilations, int64_t stride, int64_t channels_per_group,
    int64_t act, int64_t pool_tile_h, int64_t pool_tile_w) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "group_conv_forward: x must be a 4-d fp32 CPU tensor");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "group_conv_forward: x must be channels-last");
  TORCH_CHECK(weight.is_contiguous() && weight.scalar_type() == at::kFloat,
              "group_conv_forward: weight must be contiguous fp32");
  TORCH_CHECK(act >= kNone && act <= kRelu6, "group_conv_forward: unknown activation code");
  TORCH_CHECK((pool_tile_h > 0) == (pool_tile_w > 0) && pool_tile_h >= 0,
              "group_conv_forward: pool tile sizes must both be > 0 (pooling) or both 0");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = (H + stride - 1) / stride, OW = (W + stride - 1) / stride;
  const GroupLayout l = group_layout(splits, kernel_sizes, dilations, channels_per_group, C,
                                     "group_conv_forward");
  TORCH_CHECK(l.values == weight.numel(),
              "group_conv_forward: splits/kernel sizes do not match the weight");
  const float* b = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->is_contiguous() && bias->scalar_type() == at::kFloat &&
                bias->numel() == C, "group_conv_forward: bias must be (C,) contiguous fp32");
    b = bias->data_ptr<float>();
  }
  auto y = at::empty({N, C, OH, OW}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const bool pooled = pool_tile_h > 0;
  const int64_t TW = pooled ? (OW + pool_tile_w - 1) / pool_tile_w : 0;
  const int64_t TH = pooled ? (OH + pool_tile_h - 1) / pool_tile_h : 0;
  // Per output row, its sums per column tile; added up over each tile's rows at the end.
  auto row_sums = at::zeros({pooled ? N * OH * TW * C : 0}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  float* sp = row_sums.data_ptr<float>();
  at::parallel_for(0, N * OH, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / OH, oh = row % OH;
      for (size_t gi = 0; gi < splits.size(); ++gi) {
        const int64_t K = kernel_sizes[gi], dil = dilations[gi];
        const Group g{xp + n * H * W * C + l.first[gi], wp + l.w_offset[gi],
                      b ? b + l.first[gi] : nullptr, yp + row * OW * C + l.first[gi],
                      H, W, C, OW, K, dil, stride, dil * (K / 2), splits[gi],
                      static_cast<int>(act),
                      pooled ? sp + row * TW * C + l.first[gi] : nullptr, pool_tile_w};
        if (channels_per_group == 1)
          group_row<1>(g, oh);
        else
          group_row<2>(g, oh);
      }
    }
  });
  auto pool = at::zeros({pooled ? N : 0, TH * TW, C}, x.options());
  if (pooled) {
    float* pp = pool.data_ptr<float>();
    at::parallel_for(0, N * TH, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / TH, th = t % TH;
        for (int64_t oh = th * pool_tile_h; oh < std::min(OH, (th + 1) * pool_tile_h); ++oh) {
          for (int64_t tw = 0; tw < TW; ++tw) {
            float* dst = pp + (t * TW + tw) * C;
            const float* src = sp + ((n * OH + oh) * TW + tw) * C;
            for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
          }
        }
      }
    });
  }
  return {y, pool};
}
