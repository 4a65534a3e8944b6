// Generation: greedy or sampled continuation of a batch with the model's key/value cache
// (DecoderModel::forward_cached), so each new token costs one position. One path serves every
// caller: `Generation` makes tokens a few at a time (streaming, stop strings checked between
// steps), and `generate` runs one Generation to its end.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "model/decoder.h"

namespace rlora::model {

// The smallest temperature that samples (0 is greedy): below it the float64 logits / temperature
// could overflow. Exported to JS (binding/addon.cpp) so lib/ states the same bound.
constexpr double kMinTemperature = 1e-30;

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  int64_t min_new_tokens = 0;        // eos tokens cannot end a row before this many new tokens
  double temperature = 0.0;          // 0: greedy
  int64_t top_k = 0;                 // 0: off
  double top_p = 1.0;                // 1: off
  double repetition_penalty = 1.0;   // 1: off; as transformers: positive logits / p, negative * p
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = 0;          // written after a row has finished
  uint64_t seed = 0;
};

// A generation in progress: the key/value cache, the sampling generator, the tokens each row has
// seen (for the repetition penalty) and which rows have ended. ids [B, S] int64, mask [B, S] or
// undefined; batches must be left-padded. Sampling draws from a CPU generator seeded with
// options.seed (the same tokens on every device). A row stops at one of eos_token_ids (the eos is
// kept) and is then padded with pad_token_id. The adapters attached when it starts must stay
// attached: step() refuses to go on otherwise (the cache holds keys and values they made).
class Generation {
 public:
  Generation(std::shared_ptr<DecoderModel> model, const torch::Tensor& ids, const torch::Tensor& mask,
             const GenerateOptions& options);
  // Makes up to n more tokens for every row, fewer when every row has ended or max_new_tokens is
  // reached; returns them [B, k] int64 on the CPU (k = 0 once finished). Run it without gradients.
  torch::Tensor step(int64_t n);
  bool finished() const { return finished_; }
  int64_t produced() const { return produced_; }
  DecoderModel& model() const { return *model_; }
  // Ends the rows flagged in `rows` ([B] bool, CPU): they are padded from now on (a stop string
  // found by the caller).
  void end_rows(const torch::Tensor& rows);

 private:
  torch::Tensor next_token(torch::Tensor logits);  // [B, V] float32 -> [B] int64 CPU
  std::shared_ptr<DecoderModel> model_;
  std::vector<const MultiHeadLoraLinear*> adapters_;
  GenerateOptions o_;
  KvCache cache_;
  at::Generator gen_;
  torch::Tensor step_ids_, step_mask_;
  torch::Tensor seen_;  // [B, V] bool on the model's device, when repetition_penalty != 1
  torch::Tensor done_;  // [B] bool, CPU
  int64_t produced_ = 0;
  bool finished_ = false;
  std::mutex mutex_;  // step() and end_rows() of one generation never overlap
};

// One Generation to its end: returns [B, S + new] int64 on the CPU. Run it without gradients.
torch::Tensor generate(std::shared_ptr<DecoderModel> model, const torch::Tensor& ids, const torch::Tensor& mask,
                       const GenerateOptions& options);

}  // namespace rlora::model
