#include "model/generate.h"

#include <limits>
#include <stdexcept>
#include <tuple>

#include "common/errors.h"
#include "common/torch_compat.h"

namespace rlora::model {

using torch::Tensor;

Tensor generate(DecoderModel& model, const Tensor& ids, const Tensor& mask, const GenerateOptions& o) {
  model.check_ids(ids, mask);
  if (o.max_new_tokens < 0) throw OutOfRange("maxNewTokens must be >= 0, got " + std::to_string(o.max_new_tokens));
  if (!(o.temperature >= 0)) throw OutOfRange("temperature must be >= 0, got " + std::to_string(o.temperature));
  if (o.top_k < 0) throw OutOfRange("topK must be >= 0, got " + std::to_string(o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1)) throw OutOfRange("topP must be in (0, 1], got " + std::to_string(o.top_p));
  if (mask.defined()) {
    // Left padding only: once a row has a token, it has no padding after it.
    Tensor m = mask.to(torch::kCPU, torch::kInt64);
    Tensor after = (m.cumsum(1) > 0).logical_and(m == 0);
    if (after.any().item<bool>())
      throw std::invalid_argument("generate needs left padding: the attention mask has padding after a token");
  }
  const int64_t B = ids.size(0);
  KvCache cache;
  at::Generator gen = compat::make_cpu_generator(o.seed);
  Tensor out = ids.to(torch::kCPU);
  Tensor done = torch::zeros({B}, torch::kBool);
  Tensor step_ids = ids, step_mask = mask.defined() ? mask : torch::ones_like(ids);
  for (int64_t t = 0; t < o.max_new_tokens; ++t) {
    Tensor logits = model.forward_cached(step_ids, step_mask, cache).select(1, step_ids.size(1) - 1).to(torch::kFloat32);
    Tensor next;
    if (o.temperature == 0) {
      next = logits.argmax(-1).to(torch::kCPU);  // on the model's device: only the ids come back
    } else {
      // sampling draws from a CPU generator (the same tokens on every device for a seed)
      logits = logits.to(torch::kCPU);
      logits = logits / o.temperature;
      if (o.top_k > 0 && o.top_k < logits.size(-1)) {
        Tensor kth = std::get<0>(logits.topk(o.top_k, -1)).select(-1, o.top_k - 1).unsqueeze(-1);
        logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
      }
      if (o.top_p < 1.0) {
        auto sorted = logits.sort(-1, /*descending=*/true);
        Tensor probs = torch::softmax(std::get<0>(sorted), -1);
        Tensor cum = probs.cumsum(-1);
        Tensor drop = (cum - probs) > o.top_p;  // keep the smallest prefix whose mass reaches top_p
        Tensor drop_orig = torch::zeros_like(drop).scatter(-1, std::get<1>(sorted), drop);
        logits = logits.masked_fill(drop_orig, -std::numeric_limits<float>::infinity());
      }
      next = torch::multinomial(torch::softmax(logits, -1), 1, false, gen).squeeze(1);
    }
    next = torch::where(done, torch::full_like(next, o.pad_token_id), next);
    out = torch::cat({out, next.unsqueeze(1)}, 1);
    for (int64_t e : o.eos_token_ids) done = done.logical_or(next == e);
    if (done.all().item<bool>()) break;
    step_ids = next.unsqueeze(1).to(model.device());
    step_mask = torch::ones({B, 1}, torch::TensorOptions().dtype(torch::kInt64).device(model.device()));
  }
  return out;
}

}  // namespace rlora::model
