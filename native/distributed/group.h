// Data parallelism on libtorch's c10d: one process group per process (as torch.distributed's
// default group), rendezvous through a TCPStore, collectives on Gloo (through CPU tensors) or NCCL
// (on this rank's CUDA device). Gloo is built where libtorch's c10d headers and Gloo's are found
// (RLORA_WITH_GLOO); NCCL where libtorch has CUDA and ProcessGroupNCCL, and nccl.h is found
// (RLORA_WITH_NCCL). Without them init() throws a message that says so.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rlora::dist {

struct InitOptions {
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int rank = 0;
  int world_size = 1;
  std::string backend = "gloo";
  int64_t timeout_ms = 600000;  // torch's default: 10 minutes
  // NCCL: this rank's CUDA device is cuda:<local_rank> (torchrun's LOCAL_RANK). Gloo ignores it.
  int local_rank = 0;
  // Gradient buckets exchanged while backward runs (native/distributed/reducer.h), as DDP's
  // bucket_cap_mb; 0: one allreduce after backward.
  int64_t bucket_cap_bytes = 0;
  // Ask for TCPStore's libuv server (torch's USE_LIBUV, default on); where the libtorch has no
  // libuv, the store is made without it.
  bool use_libuv = true;
  // torchrun 2.x hosts the store in its agent (TORCHELASTIC_USE_AGENT_STORE=True): then every rank,
  // rank 0 included, connects to it as a client, under the prefix "/worker/attempt_<restart_count>"
  // (TORCHELASTIC_RESTART_COUNT), as torch.distributed does.
  bool agent_store = false;
  int restart_count = 0;
  // What this rank runs (lib/ passes a hash of the configuration, the data and the base weights):
  // ranks of another run, such as another job on the same MASTER_PORT, are refused at the
  // rendezvous, naming both, and never counted as this run's. Empty: any rank is taken.
  std::string run_id;
};

// A collective started without waiting for it (Group::allreduce_sum_async).
class Pending {
 public:
  virtual ~Pending() = default;
  // Blocks until the collective is done (its tensor then holds the result), or throws after the
  // timeout, naming this rank and the operation.
  virtual void wait() = 0;
};

// The collectives the training step needs; every call blocks until every rank made it (or the
// timeout passes: then it throws, naming this rank and the operation).
class Group {
 public:
  virtual ~Group() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;
  // Where the collectives run: the CPU for Gloo, cuda:<local_rank> for NCCL. Tensors elsewhere are
  // copied there and back.
  virtual torch::Device device() const = 0;
  // InitOptions::bucket_cap_bytes.
  virtual int64_t bucket_cap_bytes() const = 0;
  // Sums in place over the ranks; tensors are flattened into buckets of one dtype (one
  // allreduce per bucket) and copied back.
  virtual void allreduce_sum(const std::vector<torch::Tensor>& tensors) = 0;
  // Starts summing `flat` (one contiguous tensor on device()) in place over the ranks and returns
  // at once; read `flat` only after wait(). Every rank must start the same collectives in the
  // same order.
  virtual std::unique_ptr<Pending> allreduce_sum_async(torch::Tensor flat) = 0;
  // Every rank's value, in rank order.
  virtual std::vector<int64_t> allgather(int64_t value) = 0;
  virtual void barrier() = 0;
};

// True when this build has Gloo (the CPU backend).
bool has_gloo();
// True when this build has NCCL (the CUDA backend).
bool has_nccl();

// Joins the process group (blocks until every rank joined, or the timeout). One per process:
// a second init while one is active throws.
void init(const InitOptions& options);
// The active group, or null (no init, or destroyed).
std::shared_ptr<Group> current();
// Leaves the group (waits for nothing). No-op without one.
void destroy();

// Sums a value over the ranks of `group` (a one-element allreduce).
double allreduce_sum(Group& group, double value);
int64_t allreduce_sum(Group& group, int64_t value);

}  // namespace rlora::dist
