// The pointwise gating ops on a CUDA device against the CPU backend, forward and every gradient,
// in f32 and bf16: swiglu, sigmoid and mul_scalar (whose scalar is an f32 parameter). Sizes reach
// the vector body, the n % width scalar tail, tensors smaller than one vector, and the unaligned
// (scalar) path; and swiglu's gate read in place from wider rows.
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "layers/ops/gating.h"
#include "layers/ops/swiglu.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::Var;
using testing::OpInput;

using CudaPointwise = testing::CudaTest;

// f32: the same fp32 formulas on both sides (expf may differ from the host's exp by an ulp).
// bf16: outputs and gradients rounded to 8 significant bits, from the same rounded inputs.
constexpr double kF32Rtol = 1e-5;
constexpr double kBf16Rtol = 1e-2;

double rtol_for(DType dtype) { return dtype == DType::f32 ? kF32Rtol : kBf16Rtol; }

Tensor normal(const Shape& shape, uint64_t seed, double stddev = 1.0) {
  return testing::random_normal(shape, seed, DType::f32, stddev);
}

OpInput activation(Tensor value) { return {std::move(value), OpInput::Role::activation}; }
OpInput parameter(Tensor value) { return {std::move(value), OpInput::Role::parameter}; }

std::string describe(const Shape& shape, DType dtype) {
  return shape_str(shape) + " " + dtype_name(dtype);
}

// 7: below one vector (all tail); 99 and 500: vectors plus a tail (bf16); 1000 x 6: whole vectors;
// 300 x 2048: the 1B FFN rows; 4 x 8195: odd and long.
const std::vector<Shape> kShapes = {{7}, {3, 33}, {5, 100}, {2, 3, 1000}, {300, 2048}, {4, 8195}};

TEST_F(CudaPointwise, SwigluMatchesTheCpu) {
  uint64_t seed = 100;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const Shape& shape : kShapes) {
      SCOPED_TRACE(describe(shape, dtype));
      // Gates spread over SiLU's curved region and both tails.
      testing::expect_cuda_matches_cpu(
          [](const std::vector<Var>& in) { return std::vector<Var>{ops::swiglu(in[0], in[1])}; },
          {activation(normal(shape, seed, 3.0)), activation(normal(shape, seed + 1))}, dtype,
          rtol_for(dtype), seed + 2);
      seed += 10;
    }
  }
}

// Without a tape the gate may be a slice of wider rows (the intra-hybrid decode step's z): rows of
// 4880 with z = the first 2304 (the 1B branch: vectors of rows), 300 with 256 from column 20 (f32
// vectors; bf16 rows not 16-byte aligned: the op copies), 80 with 33 from column 8 (aligned rows
// of an odd width: scalar rows). The CPU's values, and bit for bit those from a contiguous gate.
TEST_F(CudaPointwise, SwigluReadsAGateSlicedFromWiderRows) {
  struct SliceCase {
    int64_t rows, width, start, columns;
  };
  const std::vector<SliceCase> cases = {{4, 4880, 0, 2304}, {6, 300, 20, 256}, {5, 80, 8, 33}};
  autograd::NoGradScope no_grad;
  uint64_t seed = 150;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const SliceCase& c : cases) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " width " + std::to_string(c.width));
      const Tensor rows = normal({c.rows, 1, c.width}, seed, 3.0).to(dtype).to(DType::f32);
      const Tensor up = normal({c.rows, 1, c.columns}, seed + 1).to(dtype).to(DType::f32);
      seed += 10;
      const Tensor gate = rows.narrow(2, c.start, c.columns);
      Var want = ops::swiglu(autograd::leaf(gate.contiguous()), autograd::leaf(up));
      const Tensor gate_gpu = rows.to(dtype).to(Device::cuda(0)).narrow(2, c.start, c.columns);
      const Var up_gpu = autograd::leaf(up.to(dtype).to(Device::cuda(0)));
      Var got = ops::swiglu(autograd::leaf(gate_gpu), up_gpu);
      Var from_copy = ops::swiglu(autograd::leaf(gate_gpu.contiguous()), up_gpu);
      EXPECT_TRUE(testing::close_to_reference(got->value.to_doubles(), want->value.to_doubles(), rtol_for(dtype)));
      EXPECT_TRUE(got->value.to_doubles() == from_copy->value.to_doubles()) << "differs from a contiguous gate";
    }
  }
}

TEST_F(CudaPointwise, SigmoidMatchesTheCpu) {
  uint64_t seed = 200;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const Shape& shape : kShapes) {
      SCOPED_TRACE(describe(shape, dtype));
      // Wide inputs, so the gradient is also checked where the sigmoid saturates.
      testing::expect_cuda_matches_cpu(
          [](const std::vector<Var>& in) { return std::vector<Var>{ops::sigmoid(in[0])}; },
          {activation(normal(shape, seed, 4.0))}, dtype, rtol_for(dtype), seed + 1);
      seed += 10;
    }
  }
}

TEST_F(CudaPointwise, MulScalarMatchesTheCpu) {
  // d_scalar sums n products: the CPU in double in index order, the GPU in fp32 per thread and
  // block, then in a fixed tree; at n = 614400 the difference stays near 1e-7 of |sum| + rms.
  uint64_t seed = 300;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const Shape& shape : kShapes) {
      SCOPED_TRACE(describe(shape, dtype));
      testing::expect_cuda_matches_cpu(
          [](const std::vector<Var>& in) { return std::vector<Var>{ops::mul_scalar(in[0], in[1])}; },
          {activation(normal(shape, seed)), parameter(normal({1}, seed + 1))}, dtype,
          rtol_for(dtype), seed + 2);
      seed += 10;
    }
  }
}

TEST_F(CudaPointwise, GatedBranchComposesOnTheDevice) {
  // The intra-hybrid's gate path: mul_scalar(sigmoid(x), s) and swiglu of two views of one tensor.
  for (DType dtype : {DType::f32, DType::bf16}) {
    testing::expect_cuda_matches_cpu(
        [](const std::vector<Var>& in) {
          return std::vector<Var>{ops::mul_scalar(ops::sigmoid(in[0]), in[1]),
                                  ops::swiglu(in[2], in[3])};
        },
        {activation(normal({17, 40}, 400, 2.0)), parameter(normal({1}, 401)),
         activation(normal({17, 40}, 402)), activation(normal({17, 40}, 403))},
        dtype, rtol_for(dtype), 404);
  }
}

// Runs `op` on the CPU and on the GPU with its activations as views that start one element into
// their device storage (so not 16-byte aligned: the kernels take their scalar path), and compares
// the output and every gradient. `flats` hold n + 1 values each; `params` are passed as they are.
void expect_views_match_cpu(const testing::OpUnderTest& op, const std::vector<Tensor>& flats,
                            const std::vector<Tensor>& params, int64_t n, DType dtype,
                            uint64_t seed) {
  std::vector<Var> cpu_inputs, gpu_inputs;
  std::vector<Tensor> storages;  // keeps the device storage of the views alive
  for (const Tensor& flat : flats) {
    const Tensor rounded = flat.to(dtype).to(DType::f32);
    cpu_inputs.push_back(autograd::leaf(rounded.narrow(0, 1, n).contiguous(), true));
    storages.push_back(rounded.to(dtype).to(Device::cuda(0)));
    gpu_inputs.push_back(autograd::leaf(storages.back().narrow(0, 1, n), true));
  }
  for (const Tensor& param : params) {
    cpu_inputs.push_back(autograd::leaf(param.clone(), true));
    gpu_inputs.push_back(autograd::leaf(param.to(Device::cuda(0)), true));
  }
  const Var cpu_out = op(cpu_inputs)[0], gpu_out = op(gpu_inputs)[0];
  const Tensor gradient = normal({n}, seed);
  autograd::backward({cpu_out}, {gradient});
  autograd::backward({gpu_out}, {gradient.to(Device::cuda(0))});
  const double rtol = rtol_for(dtype);
  EXPECT_TRUE(testing::close_to_reference(gpu_out->value.to_doubles(), cpu_out->value.to_doubles(), rtol))
      << "output";
  for (size_t i = 0; i < cpu_inputs.size(); ++i) {
    ASSERT_TRUE(gpu_inputs[i]->grad.defined()) << "input " << i;
    EXPECT_TRUE(testing::close_to_reference(gpu_inputs[i]->grad.to_doubles(),
                                            cpu_inputs[i]->grad.to_doubles(), rtol))
        << "gradient of input " << i;
  }
}

TEST_F(CudaPointwise, MisalignedViewsMatchTheCpu) {
  const int64_t n = 4 * 1024;  // a multiple of every vector width: only the alignment forbids them
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    expect_views_match_cpu(
        [](const std::vector<Var>& in) { return std::vector<Var>{ops::swiglu(in[0], in[1])}; },
        {normal({n + 1}, 500, 3.0), normal({n + 1}, 501)}, {}, n, dtype, 502);
    expect_views_match_cpu(
        [](const std::vector<Var>& in) { return std::vector<Var>{ops::sigmoid(in[0])}; },
        {normal({n + 1}, 510, 4.0)}, {}, n, dtype, 511);
    expect_views_match_cpu(
        [](const std::vector<Var>& in) { return std::vector<Var>{ops::mul_scalar(in[0], in[1])}; },
        {normal({n + 1}, 520)}, {normal({1}, 521)}, n, dtype, 522);
  }
}

TEST_F(CudaPointwise, MulScalarRejectsABf16Scalar) {
  Var x = autograd::leaf(Tensor::zeros({2, 3}, DType::bf16, Device::cuda(0)));
  Var s = autograd::leaf(Tensor::zeros({1}, DType::bf16, Device::cuda(0)));
  const std::string message = testing::error_of([&] { ops::mul_scalar(x, s); });
  EXPECT_NE(message.find("mul_scalar"), std::string::npos) << message;
  EXPECT_NE(message.find("bf16[1]"), std::string::npos) << message;
  EXPECT_NE(message.find("bf16[2, 3]"), std::string::npos) << message;
}

}  // namespace
}  // namespace braid
