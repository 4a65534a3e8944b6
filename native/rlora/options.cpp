#include "rlora/options.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "common/errors.h"

namespace rlora {

double LoraOptions::scaling() const {
  return rank_stabilization ? alpha / std::sqrt(static_cast<double>(rank))
                            : alpha / static_cast<double>(rank);
}

LoraOptions preset(Method method) {
  LoraOptions o;
  o.method = method;
  switch (method) {
    case Method::Lora:
      o.heads = 1;
      o.dropout_on = DropoutOn::Input;
      o.multi_head_dropout = false;
      o.rank_stabilization = false;
      o.init = InitOptions{InitScheme::Kaiming, InitScheme::Zeros, InitScheme::Kaiming,
                           InitScale::None, 64.0, StableBase::Rank, false};
      break;
    case Method::HydraLora:
      o.heads = 5;
      o.dropout_on = DropoutOn::Input;
      o.multi_head_dropout = false;
      o.rank_stabilization = false;
      o.init = InitOptions{InitScheme::Kaiming, InitScheme::Zeros, InitScheme::Kaiming,
                           InitScale::None, 64.0, StableBase::Rank, false};
      break;
    case Method::RLora:
      o.heads = 5;
      o.dropout_on = DropoutOn::Rank;
      o.multi_head_dropout = true;
      o.rank_stabilization = true;
      // The router starts at zero (uniform softmax) so that the offset below is exact: step-0
      // outputs equal the base model's.
      o.init = InitOptions{InitScheme::Unit, InitScheme::Unit, InitScheme::Zeros,
                           InitScale::Stable, 64.0, StableBase::Rank, true};
      break;
  }
  return o;
}

namespace {
template <typename T>
void apply(T& field, const std::optional<T>& value) {
  if (value) field = *value;
}
[[noreturn]] void bad(const std::string& what) { throw OutOfRange(what); }
}  // namespace

void validate(const LoraOptions& o) {
  std::ostringstream m;
  if (o.rank < 1) {
    m << "rank must be an integer >= 1, got " << o.rank;
    bad(m.str());
  }
  if (o.heads < 1) {
    m << "heads must be an integer >= 1, got " << o.heads;
    bad(m.str());
  }
  if (!(o.dropout >= 0.0 && o.dropout < 1.0)) {
    m << "dropout must be in [0, 1), got " << o.dropout;
    bad(m.str());
  }
  // Upper bounds, so that a hostile or mistyped adapter_config.json cannot allocate without end
  // (heads 1e9 did) or make every product overflow (alpha 1e308 did).
  if (o.rank > kMaxRank) {
    m << "rank must be at most " << kMaxRank << ", got " << o.rank;
    bad(m.str());
  }
  if (o.heads > kMaxHeads) {
    m << "heads must be at most " << kMaxHeads << ", got " << o.heads;
    bad(m.str());
  }
  if (!std::isfinite(o.alpha) || std::abs(o.alpha) > kMaxAlpha) {
    m << "alpha must be a finite number from -" << kMaxAlpha << " to " << kMaxAlpha << ", got " << o.alpha;
    bad(m.str());
  }
  // c / sqrt(gamma) scales A and the heads: a gamma of 1e-308 made them infinite (then NaN)
  if (!(o.init.gamma >= kMinGamma && o.init.gamma <= kMaxGamma)) {
    m << "init.gamma must be a number from " << kMinGamma << " to " << kMaxGamma << ", got " << o.init.gamma;
    bad(m.str());
  }
  // The offset s * mean_i(B_i) A equals the initial product sum_i w_i(x) B_i A only while the
  // router's weights are uniform, i.e. a zero router. Only the published code's reproduction
  // (init.scale "reference") may start elsewhere, as that code does.
  if (o.init.offset && o.heads > 1 && o.init.router != InitScheme::Zeros && o.init.scale != InitScale::Reference) {
    m << "init.offset needs init.router \"zeros\" (a uniform router) to start exactly at the base model; got init.router \""
      << to_string(o.init.router) << "\" (set init.offset false, or init.scale \"reference\" to reproduce the published code)";
    throw std::invalid_argument(m.str());  // two options that do not fit together
  }
}

LoraOptions resolve_options(const LoraOverrides& v) {
  LoraOptions o = preset(v.method);
  apply(o.rank, v.rank);
  apply(o.heads, v.heads);
  apply(o.alpha, v.alpha);
  apply(o.dropout, v.dropout);
  apply(o.dropout_on, v.dropout_on);
  apply(o.multi_head_dropout, v.multi_head_dropout);
  apply(o.rank_stabilization, v.rank_stabilization);
  apply(o.init.a, v.init_a);
  apply(o.init.b, v.init_b);
  apply(o.init.router, v.init_router);
  apply(o.init.scale, v.init_scale);
  apply(o.init.gamma, v.init_gamma);
  apply(o.init.stable_base, v.init_stable_base);
  apply(o.init.offset, v.init_offset);
  apply(o.seed, v.seed);
  validate(o);
  return o;
}

namespace {
template <typename E, size_t K>
E parse_enum(const std::string& name, const std::string& field, const std::pair<const char*, E> (&table)[K]) {
  for (const auto& [n, e] : table)
    if (name == n) return e;
  std::ostringstream m;
  m << field << " must be one of ";
  for (size_t i = 0; i < K; ++i) m << (i ? ", " : "") << '"' << table[i].first << '"';
  m << "; got \"" << name << '"';
  throw OutOfRange(m.str());
}
template <typename E, size_t K>
const char* name_of(E v, const std::pair<const char*, E> (&table)[K]) {
  for (const auto& [n, e] : table)
    if (v == e) return n;
  return "?";
}
const std::pair<const char*, Method> kMethods[] = {
    {"lora", Method::Lora}, {"hydralora", Method::HydraLora}, {"rlora", Method::RLora}};
const std::pair<const char*, InitScheme> kSchemes[] = {{"kaiming", InitScheme::Kaiming},
                                                       {"gaussian", InitScheme::Gaussian},
                                                       {"unit", InitScheme::Unit},
                                                       {"zeros", InitScheme::Zeros},
                                                       {"orthogonal", InitScheme::Orthogonal}};
const std::pair<const char*, InitScale> kScales[] = {
    {"none", InitScale::None}, {"stable", InitScale::Stable}, {"reference", InitScale::Reference}};
const std::pair<const char*, StableBase> kBases[] = {{"rank", StableBase::Rank}, {"out", StableBase::Out}};
const std::pair<const char*, DropoutOn> kDropoutOn[] = {{"input", DropoutOn::Input}, {"rank", DropoutOn::Rank}};
}  // namespace

Method parse_method(const std::string& s) { return parse_enum(s, "method", kMethods); }
InitScheme parse_init_scheme(const std::string& s, const std::string& field) {
  return parse_enum(s, field, kSchemes);
}
InitScale parse_init_scale(const std::string& s) { return parse_enum(s, "init.scale", kScales); }
StableBase parse_stable_base(const std::string& s) { return parse_enum(s, "init.stableBase", kBases); }
DropoutOn parse_dropout_on(const std::string& s) { return parse_enum(s, "dropoutOn", kDropoutOn); }
const char* to_string(Method v) { return name_of(v, kMethods); }
const char* to_string(InitScheme v) { return name_of(v, kSchemes); }
const char* to_string(InitScale v) { return name_of(v, kScales); }
const char* to_string(StableBase v) { return name_of(v, kBases); }
const char* to_string(DropoutOn v) { return name_of(v, kDropoutOn); }

}  // namespace rlora
