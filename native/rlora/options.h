// Options of the multi-head LoRA layer (docs/ARCHITECTURE.md section 2) and the three presets.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace rlora {

enum class Method { Lora, HydraLora, RLora };
enum class InitScheme { Kaiming, Gaussian, Unit, Zeros, Orthogonal };
enum class InitScale { None, Stable, Reference };
enum class StableBase { Rank, Out };
enum class DropoutOn { Input, Rank };

struct InitOptions {
  InitScheme a = InitScheme::Kaiming;
  InitScheme b = InitScheme::Zeros;
  InitScheme router = InitScheme::Kaiming;
  InitScale scale = InitScale::None;
  double gamma = 64.0;
  StableBase stable_base = StableBase::Rank;
  bool offset = false;
};

// Fully resolved options: every field set.
struct LoraOptions {
  Method method = Method::RLora;
  int64_t rank = 8;
  int64_t heads = 5;
  double alpha = 16.0;
  double dropout = 0.1;
  DropoutOn dropout_on = DropoutOn::Rank;
  bool multi_head_dropout = true;  // each head draws its own mask (R-LoRA) or one shared (HydraLoRA)
  bool rank_stabilization = true;  // s = alpha / sqrt(r) instead of alpha / r
  InitOptions init;
  uint64_t seed = 0;

  // s = alpha / r, or alpha / sqrt(r) with rank stabilisation.
  double scaling() const;
};

// What a user sets; unset fields come from the method's preset.
struct LoraOverrides {
  Method method = Method::RLora;
  std::optional<int64_t> rank, heads;
  std::optional<double> alpha, dropout;
  std::optional<DropoutOn> dropout_on;
  std::optional<bool> multi_head_dropout, rank_stabilization;
  std::optional<InitScheme> init_a, init_b, init_router;
  std::optional<InitScale> init_scale;
  std::optional<double> init_gamma;
  std::optional<StableBase> init_stable_base;
  std::optional<bool> init_offset;
  std::optional<uint64_t> seed;
};

// Bounds of the options (validate): far above any real adapter (rank 4 to 256, a handful of heads,
// alpha up to a few hundred), low enough that a bad value is refused before anything is allocated.
constexpr int64_t kMaxRank = 65536;
constexpr int64_t kMaxHeads = 1024;
constexpr double kMaxAlpha = 1e6;
// Bounds of init.gamma (the stable scale is c / sqrt(gamma); the default is 64).
constexpr double kMinGamma = 1e-6;
constexpr double kMaxGamma = 1e12;

// The preset of a method (docs/ARCHITECTURE.md section 2 table).
LoraOptions preset(Method method);
// Preset filled with the overrides, then validated; throws std::invalid_argument naming the bad value.
LoraOptions resolve_options(const LoraOverrides& overrides);
void validate(const LoraOptions& options);

// Names as users write them ("rlora", "kaiming", "rank", ...). Parsers throw std::invalid_argument.
Method parse_method(const std::string& name);
InitScheme parse_init_scheme(const std::string& name, const std::string& field);
InitScale parse_init_scale(const std::string& name);
StableBase parse_stable_base(const std::string& name);
DropoutOn parse_dropout_on(const std::string& name);
const char* to_string(Method v);
const char* to_string(InitScheme v);
const char* to_string(InitScale v);
const char* to_string(StableBase v);
const char* to_string(DropoutOn v);

}  // namespace rlora
