// The locking rule, in one place: every binding takes its locks through JobLock, which decides
// them from what the job touches.
//
//   a model's job (lmTrainStep, lmEvalLoss, forward, generate, setAdapter, setParameter, quantize,
//   initRandom, ...) holds the model and every adapter layer attached to it, and the optimizer
//   when it has one (lmTrainStep);
//   a layer's job (forward, vjp, its state dict, training mode, generator) holds that layer, and
//   the optimizer when it has one (fitLayerStep);
//   an optimizer's state (state, setState) is read and written under its own lock.
//
// So while a training step runs, nothing else runs on its model, the model's adapter layers or
// its optimizer: a layer's forward waits for the step instead of drawing from its dropout
// generator or reading weights half-way through an update. Every asynchronous job runs on one job
// thread (common.h, run_on_job_thread: OpenBLAS's buffers), so jobs on other models wait their
// turn too; the locks order jobs against the synchronous calls on the JS thread. Locks are taken
// in one order (the model, its layers by address, the optimizer), so two callers never wait on
// each other.
//
// The JS thread does not wait on a training step: lib/activity.ts refuses every call that would
// touch a training model, its layers or a layer trained by fitStep before any native call starts,
// with an error naming what is running (README "Calls during training"). The asynchronous jobs
// take their locks on the job thread; a synchronous call (stateDict, setTraining, ...) takes them
// on the JS thread, and may wait only for an inference job lib/ let run (a forward or generate).
// Reads of values that no job changes (options, shapes, parameter counts) take no lock.
#pragma once

#include <mutex>
#include <vector>

#include "model/decoder.h"
#include "rlora/multihead_lora.h"
#include "train/optimizer.h"

namespace rlora::binding {

class JobLock {
 public:
  // A job on `model` and its adapters (and `attaching`, a layer setAdapter is about to attach),
  // and on `opt` when given.
  static JobLock on_model(const model::DecoderModel& model, train::AdamW* opt = nullptr,
                          const MultiHeadLoraLinear* attaching = nullptr);
  // A job on one layer, and on `opt` when given.
  static JobLock on_layer(const MultiHeadLoraLinear& layer, train::AdamW* opt = nullptr);
  static JobLock on_optimizer(train::AdamW& opt);

 private:
  void lock(std::mutex& m) { held_.emplace_back(m); }
  void lock_layers(std::vector<std::mutex*> layers);
  std::vector<std::unique_lock<std::mutex>> held_;
};

}  // namespace rlora::binding
