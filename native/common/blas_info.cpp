#include "common/blas_info.h"

#include <dlfcn.h>

namespace rlora {

std::string blas_info() {
  using Getter = char* (*)();
  auto config = reinterpret_cast<Getter>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  auto core = reinterpret_cast<Getter>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (!config && !core) return "not OpenBLAS (no openblas_get_config in the process)";
  std::string s = config ? config() : "OpenBLAS";
  if (core) s += std::string(" (core ") + core() + ")";
  return s;
}

}  // namespace rlora
