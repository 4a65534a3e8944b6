// Which BLAS libtorch's products run on, and the kernel it picked: OpenBLAS chooses its kernels by
// CPU (or OPENBLAS_CORETYPE), and results differ slightly between kernels.
#pragma once

#include <string>

namespace rlora {

// "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64 (core Haswell)", or a line saying
// that no OpenBLAS is loaded.
std::string blas_info();

}  // namespace rlora
