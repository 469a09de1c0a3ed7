#include "train/optimizer.h"

#include <cmath>
#include <cstring>
#include <map>
#include <type_traits>

#include "kernels/cpu/adamw.h"
#include "kernels/cpu/elementwise.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/grad_norm.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid {

namespace {

#ifdef BRAID_CUDA
// A table of plain entries copied to `device` (as the bytes of an i64 tensor) for a multi-tensor
// launch. The copy is synchronous, so the host vector may go away right after.
template <typename Entry>
Tensor upload_table(const std::vector<Entry>& entries, Device device) {
  static_assert(std::is_trivially_copyable_v<Entry>);
  const size_t bytes = entries.size() * sizeof(Entry);
  Tensor host = Tensor::empty({int64_t((bytes + 7) / 8)}, DType::i64);
  std::memcpy(host.raw_data(), entries.data(), bytes);
  return host.to(device);
}

// A CUDA gradient the multi-tensor kernels can read as numel flat f32 elements.
const Tensor& checked_cuda_grad(const Parameter& parameter) {
  const Tensor& grad = parameter.variable->grad;
  BRAID_CHECK(grad.dtype() == DType::f32 && grad.device() == parameter.variable->value.device() &&
                  grad.is_contiguous() && grad.shape() == parameter.variable->value.shape(),
              "AdamW: the gradient of ", parameter.name, " is ", grad.describe(),
              (grad.is_contiguous() ? "" : " (not contiguous)"), "; expected f32",
              shape_str(parameter.variable->value.shape()), " on ",
              parameter.variable->value.device().to_string());
  return grad;
}
#endif

}  // namespace

AdamW::AdamW(std::vector<Parameter> parameters, const AdamWConfig& config) : config_(config) {
  for (Parameter& parameter : parameters) {
    const Tensor& value = parameter.variable->value;
    if (slots_.empty()) device_ = value.device();
    BRAID_CHECK(value.device() == device_, "AdamW: parameter ", parameter.name, " is on ",
                value.device().to_string(), " but ", slots_.front().parameter.name, " is on ",
                device_.to_string(), "; one optimizer updates the parameters of one device");
    if (value.device().is_cuda())
      BRAID_CHECK(value.dtype() == DType::f32 && value.is_contiguous(), "AdamW: parameter ",
                  parameter.name, " is ", value.describe(),
                  (value.is_contiguous() ? "" : " (not contiguous)"),
                  "; CUDA parameters are contiguous f32 master weights");
    // Moments beside the parameter, in its dtype (fp32 on CUDA).
    Tensor m = Tensor::zeros(value.shape(), value.dtype(), value.device());
    Tensor v = Tensor::zeros(value.shape(), value.dtype(), value.device());
    slots_.push_back({std::move(parameter), m, v});
  }
}

double AdamW::grad_norm() const { return std::sqrt(grad_sum_of_squares()); }

double AdamW::grad_sum_of_squares() const {
#ifdef BRAID_CUDA
  if (device_.is_cuda()) return cuda_grad_sum_of_squares();
#endif
  double total = 0;
  for (const Slot& slot : slots_) {
    const Tensor& grad = slot.parameter.variable->grad;
    if (!grad.defined()) continue;
    if (grad.dtype() == DType::f64) total += kernels::cpu::sum_of_squares(grad.data<double>(), grad.numel());
    else total += kernels::cpu::sum_of_squares(grad.data<float>(), grad.numel());
  }
  return total;
}

void AdamW::clip(double norm, double max_norm) {
  if (!(norm > max_norm) || max_norm <= 0) return;
  const double factor = max_norm / norm;
  if (device_.is_cuda()) {
    pending_clip_ *= factor;  // the fused step scales each gradient element as it reads it
    return;
  }
  for (Slot& slot : slots_) {
    Tensor& grad = slot.parameter.variable->grad;
    if (!grad.defined()) continue;
    if (grad.dtype() == DType::f64) {
      kernels::cpu::scale(grad.data<double>(), factor, grad.data<double>(), grad.numel());
    } else {
      kernels::cpu::scale(grad.data<float>(), float(factor), grad.data<float>(), grad.numel());
    }
  }
}

void AdamW::step(double lr) {
  steps_ += 1;
#ifdef BRAID_CUDA
  if (device_.is_cuda()) {
    cuda_step(lr);
    pending_clip_ = 1.0;
    return;
  }
#endif
  for (Slot& slot : slots_) {
    autograd::Variable& variable = *slot.parameter.variable;
    if (!variable.grad.defined()) continue;  // unused this step (e.g. an MoE expert no token chose)
    const double decay = slot.parameter.weight_decay ? config_.weight_decay : 0.0;
    const int64_t n = variable.value.numel();
    if (variable.value.dtype() == DType::f64) {
      kernels::cpu::adamw_step(variable.value.data<double>(), variable.grad.data<double>(), slot.m.data<double>(),
                               slot.v.data<double>(), n, lr, config_.beta1, config_.beta2, config_.eps, decay, steps_);
    } else {
      kernels::cpu::adamw_step(variable.value.data<float>(), variable.grad.data<float>(), slot.m.data<float>(),
                               slot.v.data<float>(), n, lr, config_.beta1, config_.beta2, config_.eps, decay, steps_);
    }
  }
}

void AdamW::zero_grad() {
  for (Slot& slot : slots_) slot.parameter.variable->grad = Tensor();
  pending_clip_ = 1.0;
}

#ifdef BRAID_CUDA
double AdamW::cuda_grad_sum_of_squares() const {
  using kernels::cuda::GradNormChunk;
  using kernels::cuda::GradNormTensor;
  using kernels::cuda::kGradNormChunkElements;
  std::vector<GradNormTensor> tensors;
  std::vector<GradNormChunk> chunks;
  for (const Slot& slot : slots_) {
    if (!slot.parameter.variable->grad.defined()) continue;  // counts as zero
    const Tensor& grad = checked_cuda_grad(slot.parameter);
    const int32_t index = int32_t(tensors.size());
    tensors.push_back({grad.data<float>(), grad.numel()});
    for (int64_t c = 0; c * kGradNormChunkElements < grad.numel(); ++c)
      chunks.push_back({index, int32_t(c)});
  }
  if (chunks.empty()) return 0.0;
  cuda_set_device(device_.index);
  const Tensor tensor_table = upload_table(tensors, device_), chunk_table = upload_table(chunks, device_);
  const int64_t count = int64_t(chunks.size());
  Tensor workspace = Tensor::empty({int64_t(kernels::cuda::grad_norm_workspace_doubles(count))},
                                   DType::f64, device_);
  Tensor sum_of_squares = Tensor::empty({1}, DType::f64, device_);
  kernels::cuda::grad_norm_squared(static_cast<const GradNormTensor*>(tensor_table.raw_data()),
                                   static_cast<const GradNormChunk*>(chunk_table.raw_data()), count,
                                   workspace.data<double>(), sum_of_squares.data<double>(),
                                   compute_stream());
  return sum_of_squares.item();  // the step's one read-back
}

void AdamW::cuda_step(double lr) {
  using kernels::cuda::AdamwChunk;
  using kernels::cuda::AdamwTensor;
  using kernels::cuda::kAdamwChunkElements;
  std::vector<AdamwTensor> tensors;
  std::vector<AdamwChunk> chunks;
  for (Slot& slot : slots_) {
    autograd::Variable& variable = *slot.parameter.variable;
    if (!variable.grad.defined()) continue;  // unused this step (e.g. an MoE expert no token chose)
    const Tensor& grad = checked_cuda_grad(slot.parameter);
    const int32_t index = int32_t(tensors.size());
    tensors.push_back({variable.value.data<float>(), grad.data<float>(), slot.m.data<float>(),
                       slot.v.data<float>(), variable.value.numel(),
                       slot.parameter.weight_decay ? 1 : 0});
    for (int64_t c = 0; c * kAdamwChunkElements < variable.value.numel(); ++c)
      chunks.push_back({index, int32_t(c)});
  }
  if (chunks.empty()) return;
  const kernels::cuda::AdamwScalars scalars =
      kernels::cuda::adamw_scalars(lr, config_.beta1, config_.beta2, config_.eps,
                                   config_.weight_decay, steps_, pending_clip_);
  cuda_set_device(device_.index);
  const Tensor tensor_table = upload_table(tensors, device_), chunk_table = upload_table(chunks, device_);
  kernels::cuda::adamw_step(static_cast<const AdamwTensor*>(tensor_table.raw_data()),
                            static_cast<const AdamwChunk*>(chunk_table.raw_data()),
                            int64_t(chunks.size()), scalars, compute_stream());
}
#endif

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> named;
  for (const Slot& slot : slots_) {
    named.emplace_back("m." + slot.parameter.name, slot.m);
    named.emplace_back("v." + slot.parameter.name, slot.v);
  }
  return named;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) {
  std::map<std::string, Tensor> by_name(state.begin(), state.end());
  for (Slot& slot : slots_) {
    for (auto [prefix, target] : {std::pair{"m.", &slot.m}, std::pair{"v.", &slot.v}}) {
      auto found = by_name.find(prefix + slot.parameter.name);
      BRAID_CHECK(found != by_name.end(), "optimizer state has no ", prefix, slot.parameter.name);
      BRAID_CHECK(found->second.shape() == target->shape(), "optimizer state ", prefix, slot.parameter.name,
                  " has shape ", shape_str(found->second.shape()), ", the parameter has ",
                  shape_str(target->shape()));
      target->copy_from(found->second);
    }
  }
  steps_ = steps;
}

}  // namespace braid
