#include "common/blas_info.h"

#include <dlfcn.h>

namespace rlora {

namespace {
// Looked up at run time: libtorch links whichever BLAS the system provides, and rlora links none.
template <typename F>
F lookup(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}
}  // namespace

std::string blas_info() {
  using Getter = char* (*)();
  auto config = lookup<Getter>("openblas_get_config");
  auto core = lookup<Getter>("openblas_get_corename");
  if (!config && !core) return "not OpenBLAS (no openblas_get_config in the process)";
  std::string s = config ? config() : "OpenBLAS";
  const int n = blas_threads();
  s += " (";
  if (core) s += std::string("core ") + core() + ", ";
  s += std::to_string(n) + (n == 1 ? " thread)" : " threads)");
  return s;
}

bool set_blas_threads(int n) {
  auto set = lookup<void (*)(int)>("openblas_set_num_threads");
  if (!set) return false;
  set(n);
  return true;
}

int blas_threads() {
  auto get = lookup<int (*)()>("openblas_get_num_threads");
  return get ? get() : 0;
}

}  // namespace rlora
