#include "tensor.h"

#include <cstring>
#include <stdexcept>

#include "common/format.h"

namespace rlora::binding {

torch::Tensor tensor_from_js(const Napi::TypedArray& a, torch::ScalarType dtype, const std::vector<int64_t>& shape) {
  torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(dtype));
  const size_t nbytes = t.nbytes();
  if (nbytes != a.ByteLength())
    throw std::logic_error("tensor_from_js: " + std::to_string(a.ByteLength()) + " bytes for a tensor of " + std::to_string(nbytes));
  if (nbytes > 0) std::memcpy(t.data_ptr(), static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset(), nbytes);
  return t;
}

Napi::Value tensor_to_js(Napi::Env env, const torch::Tensor& t, JsArray kind) {
  torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
  const size_t nbytes = c.nbytes(), n = static_cast<size_t>(c.numel());
  if (kind == JsArray::Buffer) return Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t*>(c.data_ptr()), nbytes);
  auto buf = Napi::ArrayBuffer::New(env, nbytes);
  if (nbytes > 0) std::memcpy(buf.Data(), c.data_ptr(), nbytes);
  switch (kind) {
    case JsArray::Float32: return Napi::Float32Array::New(env, n, buf, 0);
    case JsArray::Float64: return Napi::Float64Array::New(env, n, buf, 0);
    case JsArray::Int32: return Napi::Int32Array::New(env, n, buf, 0);
    case JsArray::BigInt64: return Napi::BigInt64Array::New(env, n, buf, 0);
    default: return Napi::Uint8Array::New(env, n, buf, 0);
  }
}

void JsTensor::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = DefineClass(env, "NativeTensor",
                                   {StaticMethod("fromTypedArray", entry<&JsTensor::FromTypedArray>),
                                    StaticMethod("fromBytes", entry<&JsTensor::FromBytes>),
                                    getter<&JsTensor::Shape>("shape"), getter<&JsTensor::Dtype>("dtype"),
                                    getter<&JsTensor::Device>("device"), method<&JsTensor::Data>("data"),
                                    method<&JsTensor::Bytes>("bytes"), method<&JsTensor::To>("to"), dispose_method()});
  addon_data(env).tensor = Napi::Persistent(cls);
  exports.Set("NativeTensor", cls);
}

JsTensor::JsTensor(const Napi::CallbackInfo& info) : Wrapped(info, "Tensor") {
  // Constructed only by Wrap(), which passes an External holding the tensor.
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "NativeTensor is created by Tensor.from(), not with new");
  torch::Tensor t = std::move(*info[0].As<Napi::External<torch::Tensor>>().Data());
  const int64_t bytes = cpu_bytes({t});
  hold(info.Env(), std::move(t), bytes);
}

Napi::Object JsTensor::Wrap(Napi::Env env, torch::Tensor t) {
  torch::Tensor holder = t.detach();
  return addon_data(env).tensor.New({Napi::External<torch::Tensor>::New(env, &holder)});
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
      throw Napi::TypeError::New(a.Env(), "data must be a Float32Array, Float64Array, Int32Array, BigInt64Array or Uint8Array");
  }
}

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}
}  // namespace

// fromTypedArray(data, shape, dtype, device)
Napi::Value JsTensor::FromTypedArray(const Napi::CallbackInfo& info) {
  if (!info[0].IsTypedArray()) type_error(info.Env(), "data", "a typed array", info[0]);
  auto arr = info[0].As<Napi::TypedArray>();
  std::vector<int64_t> shape = get_shape(info[1], "shape");
  torch::ScalarType dtype = parse_dtype(get_string(info[2], "dtype"));
  torch::Device device = parse_device(get_string(info[3], "device"));
  const int64_t numel = numel_of(shape);
  if (numel != static_cast<int64_t>(arr.ElementLength()))
    throw std::invalid_argument("shape " + shape_str(shape) + " holds " + std::to_string(numel) + " elements but data has " +
                                std::to_string(arr.ElementLength()));
  return Wrap(info.Env(), tensor_from_js(arr, typed_array_dtype(arr), shape).to(device, dtype));
}

// fromBytes(buffer, dtype, shape): raw little-endian element bytes (safetensors data).
Napi::Value JsTensor::FromBytes(const Napi::CallbackInfo& info) {
  if (!info[0].IsTypedArray()) type_error(info.Env(), "bytes", "a Buffer or Uint8Array", info[0]);
  auto arr = info[0].As<Napi::TypedArray>();
  torch::ScalarType dtype = parse_dtype(get_string(info[1], "dtype"));
  std::vector<int64_t> shape = get_shape(info[2], "shape");
  const int64_t need = numel_of(shape) * static_cast<int64_t>(c10::elementSize(dtype));
  if (need != static_cast<int64_t>(arr.ByteLength()))
    throw std::invalid_argument("a " + dtype_str(dtype) + " tensor of shape " + shape_str(shape) + " needs " +
                                std::to_string(need) + " bytes, got " + std::to_string(arr.ByteLength()));
  return Wrap(info.Env(), tensor_from_js(arr, dtype, shape));
}

Napi::Value JsTensor::Shape(const Napi::CallbackInfo& info) { return shape_to_js(info.Env(), get().sizes()); }
Napi::Value JsTensor::Dtype(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), dtype_str(get().scalar_type()));
}
Napi::Value JsTensor::Device(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), get().device().str()); }

// data(): a copy of the elements as a typed array (bfloat16/float16 widen to Float32Array,
// int64 is a BigInt64Array, uint8 and bool are Uint8Array).
Napi::Value JsTensor::Data(const Napi::CallbackInfo& info) {
  const torch::Tensor& t = get();
  switch (t.scalar_type()) {
    case torch::kFloat32: return tensor_to_js(info.Env(), t, JsArray::Float32);
    case torch::kFloat64: return tensor_to_js(info.Env(), t, JsArray::Float64);
    case torch::kBFloat16:
    case torch::kFloat16: return tensor_to_js(info.Env(), t.to(torch::kFloat32), JsArray::Float32);
    case torch::kInt32: return tensor_to_js(info.Env(), t, JsArray::Int32);
    case torch::kInt64: return tensor_to_js(info.Env(), t, JsArray::BigInt64);
    case torch::kUInt8: return tensor_to_js(info.Env(), t, JsArray::Uint8);
    case torch::kBool: return tensor_to_js(info.Env(), t.to(torch::kUInt8), JsArray::Uint8);
    default: throw std::invalid_argument("data(): unsupported dtype " + dtype_str(t.scalar_type()));
  }
}

// bytes(): the raw little-endian element bytes in a Buffer (for safetensors).
Napi::Value JsTensor::Bytes(const Napi::CallbackInfo& info) { return tensor_to_js(info.Env(), get(), JsArray::Buffer); }

// to(dtype | null, device | null): a converted copy (or this tensor when nothing changes).
Napi::Value JsTensor::To(const Napi::CallbackInfo& info) {
  const torch::Tensor& t = get();
  torch::ScalarType dtype = info[0].IsString() ? parse_dtype(info[0].As<Napi::String>().Utf8Value()) : t.scalar_type();
  torch::Device device = info[1].IsString() ? parse_device(info[1].As<Napi::String>().Utf8Value()) : t.device();
  return Wrap(info.Env(), t.to(device, dtype));
}

}  // namespace rlora::binding
