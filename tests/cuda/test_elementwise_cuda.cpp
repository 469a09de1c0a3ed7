// The elementwise ops and gradient accumulation on a CUDA device against the CPU backend.
#include "autograd/tape.h"
#include "layers/ops/elementwise.h"
#include "tests/cuda/cuda_test_util.h"

namespace braid {
namespace {

using Role = testing::OpInput::Role;
using testing::OpInput;
using testing::random_normal;

using CudaElementwise = testing::CudaTest;

// Flat sizes: one element, an odd count, one past a grid-stride step of the kernels, and a multiple
// of 8 one vector past a grid-stride step of binary's 8-element path.
const int64_t kSizes[] = {1, 37, 1048577, 8 * 1048577};

TEST_F(CudaElementwise, AddSubMulMatchTheCpu) {
  uint64_t seed = 10;
  for (int64_t n : kSizes) {
    const std::vector<OpInput> inputs = {{random_normal({n}, seed, DType::f32)},
                                         {random_normal({n}, seed + 1, DType::f32)}};
    for (auto op : {ops::add, ops::sub, ops::mul}) {
      auto run = [op](const std::vector<autograd::Var>& in) {
        return std::vector<autograd::Var>{op(in[0], in[1])};
      };
      testing::expect_cuda_matches_cpu(run, inputs, DType::f32, 1e-6, seed + 2);
      testing::expect_cuda_matches_cpu(run, inputs, DType::bf16, 1e-2, seed + 3);
    }
    seed += 10;
  }
}

TEST_F(CudaElementwise, ScaleSumAndMeanMatchTheCpu) {
  uint64_t seed = 100;
  for (int64_t n : kSizes) {
    const std::vector<OpInput> inputs = {{random_normal({n}, seed, DType::f32)}};
    auto run = [](const std::vector<autograd::Var>& in) {
      return std::vector<autograd::Var>{ops::scale(in[0], -0.75), ops::sum(in[0]),
                                        ops::mean(in[0])};
    };
    // The sums differ from the CPU's only in summation order (fp32 here, double blocks there).
    testing::expect_cuda_matches_cpu(run, inputs, DType::f32, 1e-5, seed + 1);
    testing::expect_cuda_matches_cpu(run, inputs, DType::bf16, 1e-2, seed + 2);
    seed += 10;
  }
}

TEST_F(CudaElementwise, SumIsTheSameOnEveryRun) {
  const Tensor x = random_normal({3000001}, 150, DType::f32).to(Device::cuda(0));
  const double first = ops::sum(autograd::leaf(x))->value.item();
  for (int run = 0; run < 3; ++run) EXPECT_EQ(ops::sum(autograd::leaf(x))->value.item(), first);
}

TEST_F(CudaElementwise, MulBroadcastLastMatchesTheCpu) {
  uint64_t seed = 200;
  // Rows below, at and past one reduction tile (64 rows); odd and wide channel counts.
  for (const auto& [rows, channels] : {std::pair{1, 7}, std::pair{65, 33}, std::pair{300, 2048}}) {
    const std::vector<OpInput> inputs = {
        {random_normal({rows, channels}, seed, DType::f32)},
        {random_normal({channels}, seed + 1, DType::f32), Role::parameter}};
    auto run = [](const std::vector<autograd::Var>& in) {
      return std::vector<autograd::Var>{ops::mul_broadcast_last(in[0], in[1])};
    };
    testing::expect_cuda_matches_cpu(run, inputs, DType::f32, 1e-5, seed + 2);
    testing::expect_cuda_matches_cpu(run, inputs, DType::bf16, 1e-2, seed + 3);
    seed += 10;
  }
}

TEST_F(CudaElementwise, GradientsOfAReusedInputAccumulateOnTheDevice) {
  // y = x*x + 3x - x reaches x by four paths, so backward accumulates into x's gradient.
  const Tensor x_host = random_normal({1000}, 300, DType::f32);
  autograd::Var x = autograd::leaf(x_host.to(Device::cuda(0)), true);
  autograd::Var y = ops::sub(ops::add(ops::mul(x, x), ops::scale(x, 3.0)), x);
  autograd::backward({ops::sum(y)}, {Tensor::full({1}, 1.0, DType::f32, Device::cuda(0))});
  ASSERT_TRUE(x->grad.device().is_cuda());
  std::vector<double> expected;
  for (double value : x_host.to_doubles()) expected.push_back(2 * value + 2);
  EXPECT_TRUE(testing::all_close(x->grad.to_doubles(), expected, 1e-6, 1e-6));
}

}  // namespace
}  // namespace braid
