#include "layers/ops/cross_entropy.h"

#include "autograd/tape.h"
#include "kernels/cpu/cross_entropy.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

namespace braid::ops {

namespace {

class CrossEntropyNode : public autograd::Node {
 public:
  CrossEntropyNode(Tensor logits, Tensor targets, Tensor lse)
      : logits_(std::move(logits)), targets_(std::move(targets)), lse_(std::move(lse)) {}
  const char* name() const override { return "cross_entropy"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    const double d_loss = grad_outputs[0].item();
    Tensor d_logits = Tensor::empty(logits_.shape(), logits_.dtype());
    dispatch_cpu_float("cross_entropy", logits_.dtype(), [&]<typename T>() {
      kernels::cpu::cross_entropy_backward<T>(logits_.data<T>(), targets_.data<int64_t>(),
                                              lse_.data<T>(), T(d_loss), d_logits.data<T>(),
                                              logits_.size(0), logits_.size(1));
    });
    return {d_logits, Tensor()};
  }

 private:
  Tensor logits_, targets_, lse_;  // targets: i64, contiguous
};

}  // namespace

autograd::Var cross_entropy(const autograd::Var& logits, const autograd::Var& targets) {
  const Tensor& l = logits->value;
  const Tensor& t = targets->value;
  check_dim("cross_entropy", "logits", l, 2);
  check_floating("cross_entropy", "logits", l);
  BRAID_CHECK(t.defined() && !is_floating(t.dtype()) && t.dim() == 1 && t.size(0) == l.size(0),
              "cross_entropy: logits has shape ", shape_str(l.shape()), " but targets is ",
              t.defined() ? t.describe() : "undefined",
              ": targets must be one integer per logits row");
  BRAID_CHECK(l.size(0) > 0 && l.size(1) > 0, "cross_entropy: logits has shape ",
              shape_str(l.shape()), ": the mean loss needs at least one row and one class");
  check_cpu("cross_entropy", l);
  check_cpu("cross_entropy", t);
  const int64_t rows = l.size(0), vocab = l.size(1);
  Tensor targets_i64 = t.to(DType::i64).contiguous();
  const int64_t* target = targets_i64.data<int64_t>();
  for (int64_t r = 0; r < rows; ++r)
    BRAID_CHECK(target[r] >= 0 && target[r] < vocab, "cross_entropy: target ", target[r],
                " at row ", r, " is out of range for V = ", vocab, " classes (logits has shape ",
                shape_str(l.shape()), ")");

  Tensor logits_value = l.contiguous();
  Tensor lse = Tensor::empty({rows}, l.dtype()), loss = Tensor::empty({1}, l.dtype());
  dispatch_cpu_float("cross_entropy", l.dtype(), [&]<typename T>() {
    loss.data<T>()[0] = T(kernels::cpu::cross_entropy_forward<T>(logits_value.data<T>(), target,
                                                                 lse.data<T>(), rows, vocab));
  });
  return autograd::record(std::make_shared<CrossEntropyNode>(logits_value, targets_i64, lse),
                          {logits, targets}, loss);
}

}  // namespace braid::ops
