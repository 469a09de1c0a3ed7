#include "kernels/cpu/ssd.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/activations.h"

namespace braid::kernels::cpu {

namespace {

// e^(log_decay), guarded as KERNELS.md 3.4.1 asks. The segment sums here never exceed zero (a <= 0
// and masked lanes are never evaluated), so the guard is a safety net against overflow.
template <typename T>
T decay(T log_decay) {
  return std::exp(std::min(log_decay, T(0)));
}

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T sum = 0;
  for (int64_t k = 0; k < n; ++k) sum += a[k] * b[k];
  return sum;
}

template <typename T>
T delta_of(T u, const SsdProblem& problem) {
  return std::clamp(softplus(u), T(problem.dt_min), T(problem.dt_max));
}

// d delta / du: sigma(u) (1 past softplus's pass-through), and 0 where the clamp binds.
template <typename T>
T delta_slope(T u, const SsdProblem& problem) {
  T unclamped = softplus(u);
  if (unclamped < T(problem.dt_min) || unclamped > T(problem.dt_max)) return T(0);
  return u > T(20) ? T(1) : sigmoid(u);
}

// Where one (batch, head) slice lives: element t of a sequence sits at base + t * step.
struct HeadLayout {
  int64_t x_base, x_step;    // rows of x, y and dy (P values each)
  int64_t dt_base, dt_step;  // dt_raw
  int64_t bc_base, bc_step;  // rows of B and C of the head's group (N values each)
  int64_t state_base;        // (P, N) block of the states
};

HeadLayout head_layout(const SsdProblem& problem, int64_t b, int64_t h) {
  const int64_t g = h / (problem.heads / problem.groups);
  const int64_t bt = b * problem.seq;
  return {(bt * problem.heads + h) * problem.head_dim, problem.heads * problem.head_dim,
          bt * problem.heads + h, problem.heads,
          (bt * problem.groups + g) * problem.state, problem.groups * problem.state,
          (b * problem.heads + h) * problem.head_dim * problem.state};
}

// The per-chunk quantities of KERNELS.md 3.1 for one head, in local indices i, j in [0, length).
template <typename T>
struct Chunk {
  int64_t start = 0, length = 0, capacity = 0;
  std::vector<T> delta;       // delta_j
  std::vector<T> log_decay;   // a_j = delta_j * A
  std::vector<T> prefix;      // s_i = a_0 + ... + a_i
  std::vector<T> suffix;      // Lambda - s_j = a_{j+1} + ... + a_{length-1}
  T total = 0;                // Lambda = s_{length-1}
  std::vector<T> cb;          // [i * capacity + j] = C_i . B_j, j <= i
  std::vector<T> pair_decay;  // [i * capacity + j] = e^(s_i - s_j), j <= i

  explicit Chunk(int64_t capacity)
      : capacity(capacity), delta(capacity), log_decay(capacity), prefix(capacity),
        suffix(capacity), cb(capacity * capacity), pair_decay(capacity * capacity) {}

  // delta, a and the cumsums of the chunk starting at `first`.
  void discretize(const SsdProblem& problem, const SsdInputs<T>& in, const HeadLayout& at,
                  int64_t head, T A, int64_t first) {
    start = first;
    length = std::min(capacity, problem.seq - first);
    T running = 0;
    for (int64_t j = 0; j < length; ++j) {
      const T u = in.dt_raw[at.dt_base + (start + j) * at.dt_step] + in.dt_bias[head];
      delta[j] = delta_of(u, problem);
      log_decay[j] = delta[j] * A;
      running += log_decay[j];
      prefix[j] = running;
    }
    total = running;
    // Summed from the end rather than taken as Lambda - s_j, which would cancel.
    running = 0;
    for (int64_t j = length - 1; j >= 0; --j) {
      suffix[j] = running;
      running += log_decay[j];
    }
  }

  // C.B and the decay mask; each segment sum is accumulated directly, again to avoid cancellation.
  void pair_terms(const SsdProblem& problem, const SsdInputs<T>& in, const HeadLayout& at) {
    const int64_t N = problem.state;
    for (int64_t i = 0; i < length; ++i) {
      const T* C_i = in.C + at.bc_base + (start + i) * at.bc_step;
      T segment = 0;  // s_i - s_j = a_{j+1} + ... + a_i
      for (int64_t j = i; j >= 0; --j) {
        cb[i * capacity + j] = dot(C_i, in.B + at.bc_base + (start + j) * at.bc_step, N);
        pair_decay[i * capacity + j] = decay(segment);
        segment += log_decay[j];
      }
    }
  }
};

// state <- e^Lambda * state + Sloc, with Sloc = sum_j e^(Lambda - s_j) delta_j x_j (x) B_j.
template <typename T>
void advance_state(const SsdProblem& problem, const SsdInputs<T>& in, const HeadLayout& at,
                   const Chunk<T>& chunk, T* state) {
  const int64_t P = problem.head_dim, N = problem.state;
  const T carry = decay(chunk.total);
  for (int64_t k = 0; k < P * N; ++k) state[k] *= carry;
  for (int64_t j = 0; j < chunk.length; ++j) {
    const T weight = decay(chunk.suffix[j]) * chunk.delta[j];
    const T* x_j = in.x + at.x_base + (chunk.start + j) * at.x_step;
    const T* B_j = in.B + at.bc_base + (chunk.start + j) * at.bc_step;
    for (int64_t p = 0; p < P; ++p) {
      const T scaled = weight * x_j[p];
      for (int64_t n = 0; n < N; ++n) state[p * N + n] += scaled * B_j[n];
    }
  }
}

template <typename T>
void forward_head(const SsdProblem& problem, const SsdInputs<T>& in, int64_t b, int64_t h, T* y,
                  T* final_state) {
  const int64_t P = problem.head_dim, N = problem.state;
  const HeadLayout at = head_layout(problem, b, h);
  const T A = -std::exp(in.A_log[h]);
  const T D = in.D[h];
  std::vector<T> state(P * N, T(0));
  if (in.initial_state) std::copy_n(in.initial_state + at.state_base, P * N, state.begin());

  Chunk<T> chunk(std::min(problem.chunk, problem.seq));
  std::vector<T> weight(chunk.capacity);
  for (int64_t first = 0; first < problem.seq; first += problem.chunk) {
    chunk.discretize(problem, in, at, h, A, first);
    chunk.pair_terms(problem, in, at);
    for (int64_t i = 0; i < chunk.length; ++i) {
      const T* C_i = in.C + at.bc_base + (first + i) * at.bc_step;
      const T* x_i = in.x + at.x_base + (first + i) * at.x_step;
      T* y_i = y + at.x_base + (first + i) * at.x_step;
      const T state_decay = decay(chunk.prefix[i]);
      for (int64_t j = 0; j <= i; ++j)
        weight[j] = chunk.cb[i * chunk.capacity + j] * chunk.pair_decay[i * chunk.capacity + j] *
                    chunk.delta[j];
      for (int64_t p = 0; p < P; ++p) {
        T sum = state_decay * dot(state.data() + p * N, C_i, N);  // off-diagonal: entering state
        for (int64_t j = 0; j <= i; ++j)                          // diagonal: this chunk's inputs
          sum += weight[j] * in.x[at.x_base + (first + j) * at.x_step + p];
        y_i[p] = sum + D * x_i[p];
      }
    }
    advance_state(problem, in, at, chunk, state.data());
  }
  std::copy(state.begin(), state.end(), final_state + at.state_base);
}

// Per-(batch, head) sums the caller reduces in a fixed order.
struct HeadSums {
  double d_A = 0, d_dt_bias = 0, d_D = 0;
};

// Backward of one (batch, head), KERNELS.md 4.1-4.4. dB and dC go to this head's private (T, N)
// partials; the group sum happens afterwards.
template <typename T>
HeadSums backward_head(const SsdProblem& problem, const SsdInputs<T>& in, const T* dy,
                       const T* d_final_state, const SsdGrads<T>& grads, int64_t b, int64_t h,
                       T* dB_head, T* dC_head) {
  const int64_t P = problem.head_dim, N = problem.state, PN = P * N;
  const HeadLayout at = head_layout(problem, b, h);
  const T A = -std::exp(in.A_log[h]);
  const T D = in.D[h];
  const int64_t chunks = (problem.seq + problem.chunk - 1) / problem.chunk;
  Chunk<T> chunk(std::min(problem.chunk, problem.seq));
  const int64_t Q = chunk.capacity;

  // Recompute the state entering every chunk.
  std::vector<T> entering(chunks * PN);
  std::vector<T> state(PN, T(0));
  if (in.initial_state) std::copy_n(in.initial_state + at.state_base, PN, state.begin());
  for (int64_t c = 0; c < chunks; ++c) {
    std::copy(state.begin(), state.end(), entering.begin() + c * PN);
    chunk.discretize(problem, in, at, h, A, c * problem.chunk);
    advance_state(problem, in, at, chunk, state.data());
  }

  // Reverse state passing; `grad_state` is the gradient of the state leaving the current chunk.
  std::vector<T> grad_state(PN, T(0));
  if (d_final_state) std::copy_n(d_final_state + at.state_base, PN, grad_state.begin());
  std::vector<T> d_cb(Q * Q), d_log_decay(Q), d_delta_direct(Q), kappa(Q), acc(P), projected(P);
  HeadSums sums;
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t first = c * problem.chunk;
    chunk.discretize(problem, in, at, h, A, first);
    chunk.pair_terms(problem, in, at);
    const int64_t L = chunk.length;
    const T* S = entering.data() + c * PN;
    auto x_row = [&](int64_t i) { return in.x + at.x_base + (first + i) * at.x_step; };
    auto dy_row = [&](int64_t i) { return dy + at.x_base + (first + i) * at.x_step; };
    auto B_row = [&](int64_t i) { return in.B + at.bc_base + (first + i) * at.bc_step; };
    auto C_row = [&](int64_t i) { return in.C + at.bc_base + (first + i) * at.bc_step; };

    // dCB[i,j] = delta_j e^(s_i - s_j) <dY_i, x_j>; Gamma_ij = dCB[i,j] CB[i,j] enters the decay
    // gradient of every a_r with j < r <= i: an exclusive prefix along j, summed over rows i >= r.
    std::fill(d_log_decay.begin(), d_log_decay.end(), T(0));
    for (int64_t i = 0; i < L; ++i) {
      T exclusive = 0;
      for (int64_t j = 0; j <= i; ++j) {
        const int64_t ij = i * Q + j;
        d_cb[ij] = chunk.delta[j] * chunk.pair_decay[ij] * dot(dy_row(i), x_row(j), P);
        d_log_decay[j] += exclusive;
        exclusive += d_cb[ij] * chunk.cb[ij];
      }
    }

    // Column terms: dx, the direct delta gradient, dB, and eta_j (the chunk-state decay term, which
    // reaches every a_r with r > j).
    T eta_exclusive = 0;
    for (int64_t j = 0; j < L; ++j) {
      const T* x_j = x_row(j);
      const T to_end = decay(chunk.suffix[j]);
      for (int64_t p = 0; p < P; ++p) projected[p] = dot(grad_state.data() + p * N, B_row(j), N);
      for (int64_t p = 0; p < P; ++p) acc[p] = to_end * projected[p];
      for (int64_t i = j; i < L; ++i) {
        const T weight = chunk.cb[i * Q + j] * chunk.pair_decay[i * Q + j];
        const T* dy_i = dy_row(i);
        for (int64_t p = 0; p < P; ++p) acc[p] += weight * dy_i[p];
      }
      T* dx_j = grads.x + at.x_base + (first + j) * at.x_step;
      const T* dy_j = dy_row(j);
      for (int64_t p = 0; p < P; ++p) dx_j[p] = chunk.delta[j] * acc[p] + D * dy_j[p];
      d_delta_direct[j] = dot(acc.data(), x_j, P);

      d_log_decay[j] += eta_exclusive;
      eta_exclusive += chunk.delta[j] * to_end * dot(projected.data(), x_j, P);

      T* dB_j = dB_head + (first + j) * N;
      const T state_weight = chunk.delta[j] * to_end;
      for (int64_t n = 0; n < N; ++n) {
        T sum = 0;
        for (int64_t p = 0; p < P; ++p) sum += grad_state[p * N + n] * x_j[p];
        dB_j[n] = state_weight * sum;
      }
      for (int64_t i = j; i < L; ++i) {
        const T weight = d_cb[i * Q + j];
        const T* C_i = C_row(i);
        for (int64_t n = 0; n < N; ++n) dB_j[n] += weight * C_i[n];
      }
    }

    // Row terms: dC and kappa_i (the entering-state output term, which reaches every a_r with
    // r <= i), together with dLambda (which reaches every a_r) as a reverse cumsum.
    const T carry = decay(chunk.total);
    T suffix_sum = carry * dot(S, grad_state.data(), PN);  // dLambda
    for (int64_t i = 0; i < L; ++i) {
      const T* dy_i = dy_row(i);
      const T* C_i = C_row(i);
      const T state_decay = decay(chunk.prefix[i]);
      for (int64_t p = 0; p < P; ++p) projected[p] = dot(S + p * N, C_i, N);
      kappa[i] = state_decay * dot(dy_i, projected.data(), P);
      T* dC_i = dC_head + (first + i) * N;
      for (int64_t n = 0; n < N; ++n) {
        T sum = 0;
        for (int64_t p = 0; p < P; ++p) sum += S[p * N + n] * dy_i[p];
        dC_i[n] = state_decay * sum;
      }
      for (int64_t j = 0; j <= i; ++j) {
        const T weight = d_cb[i * Q + j];
        const T* B_j = B_row(j);
        for (int64_t n = 0; n < N; ++n) dC_i[n] += weight * B_j[n];
      }
    }
    for (int64_t r = L - 1; r >= 0; --r) {
      suffix_sum += kappa[r];
      d_log_decay[r] += suffix_sum;
    }

    // Chain a_t = delta_t A and delta_t = clamp(softplus(dt_raw_t + dt_bias)) (KERNELS.md 4.4).
    for (int64_t r = 0; r < L; ++r) {
      const int64_t t = first + r;
      const T u = in.dt_raw[at.dt_base + t * at.dt_step] + in.dt_bias[h];
      const T d_delta = d_log_decay[r] * A + d_delta_direct[r];
      const T d_dt_raw = d_delta * delta_slope(u, problem);
      grads.dt_raw[at.dt_base + t * at.dt_step] = d_dt_raw;
      sums.d_A += double(d_log_decay[r]) * double(chunk.delta[r]);
      sums.d_dt_bias += double(d_dt_raw);
      sums.d_D += double(dot(dy_row(r), x_row(r), P));
    }

    // Gradient of the entering state: e^Lambda * grad_state + sum_i e^(s_i) dY_i (x) C_i.
    for (int64_t k = 0; k < PN; ++k) grad_state[k] *= carry;
    for (int64_t i = 0; i < L; ++i) {
      const T state_decay = decay(chunk.prefix[i]);
      const T* dy_i = dy_row(i);
      const T* C_i = C_row(i);
      for (int64_t p = 0; p < P; ++p) {
        const T scaled = state_decay * dy_i[p];
        for (int64_t n = 0; n < N; ++n) grad_state[p * N + n] += scaled * C_i[n];
      }
    }
  }
  if (grads.initial_state)
    std::copy(grad_state.begin(), grad_state.end(), grads.initial_state + at.state_base);
  return sums;
}

// Threads only pay off past a few tens of thousands of state updates (gradcheck runs thousands of
// tiny scans).
bool worth_threads(const SsdProblem& problem) {
  return problem.batch * problem.seq * problem.heads * problem.head_dim * problem.state >= 32768;
}

}  // namespace

template <typename T>
void ssd_forward(const SsdProblem& problem, const SsdInputs<T>& in, T* y, T* final_state) {
  const int64_t heads = problem.batch * problem.heads;
#pragma omp parallel for schedule(dynamic) if (worth_threads(problem))
  for (int64_t bh = 0; bh < heads; ++bh)
    forward_head(problem, in, bh / problem.heads, bh % problem.heads, y, final_state);
}

template <typename T>
void ssd_backward(const SsdProblem& problem, const SsdInputs<T>& in, const T* dy,
                  const T* d_final_state, const SsdGrads<T>& grads) {
  const int64_t batch = problem.batch, H = problem.heads, G = problem.groups, N = problem.state;
  const int64_t seq = problem.seq, per_group = H / G;
  // dB and dC of each (batch, head), (T, N) each, summed over the group's heads below.
  std::vector<T> dB_heads(batch * H * seq * N), dC_heads(batch * H * seq * N);
  std::vector<HeadSums> sums(batch * H);
#pragma omp parallel for schedule(dynamic) if (worth_threads(problem))
  for (int64_t bh = 0; bh < batch * H; ++bh)
    sums[bh] = backward_head(problem, in, dy, d_final_state, grads, bh / H, bh % H,
                             dB_heads.data() + bh * seq * N, dC_heads.data() + bh * seq * N);

#pragma omp parallel for schedule(static) if (worth_threads(problem))
  for (int64_t bt = 0; bt < batch * seq; ++bt) {
    const int64_t b = bt / seq, t = bt % seq;
    for (int64_t g = 0; g < G; ++g)
      for (int64_t n = 0; n < N; ++n) {
        double dB = 0, dC = 0;
        for (int64_t k = 0; k < per_group; ++k) {
          const int64_t from = ((b * H + g * per_group + k) * seq + t) * N + n;
          dB += double(dB_heads[from]);
          dC += double(dC_heads[from]);
        }
        grads.B[(bt * G + g) * N + n] = T(dB);
        grads.C[(bt * G + g) * N + n] = T(dC);
      }
  }

  for (int64_t h = 0; h < H; ++h) {
    HeadSums total;
    for (int64_t b = 0; b < batch; ++b) {
      total.d_A += sums[b * H + h].d_A;
      total.d_dt_bias += sums[b * H + h].d_dt_bias;
      total.d_D += sums[b * H + h].d_D;
    }
    const double A = -std::exp(double(in.A_log[h]));
    grads.A_log[h] = T(total.d_A * A);  // dA/dA_log = A
    grads.dt_bias[h] = T(total.d_dt_bias);
    grads.D[h] = T(total.d_D);
  }
}

template void ssd_forward<float>(const SsdProblem&, const SsdInputs<float>&, float*, float*);
template void ssd_forward<double>(const SsdProblem&, const SsdInputs<double>&, double*, double*);
template void ssd_backward<float>(const SsdProblem&, const SsdInputs<float>&, const float*,
                                  const float*, const SsdGrads<float>&);
template void ssd_backward<double>(const SsdProblem&, const SsdInputs<double>&, const double*,
                                   const double*, const SsdGrads<double>&);

}  // namespace braid::kernels::cpu
