#include "distributed/group.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "common/errors.h"
#include "common/torch_compat.h"

#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#if RLORA_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if RLORA_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#if RLORA_WITH_GLOO || RLORA_WITH_NCCL
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace rlora::dist {

namespace {

std::mutex g_mutex;
std::shared_ptr<Group> g_group;

std::string message_of(const std::exception& e) {
  if (auto c = dynamic_cast<const c10::Error*>(&e)) return compat::error_message(*c);
  return e.what();
}

#if RLORA_WITH_GLOO || RLORA_WITH_NCCL

// The TCPStore every backend meets through: rank 0 hosts it and waits for the others, unless
// torchrun's agent hosts it (InitOptions::agent_store): then every rank is a client under the
// attempt's prefix.
// Rank 0's listening socket, bound to the address MASTER_ADDR resolves to (torch's own server
// listens on every address): a single-machine run on 127.0.0.1 is not reachable from the network.
// -1 where the address is not one of this machine's (the store then binds as torch does); throws
// when the port is taken.
int listen_on(const InitOptions& o) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(o.master_port);
  if (getaddrinfo(o.master_addr.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) return -1;
  int fd = -1, err = 0;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 2048) != 0) {
      err = errno;
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd < 0 && err == EADDRINUSE)
    throw std::runtime_error("distributed init (rank 0): MASTER_PORT " + port + " is in use on " + o.master_addr +
                             "; choose a free port (EADDRINUSE)");
  return fd;
}

c10::intrusive_ptr<c10d::Store> make_store(const InitOptions& o, bool libuv) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(o.master_port);
  so.isServer = o.rank == 0 && !o.agent_store;
  so.numWorkers = static_cast<std::size_t>(o.world_size);
  so.waitWorkers = false;  // arrive() waits, within the same deadline, and names who is missing
  so.timeout = std::chrono::milliseconds(o.timeout_ms);
  const int fd = so.isServer && compat::kStoreTakesListenFd ? listen_on(o) : -1;
  if (fd >= 0) {
    compat::set_store_listen_fd(so, fd);
    libuv = false;  // the classic server takes a bound socket in every 2.x; the store then owns it
  }
  compat::set_store_libuv(so, libuv);
  c10::intrusive_ptr<c10d::TCPStore> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
  } catch (...) {
    if (fd >= 0 && fcntl(fd, F_GETFD) != -1) close(fd);
    throw;
  }
  if (!o.agent_store) return store;
  return c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(o.restart_count), store);
}

std::vector<uint8_t> bytes_of(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }
std::string string_of(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }

// Every rank says it arrived, then waits until all have, by `deadline`; past it, the error names
// the ranks that never arrived (torch's own wait said "Socket Timeout" after its timeout, and the
// process group then waited a second timeout). Rank 0 publishes its run id first; another rank
// whose run id differs refuses to join (a rank of another job on the same port, or one started
// with other options) and leaves a note that rank 0 names if its own rank never comes. Arrivals
// are counted under the run id, so a foreign rank is never counted as one of this run's.
void arrive(c10d::Store& store, const InitOptions& o, std::chrono::steady_clock::time_point deadline) {
  const std::string here = o.master_addr + ":" + std::to_string(o.master_port);
  const std::string who = "distributed init (rank " + std::to_string(o.rank) + " of " + std::to_string(o.world_size) + "): ";
  if (o.rank == 0) {
    store.set("rlora/run", bytes_of(o.run_id));
  } else {
    while (!store.check({"rlora/run"})) {
      if (std::chrono::steady_clock::now() >= deadline)
        throw std::runtime_error(who + "rank 0 never arrived at " + here + " within " + std::to_string(o.timeout_ms) + " ms");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const std::string theirs = string_of(store.get("rlora/run"));
    if (theirs != o.run_id) {
      store.set("rlora/refused/" + std::to_string(o.rank), bytes_of(o.run_id));
      throw std::runtime_error(who + "rank 0 at " + here + " runs another run [" + theirs + "] than this rank [" + o.run_id +
                               "]: every rank must run the same configuration on the same data and base model (another job on MASTER_PORT " +
                               std::to_string(o.master_port) + " shows this too: give each job its own port)");
    }
  }
  const std::string p = "rlora/" + o.run_id + "/";
  store.set(p + "arrived/" + std::to_string(o.rank), std::vector<uint8_t>{1});
  store.add(p + "arrivals", 1);
  for (;;) {
    if (store.add(p + "arrivals", 0) >= o.world_size) return;
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::string missing, refused;
  int count = 0;
  for (int r = 0; r < o.world_size; ++r) {
    if (store.check({p + "arrived/" + std::to_string(r)})) continue;
    if (count++ < 16) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    const std::string note = "rlora/refused/" + std::to_string(r);
    if (o.rank == 0 && refused.empty() && store.check({note}))
      refused = "; a process that came as rank " + std::to_string(r) + " runs another run [" + string_of(store.get(note)) +
                "] than this rank [" + o.run_id + "] and left: every rank must run the same configuration on the same data and base model";
  }
  if (count > 16) missing += ", ...";
  throw std::runtime_error(who + "rank" + (count == 1 ? " " : "s ") + missing + " never arrived at " + here + " within " +
                           std::to_string(o.timeout_ms) + " ms" +
                           (refused.empty() ? " (start every rank with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE)" : refused));
}

c10::intrusive_ptr<c10d::Store> rendezvous(const InitOptions& o, std::chrono::steady_clock::time_point deadline) {
  c10::intrusive_ptr<c10d::Store> store;
  try {
    try {
      store = make_store(o, o.use_libuv && compat::kStoreHasLibuvOption);
    } catch (const std::exception& e) {
      // a libtorch built without libuv refuses the default: make the store without it
      if (!(o.use_libuv && compat::kStoreHasLibuvOption && message_of(e).find("libuv") != std::string::npos)) throw;
      store = make_store(o, false);
    }
  } catch (const std::exception& e) {
    const std::string m = message_of(e);
    const std::string at = o.master_addr + ":" + std::to_string(o.master_port);
    if (o.rank == 0 && !o.agent_store && (m.find("in use") != std::string::npos || m.find("EADDRINUSE") != std::string::npos))
      throw std::runtime_error("distributed init (rank 0): MASTER_PORT " + std::to_string(o.master_port) +
                               " is in use on " + o.master_addr + "; choose a free port (" + m + ")");
    throw std::runtime_error("distributed init (rank " + std::to_string(o.rank) + " of " +
                             std::to_string(o.world_size) + "): the rendezvous at " + at +
                             (o.agent_store ? " (the store of torchrun's agent)" : "") + " failed within " +
                             std::to_string(o.timeout_ms) + " ms (every rank must start with the same " +
                             "MASTER_ADDR, MASTER_PORT and WORLD_SIZE): " + m);
  }
  arrive(*store, o, deadline);
  return store;
}


// What every c10d backend shares: the bucketed allreduce, allgather and the errors that name this
// rank. PG is c10d's ProcessGroupGloo or ProcessGroupNCCL (a ProcessGroup in 1.13, a Backend in
// 2.x: the calls used here are the same on both).
template <class PG>
class C10dGroup : public Group {
 public:
  C10dGroup(const InitOptions& o, std::string backend, torch::Device device)
      : rank_(o.rank),
        size_(o.world_size),
        timeout_ms_(o.timeout_ms),
        bucket_cap_bytes_(o.bucket_cap_bytes),
        backend_(std::move(backend)),
        device_(device) {}

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  std::string backend() const override { return backend_; }
  torch::Device device() const override { return device_; }
  int64_t bucket_cap_bytes() const override { return bucket_cap_bytes_; }

  void allreduce_sum(const std::vector<torch::Tensor>& tensors) override {
    // One flat bucket per dtype, in order, on the backend's device: one allreduce each.
    std::vector<torch::ScalarType> dtypes;
    for (const auto& t : tensors)
      if (std::find(dtypes.begin(), dtypes.end(), t.scalar_type()) == dtypes.end()) dtypes.push_back(t.scalar_type());
    torch::NoGradGuard no_grad;
    for (auto dt : dtypes) {
      std::vector<torch::Tensor> parts, flat_parts;
      for (const auto& t : tensors)
        if (t.scalar_type() == dt) {
          parts.push_back(t);
          flat_parts.push_back(t.detach().reshape({-1}).to(device_));
        }
      std::vector<torch::Tensor> bucket{torch::cat(flat_parts)};
      run("allreduce", [&] { pg_->allreduce(bucket)->wait(); });
      int64_t at = 0;
      for (auto& t : parts) {
        t.copy_(bucket[0].narrow(0, at, t.numel()).view(t.sizes()));
        at += t.numel();
      }
    }
  }

  std::unique_ptr<Pending> allreduce_sum_async(torch::Tensor flat) override {
    if (flat.device() != device_ || !flat.is_contiguous())
      throw std::invalid_argument(where("allreduce") + "the bucket must be one contiguous tensor on " + device_.str() +
                                  ", got one on " + flat.device().str());
    auto p = std::make_unique<Started>(*this);
    p->tensors.push_back(std::move(flat));
    run("allreduce", [&] { p->work = pg_->allreduce(p->tensors); });
    return p;
  }

  std::vector<int64_t> allgather(int64_t value) override {
    const auto on = torch::TensorOptions().dtype(torch::kInt64).device(device_);
    std::vector<torch::Tensor> in{torch::full({1}, value, on)};
    std::vector<std::vector<torch::Tensor>> out(1);
    for (int i = 0; i < size_; ++i) out[0].push_back(torch::empty({1}, on));
    run("allgather", [&] { pg_->allgather(out, in)->wait(); });
    std::vector<int64_t> values;
    for (auto& t : out[0]) values.push_back(t.item<int64_t>());
    return values;
  }

 protected:
  std::string where(const std::string& op) const {
    return "distributed " + op + " failed on rank " + std::to_string(rank_) + " of " + std::to_string(size_) + " (" +
           backend_ + ", timeout " + std::to_string(timeout_ms_) + " ms): ";
  }
  template <typename F>
  void run(const std::string& op, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      throw std::runtime_error(where(op) + message_of(e) +
                               " (another rank stopped, failed or is slower than the timeout)");
    }
  }
  // The backend's constructor, its errors named as init's.
  template <typename F>
  void make(F&& f) {
    try {
      pg_ = f();
    } catch (const std::exception& e) {
      throw std::runtime_error(where("init") + message_of(e));
    }
  }

  // An allreduce in flight: the work, and the tensor it sums (kept alive until it is done).
  struct Started : Pending {
    explicit Started(C10dGroup& g) : group(g) {}
    void wait() override { group.run("allreduce", [&] { work->wait(); }); }
    C10dGroup& group;
    std::vector<torch::Tensor> tensors;
    c10::intrusive_ptr<c10d::Work> work;
  };

  int rank_, size_;
  int64_t timeout_ms_, bucket_cap_bytes_;
  std::string backend_;
  torch::Device device_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<PG> pg_;
};

#endif  // RLORA_WITH_GLOO || RLORA_WITH_NCCL

#if RLORA_WITH_GLOO

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

class GlooGroup : public C10dGroup<c10d::ProcessGroupGloo> {
 public:
  explicit GlooGroup(const InitOptions& o) : C10dGroup(o, "gloo", torch::Device(torch::kCPU)) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(o.timeout_ms);
    store_ = rendezvous(o, deadline);
    // the group's first connections share the init's deadline; its collectives get the whole timeout
    auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(o.timeout_ms));
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname && *ifname)
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (is_loopback(o.master_addr))
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    opts->threads = 1;
    make([&] { return c10::make_intrusive<c10d::ProcessGroupGloo>(store_, o.rank, o.world_size, opts); });
  }

  void barrier() override {
    // Gloo's monitored barrier names the ranks that did not arrive within the timeout.
    run("barrier", [&] {
      c10d::BarrierOptions bo;
      bo.timeout = std::chrono::milliseconds(timeout_ms_);
      pg_->monitoredBarrier(bo, /*waitAllRanks=*/true);
    });
  }
};

#endif  // RLORA_WITH_GLOO

#if RLORA_WITH_NCCL

// NCCL on cuda:<local_rank>. Blocking wait is switched on (unless the environment says otherwise)
// so that a collective that outlives the timeout throws here, naming this rank, instead of the
// watchdog thread tearing the process down.
class NcclGroup : public C10dGroup<c10d::ProcessGroupNCCL> {
 public:
  explicit NcclGroup(const InitOptions& o)
      : C10dGroup(o, "nccl", torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(o.local_rank))) {
    const auto n = static_cast<int>(torch::cuda::device_count());
    if (o.local_rank >= n)
      throw std::invalid_argument("distributed init (rank " + std::to_string(o.rank) + "): backend \"nccl\" puts " +
                                  "LOCAL_RANK " + std::to_string(o.local_rank) + " on cuda:" +
                                  std::to_string(o.local_rank) + ", but " + std::to_string(n) +
                                  " CUDA device(s) are visible");
    setenv(compat::kNcclBlockingWaitEnv, "1", /*overwrite=*/0);
    store_ = rendezvous(o, std::chrono::steady_clock::now() + std::chrono::milliseconds(o.timeout_ms));
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(o.timeout_ms);
    make([&] { return c10::make_intrusive<c10d::ProcessGroupNCCL>(store_, o.rank, o.world_size, opts); });
  }

  void barrier() override {
    // A one-element allreduce on this rank's device, waited for on the host: it returns once
    // every rank reached it, and throws after the timeout.
    run("barrier", [&] {
      std::vector<torch::Tensor> one{torch::ones({1}, torch::TensorOptions().device(device_))};
      pg_->allreduce(one)->wait();
      one[0].item<float>();
    });
  }
};

#endif  // RLORA_WITH_NCCL

}  // namespace

bool has_gloo() { return RLORA_WITH_GLOO != 0; }
bool has_nccl() { return RLORA_WITH_NCCL != 0; }

void init(const InitOptions& o) {
  if (o.world_size < 1) throw OutOfRange("WORLD_SIZE must be >= 1, got " + std::to_string(o.world_size));
  if (o.rank < 0 || o.rank >= o.world_size)
    throw OutOfRange("RANK must be in [0, " + std::to_string(o.world_size - 1) + "] for WORLD_SIZE " +
                                std::to_string(o.world_size) + ", got " + std::to_string(o.rank));
  if (o.master_port < 1 || o.master_port > 65535)
    throw OutOfRange("MASTER_PORT must be in [1, 65535], got " + std::to_string(o.master_port));
  if (o.timeout_ms < 1) throw OutOfRange("timeoutMs must be >= 1, got " + std::to_string(o.timeout_ms));
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_group)
      throw std::logic_error("distributed init: this process is already rank " + std::to_string(g_group->rank()) +
                             " of " + std::to_string(g_group->world_size()) + " (call destroy first)");
  }
  if (o.backend != "gloo" && o.backend != "nccl")
    throw OutOfRange("backend must be \"gloo\" or \"nccl\", got \"" + o.backend + "\"");
  if (o.local_rank < 0) throw OutOfRange("LOCAL_RANK must be >= 0, got " + std::to_string(o.local_rank));
  if (o.bucket_cap_bytes < 0)
    throw OutOfRange("the gradient bucket size must be >= 0 bytes, got " + std::to_string(o.bucket_cap_bytes));
  std::shared_ptr<Group> g;
  if (o.backend == "nccl") {
#if RLORA_WITH_NCCL
    g = std::make_shared<NcclGroup>(o);
#else
    throw std::invalid_argument(
        "backend \"nccl\" is not in this build of rlora: it needs a libtorch with CUDA and NCCL, and nccl.h when "
        "it is built (CPU training uses \"gloo\"; Gloo also carries CUDA tensors, through the host)");
#endif
  } else {
#if RLORA_WITH_GLOO
    g = std::make_shared<GlooGroup>(o);
#else
    throw std::runtime_error(
        "this build of rlora has no Gloo (libtorch's c10d and Gloo headers were not found when it was built; on "
        "Debian: apt-get install -y libgloo-dev, then npx rlora build)");
#endif
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  g_group = g;
}

std::shared_ptr<Group> current() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_group;
}

void destroy() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_group.reset();
}

double allreduce_sum(Group& group, double value) {
  torch::Tensor t = torch::full({1}, value, torch::kFloat64);
  group.allreduce_sum({t});
  return t.item<double>();
}

int64_t allreduce_sum(Group& group, int64_t value) {
  torch::Tensor t = torch::full({1}, value, torch::kInt64);
  group.allreduce_sum({t});
  return t.item<int64_t>();
}

}  // namespace rlora::dist
