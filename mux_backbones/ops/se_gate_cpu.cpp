// CPU kernel of the squeeze-excite gate (mux_backbones/ops/se_gate.py), fp32.
//
// The gate is two matrix-vector products, an activation and a sigmoid on an (N, C) vector of
// channel means: a few thousand multiply-adds, which stock PyTorch spends six calls on (mean,
// two linear layers, activation, sigmoid, cast) at 5-10 us of dispatch each. Here it is one
// call: per sample, the means from the pooled (partial) sums, the squeeze layer with its
// activation, the excite layer with the sigmoid -- eight channels' gates as one vector.
#include <ATen/ATen.h>

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <tuple>
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

// One sample's gate from its channel means: hidden = act(w1 @ mean + b1) (S values, kept in
// `hidden`), gate = sigmoid(w2 @ hidden + b2) (C values).
inline void sample_gate(const float* mean, const float* w1, const float* b1, const float* w2,
                        const float* b2, int64_t C, int64_t S, int act, float* hidden,
                        float* gate) {
  for (int64_t s = 0; s < S; ++s) hidden[s] = activate(b1[s] + dot(w1 + s * C, mean, C), act);
  for (int64_t c = 0; c < C; c += 8)  // 8 channels' gates as one vector
    excite_gates(w2 + c * S, b2 + c, hidden, S, static_cast<int>(std::min<int64_t>(8, C - c)),
                 gate + c);
}

void check_fp32(const at::Tensor& t, const char* name, const char* fn = "se_gate_forward") {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(),
              fn, ": ", name, " must be a contiguous fp32 CPU tensor");
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
      sample_gate(mean.data(), w1, b1, w2, b2, C, S, static_cast<int>(act), hidden.data(),
                  gp + n * C);
    }
  });
  return gate;
}

// ---- The squeeze-excite's training form on a whole map, forward and gradients ----
//
// out = y * gate(mean(y)), y = map_act(x) (SqueezeExcite with fused_ops, in eager training,
// with the block's activation before it), each direction in one call, and the autograd node
// joining them in C++ (gated_map below: no Python runs in either direction). The stock training
// form runs ~7 operators forward and ~12 backward per block on vectors of a few hundred values
// (means, two linear layers, activation, sigmoid, product; the gate's product summed, the
// sigmoid's gradient, four matrix products, two bias sums, the activation's gradient, the mean's
// broadcast), each with its dispatch and autograd bookkeeping: at small inputs most of the host
// time a MUXNet-m training step spends beyond MobileNetV2's. Forward: y and its sums in one
// pass, the gate, the product in place; backward: the sums of grad * y (y recomputed from x),
// then the input's gradient with the activation's as its last factor -- the block's activation
// and its gradient no passes of their own. Every output element is summed by one thread in a
// fixed order, so the bits do not depend on the thread count.

namespace {

// A (N, C, H, W) map, contiguous (a row of P pixels per channel) or channels-last (a row of C
// channels per pixel; a map that is both has the same offsets either way).
struct MapShape {
  int64_t N, C, P;
  bool channels_last;
};

MapShape map_shape(const at::Tensor& x, const char* fn) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4, fn,
              ": the map must be a 4-d fp32 CPU tensor");
  const bool contiguous = x.is_contiguous();
  TORCH_CHECK(contiguous || x.is_contiguous(at::MemoryFormat::ChannelsLast), fn,
              ": the map must be contiguous or channels-last");
  return {x.size(0), x.size(1), x.size(2) * x.size(3), !contiguous};
}

inline float sum(const float* a, int64_t n) {
  vec8 acc{};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc += load8(a + i);
  float total = 0.f;
  for (int lane = 0; lane < 8; ++lane) total += acc[lane];
  for (; i < n; ++i) total += a[i];
  return total;
}

// y[i] += a * x[i]
inline void axpy(float a, const float* x, float* y, int64_t n) {
  const vec8 av = splat(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) store8(y + i, load8(y + i) + av * load8(x + i));
  for (; i < n; ++i) y[i] += a * x[i];
}

constexpr int64_t kSumBlock = 64;  // channels of a channels-last map one task sums

// d act(z) / dz as autograd's backward operators take it (threshold_backward on ReLU's
// output, hardtanh_backward, silu_backward); a NaN passes the gradient, as there.
inline float activation_grad(float z, int act) {
  if (act == kRelu) return z <= 0.f ? 0.f : 1.f;
  if (act == kRelu6) return z <= 0.f || z >= 6.f ? 0.f : 1.f;
  if (act == kSilu) {
    const float sig = 1.f / (1.f + std::exp(-z));
    return sig * (1.f + z * (1.f - sig));
  }
  return 1.f;
}

// g * d act(z) / dz on 8 lanes (the same rules)
inline vec8 activation_grad(vec8 g, vec8 z, int act) {
  const vec8 zero{};
  if (act == kRelu) return z <= zero ? zero : g;
  if (act == kRelu6) return (z <= zero) | (z >= splat(6.f)) ? zero : g;
  if (act == kSilu) {
    const vec8 one = splat(1.f);
    const vec8 sig = one / (one + exp_any(-z));
    return g * sig * (one + z * (one - sig));
  }
  return g;
}

// The map activation of the gated map (act(x) before the SE), on `width` lanes of one load.
inline vec8 load_act(const float* p, int width, int act) {
  return activate(width == 8 ? load8(p) : load_part(p, width), act);
}

// One vector that channel_sums adds up, on `width` lanes (those past it 0): a * act(b) where b
// is given, else act(a), which is also stored to y where y is given.
inline vec8 summand(const float* a, const float* b, float* y, int width, int act) {
  if (b) return (width == 8 ? load8(a) : load_part(a, width)) * load_act(b, width, act);
  const vec8 v = load_act(a, width, act);
  if (y && width == 8) store8(y, v);
  else if (y) store_part(y, v, width);
  return v;
}

// out[n, c] = sum over the pixels of act(a) (b null) or of a * act(b), act the map activation;
// without b and with y, act(a) is also written to y. All maps in m's layout.
void channel_sums(const float* a, const float* b, const MapShape& m, float* out, int act,
                  float* y = nullptr) {
  if (!m.channels_last) {
    at::parallel_for(0, m.N * m.C, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, m.P)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const float* ar = a + r * m.P;
        // Without an activation the plain sums keep their own loops (here and below): one
        // loop for both measured slower on the 2-core VM (session 35's review).
        if (act == kNone && !y) {
          out[r] = b ? dot(ar, b + r * m.P, m.P) : sum(ar, m.P);
          continue;
        }
        const float* br = b ? b + r * m.P : nullptr;
        float* yr = y ? y + r * m.P : nullptr;
        vec8 acc{};
        for (int64_t i = 0; i < m.P; i += 8)
          acc += summand(ar + i, br ? br + i : nullptr, yr ? yr + i : nullptr,
                         static_cast<int>(std::min<int64_t>(8, m.P - i)), act);
        float total = 0.f;
        for (int lane = 0; lane < 8; ++lane) total += acc[lane];
        out[r] = total;
      }
    });
    return;
  }
  const int64_t blocks = (m.C + kSumBlock - 1) / kSumBlock;
  at::parallel_for(0, m.N * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, c0 = task % blocks * kSumBlock;
      const int width = static_cast<int>(std::min<int64_t>(kSumBlock, m.C - c0));
      const int full = width / 8, rest = width % 8;
      vec8 acc[kSumBlock / 8 + 1] = {};
      for (int64_t p = 0; p < m.P; ++p) {
        const int64_t row = (n * m.P + p) * m.C + c0;
        const float* ar = a + row;
        const float* br = b ? b + row : nullptr;
        if (act == kNone && !y) {
          for (int v = 0; v < full; ++v)
            acc[v] += br ? load8(ar + 8 * v) * load8(br + 8 * v) : load8(ar + 8 * v);
          if (rest)
            acc[full] += br ? load_part(ar + 8 * full, rest) * load_part(br + 8 * full, rest)
                            : load_part(ar + 8 * full, rest);
          continue;
        }
        float* yr = y ? y + row : nullptr;
        for (int v = 0; v <= full; ++v) {
          const int lanes = v < full ? 8 : rest;
          if (!lanes) break;
          acc[v] += summand(ar + 8 * v, br ? br + 8 * v : nullptr, yr ? yr + 8 * v : nullptr,
                            lanes, act);
        }
      }
      for (int v = 0; v < full; ++v) store8(out + n * m.C + c0 + 8 * v, acc[v]);
      if (rest) store_part(out + n * m.C + c0 + 8 * full, acc[full], rest);
    }
  });
}

// out = a * g[n, c] (+ h[n, c] where h is given), times d act(x) / dx where x is given (the
// input's gradient through the map activation act), in m's layout; out may be a.
void scale_map(const float* a, const float* g, const float* h, const MapShape& m, float* out,
               const float* x = nullptr, int act = kNone) {
  if (act == kNone) x = nullptr;
  if (!m.channels_last) {
    at::parallel_for(0, m.N * m.C, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, m.P)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const vec8 gv = splat(g[r]), hv = splat(h ? h[r] : 0.f);
        const float* ar = a + r * m.P;
        const float* xr = x ? x + r * m.P : nullptr;
        float* o = out + r * m.P;
        int64_t i = 0;
        for (; i + 8 <= m.P; i += 8) {
          const vec8 v = h ? load8(ar + i) * gv + hv : load8(ar + i) * gv;
          store8(o + i, xr ? activation_grad(v, load8(xr + i), act) : v);
        }
        for (; i < m.P; ++i) {
          const float v = h ? ar[i] * g[r] + h[r] : ar[i] * g[r];
          o[i] = xr ? v * activation_grad(xr[i], act) : v;
        }
      }
    });
    return;
  }
  at::parallel_for(0, m.N * m.P, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, m.C)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / m.P;
      const float* ar = a + row * m.C;
      const float* xr = x ? x + row * m.C : nullptr;
      const float* gr = g + n * m.C;
      const float* hr = h ? h + n * m.C : nullptr;
      float* o = out + row * m.C;
      int64_t c = 0;
      for (; c + 8 <= m.C; c += 8) {
        const vec8 v = hr ? load8(ar + c) * load8(gr + c) + load8(hr + c)
                          : load8(ar + c) * load8(gr + c);
        store8(o + c, xr ? activation_grad(v, load8(xr + c), act) : v);
      }
      for (; c < m.C; ++c) {
        const float v = hr ? ar[c] * gr[c] + hr[c] : ar[c] * gr[c];
        o[c] = xr ? v * activation_grad(xr[c], act) : v;
      }
    }
  });
}

struct GateWeights {
  const float *w1, *b1, *w2, *b2;
  int64_t S;
};

GateWeights gate_weights(const at::Tensor& w_reduce, const at::Tensor& b_reduce,
                         const at::Tensor& w_expand, const at::Tensor* b_expand, int64_t C,
                         const char* fn) {
  check_fp32(w_reduce, "w_reduce", fn);
  check_fp32(b_reduce, "b_reduce", fn);
  check_fp32(w_expand, "w_expand", fn);
  if (b_expand) check_fp32(*b_expand, "b_expand", fn);
  // (S, C) and (C, S) matrices, or the 1x1 convs' (S, C, 1, 1) and (C, S, 1, 1) weights
  const int64_t S = w_reduce.dim() ? w_reduce.size(0) : 0;
  TORCH_CHECK(S > 0 && w_reduce.numel() == S * C && w_reduce.size(1) == C &&
              b_reduce.numel() == S && w_expand.size(0) == C && w_expand.numel() == C * S &&
              (!b_expand || b_expand->numel() == C), fn, ": weights do not match the map");
  return {w_reduce.data_ptr<float>(), b_reduce.data_ptr<float>(), w_expand.data_ptr<float>(),
          b_expand ? b_expand->data_ptr<float>() : nullptr, S};
}

// y * gate with y = map_act(x), the gate from y's channel means; returns (out in x's layout,
// means (N, C), gate (N, C)), what gated_map_backward takes.
std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_map_forward(
    const at::Tensor& x, const at::Tensor& w_reduce, const at::Tensor& b_reduce,
    const at::Tensor& w_expand, const at::Tensor& b_expand, int64_t act, int64_t map_act) {
  const char* fn = "gated_map_forward";
  const MapShape m = map_shape(x, fn);
  const GateWeights w = gate_weights(w_reduce, b_reduce, w_expand, &b_expand, m.C, fn);
  TORCH_CHECK(act >= kNone && act <= kRelu6 && map_act >= kNone && map_act <= kRelu6, fn,
              ": unknown activation code");
  auto means = at::empty({m.N, m.C}, x.options());
  auto gate = at::empty({m.N, m.C}, x.options());
  auto out = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  float* mp = means.data_ptr<float>();
  float* gp = gate.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // With a map activation, y is written to out as it is summed, then gated there in place
  // (the activation computed once per element).
  channel_sums(xp, nullptr, m, mp, static_cast<int>(map_act), map_act != kNone ? op : nullptr);
  const float inv = 1.f / static_cast<float>(m.P);
  at::parallel_for(0, m.N, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> hidden(w.S);
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t c = 0; c < m.C; ++c) mp[n * m.C + c] *= inv;
      sample_gate(mp + n * m.C, w.w1, w.b1, w.w2, w.b2, m.C, w.S, static_cast<int>(act),
                  hidden.data(), gp + n * m.C);
    }
  });
  scale_map(map_act != kNone ? op : xp, gp, nullptr, m, op);
  return {out, means, gate};
}

// The gradients of gated_map_forward's output: (d x (undefined unless input_grad), d w_reduce,
// d b_reduce, d w_expand, d b_expand), the weights' in their shapes; grad in x's layout, means
// and gate as the forward gave; x the map before map_act (recomputed where y is needed).
std::vector<at::Tensor> gated_map_backward(const at::Tensor& grad, const at::Tensor& x,
                                        const at::Tensor& means, const at::Tensor& gate,
                                        const at::Tensor& w_reduce, const at::Tensor& b_reduce,
                                        const at::Tensor& w_expand, int64_t act,
                                        int64_t map_act, bool input_grad) {
  const char* fn = "gated_map_backward";
  const MapShape m = map_shape(x, fn);
  // (the same offsets as x's, not the same strides: a dimension of size 1 has any stride)
  TORCH_CHECK(grad.sizes() == x.sizes() &&
              grad.is_contiguous(m.channels_last ? at::MemoryFormat::ChannelsLast
                                                 : at::MemoryFormat::Contiguous) &&
              grad.scalar_type() == at::kFloat && grad.device().is_cpu(), fn,
              ": grad must be an fp32 CPU tensor in the map's layout");
  check_fp32(means, "means", fn);
  check_fp32(gate, "gate", fn);
  TORCH_CHECK(means.numel() == m.N * m.C && gate.numel() == m.N * m.C, fn,
              ": means and gate must be (N, C)");
  const GateWeights w = gate_weights(w_reduce, b_reduce, w_expand, nullptr, m.C, fn);
  TORCH_CHECK(act >= kNone && act <= kRelu6 && map_act >= kNone && map_act <= kRelu6, fn,
              ": unknown activation code");
  const int64_t N = m.N, C = m.C, S = w.S;
  const float* mp = means.data_ptr<float>();
  const float* gp = gate.data_ptr<float>();
  // d loss / d gate logit, from the gate's product summed per channel
  auto logit_grad = at::empty({N, C}, x.options());
  float* dl = logit_grad.data_ptr<float>();
  channel_sums(grad.data_ptr<float>(), x.data_ptr<float>(), m, dl, static_cast<int>(map_act));
  for (int64_t i = 0; i < N * C; ++i) dl[i] *= gp[i] * (1.f - gp[i]);
  // The squeeze layer again (z, h = act(z)), then the gradient of its output h and of z.
  std::vector<float> z(N * S), h(N * S), hidden_grad(N * S, 0.f);
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t s = 0; s < S; ++s) {
        z[n * S + s] = w.b1[s] + dot(w.w1 + s * C, mp + n * C, C);
        h[n * S + s] = activate(z[n * S + s], static_cast<int>(act));
      }
      for (int64_t c = 0; c < C; ++c) axpy(dl[n * C + c], w.w2 + c * S, &hidden_grad[n * S], S);
      for (int64_t s = 0; s < S; ++s)
        hidden_grad[n * S + s] *= activation_grad(z[n * S + s], static_cast<int>(act));
    }
  });
  // (each in its parameter's shape)
  auto gw2 = at::zeros_like(w_expand), gb2 = at::empty({C}, x.options());
  auto gw1 = at::zeros_like(w_reduce), gb1 = at::empty({S}, x.options());
  float *gw2p = gw2.data_ptr<float>(), *gb2p = gb2.data_ptr<float>();
  float *gw1p = gw1.data_ptr<float>(), *gb1p = gb1.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, N * S));
  at::parallel_for(0, C, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      float bias = 0.f;
      for (int64_t n = 0; n < N; ++n) {
        axpy(dl[n * C + c], &h[n * S], gw2p + c * S, S);
        bias += dl[n * C + c];
      }
      gb2p[c] = bias;
    }
  });
  at::parallel_for(0, S, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, N * C)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      float bias = 0.f;
      for (int64_t n = 0; n < N; ++n) {
        axpy(hidden_grad[n * S + s], mp + n * C, gw1p + s * C, C);
        bias += hidden_grad[n * S + s];
      }
      gb1p[s] = bias;
    }
  });
  at::Tensor grad_x;
  if (input_grad) {
    // d mean, spread over the pixels: the broadcast the input's gradient adds
    auto mean_grad = at::zeros({N, C}, x.options());
    float* dm = mean_grad.data_ptr<float>();
    const float inv = 1.f / static_cast<float>(m.P);
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t s = 0; s < S; ++s) axpy(hidden_grad[n * S + s], w.w1 + s * C, dm + n * C, C);
        for (int64_t c = 0; c < C; ++c) dm[n * C + c] *= inv;
      }
    });
    grad_x = at::empty_like(x);
    scale_map(grad.data_ptr<float>(), gp, dm, m, grad_x.data_ptr<float>(), x.data_ptr<float>(),
              static_cast<int>(map_act));
  }
  return {grad_x, gw1, gb1, gw2, gb2};
}

// The autograd node: forward and backward above, differentiable once (a backward that records a
// graph, create_graph=True, is refused: the gradients are not built from differentiable ops).
struct GatedMapFunction : public torch::autograd::Function<GatedMapFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& w_reduce, const at::Tensor& b_reduce,
                            const at::Tensor& w_expand, const at::Tensor& b_expand,
                            int64_t act, int64_t map_act) {
    auto [out, means, gate] = gated_map_forward(x, w_reduce, b_reduce, w_expand, b_expand, act,
                                                map_act);
    ctx->save_for_backward({x, means, gate, w_reduce, b_reduce, w_expand});
    ctx->saved_data["act"] = act;
    ctx->saved_data["map_act"] = map_act;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(), "gated_map: the squeeze-excite's C++ kernels are "
                "differentiable once (no create_graph); build the model with fused_ops=False");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    // (the gradient as x's layout has it: a map that is both takes either)
    const at::Tensor grad = grads[0].contiguous(
        x.is_contiguous() ? at::MemoryFormat::Contiguous : at::MemoryFormat::ChannelsLast);
    auto result = gated_map_backward(grad, x, saved[1], saved[2], saved[3], saved[4], saved[5],
                                     ctx->saved_data["act"].toInt(),
                                     ctx->saved_data["map_act"].toInt(), ctx->needs_input_grad(0));
    result.push_back(at::Tensor());  // (act)
    result.push_back(at::Tensor());  // (map_act)
    return result;
  }
};

}  // namespace

// y * gate(mean(y)), y = map_act(x), as one autograd node: the squeeze-excite's training form
// on its kernels (with the block's activation before it).
at::Tensor gated_map(const at::Tensor& x, const at::Tensor& w_reduce, const at::Tensor& b_reduce,
                     const at::Tensor& w_expand, const at::Tensor& b_expand, int64_t act,
                     int64_t map_act) {
  return GatedMapFunction::apply(x, w_reduce, b_reduce, w_expand, b_expand, act, map_act);
}
