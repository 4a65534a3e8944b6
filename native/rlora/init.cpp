#include "rlora/init.h"

#include <cmath>

namespace rlora::init {

torch::Tensor draw(InitScheme scheme, int64_t rows, int64_t cols, const Fans& fans, at::Generator& gen) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor t = torch::empty({rows, cols}, opts);
  switch (scheme) {
    case InitScheme::Zeros:
      t.zero_();
      break;
    case InitScheme::Kaiming: {
      // kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in)
      const double bound = 1.0 / std::sqrt(static_cast<double>(fans.fan_in));
      t.uniform_(-bound, bound, gen);
      break;
    }
    case InitScheme::Gaussian:
      t.normal_(0.0, 1.0 / static_cast<double>(fans.rank), gen);
      break;
    case InitScheme::Unit:
      t.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(fans.unit_fan)), gen);
      break;
    case InitScheme::Orthogonal: {
      // As torch.nn.init.orthogonal_: QR of a Gaussian matrix, signs fixed by diag(R).
      const bool wide = rows < cols;
      torch::Tensor g = torch::empty({std::max(rows, cols), std::min(rows, cols)}, opts).normal_(0.0, 1.0, gen);
      auto qr = torch::linalg_qr(g);
      torch::Tensor q = std::get<0>(qr) * torch::sign(torch::diagonal(std::get<1>(qr)));
      t.copy_(wide ? q.t() : q);
      break;
    }
  }
  return t;
}

double stable_factor(const InitOptions& init, int64_t rank, int64_t out) {
  const double base = init.stable_base == StableBase::Rank ? static_cast<double>(rank) : static_cast<double>(out);
  return std::pow(base, 0.25) / std::sqrt(init.gamma);
}

}  // namespace rlora::init
