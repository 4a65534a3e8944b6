// A caching allocator for libtorch's CPU tensors.
//
// Every fresh large block costs page faults: here a new 32 MB tensor took about 90 ms to touch,
// longer than the matrix product that fills it. A training loop allocates the same sizes step
// after step, so freed large blocks are kept by size class and handed out again (as PyTorch's
// CUDA caching allocator does). Blocks under 1 MiB go straight to the system allocator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace rlora::cpu_allocator {

struct Stats {
  size_t allocated_bytes = 0;       // live large blocks (size-class bytes)
  size_t peak_allocated_bytes = 0;  // since the last reset_peak()
  size_t cached_bytes = 0;          // freed large blocks kept for reuse
  size_t cache_limit_bytes = 0;     // the cache never holds more than this
  uint64_t hits = 0, misses = 0;
  bool enabled = false;
};

// Installs (or removes) the caching allocator as libtorch's CPU allocator. Tensors keep the
// allocator that made them, so switching is safe at any time.
void set_enabled(bool on);
// Frees every cached block back to the system and, with trim_heap and glibc, the free pages of
// its heap (malloc_trim walks the whole heap: about 70 ms a call with a 0.5B model loaded, so a
// loop over modules leaves it to its last call).
void empty_cache(bool trim_heap = true);
// Under an address-space limit (ulimit -v), throws an out-of-memory error naming the limit and what
// is mapped when `bytes` more would not fit (after the cache is emptied): OpenBLAS retries for ever
// when it cannot map a buffer, so a job or block that would leave it no room fails instead. Large
// blocks of the caching allocator keep 512 MiB of the limit free; every job checks for 256 MiB
// before it starts (binding/common.h). No limit: nothing is checked.
void check_address_room(size_t bytes, const std::string& doing);
// The room a job needs free under an address-space limit: two of OpenBLAS's buffers.
constexpr size_t kJobAddressRoom = size_t(256) << 20;
void reset_peak();
// Largest total of cached blocks; default a quarter of physical memory.
void set_cache_limit(size_t bytes);
Stats stats();

// The size class of a large request: rounded up to 1, 1.25, 1.5 or 1.75 times a power of two,
// in whole pages (at most 25% over).
size_t size_class(size_t n);

}  // namespace rlora::cpu_allocator
