#include "common/cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/util/Exception.h>
#include <sys/resource.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace rlora::cpu_allocator {

namespace {

constexpr size_t kMinCached = size_t(1) << 20;
constexpr size_t kAlignment = 64;
// The part of an address-space limit new large blocks leave free (check_address_room).
constexpr size_t kAddressHeadroom = size_t(512) << 20;

void* system_alloc(size_t n) {
  void* p = nullptr;
  if (posix_memalign(&p, kAlignment, n == 0 ? kAlignment : n) != 0) return nullptr;
  return p;
}

// The address-space limit of the process in bytes (ulimit -v, prlimit --as), 0 when none.
size_t address_limit() {
  rlimit r{};
  if (getrlimit(RLIMIT_AS, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return 0;
  return static_cast<size_t>(r.rlim_cur);
}

// The process's mapped address space in bytes (the first field of /proc/self/statm, in pages).
size_t mapped_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long pages = 0;
  const int got = std::fscanf(f, "%lu", &pages);
  std::fclose(f);
  return got == 1 ? static_cast<size_t>(pages) * static_cast<size_t>(sysconf(_SC_PAGESIZE)) : 0;
}

class Cache {
 public:
  static Cache& instance() {
    static Cache* c = new Cache();  // never destroyed: tensors may be freed during exit
    return *c;
  }

  void* allocate(size_t n, size_t* klass) {
    const size_t sz = size_class(n);
    *klass = sz;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(sz);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= sz;
        ++stats_.hits;
        note_live(p, sz);
        return p;
      }
      ++stats_.misses;
      // Over the limit with this block: give the cache back first.
      if (cached_ > 0 && cached_ + allocated_ + sz > limit()) release_all_locked();
    }
    check_address_room(sz);
    void* p = system_alloc(sz);
    if (p == nullptr) {
      empty();
      p = system_alloc(sz);
    }
    TORCH_CHECK(p != nullptr, "rlora: out of CPU memory allocating ", sz, " bytes");
    std::lock_guard<std::mutex> lock(mutex_);
    note_live(p, sz);
    return p;
  }

  // Under an address-space limit, a new block may not take the last kAddressHeadroom bytes of it:
  // OpenBLAS maps a buffer of 128 MiB for each thread that first multiplies matrices, and when the
  // mapping fails it retries for ever (measured: under prlimit --as, a generate after an
  // out-of-memory error spun in blas_memory_alloc). So the tensor's allocation fails instead,
  // with an error, and the products that follow still find their buffers.
  void check_address_room(size_t sz) {
    if (address_limit() != 0) cpu_allocator::check_address_room(sz + kAddressHeadroom, "allocating " + std::to_string(sz) + " bytes");
  }

  // Takes back a large block; returns false when p is not one (a small block: the caller frees it).
  bool release(void* p) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(p);
    if (it == live_.end()) return false;
    const size_t sz = it->second;
    live_.erase(it);
    allocated_ -= sz;
    if (cached_ + sz > limit()) {
      std::free(p);
      return true;
    }
    free_[sz].push_back(p);
    cached_ += sz;
    return true;
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mutex_);
    release_all_locked();
  }

  Stats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    Stats s = stats_;
    s.allocated_bytes = allocated_;
    s.peak_allocated_bytes = peak_;
    s.cached_bytes = cached_;
    s.cache_limit_bytes = limit();
    return s;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    peak_ = allocated_;
  }
  void set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    limit_ = bytes;
    if (cached_ > limit_) release_all_locked();
  }

 private:
  Cache() {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    limit_ = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) / 4 : size_t(4) << 30;
  }
  size_t limit() const { return limit_; }
  void note_live(void* p, size_t sz) {
    live_[p] = sz;
    allocated_ += sz;
    if (allocated_ > peak_) peak_ = allocated_;
  }
  void release_all_locked() {
    for (auto& [sz, blocks] : free_)
      for (void* p : blocks) std::free(p);
    free_.clear();
    cached_ = 0;
  }

  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  std::unordered_map<void*, size_t> live_;
  size_t allocated_ = 0, peak_ = 0, cached_ = 0, limit_ = 0;
  Stats stats_;
};

void delete_small(void* p) { std::free(p); }
void delete_large(void* p) { Cache::instance().release(p); }
// For libtorch's raw_allocate/raw_deallocate (oneDNN's bfloat16 kernels use them): any block.
void delete_any(void* p) {
  if (!Cache::instance().release(p)) std::free(p);
}

struct CachingAllocator final : public c10::Allocator {
  // libtorch 1.13 declares allocate() const; 2.3 and later non-const with a pure copy_data().
  // Defining both forms (no `override`) satisfies either header without a version check.
  c10::DataPtr allocate(size_t n) const {
    if (n < kMinCached) {
      void* p = system_alloc(n);
      TORCH_CHECK(p != nullptr, "rlora: out of CPU memory allocating ", n, " bytes");
      return {p, p, &delete_small, c10::Device(c10::DeviceType::CPU)};
    }
    size_t klass = 0;
    void* p = Cache::instance().allocate(n, &klass);
    return {p, p, &delete_large, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DataPtr allocate(size_t n) { return static_cast<const CachingAllocator*>(this)->allocate(n); }
  // Context == data for every block, so the raw interface works (libtorch aborts without it).
  c10::DeleterFnPtr raw_deleter() const override { return &delete_any; }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }
};

std::mutex g_switch;
c10::Allocator* g_previous = nullptr;
bool g_enabled = false;

}  // namespace

size_t size_class(size_t n) {
  size_t p = 1;
  while (p * 2 <= n) p *= 2;  // p <= n < 2p
  size_t q = p / 4 ? p / 4 : 1;
  size_t rounded = ((n + q - 1) / q) * q;
  const size_t page = 4096;
  return ((rounded + page - 1) / page) * page;
}

void set_enabled(bool on) {
  static CachingAllocator allocator;
  std::lock_guard<std::mutex> lock(g_switch);
  if (on == g_enabled) return;
  if (on) {
    g_previous = c10::GetAllocator(c10::DeviceType::CPU);
    c10::SetAllocator(c10::DeviceType::CPU, &allocator, /*priority=*/100);
  } else {
    c10::SetAllocator(c10::DeviceType::CPU, g_previous, /*priority=*/100);
    Cache::instance().empty();
  }
  g_enabled = on;
}

void empty_cache(bool trim_heap) {
  Cache::instance().empty();
#if defined(__GLIBC__)
  // glibc keeps freed heap memory in its arenas (its mmap threshold rises as large blocks are
  // freed, so later ones come from the heap): hand the free pages back too
  if (trim_heap) malloc_trim(0);
#endif
}
void check_address_room(size_t bytes, const std::string& doing) {
  const size_t limit = address_limit();
  if (limit == 0) return;
  size_t mapped = mapped_bytes();
  if (mapped + bytes <= limit) return;
  Cache::instance().empty();  // cached blocks count as mapped
  mapped = mapped_bytes();
  TORCH_CHECK(mapped + bytes <= limit, "rlora: out of CPU memory ", doing, ": this process may map at most ", limit >> 20,
              " MB (an address-space limit: ulimit -v or prlimit --as), has mapped ", mapped >> 20, " MB and needs ", bytes >> 20,
              " MB more (OpenBLAS hangs when it cannot map its 128 MB buffers, so rlora keeps ", kAddressHeadroom >> 20,
              " MB of the limit free for them): use smaller batches, or raise or remove the limit");
}

void reset_peak() { Cache::instance().reset_peak(); }
void set_cache_limit(size_t bytes) { Cache::instance().set_limit(bytes); }

Stats stats() {
  Stats s = Cache::instance().stats();
  std::lock_guard<std::mutex> lock(g_switch);
  s.enabled = g_enabled;
  return s;
}

}  // namespace rlora::cpu_allocator
