#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

namespace braid::kernels::cpu {

namespace {

// Rotates every pair by direction * angle: +1 is the forward rotation, -1 its inverse.
template <typename T>
void rotate(const T* x, T* out, const double* inverse_frequencies, int64_t batch, int64_t time,
            int64_t heads, int64_t head_dim, int64_t position_offset, double direction) {
  const int64_t half = head_dim / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < time; ++t) {
      std::vector<T> cosines(half), sines(half);
      for (int64_t i = 0; i < half; ++i) {
        double angle = double(position_offset + t) * inverse_frequencies[i];
        cosines[i] = T(std::cos(angle));
        sines[i] = T(direction * std::sin(angle));
      }
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t row = ((b * time + t) * heads + h) * head_dim;
        const T* x_row = x + row;
        T* out_row = out + row;
        for (int64_t i = 0; i < half; ++i) {
          T first = x_row[i], second = x_row[i + half];
          out_row[i] = first * cosines[i] - second * sines[i];
          out_row[i + half] = second * cosines[i] + first * sines[i];
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void rope_forward(const T* x, T* out, const double* inverse_frequencies, int64_t batch,
                  int64_t time, int64_t heads, int64_t head_dim, int64_t position_offset) {
  rotate(x, out, inverse_frequencies, batch, time, heads, head_dim, position_offset, 1.0);
}

template <typename T>
void rope_backward(const T* d_out, T* d_x, const double* inverse_frequencies, int64_t batch,
                   int64_t time, int64_t heads, int64_t head_dim, int64_t position_offset) {
  rotate(d_out, d_x, inverse_frequencies, batch, time, heads, head_dim, position_offset, -1.0);
}

template void rope_forward<float>(const float*, float*, const double*, int64_t, int64_t, int64_t,
                                  int64_t, int64_t);
template void rope_forward<double>(const double*, double*, const double*, int64_t, int64_t,
                                   int64_t, int64_t, int64_t);
template void rope_backward<float>(const float*, float*, const double*, int64_t, int64_t, int64_t,
                                   int64_t, int64_t);
template void rope_backward<double>(const double*, double*, const double*, int64_t, int64_t,
                                    int64_t, int64_t, int64_t);

}  // namespace braid::kernels::cpu
