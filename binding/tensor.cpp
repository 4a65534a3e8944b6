#include "tensor.h"

#include <cstring>

#include "common.h"
#include "common/format.h"

namespace rlora::binding {

void JsTensor::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = DefineClass(env, "NativeTensor",
                                   {StaticMethod("fromTypedArray", &JsTensor::FromTypedArray),
                                    StaticMethod("fromBytes", &JsTensor::FromBytes),
                                    InstanceAccessor("shape", &JsTensor::Shape, nullptr),
                                    InstanceAccessor("dtype", &JsTensor::Dtype, nullptr),
                                    InstanceAccessor("device", &JsTensor::Device, nullptr),
                                    InstanceMethod("data", &JsTensor::Data),
                                    InstanceMethod("bytes", &JsTensor::Bytes),
                                    InstanceMethod("to", &JsTensor::To),
                                    InstanceMethod("dispose", &JsTensor::Dispose)});
  addon_data(env).tensor = Napi::Persistent(cls);
  exports.Set("NativeTensor", cls);
}

JsTensor::JsTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsTensor>(info) {
  // Constructed only by Wrap(), which passes an External holding the tensor.
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "NativeTensor is created by Tensor.from(), not with new");
  auto* t = info[0].As<Napi::External<torch::Tensor>>().Data();
  tensor_ = std::move(*t);
  if (tensor_.device().is_cpu()) {
    external_bytes_ = static_cast<int64_t>(tensor_.numel() * tensor_.element_size());
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), external_bytes_);
  }
}

JsTensor::~JsTensor() {
  if (external_bytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -external_bytes_);
}

const torch::Tensor& JsTensor::tensor() const {
  if (!tensor_.defined()) throw Napi::Error::New(Env(), "this Tensor was disposed");
  return tensor_;
}

Napi::Value JsTensor::Dispose(const Napi::CallbackInfo& info) {
  tensor_ = torch::Tensor();
  if (external_bytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -external_bytes_);
  external_bytes_ = 0;
  return info.Env().Undefined();
}

Napi::Object JsTensor::Wrap(Napi::Env env, torch::Tensor t) {
  torch::Tensor holder = t.detach();
  return addon_data(env).tensor.New({Napi::External<torch::Tensor>::New(env, &holder)});
}

bool JsTensor::Is(const Napi::Value& v) {
  return is_instance(v, addon_data(v.Env()).tensor);
}

torch::Tensor JsTensor::FromValue(const Napi::Value& v, const std::string& what) {
  if (!Is(v)) type_error(v.Env(), what, "a Tensor", v);
  return Napi::ObjectWrap<JsTensor>::Unwrap(v.As<Napi::Object>())->tensor();
}

namespace {
// The dtype of a typed array's elements.
torch::ScalarType typed_array_dtype(const Napi::TypedArray& a) {
  switch (a.TypedArrayType()) {
    case napi_float32_array: return torch::kFloat32;
    case napi_float64_array: return torch::kFloat64;
    case napi_int32_array: return torch::kInt32;
    case napi_bigint64_array: return torch::kInt64;
    case napi_uint8_array: return torch::kUInt8;
    default:
      throw std::invalid_argument(
          "data must be a Float32Array, Float64Array, Int32Array, BigInt64Array or Uint8Array");
  }
}
}  // namespace

// fromTypedArray(data, shape, dtype, device)
Napi::Value JsTensor::FromTypedArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (!info[0].IsTypedArray()) type_error(env, "data", "a typed array", info[0]);
    auto arr = info[0].As<Napi::TypedArray>();
    std::vector<int64_t> shape = get_shape(info[1], "shape");
    torch::ScalarType dtype = parse_dtype(get_string(info[2], "dtype"));
    torch::Device device = parse_device(get_string(info[3], "device"));
    int64_t numel = 1;
    for (auto d : shape) numel *= d;
    if (numel != static_cast<int64_t>(arr.ElementLength()))
      throw std::invalid_argument("shape " + shape_str(shape) + " holds " + std::to_string(numel) +
                                  " elements but data has " + std::to_string(arr.ElementLength()));
    torch::ScalarType src = typed_array_dtype(arr);
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(src));
    if (numel > 0) {
      auto* base = static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
      std::memcpy(t.data_ptr(), base, arr.ByteLength());
    }
    return Wrap(env, t.to(device, dtype));
  });
}

// fromBytes(buffer, dtype, shape): raw little-endian element bytes (safetensors data).
Napi::Value JsTensor::FromBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (!info[0].IsTypedArray()) type_error(env, "bytes", "a Buffer or Uint8Array", info[0]);
    auto arr = info[0].As<Napi::TypedArray>();
    torch::ScalarType dtype = parse_dtype(get_string(info[1], "dtype"));
    std::vector<int64_t> shape = get_shape(info[2], "shape");
    int64_t numel = 1;
    for (auto d : shape) numel *= d;
    const int64_t need = numel * static_cast<int64_t>(c10::elementSize(dtype));
    if (need != static_cast<int64_t>(arr.ByteLength()))
      throw std::invalid_argument("a " + dtype_str(dtype) + " tensor of shape " + shape_str(shape) + " needs " +
                                  std::to_string(need) + " bytes, got " + std::to_string(arr.ByteLength()));
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(dtype));
    if (need > 0)
      std::memcpy(t.data_ptr(), static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset(), need);
    return Wrap(env, t);
  });
}

Napi::Value JsTensor::Shape(const Napi::CallbackInfo& info) { return shape_to_js(info.Env(), tensor().sizes()); }
Napi::Value JsTensor::Dtype(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), dtype_str(tensor().scalar_type()));
}
Napi::Value JsTensor::Device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), tensor().device().str());
}

// data(): a copy of the elements as a typed array (bfloat16/float16 widen to Float32Array,
// int64 is a BigInt64Array, uint8 and bool are Uint8Array).
Napi::Value JsTensor::Data(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    torch::ScalarType st = tensor().scalar_type();
    torch::ScalarType out = st;
    napi_typedarray_type kind;
    switch (st) {
      case torch::kFloat32: kind = napi_float32_array; break;
      case torch::kFloat64: kind = napi_float64_array; break;
      case torch::kBFloat16:
      case torch::kFloat16: kind = napi_float32_array; out = torch::kFloat32; break;
      case torch::kInt32: kind = napi_int32_array; break;
      case torch::kInt64: kind = napi_bigint64_array; break;
      case torch::kUInt8: kind = napi_uint8_array; break;
      case torch::kBool: kind = napi_uint8_array; out = torch::kUInt8; break;
      default: throw std::invalid_argument("data(): unsupported dtype " + dtype_str(st));
    }
    torch::Tensor c = tensor().detach().to(torch::kCPU, out).contiguous();
    const size_t nbytes = c.numel() * c.element_size();
    auto buf = Napi::ArrayBuffer::New(env, nbytes);
    if (nbytes) std::memcpy(buf.Data(), c.data_ptr(), nbytes);
    const size_t n = static_cast<size_t>(c.numel());
    switch (kind) {
      case napi_float32_array: return Napi::Float32Array::New(env, n, buf, 0);
      case napi_float64_array: return Napi::Float64Array::New(env, n, buf, 0);
      case napi_int32_array: return Napi::Int32Array::New(env, n, buf, 0);
      case napi_bigint64_array: return Napi::BigInt64Array::New(env, n, buf, 0);
      default: return Napi::Uint8Array::New(env, n, buf, 0);
    }
  });
}

// bytes(): the raw little-endian element bytes in a Buffer (for safetensors).
Napi::Value JsTensor::Bytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    torch::Tensor c = tensor().detach().to(torch::kCPU).contiguous();
    const size_t nbytes = c.numel() * c.element_size();
    return Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t*>(c.data_ptr()), nbytes);
  });
}

// to(dtype | null, device | null): a converted copy (or this tensor when nothing changes).
Napi::Value JsTensor::To(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    torch::ScalarType dtype =
        info[0].IsString() ? parse_dtype(info[0].As<Napi::String>().Utf8Value()) : tensor().scalar_type();
    torch::Device device = info[1].IsString() ? parse_device(info[1].As<Napi::String>().Utf8Value()) : tensor().device();
    return Wrap(env, tensor().to(device, dtype));
  });
}

}  // namespace rlora::binding
