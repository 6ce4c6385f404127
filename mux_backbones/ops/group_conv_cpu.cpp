// CPU kernel of the fused group-wise conv (mux_backbones/ops/group_conv.py), fp32, NHWC.
//
// oneDNN has no fast path for a conv with 2 channels per group (4-10x a depth-wise conv of the
// same size), and a MixConv reaches it as one conv per kernel size or as one zero-padded conv
// at the largest size. This kernel computes every kernel-size group of a layer at its own size,
// 1 or 2 channels per group, straight into the channels-last output.
//
// oneDNN's depth-wise conv is fast, but an activation after it and the squeeze-excite's pooling
// are passes of their own: for a plain depth-wise conv with an epilogue this kernel is faster too.
//
// Work: one output row of one image per task (torch's intra-op thread pool); per group, blocks
// of PW output pixels x CB vectors of 8 channels held in registers across all taps, so each
// tap's weights are loaded once per block and its inputs once per pixel. Pixels outer, channels
// inner: a block's inputs (all channels of a few pixels of K rows) and the layer's weights stay
// in L1 while every channel block uses them. Blocks whose taps all lie inside the map have no
// bounds test in their tap loop; edge blocks give each pixel its range of valid taps; the
// channels past a group's last whole vector are one partial vector (masked loads and stores).
// A pair partner of a 2-channels-per-group conv is the loaded vector with neighbours swapped.
// The vectors are GCC's generic vector type: AVX/AVX-512 or NEON, whatever the compiler targets
// (built with -march=native on the machine that runs it, see _cpu_kernels.py). The accumulators
// start from the bias; the epilogue (activation, store, and with pool tiles the sums per tile
// for the squeeze-excite that follows: the op's `with_pool`) runs once per block out of
// registers.
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
// channel (x at the image, y at the output row); channels are `group` wide, `xs` apart per pixel
// in x and `ys` in y (C, the conv's channels, for compact maps; more for channel slices of wider
// ones), the C channels' pool sums `C` apart per tile.
struct Group {
  const float* x;
  const float* w;
  const float* bias;  // nullptr: none
  float* y;
  int64_t H, W, C, xs, ys, OW, K, dil, stride, pad, group;
  int act;
  // Squeeze-excite pooling: the row's sums per tile of `tile_w` output columns, `C` apart per
  // tile (nullptr: no pooling). Each task owns its row, so no two threads add to one sum.
  float* row_sums;
  int64_t tile_w;
};

// A block's outputs, out of registers (the epilogue's branches stay out of the tap loop):
// activated, stored, and with pooling added to their row's tile sums -- the pixels of one tile
// summed in a register first, so consecutive pixels do not chain through one sum in memory.
template <int PW, int CB, bool PART, int ACT>
void finish_block(const Group& g, vec8* acc, int64_t ow0, int npix, int64_t c,
                  Lanes<PART> lanes) {
  activate_all<ACT>(acc, npix * CB);
  float* out = g.y + ow0 * g.ys + c;
  if (g.row_sums == nullptr) {
    for (int p = 0; p < npix; ++p)
      for (int b = 0; b < CB; ++b) lanes.store(out + p * g.ys + 8 * b, acc[p * CB + b]);
    return;
  }
  vec8 part[CB] = {};
  int64_t tile = ow0 / g.tile_w;
  auto flush = [&] {
    float* sums = g.row_sums + tile * g.C + c;
    for (int b = 0; b < CB; ++b) lanes.store(sums + 8 * b, lanes.load(sums + 8 * b) + part[b]);
  };
  for (int p = 0; p < npix; ++p) {
    if ((ow0 + p) / g.tile_w != tile) {
      flush();
      tile = (ow0 + p) / g.tile_w;
      for (int b = 0; b < CB; ++b) part[b] = vec8{};
    }
    for (int b = 0; b < CB; ++b) {
      const vec8 v = acc[p * CB + b];
      lanes.store(out + p * g.ys + 8 * b, v);
      part[b] += v;
    }
  }
  flush();
}

template <int PW, int CB, bool PART>
void finish_block(const Group& g, vec8* acc, int64_t ow0, int npix, int64_t c,
                  Lanes<PART> lanes) {
  switch (g.act) {  // one branch per block, not per vector
    case kRelu: finish_block<PW, CB, PART, kRelu>(g, acc, ow0, npix, c, lanes); break;
    case kSilu: finish_block<PW, CB, PART, kSilu>(g, acc, ow0, npix, c, lanes); break;
    case kRelu6: finish_block<PW, CB, PART, kRelu6>(g, acc, ow0, npix, c, lanes); break;
    default: finish_block<PW, CB, PART, kNone>(g, acc, ow0, npix, c, lanes); break;
  }
}

// The taps of one output row that lie inside the map vertically: [kh_lo, kh_hi).
struct RowTaps {
  int64_t ih0, kh_lo, kh_hi;  // ih0: the input row of tap 0 (may lie outside)
};

inline RowTaps row_taps(const Group& g, int64_t oh) {
  RowTaps t{oh * g.stride - g.pad, 0, g.K};
  while (t.kh_lo < g.K && t.ih0 + t.kh_lo * g.dil < 0) ++t.kh_lo;
  while (t.kh_hi > t.kh_lo && t.ih0 + (t.kh_hi - 1) * g.dil >= g.H) --t.kh_hi;
  return t;
}

// A block's accumulators, each pixel's starting from the bias of its channels (or zero).
template <int PW, int CB, bool PART>
inline void start_from_bias(const Group& g, int64_t c, Lanes<PART> lanes, vec8 (&acc)[PW][CB]) {
  for (int b = 0; b < CB; ++b) {
    const vec8 init = g.bias ? lanes.load(g.bias + c + 8 * b) : vec8{};
    for (int p = 0; p < PW; ++p) acc[p][b] = init;
  }
}

// PW output pixels from ow0 on, x CB vectors of 8 channels from c on, every tap of which lies
// inside the map horizontally: no bounds test in the tap loop; the accumulators stay in
// registers over all taps (each tap's weights loaded once per block, its inputs once per pixel).
template <int CPG, int PW, int CB, bool PART>
void inner_block(const Group& g, const RowTaps& t, int64_t ow0, int64_t c, Lanes<PART> lanes) {
  vec8 acc[PW][CB];
  start_from_bias(g, c, lanes, acc);
  const int64_t step = g.stride * g.xs, tap_step = g.dil * g.xs;
  for (int64_t kh = t.kh_lo; kh < t.kh_hi; ++kh) {
    const float* in[PW];
    in[0] = g.x + ((t.ih0 + kh * g.dil) * g.W + ow0 * g.stride - g.pad) * g.xs + c;
    for (int p = 1; p < PW; ++p) in[p] = in[p - 1] + step;
    const float* w = g.w + kh * g.K * CPG * g.group + c;
    for (int64_t kw = 0; kw < g.K; ++kw) {
      vec8 w_own[CB], w_partner[CB];
      load_tap<CPG, CB>(w, g.group, w_own, w_partner, lanes);
      w += CPG * g.group;
      for (int p = 0; p < PW; ++p) {
        apply_tap<CPG, CB>(acc[p], in[p], w_own, w_partner, lanes);
        in[p] += tap_step;
      }
    }
  }
  vec8 out[PW * CB];
  std::memcpy(out, acc, sizeof(out));
  finish_block<PW, CB>(g, out, ow0, PW, c, lanes);
}

// PW output pixels from ow0 on (npix <= PW of them exist) near the left or right edge: each
// pixel takes the taps [lo, hi) whose input columns lie inside the map.
template <int CPG, int PW, int CB, bool PART>
void edge_block(const Group& g, const RowTaps& t, int64_t ow0, int npix, int64_t c,
                Lanes<PART> lanes) {
  vec8 acc[PW][CB];
  start_from_bias(g, c, lanes, acc);
  int64_t iw0[PW], lo[PW], hi[PW];  // per pixel: the input column of tap 0 (may lie outside)
  for (int p = 0; p < PW; ++p) {
    iw0[p] = (ow0 + p) * g.stride - g.pad;
    lo[p] = 0;
    hi[p] = p < npix ? g.K : 0;
    while (lo[p] < hi[p] && iw0[p] + lo[p] * g.dil < 0) ++lo[p];
    while (hi[p] > lo[p] && iw0[p] + (hi[p] - 1) * g.dil >= g.W) --hi[p];
  }
  for (int64_t kh = t.kh_lo; kh < t.kh_hi; ++kh) {
    const float* x_row = g.x + (t.ih0 + kh * g.dil) * g.W * g.xs + c;
    const float* w = g.w + kh * g.K * CPG * g.group + c;
    for (int64_t kw = 0; kw < g.K; ++kw, w += CPG * g.group) {
      vec8 w_own[CB], w_partner[CB];
      load_tap<CPG, CB>(w, g.group, w_own, w_partner, lanes);
      for (int p = 0; p < PW; ++p)
        if (kw >= lo[p] && kw < hi[p])
          apply_tap<CPG, CB>(acc[p], x_row + (iw0[p] + kw * g.dil) * g.xs, w_own, w_partner,
                             lanes);
    }
  }
  vec8 out[PW * CB];
  std::memcpy(out, acc, sizeof(out));
  finish_block<PW, CB>(g, out, ow0, npix, c, lanes);
}

// A block of PW output pixels from ow0 on (npix of them exist) across the group's channels:
// blocks of 16 and 8 channels, then the channels past the last whole vector as one partial
// vector; without bounds tests where all its taps lie inside the map.
// (Not inlined: in a function of its own the tap loop's pointers stay in registers.)
template <int CPG, int PW>
__attribute__((noinline)) void pixel_block(const Group& g, const RowTaps& t, int64_t ow0,
                                           int npix, bool inner) {
  const int64_t c16 = g.group / 16 * 16, c8 = g.group / 8 * 8;
  const Lanes<false> whole;
  const Lanes<true> rest{static_cast<int>(g.group - c8)};
  if (inner) {
    for (int64_t c = 0; c < c16; c += 16) inner_block<CPG, PW, 2>(g, t, ow0, c, whole);
    if (c8 > c16) inner_block<CPG, PW, 1>(g, t, ow0, c16, whole);
    if (rest.n > 0) inner_block<CPG, PW, 1>(g, t, ow0, c8, rest);
  } else {
    for (int64_t c = 0; c < c16; c += 16) edge_block<CPG, PW, 2>(g, t, ow0, npix, c, whole);
    if (c8 > c16) edge_block<CPG, PW, 1>(g, t, ow0, npix, c16, whole);
    if (rest.n > 0) edge_block<CPG, PW, 1>(g, t, ow0, npix, c8, rest);
  }
}

template <int CPG>
void group_row(const Group& g, int64_t oh) {
  constexpr int PW = 4;
  const RowTaps t = row_taps(g, oh);
  // Output columns whose taps all lie inside: ow * stride >= pad and
  // ow * stride - pad + (K - 1) * dil <= W - 1.
  const int64_t in_lo = (g.pad + g.stride - 1) / g.stride;
  const int64_t last = g.W - 1 + g.pad - (g.K - 1) * g.dil;
  const int64_t in_hi = last < 0 ? 0 : last / g.stride + 1;
  for (int64_t ow = 0; ow < g.OW; ow += PW) {  // pixels outer (see the top of the file)
    const int npix = static_cast<int>(std::min<int64_t>(PW, g.OW - ow));
    pixel_block<CPG, PW>(g, t, ow, npix, npix == PW && ow >= in_lo && ow + PW <= in_hi);
  }
}

}  // namespace

namespace {

// The pixel stride of an (N, C, H, W) map whose channels are consecutive and whose pixels lie
// that far apart, row after row, image after image: a channels-last map (C) or a channel slice of
// one (the wider map's channels); 0 for any other layout.
int64_t pixel_stride(const at::Tensor& t) {
  if (t.is_contiguous(at::MemoryFormat::ChannelsLast)) return t.size(1);
  const int64_t ps = t.stride(3);
  const bool rows = t.stride(1) == 1 && ps >= t.size(1) && t.stride(2) == t.size(3) * ps &&
                    t.stride(0) == t.size(2) * t.stride(2);
  return rows ? ps : 0;
}

}  // namespace

// The op's forward into `y`: x (N, C, H, W) fp32 with its channels consecutive (any other layout
// is copied to channels-last first; see pixel_stride), y (N, C, ceil(H / stride),
// ceil(W / stride)) fp32 likewise, e.g. a channel slice of a wider map -- written, not read;
// weight, bias, activation and pooling as for group_conv_forward. Returns the pool tensor.
at::Tensor group_conv_into(const at::Tensor& x_in, const at::Tensor& y,
                           const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                           const std::vector<int64_t>& splits,
                           const std::vector<int64_t>& kernel_sizes,
                           const std::vector<int64_t>& dilations, int64_t stride,
                           int64_t channels_per_group, int64_t act, int64_t pool_tile_h,
                           int64_t pool_tile_w) {
  TORCH_CHECK(x_in.dim() == 4 && x_in.scalar_type() == at::kFloat && x_in.device().is_cpu(),
              "group_conv_forward: x must be a 4-d fp32 CPU tensor");
  const at::Tensor x = pixel_stride(x_in) ? x_in
                                          : x_in.contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(weight.is_contiguous() && weight.scalar_type() == at::kFloat,
              "group_conv_forward: weight must be contiguous fp32");
  TORCH_CHECK(act >= kNone && act <= kRelu6, "group_conv_forward: unknown activation code");
  TORCH_CHECK((pool_tile_h > 0) == (pool_tile_w > 0) && pool_tile_h >= 0,
              "group_conv_forward: pool tile sizes must both be > 0 (pooling) or both 0");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = (H + stride - 1) / stride, OW = (W + stride - 1) / stride;
  const int64_t xs = pixel_stride(x), ys = pixel_stride(y);
  TORCH_CHECK(y.sizes() == at::IntArrayRef({N, C, OH, OW}) && y.scalar_type() == at::kFloat &&
                  y.device().is_cpu() && ys > 0,
              "group_conv_forward: y must be an fp32 CPU map of the output's size with its "
              "channels consecutive");
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
  const bool pooled = pool_tile_h > 0;
  const int64_t TW = pooled ? (OW + pool_tile_w - 1) / pool_tile_w : 0;
  const int64_t TH = pooled ? (OH + pool_tile_h - 1) / pool_tile_h : 0;
  // Per output row, its sums per column tile; added up over each tile's rows at the end.
  // (Without pooling both sum tensors are empty: at::empty, not a zero-filling at::zeros -- a
  // spatial multiplexing block makes three such calls, ~1-2 us of dispatch each.)
  auto row_sums = pooled ? at::zeros({N * OH * TW * C}, x.options()) : at::empty({0}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  float* sp = row_sums.data_ptr<float>();
  at::parallel_for(0, N * OH, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / OH, oh = row % OH;
      for (size_t gi = 0; gi < splits.size(); ++gi) {
        const int64_t K = kernel_sizes[gi], dil = dilations[gi];
        const Group g{xp + n * H * W * xs + l.first[gi], wp + l.w_offset[gi],
                      b ? b + l.first[gi] : nullptr, yp + row * OW * ys + l.first[gi],
                      H, W, C, xs, ys, OW, K, dil, stride, dil * (K / 2), splits[gi],
                      static_cast<int>(act),
                      pooled ? sp + row * TW * C + l.first[gi] : nullptr, pool_tile_w};
        if (channels_per_group == 1)
          group_row<1>(g, oh);
        else
          group_row<2>(g, oh);
      }
    }
  });
  auto pool = pooled ? at::zeros({N, TH * TW, C}, x.options())
                     : at::empty({0, TH * TW, C}, x.options());
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
  return pool;
}

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
  const int64_t OH = (x.size(2) + stride - 1) / stride, OW = (x.size(3) + stride - 1) / stride;
  auto y = at::empty({x.size(0), x.size(1), OH, OW},
                     x.options().memory_format(at::MemoryFormat::ChannelsLast));
  at::Tensor pool = group_conv_into(x, y, weight, bias, splits, kernel_sizes, dilations, stride,
                                    channels_per_group, act, pool_tile_h, pool_tile_w);
  return {y, pool};
}
