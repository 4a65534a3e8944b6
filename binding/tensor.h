// JS handle of a torch::Tensor (wrapped by lib/tensor.ts).
#pragma once

#include <napi.h>
#include <torch/torch.h>

namespace rlora::binding {

class JsTensor : public Napi::ObjectWrap<JsTensor> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  static Napi::Object Wrap(Napi::Env env, torch::Tensor t);
  // The tensor behind a JS value (a NativeTensor); TypeError naming `what` otherwise.
  static torch::Tensor FromValue(const Napi::Value& v, const std::string& what);
  static bool Is(const Napi::Value& v);

  explicit JsTensor(const Napi::CallbackInfo& info);
  ~JsTensor() override;
  // The tensor; "this Tensor was disposed" after dispose().
  const torch::Tensor& tensor() const;

 private:
  static Napi::Value FromTypedArray(const Napi::CallbackInfo& info);
  static Napi::Value FromBytes(const Napi::CallbackInfo& info);
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Dtype(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Data(const Napi::CallbackInfo& info);
  Napi::Value Bytes(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  torch::Tensor tensor_;
  int64_t external_bytes_ = 0;
};

}  // namespace rlora::binding
