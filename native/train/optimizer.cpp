#include "train/optimizer.h"

#include <cmath>
#include <stdexcept>

#include "common/errors.h"

namespace rlora::train {

double scheduled_lr(double base_lr, const ScheduleOptions& s, int64_t step) {
  if (step < s.warmup_steps) return base_lr * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, s.warmup_steps));
  if (s.kind == ScheduleKind::Constant) return base_lr;
  const double progress = static_cast<double>(step - s.warmup_steps) /
                          static_cast<double>(std::max<int64_t>(1, s.total_steps - s.warmup_steps));
  if (s.kind == ScheduleKind::Linear) return base_lr * std::max(0.0, 1.0 - progress);
  return base_lr * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

ScheduleKind parse_schedule(const std::string& name) {
  if (name == "constant") return ScheduleKind::Constant;
  if (name == "linear") return ScheduleKind::Linear;
  if (name == "cosine") return ScheduleKind::Cosine;
  throw OutOfRange("schedule must be one of \"constant\", \"linear\", \"cosine\"; got \"" + name + "\"");
}

const char* to_string(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::Constant: return "constant";
    case ScheduleKind::Linear: return "linear";
    case ScheduleKind::Cosine: return "cosine";
  }
  return "?";
}

void validate(const AdamWOptions& o) {
  auto bad = [](const std::string& m) { throw OutOfRange(m); };
  if (!(o.lr >= 0) || !std::isfinite(o.lr)) bad("lr must be a finite number >= 0, got " + std::to_string(o.lr));
  if (!(o.beta1 >= 0 && o.beta1 < 1)) bad("betas[0] must be in [0, 1), got " + std::to_string(o.beta1));
  if (!(o.beta2 >= 0 && o.beta2 < 1)) bad("betas[1] must be in [0, 1), got " + std::to_string(o.beta2));
  if (!(o.eps > 0)) bad("eps must be > 0, got " + std::to_string(o.eps));
  if (!(o.weight_decay >= 0)) bad("weightDecay must be >= 0, got " + std::to_string(o.weight_decay));
  if (!(o.max_grad_norm >= 0)) bad("maxGradNorm must be >= 0 (0: no clipping), got " + std::to_string(o.max_grad_norm));
  if (o.schedule.warmup_steps < 0) bad("warmupSteps must be >= 0, got " + std::to_string(o.schedule.warmup_steps));
  if (o.schedule.kind != ScheduleKind::Constant && o.schedule.total_steps <= o.schedule.warmup_steps)
    bad(std::string("a ") + to_string(o.schedule.kind) + " schedule needs totalSteps > warmupSteps, got totalSteps " +
        std::to_string(o.schedule.total_steps) + " and warmupSteps " + std::to_string(o.schedule.warmup_steps));
}

AdamW::AdamW(std::vector<torch::Tensor> params, const AdamWOptions& options)
    : options_(options), params_(std::move(params)) {
  validate(options_);
  if (params_.empty()) throw std::invalid_argument("AdamW needs at least one parameter");
  for (const auto& p : params_) {
    torch::NoGradGuard no_grad;
    state_.push_back({0, torch::zeros_like(p, at::MemoryFormat::Contiguous), torch::zeros_like(p, at::MemoryFormat::Contiguous)});
  }
}

void AdamW::set_state(int64_t steps, const std::vector<AdamWParamState>& state) {
  if (state.size() != params_.size())
    throw std::invalid_argument("optimizer state has " + std::to_string(state.size()) + " parameters, this optimizer " +
                                std::to_string(params_.size()));
  for (size_t i = 0; i < state.size(); ++i) {
    if (state[i].exp_avg.sizes() != params_[i].sizes() || state[i].exp_avg_sq.sizes() != params_[i].sizes())
      throw std::invalid_argument("optimizer state of parameter " + std::to_string(i) + " does not match its shape");
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < state.size(); ++i) {
    state_[i].step = state[i].step;
    state_[i].exp_avg.copy_(state[i].exp_avg);
    state_[i].exp_avg_sq.copy_(state[i].exp_avg_sq);
  }
  steps_ = steps;
}

void AdamW::zero_grad() {
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
}

StepStats AdamW::step() {
  StepStats st;
  st.lr = scheduled_lr(options_.lr, options_.schedule, steps_);
  {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> norms;
    for (auto& p : params_)
      if (p.grad().defined()) norms.push_back(p.grad().detach().to(torch::kFloat64).norm());
    st.grad_norm = norms.empty() ? 0.0 : torch::stack(norms).norm().item<double>();
    if (options_.max_grad_norm > 0) {
      // As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
      const double coef = options_.max_grad_norm / (st.grad_norm + 1e-6);
      if (coef < 1.0)
        for (auto& p : params_)
          if (p.grad().defined()) p.mutable_grad().mul_(coef);
    }
  }
  // torch.optim.AdamW (decoupled weight decay, bias correction), one parameter at a time.
  torch::NoGradGuard no_grad;
  const double b1 = options_.beta1, b2 = options_.beta2;
  std::vector<torch::Tensor> updated_norms, updated_ok;
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i];
    if (!p.grad().defined()) continue;
    const torch::Tensor& g = p.grad();
    AdamWParamState& s = state_[i];
    s.step += 1;
    p.mul_(1.0 - st.lr * options_.weight_decay);
    s.exp_avg.mul_(b1).add_(g, 1.0 - b1);
    s.exp_avg_sq.mul_(b2).addcmul_(g, g, 1.0 - b2);
    const double bias1 = 1.0 - std::pow(b1, static_cast<double>(s.step));
    const double bias2 = 1.0 - std::pow(b2, static_cast<double>(s.step));
    torch::Tensor denom = (s.exp_avg_sq.sqrt() / std::sqrt(bias2)).add_(options_.eps);
    p.addcdiv_(s.exp_avg, denom, -st.lr / bias1);
    torch::Tensor norm = p.norm();  // in p's dtype (accumulated wider)
    updated_norms.push_back(norm.to(torch::kFloat64));
    updated_ok.push_back(torch::isfinite(norm * norm));
  }
  if (!updated_norms.empty()) {
    // one device-to-host transfer for both results
    torch::Tensor summary = torch::stack({torch::stack(updated_norms).norm(), torch::stack(updated_ok).all().to(torch::kFloat64)}).cpu();
    st.param_norm = summary[0].item<double>();
    st.params_finite = summary[1].item<double>() == 1.0;
  }
  ++steps_;
  return st;
}

}  // namespace rlora::train
