// AdamW with decoupled weight decay and bias correction (as PyTorch defines it), global gradient
// norm clipping, and the learning-rate schedule, stepped as one unit.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace rlora::train {

enum class ScheduleKind { Constant, Linear, Cosine };

struct ScheduleOptions {
  ScheduleKind kind = ScheduleKind::Constant;
  int64_t warmup_steps = 0;   // linear warm-up from 0 to the base rate
  int64_t total_steps = 0;    // linear/cosine decay to 0 at total_steps (needed for those kinds)
};

// Learning rate at optimizer step `step` (0-based), as transformers' get_{constant,linear,cosine}_schedule_with_warmup.
double scheduled_lr(double base_lr, const ScheduleOptions& s, int64_t step);
ScheduleKind parse_schedule(const std::string& name);
const char* to_string(ScheduleKind k);

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
  double max_grad_norm = 0.0;  // 0: no clipping
  ScheduleOptions schedule;
};
void validate(const AdamWOptions& o);

struct StepStats {
  double lr = 0.0;         // the rate this step used
  double grad_norm = 0.0;  // global L2 norm before clipping
  // After the update, over the parameters it changed: their global L2 norm, and whether every one
  // of them is usable, i.e. its squared L2 norm is finite in its own dtype (no NaN or infinity, and
  // no values so large that squaring them overflows: float32 norms above about 1.8e19 fail).
  double param_norm = 0.0;
  bool params_finite = true;
};

// The state of one parameter, as torch.optim.AdamW keeps it.
struct AdamWParamState {
  int64_t step = 0;
  torch::Tensor exp_avg, exp_avg_sq;
};

class AdamW {
 public:
  AdamW(std::vector<torch::Tensor> params, const AdamWOptions& options);

  void zero_grad();
  // Clip (when max_grad_norm > 0), then one AdamW update at the scheduled rate. Parameters
  // without a gradient are left alone (their own step count does not advance), as in PyTorch.
  // The updated parameters are checked in the same pass (StepStats::params_finite).
  StepStats step();
  // Optimizer steps taken (the schedule's position).
  int64_t steps_taken() const { return steps_; }
  const AdamWOptions& options() const { return options_; }
  const std::vector<torch::Tensor>& params() const { return params_; }
  std::mutex& mutex() { return mutex_; }

  // For checkpoints: the per-parameter state, in parameter order, and the step count.
  const std::vector<AdamWParamState>& state() const { return state_; }
  // Restores a state taken from an optimizer over parameters of the same shapes (copied in).
  void set_state(int64_t steps, const std::vector<AdamWParamState>& state);

 private:
  AdamWOptions options_;
  std::vector<torch::Tensor> params_;
  std::vector<AdamWParamState> state_;
  int64_t steps_ = 0;
  std::mutex mutex_;
};

}  // namespace rlora::train
