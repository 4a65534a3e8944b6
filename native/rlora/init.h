// Initialisation schemes of the LoRA matrices (docs/ARCHITECTURE.md section 2).
#pragma once

#include <torch/torch.h>

#include "rlora/options.h"

namespace rlora::init {

// The sizes a scheme reads: Kaiming-uniform (a = sqrt(5)) bounds by 1/sqrt(fan_in), "unit" draws
// N(0, 1/unit_fan) (A and the router: fan = in; B: fan = out), "gaussian" draws N(0, 1/rank^2) as PEFT.
struct Fans {
  int64_t fan_in;
  int64_t unit_fan;
  int64_t rank;
};

// A new [rows, cols] float64 CPU tensor drawn from `gen` by `scheme`.
torch::Tensor draw(InitScheme scheme, int64_t rows, int64_t cols, const Fans& fans, at::Generator& gen);

// The "stable" scale c / sqrt(gamma), with c = r^(1/4) or out^(1/4) (init.stableBase).
double stable_factor(const InitOptions& init, int64_t rank, int64_t out);

}  // namespace rlora::init
