#include "locks.h"

namespace rlora::binding {

JobLock JobLock::on_model(const model::DecoderModel& model, train::AdamW* opt, const MultiHeadLoraLinear* /*attaching*/) {
  JobLock l;
  l.lock(model.mutex());
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
