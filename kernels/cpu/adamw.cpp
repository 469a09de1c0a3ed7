#include "kernels/cpu/adamw.h"

#include <cmath>

#include "runtime/error.h"

namespace braid::kernels::cpu {

namespace {

// Below this many elements a loop runs on one thread: waking the team costs more than it saves.
constexpr int64_t kParallelMin = 65536;

}  // namespace

template <typename T>
void adamw_step(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1,
                double beta2, double eps, double weight_decay, int64_t step) {
  BRAID_CHECK(step >= 1, "adamw_step: step counts from 1, got ", step);
  BRAID_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1,
              "adamw_step: betas must lie in [0, 1), got beta1 = ", beta1, ", beta2 = ", beta2);
  // The step's scalars are formed in double and rounded to T once: 1 - beta2 from a float beta2 of
  // 0.999 would be off by 1e-5 relative.
  const T decay = T(1 - lr * weight_decay);
  const T step_size = T(lr / (1 - std::pow(beta1, double(step))));
  const T v_correction = T(1 / (1 - std::pow(beta2, double(step))));
  const T b1 = T(beta1), b2 = T(beta2), one_minus_b1 = T(1 - beta1), one_minus_b2 = T(1 - beta2);
  const T epsilon = T(eps);
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T g = grad[i];
    m[i] = b1 * m[i] + one_minus_b1 * g;
    v[i] = b2 * v[i] + one_minus_b2 * g * g;
    param[i] = param[i] * decay - step_size * m[i] / (std::sqrt(v[i] * v_correction) + epsilon);
  }
}

template void adamw_step<float>(float*, const float*, float*, float*, int64_t, double, double,
                                double, double, double, int64_t);
template void adamw_step<double>(double*, const double*, double*, double*, int64_t, double, double,
                                 double, double, double, int64_t);

}  // namespace braid::kernels::cpu
