#include "runtime/tensor.h"

#include <atomic>
#include <cstring>

#include "runtime/device_copy.h"

namespace braid {

std::string shape_str(const Shape& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t count = 1;
  for (int64_t size : shape) count *= size;
  return count;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return strides;
}

namespace {
std::atomic<bool> poison_new_storage{false};
}  // namespace

void set_poison_new_storage(bool on) { poison_new_storage = on; }

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  allocator_ = &allocator_for(device);
  data_ = allocator_->allocate(bytes);
  if (!poison_new_storage || bytes == 0) return;
  if (device.is_cpu()) {
    std::memset(data_, 0xFF, bytes);
    return;
  }
#ifdef BRAID_CUDA
  cuda_set_device(device.index);
  cuda_fill_bytes(data_, 0xFF, bytes);
#endif
}

Storage::~Storage() { allocator_->deallocate(data_); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t size : shape) BRAID_CHECK(size >= 0, "negative size in shape ", shape_str(shape));
  BRAID_CHECK(shape.size() <= size_t(kMaxDims), "tensors have at most ", kMaxDims,
              " dimensions, got ", shape_str(shape));
  Tensor tensor;
  tensor.storage_ = std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype), device);
  tensor.dtype_ = dtype;
  tensor.shape_ = shape;
  tensor.strides_ = contiguous_strides(shape);
  return tensor;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor tensor = empty(shape, dtype, device);
  tensor.fill_(value);
  return tensor;
}

Tensor Tensor::from_values(const std::vector<double>& values, const Shape& shape, DType dtype) {
  BRAID_CHECK(int64_t(values.size()) == shape_numel(shape), "from_values: ", values.size(),
              " values for shape ", shape_str(shape));
  Tensor source;
  source.storage_ = std::make_shared<Storage>(values.size() * sizeof(double), Device::cpu());
  std::memcpy(source.storage_->data(), values.data(), values.size() * sizeof(double));
  source.dtype_ = DType::f64;
  source.shape_ = shape;
  source.strides_ = contiguous_strides(shape);
  return source.to(dtype);
}

int64_t Tensor::size(int64_t d) const {
  int64_t index = d < 0 ? d + dim() : d;
  BRAID_CHECK(index >= 0 && index < dim(), "dimension ", d, " out of range for shape ",
              shape_str(shape_));
  return shape_[size_t(index)];
}

bool Tensor::is_contiguous() const {
  // Dimensions of size 1 may carry any stride: they are never stepped over.
  int64_t expected = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] != 1 && strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

std::string Tensor::describe() const {
  return str(dtype_name(dtype_), shape_str(shape_), " on ", device().to_string());
}

void* Tensor::raw_data() const {
  BRAID_CHECK(defined(), "access to an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * int64_t(dtype_size(dtype_));
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  int64_t index = d < 0 ? d + dim() : d;
  BRAID_CHECK(index >= 0 && index < dim(), "narrow: dimension ", d, " out of range for shape ",
              shape_str(shape_));
  BRAID_CHECK(start >= 0 && length >= 0 && start + length <= shape_[size_t(index)], "narrow: [",
              start, ", ", start + length, ") out of range for dimension ", d, " of shape ",
              shape_str(shape_));
  Tensor view = *this;
  view.shape_[size_t(index)] = length;
  view.offset_ += start * strides_[size_t(index)];
  return view;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  int64_t axis = d < 0 ? d + dim() : d;
  Tensor view = narrow(axis, index, 1);
  view.shape_.erase(view.shape_.begin() + axis);
  view.strides_.erase(view.strides_.begin() + axis);
  return view;
}

Tensor Tensor::reshape(const Shape& shape) const {
  BRAID_CHECK(is_contiguous(), "reshape of a non-contiguous tensor ", describe(),
              ": call contiguous() first");
  Shape resolved = shape;
  int64_t known = 1, inferred = -1;
  for (size_t i = 0; i < resolved.size(); ++i) {
    if (resolved[i] == -1) {
      BRAID_CHECK(inferred < 0, "reshape: more than one -1 in ", shape_str(shape));
      inferred = int64_t(i);
    } else {
      known *= resolved[i];
    }
  }
  if (inferred >= 0) {
    BRAID_CHECK(known > 0 && numel() % known == 0, "reshape: cannot view ", shape_str(shape_),
                " as ", shape_str(shape));
    resolved[size_t(inferred)] = numel() / known;
  }
  BRAID_CHECK(shape_numel(resolved) == numel(), "reshape: cannot view ", shape_str(shape_), " as ",
              shape_str(shape));
  Tensor view = *this;
  view.shape_ = resolved;
  view.strides_ = contiguous_strides(resolved);
  return view;
}

namespace {

StridedView view_of(const Tensor& tensor) {
  StridedView view{tensor.raw_data(), tensor.dtype(), {}};
  for (int64_t i = 0; i < tensor.dim(); ++i) view.strides[i] = tensor.strides()[size_t(i)];
  return view;
}

CopyShape copy_shape_of(const Tensor& tensor) {
  CopyShape shape{int(tensor.dim()), {}, tensor.numel()};
  for (int64_t i = 0; i < tensor.dim(); ++i) shape.sizes[i] = tensor.shape()[size_t(i)];
  return shape;
}

}  // namespace

void Tensor::copy_from(const Tensor& src) {
  BRAID_CHECK(defined() && src.defined(), "copy_from: undefined tensor");
  BRAID_CHECK(shape_ == src.shape_, "copy_from: destination has shape ", shape_str(shape_),
              " but source has shape ", shape_str(src.shape_));
  if (numel() == 0) return;
  const Device from = src.device(), to = device();
  if (from.is_cpu() && to.is_cpu()) {
    host_copy(view_of(*this), view_of(src), copy_shape_of(*this));
    return;
  }
#ifdef BRAID_CUDA
  if (from == to) {
    cuda_set_device(to.index);
    cuda_copy(view_of(*this), view_of(src), copy_shape_of(*this));
    return;
  }
  // Across devices: make the source contiguous in the destination's dtype on its own device, move
  // the bytes, then scatter into the destination's strides on its device.
  Tensor staged = src.to(dtype_).contiguous();
  Tensor landed = is_contiguous() ? *this : Tensor::empty(shape_, dtype_, to);
  if (to.is_cuda()) cuda_set_device(to.index);
  else cuda_set_device(from.index);
  cuda_copy_bytes(landed.raw_data(), staged.raw_data(), nbytes());
  if (landed.raw_data() != raw_data()) copy_from(landed);
#else
  BRAID_FAIL("copy from ", from.to_string(), " to ", to.to_string(),
             ": this build has no CUDA support (build with nvcc present)");
#endif
}

void Tensor::fill_(double value) {
  if (numel() == 0) return;
  if (device().is_cpu()) {
    host_fill(view_of(*this), copy_shape_of(*this), value);
    return;
  }
#ifdef BRAID_CUDA
  cuda_set_device(device().index);
  cuda_fill(view_of(*this), copy_shape_of(*this), value);
#endif
}

Tensor Tensor::clone() const {
  Tensor copy = empty(shape_, dtype_, device());
  copy.copy_from(*this);
  return copy;
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::to(Device target) const {
  if (device() == target) return *this;
  Tensor moved = empty(shape_, dtype_, target);
  moved.copy_from(*this);
  return moved;
}

Tensor Tensor::to(DType target) const {
  if (dtype_ == target) return *this;
  Tensor converted = empty(shape_, target, device());
  converted.copy_from(*this);
  return converted;
}

std::vector<double> Tensor::to_doubles() const {
  Tensor host = to(Device::cpu()).to(DType::f64).contiguous();
  const double* values = host.data<double>();
  return std::vector<double>(values, values + numel());
}

double Tensor::item() const {
  BRAID_CHECK(numel() == 1, "item() of a tensor with shape ", shape_str(shape_));
  return to_doubles()[0];
}

}  // namespace braid
