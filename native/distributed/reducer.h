// Summing the gradients over the ranks while backward still runs, as DDP's reducer does: hooks on
// the trainable parameters copy each gradient into flat buckets, and a bucket's allreduce starts as
// soon as all its gradients are in, so the exchange of the last layers' gradients overlaps the
// backward of the first ones.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "distributed/group.h"

namespace rlora::dist {

// What the last overlapped step did (for tests and benchmarks).
struct ReduceStats {
  int buckets = 0;
  int started_in_backward = 0;  // buckets whose allreduce started before backward returned
  bool fallback = false;        // a gradient came after its bucket had started: summed again after backward
  double wait_ms = 0;           // time finish() waited for the exchange (the part backward did not hide)
};
ReduceStats last_reduce_stats();

// Sums the gradients of `params` over the ranks after backward, in flat buckets (no overlap). A
// parameter that has no gradient on any rank keeps none (as DDP leaves it: the optimizer then
// skips it, weight decay included); one that has a gradient somewhere gets the sum, zeros where
// it had none.
void sum_gradients(Group& group, const std::vector<torch::Tensor>& params);

class OverlappedAllreduce {
 public:
  // Hooks `params` (those that require grad) for the next backward. Gradients accumulated before
  // it (earlier micro-batches) are included in the sums. Buckets hold group.bucket_cap_bytes()
  // (> 0), the first one at most 1 MiB, as DDP: the last layers' gradients, which arrive first,
  // start the exchange early.
  OverlappedAllreduce(Group& group, const std::vector<torch::Tensor>& params);
  ~OverlappedAllreduce();  // removes the hooks
  OverlappedAllreduce(const OverlappedAllreduce&) = delete;
  OverlappedAllreduce& operator=(const OverlappedAllreduce&) = delete;

  // After backward: starts the buckets still waiting (a parameter without a gradient counts as
  // zeros), waits for all, and writes every parameter's summed gradient into its .grad (none
  // where no rank had one, as sum_gradients).
  void finish();

 private:
  struct Slot {
    size_t bucket = 0;
    int64_t offset = 0;
    int calls = 0;
    int hook = -1;
  };
  struct Bucket {
    torch::Tensor flat;
    std::vector<size_t> members;
    int pending = 0;
    std::unique_ptr<Pending> work;
  };
  void arrived(size_t i, const torch::Tensor& grad);
  void start_ready(bool in_backward);

  Group& group_;
  std::vector<torch::Tensor> params_;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  size_t next_ = 0;  // buckets start in index order, the same on every rank
  bool late_ = false;
  ReduceStats stats_;
};

}  // namespace rlora::dist
