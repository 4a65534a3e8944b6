// Attention whose memory is linear in the sequence length (docs/ARCHITECTURE.md section 3): query
// blocks against key blocks with an online softmax, saving only the output and each row's
// log-sum-exp; the backward recomputes each block (the flash-attention algorithm), as one custom
// autograd function. Masks are made per block from positions, never as a [S, T] tensor.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace rlora::model {

struct AttentionMask {
  int64_t past = 0;         // query i stands at position past + i among the T keys (a cache)
  int64_t window = 0;       // > 0: a query sees the keys within this many positions (sliding window)
  torch::Tensor key_mask;   // [B, T] (nonzero: a token; 0: padding), or undefined: every key is one
  double scale = 1.0;       // scores are q.k * scale
  double softcap = 0.0;     // > 0: scores become tanh(s / softcap) * softcap (Gemma2)
  // Packing (one row holding several examples, B == 1): example e at positions [cu[e], cu[e + 1]),
  // int64 on the CPU, cu[0] == 0, the last == T (the varlen layout). A query sees the keys of its
  // own example only; blocks that hold no key of a query's example are skipped, so a packed row
  // never pays for attention across examples. Undefined: the row is one sequence.
  torch::Tensor cu_seqlens;
};

// Each position's example under m.cu_seqlens: [T] int64 on `device` (undefined without packing).
torch::Tensor segment_ids(const AttentionMask& m, const torch::Device& device);

// The rows (query positions) that may see no key at all under `m`: a padding query. They attend to
// their own position only (as the eager path does), so every softmax stays finite. [B, S] bool.
torch::Tensor empty_rows(const AttentionMask& m, int64_t B, int64_t S, int64_t T, const torch::Device& device);

// softmax(mask(q k^T * scale)) v, causal, for q [B, H, S, D] and k, v [B, H, T, D] (the same heads:
// expand grouped key/value heads first). Computed in float32 for any input dtype; returns q's dtype.
// `block` rows and columns a block (the memory is O(B H block^2) besides the inputs).
torch::Tensor block_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const AttentionMask& m,
                              int64_t block = 256);

// Attention as the model runs it: the eager path for short sequences (up to kEagerScores scores a
// head: one product is faster), libtorch 2.x's fused attention where it computes the same (causal,
// no cache offset, window, soft-cap or packing, padding only after the tokens: a padding query's
// output is then not the eager path's, but no token's output or gradient depends on it), else the
// block path.
constexpr int64_t kEagerScores = 256 * 256;
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const AttentionMask& m);

// The same, materialising the [B, H, S, T] scores (the reference the block path is tested against,
// and what short sequences use: for them it is the faster of the two).
torch::Tensor eager_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const AttentionMask& m);

}  // namespace rlora::model
