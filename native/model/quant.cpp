#include "model/quant.h"

#include <algorithm>
#include <stdexcept>

#include "common/errors.h"

namespace rlora::model {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kNf4Block = 64;
constexpr int64_t kTempElements = int64_t{1} << 22;  // about 16 MB of float32 rows at a time

const float kNf4[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
                        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

Tensor levels_on(const torch::Device& d) { return torch::from_blob(const_cast<float*>(kNf4), {16}, torch::kFloat32).to(d); }

int64_t rows_per_block(int64_t in) { return std::max<int64_t>(1, kTempElements / std::max<int64_t>(1, in)); }

Tensor dequantize_parts(const std::string& kind, const Tensor& q, const Tensor& scale, int64_t row0, int64_t rows, int64_t in,
                        torch::ScalarType dtype) {
  Tensor qr = q.narrow(0, row0, rows), sr = scale.narrow(0, row0, rows);
  if (kind == "int8") return (qr.to(torch::kFloat32) * sr.unsqueeze(1)).to(dtype);
  // nf4: two codes a byte, high nibble first; each block of 64 values times its absmax
  Tensor ql = qr.to(torch::kLong);
  Tensor codes = torch::stack({ql.div(16, "floor"), ql.remainder(16)}, -1).reshape({rows, in});
  Tensor v = levels_on(q.device()).index_select(0, codes.reshape({-1})).reshape({rows, in / kNf4Block, kNf4Block});
  return (v * sr.unsqueeze(-1)).reshape({rows, in}).to(dtype);
}

// The product as one autograd function: q and scale are saved (they are the stored weight, no
// copy); forward and backward dequantize a block of rows at a time.
class QuantLinearFunction : public torch::autograd::Function<QuantLinearFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, Tensor x, Tensor q, Tensor scale, Tensor bias, std::string kind, int64_t in,
                        int64_t dtype) {
    ctx->save_for_backward({q, scale});
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["in"] = in;
    ctx->saved_data["dtype"] = dtype;
    ctx->saved_data["shape"] = x.sizes().vec();
    const int64_t out = q.size(0);
    Tensor x2 = x.reshape({-1, in});
    Tensor y = torch::empty({x2.size(0), out}, x.options());
    const int64_t step = rows_per_block(in);
    for (int64_t r0 = 0; r0 < out; r0 += step) {
      const int64_t rows = std::min(step, out - r0);
      Tensor w = dequantize_parts(kind, q, scale, r0, rows, in, static_cast<torch::ScalarType>(dtype));
      y.narrow(1, r0, rows).copy_(torch::mm(x2, w.t()));
    }
    if (bias.numel() > 0) y.add_(bias);
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = out;
    return y.view(shape);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    Tensor q = saved[0], scale = saved[1];
    const std::string kind = ctx->saved_data["kind"].toStringRef();
    const int64_t in = ctx->saved_data["in"].toInt();
    const auto dtype = static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt());
    const std::vector<int64_t> shape = ctx->saved_data["shape"].toIntVector();
    const int64_t out = q.size(0);
    Tensor dy = grads[0].reshape({-1, out});
    Tensor dx = torch::zeros({dy.size(0), in}, dy.options());
    const int64_t step = rows_per_block(in);
    for (int64_t r0 = 0; r0 < out; r0 += step) {
      const int64_t rows = std::min(step, out - r0);
      dx.addmm_(dy.narrow(1, r0, rows), dequantize_parts(kind, q, scale, r0, rows, in, dtype));
    }
    return {dx.view(shape), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

QuantWeight quantize(const Tensor& weight, const std::string& kind) {
  if (!weight.defined() || weight.dim() != 2) throw std::invalid_argument("quantize: the weight must be 2-D [out, in]");
  torch::NoGradGuard no_grad;
  QuantWeight qw;
  qw.kind = kind;
  qw.out = weight.size(0);
  qw.in = weight.size(1);
  qw.dtype = weight.scalar_type();
  Tensor w = weight.to(torch::kFloat32);
  if (kind == "int8") {
    Tensor absmax = w.abs().amax(1);
    qw.scale = torch::where(absmax > 0, absmax / 127.0, torch::ones_like(absmax));
    qw.q = torch::round(w / qw.scale.unsqueeze(1)).clamp(-127, 127).to(torch::kInt8);
  } else if (kind == "nf4") {
    if (qw.in % kNf4Block != 0)
      throw std::invalid_argument("nf4 needs the input size to be a multiple of 64 (blocks of 64 values), got " +
                                  std::to_string(qw.in));
    Tensor blocks = w.reshape({qw.out, qw.in / kNf4Block, kNf4Block});
    Tensor absmax = blocks.abs().amax(-1);
    qw.scale = torch::where(absmax > 0, absmax, torch::ones_like(absmax));
    Tensor normed = (blocks / qw.scale.unsqueeze(-1)).reshape({qw.out, qw.in});
    // nearest level: the midpoints between neighbours split [-1, 1] into 16 bins
    Tensor levels = levels_on(w.device());
    Tensor mids = (levels.narrow(0, 0, 15) + levels.narrow(0, 1, 15)) / 2;
    Tensor codes = torch::bucketize(normed.contiguous(), mids).to(torch::kLong).reshape({qw.out, qw.in / 2, 2});
    qw.q = (codes.select(-1, 0) * 16 + codes.select(-1, 1)).to(torch::kUInt8).contiguous();
  } else {
    throw OutOfRange("quantize must be \"int8\" or \"nf4\", got \"" + kind + "\"");
  }
  return qw;
}

Tensor dequantize(const QuantWeight& qw) { return dequantize_parts(qw.kind, qw.q, qw.scale, 0, qw.out, qw.in, qw.dtype); }

Tensor quant_linear(const Tensor& x, const QuantWeight& qw, const Tensor& bias) {
  if (x.size(-1) != qw.in)
    throw std::invalid_argument("input must have " + std::to_string(qw.in) + " features, got " + std::to_string(x.size(-1)));
  return QuantLinearFunction::apply(x, qw.q, qw.scale, bias.defined() ? bias : torch::empty({0}, x.options()), qw.kind, qw.in,
                                    static_cast<int64_t>(qw.dtype));
}

}  // namespace rlora::model
