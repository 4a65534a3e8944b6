#include "distributed/reducer.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <stdexcept>

namespace rlora::dist {

namespace {
std::mutex g_mutex;
ReduceStats g_last;
constexpr int64_t kFirstBucketBytes = int64_t{1} << 20;  // DDP's first bucket

// Which parameters have a gradient on some rank (one small allreduce of 0/1 flags); `had` says
// which have one here.
std::vector<bool> had_on_any_rank(Group& group, const std::vector<bool>& had) {
  std::vector<int64_t> ones(had.size());
  for (size_t i = 0; i < had.size(); ++i) ones[i] = had[i] ? 1 : 0;
  torch::Tensor flags = torch::tensor(ones, torch::kInt64);
  group.allreduce_sum({flags});
  std::vector<bool> any(had.size());
  const auto* f = flags.data_ptr<int64_t>();
  for (size_t i = 0; i < had.size(); ++i) any[i] = f[i] > 0;
  return any;
}

// Sums the .grad of the parameters some rank has a gradient for (`keep`), zeros where this rank
// has none, in one allreduce_sum; the others keep none.
void sum_kept(Group& group, const std::vector<torch::Tensor>& params, const std::vector<bool>& keep) {
  std::vector<torch::Tensor> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!keep[i]) continue;
    auto p = params[i];
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);  // the same list on every rank
    grads.push_back(p.grad());
  }
  if (!grads.empty()) group.allreduce_sum(grads);
}
}  // namespace

ReduceStats last_reduce_stats() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_last;
}

void sum_gradients(Group& group, const std::vector<torch::Tensor>& params) {
  std::vector<bool> had;
  for (const auto& p : params) had.push_back(p.grad().defined());
  sum_kept(group, params, had_on_any_rank(group, had));
}

OverlappedAllreduce::OverlappedAllreduce(Group& group, const std::vector<torch::Tensor>& params)
    : group_(group), params_(params), slots_(params.size()) {
  const int64_t cap_bytes = group.bucket_cap_bytes();
  // Buckets in reverse order of the parameters: backward produces the last layers' gradients first.
  // A bucket holds one dtype; a parameter larger than the cap has a bucket of its own.
  std::vector<int64_t> numel;
  int64_t open_bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const auto& p = params_[k];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    const int64_t cap = buckets_.size() == 1 ? std::min(kFirstBucketBytes, cap_bytes) : cap_bytes;
    if (buckets_.empty() || params_[buckets_.back().members.front()].scalar_type() != p.scalar_type() ||
        (open_bytes > 0 && open_bytes + bytes > cap)) {
      buckets_.emplace_back();
      numel.push_back(0);
      open_bytes = 0;
    }
    slots_[k].bucket = buckets_.size() - 1;
    slots_[k].offset = numel.back();
    buckets_.back().members.push_back(k);
    numel.back() += p.numel();
    open_bytes += bytes;
  }
  const auto on = torch::TensorOptions().device(group_.device());
  for (size_t b = 0; b < buckets_.size(); ++b) {
    auto& bucket = buckets_[b];
    bucket.flat = torch::empty({numel[b]}, on.dtype(params_[bucket.members.front()].scalar_type()));
    bucket.pending = static_cast<int>(bucket.members.size());
  }
  stats_.buckets = static_cast<int>(buckets_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].requires_grad())
      slots_[i].hook = static_cast<int>(params_[i].register_hook([this, i](const torch::Tensor& g) { arrived(i, g); }));
}

OverlappedAllreduce::~OverlappedAllreduce() {
  for (size_t i = 0; i < params_.size(); ++i)
    if (slots_[i].hook >= 0) params_[i].remove_hook(static_cast<unsigned>(slots_[i].hook));
}

// A leaf's hook runs before its gradient is added to .grad: the bucket gets .grad (what earlier
// micro-batches left) plus this gradient, which is what .grad holds once backward is done.
void OverlappedAllreduce::arrived(size_t i, const torch::Tensor& grad) {
  torch::NoGradGuard no_grad;
  Slot& s = slots_[i];
  Bucket& b = buckets_[s.bucket];
  if (++s.calls > 1 && b.work) {
    late_ = true;  // a second backward pass reached it (chunked head, checkpointing) after its bucket started
    return;
  }
  const torch::Tensor& acc = params_[i].grad();
  const torch::Tensor full = acc.defined() ? acc + grad : grad;
  b.flat.narrow(0, s.offset, params_[i].numel()).copy_(full.reshape({-1}));
  if (s.calls == 1 && --b.pending == 0) start_ready(/*in_backward=*/true);
}

void OverlappedAllreduce::start_ready(bool in_backward) {
  while (next_ < buckets_.size() && buckets_[next_].pending == 0) {
    auto& b = buckets_[next_];
    b.work = group_.allreduce_sum_async(b.flat);
    if (in_backward) stats_.started_in_backward++;
    ++next_;
  }
}

void OverlappedAllreduce::finish() {
  torch::NoGradGuard no_grad;
  std::vector<bool> had;
  for (size_t i = 0; i < params_.size(); ++i) {
    Slot& s = slots_[i];
    had.push_back(s.calls > 0 || params_[i].grad().defined());
    if (s.calls > 0) continue;
    // no gradient in this backward: its .grad (earlier micro-batches) or zeros
    const torch::Tensor& acc = params_[i].grad();
    auto dst = buckets_[s.bucket].flat.narrow(0, s.offset, params_[i].numel());
    if (acc.defined())
      dst.copy_(acc.reshape({-1}));
    else
      dst.zero_();
    buckets_[s.bucket].pending--;
  }
  start_ready(/*in_backward=*/false);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<bool> keep = had_on_any_rank(group_, had);  // queued behind the buckets
  for (auto& b : buckets_) b.work->wait();
  stats_.wait_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (late_) {
    // Every rank runs the same graph, so every rank takes this branch: sum the final .grad.
    stats_.fallback = true;
    sum_kept(group_, params_, keep);
  } else {
    for (size_t i = 0; i < params_.size(); ++i) {
      auto& p = params_[i];
      if (!keep[i]) continue;  // no rank has a gradient for it: it keeps none
      const auto sum = buckets_[slots_[i].bucket].flat.narrow(0, slots_[i].offset, p.numel()).view(p.sizes());
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      p.mutable_grad().copy_(sum);
    }
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  g_last = stats_;
}

}  // namespace rlora::dist
