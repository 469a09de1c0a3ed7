// ops::conv1d (causal depthwise conv + SiLU) on a CUDA device against the CPU backend, in f32 and
// bf16 (weight and bias f32): both outputs and every gradient, with and without an initial state,
// widths 1 to 4, T shorter than W-1, ragged T across the forward (64-step) and backward (128-step)
// tiles, channel counts that are and are not multiples of 4 (vector and scalar paths), gradients
// through only one of the two outputs, the 1B Mamba conv width; plus determinism of the weight
// gradient and the message for widths the kernel lacks.
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "kernels/cuda/conv1d.h"
#include "layers/ops/conv1d.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::OpInput;

using CudaConv1d = testing::CudaTest;

// f32: the CPU accumulates in double, the GPU in fp32 (the W-tap sums, and for the weight and bias
// gradients per-thread runs of 16 steps, then fixed-order block and grid sums over B * T terms), so
// the gradients carry a few ulps of summation-order difference. bf16: outputs and activation
// gradients rounded to 8 significant bits (weight and bias gradients f32), from the same rounded inputs.
constexpr double kF32Rtol = 1e-5;
constexpr double kBf16Rtol = 1e-2;

double rtol_for(DType dtype) { return dtype == DType::f32 ? kF32Rtol : kBf16Rtol; }

// Which outputs the test differentiates (expect_cuda_matches_cpu seeds every returned output).
enum class Outputs { both, out_only, final_state_only };

struct ConvCase {
  int64_t batch, length, channels, width;
  bool with_initial_state, silu;
  Outputs outputs = Outputs::both;
};

std::string describe(const ConvCase& c, DType dtype) {
  return str("B ", c.batch, " T ", c.length, " C ", c.channels, " W ", c.width,
             c.with_initial_state ? " with" : " without", " initial state, silu ", c.silu,
             ", outputs ", int(c.outputs), ", ", dtype_name(dtype));
}

void expect_conv_matches(const std::vector<ConvCase>& cases, uint64_t seed) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const ConvCase& c : cases) {
      SCOPED_TRACE(describe(c, dtype));
      std::vector<OpInput> inputs = {
          {testing::random_normal({c.batch, c.length, c.channels}, seed, DType::f32),
           OpInput::Role::activation},
          {testing::random_normal({c.channels, c.width}, seed + 1, DType::f32, 0.7),
           OpInput::Role::parameter},
          {testing::random_normal({c.channels}, seed + 2, DType::f32), OpInput::Role::parameter}};
      if (c.with_initial_state)
        inputs.push_back({testing::random_normal({c.batch, c.channels, c.width - 1}, seed + 3,
                                                 DType::f32),
                          OpInput::Role::activation});
      const bool silu = c.silu;
      const Outputs outputs = c.outputs;
      testing::expect_cuda_matches_cpu(
          [silu, outputs](const std::vector<Var>& in) {
            ops::Conv1dOutput result =
                ops::conv1d(in[0], in[1], in[2], in.size() > 3 ? in[3] : nullptr, silu);
            if (outputs == Outputs::out_only) return std::vector<Var>{result.out};
            if (outputs == Outputs::final_state_only) return std::vector<Var>{result.final_state};
            return std::vector<Var>{result.out, result.final_state};
          },
          inputs, dtype, rtol_for(dtype), seed + 4);
      seed += 10;
    }
  }
}

TEST_F(CudaConv1d, SmallAndRaggedShapesMatchTheCpu) {
  expect_conv_matches({{1, 1, 7, 4, false, true},    // T = 1
                       {2, 3, 5, 4, true, true},     // T = W-1, odd channels
                       {3, 2, 12, 4, true, true},    // T < W-1: the final state reaches back
                       {1, 2, 8, 4, false, true},    // ... into zeros
                       {2, 37, 7, 4, true, true},    // ragged T, scalar path
                       {2, 37, 20, 4, false, true},  // vector path, one partial channel tile
                       {2, 9, 6, 3, true, false},    // W = 3, no SiLU
                       {2, 5, 3, 1, false, true},    // W = 1: no state at all
                       {2, 11, 16, 2, true, true}},  // W = 2
                      100);
}

TEST_F(CudaConv1d, ManyTimeTilesMatchTheCpu) {
  // T = 300 and 1000: several forward (64) and backward (128) tiles, the last one partial, so the
  // halos cross sub-tile, block and sequence boundaries and the weight sums span many blocks.
  expect_conv_matches({{2, 300, 36, 4, true, true},
                       {1, 1000, 20, 4, false, true},
                       {3, 129, 5, 3, true, true},
                       {2, 300, 131, 4, false, false}},  // odd channels over several warps
                      200);
}

TEST_F(CudaConv1d, GradientsThroughOneOutputMatchTheCpu) {
  // Only `out` (no final-state gradient) or only the final state (d_out = 0).
  expect_conv_matches({{2, 37, 12, 4, true, true, Outputs::out_only},
                       {2, 37, 7, 4, false, true, Outputs::out_only},
                       {2, 37, 12, 4, true, true, Outputs::final_state_only},
                       {2, 2, 12, 4, true, true, Outputs::final_state_only}},
                      300);
}

TEST_F(CudaConv1d, MambaOneBWidthMatchesTheCpu) {
  // The 1B Mamba preset's conv channels: d_ssm + 2 G N = 4096 + 2 * 128.
  expect_conv_matches({{1, 300, 4352, 4, false, true}, {2, 37, 4352, 4, true, true}}, 400);
}

TEST_F(CudaConv1d, WeightGradientIsDeterministic) {
  const int64_t batch = 2, length = 1000, channels = 36, width = 4;
  const Tensor x = testing::random_normal({batch, length, channels}, 500, DType::f32);
  const Tensor weight = testing::random_normal({channels, width}, 501, DType::f32, 0.7);
  const Tensor bias = testing::random_normal({channels}, 502, DType::f32);
  const Tensor seed = testing::random_normal({batch, length, channels}, 503, DType::f32);
  std::vector<std::vector<double>> runs;
  for (int run = 0; run < 3; ++run) {
    Var w = leaf(weight.to(Device::cuda(0)), true), b = leaf(bias.to(Device::cuda(0)), true);
    ops::Conv1dOutput result =
        ops::conv1d(leaf(x.to(DType::bf16).to(Device::cuda(0))), w, b, nullptr);
    autograd::backward({result.out}, {seed.to(Device::cuda(0))});
    std::vector<double> grads = w->grad.to_doubles(), bias_grad = b->grad.to_doubles();
    grads.insert(grads.end(), bias_grad.begin(), bias_grad.end());
    runs.push_back(grads);
  }
  EXPECT_TRUE(runs[1] == runs[0]);
  EXPECT_TRUE(runs[2] == runs[0]);
}

TEST_F(CudaConv1d, RejectsWidthsTheKernelLacks) {
  const int64_t width = kernels::cuda::kConv1dMaxWidth + 1;
  Var x = leaf(testing::random_normal({1, 5, 8}, 600, DType::f32).to(Device::cuda(0)));
  Var w = leaf(testing::random_normal({8, width}, 601, DType::f32).to(Device::cuda(0)));
  Var b = leaf(testing::random_normal({8}, 602, DType::f32).to(Device::cuda(0)));
  const std::string message = testing::error_of([&] { ops::conv1d(x, w, b, nullptr); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "conv1d: the CUDA kernel supports conv widths",
                      message);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, str("W = ", width), message);
}

TEST_F(CudaConv1d, RejectsBf16Weights) {
  // Parameters stay f32 (fp32 master weights) next to bf16 activations.
  auto bf16_on_gpu = [](const Shape& shape, uint64_t seed) {
    return testing::random_normal(shape, seed, DType::f32).to(DType::bf16).to(Device::cuda(0));
  };
  Var x = leaf(bf16_on_gpu({1, 5, 8}, 700));
  Var w = leaf(bf16_on_gpu({8, 4}, 701));
  Var b = leaf(testing::random_normal({8}, 702, DType::f32).to(Device::cuda(0)));
  const std::string message = testing::error_of([&] { ops::conv1d(x, w, b, nullptr); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "conv1d: weight is bf16[8, 4]", message);
}

}  // namespace
}  // namespace braid
