// Python bindings of the CPU kernels of mux_backbones/ops: one extension, built on first use by
// _cpu_kernels.py from this file and one source per op.
#include <torch/extension.h>

#include <tuple>
#include <vector>

#include "fused_block_cpu.h"

// group_conv_cpu.cpp
std::tuple<torch::Tensor, torch::Tensor> group_conv_forward(
    const torch::Tensor& x, const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias,
    const std::vector<int64_t>& splits, const std::vector<int64_t>& kernel_sizes,
    const std::vector<int64_t>& dilations, int64_t stride, int64_t channels_per_group,
    int64_t act, int64_t pool_tile_h, int64_t pool_tile_w);
// group_conv_backward_cpu.cpp
torch::Tensor group_conv_input_grad_s2(const torch::Tensor& grad, const torch::Tensor& weight_t,
                                       int64_t H, int64_t W, const std::vector<int64_t>& splits,
                                       const std::vector<int64_t>& kernel_sizes,
                                       const std::vector<int64_t>& dilations,
                                       int64_t channels_per_group);
torch::Tensor group_conv_weight_grad(const torch::Tensor& grad, const torch::Tensor& x,
                                     const std::vector<int64_t>& splits,
                                     const std::vector<int64_t>& kernel_sizes,
                                     const std::vector<int64_t>& dilations, int64_t stride,
                                     int64_t channels_per_group);
// pointwise_conv_cpu.cpp
torch::Tensor pointwise_conv_forward(const torch::Tensor& rows, const torch::Tensor& weight,
                                     const c10::optional<torch::Tensor>& bias,
                                     const c10::optional<torch::Tensor>& residual,
                                     const c10::optional<torch::Tensor>& kept, int64_t act,
                                     const c10::optional<torch::Tensor>& scale);
// se_gate_cpu.cpp
torch::Tensor se_gate_forward(const torch::Tensor& sums, double inv_pixels,
                              const torch::Tensor& w_reduce, const torch::Tensor& b_reduce,
                              const torch::Tensor& w_expand, const torch::Tensor& b_expand,
                              int64_t act);
torch::Tensor gated_map(const torch::Tensor& x, const torch::Tensor& w_reduce,
                        const torch::Tensor& b_reduce, const torch::Tensor& w_expand,
                        const torch::Tensor& b_expand, int64_t act, int64_t map_act);
// norm_act_cpu.cpp
std::tuple<torch::Tensor, torch::Tensor> norm_act_forward(const torch::Tensor& x,
                                                          const torch::Tensor& scale,
                                                          const torch::Tensor& shift,
                                                          int64_t act, bool with_sums);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("group_conv_forward", &group_conv_forward,
        "MUXNet's fused group-wise conv with bias, activation and pooling, fp32 NHWC",
        pybind11::arg("x"), pybind11::arg("weight"), pybind11::arg("bias"),
        pybind11::arg("splits"), pybind11::arg("kernel_sizes"), pybind11::arg("dilations"),
        pybind11::arg("stride"), pybind11::arg("channels_per_group"), pybind11::arg("act"),
        pybind11::arg("pool_tile_h") = 0, pybind11::arg("pool_tile_w") = 0);
  m.def("group_conv_input_grad_s2", &group_conv_input_grad_s2,
        "d input of the group-wise conv at stride 2, fp32 NHWC");
  m.def("group_conv_weight_grad", &group_conv_weight_grad,
        "d weight of the group-wise conv, packed, fp32 NHWC");
  m.def("pointwise_conv_forward", &pointwise_conv_forward,
        "A 1x1 conv with SE scale, bias, activation, residual and interleave, fp32");
  m.def("se_gate_forward", &se_gate_forward, "The squeeze-excite gate from pooled sums, fp32");
  m.def("gated_map", &gated_map,
        "The squeeze-excite's training form, y * gate(mean(y)) with y = map_act(x), as one "
        "autograd node; fp32");
  m.def("norm_act_forward", &norm_act_forward,
        "A per-channel scale and shift, activation and channel sums, fp32 NHWC");
  using mux_backbones::FusedBlockCPU;
  // module_local: a second build loaded into the same process (new sources) registers its own.
  pybind11::class_<FusedBlockCPU>(m, "FusedBlockCPU", pybind11::module_local(),
                                  "A MUXNet block's CPU deploy form as one call, fp32")
      .def(pybind11::init<>())
      .def_readwrite("expand_weight", &FusedBlockCPU::expand_weight)
      .def_readwrite("expand_bias", &FusedBlockCPU::expand_bias)
      .def_readwrite("expand_act", &FusedBlockCPU::expand_act)
      .def_readwrite("spatial", &FusedBlockCPU::spatial)
      .def_readwrite("conv_weight", &FusedBlockCPU::conv_weight)
      .def_readwrite("conv_bias", &FusedBlockCPU::conv_bias)
      .def_readwrite("splits", &FusedBlockCPU::splits)
      .def_readwrite("kernel_sizes", &FusedBlockCPU::kernel_sizes)
      .def_readwrite("dilations", &FusedBlockCPU::dilations)
      .def_readwrite("stride", &FusedBlockCPU::stride)
      .def_readwrite("channels_per_group", &FusedBlockCPU::channels_per_group)
      .def_readwrite("conv_act", &FusedBlockCPU::conv_act)
      .def_readwrite("conv_padding", &FusedBlockCPU::conv_padding)
      .def_readwrite("conv_dilation", &FusedBlockCPU::conv_dilation)
      .def_readwrite("conv_groups", &FusedBlockCPU::conv_groups)
      .def_readwrite("scales", &FusedBlockCPU::scales)
      .def_readwrite("scale_weights", &FusedBlockCPU::scale_weights)
      .def_readwrite("scale_biases", &FusedBlockCPU::scale_biases)
      .def_readwrite("scale_on_kernel", &FusedBlockCPU::scale_on_kernel)
      .def_readwrite("norm_scale", &FusedBlockCPU::norm_scale)
      .def_readwrite("norm_shift", &FusedBlockCPU::norm_shift)
      .def_readwrite("se_reduce_weight", &FusedBlockCPU::se_reduce_weight)
      .def_readwrite("se_reduce_bias", &FusedBlockCPU::se_reduce_bias)
      .def_readwrite("se_expand_weight", &FusedBlockCPU::se_expand_weight)
      .def_readwrite("se_expand_bias", &FusedBlockCPU::se_expand_bias)
      .def_readwrite("se_act", &FusedBlockCPU::se_act)
      .def_readwrite("project_weight", &FusedBlockCPU::project_weight)
      .def_readwrite("project_bias", &FusedBlockCPU::project_bias)
      .def_readwrite("residual", &FusedBlockCPU::residual)
      .def("forward", &FusedBlockCPU::forward, pybind11::arg("x"), pybind11::arg("kept"),
           pybind11::arg("pool_tile_h") = 0, pybind11::arg("pool_tile_w") = 0,
           pybind11::call_guard<pybind11::gil_scoped_release>());
  using mux_backbones::FusedChainCPU;
  pybind11::class_<FusedChainCPU>(m, "FusedChainCPU", pybind11::module_local(),
                                  "A run of blocks' CPU deploy forms as one call, fp32")
      .def(pybind11::init<>())
      .def("append", &FusedChainCPU::append, pybind11::arg("block"), pybind11::arg("processed"),
           pybind11::arg("pool_tile_h"), pybind11::arg("pool_tile_w"))
      .def("__len__", [](const FusedChainCPU& chain) { return chain.steps.size(); })
      .def("forward", &FusedChainCPU::forward, pybind11::arg("x"),
           pybind11::call_guard<pybind11::gil_scoped_release>());
}
