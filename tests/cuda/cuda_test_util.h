// Shared by the CUDA suites: skip (saying why) when no device is present, poison fresh memory, and
// compare an op on the GPU against the same op on the CPU backend, forward and every gradient.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "runtime/device.h"
#include "runtime/tensor.h"
#include "tests/test_util.h"

namespace braid::testing {

// Every storage made during a CUDA test starts as 0xFF bytes (NaN in f32 and bf16), so an output
// element a kernel forgot to write fails the comparison instead of passing by luck.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device on this machine; CUDA tests need a GPU";
    set_poison_new_storage(true);
  }
  void TearDown() override { set_poison_new_storage(false); }
};

// |got - want| <= rtol * (|want| + rms(want)) for every element: relative where values are large,
// relative to the tensor's typical size where they cancel to near zero. Reports the worst element.
inline ::testing::AssertionResult close_to_reference(const std::vector<double>& got,
                                                     const std::vector<double>& want, double rtol) {
  double square_sum = 0;
  for (double value : want) square_sum += value * value;
  const double rms = want.empty() ? 0.0 : std::sqrt(square_sum / double(want.size()));
  return all_close(got, want, rtol, rtol * rms);
}

// One input of an op under test, given on the host.
struct OpInput {
  enum class Role {
    activation,  // floating: f32 on the CPU, the activation dtype (f32 or bf16) on the GPU
    parameter,   // floating: f32 on both (fp32 master weights)
    constant,    // any dtype (ids, masks): the same values on both, no gradient
  };
  Tensor value;  // f32 for activations and parameters
  Role role = Role::activation;
  bool requires_grad = true;  // for activations and parameters
};

using OpUnderTest = std::function<std::vector<autograd::Var>(const std::vector<autograd::Var>&)>;

// Runs `op` on the CPU in f32 and on cuda:0 with activations in `dtype` (f32 or bf16), seeds each
// floating output with the same random gradient, runs backward on both, and checks every output and
// every input gradient of the GPU run against the CPU's with close_to_reference(rtol); integer
// outputs must be equal. Activations are rounded to `dtype` first, so both runs read the same
// numbers and the comparison measures only the kernels' own rounding. The output gradients (seeds)
// reach the GPU in the activation dtype, as a model's backward hands them over (Seeds::f32: in f32
// whatever the activations), rounded the same for both runs.
enum class Seeds { activation_dtype, f32 };
inline void expect_cuda_matches_cpu(const OpUnderTest& op, const std::vector<OpInput>& inputs,
                                    DType dtype, double rtol, uint64_t seed,
                                    Seeds seeds_in = Seeds::activation_dtype) {
  const DType seed_dtype = seeds_in == Seeds::f32 ? DType::f32 : dtype;
  std::vector<autograd::Var> cpu_inputs, gpu_inputs;
  for (const OpInput& input : inputs) {
    Tensor host = input.value;
    const bool floating = is_floating(host.dtype());
    if (input.role == OpInput::Role::activation) host = host.to(dtype).to(DType::f32);
    const bool grad = floating && input.role != OpInput::Role::constant && input.requires_grad;
    cpu_inputs.push_back(autograd::leaf(host.clone(), grad));
    Tensor device_value = input.role == OpInput::Role::activation
                              ? host.to(dtype).to(Device::cuda(0))
                              : host.to(Device::cuda(0));
    gpu_inputs.push_back(autograd::leaf(device_value, grad));
  }
  // Each backend runs forward then backward before the other starts: backward consumes the tape.
  const std::vector<autograd::Var> cpu_outputs = op(cpu_inputs);
  std::vector<autograd::Var> cpu_roots;
  std::vector<Tensor> seeds;
  for (size_t i = 0; i < cpu_outputs.size(); ++i) {
    const Tensor& want = cpu_outputs[i]->value;
    if (!is_floating(want.dtype()) || !cpu_outputs[i]->requires_grad) continue;
    cpu_roots.push_back(cpu_outputs[i]);
    seeds.push_back(random_normal(want.shape(), seed + 1000 + i, DType::f32).to(seed_dtype).to(DType::f32));
  }
  if (!cpu_roots.empty()) autograd::backward(cpu_roots, seeds);

  const std::vector<autograd::Var> gpu_outputs = op(gpu_inputs);
  ASSERT_EQ(cpu_outputs.size(), gpu_outputs.size());
  std::vector<autograd::Var> gpu_roots;
  std::vector<Tensor> gpu_seeds;
  for (size_t i = 0; i < cpu_outputs.size(); ++i) {
    const Tensor& want = cpu_outputs[i]->value;
    const Tensor& got = gpu_outputs[i]->value;
    ASSERT_TRUE(got.device().is_cuda()) << "output " << i << " left the GPU";
    ASSERT_EQ(got.shape(), want.shape()) << "output " << i;
    if (!is_floating(want.dtype())) {
      EXPECT_EQ(got.to_doubles(), want.to_doubles()) << "output " << i;
      continue;
    }
    EXPECT_TRUE(close_to_reference(got.to_doubles(), want.to_doubles(), rtol)) << "output " << i;
    if (!cpu_outputs[i]->requires_grad) continue;
    ASSERT_TRUE(gpu_outputs[i]->requires_grad) << "output " << i << " is not differentiable on the GPU";
    gpu_roots.push_back(gpu_outputs[i]);
    gpu_seeds.push_back(seeds[gpu_seeds.size()].to(seed_dtype).to(Device::cuda(0)));
  }
  if (gpu_roots.empty()) return;
  autograd::backward(gpu_roots, gpu_seeds);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!cpu_inputs[i]->requires_grad) continue;
    const Tensor& want = cpu_inputs[i]->grad;
    const Tensor& got = gpu_inputs[i]->grad;
    if (!want.defined()) {
      EXPECT_FALSE(got.defined()) << "input " << i << " got a gradient on the GPU only";
      continue;
    }
    ASSERT_TRUE(got.defined()) << "input " << i << " got no gradient on the GPU";
    ASSERT_TRUE(got.device().is_cuda()) << "gradient of input " << i << " left the GPU";
    // In the value's dtype, or f32 where the op computes it in f32 (autograd/variable.h).
    const DType value_dtype = gpu_inputs[i]->value.dtype();
    EXPECT_TRUE(got.dtype() == autograd::grad_dtype(value_dtype) || got.dtype() == DType::f32)
        << "gradient of input " << i << " is " << dtype_name(got.dtype()) << " for a " << dtype_name(value_dtype)
        << " value";
    EXPECT_TRUE(close_to_reference(got.to_doubles(), want.to_doubles(), rtol))
        << "gradient of input " << i;
  }
}

}  // namespace braid::testing
