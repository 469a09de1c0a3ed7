// Tensor: a handle to storage plus dtype, shape, strides (in elements) and offset.
//
// Copying a Tensor copies the handle, not the data (like a shared_ptr). Views (narrow, reshape of
// a contiguous tensor) share storage; anything that moves data is explicit (clone, contiguous, to,
// copy_from).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/error.h"

namespace braid {

using Shape = std::vector<int64_t>;

// "[2, 3, 4]"
std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);

// Bytes from one allocator, freed when the last tensor using them goes away.
//
// With poisoning on (tests), every new storage is filled with 0xFF bytes, which read as NaN in f32
// and bf16 and as -1 in integer dtypes, so an output element a kernel forgot to write shows up.
void set_poison_new_storage(bool on);

class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: holds no storage

  // Uninitialized contiguous tensor.
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype, Device device = Device::cpu());
  // A CPU tensor holding `values` (converted to `dtype`).
  static Tensor from_values(const std::vector<double>& values, const Shape& shape,
                            DType dtype = DType::f32);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int64_t dim() const { return int64_t(shape_.size()); }
  // Size of dimension `d`; negative counts from the end.
  int64_t size(int64_t d) const;
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  // "f32[2, 3] on cpu"
  std::string describe() const;

  // Typed pointer to the first element (host or device address); checks the dtype.
  template <typename T>
  T* data() const {
    BRAID_CHECK(dtype_of<T> == dtype_, "tensor is ", dtype_name(dtype_), ", accessed as ",
                dtype_name(dtype_of<T>));
    return static_cast<T*>(raw_data());
  }
  void* raw_data() const;

  // Views sharing storage.
  Tensor narrow(int64_t d, int64_t start, int64_t length) const;
  Tensor reshape(const Shape& shape) const;  // contiguous only; one -1 is inferred
  Tensor select(int64_t d, int64_t index) const;  // drops dimension d

  // Copies and conversions (always new storage, contiguous).
  Tensor clone() const;
  Tensor contiguous() const;  // returns *this when already contiguous
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  // Copies `src` (same shape; any dtype, device and strides) into this tensor's elements.
  void copy_from(const Tensor& src);
  void fill_(double value);

  // Host copy of the elements as doubles, in row-major order (for tests and reports).
  std::vector<double> to_doubles() const;
  // Value of a one-element tensor.
  double item() const;

 private:
  std::shared_ptr<Storage> storage_;
  DType dtype_ = DType::f32;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
};

// Row-major strides of a contiguous tensor of `shape`.
Shape contiguous_strides(const Shape& shape);

}  // namespace braid
