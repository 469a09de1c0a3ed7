#include "layers/ops/embedding.h"

#include "autograd/tape.h"
#include "kernels/cpu/embedding.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/embedding.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

// The multi-index of row-major flat position `flat` in `shape`, e.g. [1, 2].
Shape unravel(int64_t flat, const Shape& shape) {
  Shape index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = flat % shape[d];
    flat /= shape[d];
  }
  return index;
}

class EmbeddingNode : public autograd::Node {
 public:
  EmbeddingNode(Tensor ids, Shape table_shape, DType dtype)
      : ids_(std::move(ids)), table_shape_(std::move(table_shape)), dtype_(dtype) {}
  const char* name() const override { return "embedding"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
#ifdef BRAID_CUDA
    if (ids_.device().is_cuda()) {
      // A fresh f32 gradient: the table is also the tied LM head, whose gradient autograd adds.
      const Device device = ids_.device();
      if (!grad_outputs[0].defined())
        return {Tensor::zeros(table_shape_, DType::f32, device), Tensor()};
      cuda_set_device(device.index);
      Tensor d_out = grad_outputs[0].to(DType::f32).contiguous();
      Tensor d_table = Tensor::empty(table_shape_, DType::f32, device);
      const int64_t n = ids_.numel(), vocab = table_shape_[0], dim = table_shape_[1];
      Tensor workspace = Tensor::empty(
          {int64_t(kernels::cuda::embedding_backward_workspace_floats(n, vocab))}, DType::f32,
          device);
      kernels::cuda::embedding_backward(ids_.data<int64_t>(), d_out.data<float>(),
                                        d_table.data<float>(), workspace.data<float>(), n, vocab,
                                        dim, compute_stream());
      return {d_table, Tensor()};
    }
#endif
    Tensor d_out = grad_outputs[0].to(dtype_).contiguous();
    Tensor d_table = Tensor::empty(table_shape_, dtype_);
    dispatch_cpu_float("embedding", dtype_, [&]<typename T>() {
      kernels::cpu::embedding_backward<T>(ids_.data<int64_t>(), d_out.data<T>(), d_table.data<T>(),
                                          ids_.numel(), table_shape_[0], table_shape_[1]);
    });
    return {d_table, Tensor()};
  }

 private:
  Tensor ids_;  // i64, contiguous, on the table's device
  Shape table_shape_;
  DType dtype_;
};

}  // namespace

autograd::Var embedding(const autograd::Var& table, const autograd::Var& ids) {
  return embedding(table, ids, table->value.dtype());
}

autograd::Var embedding(const autograd::Var& table, const autograd::Var& ids, DType out_dtype) {
  const Tensor& table_value = table->value;
  check_dim("embedding", "table", table_value, 2);
  check_floating("embedding", "table", table_value);
  BRAID_CHECK(ids->value.defined() && !is_floating(ids->value.dtype()),
              "embedding: ids must be an integer tensor, got ",
              ids->value.defined() ? ids->value.describe() : "an undefined tensor",
              " (table has shape ", shape_str(table_value.shape()), ")");
  check_backend("embedding", "table", table_value);
  BRAID_CHECK(ids->value.device() == table_value.device(), "embedding: ids ",
              ids->value.describe(), " and table ", table_value.describe(),
              " must be on the same device");
  const bool on_cuda = table_value.device().is_cuda();
  // The table is a parameter: fp32 master weights on CUDA (DESIGN.md "Precision").
  if (on_cuda) {
    check_dtype("embedding", "table on CUDA", table_value, DType::f32);
    BRAID_CHECK(out_dtype == DType::f32 || out_dtype == DType::bf16, "embedding: rows on CUDA are f32 or bf16, not ",
                dtype_name(out_dtype));
  }
  const int64_t vocab = table_value.size(0), dim = table_value.size(1);
#ifdef BRAID_CUDA
  if (on_cuda) cuda_set_device(table_value.device().index);
#endif
  // The CUDA lookup reads i32 ids as they are when no backward needs them (a decode step's ids):
  // no conversion kernel.
  const bool taped = autograd::any_requires_grad({table, ids});
  const bool ids_as_given = on_cuda && !taped && ids->value.dtype() == DType::i32;
  // The ids the lookup reads: i64, or the given i32 ids.
  Tensor lookup_ids = ids_as_given ? ids->value.contiguous() : ids->value.to(DType::i64).contiguous();
  // The range check reads the ids on the host (for ids on CUDA, one copy per call). Not while a
  // CUDA graph records (a host read would break the capture): the inference session that captures
  // its decode step checks every token it is given on the host, and sampled ids are in range.
  bool check_range = true;
#ifdef BRAID_CUDA
  if (on_cuda) check_range = !compute_stream_capturing();
#endif
  if (check_range) {
    Tensor ids_host = lookup_ids.to(Device::cpu()).to(DType::i64);
    const int64_t* id = ids_host.data<int64_t>();
    for (int64_t i = 0; i < ids_host.numel(); ++i)
      BRAID_CHECK(id[i] >= 0 && id[i] < vocab, "embedding: token id ", id[i], " at position ",
                  shape_str(unravel(i, ids_host.shape())), " of ids with shape ",
                  shape_str(ids_host.shape()), " is out of range for a table of V = ", vocab,
                  " rows (shape ", shape_str(table_value.shape()), ")");
  }

  Tensor table_contiguous = table_value.contiguous();
  Shape out_shape = lookup_ids.shape();
  out_shape.push_back(dim);
  Tensor out = Tensor::empty(out_shape, on_cuda ? out_dtype : table_value.dtype(), table_value.device());
  if (on_cuda) {
    // (Reached only in CUDA builds: check_backend refuses CUDA tensors elsewhere.)
#ifdef BRAID_CUDA
    if (ids_as_given)
      kernels::cuda::embedding_forward(table_contiguous.data<float>(), lookup_ids.data<int32_t>(),
                                       out.raw_data(), lookup_ids.numel(), dim, out.dtype(),
                                       compute_stream());
    else
      kernels::cuda::embedding_forward(table_contiguous.data<float>(), lookup_ids.data<int64_t>(),
                                       out.raw_data(), lookup_ids.numel(), dim, out.dtype(),
                                       compute_stream());
#endif
  } else {
    dispatch_cpu_float("embedding", table_value.dtype(), [&]<typename T>() {
      kernels::cpu::embedding_forward<T>(table_contiguous.data<T>(), lookup_ids.data<int64_t>(), out.data<T>(),
                                         lookup_ids.numel(), dim);
    });
    out = out.to(out_dtype);
  }
  return autograd::record(
      std::make_shared<EmbeddingNode>(lookup_ids, table_value.shape(), table_value.dtype()),
      {table, ids}, out);
}

}  // namespace braid::ops
