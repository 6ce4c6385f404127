// Vector helpers and activations shared by the CPU kernels of mux_backbones/ops (fp32).
//
// GCC's generic vector types: the compiler emits AVX/AVX-512 or NEON, whatever the machine that
// builds the extension has (-march=native, see _cpu_kernels.py).
#pragma once

#include <cstdint>
#include <cstring>

#ifdef __AVX512VL__
#include <immintrin.h>
#endif

namespace mux_backbones {

typedef float vec8 __attribute__((vector_size(32)));
typedef int lanes8 __attribute__((vector_size(32)));

inline vec8 load8(const float* p) {
  vec8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store8(float* p, vec8 v) { std::memcpy(p, &v, sizeof(v)); }

// The first n (0 < n <= 8) lanes of p, the others zero; p[n..7] are not read (they may lie past
// the end of a tensor). AVX-512 has masked loads and stores for this; elsewhere a copy.
inline vec8 load_part(const float* p, int n) {
#ifdef __AVX512VL__
  return (vec8)_mm256_maskz_loadu_ps(static_cast<__mmask8>((1u << n) - 1), p);
#else
  float lanes[8] = {};
  std::memcpy(lanes, p, sizeof(float) * n);
  return load8(lanes);
#endif
}

// v's first n (0 < n <= 8) lanes to p; p[n..7] are not touched.
inline void store_part(float* p, vec8 v, int n) {
#ifdef __AVX512VL__
  _mm256_mask_storeu_ps(p, static_cast<__mmask8>((1u << n) - 1), (__m256)v);
#else
  std::memcpy(p, &v, sizeof(float) * n);
#endif
}

// How a kernel loads and stores a vector of channels: all 8 lanes, or (PART) the first n --
// the channels past a group's last whole vector.
template <bool PART>
struct Lanes {
  int n = 8;
  vec8 load(const float* p) const { return PART ? load_part(p, n) : load8(p); }
  void store(float* p, vec8 v) const {
    if (PART)
      store_part(p, v, n);
    else
      store8(p, v);
  }
};

inline vec8 splat(float v) { return vec8{v, v, v, v, v, v, v, v}; }

// Even lanes from a, odd lanes from b.
inline vec8 even_odd(vec8 a, vec8 b) {
  return __builtin_shuffle(a, b, (lanes8){0, 9, 2, 11, 4, 13, 6, 15});
}

// Neighbouring lanes swapped: each channel's pair partner in a 2-channels-per-group conv.
inline vec8 swap_pairs(vec8 v) { return __builtin_shuffle(v, (lanes8){1, 0, 3, 2, 5, 4, 7, 6}); }

// exp(r) for r in [-ln2/2, ln2/2]: a degree-5 polynomial fitted to it there (least squares at
// Chebyshev nodes: 1.5e-7 relative with these float coefficients; a Taylor polynomial needs
// degree 6 for that). V: a vector of 8 or 16 floats (the same operations on each lane).
template <typename V>
inline V exp_poly(V r) {
  V p = V{} + 0.00829171669f;
  p = p * r + 0.0419150293f;
  p = p * r + 0.166676626f;
  p = p * r + 0.499989003f;
  p = p * r + 0.999999642f;
  return p * r + 1.00000012f;
}

// The reduced argument r = x - n ln2 (ln2 in two parts, the first exact times any n here).
template <typename V>
inline V exp_remainder(V x, V n) {
  return (x - n * 0.693145752f) - n * 1.42860677e-6f;
}

// 2^n * exp(r) for x = n ln2 + r, r in [-ln2/2, ln2/2]. x must lie in [-87, 88], where 2^n
// stays a normal float.
inline vec8 exp_reduced(vec8 x) {
  const vec8 magic = splat(12582912.f);  // 1.5 * 2^23: adding it rounds to an integer
  const vec8 n = (x * splat(1.44269504f) + magic) - magic;
  const vec8 p = exp_poly(exp_remainder(x, n));
  const lanes8 bits = (__builtin_convertvector(n, lanes8) + 127) << 23;
  vec8 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// exp(x) for every float x but NaN: infinite above ~88.7 (elsewhere than AVX-512: above 88) as
// the float exp overflows; below -87 the subnormals down to 0 on AVX-512, exp(-87) elsewhere (1
// + it is 1 to the last bit either way, as SiLU adds it). A NaN x gives a number on AVX-512
// (vrangeps clamps it): a caller whose result must stay NaN carries it otherwise (SiLU: z / ...).
#if defined(__AVX512VL__) && defined(__AVX512DQ__)
#define MUX_BACKBONES_AVX512_EXP 1
typedef float vec16 __attribute__((vector_size(64)));

// One instruction each to clamp, round and scale by 2^n (vrangeps, vrndscaleps, vscalefps: it
// also overflows to inf and underflows to 0 as the float exp does), no range tests: SiLU 0.45
// instead of 0.59 ns per value here (Zen 4), 0.30 on 16 lanes (activate_all). Clamped to
// |x| <= 104, where exp is inf or 0 anyway, so that n stays small and r exact.
inline vec8 exp_any(vec8 x) {
  x = (vec8)_mm256_range_ps((__m256)x, _mm256_set1_ps(104.f), 0x02);  // min |.|, x's sign
  const vec8 n = (vec8)_mm256_roundscale_ps((__m256)(x * 1.44269504f),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return (vec8)_mm256_scalef_ps((__m256)exp_poly(exp_remainder(x, n)), (__m256)n);
}

inline vec16 exp_any(vec16 x) {  // (the same, on 16 lanes)
  x = (vec16)_mm512_range_ps((__m512)x, _mm512_set1_ps(104.f), 0x02);
  const vec16 n = (vec16)_mm512_roundscale_ps((__m512)(x * 1.44269504f),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return (vec16)_mm512_scalef_ps((__m512)exp_poly(exp_remainder(x, n)), (__m512)n);
}
#else
inline vec8 exp_any(vec8 x) {
  const vec8 hi = splat(88.f), lo = splat(-87.f);
  const vec8 e = exp_reduced(x > hi ? hi : x < lo ? lo : x);
  return x > hi ? splat(__builtin_inff()) : e;
}
#endif

// z / (1 + exp(-z)) as torch computes it (infinite exp: -0 for a large negative z).
template <typename V>
inline V silu(V z) {
  return z / ((V{} + 1.f) + exp_any(-z));
}

// The op's epilogue activations, by the op's codes (ACTIVATIONS in group_conv.py).
enum Act { kNone = 0, kRelu = 1, kSilu = 2, kRelu6 = 3 };

inline vec8 activate(vec8 z, int act) {
  const vec8 zero{};  // (comparisons written so that NaN passes through, as in torch)
  if (act == kRelu) return z < zero ? zero : z;
  if (act == kRelu6) {
    const vec8 six = splat(6.f);
    z = z < zero ? zero : z;
    return z > six ? six : z;
  }
  if (act == kSilu) return silu(z);
  return z;
}

// SiLU on 16 lanes only where 512-bit floating point runs at full clock: AMD's Zen 4/5 split it
// into two 256-bit halves, 1.5x SiLU's throughput there (-march=native names them znver4/5; a
// GCC that does not know them may call a Zen 4 znver3 with AVX-512 added). Intel's server cores
// lower their clock while such instructions run (the AVX-512 frequency licence), for every
// instruction around them too: on a Xeon that GCC calls icelake-server, the 16-lane SiLU made a
// whole MUXNet-m deploy forward ~10% slower (docs/speed_log.md, session 27).
#if defined(MUX_BACKBONES_AVX512_EXP) && \
    (defined(__znver3__) || defined(__znver4__) || defined(__znver5__))
#define MUX_BACKBONES_SILU16 1
#endif

// activate(v[i], ACT) for `count` vectors in place; SiLU two at a time as one vector of 16 lanes
// where that pays (MUX_BACKBONES_SILU16; the same operations on each lane, the same bits).
template <int ACT>
inline void activate_all(vec8* v, int count) {
  int i = 0;
#ifdef MUX_BACKBONES_SILU16
  if (ACT == kSilu) {
    for (; i + 1 < count; i += 2) {
      vec16 z;
      std::memcpy(&z, v + i, sizeof(z));
      z = silu(z);
      std::memcpy(v + i, &z, sizeof(z));
    }
  }
#endif
  for (; i < count; ++i) v[i] = activate(v[i], ACT);
}

inline float activate(float z, int act) {
  vec8 v = splat(z);
  return activate(v, act)[0];
}

}  // namespace mux_backbones
