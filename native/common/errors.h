// The kinds of mistake native code reports. The binding gives each its JS class in one place
// (binding/common.h, "Errors"):
//   OutOfRange             a value outside what is allowed: a number beyond its bounds, a name
//                          that is none of the choices, a token id outside the vocabulary
//                          (RangeError in JS, as lib/ throws for the same mistakes);
//   std::invalid_argument  an argument that does not fit the object or the other arguments: a
//                          shape, a dtype, a layer made from another weight, a quantized model
//                          (Error);
//   anything else          (std::runtime_error, std::logic_error, libtorch's c10::Error) Error.
#pragma once

#include <stdexcept>

namespace rlora {

class OutOfRange : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

}  // namespace rlora
