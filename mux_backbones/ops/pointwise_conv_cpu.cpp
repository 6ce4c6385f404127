// CPU kernel of the 1x1 conv with its epilogue (mux_backbones/ops/pointwise_conv.py), fp32.
//
// The product is BLAS's (torch's at::mm / at::addmm: MKL or OpenBLAS, threaded by them); what
// this file adds is the rest of the op in one call: a squeeze-excite scale folded into each
// sample's weight (or rows, whichever has fewer values) instead of a scaled copy of the map, and
// the residual add and the interleave with a channel-multiplexed block's copied channels in one
// pass over the product (the stock path: an add and a stack, each a pass and a Python call).
#include <ATen/ATen.h>

#include <ATen/Parallel.h>

#include "cpu_vector.h"

namespace {

using namespace mux_backbones;

inline void interleave_store(float* out, vec8 v, vec8 k) {
  store8(out, __builtin_shuffle(v, k, (lanes8){0, 8, 1, 9, 2, 10, 3, 11}));
  store8(out + 8, __builtin_shuffle(v, k, (lanes8){4, 12, 5, 13, 6, 14, 7, 15}));
}

void check_rows(const at::Tensor& t, const char* name, int64_t rows, int64_t cols) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 2 &&
              t.size(0) == rows && t.size(1) == cols && (cols <= 1 || t.stride(1) == 1),
              "pointwise_conv_forward: ", name, " must be fp32 CPU (", rows, ", ", cols,
              ") rows with unit channel stride");
}

}  // namespace

// act((rows * scale) @ weight + bias) + residual, interleaved channel by channel with kept:
// the op's contract (pointwise_conv.py). rows (M, K) and residual/kept (M, C) may have any row
// stride; weight (K, C) any strides; scale (N, K) per sample (its rows the M / N of each).
at::Tensor pointwise_conv_forward(const at::Tensor& rows, const at::Tensor& weight,
                                     const c10::optional<at::Tensor>& bias,
                                     const c10::optional<at::Tensor>& residual,
                                     const c10::optional<at::Tensor>& kept, int64_t act,
                                     const c10::optional<at::Tensor>& scale) {
  TORCH_CHECK(rows.dim() == 2 && weight.dim() == 2 && weight.size(0) == rows.size(1),
              "pointwise_conv_forward: rows must be (M, K) and weight (K, C)");
  const int64_t M = rows.size(0), K = rows.size(1), C = weight.size(1);
  check_rows(rows, "rows", M, K);
  TORCH_CHECK(weight.device().is_cpu() && weight.scalar_type() == at::kFloat,
              "pointwise_conv_forward: weight must be fp32 CPU");
  TORCH_CHECK(act >= kNone && act <= kRelu6, "pointwise_conv_forward: unknown activation code");
  const bool has_bias = bias.has_value() && bias->defined();
  const bool has_residual = residual.has_value() && residual->defined();
  const bool has_kept = kept.has_value() && kept->defined();
  if (has_bias)
    TORCH_CHECK(bias->device().is_cpu() && bias->scalar_type() == at::kFloat &&
                bias->dim() == 1 && bias->size(0) == C,
                "pointwise_conv_forward: bias must be (C,) fp32 CPU");
  if (has_residual) check_rows(*residual, "residual", M, C);
  if (has_kept) check_rows(*kept, "kept", M, C);

  at::Tensor out;
  if (scale.has_value() && scale->defined()) {
    const int64_t N = scale->size(0);
    TORCH_CHECK(scale->device().is_cpu() && scale->scalar_type() == at::kFloat &&
                scale->dim() == 2 && scale->size(1) == K && N > 0 && M % N == 0,
                "pointwise_conv_forward: scale must be fp32 CPU (N, K), N dividing M");
    const int64_t P = M / N;
    auto per_sample = rows.view({N, P, K});
    if (C <= P) {  // fewer weight values than row values to scale
      auto weights = scale->unsqueeze(2) * weight.unsqueeze(0);
      out = has_bias ? at::baddbmm(*bias, per_sample, weights) : at::bmm(per_sample, weights);
    } else {
      auto scaled = per_sample * scale->unsqueeze(1);
      out = has_bias ? at::addmm(*bias, scaled.view({M, K}), weight)
                     : at::mm(scaled.view({M, K}), weight);
    }
    out = out.view({M, C});
  } else {
    out = has_bias ? at::addmm(*bias, rows, weight) : at::mm(rows, weight);
  }
  if (!has_residual && !has_kept) {  // torch's own in-place activations (vectorised)
    if (act == kRelu) out.relu_();
    if (act == kSilu) at::silu_(out);
    if (act == kRelu6) at::hardtanh_(out, 0.0, 6.0);
    return out;
  }
  // One pass: activation, residual, interleave.
  auto result = has_kept ? at::empty({M, 2 * C}, rows.options()) : out;
  const float* op = out.data_ptr<float>();
  float* rp = result.data_ptr<float>();
  const float* res = has_residual ? residual->data_ptr<float>() : nullptr;
  const float* kp = has_kept ? kept->data_ptr<float>() : nullptr;
  const int64_t res_row = has_residual ? residual->stride(0) : 0;
  const int64_t kept_row = has_kept ? kept->stride(0) : 0;
  const int64_t out_row = has_kept ? 2 * C : C;
  const int ac = static_cast<int>(act);
  at::parallel_for(0, M, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const float* o = op + m * C;
      float* r = rp + m * out_row;
      const float* rs = res ? res + m * res_row : nullptr;
      const float* k = kp ? kp + m * kept_row : nullptr;
      int64_t j = 0;
      for (; j + 8 <= C; j += 8) {
        vec8 v = activate(load8(o + j), ac);
        if (rs) v += load8(rs + j);
        if (k)
          interleave_store(r + 2 * j, v, load8(k + j));
        else
          store8(r + j, v);
      }
      for (; j < C; ++j) {
        float v = activate(o[j], ac);
        if (rs) v += rs[j];
        if (k) {
          r[2 * j] = v;
          r[2 * j + 1] = k[j];
        } else {
          r[j] = v;
        }
      }
    }
  });
  return result;
}
