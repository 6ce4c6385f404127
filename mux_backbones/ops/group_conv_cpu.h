// What the group-wise conv's CPU kernels share (group_conv_cpu.cpp: the forward and the stride-1
// input gradient; group_conv_backward_cpu.cpp: the stride-2 input gradient): one tap of a block
// of CB vectors of 8 channels, fp32.
#pragma once

#include <cstdint>

#include "cpu_vector.h"

namespace mux_backbones {

// A tap's weights for CB vectors of output channels from `tap` on. Packed weights of a
// 2-channels-per-group conv hold, per tap, row j (at tap + j * group) = the weight of input
// (o & ~1) + j for every output o; per lane, `own` is the weight of its own input and `partner`
// that of its pair partner's.
template <int CPG, int CB>
inline void load_tap(const float* tap, int64_t group, vec8 (&own)[CB], vec8 (&partner)[CB]) {
  for (int b = 0; b < CB; ++b) {
    if (CPG == 1) {
      own[b] = load8(tap + 8 * b);
    } else {
      const vec8 row0 = load8(tap + 8 * b), row1 = load8(tap + group + 8 * b);
      own[b] = even_odd(row0, row1);
      partner[b] = even_odd(row1, row0);
    }
  }
}

// acc += the tap applied to the CB input vectors at `in`: each lane's own input and, with 2
// channels per group, its pair partner's (the loaded vector with neighbours swapped).
template <int CPG, int CB>
inline void apply_tap(vec8 (&acc)[CB], const float* in, const vec8 (&own)[CB],
                      const vec8 (&partner)[CB]) {
  for (int b = 0; b < CB; ++b) {
    const vec8 v = load8(in + 8 * b);
    acc[b] += v * own[b];
    if (CPG == 2) acc[b] += swap_pairs(v) * partner[b];
  }
}

}  // namespace mux_backbones
