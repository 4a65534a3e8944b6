// Whether this process's libtorch can compute a model's products in a dtype on the CPU. Found by
// trying, since the answer depends on the libtorch build, the CPU and the environment:
// - float16: libtorch 1.13 has no CPU matrix product for it ("addmm_impl_cpu_" not implemented for
//   'Half'); 2.x has.
// - bfloat16: libtorch 1.13 sends bfloat16 products to oneDNN when CPUID reports AVX-512, and
//   oneDNN refuses them ("could not create a primitive descriptor iterator") when
//   ONEDNN_MAX_CPU_ISA caps it below that. A CPU without AVX-512 takes libtorch's own kernels and
//   works (checked under QEMU's Haswell model, docs/ARCHITECTURE.md "CPUs").
#pragma once

#include <torch/torch.h>

#include <string>

namespace rlora {

// "" when the products a decoder runs (linear forward and backward, batched products, softmax) work
// on the CPU in `dtype`, else libtorch's message. Tried once per dtype per process.
std::string cpu_dtype_problem(torch::ScalarType dtype);

}  // namespace rlora
