// attentionVjp: native/model/attention.h's attention and its gradients, for tests.
#pragma once

#include <napi.h>

#include "common.h"

namespace rlora::binding {

// Registers attentionVjp.
void InitAttention(Napi::Env env, Napi::Object exports);

}  // namespace rlora::binding
