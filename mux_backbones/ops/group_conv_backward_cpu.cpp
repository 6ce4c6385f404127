// CPU kernels of the group-wise conv's backward (mux_backbones/ops/group_conv.py), fp32, NHWC.
//
// Training a MUXNet on the CPU pays for the convs oneDNN has no fast path for three times: the
// forward and both gradients of a 2-channels-per-group conv run 2.5-4x slower there than this
// extension's kernels. The op's forward and its stride-1 input gradient (the forward kernel
// with flipped, pair-transposed weights) are group_conv_cpu.cpp's; this file has the other two:
//
// * the input gradient at stride 2, a transposed conv: each input pixel gathers the output
//   gradients of the taps that reached it. Split by column parity, the columns of one parity
//   read output columns j + offset per tap -- consecutive pixels, as in the forward kernel, so
//   its register blocking carries over (PW pixels x CB vectors of 8 channels per block);
// * the weight gradient, a reduction over every output pixel: per task (an output row of an
//   image) and tap, each 8-channel vector's products with its own input and its pair partner's
//   (the loaded vector with neighbours swapped), summed into the thread's own copy of the
//   packed weight gradient; the copies are added at the end (no atomics, no locks).
#include <ATen/ATen.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "cpu_vector.h"
#include "group_conv_cpu.h"

namespace {

using namespace mux_backbones;

// A tap of one axis and where it reads: the tap index and the output row (or, for columns, the
// offset from the pixel's index within its parity class).
struct Tap {
  int64_t tap, at;
};

// One kernel-size group of the stride-2 input gradient, as one input row sees it. Pointers are
// at the group's first channel (dz at the image, dx at the input row), `C` apart per pixel.
struct InputGradGroup {
  const float* dz;
  const float* w;  // transposed, unflipped packed weights (transposed_weights(flip=False))
  float* dx;
  int64_t OW, W, C, K, group;
};

// PW input pixels of one column parity q (columns 2 * (j0 + p) + q, npix of them exist) x CB
// vectors of 8 channels from c on.
template <int CPG, int PW, int CB>
void input_grad_block(const InputGradGroup& g, const std::vector<Tap>& rows,
                      const std::vector<Tap>& cols, int64_t q, int64_t j0, int64_t npix,
                      int64_t c) {
  vec8 acc[PW][CB] = {};
  for (const Tap& r : rows) {
    const float* dz_row = g.dz + r.at * g.OW * g.C + c;
    for (const Tap& col : cols) {
      vec8 w_own[CB], w_partner[CB];
      load_tap<CPG, CB>(g.w + (r.tap * g.K + col.tap) * CPG * g.group + c, g.group, w_own,
                        w_partner);
      const int64_t ow0 = j0 + col.at;
      const bool inside = npix == PW && ow0 >= 0 && ow0 + PW - 1 < g.OW;
      for (int p = 0; p < PW; ++p) {
        const int64_t ow = ow0 + p;
        if (!inside && (p >= npix || ow < 0 || ow >= g.OW)) continue;
        apply_tap<CPG, CB>(acc[p], dz_row + ow * g.C, w_own, w_partner);
      }
    }
  }
  for (int p = 0; p < npix; ++p) {
    float* out = g.dx + (2 * (j0 + p) + q) * g.C + c;
    for (int b = 0; b < CB; ++b) store8(out + 8 * b, acc[p][b]);
  }
}

// Channels past the last full vector, one at a time (all columns of the row).
template <int CPG>
void input_grad_tail(const InputGradGroup& g, const std::vector<Tap>& rows,
                     const std::vector<Tap> (&cols)[2], int64_t c) {
  for (int64_t iw = 0; iw < g.W; ++iw) {
    const int64_t q = iw & 1, j = iw >> 1;
    for (int64_t o = c; o < g.group; ++o) {
      float acc = 0.f;
      for (const Tap& r : rows) {
        for (const Tap& col : cols[q]) {
          const int64_t ow = j + col.at;
          if (ow < 0 || ow >= g.OW) continue;
          const float* dzp = g.dz + (r.at * g.OW + ow) * g.C;
          const float* tap = g.w + (r.tap * g.K + col.tap) * CPG * g.group;
          if (CPG == 1) {
            acc += dzp[o] * tap[o];
          } else {
            const int64_t first = o & ~int64_t(1);
            acc += dzp[first] * tap[o] + dzp[first + 1] * tap[g.group + o];
          }
        }
      }
      g.dx[iw * g.C + o] = acc;
    }
  }
}

template <int CPG>
void input_grad_row(const InputGradGroup& g, const std::vector<Tap>& rows,
                    const std::vector<Tap> (&cols)[2]) {
  constexpr int PW = 4;
  const int64_t pairs_end = g.group / 16 * 16, vectors_end = g.group / 8 * 8;
  for (int64_t q = 0; q < 2; ++q) {
    const int64_t count = (g.W - q + 1) / 2;  // columns of parity q
    for (int64_t j = 0; j < count; j += PW) {
      const int64_t npix = std::min<int64_t>(PW, count - j);
      for (int64_t c = 0; c < pairs_end; c += 16)
        input_grad_block<CPG, PW, 2>(g, rows, cols[q], q, j, npix, c);
      if (vectors_end > pairs_end)
        input_grad_block<CPG, PW, 1>(g, rows, cols[q], q, j, npix, pairs_end);
    }
  }
  if (vectors_end < g.group) input_grad_tail<CPG>(g, rows, cols, vectors_end);
}

// One kernel-size group of the weight gradient, as one output row sees it. Pointers are at the
// group's first channel (dz at the output row, x at the image, dw in the thread's copy of the
// packed gradient at the group's weights).
struct WeightGradGroup {
  const float* dz;
  const float* x;
  float* dw;
  int64_t H, W, C, OW, K, dil, stride, pad, group;
};

// Adds a tap's sums to its packed rows: for 2 channels per group, `own` (output channel o times
// input o) belongs to row o & 1 and `partner` (times input o ^ 1) to the other row.
template <int CPG>
inline void add_tap(float* tap, int64_t group, int64_t c, vec8 own, vec8 partner) {
  if (CPG == 1) {
    store8(tap + c, load8(tap + c) + own);
  } else {
    store8(tap + c, load8(tap + c) + even_odd(own, partner));
    store8(tap + group + c, load8(tap + group + c) + even_odd(partner, own));
  }
}

template <int CPG>
void weight_grad_row(const WeightGradGroup& g, int64_t oh) {
  const float* dz_row = g.dz;
  for (int64_t kh = 0; kh < g.K; ++kh) {
    const int64_t ih = oh * g.stride - g.pad + kh * g.dil;
    if (ih < 0 || ih >= g.H) continue;
    const float* x_row = g.x + ih * g.W * g.C;
    for (int64_t kw = 0; kw < g.K; ++kw) {
      // Output columns whose input column iw = ow * stride + off lies inside the map.
      const int64_t off = kw * g.dil - g.pad;
      if (off >= g.W) break;  // (and the division below would round towards zero)
      const int64_t ow_lo = off >= 0 ? 0 : (-off + g.stride - 1) / g.stride;
      const int64_t ow_hi = std::min(g.OW, (g.W - 1 - off) / g.stride + 1);
      if (ow_lo >= ow_hi) continue;
      float* tap = g.dw + (kh * g.K + kw) * CPG * g.group;
      const int64_t x_step = g.stride * g.C;
      int64_t c = 0;
      for (; c + 8 <= g.group; c += 8) {
        // Four pixels' chains side by side: the adds of one chain wait on each other.
        vec8 own[4] = {}, partner[4] = {};
        const float* dzp = dz_row + ow_lo * g.C + c;
        const float* xp = x_row + (ow_lo * g.stride + off) * g.C + c;
        int64_t ow = ow_lo;
        for (; ow + 4 <= ow_hi; ow += 4, dzp += 4 * g.C, xp += 4 * x_step) {
          for (int u = 0; u < 4; ++u) {
            const vec8 d = load8(dzp + u * g.C), v = load8(xp + u * x_step);
            own[u] += d * v;
            if (CPG == 2) partner[u] += d * swap_pairs(v);
          }
        }
        for (; ow < ow_hi; ++ow, dzp += g.C, xp += x_step) {
          const vec8 d = load8(dzp), v = load8(xp);
          own[0] += d * v;
          if (CPG == 2) partner[0] += d * swap_pairs(v);
        }
        add_tap<CPG>(tap, g.group, c, (own[0] + own[1]) + (own[2] + own[3]),
                     (partner[0] + partner[1]) + (partner[2] + partner[3]));
      }
      for (; c < g.group; ++c) {  // channels past the last full vector
        float own = 0.f, partner = 0.f;
        for (int64_t ow = ow_lo; ow < ow_hi; ++ow) {
          const float d = dz_row[ow * g.C + c];
          const float* xp = x_row + (ow * g.stride + off) * g.C;
          own += d * xp[c];
          if (CPG == 2) partner += d * xp[c ^ 1];
        }
        if (CPG == 1) {
          tap[c] += own;
        } else {
          tap[(c & 1) * g.group + c] += own;
          tap[(1 - (c & 1)) * g.group + c] += partner;
        }
      }
    }
  }
}

void check_map(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 4 && t.scalar_type() == at::kFloat && t.device().is_cpu() &&
                  t.is_contiguous(at::MemoryFormat::ChannelsLast),
              op, ": ", name, " must be a 4-d fp32 channels-last CPU tensor");
}

}  // namespace

// d input of the stride-2 conv, (N, C, H, W) channels-last: grad (N, C, ceil(H / 2),
// ceil(W / 2)) fp32 channels-last, weight_t the conv's packed weights transposed per pair and
// not flipped (the op's transposed_weights(..., flip=False)).
at::Tensor group_conv_input_grad_s2(const at::Tensor& grad, const at::Tensor& weight_t,
                                    int64_t H, int64_t W, const std::vector<int64_t>& splits,
                                    const std::vector<int64_t>& kernel_sizes,
                                    const std::vector<int64_t>& dilations,
                                    int64_t channels_per_group) {
  const char* op = "group_conv_input_grad_s2";
  check_map(grad, op, "grad");
  TORCH_CHECK(weight_t.is_contiguous() && weight_t.scalar_type() == at::kFloat, op,
              ": weight must be contiguous fp32");
  const int64_t N = grad.size(0), C = grad.size(1), OH = grad.size(2), OW = grad.size(3);
  TORCH_CHECK(OH == (H + 1) / 2 && OW == (W + 1) / 2, op, ": grad is not the stride-2 output");
  const GroupLayout l = group_layout(splits, kernel_sizes, dilations, channels_per_group, C, op);
  TORCH_CHECK(l.values == weight_t.numel(), op, ": splits/kernel sizes do not match the weight");
  auto dx = at::empty({N, C, H, W}, grad.options().memory_format(at::MemoryFormat::ChannelsLast));
  const float* dzp = grad.data_ptr<float>();
  const float* wp = weight_t.data_ptr<float>();
  float* dxp = dx.data_ptr<float>();
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<Tap> rows;
    std::vector<Tap> cols[2];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / H, ih = task % H;
      for (size_t gi = 0; gi < splits.size(); ++gi) {
        const int64_t K = kernel_sizes[gi], dil = dilations[gi], pad = dil * (K / 2);
        // Taps that reach row ih: ih = 2 * oh - pad + kh * dil for an output row oh.
        rows.clear();
        for (int64_t kh = 0; kh < K; ++kh) {
          const int64_t t = ih + pad - kh * dil;
          if (t >= 0 && t % 2 == 0 && t / 2 < OH) rows.push_back({kh, t / 2});
        }
        // Taps that reach column 2 * j + q: output column j + (q + pad - kw * dil) / 2.
        for (int64_t q = 0; q < 2; ++q) {
          cols[q].clear();
          for (int64_t kw = 0; kw < K; ++kw) {
            const int64_t t = q + pad - kw * dil;
            if (t % 2 == 0) cols[q].push_back({kw, t / 2});
          }
        }
        const InputGradGroup g{dzp + n * OH * OW * C + l.first[gi], wp + l.w_offset[gi],
                               dxp + task * W * C + l.first[gi], OW, W, C, K, splits[gi]};
        if (channels_per_group == 1)
          input_grad_row<1>(g, rows, cols);
        else
          input_grad_row<2>(g, rows, cols);
      }
    }
  });
  return dx;
}

// d weight of the conv, packed as pack_weights() packs the weight, fp32: grad the output's
// gradient (N, C, OH, OW), x the input (N, C, H, W), both fp32 channels-last; "same" padding.
at::Tensor group_conv_weight_grad(const at::Tensor& grad, const at::Tensor& x,
                                  const std::vector<int64_t>& splits,
                                  const std::vector<int64_t>& kernel_sizes,
                                  const std::vector<int64_t>& dilations, int64_t stride,
                                  int64_t channels_per_group) {
  const char* op = "group_conv_weight_grad";
  check_map(grad, op, "grad");
  check_map(x, op, "x");
  TORCH_CHECK(stride == 1 || stride == 2, op, ": stride 1 or 2");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = grad.size(2), OW = grad.size(3);
  TORCH_CHECK(grad.size(0) == N && grad.size(1) == C && OH == (H + stride - 1) / stride &&
                  OW == (W + stride - 1) / stride,
              op, ": grad is not the conv's output for x");
  const GroupLayout l = group_layout(splits, kernel_sizes, dilations, channels_per_group, C, op);
  const int64_t numel = l.values;
  // One copy of the gradient per thread, added up at the end.
  auto copies = at::zeros({at::get_num_threads(), numel}, x.options());
  const float* dzp = grad.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  float* cp = copies.data_ptr<float>();
  at::parallel_for(0, N * OH, 1, [&](int64_t begin, int64_t end) {
    float* own_copy = cp + at::get_thread_num() * numel;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / OH, oh = row % OH;
      for (size_t gi = 0; gi < splits.size(); ++gi) {
        const int64_t K = kernel_sizes[gi], dil = dilations[gi];
        const WeightGradGroup g{dzp + row * OW * C + l.first[gi],
                                xp + n * H * W * C + l.first[gi], own_copy + l.w_offset[gi],
                                H, W, C, OW, K, dil, stride, dil * (K / 2), splits[gi]};
        if (channels_per_group == 1)
          weight_grad_row<1>(g, oh);
        else
          weight_grad_row<2>(g, oh);
      }
    }
  });
  return copies.size(0) == 1 ? copies[0] : copies.sum(0);
}
