// Generation: greedy or sampled continuation of a batch with the model's key/value cache
// (DecoderModel::forward_cached), so each new token costs one position.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "model/decoder.h"

namespace rlora::model {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  double temperature = 0.0;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = 0;  // written after a row has finished
  uint64_t seed = 0;
};

// ids [B, S] int64, mask [B, S] or undefined; batches must be left-padded. Sampling draws from a
// CPU generator seeded with options.seed (the same tokens on every device). A row stops at one of
// eos_token_ids and is padded with pad_token_id until every row has stopped or max_new_tokens
// were made. Returns [B, S + new] int64 on the CPU. Run it without gradients (NoGradGuard).
torch::Tensor generate(DecoderModel& model, const torch::Tensor& ids, const torch::Tensor& mask,
                       const GenerateOptions& options);

}  // namespace rlora::model
