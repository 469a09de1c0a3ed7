// ops::ssd on CUDA against the CPU kernel: y, the final state and all eight gradients, in f32
// (SIMT path, rtol 1e-5) and bf16 (tensor cores, rtol 1e-2), over head dims 64/128/144/192, state
// sizes 64/128, G = 1 and G = H/2, ragged T, chunks 16..256 (including one that is not a multiple
// of the 64-row tile), with and without an initial state, the dt clamp, strongly decaying steps,
// a 1b-shaped layer, a gradient reaching y only, run-to-run determinism and the chunk check.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "layers/ops/ssd.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::Var;
using testing::OpInput;
using Role = OpInput::Role;

using CudaSsd = testing::CudaTest;

struct Case {
  int64_t batch, seq, heads, head_dim, groups, state, chunk;
  bool initial;
};

// Step sizes: MODEL.md's init (delta about 1e-3 to 0.1), or about 0.4 to 3 (strong decay).
enum class Steps { initial, large };

double inverse_softplus(double y) { return y + std::log(-std::expm1(-y)); }

std::vector<OpInput> make_inputs(const Case& c, uint64_t seed, Steps steps = Steps::initial) {
  using testing::random_normal;
  using testing::random_uniform;
  std::vector<double> bias =
      random_uniform({c.heads}, seed + 2, std::log(1e-3), std::log(0.1)).to_doubles();
  for (double& b : bias)
    b = steps == Steps::initial ? inverse_softplus(std::exp(b)) : inverse_softplus(-b / 3);
  std::vector<double> A_log = random_uniform({c.heads}, seed + 3, 0.01, 2.0).to_doubles();
  for (double& a : A_log) a = std::log(a);
  std::vector<OpInput> inputs = {
      {random_normal({c.batch, c.seq, c.heads, c.head_dim}, seed, DType::f32)},
      {random_normal({c.batch, c.seq, c.heads}, seed + 1, DType::f32, 0.5)},
      {Tensor::from_values(bias, {c.heads}, DType::f32), Role::parameter},
      {Tensor::from_values(A_log, {c.heads}, DType::f32), Role::parameter},
      {random_normal({c.batch, c.seq, c.groups, c.state}, seed + 4, DType::f32)},
      {random_normal({c.batch, c.seq, c.groups, c.state}, seed + 5, DType::f32)},
      {random_uniform({c.heads}, seed + 6, 0.5, 1.5, DType::f32), Role::parameter},
  };
  // The state is f32 next to bf16 activations, like a parameter.
  if (c.initial)
    inputs.push_back({random_normal({c.batch, c.heads, c.head_dim, c.state}, seed + 7, DType::f32),
                      Role::parameter});
  return inputs;
}

testing::OpUnderTest ssd_op(bool initial, ops::SsdOptions options) {
  return [initial, options](const std::vector<Var>& v) -> std::vector<Var> {
    ops::SsdOutputs out =
        ops::ssd(v[0], v[1], v[2], v[3], v[4], v[5], v[6], initial ? v[7] : nullptr, options);
    return {out.y, out.final_state};
  };
}

std::string describe(const Case& c) {
  return "B=" + std::to_string(c.batch) + " T=" + std::to_string(c.seq) +
         " H=" + std::to_string(c.heads) + " P=" + std::to_string(c.head_dim) +
         " G=" + std::to_string(c.groups) + " N=" + std::to_string(c.state) +
         " chunk=" + std::to_string(c.chunk) + (c.initial ? " with" : " without") +
         " initial state";
}

// f32 at 1e-5: the GPU sums in other orders than the CPU (mma k-steps, per-tile partials, the
// decay gradient as row minus column sums of Gamma), which moves results by a few 1e-7 relative.
constexpr double kF32Tolerance = 1e-5;
constexpr double kBf16Tolerance = 1e-2;

// bf16 runs twice: with fp32 output gradients (split into bf16 hi + lo inside) and with bf16 ones
// (exact in the products, as a bf16 model hands them over).
void check_case(const Case& c, uint64_t seed, DType dtype, double rtol,
                ops::SsdOptions options = {}, Steps steps = Steps::initial) {
  options.chunk = c.chunk;
  using testing::Seeds;
  for (Seeds seeds : {Seeds::activation_dtype, Seeds::f32}) {
    SCOPED_TRACE(describe(c) + " in " + dtype_name(dtype) + (seeds == Seeds::f32 ? ", f32 output gradients" : ""));
    testing::expect_cuda_matches_cpu(ssd_op(c.initial, options), make_inputs(c, seed, steps), dtype,
                                     rtol, seed, seeds);
    if (dtype == DType::f32) break;  // the two are the same
  }
}

void check_both(const Case& c, uint64_t seed) {
  check_case(c, seed, DType::f32, kF32Tolerance);
  check_case(c, seed + 100, DType::bf16, kBf16Tolerance);
}

// T = 16 in one chunk of 16; T = 100 ragged in chunks of 64 with G = H/2.
TEST_F(CudaSsd, ShortAndRaggedSequences) {
  check_both({2, 16, 4, 64, 1, 64, 16, false}, 11);
  check_both({2, 100, 4, 64, 2, 128, 64, true}, 21);
}

// P = 144 (not a power of two) and P = 192, over several chunks with a one-row last chunk.
TEST_F(CudaSsd, WideAndOddHeadDims) {
  check_both({2, 257, 2, 144, 1, 128, 64, true}, 31);
  check_both({2, 257, 4, 192, 2, 64, 256, false}, 41);
}

// P = 128 with chunk 256 (T = 600: 3 chunks, the last 88 rows) and chunk 16 (38 chunks).
TEST_F(CudaSsd, HeadDim128LongSequences) {
  check_both({2, 600, 2, 128, 1, 128, 256, true}, 51);
  check_both({2, 600, 4, 128, 2, 64, 16, false}, 61);
}

// A chunk of 80 rows: two tiles, the second one short even in full chunks.
TEST_F(CudaSsd, ChunkNotAMultipleOfTheTile) { check_both({2, 200, 2, 64, 1, 64, 80, true}, 71); }

// delta clamped on both sides (so some d dt_raw are zero).
TEST_F(CudaSsd, ClampedSteps) {
  ops::SsdOptions options;
  options.dt_min = 0.004;
  options.dt_max = 0.03;
  const Case c{2, 130, 2, 64, 1, 64, 64, true};
  check_case(c, 81, DType::f32, kF32Tolerance, options);
  check_case(c, 82, DType::bf16, kBf16Tolerance, options);
}

// Steps of 0.4 to 3 decay most of the way within a few tokens (cumsums in the hundreds, so
// differences of plain fp32 cumsums would lose ~1e-5; the GPU splits them, see kernels/cuda/ssd.cu).
TEST_F(CudaSsd, StronglyDecayingSteps) {
  const Case c{2, 257, 2, 64, 1, 64, 64, true};
  check_case(c, 91, DType::f32, kF32Tolerance, {}, Steps::large);
  check_case(c, 92, DType::bf16, kBf16Tolerance, {}, Steps::large);
}

// One layer of the 1b Mamba preset (d_ssm 4096 = 32 heads of 128, N = 128, G = 1, chunk 256).
// f32 allows 2e-5: over these 2M outputs with 256-row and 128-wide reductions the CPU kernel's own
// f32 error already reaches 6e-6 of (|value| + rms) (measured against its f64 run), and the GPU's
// error, from other summation orders, adds to it.
TEST_F(CudaSsd, OneBillionLayerShape) {
  const Case c{1, 512, 32, 128, 1, 128, 256, false};
  check_case(c, 101, DType::bf16, kBf16Tolerance);
  check_case(c, 102, DType::f32, 2e-5);
}

// Only y gets a gradient: the backward runs without dS_final (the last chunk's state gradient is
// skipped), and the initial state still gets its gradient.
TEST_F(CudaSsd, GradientThroughYOnly) {
  const Case c{2, 150, 2, 64, 1, 64, 64, true};
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const std::vector<OpInput> inputs = make_inputs(c, 111);
    std::vector<Var> cpu, gpu;
    for (const OpInput& input : inputs) {
      Tensor host = input.role == Role::activation ? input.value.to(dtype).to(DType::f32)
                                                   : input.value;
      cpu.push_back(autograd::leaf(host.clone(), true));
      gpu.push_back(autograd::leaf(input.role == Role::activation
                                       ? host.to(dtype).to(Device::cuda(0))
                                       : host.to(Device::cuda(0)),
                                   true));
    }
    ops::SsdOptions options;
    options.chunk = c.chunk;
    const Var y_cpu = ssd_op(true, options)(cpu)[0];
    const Var y_gpu = ssd_op(true, options)(gpu)[0];
    const Tensor seed_grad = testing::random_normal(y_cpu->value.shape(), 112, DType::f32);
    autograd::backward({y_cpu}, {seed_grad});
    autograd::backward({y_gpu}, {seed_grad.to(Device::cuda(0))});
    const double rtol = dtype == DType::f32 ? kF32Tolerance : kBf16Tolerance;
    for (size_t i = 0; i < inputs.size(); ++i) {
      ASSERT_TRUE(gpu[i]->grad.defined()) << "input " << i;
      EXPECT_TRUE(testing::close_to_reference(gpu[i]->grad.to_doubles(),
                                              cpu[i]->grad.to_doubles(), rtol))
          << "gradient of input " << i;
    }
  }
}

// Two backward passes give bitwise equal gradients (fixed-order reductions, no atomics).
TEST_F(CudaSsd, GradientsAreDeterministic) {
  const Case c{2, 300, 4, 64, 2, 64, 64, true};
  const std::vector<OpInput> inputs = make_inputs(c, 121);
  std::vector<std::vector<double>> first;
  for (int run = 0; run < 2; ++run) {
    std::vector<Var> v;
    for (const OpInput& input : inputs)
      v.push_back(autograd::leaf(input.role == Role::activation
                                     ? input.value.to(DType::bf16).to(Device::cuda(0))
                                     : input.value.to(Device::cuda(0)),
                                 true));
    ops::SsdOptions options;
    options.chunk = c.chunk;
    const std::vector<Var> out = ssd_op(true, options)(v);
    autograd::backward(
        out, {testing::random_normal(out[0]->value.shape(), 122, DType::f32).to(Device::cuda(0)),
              testing::random_normal(out[1]->value.shape(), 123, DType::f32).to(Device::cuda(0))});
    for (size_t i = 0; i < v.size(); ++i) {
      const std::vector<double> grad = v[i]->grad.to_doubles();
      if (run == 0) first.push_back(grad);
      else EXPECT_EQ(grad, first[i]) << "gradient of input " << i << " changed between runs";
    }
  }
}

// The CUDA kernels tile chunks in 16s: another chunk is refused with a message naming it.
TEST_F(CudaSsd, RejectsChunkNotMultipleOf16) {
  const Case c{1, 40, 2, 64, 1, 64, 24, false};
  std::vector<Var> v;
  for (const OpInput& input : make_inputs(c, 131))
    v.push_back(autograd::leaf(input.value.to(Device::cuda(0)), false));
  ops::SsdOptions options;
  options.chunk = 24;
  const std::string message = testing::error_of([&] { ssd_op(false, options)(v); });
  EXPECT_NE(message.find("chunk 24"), std::string::npos) << message;
}

}  // namespace
}  // namespace braid
