// AdamW step: three consecutive steps against a naive double loop, in float and double.
#include <cmath>

#include "kernels/cpu/adamw.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using testing::all_close;
using testing::error_of;
using testing::random_normal;

struct Hyper {
  double lr = 3e-2, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

// One step of the textbook update on doubles, in the order the paper writes it.
void naive_adamw(std::vector<double>& p, const std::vector<double>& g, std::vector<double>& m,
                 std::vector<double>& v, const Hyper& h, int step) {
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] -= h.lr * h.weight_decay * p[i];
    m[i] = h.beta1 * m[i] + (1 - h.beta1) * g[i];
    v[i] = h.beta2 * v[i] + (1 - h.beta2) * g[i] * g[i];
    const double m_hat = m[i] / (1 - std::pow(h.beta1, step)),
                 v_hat = v[i] / (1 - std::pow(h.beta2, step));
    p[i] -= h.lr * m_hat / (std::sqrt(v_hat) + h.eps);
  }
}

template <typename T>
void check_three_steps(int64_t n, const Hyper& h, uint64_t seed, double rtol, double atol) {
  const DType dtype = dtype_of<T>;
  Tensor param = random_normal({n}, seed, dtype), m = Tensor::zeros({n}, dtype),
         v = Tensor::zeros({n}, dtype);
  std::vector<double> p_ref = param.to_doubles(), m_ref(size_t(n), 0.0), v_ref(size_t(n), 0.0);
  for (int step = 1; step <= 3; ++step) {
    // Tiny gradients too, where eps matters against sqrt(v_hat).
    Tensor grad = random_normal({n}, seed + uint64_t(step), dtype, step == 2 ? 1e-7 : 1.0);
    naive_adamw(p_ref, grad.to_doubles(), m_ref, v_ref, h, step);
    kernels::cpu::adamw_step<T>(param.data<T>(), grad.data<T>(), m.data<T>(), v.data<T>(), n, h.lr,
                                h.beta1, h.beta2, h.eps, h.weight_decay, step);
    EXPECT_TRUE(all_close(param, p_ref, rtol, atol)) << "param after step " << step << ", n " << n;
    EXPECT_TRUE(all_close(m, m_ref, rtol, atol)) << "m after step " << step;
    EXPECT_TRUE(all_close(v, v_ref, rtol, atol)) << "v after step " << step;
  }
}

TEST(Adamw, ThreeStepsMatchNaiveLoop) {
  Hyper defaults;
  Hyper no_decay;
  no_decay.weight_decay = 0;
  no_decay.beta1 = 0.5;
  no_decay.beta2 = 0.999;
  for (int64_t n : {int64_t(1), int64_t(37), int64_t(1001)}) {
    check_three_steps<float>(n, defaults, 700 + uint64_t(n), 1e-5, 1e-7);
    check_three_steps<float>(n, no_decay, 800 + uint64_t(n), 1e-5, 1e-7);
    check_three_steps<double>(n, defaults, 900 + uint64_t(n), 1e-13, 1e-15);
  }
}

TEST(Adamw, RejectsStepZeroAndBadBetas) {
  std::vector<float> p(3, 1.0f), g(3, 1.0f), m(3, 0.0f), v(3, 0.0f);
  auto step_with = [&](double beta2, int64_t step) {
    kernels::cpu::adamw_step<float>(p.data(), g.data(), m.data(), v.data(), 3, 1e-3, 0.9, beta2,
                                    1e-8, 0.1, step);
  };
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "adamw_step: step counts from 1, got 0",
                      error_of([&] { step_with(0.95, 0); }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "betas must lie in [0, 1), got beta1 = 0.9, beta2 = 1",
                      error_of([&] { step_with(1.0, 1); }));
}

}  // namespace
}  // namespace braid
