// Which BLAS libtorch's products run on, the kernel it picked, and its threads: OpenBLAS chooses
// its kernels by CPU (or OPENBLAS_CORETYPE), results differ slightly between kernels, and it keeps
// its own thread pool beside libtorch's intra-op threads.
#pragma once

#include <string>

namespace rlora {

// "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64 (core Haswell, 1 thread)", or a
// line saying that no OpenBLAS is loaded.
std::string blas_info();

// Sets OpenBLAS's thread pool (process-wide) when the process has OpenBLAS; returns false when it
// has none (another BLAS keeps its own setting).
bool set_blas_threads(int n);

// OpenBLAS's threads, or 0 when the process has no OpenBLAS.
int blas_threads();

}  // namespace rlora
