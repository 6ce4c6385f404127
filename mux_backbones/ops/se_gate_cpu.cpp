// CPU kernel of the squeeze-excite gate (mux_backbones/ops/se_gate.py), fp32.
//
// The gate is two matrix-vector products, an activation and a sigmoid on an (N, C) vector of
// channel means: a few thousand multiply-adds, which stock PyTorch spends six calls on (mean,
// two linear layers, activation, sigmoid, cast) at 5-10 us of dispatch each. Here it is one
// call: per sample, the means from the pooled (partial) sums, the squeeze layer with its
// activation, the excite layer with the sigmoid -- eight channels' gates as one vector.
#include <ATen/ATen.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu_vector.h"

namespace {

using namespace mux_backbones;

// sum_i a[i] * b[i], 8 lanes at a time.
inline float dot(const float* a, const float* b, int64_t n) {
  vec8 acc{};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc += load8(a + i) * load8(b + i);
  float total = 0.f;
  for (int lane = 0; lane < 8; ++lane) total += acc[lane];
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

// Lane k: the sum of the lanes of a[k] (eight horizontal sums at once, by halving twice).
inline vec8 lane_sums(const vec8 (&a)[8]) {
  vec8 pairs[4], quads[2];
  for (int k = 0; k < 4; ++k)  // lanes 2j, 2j+1: a[2k], a[2k+1]'s pairs of lanes summed
    pairs[k] = __builtin_shuffle(a[2 * k], a[2 * k + 1], (lanes8){0, 8, 2, 10, 4, 12, 6, 14}) +
               __builtin_shuffle(a[2 * k], a[2 * k + 1], (lanes8){1, 9, 3, 11, 5, 13, 7, 15});
  for (int k = 0; k < 2; ++k)  // lanes 0-3 and 4-7: four vectors' quarters summed
    quads[k] = __builtin_shuffle(pairs[2 * k], pairs[2 * k + 1],
                                 (lanes8){0, 1, 8, 9, 4, 5, 12, 13}) +
               __builtin_shuffle(pairs[2 * k], pairs[2 * k + 1],
                                 (lanes8){2, 3, 10, 11, 6, 7, 14, 15});
  return __builtin_shuffle(quads[0], quads[1], (lanes8){0, 1, 2, 3, 8, 9, 10, 11}) +
         __builtin_shuffle(quads[0], quads[1], (lanes8){4, 5, 6, 7, 12, 13, 14, 15});
}

// The excite layer's gates of channels [c, c + n) (n <= 8): sigmoid(b + w @ hidden) with w's
// rows S apart, as one vector (lanes past n are not stored).
inline void excite_gates(const float* w, const float* b, const float* hidden, int64_t S,
                         int n, float* gate) {
  vec8 acc[8] = {};
  for (int64_t s = 0; s < S; s += 8) {
    const int width = static_cast<int>(std::min<int64_t>(8, S - s));
    const vec8 h = width == 8 ? load8(hidden + s) : load_part(hidden + s, width);
    for (int k = 0; k < n; ++k)
      acc[k] += (width == 8 ? load8(w + k * S + s) : load_part(w + k * S + s, width)) * h;
  }
  const vec8 logits = lane_sums(acc) + (n == 8 ? load8(b) : load_part(b, n));
  vec8 gates = splat(1.f) / (splat(1.f) + exp_any(-logits));  // 0 / 1 where it saturates
  gates = logits != logits ? logits : gates;  // (a NaN logit stays NaN, as in torch)
  if (n == 8)
    store8(gate, gates);
  else
    store_part(gate, gates, n);
}

void check_fp32(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(),
              "se_gate_forward: ", name, " must be a contiguous fp32 CPU tensor");
}

}  // namespace

// The gate sigmoid(w_expand @ act(w_reduce @ mean + b_reduce) + b_expand) per sample, mean =
// the (N, C) sums or the (N, T, C) partial sums added over T, times inv_pixels; (N, C) fp32.
at::Tensor se_gate_forward(const at::Tensor& sums, double inv_pixels,
                              const at::Tensor& w_reduce, const at::Tensor& b_reduce,
                              const at::Tensor& w_expand, const at::Tensor& b_expand,
                              int64_t act) {
  check_fp32(sums, "sums");
  check_fp32(w_reduce, "w_reduce");
  check_fp32(b_reduce, "b_reduce");
  check_fp32(w_expand, "w_expand");
  check_fp32(b_expand, "b_expand");
  TORCH_CHECK(sums.dim() == 2 || sums.dim() == 3, "se_gate_forward: sums must be (N, C) or "
              "(N, T, C)");
  TORCH_CHECK(act >= kNone && act <= kRelu6, "se_gate_forward: unknown activation code");
  const int64_t N = sums.size(0), C = sums.size(-1), T = sums.dim() == 3 ? sums.size(1) : 1;
  const int64_t S = w_reduce.size(0);
  TORCH_CHECK(w_reduce.dim() == 2 && w_reduce.size(1) == C && b_reduce.numel() == S &&
              w_expand.dim() == 2 && w_expand.size(0) == C && w_expand.size(1) == S &&
              b_expand.numel() == C, "se_gate_forward: weights do not match the sums");
  auto gate = at::empty({N, C}, sums.options());
  const float* sp = sums.data_ptr<float>();
  const float* w1 = w_reduce.data_ptr<float>();
  const float* b1 = b_reduce.data_ptr<float>();
  const float* w2 = w_expand.data_ptr<float>();
  const float* b2 = b_expand.data_ptr<float>();
  float* gp = gate.data_ptr<float>();
  const float scale = static_cast<float>(inv_pixels);
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> mean(C), hidden(S);
    for (int64_t n = begin; n < end; ++n) {
      const float* part = sp + n * T * C;
      for (int64_t c = 0; c < C; ++c) mean[c] = part[c];
      for (int64_t t = 1; t < T; ++t)
        for (int64_t c = 0; c < C; ++c) mean[c] += part[t * C + c];
      for (int64_t c = 0; c < C; ++c) mean[c] *= scale;
      for (int64_t s = 0; s < S; ++s)
        hidden[s] = activate(b1[s] + dot(w1 + s * C, mean.data(), C), static_cast<int>(act));
      for (int64_t c = 0; c < C; c += 8)  // 8 channels' gates as one vector
        excite_gates(w2 + c * S, b2 + c, hidden.data(), S,
                     static_cast<int>(std::min<int64_t>(8, C - c)), gp + n * C + c);
    }
  });
  return gate;
}
