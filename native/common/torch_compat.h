// The one place where differences between libtorch versions are guarded.
// rlora builds against Debian's libtorch 1.13 (CPU) and libtorch 2.x (CPU or CUDA).
#pragma once

#include <torch/torch.h>
#include <ATen/CPUGeneratorImpl.h>
#include <string>

namespace rlora::compat {

// "major.minor.patch" of the libtorch this binary was compiled against.
inline std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

// A CPU random generator with its own state (not the global one).
inline at::Generator make_cpu_generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

// The message of a c10::Error without the C++ backtrace that 1.13 and 2.x append.
inline std::string error_message(const c10::Error& e) { return e.what_without_backtrace(); }

}  // namespace rlora::compat
