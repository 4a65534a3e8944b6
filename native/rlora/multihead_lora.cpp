#include "rlora/multihead_lora.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>

#include "common/format.h"
#include "common/torch_compat.h"
#include "rlora/init.h"

namespace rlora {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

enum DropoutMode : int64_t { kNoDropout = 0, kRankDropout = 1, kInputDropout = 2 };

// Row-stack of the defined tensors (all [*, in]); a single one is returned as is, none gives undefined.
Tensor stack_rows(std::initializer_list<Tensor> parts) {
  std::vector<Tensor> defined;
  for (const auto& t : parts)
    if (t.defined()) defined.push_back(t);
  if (defined.empty()) return Tensor();
  return defined.size() == 1 ? defined[0] : torch::cat(defined, 0);
}
Tensor stack_cols(std::initializer_list<Tensor> parts) {
  std::vector<Tensor> defined;
  for (const auto& t : parts)
    if (t.defined()) defined.push_back(t);
  if (defined.empty()) return Tensor();
  return defined.size() == 1 ? defined[0] : torch::cat(defined, 1);
}

// Autograd functions need defined tensors: an absent optional input travels as an empty one.
Tensor or_empty(const Tensor& t, const torch::TensorOptions& o) { return t.defined() ? t : torch::empty({0}, o); }
Tensor absent_if_empty(const Tensor& t) { return t.numel() == 0 ? Tensor() : t; }

// The router's softmax runs in float32 at least (float64 stays float64).
torch::ScalarType router_dtype(torch::ScalarType t) {
  return t == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// The layer as one autograd function: forward keeps only x (a reference), the per-head rank
// activations v [T, M, r], the router weights w [T, N] and the byte masks; backward needs no
// out-wide activation. M = N for independent masks, 1 when the heads share one. Masks hold true
// where an entry is DROPPED (masked_fill_ on a reused buffer is ~10x faster than a mixed-dtype
// multiply here, and every new in-wide tensor costs page faults).
class LoraFunction : public torch::autograd::Function<LoraFunction> {
 public:
  // x [T, in]; a [r, in]; router [N, in] or undefined; b [out, N r]; weight [out, in]; bias [out] or
  // undefined; off_a [r, in], off_b [out, r] or undefined; drop: bool [T, M, r] (rank dropout) or
  // [M, T, in] (input dropout) or undefined.
  static Tensor forward(AutogradContext* ctx, Tensor x, Tensor a, Tensor router_in, Tensor b, Tensor weight,
                        Tensor bias_in, Tensor off_a_in, Tensor off_b_in, Tensor mask_in, int64_t mode,
                        double keep_scale, double s) {
    ctx->save_for_backward({x, a, router_in, b, weight, off_a_in, off_b_in, mask_in});
    Tensor router = absent_if_empty(router_in), bias = absent_if_empty(bias_in), off_a = absent_if_empty(off_a_in),
           off_b = absent_if_empty(off_b_in), mask = absent_if_empty(mask_in);
    const int64_t T = x.size(0), r = a.size(0), N = b.size(1) / r;
    const bool input_dropout = mode == kInputDropout;

    // One product reads x for every clean down-projection: [A; W_g; offA] x.
    Tensor down = stack_rows({input_dropout ? Tensor() : a, router, off_a});
    Tensor p = down.defined() ? torch::mm(x, down.t()) : Tensor();  // undefined: LoRA with input dropout
    int64_t col = 0;
    Tensor v;  // [T, M, r]
    if (!input_dropout) {
      Tensor u = p.narrow(1, 0, r);
      col = r;
      v = mode == kRankDropout ? (u.unsqueeze(1) * keep_scale).expand({T, mask.size(1), r}).masked_fill(mask, 0)
                               : u.unsqueeze(1);
    } else {
      std::vector<Tensor> us;
      Tensor xd = torch::empty_like(x);  // one in-wide buffer, reused by every head
      for (int64_t m = 0; m < mask.size(0); ++m) us.push_back(torch::mm(xd.copy_(x).masked_fill_(mask[m], 0), a.t()));
      v = torch::stack(us, 1) * keep_scale;
    }
    Tensor w;  // [T, N]
    if (router.defined()) {
      w = torch::softmax(p.narrow(1, col, N).to(router_dtype(x.scalar_type())), 1);
      col += N;
    }
    Tensor uo = off_a.defined() ? p.narrow(1, col, r) : Tensor();

    Tensor vfull = v.expand({T, N, r});
    Tensor z = (w.defined() ? vfull * w.to(x.scalar_type()).unsqueeze(2) : vfull).reshape({T, N * r});
    // weight empty: the base product is computed outside (a half-precision base under a float32
    // adapter), this function gives the adapter's part only
    Tensor y = weight.numel() == 0 ? torch::zeros({T, b.size(0)}, x.options())
               : bias.defined()    ? torch::addmm(bias, x, weight.t())
                                   : torch::mm(x, weight.t());
    // The head mixture and the offset in ONE product: [z, -offA x] [B, offB]^T.
    y.addmm_(stack_cols({z, uo.defined() ? -uo : Tensor()}), stack_cols({b, off_b}).t(), 1.0, s);

    ctx->saved_data["v"] = v;
    ctx->saved_data["w"] = w.defined() ? w : torch::empty({0}, x.options());
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["keep_scale"] = keep_scale;
    ctx->saved_data["s"] = s;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    Tensor x = saved[0], a = saved[1], router = absent_if_empty(saved[2]), b = saved[3], weight = saved[4],
           off_a = absent_if_empty(saved[5]), off_b = absent_if_empty(saved[6]), mask = absent_if_empty(saved[7]);
    Tensor v = ctx->saved_data["v"].toTensor(), w = absent_if_empty(ctx->saved_data["w"].toTensor());
    const int64_t mode = ctx->saved_data["mode"].toInt();
    const double keep_scale = ctx->saved_data["keep_scale"].toDouble();
    const double s = ctx->saved_data["s"].toDouble();
    const int64_t T = x.size(0), r = a.size(0), N = b.size(1) / r;
    const auto dt = x.scalar_type();
    const bool input_dropout = mode == kInputDropout;
    Tensor dy = grads[0].contiguous();

    // d[z, -uo] = s dy [B, offB]: one product.
    Tensor dzext = torch::mm(dy, stack_cols({b, off_b})) * s;
    Tensor dz = dzext.narrow(1, 0, N * r).view({T, N, r});
    Tensor duo = off_a.defined() ? -dzext.narrow(1, N * r, r) : Tensor();

    Tensor vfull = v.expand({T, N, r});
    Tensor db, dv, dg;
    if (w.defined()) {
      Tensor wd = w.to(dt).unsqueeze(2);
      db = torch::mm(dy.t(), (vfull * wd).reshape({T, N * r})) * s;
      Tensor dw = (dz * vfull).sum(2).to(w.scalar_type());
      dg = (w * (dw - (w * dw).sum(1, true))).to(dt);
      dv = dz * wd;
    } else {
      db = torch::mm(dy.t(), vfull.reshape({T, N * r})) * s;
      dv = dz;
    }

    // Back through the masks to u = A x (or to each head's A D_i(x) for input dropout).
    Tensor du;
    std::vector<Tensor> du_heads;
    if (mode == kRankDropout) {
      du = (mask.size(1) == N ? dv.masked_fill(mask, 0).sum(1) : dv.sum(1).masked_fill(mask.select(1, 0), 0)) *
           keep_scale;
    } else if (mode == kNoDropout) {
      du = dv.sum(1);
    } else if (mask.size(0) == N) {
      for (int64_t i = 0; i < N; ++i) du_heads.push_back(dv.select(1, i));
    } else {
      du_heads.push_back(dv.sum(1));
    }

    // Parameters of the clean down-projection and x.
    Tensor d_trainable = stack_cols({du, dg});  // [T, r + N] (parts that exist)
    Tensor da, drouter;
    if (d_trainable.defined()) {
      Tensor d_down = torch::mm(d_trainable.t(), x);
      int64_t row = 0;
      if (du.defined()) {
        da = d_down.narrow(0, 0, r);
        row = r;
      }
      if (dg.defined()) drouter = d_down.narrow(0, row, N);
    }
    Tensor dx;
    if (ctx->needs_input_grad(0)) {
      dx = weight.numel() == 0 ? torch::zeros({T, x.size(1)}, dy.options()) : torch::mm(dy, weight);
      Tensor dp = stack_cols({du, dg, duo});
      if (dp.defined()) dx.addmm_(dp, stack_rows({input_dropout ? Tensor() : a, router, off_a}));
    }
    if (input_dropout) {
      da = torch::zeros_like(a);
      Tensor buf = torch::empty_like(x);  // one in-wide buffer, reused by every head
      for (size_t m = 0; m < du_heads.size(); ++m) {
        Tensor drop = mask[static_cast<int64_t>(m)];
        da.addmm_(du_heads[m].t(), buf.copy_(x).masked_fill_(drop, 0), 1.0, keep_scale);
        if (dx.defined()) dx.add_(torch::mm_out(buf, du_heads[m], a).masked_fill_(drop, 0), keep_scale);
      }
    }
    // One gradient per forward argument: x, a, router, b, weight, bias, off_a, off_b, mask, mode, keep, s.
    return {dx, da, drouter, db, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

}  // namespace

MultiHeadLoraLinear::MultiHeadLoraLinear(torch::Tensor weight, torch::Tensor bias, const LoraOptions& options)
    : options_(options), gen_(compat::make_cpu_generator(options.seed)) {
  validate(options_);
  require(weight.defined() && weight.dim() == 2,
          "weight must be a 2-D tensor [out, in], got " + (weight.defined() ? shape_str(weight) : "nothing"));
  require(weight.is_floating_point(),
          "weight must be float32, float64, bfloat16 or float16, got " + dtype_str(weight.scalar_type()));
  const int64_t out = weight.size(0), in = weight.size(1), r = options_.rank, N = options_.heads;
  require(out >= 1 && in >= 1, "weight must have at least one row and one column, got " + shape_str(weight));
  if (bias.defined()) {
    require(bias.dim() == 1 && bias.size(0) == out,
            "bias must have shape [" + std::to_string(out) + "] to match weight " + shape_str(weight) + ", got " +
                shape_str(bias));
    require(bias.scalar_type() == weight.scalar_type(), "bias dtype " + dtype_str(bias.scalar_type()) +
                                                            " differs from weight dtype " +
                                                            dtype_str(weight.scalar_type()));
    require(bias.device() == weight.device(), "bias is on " + bias.device().str() + " but weight on " +
                                                  weight.device().str());
  }
  torch::NoGradGuard no_grad;
  weight_ = weight.detach();
  bias_ = bias.defined() ? bias.detach() : Tensor();

  // Draw on the CPU in float64 in a fixed order (A, B_0 .. B_{N-1}, router), then convert.
  const InitOptions& ini = options_.init;
  Tensor a = init::draw(ini.a, r, in, {in, in, r}, gen_);
  std::vector<Tensor> heads;
  for (int64_t i = 0; i < N; ++i) heads.push_back(init::draw(ini.b, out, r, {r, out, r}, gen_));
  Tensor router = N > 1 ? init::draw(ini.router, N, in, {in, in, r}, gen_) : Tensor();

  const double f = init::stable_factor(ini, r, out);
  if (ini.scale == InitScale::Stable) {
    a.mul_(f);
    for (auto& h : heads) h.mul_(f);
  } else if (ini.scale == InitScale::Reference) {
    // The published code scales inside its per-head loop: A N times, B_i (0-based) N - i times.
    a.mul_(std::pow(f, static_cast<double>(N)));
    for (int64_t i = 0; i < N; ++i) heads[i].mul_(std::pow(f, static_cast<double>(N - i)));
  }
  // copy = true: float64 CPU parameters must not alias each other (A and its offset start equal).
  // Adapter values in float32 under a bfloat16 or float16 base (as PEFT does by default): a
  // half-precision adapter and optimizer lose small updates.
  const torch::ScalarType adt = adapter_dtype();
  auto to_layer = [&](const Tensor& t) {
    return t.to(weight_.device(), adt, /*non_blocking=*/false, /*copy=*/true).contiguous();
  };
  if (ini.offset) {
    off_a_ = to_layer(a);
    off_b_ = to_layer(torch::stack(heads, 0).mean(0));
  }
  a_ = to_layer(a).set_requires_grad(true);
  b_ = to_layer(torch::cat(heads, 1)).set_requires_grad(true);
  if (router.defined()) router_ = to_layer(router).set_requires_grad(true);
}

torch::Tensor MultiHeadLoraLinear::forward(const torch::Tensor& x) {
  const int64_t in = in_features(), r = options_.rank, N = options_.heads;
  require(x.defined() && x.dim() >= 1 && x.size(-1) == in,
          "input must have shape [..., " + std::to_string(in) + "], got " + (x.defined() ? shape_str(x) : "nothing"));
  require(x.scalar_type() == dtype() || compat::autocast_enabled(device().type()),
          "input dtype " + dtype_str(x.scalar_type()) + " does not match the layer's " + dtype_str(dtype()));
  require(x.device() == device(),
          "input is on " + x.device().str() + " but the layer is on " + device().str());
  std::vector<int64_t> shape = x.sizes().vec();
  Tensor x2 = x.reshape({-1, in}).contiguous();
  const int64_t T = x2.size(0);

  int64_t mode = kNoDropout;
  Tensor mask;
  const double p = options_.dropout;
  if (training_ && p > 0.0) {
    const int64_t M = options_.multi_head_dropout ? N : 1;
    const bool on_rank = options_.dropout_on == DropoutOn::Rank;
    mode = on_rank ? kRankDropout : kInputDropout;
    std::vector<int64_t> mshape = on_rank ? std::vector<int64_t>{T, M, r} : std::vector<int64_t>{M, T, in};
    // Masks come from the layer's CPU generator: the same seed gives the same masks on every device.
    // true = dropped: a uniform float32 below p (24-bit resolution, as CUDA's dropout); drawing
    // floats and comparing is twice as fast here as a bool bernoulli_ (0.45 vs 0.84 ms for 635 x 192)
    mask = torch::rand(mshape, gen_, torch::kFloat32).lt_(p).to(device(), torch::kBool);
  }
  // Under autocast the whole layer runs in the autocast dtype: its inputs are cast here (casts
  // that gradients flow through, back to the parameters' own dtype) and autocast is off inside,
  // where in-place products need one dtype.
  Tensor a = a_, router = router_, b = b_, weight = weight_, bias = bias_, off_a = off_a_, off_b = off_b_;
  const bool autocast = compat::autocast_enabled(device().type());
  const torch::ScalarType cdt = autocast ? compat::autocast_dtype(device().type()) : dtype();
  if (autocast && cdt != dtype()) {
    auto cast = [&](const Tensor& t) { return t.defined() ? t.to(cdt) : t; };
    x2 = cast(x2), a = cast(a), router = cast(router), b = cast(b), weight = cast(weight), bias = cast(bias);
    off_a = cast(off_a), off_b = cast(off_b);
  }
  std::optional<compat::AutocastGuard> off;  // only when autocast is on: none on the usual path
  if (autocast) off.emplace(device(), false, cdt);
  if (base_ && autocast)
    throw std::invalid_argument("autocast (precision bfloat16) is not supported on a quantized base");
  if (base_ || (!autocast && a.scalar_type() != weight.scalar_type())) {
    // A quantized base (its product given), or a half-precision base under a float32 adapter: the
    // base product in the base's dtype (its gradient to x through autograd), the adapter's part
    // in the adapter's dtype, added in the base's dtype.
    Tensor yb = base_ ? base_(x2) : torch::linear(x2, weight, bias);
    Tensor xa = x2.to(a.scalar_type());
    const auto o = xa.options();
    Tensor ya = LoraFunction::apply(xa, a, or_empty(router, o), b, torch::empty({0}, o), torch::empty({0}, o),
                                    or_empty(off_a, o), or_empty(off_b, o), or_empty(mask, o.dtype(torch::kBool)), mode,
                                    1.0 / (1.0 - p), options_.scaling());
    shape.back() = out_features();
    return (yb + ya.to(yb.scalar_type())).view(shape);
  }
  const auto o = x2.options();
  Tensor y = LoraFunction::apply(x2, a, or_empty(router, o), b, weight, or_empty(bias, o), or_empty(off_a, o),
                                 or_empty(off_b, o), or_empty(mask, o.dtype(torch::kBool)), mode, 1.0 / (1.0 - p),
                                 options_.scaling());
  shape.back() = out_features();
  return y.view(shape);
}

MultiHeadLoraLinear::Vjp MultiHeadLoraLinear::vjp(const torch::Tensor& x, const torch::Tensor& grad_output) {
  torch::AutoGradMode grad_on(true);
  Tensor xg = x.detach().requires_grad_(true);
  Tensor y = forward(xg);
  require(grad_output.defined() && grad_output.sizes() == y.sizes(),
          "gradOutput must have the output's shape " + shape_str(y) + ", got " + shape_str(grad_output));
  require(grad_output.scalar_type() == y.scalar_type() && grad_output.device() == y.device(),
          "gradOutput must be " + dtype_str(y.scalar_type()) + " on " + y.device().str() + ", got " +
              dtype_str(grad_output.scalar_type()) + " on " + grad_output.device().str());
  std::vector<Tensor> inputs{xg};
  for (const auto& p : parameters()) inputs.push_back(p);
  auto g = torch::autograd::grad({y}, inputs, {grad_output}, /*retain_graph=*/false, /*create_graph=*/false,
                                 /*allow_unused=*/true);
  const int64_t r = options_.rank;
  Vjp out{y.detach(), g[0], {}};
  auto or_zeros = [](const Tensor& grad, const Tensor& like) { return grad.defined() ? grad : torch::zeros_like(like); };
  out.grads.emplace_back("lora_A.weight", or_zeros(g[1], a_));
  Tensor gb = or_zeros(g[2], b_);
  for (int64_t i = 0; i < options_.heads; ++i) out.grads.emplace_back(b_name(i), gb.narrow(1, i * r, r).contiguous());
  if (router_.defined()) out.grads.emplace_back("lora_route.weight", or_zeros(g[3], router_));
  return out;
}

std::string MultiHeadLoraLinear::b_name(int64_t head) const {
  return options_.heads == 1 ? "lora_B.weight" : "lora_B" + std::to_string(head) + ".weight";
}

std::vector<torch::Tensor> MultiHeadLoraLinear::parameters() const {
  std::vector<Tensor> out{a_, b_};
  if (router_.defined()) out.push_back(router_);
  return out;
}

NamedTensors MultiHeadLoraLinear::named_parameters() const {
  const int64_t r = options_.rank;
  NamedTensors out{{"lora_A.weight", a_}};
  for (int64_t i = 0; i < options_.heads; ++i) out.emplace_back(b_name(i), b_.narrow(1, i * r, r));
  if (router_.defined()) out.emplace_back("lora_route.weight", router_);
  return out;
}

NamedTensors MultiHeadLoraLinear::named_grads() const {
  const int64_t r = options_.rank;
  auto grad = [](const Tensor& t) { return t.grad(); };
  NamedTensors out{{"lora_A.weight", grad(a_)}};
  Tensor gb = grad(b_);
  for (int64_t i = 0; i < options_.heads; ++i)
    out.emplace_back(b_name(i), gb.defined() ? gb.narrow(1, i * r, r) : Tensor());
  if (router_.defined()) out.emplace_back("lora_route.weight", grad(router_));
  return out;
}

NamedTensors MultiHeadLoraLinear::state_dict() const {
  NamedTensors out;
  for (auto& [name, t] : named_parameters()) out.emplace_back(name, t.detach().clone(at::MemoryFormat::Contiguous));
  if (has_offset()) {
    out.emplace_back("lora_offset_A.weight", off_a_.clone());
    out.emplace_back("lora_offset_B.weight", off_b_.clone());
  }
  return out;
}

void MultiHeadLoraLinear::load_state_dict(const std::map<std::string, torch::Tensor>& tensors) {
  NamedTensors targets = named_parameters();
  if (has_offset()) {
    targets.emplace_back("lora_offset_A.weight", off_a_);
    targets.emplace_back("lora_offset_B.weight", off_b_);
  }
  std::set<std::string> used;
  std::vector<std::pair<Tensor, Tensor>> copies;
  for (auto& [name, target] : targets) {
    auto it = tensors.find(name);
    if (it == tensors.end() && name == "lora_B.weight") it = tensors.find("lora_B0.weight");
    require(it != tensors.end(), "state dict is missing " + name + " (expected shape " + shape_str(target) + ")");
    require(it->second.defined() && it->second.sizes() == target.sizes(),
            it->first + " has shape " + shape_str(it->second) + ", expected " + shape_str(target));
    require(it->second.is_floating_point(),
            it->first + " must be a floating point tensor, got " + dtype_str(it->second.scalar_type()));
    used.insert(it->first);
    copies.emplace_back(target, it->second);
  }
  std::vector<std::string> unexpected;
  for (auto& [name, t] : tensors)
    if (!used.count(name)) unexpected.push_back(name);
  if (!unexpected.empty()) {
    std::string list;
    for (auto& n : unexpected) list += (list.empty() ? "" : ", ") + n;
    throw std::invalid_argument("state dict has unexpected entries: " + list +
                                (has_offset() ? "" : " (this layer has no offset: init.offset is false)"));
  }
  // Every check passed: now copy, so a failed load changes nothing.
  torch::NoGradGuard no_grad;
  for (auto& [target, src] : copies) target.copy_(src);
}

torch::Tensor MultiHeadLoraLinear::head_similarity() const {
  torch::NoGradGuard no_grad;
  const int64_t N = options_.heads, r = options_.rank, out = out_features();
  Tensor f = b_.detach().to(torch::kCPU, torch::kFloat64).reshape({out, N, r}).permute({1, 0, 2}).reshape({N, out * r});
  Tensor norms = f.norm(2, 1);
  Tensor dots = torch::mm(f, f.t());
  Tensor denom = torch::outer(norms, norms);
  Tensor sim = torch::where(denom > 0, dots / denom.clamp_min(1e-300), torch::zeros_like(dots));
  // Two zero heads are identical (HydraLoRA starts that way): similarity 1.
  Tensor zero = norms == 0;
  return torch::where(zero.unsqueeze(1).logical_and(zero.unsqueeze(0)), torch::ones_like(sim), sim);
}

torch::Tensor MultiHeadLoraLinear::base_weight() const {
  if (base_) throw std::invalid_argument("the base weight is quantized: this layer holds no copy of it");
  torch::NoGradGuard no_grad;
  if (!has_offset()) return weight_;
  return weight_ - (torch::mm(off_b_, off_a_) * options_.scaling()).to(weight_.scalar_type());
}

torch::Tensor MultiHeadLoraLinear::generator_state() const {
  std::lock_guard<std::mutex> lock(gen_.mutex());
  return gen_.get_state();
}

void MultiHeadLoraLinear::set_generator_state(const torch::Tensor& state) {
  Tensor current = generator_state();
  require(state.defined() && state.scalar_type() == torch::kUInt8 && state.sizes() == current.sizes(),
          "generator state must be a uint8 tensor of shape " + shape_str(current) + ", got " +
              (state.defined() ? dtype_str(state.scalar_type()) + " " + shape_str(state) : "nothing"));
  std::lock_guard<std::mutex> lock(gen_.mutex());
  gen_.set_state(state.cpu());
}

void MultiHeadLoraLinear::reseed(uint64_t seed) {
  std::lock_guard<std::mutex> lock(gen_.mutex());
  gen_.set_current_seed(seed);
}

torch::Tensor MultiHeadLoraLinear::merged_weight() const {
  if (options_.heads != 1)
    throw std::invalid_argument("only a single-head (lora) adapter can be merged: with heads = " +
                                std::to_string(options_.heads) + " the router makes the update depend on the input");
  if (base_)
    throw std::invalid_argument("the base model is quantized: merge into the float model (load it without quantize and attach the adapter there)");
  torch::NoGradGuard no_grad;
  const double s = options_.scaling();
  Tensor delta = torch::mm(b_.to(torch::kFloat64), a_.to(torch::kFloat64)) * s;
  if (has_offset()) delta -= torch::mm(off_b_.to(torch::kFloat64), off_a_.to(torch::kFloat64)) * s;
  return (weight_.to(torch::kFloat64) + delta).to(weight_.scalar_type());
}

}  // namespace rlora
