#include "common/cuda_memory.h"

#if RLORA_WITH_CUDA_MEMORY
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace rlora::cuda_memory {

#if RLORA_WITH_CUDA_MEMORY

namespace {
int device_count() {
  try {
    return static_cast<int>(c10::cuda::device_count());
  } catch (...) {
    return 0;  // no driver, or no device: nothing to report
  }
}
}  // namespace

bool available() { return true; }

std::vector<DeviceMemory> stats() {
  std::vector<DeviceMemory> out;
  for (int d = 0; d < device_count(); ++d) {
    try {
      // index 0 of each StatArray is StatType::AGGREGATE (every pool), in 1.13 and 2.x
      const auto s = c10::cuda::CUDACachingAllocator::getDeviceStats(d);
      DeviceMemory m;
      m.device = d;
      m.allocated_bytes = s.allocated_bytes[0].current;
      m.peak_allocated_bytes = s.allocated_bytes[0].peak;
      m.reserved_bytes = s.reserved_bytes[0].current;
      m.peak_reserved_bytes = s.reserved_bytes[0].peak;
      out.push_back(m);
    } catch (...) {
      // the allocator has not been set up for this device (no CUDA tensor yet)
    }
  }
  return out;
}

void reset_peak() {
  for (int d = 0; d < device_count(); ++d) {
    try {
      c10::cuda::CUDACachingAllocator::resetPeakStats(d);
    } catch (...) {
    }
  }
}

void empty_cache() {
  if (device_count() == 0) return;
  try {
    c10::cuda::CUDACachingAllocator::emptyCache();
  } catch (...) {
  }
}

#else

bool available() { return false; }
std::vector<DeviceMemory> stats() { return {}; }
void reset_peak() {}
void empty_cache() {}

#endif

}  // namespace rlora::cuda_memory
