// The CUDA optimizer against the CPU one: AdamW steps through the fused multi-tensor kernel on
// parameters of mixed sizes (one element, odd sizes, sizes across the kernels' chunk boundaries, a
// misaligned gradient, a parameter without a gradient, decay on and off), the global gradient norm,
// clipping folded into the step, non-finite norms, and the constructor's checks.
#include <cmath>
#include <limits>

#include "autograd/variable.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_util.h"
#include "train/optimizer.h"

namespace braid {
namespace {

using testing::close_to_reference;
using testing::error_of;
using testing::random_normal;

using CudaAdamW = testing::CudaTest;

struct ParameterSpec {
  Shape shape;
  bool decay;
  bool has_grad;
  bool misaligned_grad = false;  // the GPU gradient starts 4 bytes past an aligned address
};

const ParameterSpec kSpecs[] = {
    {{1}, false, true},
    {{7}, true, true},
    {{3, 5}, true, true, true},
    {{1000}, false, true},
    {{11}, true, false},           // never gets a gradient: must stay as it is
    {{65537}, true, true},         // 32768-element chunks: 2 whole ones and 1 element
    {{129, 257}, true, true},      // 33153: a ragged second chunk
    {{4099}, false, true, true},   // misaligned and odd: the scalar path
    {{32768 * 3 + 5}, true, true, true},  // misaligned across several chunks
};

struct Twins {
  std::vector<Parameter> cpu, gpu;
};

Twins make_parameters(uint64_t seed) {
  Twins twins;
  int index = 0;
  for (const ParameterSpec& spec : kSpecs) {
    const Tensor value = random_normal(spec.shape, seed + uint64_t(index), DType::f32);
    const std::string name = str("p", index++);
    twins.cpu.push_back({name, autograd::leaf(value.clone(), true, name), Init{}, spec.decay});
    twins.gpu.push_back({name, autograd::leaf(value.to(Device::cuda(0)), true, name), Init{}, spec.decay});
  }
  return twins;
}

// The same gradient on both sides; on the GPU optionally as a view one element into its storage.
void set_gradients(Twins& twins, uint64_t seed, double stddev) {
  for (size_t i = 0; i < std::size(kSpecs); ++i) {
    const ParameterSpec& spec = kSpecs[i];
    if (!spec.has_grad) continue;
    const Tensor grad = random_normal(spec.shape, seed + i, DType::f32, stddev);
    twins.cpu[i].variable->grad = grad.clone();
    if (spec.misaligned_grad) {
      const int64_t n = shape_numel(spec.shape);
      Tensor storage = Tensor::empty({n + 1}, DType::f32, Device::cuda(0));
      Tensor view = storage.narrow(0, 1, n).reshape(spec.shape);
      view.copy_from(grad);
      twins.gpu[i].variable->grad = view;
    } else {
      twins.gpu[i].variable->grad = grad.to(Device::cuda(0));
    }
  }
}

void expect_same_state(const Twins& twins, const AdamW& cpu, const AdamW& gpu, const std::string& when) {
  for (size_t i = 0; i < twins.cpu.size(); ++i) {
    EXPECT_TRUE(close_to_reference(twins.gpu[i].variable->value.to_doubles(),
                                   twins.cpu[i].variable->value.to_doubles(), 1e-6))
        << "parameter " << i << " " << when;
    EXPECT_TRUE(twins.gpu[i].variable->value.device().is_cuda());
  }
  const auto cpu_state = cpu.state(), gpu_state = gpu.state();
  ASSERT_EQ(cpu_state.size(), gpu_state.size());
  for (size_t i = 0; i < cpu_state.size(); ++i) {
    EXPECT_EQ(gpu_state[i].first, cpu_state[i].first);
    EXPECT_TRUE(gpu_state[i].second.device().is_cuda()) << gpu_state[i].first;
    EXPECT_EQ(gpu_state[i].second.dtype(), DType::f32);
    EXPECT_TRUE(close_to_reference(gpu_state[i].second.to_doubles(), cpu_state[i].second.to_doubles(), 1e-6))
        << gpu_state[i].first << " " << when;
  }
}

TEST_F(CudaAdamW, StepsNormAndClipMatchCpu) {
  Twins twins = make_parameters(6100);
  const std::vector<double> untouched = twins.cpu[4].variable->value.to_doubles();
  const std::vector<double> first_before = twins.cpu[0].variable->value.to_doubles();
  const AdamWConfig config{0.9, 0.95, 1e-8, 0.1};
  AdamW cpu(twins.cpu, config), gpu(twins.gpu, config);
  const double lrs[] = {3e-2, 1e-2, 5e-2, 2e-3};
  for (int step = 1; step <= 4; ++step) {
    const std::string when = str("after step ", step);
    cpu.zero_grad();
    gpu.zero_grad();
    // Step 2 has tiny gradients, where eps matters against sqrt(v_hat).
    set_gradients(twins, 6200 + uint64_t(step) * 100, step == 2 ? 1e-7 : 1.0);
    const double cpu_norm = cpu.grad_norm(), gpu_norm = gpu.grad_norm();
    EXPECT_NEAR(gpu_norm, cpu_norm, 1e-10 * cpu_norm) << when;
    if (step == 3) {
      // Clip to a third of the norm: the CPU scales the gradients, the GPU folds it into the step.
      cpu.clip(cpu_norm, cpu_norm / 3);
      gpu.clip(gpu_norm, gpu_norm / 3);
    }
    if (step == 4) {
      // A norm below max_norm clips nothing.
      cpu.clip(cpu_norm, cpu_norm * 2);
      gpu.clip(gpu_norm, gpu_norm * 2);
    }
    cpu.step(lrs[step - 1]);
    gpu.step(lrs[step - 1]);
    EXPECT_EQ(gpu.steps(), step);
    expect_same_state(twins, cpu, gpu, when);
  }
  EXPECT_EQ(twins.gpu[4].variable->value.to_doubles(), untouched);
  // The parameters did move, so the comparisons above were not between two unchanged copies.
  EXPECT_NE(twins.gpu[0].variable->value.to_doubles(), first_before);
}

TEST_F(CudaAdamW, ClipThenZeroGradForgetsTheFactor) {
  Twins twins = make_parameters(6300);
  const AdamWConfig config{0.5, 0.999, 1e-8, 0.0};
  AdamW cpu(twins.cpu, config), gpu(twins.gpu, config);
  set_gradients(twins, 6400, 1.0);
  gpu.clip(gpu.grad_norm(), 1e-3);  // a refused step: zero_grad drops the pending clip
  gpu.zero_grad();
  set_gradients(twins, 6500, 1.0);
  cpu.step(1e-2);
  gpu.step(1e-2);
  expect_same_state(twins, cpu, gpu, "after one unclipped step");
}

TEST_F(CudaAdamW, NormOfNoGradientsIsZeroAndNonFiniteShows) {
  Twins twins = make_parameters(6600);
  AdamW gpu(twins.gpu, AdamWConfig{});
  EXPECT_EQ(gpu.grad_norm(), 0.0);
  const std::vector<double> before = twins.gpu[1].variable->value.to_doubles();
  gpu.step(1e-2);  // nothing to update
  EXPECT_EQ(twins.gpu[1].variable->value.to_doubles(), before);

  set_gradients(twins, 6700, 1.0);
  Tensor& grad = twins.gpu[5].variable->grad;
  Tensor host = grad.to(Device::cpu());
  host.data<float>()[40000] = std::numeric_limits<float>::infinity();
  grad = host.to(Device::cuda(0));
  EXPECT_TRUE(std::isinf(gpu.grad_norm()));
  host.data<float>()[40000] = std::numeric_limits<float>::quiet_NaN();
  grad = host.to(Device::cuda(0));
  EXPECT_TRUE(std::isnan(gpu.grad_norm()));
}

TEST_F(CudaAdamW, RejectsMixedDevicesAndBf16) {
  Twins twins = make_parameters(6800);
  std::vector<Parameter> mixed = {twins.gpu[0], twins.cpu[1]};
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "AdamW: parameter p1 is on cpu but p0 is on cuda:0; one optimizer updates the "
                      "parameters of one device",
                      error_of([&] { AdamW optimizer(mixed, AdamWConfig{}); }));
  std::vector<Parameter> half = {
      {"w", autograd::leaf(random_normal({4}, 6801, DType::bf16).to(Device::cuda(0)), true), Init{}, true}};
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "AdamW: parameter w is bf16[4] on cuda:0; CUDA parameters are contiguous f32 "
                      "master weights",
                      error_of([&] { AdamW optimizer(half, AdamWConfig{}); }));
}

}  // namespace
}  // namespace braid
