// The one place where differences between libtorch versions are guarded.
// rlora builds against Debian's libtorch 1.13 (CPU) and libtorch 2.x (CPU or CUDA).
#pragma once

#include <torch/torch.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <stdexcept>
#include <string>

namespace rlora::compat {

// "major.minor.patch" of the libtorch this binary was compiled against.
inline std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

// The environment variable that makes ProcessGroupNCCL's wait() block and throw on timeout (torch
// 2.2 renamed it; the old name still works there, with a deprecation warning).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 2)
constexpr const char* kNcclBlockingWaitEnv = "TORCH_NCCL_BLOCKING_WAIT";
#else
constexpr const char* kNcclBlockingWaitEnv = "NCCL_BLOCKING_WAIT";
#endif

// Fused causal attention (at::scaled_dot_product_attention with `scale`, 2.1): q [B, H, S, D],
// k and v [B, H, S, D], no mask but the causal one. Before 2.1 there is none (model/attention.cpp
// then runs its own block-wise attention).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
constexpr bool kHasFusedAttention = true;
inline torch::Tensor fused_causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale) {
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true, scale);
}
#else
constexpr bool kHasFusedAttention = false;
inline torch::Tensor fused_causal_attention(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, double) {
  throw std::logic_error("fused attention needs libtorch 2.1 or later");
}
#endif

// A CPU random generator with its own state (not the global one).
inline at::Generator make_cpu_generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

// The message of a c10::Error without the C++ backtrace that 1.13 and 2.x append.
inline std::string error_message(const c10::Error& e) { return e.what_without_backtrace(); }

// Autocast state of this thread for a device type (2.4 made the API device-generic).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
inline bool autocast_enabled(c10::DeviceType d) { return at::autocast::is_autocast_enabled(d); }
inline torch::ScalarType autocast_dtype(c10::DeviceType d) { return at::autocast::get_autocast_dtype(d); }
inline void set_autocast(c10::DeviceType d, bool on, torch::ScalarType dtype) {
  at::autocast::set_autocast_enabled(d, on);
  at::autocast::set_autocast_dtype(d, dtype);
}
#else
inline bool autocast_enabled(c10::DeviceType d) {
  return d == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
inline torch::ScalarType autocast_dtype(c10::DeviceType d) {
  return d == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
inline void set_autocast(c10::DeviceType d, bool on, torch::ScalarType dtype) {
  if (d == c10::DeviceType::CUDA) {
    at::autocast::set_enabled(on);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(on);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
}
#endif

// Autocast to `dtype` on `device` for the guard's lifetime (or off, with on = false); restores
// this thread's previous state and drops autocast's cast cache on exit.
class AutocastGuard {
 public:
  AutocastGuard(torch::Device device, bool on, torch::ScalarType dtype)
      : type_(device.type()), was_on_(autocast_enabled(type_)), was_dtype_(autocast_dtype(type_)) {
    set_autocast(type_, on, on ? dtype : was_dtype_);
  }
  ~AutocastGuard() {
    set_autocast(type_, was_on_, was_dtype_);
    if (!was_on_) at::autocast::clear_cache();
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType type_;
  bool was_on_;
  torch::ScalarType was_dtype_;
};

// TCPStore's libuv server (TCPStoreOptions::useLibUV, added in 2.2, on by default from 2.4). Whether
// torch was built with libuv depends on the build, not the version: Debian's 2.6 has none and
// refuses "use_libuv was requested but PyTorch was build without libuv support", pip's wheels have
// it. Callers ask for it as torch does (USE_LIBUV, default on) and retry without it on that error.
// 1.13 has no option and no libuv server.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 2)
constexpr bool kStoreHasLibuvOption = true;
template <class StoreOptions>
void set_store_libuv(StoreOptions& o, bool on) { o.useLibUV = on; }
#else
constexpr bool kStoreHasLibuvOption = false;
template <class StoreOptions>
void set_store_libuv(StoreOptions&, bool) {}
#endif

// TCPStoreOptions::masterListenFd (2.2 here; torchelastic's agent uses it): the store's server takes
// over a socket the caller bound, so rank 0 can listen on MASTER_ADDR alone. 1.13's server binds
// every address itself.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 2)
constexpr bool kStoreTakesListenFd = true;
template <class StoreOptions>
void set_store_listen_fd(StoreOptions& o, int fd) { o.masterListenFd = fd; }
#else
constexpr bool kStoreTakesListenFd = false;
template <class StoreOptions>
void set_store_listen_fd(StoreOptions&, int) {}
#endif

}  // namespace rlora::compat
