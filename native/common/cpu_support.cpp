#include "common/cpu_support.h"

#include <map>
#include <mutex>

#include "common/torch_compat.h"

namespace rlora {

namespace {

std::string try_products(torch::ScalarType dtype) {
  try {
    // Large enough that libtorch hands the products to oneDNN where it would for a real model.
    auto on = torch::TensorOptions().dtype(dtype);
    auto x = torch::linspace(-1, 1, 64 * 256, on).reshape({64, 256}).requires_grad_(true);
    auto w = torch::linspace(-1, 1, 512 * 256, on).reshape({512, 256});
    auto y = torch::linear(x, w);
    auto s = torch::softmax(torch::bmm(y.view({4, 16, 512}), y.view({4, 16, 512}).transpose(1, 2)), -1);
    s.sum().backward();
    return "";
  } catch (const c10::Error& e) {
    return compat::error_message(e);
  } catch (const std::exception& e) {
    return e.what();
  }
}

}  // namespace

std::string cpu_dtype_problem(torch::ScalarType dtype) {
  if (dtype == torch::kFloat32 || dtype == torch::kFloat64) return "";
  static std::mutex mutex;
  static std::map<torch::ScalarType, std::string> known;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find(dtype);
  if (it == known.end()) {
    torch::AutoGradMode grad(true);
    it = known.emplace(dtype, try_products(dtype)).first;
  }
  return it->second;
}

}  // namespace rlora
