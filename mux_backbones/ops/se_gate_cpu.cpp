// CPU kernel of the squeeze-excite gate (mux_backbones/ops/se_gate.py), fp32.
//
// The gate is two matrix-vector products, an activation and a sigmoid on an (N, C) vector of
// channel means: a few thousand multiply-adds, which stock PyTorch spends six calls on (mean,
// two linear layers, activation, sigmoid, cast) at 5-10 us of dispatch each. Here it is one
// call: per sample, the means from the pooled (partial) sums, the squeeze layer with its
// activation, the excite layer with the sigmoid.
#include <ATen/ATen.h>

#include <ATen/Parallel.h>

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
      for (int64_t c = 0; c < C; ++c)
        gp[n * C + c] = sigmoid(b2[c] + dot(w2 + c * S, hidden.data(), S));
    }
  });
  return gate;
}
