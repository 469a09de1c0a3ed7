// ops::rope on a CUDA device against the CPU backend, forward and gradient, in f32 and bf16: head
// dims 64/72/96/128 (16-byte vector path), 68 and 6 (2- and 1-element paths), 2 (one pair), ragged
// T (1, 3, 37, 300), the Llama-3 scaled frequencies and the plain SWA ones, and position offsets up
// to far beyond the training context (where a float angle would be visibly wrong).
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "layers/ops/rope.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::Var;
using testing::OpInput;

using CudaRope = testing::CudaTest;

// f32: cosines and sines are the same doubles rounded to float on both sides; only the rotation's
// fp32 rounding (FMA contraction) can differ. bf16: outputs rounded to 8 significant bits; the
// gradient is f32 on both sides.
constexpr double kF32Rtol = 1e-5;
constexpr double kBf16Rtol = 1e-2;

double rtol_for(DType dtype) { return dtype == DType::f32 ? kF32Rtol : kBf16Rtol; }

OpInput activation(Tensor value) { return {std::move(value), OpInput::Role::activation}; }

struct RopeCase {
  Shape shape;  // (B, T, H, D)
  int64_t position_offset;
};

void expect_rope_matches(const std::vector<RopeCase>& cases, const ops::RopeConfig& config,
                         uint64_t seed) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const RopeCase& c : cases) {
      SCOPED_TRACE(shape_str(c.shape) + " offset " + std::to_string(c.position_offset) + " " +
                   dtype_name(dtype));
      const int64_t offset = c.position_offset;
      testing::expect_cuda_matches_cpu(
          [&config, offset](const std::vector<Var>& in) {
            return std::vector<Var>{ops::rope(in[0], config, offset)};
          },
          {activation(testing::random_normal(c.shape, seed, DType::f32))}, dtype, rtol_for(dtype),
          seed + 1);
      seed += 10;
    }
  }
}

TEST_F(CudaRope, LlamaScaledFrequenciesMatchTheCpu) {
  expect_rope_matches({{{1, 1, 3, 64}, 0},
                       {{2, 3, 5, 72}, 0},
                       {{1, 37, 4, 96}, 0},
                       {{2, 300, 2, 128}, 0},
                       {{1, 300, 32, 64}, 0},  // the 1B Transformer's query heads
                       {{1, 300, 8, 64}, 0},   // ... and its key heads
                       {{1, 37, 16, 72}, 0}},  // the 1B intra-hybrid's Q/K head dim
                      ops::RopeConfig{}, 100);
}

TEST_F(CudaRope, PlainFrequenciesAndOddPairCounts) {
  ops::RopeConfig swa;  // the SWA layers' theta 10000, no scaling
  swa.theta = 10000;
  swa.llama3_scaling = false;
  expect_rope_matches({{{2, 37, 3, 68}, 0},  // 34 pairs: 2-element vectors
                       {{3, 5, 7, 6}, 0},    // 3 pairs: scalars
                       {{1, 3, 2, 2}, 0},    // one pair
                       {{2, 37, 3, 128}, 0}},
                      swa, 200);
}

TEST_F(CudaRope, PositionOffsetsAndLongPositions) {
  // Positions up to ~70000: angles of 10^4 radians and more, formed in double on both sides.
  expect_rope_matches({{{1, 1, 4, 64}, 8191},
                       {{2, 37, 3, 96}, 1000},
                       {{1, 300, 2, 128}, 65000},
                       {{1, 3, 2, 6}, 12345}},
                      ops::RopeConfig{}, 300);
  ops::RopeConfig swa;
  swa.theta = 10000;
  swa.llama3_scaling = false;
  expect_rope_matches({{{1, 37, 2, 64}, 70000}}, swa, 400);
}

TEST_F(CudaRope, RejectsHeadDimsBeyondTheKernel) {
  Var x = autograd::leaf(
      testing::random_normal({1, 2, 1, 520}, 500, DType::f32).to(Device::cuda(0)), true);
  const std::string message = testing::error_of([&] { ops::rope(x); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "rope: the CUDA kernel needs an even head dim",
                      message);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "520", message);
}

}  // namespace
}  // namespace braid
