// ops::attention on a CUDA device against the CPU twin, forward and every gradient, in f32 (the
// SIMT kernels) and bf16 (the tensor-core flash kernels): every supported head-dim pair, GQA
// ratios, sliding window + sink, tiny and ragged lengths, one larger case; plus the LSE the kernels
// save, the realignment of unaligned views and the head-dim check.
#include <cmath>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"
#include "layers/ops/attention.h"
#include "runtime/cuda_stream.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using CudaAttention = testing::CudaTest;

struct AttentionCase {
  int64_t batch, time, q_heads, kv_heads, qk_dim, v_dim;
  int64_t window = 0, sink = 0;
  double scale = 0;
};

std::string describe(const AttentionCase& c) {
  return str("B=", c.batch, " T=", c.time, " Hq=", c.q_heads, " Hk=", c.kv_heads, " Dqk=", c.qk_dim,
             " Dv=", c.v_dim, " window=", c.window, " sink=", c.sink, " scale=", c.scale);
}

// Relative RMS error ||got - want|| / ||want||.
double relative_rms_error(const std::vector<double>& got, const std::vector<double>& want) {
  double error = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    error += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return norm > 0 ? std::sqrt(error / norm) : std::sqrt(error);
}

// Tolerances, as |got - want| <= rtol * (|want| + rms(want)) + floor for every element (the
// shared close_to_reference plus an absolute floor, see below), and for bf16 also on the relative
// RMS error.
// f32: both sides sum in fp32 in different orders (online vs two-pass softmax, tiles vs rows); the
//   CPU's own f32 error against f64 reaches 1.1e-5 at T = 1024 (dK), so longer rows get 3e-5.
// bf16: like FlashAttention-2, the device rounds P to bf16 before P·V and dV, dS before dK and dQ,
//   and uses the bf16 output O in D = rowsum(dO ⊙ O). A CPU mimic of exactly these roundings (which
//   the kernels match to fp32 noise in an emulation) deviates from the f32 twin by up to 1.1e-2
//   (output, worst element) and 4.7e-2 (gradients, T = 1024; 2-3e-2 at T <= 600), with relative
//   RMS errors below 3.1e-3. Hence worst-element tolerances 2e-2 / 6e-2 and an RMS bound of 1e-2,
//   which any indexing or masking bug exceeds by far.
// The floor: with T = 1 the gradients of q and k are exactly 0 on the CPU (one key: constant
//   softmax), while the device leaves fp32 noise of ~1e-7 from summing D and dP in other orders.
struct Tolerance {
  double output, gradient, rms, floor;
};
Tolerance tolerance_for(const AttentionCase& c, DType dtype) {
  if (dtype == DType::f32) {
    const double rtol = c.time >= 1000 ? 3e-5 : 1e-5;
    return {rtol, rtol, 0, 1e-6};
  }
  return {2e-2, 6e-2, 1e-2, 1e-6};
}

void expect_close(const Tensor& got, const Tensor& want, double rtol, double rms_bound,
                  double floor, const char* what) {
  ASSERT_TRUE(got.device().is_cuda()) << what << " left the GPU";
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const std::vector<double> g = got.to_doubles(), w = want.to_doubles();
  double square_sum = 0;
  for (double value : w) square_sum += value * value;
  const double rms = w.empty() ? 0.0 : std::sqrt(square_sum / double(w.size()));
  EXPECT_TRUE(testing::all_close(g, w, rtol, rtol * rms + floor)) << what;
  if (rms_bound > 0) {
    EXPECT_LE(relative_rms_error(g, w), rms_bound) << what;
  }
}

// The pattern of testing::expect_cuda_matches_cpu (inputs rounded to `dtype` first, CPU in f32,
// the same random output gradient on both sides, every gradient f32 on the device), with the
// separate output / gradient / RMS tolerances above.
void expect_matches(const AttentionCase& c, DType dtype, uint64_t seed) {
  SCOPED_TRACE(describe(c) + " in " + dtype_name(dtype));
  const Tolerance tol = tolerance_for(c, dtype);
  const Shape q_shape{c.batch, c.time, c.q_heads, c.qk_dim};
  const Shape k_shape{c.batch, c.time, c.kv_heads, c.qk_dim};
  const Shape v_shape{c.batch, c.time, c.kv_heads, c.v_dim};
  std::vector<Tensor> host;
  uint64_t input_seed = seed;
  for (const Shape& shape : {q_shape, k_shape, v_shape})
    host.push_back(
        testing::random_normal(shape, input_seed++, DType::f32).to(dtype).to(DType::f32));
  const Tensor seed_gradient =
      testing::random_normal({c.batch, c.time, c.q_heads, c.v_dim}, seed + 1000, DType::f32);
  const ops::AttentionOptions options{c.window, c.sink, c.scale};

  std::vector<autograd::Var> cpu, gpu;
  for (const Tensor& value : host) {
    cpu.push_back(autograd::leaf(value.clone(), true));
    gpu.push_back(autograd::leaf(value.to(dtype).to(Device::cuda(0)), true));
  }
  autograd::Var cpu_out = ops::attention(cpu[0], cpu[1], cpu[2], options);
  autograd::Var gpu_out = ops::attention(gpu[0], gpu[1], gpu[2], options);
  EXPECT_EQ(gpu_out->value.dtype(), dtype);
  expect_close(gpu_out->value, cpu_out->value, tol.output, tol.rms, 0.0, "output");
  autograd::backward({cpu_out}, {seed_gradient});
  autograd::backward({gpu_out}, {seed_gradient.to(Device::cuda(0))});
  const char* names[] = {"dq", "dk", "dv"};
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(gpu[i]->grad.defined()) << names[i];
    EXPECT_EQ(gpu[i]->grad.dtype(), DType::f32) << names[i];
    expect_close(gpu[i]->grad, cpu[i]->grad, tol.gradient, tol.rms, tol.floor, names[i]);
  }
}

void expect_matches_in_both(const AttentionCase& c, uint64_t seed) {
  expect_matches(c, DType::f32, seed);
  expect_matches(c, DType::bf16, seed + 10);
}

TEST_F(CudaAttention, EveryHeadDimMatchesTheCpu) {
  // T = 130: two query tiles of 128 (forward) and two key tiles of 128 (backward), the second
  // almost empty; GQA ratio 2.
  uint64_t seed = 100;
  for (int64_t dim : {64, 72, 96, 128})
    expect_matches_in_both({2, 130, 4, 2, dim, dim}, seed += 20);
}

TEST_F(CudaAttention, VHeadDim128WithSmallerQkDims) {
  // The intra-hybrid block's 72 / 128 among them.
  uint64_t seed = 200;
  for (int64_t dim : {64, 72, 96}) expect_matches_in_both({2, 77, 4, 1, dim, 128}, seed += 20);
}

TEST_F(CudaAttention, GqaRatios) {
  expect_matches_in_both({2, 100, 3, 3, 64, 64}, 300);    // one query head per kv head
  expect_matches_in_both({1, 150, 8, 2, 128, 128}, 320);  // ratio 4
  expect_matches_in_both({2, 60, 8, 1, 96, 96}, 340);     // Hq = 8 Hk
}

TEST_F(CudaAttention, SlidingWindowWithSink) {
  expect_matches_in_both({2, 33, 4, 2, 64, 64, 4, 2}, 400);
  expect_matches_in_both({1, 200, 4, 2, 128, 128, 4, 2}, 420);
  expect_matches_in_both({2, 70, 2, 1, 72, 128, 16, 0}, 440);
  expect_matches_in_both({1, 200, 2, 2, 64, 64, 16, 0}, 460);
  // Query tiles whose window starts several key tiles in, with a sink spanning two 64-key tiles
  // (the skipped middle tiles), and keys whose visible rows end before T (backward walk).
  expect_matches_in_both({1, 600, 2, 1, 64, 64, 100, 70}, 480);
  // A window longer than T is plain causal; a sink longer than the window.
  expect_matches_in_both({1, 90, 2, 1, 64, 64, 500, 3}, 500);
  expect_matches_in_both({1, 90, 2, 1, 96, 96, 5, 40}, 520);
}

TEST_F(CudaAttention, TinyAndRaggedLengths) {
  uint64_t seed = 600;
  for (int64_t time : {1, 3, 33, 130, 300})
    expect_matches_in_both({2, time, 4, 2, 64, 64}, seed += 20);
  expect_matches_in_both({2, 3, 2, 1, 72, 128}, 720);
}

TEST_F(CudaAttention, CustomAndNegativeScale) {
  expect_matches_in_both({1, 50, 2, 1, 64, 64, 0, 0, 0.3}, 800);
  expect_matches_in_both({1, 70, 2, 2, 128, 128, 8, 1, -0.2}, 820);
}

TEST_F(CudaAttention, LongerSequenceHeadDim128) {
  // 8 query tiles, 8 key tiles: the backward walks up to 16 query blocks per key tile and sums
  // dQ over 8 key tiles with atomics.
  expect_matches_in_both({1, 1024, 2, 1, 128, 128}, 900);
}

// The saved LSE (not an op output) against the CPU twin's, through the kernel API.
TEST_F(CudaAttention, LogSumExpMatchesTheCpu) {
  const kernels::cpu::AttentionDims dims{2, 150, 4, 2, 72, 128};
  for (const kernels::cpu::AttentionMask mask :
       {kernels::cpu::AttentionMask{0, 0}, kernels::cpu::AttentionMask{20, 3}}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      SCOPED_TRACE(str("window ", mask.window, " sink ", mask.sink, " in ", dtype_name(dtype)));
      const Tensor q = testing::random_normal({2, 150, 4, 72}, 1000, dtype).to(DType::f32);
      const Tensor k = testing::random_normal({2, 150, 2, 72}, 1001, dtype).to(DType::f32);
      const Tensor v = testing::random_normal({2, 150, 2, 128}, 1002, dtype).to(DType::f32);
      const float scale = 1.0f / std::sqrt(72.0f);
      Tensor out = Tensor::empty({2, 150, 4, 128}, DType::f32);
      Tensor lse = Tensor::empty({2, 4, 150}, DType::f32);
      kernels::cpu::attention_forward<float>(q.data<float>(), k.data<float>(), v.data<float>(),
                                             out.data<float>(), lse.data<float>(), dims, mask,
                                             scale);
      const Tensor q_device = q.to(dtype).to(Device::cuda(0));
      const Tensor k_device = k.to(dtype).to(Device::cuda(0));
      const Tensor v_device = v.to(dtype).to(Device::cuda(0));
      Tensor out_device = Tensor::empty({2, 150, 4, 128}, dtype, Device::cuda(0));
      Tensor lse_device = Tensor::empty({2, 4, 150}, DType::f32, Device::cuda(0));
      kernels::cuda::attention_forward(
          q_device.raw_data(), k_device.raw_data(), v_device.raw_data(), out_device.raw_data(),
          lse_device.data<float>(), dims, mask, scale, dtype, compute_stream());
      // LSE is O(1-10); fp32 scores from bf16 inputs differ from the CPU's only by summation order.
      const double tolerance = dtype == DType::f32 ? 1e-5 : 1e-4;
      EXPECT_TRUE(
          testing::all_close(lse_device.to_doubles(), lse.to_doubles(), tolerance, tolerance));
      EXPECT_TRUE(testing::close_to_reference(out_device.to_doubles(), out.to_doubles(),
                                              dtype == DType::f32 ? 1e-5 : 2e-2));
    }
  }
}

// A view starting 2 bytes into its allocation (misaligned for 16-byte copies) gives the same
// result as an aligned copy of it.
TEST_F(CudaAttention, UnalignedViewsAreRealigned) {
  const int64_t numel = 1 * 40 * 2 * 64;
  const Tensor flat = testing::random_normal({numel + 1}, 1100, DType::bf16).to(Device::cuda(0));
  const Tensor view = flat.narrow(0, 1, numel).reshape({1, 40, 2, 64});
  const Tensor copy = view.clone();
  const Tensor k = testing::random_normal({1, 40, 1, 64}, 1101, DType::bf16).to(Device::cuda(0));
  const Tensor v = testing::random_normal({1, 40, 1, 64}, 1102, DType::bf16).to(Device::cuda(0));
  auto run = [&](const Tensor& q) {
    return ops::attention(autograd::leaf(q, false), autograd::leaf(k, false),
                          autograd::leaf(v, false))
        ->value.to_doubles();
  };
  EXPECT_EQ(run(view), run(copy));
}

TEST_F(CudaAttention, RejectsUnsupportedHeadDimsNamingShapes) {
  auto leaf = [](const Shape& shape) {
    return autograd::leaf(Tensor::zeros(shape, DType::bf16, Device::cuda(0)), false);
  };
  // Head dims without a bf16 tile run through the fp32 kernel; past 128 neither kernel has one.
  const std::string message = testing::error_of([&] {
    ops::attention(leaf({1, 4, 2, 160}), leaf({1, 4, 2, 160}), leaf({1, 4, 2, 160}));
  });
  EXPECT_NE(message.find("[1, 4, 2, 160]"), std::string::npos) << message;
  EXPECT_NE(message.find("bf16"), std::string::npos) << message;
}

}  // namespace
}  // namespace braid
