// The CUDA caching allocator's counters (c10::cuda::CUDACachingAllocator), for memoryStats(). Built
// where libtorch has CUDA and the CUDA runtime headers are found (RLORA_WITH_CUDA_MEMORY); elsewhere
// every function is a no-op and stats() is empty.
#pragma once

#include <cstdint>
#include <vector>

namespace rlora::cuda_memory {

struct DeviceMemory {
  int device = 0;
  int64_t allocated_bytes = 0;       // live tensor blocks
  int64_t peak_allocated_bytes = 0;  // since the last reset_peak()
  int64_t reserved_bytes = 0;        // held by the allocator (live + cached)
  int64_t peak_reserved_bytes = 0;
};

// Whether this build reads the CUDA allocator.
bool available();
// One entry per CUDA device the allocator has set up (none before the first CUDA tensor).
std::vector<DeviceMemory> stats();
void reset_peak();
// Returns the allocator's cached blocks to the driver.
void empty_cache();

}  // namespace rlora::cuda_memory
