#include "model/generate.h"

#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>

#include "common/errors.h"
#include "common/torch_compat.h"

namespace rlora::model {

using torch::Tensor;

namespace {

void check_options(const GenerateOptions& o) {
  if (o.max_new_tokens < 0) throw OutOfRange("maxNewTokens must be >= 0, got " + std::to_string(o.max_new_tokens));
  if (o.min_new_tokens < 0) throw OutOfRange("minNewTokens must be >= 0, got " + std::to_string(o.min_new_tokens));
  if (!(o.temperature == 0 || o.temperature >= kMinTemperature))
    throw OutOfRange("temperature must be 0 (greedy) or at least 1e-30, got " + std::to_string(o.temperature));
  if (o.top_k < 0) throw OutOfRange("topK must be >= 0, got " + std::to_string(o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1)) throw OutOfRange("topP must be in (0, 1], got " + std::to_string(o.top_p));
  if (!(o.repetition_penalty > 0 && o.repetition_penalty < std::numeric_limits<double>::infinity()))
    throw OutOfRange("repetitionPenalty must be a finite number > 0, got " + std::to_string(o.repetition_penalty));
}

std::vector<const MultiHeadLoraLinear*> adapter_set(const DecoderModel& m) {
  std::vector<const MultiHeadLoraLinear*> out;
  for (const auto& a : m.adapters()) out.push_back(a.get());
  return out;
}

}  // namespace

Generation::Generation(std::shared_ptr<DecoderModel> model, const Tensor& ids, const Tensor& mask, const GenerateOptions& o)
    : model_(std::move(model)), o_(o), gen_(compat::make_cpu_generator(o.seed)) {
  model_->check_ids(ids, mask);
  check_options(o_);
  if (mask.defined()) {
    // Left padding only: once a row has a token, it has no padding after it.
    Tensor m = mask.to(torch::kCPU, torch::kInt64);
    Tensor after = (m.cumsum(1) > 0).logical_and(m == 0);
    if (after.any().item<bool>())
      throw std::invalid_argument("generate needs left padding: the attention mask has padding after a token");
  }
  adapters_ = adapter_set(*model_);
  step_ids_ = ids;
  step_mask_ = mask.defined() ? mask : torch::ones_like(ids);
  const int64_t B = ids.size(0);
  done_ = torch::zeros({B}, torch::kBool);
  if (o_.repetition_penalty != 1.0) {
    // the prompt's real tokens count as seen (padding does not)
    const int64_t V = model_->config().vocab_size;
    seen_ = torch::zeros({B, V}, torch::TensorOptions().dtype(torch::kBool).device(model_->device()));
    Tensor real = step_mask_.to(model_->device()).to(torch::kBool);
    seen_.scatter_(1, ids.to(model_->device()), real);
  }
  finished_ = o_.max_new_tokens == 0;
}

Tensor Generation::next_token(Tensor logits) {
  const double inf = std::numeric_limits<double>::infinity();
  if (seen_.defined()) {
    // transformers' RepetitionPenaltyLogitsProcessor: a seen token's logit is divided by the
    // penalty when positive and multiplied by it when negative
    Tensor penalised = torch::where(logits > 0, logits / o_.repetition_penalty, logits * o_.repetition_penalty);
    logits = torch::where(seen_, penalised, logits);
  }
  if (produced_ < o_.min_new_tokens) {
    for (int64_t e : o_.eos_token_ids)
      if (e >= 0 && e < logits.size(-1)) logits.select(-1, e).fill_(-inf);
  }
  if (o_.temperature == 0) return logits.argmax(-1).to(torch::kCPU);  // on the model's device: only the ids come back
  // Sampling in float64 on the CPU (the same tokens on every device for a seed): logits divided by
  // a temperature down to 1e-30 stay finite, so a tiny temperature picks the most likely token.
  logits = logits.to(torch::kCPU, torch::kFloat64) / o_.temperature;
  if (o_.top_k > 0 && o_.top_k < logits.size(-1)) {
    Tensor kth = std::get<0>(logits.topk(o_.top_k, -1)).select(-1, o_.top_k - 1).unsqueeze(-1);
    logits = logits.masked_fill(logits < kth, -inf);
  }
  if (o_.top_p < 1.0) {
    auto sorted = logits.sort(-1, /*descending=*/true);
    Tensor probs = torch::softmax(std::get<0>(sorted), -1);
    Tensor cum = probs.cumsum(-1);
    Tensor drop = (cum - probs) > o_.top_p;  // keep the smallest prefix whose mass reaches top_p
    Tensor drop_orig = torch::zeros_like(drop).scatter(-1, std::get<1>(sorted), drop);
    logits = logits.masked_fill(drop_orig, -inf);
  }
  return torch::multinomial(torch::softmax(logits, -1), 1, false, gen_).squeeze(1);
}

Tensor Generation::step(int64_t n) {
  std::lock_guard<std::mutex> hold(mutex_);
  if (n < 0) throw OutOfRange("a generation step's token count must be >= 0, got " + std::to_string(n));
  if (adapter_set(*model_) != adapters_)
    throw std::invalid_argument("the model's adapters changed while it was generating: start the generation again");
  const int64_t B = done_.size(0);
  std::vector<Tensor> made;
  for (int64_t t = 0; t < n && !finished_; ++t) {
    Tensor last = model_->forward_cached(step_ids_, step_mask_, cache_).select(1, -1).to(torch::kFloat32);
    Tensor next = next_token(last);
    next = torch::where(done_, torch::full_like(next, o_.pad_token_id), next);
    made.push_back(next.unsqueeze(1));
    ++produced_;
    if (seen_.defined()) seen_.scatter_(1, next.unsqueeze(1).to(model_->device()), (~done_).unsqueeze(1).to(model_->device()));
    for (int64_t e : o_.eos_token_ids) done_ = done_.logical_or(next == e);
    finished_ = produced_ >= o_.max_new_tokens || done_.all().item<bool>();
    step_ids_ = next.unsqueeze(1).to(model_->device());
    step_mask_ = torch::ones({B, 1}, torch::TensorOptions().dtype(torch::kInt64).device(model_->device()));
  }
  if (made.empty()) return torch::empty({B, 0}, torch::kInt64);
  return torch::cat(made, 1);
}

void Generation::end_rows(const Tensor& rows) {
  std::lock_guard<std::mutex> hold(mutex_);
  if (rows.dim() != 1 || rows.size(0) != done_.size(0))
    throw std::invalid_argument("endRows needs one flag per row (" + std::to_string(done_.size(0)) + ")");
  done_ = done_.logical_or(rows.to(torch::kCPU, torch::kBool));
  if (done_.all().item<bool>()) finished_ = true;
}

Tensor generate(std::shared_ptr<DecoderModel> model, const Tensor& ids, const Tensor& mask, const GenerateOptions& options) {
  Generation g(std::move(model), ids, mask, options);
  Tensor fresh = g.step(options.max_new_tokens);
  return torch::cat({ids.to(torch::kCPU), fresh}, 1);
}

}  // namespace rlora::model
