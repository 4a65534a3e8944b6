#include "locks.h"

#include <algorithm>
#include <functional>

namespace rlora::binding {

void JobLock::lock_layers(std::vector<std::mutex*> layers) {
  std::sort(layers.begin(), layers.end(), std::less<std::mutex*>());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  for (auto* m : layers) lock(*m);
}

JobLock JobLock::on_model(const model::DecoderModel& model, train::AdamW* opt, const MultiHeadLoraLinear* attaching) {
  JobLock l;
  l.lock(model.mutex());
  std::vector<std::mutex*> layers;  // read under the model's lock: attaching and detaching take it
  for (const auto& a : model.adapters()) layers.push_back(&a->mutex());
  if (attaching) layers.push_back(&attaching->mutex());
  l.lock_layers(std::move(layers));
  if (opt) l.lock(opt->mutex());
  return l;
}

JobLock JobLock::on_layer(const MultiHeadLoraLinear& layer, train::AdamW* opt) {
  JobLock l;
  l.lock(layer.mutex());
  if (opt) l.lock(opt->mutex());
  return l;
}

JobLock JobLock::on_optimizer(train::AdamW& opt) {
  JobLock l;
  l.lock(opt.mutex());
  return l;
}

}  // namespace rlora::binding
