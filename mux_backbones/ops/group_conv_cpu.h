// What the group-wise conv's CPU kernels share (group_conv_cpu.cpp: the forward and the stride-1
// input gradient; group_conv_backward_cpu.cpp: the stride-2 input gradient and the weight
// gradient): where each kernel-size group's channels and packed weights are, and one tap of a
// block of CB vectors of 8 channels, fp32.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <vector>

#include "cpu_vector.h"

namespace mux_backbones {

// Per kernel-size group its first channel and the offset of its packed weights; `values`: the
// packed weights' size (the caller checks it against its weight tensor). Checks that the
// arguments describe the groups of C channels; `op` names the caller in the errors.
struct GroupLayout {
  std::vector<int64_t> first, w_offset;
  int64_t values;
};

inline GroupLayout group_layout(const std::vector<int64_t>& splits,
                                const std::vector<int64_t>& kernel_sizes,
                                const std::vector<int64_t>& dilations,
                                int64_t channels_per_group, int64_t C, const char* op) {
  TORCH_CHECK(channels_per_group == 1 || channels_per_group == 2, op,
              ": 1 or 2 channels per group");
  TORCH_CHECK(splits.size() == kernel_sizes.size() && splits.size() == dilations.size(), op,
              ": one kernel size and dilation per group");
  GroupLayout l{std::vector<int64_t>(splits.size()), std::vector<int64_t>(splits.size()), 0};
  int64_t channels = 0;
  for (size_t g = 0; g < splits.size(); ++g) {
    l.first[g] = channels;
    l.w_offset[g] = l.values;
    channels += splits[g];
    l.values += kernel_sizes[g] * kernel_sizes[g] * channels_per_group * splits[g];
  }
  TORCH_CHECK(channels == C, op, ": splits do not match the ", C, " channels");
  return l;
}

// A tap's weights for CB vectors of output channels from `tap` on (`lanes`: all 8 of each, or
// the first n of one). Packed weights of a 2-channels-per-group conv hold, per tap, row j (at tap + j * group) = the weight of input
// (o & ~1) + j for every output o; per lane, `own` is the weight of its own input and `partner`
// that of its pair partner's.
template <int CPG, int CB, bool PART = false>
inline void load_tap(const float* tap, int64_t group, vec8 (&own)[CB], vec8 (&partner)[CB],
                     Lanes<PART> lanes = {}) {
  for (int b = 0; b < CB; ++b) {
    if (CPG == 1) {
      own[b] = lanes.load(tap + 8 * b);
    } else {
      const vec8 row0 = lanes.load(tap + 8 * b), row1 = lanes.load(tap + group + 8 * b);
      own[b] = even_odd(row0, row1);
      partner[b] = even_odd(row1, row0);
    }
  }
}

// acc += the tap applied to the CB input vectors at `in`: each lane's own input and, with 2
// channels per group, its pair partner's (the loaded vector with neighbours swapped).
template <int CPG, int CB, bool PART = false>
inline void apply_tap(vec8 (&acc)[CB], const float* in, const vec8 (&own)[CB],
                      const vec8 (&partner)[CB], Lanes<PART> lanes = {}) {
  for (int b = 0; b < CB; ++b) {
    const vec8 v = lanes.load(in + 8 * b);
    acc[b] += v * own[b];
    if (CPG == 2) acc[b] += swap_pairs(v) * partner[b];
  }
}

}  // namespace mux_backbones
