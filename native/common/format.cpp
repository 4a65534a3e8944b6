#include "common/format.h"

#include <stdexcept>
#include <utility>

#include "common/errors.h"

namespace rlora {

namespace {
const std::pair<const char*, torch::ScalarType> kDtypes[] = {
    {"float32", torch::kFloat32}, {"float64", torch::kFloat64}, {"bfloat16", torch::kBFloat16},
    {"float16", torch::kFloat16}, {"int32", torch::kInt32},     {"int64", torch::kInt64},
    {"uint8", torch::kUInt8},     {"bool", torch::kBool}};
}

std::string dtype_str(torch::ScalarType t) {
  for (const auto& [name, st] : kDtypes)
    if (st == t) return name;
  return c10::toString(t);
}

torch::ScalarType parse_dtype(const std::string& name) {
  for (const auto& [n, st] : kDtypes)
    if (name == n) return st;
  std::string known;
  for (const auto& [n, st] : kDtypes) known += (known.empty() ? "" : ", ") + std::string(n);
  throw OutOfRange("unknown dtype \"" + name + "\"; expected one of " + known);
}

torch::Device parse_device(const std::string& name) {
  const bool cuda = name == "cuda" || name.rfind("cuda:", 0) == 0;
  if (name != "cpu" && !cuda)
    throw OutOfRange("unknown device \"" + name + "\"; expected \"cpu\", \"cuda\" or \"cuda:N\"");
  if (cuda) {
    if (!torch::cuda::is_available())
      throw std::invalid_argument("device \"" + name + "\" requested but this libtorch sees no CUDA device");
    torch::Device d(name);
    if (d.has_index() && d.index() >= static_cast<int64_t>(torch::cuda::device_count()))
      throw OutOfRange("device \"" + name + "\" does not exist: " +
                                  std::to_string(torch::cuda::device_count()) + " CUDA device(s) visible");
    return d;
  }
  return torch::Device(torch::kCPU);
}

}  // namespace rlora
