// The norm ops on a CUDA device against the CPU backend, forward and every gradient, in f32 and
// bf16 (parameters f32): rmsnorm, add_rmsnorm (gradients through either output and both),
// group_norm and gated_rmsnorm. The shapes reach every path of the segment-norm engine
// (kernels/cuda/rmsnorm.cu): warp teams (segments of <= 512 elements), block teams, chunked
// segments (> 8192 elements), 16-byte vector and scalar accesses (odd widths, misaligned views),
// and group counts that do not divide the persistent grid. gated_rmsnorm also reads a gate sliced
// from wider rows (the decode step's view of in_proj's output) in place.
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "layers/ops/gated_rmsnorm.h"
#include "layers/ops/group_norm.h"
#include "layers/ops/rmsnorm.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::Var;
using testing::OpInput;

using CudaNorms = testing::CudaTest;

// f32: both sides compute in fp32 (group_norm and gated_rmsnorm's CPU twins in double); only the
// summation order differs. bf16: outputs are rounded to 8 significant bits (and add_rmsnorm
// normalizes the rounded sum), activation gradients too (weight and bias gradients f32), from the
// same rounded inputs.
constexpr double kF32Rtol = 1e-5;
constexpr double kBf16Rtol = 1e-2;

double rtol_for(DType dtype) { return dtype == DType::f32 ? kF32Rtol : kBf16Rtol; }

// Normal(mean, stddev) values in f32.
Tensor normal(const Shape& shape, uint64_t seed, double stddev = 1.0, double mean = 0.0) {
  Tensor tensor = testing::random_normal(shape, seed, DType::f32, stddev);
  if (mean == 0.0) return tensor;
  std::vector<double> values = tensor.to_doubles();
  for (double& value : values) value += mean;
  return Tensor::from_values(values, shape, DType::f32);
}

OpInput activation(Tensor value) { return {std::move(value), OpInput::Role::activation}; }
OpInput parameter(Tensor value) { return {std::move(value), OpInput::Role::parameter}; }

// A norm weight around 1, so that wrong channel indexing shows.
Tensor norm_weight(int64_t channels, uint64_t seed) { return normal({channels}, seed, 0.5, 1.0); }

std::string describe(const Shape& shape, DType dtype) {
  return shape_str(shape) + " " + dtype_name(dtype);
}

// ---- rmsnorm ----

TEST_F(CudaNorms, RmsnormMatchesTheCpu) {
  // dim 7, 33: scalar warp; 100: scalar (bf16) / vector (f32) warp; 512: full vector warp;
  // 520: smallest vector block; 1001: scalar block; 2048: the 1B width; 8192: largest cached
  // bf16 block (512 threads); 8193: scalar chunked; 16392: vector chunked.
  const std::vector<Shape> shapes = {{3, 7},    {5, 33},   {2, 3, 100}, {7, 512},   {11, 520},
                                     {9, 1001}, {300, 2048}, {4, 8192}, {3, 8193}, {2, 16392}};
  uint64_t seed = 1000;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const Shape& shape : shapes) {
      SCOPED_TRACE(describe(shape, dtype));
      testing::expect_cuda_matches_cpu(
          [](const std::vector<Var>& in) { return std::vector<Var>{ops::rmsnorm(in[0], in[1])}; },
          {activation(normal(shape, seed)), parameter(norm_weight(shape.back(), seed + 1))}, dtype,
          rtol_for(dtype), seed + 2);
      seed += 10;
    }
  }
}

TEST_F(CudaNorms, RmsnormUsesEps) {
  // Small inputs, where eps is a large part of mean(x²).
  for (DType dtype : {DType::f32, DType::bf16}) {
    testing::expect_cuda_matches_cpu(
        [](const std::vector<Var>& in) { return std::vector<Var>{ops::rmsnorm(in[0], in[1], 0.01)}; },
        {activation(normal({6, 40}, 1100, 0.05)), parameter(norm_weight(40, 1101))}, dtype,
        rtol_for(dtype), 1102);
  }
}

// Which outputs of add_rmsnorm the test backpropagates from.
enum class Reach { normed, sum, both };

TEST_F(CudaNorms, AddRmsnormMatchesTheCpuThroughEitherOutputAndBoth) {
  const std::vector<Shape> shapes = {{3, 7}, {5, 33}, {11, 520}, {300, 2048}, {2, 16392}};
  uint64_t seed = 2000;
  for (Reach reach : {Reach::normed, Reach::sum, Reach::both}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      for (const Shape& shape : shapes) {
        SCOPED_TRACE(describe(shape, dtype) + (reach == Reach::normed ? " normed only"
                                               : reach == Reach::sum  ? " sum only"
                                                                      : " both"));
        testing::expect_cuda_matches_cpu(
            [reach](const std::vector<Var>& in) {
              ops::AddRmsnormResult result = ops::add_rmsnorm(in[0], in[1], in[2]);
              if (reach == Reach::normed) return std::vector<Var>{result.normed};
              if (reach == Reach::sum) return std::vector<Var>{result.sum};
              return std::vector<Var>{result.sum, result.normed};
            },
            {activation(normal(shape, seed)), activation(normal(shape, seed + 1, 2.0)),
             parameter(norm_weight(shape.back(), seed + 2))},
            dtype, rtol_for(dtype), seed + 3);
        seed += 10;
      }
    }
  }
}

// x starts one element into its storage: not 16-byte aligned although the width is a multiple of
// the vector width, so the kernels must take their scalar path.
TEST_F(CudaNorms, RmsnormOnAMisalignedViewMatchesTheCpu) {
  const int64_t rows = 5, dim = 64;
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor flat = normal({rows * dim + 1}, 3000).to(dtype).to(DType::f32);
    const Tensor weight = norm_weight(dim, 3001);
    const Tensor seed = normal({rows, dim}, 3002);

    Var x_cpu = autograd::leaf(flat.narrow(0, 1, rows * dim).reshape({rows, dim}).contiguous(), true);
    Var w_cpu = autograd::leaf(weight.clone(), true);
    Var y_cpu = ops::rmsnorm(x_cpu, w_cpu);
    autograd::backward({y_cpu}, {seed});

    const Tensor storage = flat.to(dtype).to(Device::cuda(0));
    Var x_gpu = autograd::leaf(storage.narrow(0, 1, rows * dim).reshape({rows, dim}), true);
    Var w_gpu = autograd::leaf(weight.to(Device::cuda(0)), true);
    Var y_gpu = ops::rmsnorm(x_gpu, w_gpu);
    autograd::backward({y_gpu}, {seed.to(Device::cuda(0))});

    const double rtol = rtol_for(dtype);
    EXPECT_TRUE(testing::close_to_reference(y_gpu->value.to_doubles(), y_cpu->value.to_doubles(), rtol))
        << "output";
    EXPECT_TRUE(testing::close_to_reference(x_gpu->grad.to_doubles(), x_cpu->grad.to_doubles(), rtol))
        << "d_x";
    EXPECT_TRUE(testing::close_to_reference(w_gpu->grad.to_doubles(), w_cpu->grad.to_doubles(), rtol))
        << "d_weight";
  }
}

// Bitwise equal parameter gradients from two identical backward passes (no atomics).
std::vector<std::vector<double>> parameter_gradients_twice(
    const std::function<Var(const Var&, const Var&, const Var&)>& op, const Tensor& x,
    const Tensor& weight, const Tensor& bias, const Tensor& seed) {
  std::vector<std::vector<double>> gradients;
  for (int run = 0; run < 2; ++run) {
    Var xv = autograd::leaf(x.to(DType::bf16).to(Device::cuda(0)), true);
    Var wv = autograd::leaf(weight.to(Device::cuda(0)), true);
    Var bv = autograd::leaf(bias.to(Device::cuda(0)), true);
    Var y = op(xv, wv, bv);
    autograd::backward({y}, {seed.to(Device::cuda(0))});
    gradients.push_back(wv->grad.to_doubles());
    if (bv->grad.defined()) gradients.push_back(bv->grad.to_doubles());
  }
  return gradients;
}

void expect_bitwise_equal(const std::vector<double>& a, const std::vector<double>& b,
                          const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(double)), 0)
      << what << " differs between two identical runs";
}

TEST_F(CudaNorms, ParameterGradientsAreDeterministic) {
  const int64_t rows = 300, channels = 2048;
  const Tensor x = normal({rows, channels}, 4000), weight = norm_weight(channels, 4001);
  const Tensor bias = normal({channels}, 4002, 0.5), seed = normal({rows, channels}, 4003);
  std::vector<std::vector<double>> rms = parameter_gradients_twice(
      [](const Var& xv, const Var& wv, const Var&) { return ops::rmsnorm(xv, wv); }, x, weight,
      bias, seed);
  ASSERT_EQ(rms.size(), 2u);
  expect_bitwise_equal(rms[0], rms[1], "rmsnorm d_weight");
  std::vector<std::vector<double>> group = parameter_gradients_twice(
      [](const Var& xv, const Var& wv, const Var& bv) { return ops::group_norm(xv, wv, bv, 16); },
      x, weight, bias, seed);
  ASSERT_EQ(group.size(), 4u);
  expect_bitwise_equal(group[0], group[2], "group_norm d_weight");
  expect_bitwise_equal(group[1], group[3], "group_norm d_bias");
}

TEST_F(CudaNorms, RejectsBf16Weights) {
  Var x = autograd::leaf(Tensor::zeros({2, 8}, DType::bf16, Device::cuda(0)));
  Var w = autograd::leaf(Tensor::zeros({8}, DType::bf16, Device::cuda(0)));
  const std::string message = testing::error_of([&] { ops::rmsnorm(x, w); });
  EXPECT_NE(message.find("rmsnorm"), std::string::npos) << message;
  EXPECT_NE(message.find("bf16[8]"), std::string::npos) << message;
  EXPECT_NE(message.find("bf16[2, 8]"), std::string::npos) << message;
}

// ---- group_norm ----

struct GroupCase {
  Shape shape;
  int64_t groups;
};

TEST_F(CudaNorms, GroupNormMatchesTheCpu) {
  // Group sizes: 3, 9 (scalar warps; 7 groups), 24 (vector warps), 128 and 144 (the 1B presets'
  // heads: 2048 / 16 and 2304 / 16), 1000 (vector block; 3 groups), 1001 (scalar block),
  // 8200 (chunked).
  const std::vector<GroupCase> cases = {
      {{3, 12}, 4},     {{5, 63}, 7},      {{2, 5, 96}, 4}, {{37, 2048}, 16}, {{300, 2048}, 16},
      {{300, 2304}, 16}, {{9, 3000}, 3},   {{4, 2002}, 2},  {{3, 16400}, 2}};
  uint64_t seed = 5000;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const GroupCase& c : cases) {
      SCOPED_TRACE(describe(c.shape, dtype) + " groups " + std::to_string(c.groups));
      const int64_t channels = c.shape.back(), groups = c.groups;
      testing::expect_cuda_matches_cpu(
          [groups](const std::vector<Var>& in) {
            return std::vector<Var>{ops::group_norm(in[0], in[1], in[2], groups)};
          },
          // An offset mean, so the centering matters.
          {activation(normal(c.shape, seed, 1.5, 0.75)), parameter(norm_weight(channels, seed + 1)),
           parameter(normal({channels}, seed + 2, 0.5))},
          dtype, rtol_for(dtype), seed + 3);
      seed += 10;
    }
  }
}

// ---- gated_rmsnorm ----

TEST_F(CudaNorms, GatedRmsnormMatchesTheCpu) {
  // Group sizes: 7, 33, 25 (scalar warps), 8 (vector warps), 2048 (the 1B rows with one group),
  // 512 (full vector warps, 8 groups), 6144 (block of 384), 8200 (chunked), 1001 (scalar block).
  const std::vector<GroupCase> cases = {
      {{3, 7}, 1},      {{5, 66}, 2},    {{4, 100}, 4},   {{2, 3, 64}, 8}, {{300, 2048}, 1},
      {{64, 4096}, 8},  {{37, 6144}, 1}, {{2, 16400}, 2}, {{9, 3003}, 3}};
  uint64_t seed = 6000;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const GroupCase& c : cases) {
      SCOPED_TRACE(describe(c.shape, dtype) + " groups " + std::to_string(c.groups));
      const int64_t groups = c.groups;
      testing::expect_cuda_matches_cpu(
          [groups](const std::vector<Var>& in) {
            return std::vector<Var>{ops::gated_rmsnorm(in[0], in[1], in[2], groups)};
          },
          {activation(normal(c.shape, seed)), activation(normal(c.shape, seed + 1, 2.0)),
           parameter(norm_weight(c.shape.back(), seed + 2))},
          dtype, rtol_for(dtype), seed + 3);
      seed += 10;
    }
  }
}

// Without a tape z may be a slice of wider rows. Row widths: 8480 (the 1B in_proj, z at column 0,
// one group of 4096: vector block teams), 4880 (the 1B intra-hybrid Mamba branch, z of 2304 in 16
// groups of 144), 300 with z at column 20 (8 groups of 32, vector warps), 301 (rows not 16-byte
// aligned: the op copies z first). The result is the CPU's, and bit for bit the GPU's from a
// contiguous z (the same kernel path).
TEST_F(CudaNorms, GatedRmsnormReadsAGateSlicedFromWiderRows) {
  struct SliceCase {
    int64_t rows, width, start, channels, groups;
  };
  const std::vector<SliceCase> cases = {
      {4, 8480, 0, 4096, 1}, {4, 4880, 0, 2304, 16}, {6, 300, 20, 256, 8}, {6, 301, 20, 256, 8}};
  autograd::NoGradScope no_grad;
  uint64_t seed = 7000;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const SliceCase& c : cases) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " width " + std::to_string(c.width));
      const Tensor projection = normal({c.rows, 1, c.width}, seed, 2.0).to(dtype).to(DType::f32);
      const Tensor y = normal({c.rows, 1, c.channels}, seed + 1).to(dtype).to(DType::f32);
      const Tensor weight = norm_weight(c.channels, seed + 2);
      seed += 10;
      const Tensor z = projection.narrow(2, c.start, c.channels);
      Var want = ops::gated_rmsnorm(autograd::leaf(y), autograd::leaf(z.contiguous()), autograd::leaf(weight),
                                    c.groups);

      const Tensor projection_gpu = projection.to(dtype).to(Device::cuda(0));
      const Var y_gpu = autograd::leaf(y.to(dtype).to(Device::cuda(0)));
      const Var weight_gpu = autograd::leaf(weight.to(Device::cuda(0)));
      const Tensor z_gpu = projection_gpu.narrow(2, c.start, c.channels);
      Var got = ops::gated_rmsnorm(y_gpu, autograd::leaf(z_gpu), weight_gpu, c.groups);
      Var from_copy = ops::gated_rmsnorm(y_gpu, autograd::leaf(z_gpu.contiguous()), weight_gpu, c.groups);
      EXPECT_TRUE(testing::close_to_reference(got->value.to_doubles(), want->value.to_doubles(), rtol_for(dtype)));
      EXPECT_TRUE(got->value.to_doubles() == from_copy->value.to_doubles()) << "differs from a contiguous gate";
    }
  }
}

}  // namespace
}  // namespace braid
