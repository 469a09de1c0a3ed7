// SwiGLU gate: forward against a naive double loop (also with the gate a slice of wider rows, as at
// decode), gradients through gradcheck.
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "layers/ops/swiglu.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::random_normal;

std::vector<double> naive_swiglu(const std::vector<double>& gate, const std::vector<double>& up) {
  std::vector<double> out(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) out[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
  return out;
}

TEST(Swiglu, ForwardMatchesNaiveLoop) {
  for (const Shape& shape : {Shape{3, 7}, Shape{2, 5, 33}}) {
    Tensor gate = random_normal(shape, 11, DType::f32, 2.0), up = random_normal(shape, 12, DType::f32);
    Var out = ops::swiglu(leaf(gate), leaf(up));
    EXPECT_TRUE(all_close(out->value, naive_swiglu(gate.to_doubles(), up.to_doubles()), 1e-6, 1e-6));
  }
}

// Without a tape a gate sliced from wider rows is read in place (rows 40 floats apart, 16-byte
// aligned) or copied first (39 apart): the naive loop's values either way.
TEST(Swiglu, GateSlicedFromWiderRowsMatchesNaiveLoop) {
  autograd::NoGradScope no_grad;
  for (int64_t width : {40, 39}) {
    Tensor rows = random_normal({4, 1, width}, 13, DType::f32, 2.0);
    Tensor gate = rows.narrow(2, 8, 20), up = random_normal({4, 1, 20}, 14, DType::f32);
    Var out = ops::swiglu(leaf(gate), leaf(up));
    EXPECT_TRUE(all_close(out->value, naive_swiglu(gate.to_doubles(), up.to_doubles()), 1e-6, 1e-6))
        << "width " << width;
  }
}

TEST(Swiglu, Gradcheck) {
  for (const Shape& shape : {Shape{4, 3}, Shape{2, 3, 5}}) {
    auto result = autograd::gradcheck(
        [](const std::vector<Var>& in) { return ops::swiglu(in[0], in[1]); },
        {random_normal(shape, 21, DType::f64, 2.0), random_normal(shape, 22)});
    EXPECT_TRUE(result.ok) << result.report;
  }
}

TEST(Swiglu, ShapeMismatchNamesBothShapes) {
  Var gate = leaf(random_normal({2, 3}, 1, DType::f32)), up = leaf(random_normal({3, 2}, 2, DType::f32));
  try {
    ops::swiglu(gate, up);
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("[2, 3]"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("[3, 2]"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace braid
