// The CPU kernel of the norm_act op (norm_act.py), fp32: y = act(x * scale + shift) per channel
// of a channels-last map and, optionally, the per-channel sums of y (the squeeze-excite's
// pooling), in one pass over the map instead of three (BN, activation, sum).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <tuple>

#include "cpu_vector.h"

namespace {

using namespace mux_backbones;

// B vectors of channels from `c` on, over one row of W pixels (pixel stride C): scale, shift
// and the row's sums stay in registers while the row streams past. PART: the last, partial
// vector of the channels (B = 1).
template <int ACT, int B, bool PART>
inline void channel_block(const float* x, float* y, int64_t W, int64_t C, const float* scale,
                          const float* shift, float* sums, Lanes<PART> lanes) {
  vec8 sc[B], sh[B], acc[B];
  for (int b = 0; b < B; ++b) {
    sc[b] = lanes.load(scale + 8 * b);
    sh[b] = lanes.load(shift + 8 * b);
    acc[b] = vec8{};
  }
  for (int64_t w = 0; w < W; ++w) {
    vec8 z[B];
    for (int b = 0; b < B; ++b) z[b] = lanes.load(x + w * C + 8 * b) * sc[b] + sh[b];
    activate_all<ACT>(z, B);
    for (int b = 0; b < B; ++b) {
      lanes.store(y + w * C + 8 * b, z[b]);
      acc[b] += z[b];
    }
  }
  if (sums != nullptr)
    for (int b = 0; b < B; ++b) lanes.store(sums + 8 * b, acc[b]);
}

// One row of W pixels; `sums`: the row's C sums (written), or nullptr.
template <int ACT>
void norm_act_row(const float* x, float* y, int64_t W, int64_t C, const float* scale,
                  const float* shift, float* sums) {
  int64_t c = 0;
  for (; c + 16 <= C; c += 16)  // two vectors at a time (SiLU on 16 lanes where that pays)
    channel_block<ACT, 2, false>(x + c, y + c, W, C, scale + c, shift + c,
                                 sums ? sums + c : nullptr, {});
  for (; c + 8 <= C; c += 8)
    channel_block<ACT, 1, false>(x + c, y + c, W, C, scale + c, shift + c,
                                 sums ? sums + c : nullptr, {});
  if (c < C) {
    Lanes<true> rest;
    rest.n = static_cast<int>(C - c);
    channel_block<ACT, 1, true>(x + c, y + c, W, C, scale + c, shift + c,
                                sums ? sums + c : nullptr, rest);
  }
}

}  // namespace

// y = act(x * scale + shift) for x and y (N, C, H, W) channels-last fp32 maps of one size (y may
// be x: in place), scale and shift (C,); returns the (N, C) fp32 sums of y over its pixels with
// `with_sums` (each row summed over its pixels, then the rows in order: the same bits for any
// number of threads), else an empty tensor.
at::Tensor norm_act_into(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                         const at::Tensor& shift, int64_t act, bool with_sums) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu() &&
                  x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "norm_act_forward: x must be a 4-d channels-last fp32 CPU tensor");
  TORCH_CHECK(y.sizes() == x.sizes() && y.scalar_type() == at::kFloat &&
                  y.is_contiguous(at::MemoryFormat::ChannelsLast),
              "norm_act_forward: y must be a channels-last fp32 tensor of x's size");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  for (const at::Tensor* t : {&scale, &shift})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == at::kFloat && t->numel() == C,
                "norm_act_forward: scale and shift must be (C,) contiguous fp32");
  TORCH_CHECK(act >= kNone && act <= kRelu6, "norm_act_forward: unknown activation code");
  auto row_sums = at::empty({with_sums ? N * H : 0, C}, x.options());
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const float* scp = scale.data_ptr<float>();
  const float* shp = shift.data_ptr<float>();
  float* rp = with_sums ? row_sums.data_ptr<float>() : nullptr;
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float* in = xp + row * W * C;
      float* out = yp + row * W * C;
      float* sums = rp ? rp + row * C : nullptr;
      switch (act) {
        case kRelu: norm_act_row<kRelu>(in, out, W, C, scp, shp, sums); break;
        case kSilu: norm_act_row<kSilu>(in, out, W, C, scp, shp, sums); break;
        case kRelu6: norm_act_row<kRelu6>(in, out, W, C, scp, shp, sums); break;
        default: norm_act_row<kNone>(in, out, W, C, scp, shp, sums);
      }
    }
  });
  if (!with_sums) return at::empty({0}, x.options());
  auto sums = at::zeros({N, C}, x.options());
  float* sp = sums.data_ptr<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t c = 0; c < C; ++c) sp[n * C + c] += rp[(n * H + h) * C + c];
  return sums;
}

// The op's forward: (y, sums) as norm_act_into computes them, y a new channels-last map.
std::tuple<at::Tensor, at::Tensor> norm_act_forward(const at::Tensor& x, const at::Tensor& scale,
                                                    const at::Tensor& shift, int64_t act,
                                                    bool with_sums) {
  at::Tensor y = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  at::Tensor sums = norm_act_into(x, y, scale, shift, act, with_sums);
  return {y, sums};
}
