#include "layers/ops/layout.h"

#include "autograd/tape.h"

namespace braid::ops {

namespace {

int64_t resolve_dim(const char* op, const Tensor& x, int64_t dim) {
  const int64_t axis = dim < 0 ? dim + x.dim() : dim;
  BRAID_CHECK(axis >= 0 && axis < x.dim(), op, ": dimension ", dim, " out of range for shape ",
              shape_str(x.shape()));
  return axis;
}

class ReshapeNode : public autograd::Node {
 public:
  explicit ReshapeNode(Shape input_shape) : input_shape_(std::move(input_shape)) {}
  const char* name() const override { return "reshape"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    return {grads[0].contiguous().reshape(input_shape_)};
  }

 private:
  Shape input_shape_;
};

class NarrowNode : public autograd::Node {
 public:
  NarrowNode(Shape input_shape, int64_t dim, int64_t start)
      : input_shape_(std::move(input_shape)), dim_(dim), start_(start) {}
  const char* name() const override { return "narrow"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    Tensor dx = Tensor::zeros(input_shape_, grads[0].dtype(), grads[0].device());
    dx.narrow(dim_, start_, grads[0].size(dim_)).copy_from(grads[0]);
    return {dx};
  }

 private:
  Shape input_shape_;
  int64_t dim_, start_;
};

// The parts' gradients land side by side in one input gradient, in the input's gradient dtype (an
// fp32 part is rounded on the way): no zero-filled full-size tensor per part and no sums of them,
// which is what a narrow() per part would cost.
class SplitNode : public autograd::Node {
 public:
  SplitNode(Shape input_shape, DType input_dtype, int64_t dim, std::vector<int64_t> sizes)
      : input_shape_(std::move(input_shape)), input_dtype_(input_dtype), dim_(dim), sizes_(std::move(sizes)) {}
  const char* name() const override { return "split"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const Tensor* any = nullptr;
    for (const Tensor& grad : grads)
      if (grad.defined()) any = &grad;
    if (!any) return {Tensor()};
    Tensor dx = Tensor::empty(input_shape_, autograd::grad_dtype(input_dtype_), any->device());
    int64_t start = 0;
    for (size_t i = 0; i < sizes_.size(); ++i) {
      Tensor slot = dx.narrow(dim_, start, sizes_[i]);
      if (grads[i].defined()) slot.copy_from(grads[i]);
      else slot.fill_(0);
      start += sizes_[i];
    }
    return {dx};
  }

 private:
  Shape input_shape_;
  DType input_dtype_;
  int64_t dim_;
  std::vector<int64_t> sizes_;
};

class CastNode : public autograd::Node {
 public:
  explicit CastNode(DType input_dtype) : input_dtype_(input_dtype) {}
  const char* name() const override { return "cast"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    return {grads[0].to(autograd::grad_dtype(input_dtype_))};
  }

 private:
  DType input_dtype_;
};

class ConcatNode : public autograd::Node {
 public:
  ConcatNode(std::vector<int64_t> sizes, int64_t dim) : sizes_(std::move(sizes)), dim_(dim) {}
  const char* name() const override { return "concat"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    std::vector<Tensor> parts;
    int64_t start = 0;
    for (int64_t size : sizes_) {
      parts.push_back(grads[0].narrow(dim_, start, size).contiguous());
      start += size;
    }
    return parts;
  }

 private:
  std::vector<int64_t> sizes_;
  int64_t dim_;
};

}  // namespace

autograd::Var reshape(const autograd::Var& x, const Shape& shape) {
  Tensor out = x->value.contiguous().reshape(shape);
  return autograd::record(std::make_shared<ReshapeNode>(x->value.shape()), {x}, out);
}

autograd::Var narrow(const autograd::Var& x, int64_t dim, int64_t start, int64_t length) {
  const int64_t axis = resolve_dim("narrow", x->value, dim);
  Tensor out = x->value.narrow(axis, start, length).contiguous();
  if (out.storage() == x->value.storage()) out = out.clone();  // a private copy, never an alias
  return autograd::record(std::make_shared<NarrowNode>(x->value.shape(), axis, start), {x}, out);
}

std::vector<autograd::Var> split(const autograd::Var& x, int64_t dim, const std::vector<int64_t>& sizes) {
  const int64_t axis = resolve_dim("split", x->value, dim);
  int64_t total = 0;
  for (int64_t size : sizes) {
    BRAID_CHECK(size >= 0, "split: negative part size ", size);
    total += size;
  }
  BRAID_CHECK(total == x->value.size(axis), "split: parts of ", total, " elements along dimension ", axis,
              " of shape ", shape_str(x->value.shape()));
  std::vector<Tensor> parts;
  int64_t start = 0;
  for (int64_t size : sizes) {
    parts.push_back(x->value.narrow(axis, start, size).clone());
    start += size;
  }
  return autograd::record(std::make_shared<SplitNode>(x->value.shape(), x->value.dtype(), axis, sizes), {x},
                          parts);
}

autograd::Var concat(const std::vector<autograd::Var>& parts, int64_t dim) {
  BRAID_CHECK(!parts.empty(), "concat of no tensors");
  const Tensor& first = parts[0]->value;
  const int64_t axis = resolve_dim("concat", first, dim);
  Shape shape = first.shape();
  shape[size_t(axis)] = 0;
  std::vector<int64_t> sizes;
  for (const autograd::Var& part : parts) {
    const Tensor& value = part->value;
    Shape expected = first.shape();
    expected[size_t(axis)] = value.dim() == first.dim() ? value.size(axis) : -1;
    BRAID_CHECK(value.shape() == expected, "concat: part has shape ", shape_str(value.shape()),
                " but the first part has shape ", shape_str(first.shape()), " (joining dimension ",
                axis, ")");
    BRAID_CHECK(value.dtype() == first.dtype() && value.device() == first.device(), "concat: part is ",
                value.describe(), " but the first part is ", first.describe());
    sizes.push_back(value.size(axis));
    shape[size_t(axis)] += value.size(axis);
  }
  Tensor out = Tensor::empty(shape, first.dtype(), first.device());
  int64_t start = 0;
  for (const autograd::Var& part : parts) {
    out.narrow(axis, start, part->value.size(axis)).copy_from(part->value);
    start += part->value.size(axis);
  }
  return autograd::record(std::make_shared<ConcatNode>(sizes, axis), parts, out);
}

autograd::Var cast(const autograd::Var& x, DType dtype) {
  BRAID_CHECK(is_floating(x->value.dtype()) && is_floating(dtype), "cast: ", x->value.describe(),
              " to ", dtype_name(dtype), ": only floating dtypes are cast with a gradient");
  if (x->value.dtype() == dtype) return x;
  return autograd::record(std::make_shared<CastNode>(x->value.dtype()), {x}, x->value.to(dtype));
}

int64_t row_stride(const Tensor& x) {
  if (x.dim() == 0) return -1;
  const int64_t last = x.dim() - 1;
  if (x.size(last) != 1 && x.strides()[size_t(last)] != 1) return -1;
  int64_t stride = -1, next = 0;  // the row stride, and the stride the next outer dimension must have
  for (int64_t d = last - 1; d >= 0; --d) {
    const int64_t size = x.size(d), step = x.strides()[size_t(d)];
    if (size == 1) continue;  // never stepped over
    if (stride >= 0 && step != next) return -1;
    if (stride < 0) stride = step;
    next = step * size;
  }
  return stride >= 0 ? stride : x.size(last);  // a single row
}

Tensor rows_in_place(const Tensor& x, int64_t alignment) {
  if (x.is_contiguous()) return x;
  const int64_t stride = row_stride(x);
  const int64_t bytes = int64_t(dtype_size(x.dtype()));
  const bool aligned = int64_t(reinterpret_cast<uintptr_t>(x.raw_data()) % uintptr_t(alignment)) == 0 &&
                       stride * bytes % alignment == 0;
  return stride >= 0 && aligned ? x : x.contiguous();
}

}  // namespace braid::ops
