// Mamba-2 SSD scan: the chunked kernel against the plain recurrence of MODEL.md section 3 (written
// below in double), gradients through gradcheck on losses over both outputs, chunk-size invariance
// and thread-count determinism of the gradients, the dt clamp, a long strongly decaying f32
// sequence, and bad inputs.
#include <cmath>
#include <limits>

#include <omp.h>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "layers/ops/ssd.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::random_normal;
using testing::random_uniform;

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Sizes {
  int64_t batch, seq, heads, head_dim, groups, state;
};

struct ScanInputs {
  Tensor x, dt_raw, dt_bias, A_log, B, C, D, initial_state;  // initial_state may be undefined

  std::vector<Tensor> list() const { return {x, dt_raw, dt_bias, A_log, B, C, D, initial_state}; }
};

// How large the step sizes are: MODEL.md's init (delta about 1e-3 to 0.1), or about 0.4 to 3 so
// that decays within a chunk and across chunks matter.
enum class Steps { initial, large };

double inverse_softplus(double y) { return y + std::log(-std::expm1(-y)); }

ScanInputs random_inputs(const Sizes& s, uint64_t seed, DType dtype, Steps steps,
                         bool with_initial) {
  ScanInputs in;
  in.x = random_normal({s.batch, s.seq, s.heads, s.head_dim}, seed, dtype);
  in.dt_raw = random_normal({s.batch, s.seq, s.heads}, seed + 1, dtype, 0.5);
  std::vector<double> bias =
      random_uniform({s.heads}, seed + 2, std::log(1e-3), std::log(0.1)).to_doubles();
  for (double& b : bias)
    b = steps == Steps::initial ? inverse_softplus(std::exp(b)) : inverse_softplus(-b / 3);
  in.dt_bias = Tensor::from_values(bias, {s.heads}, dtype);
  std::vector<double> A_log = random_uniform({s.heads}, seed + 3, 0.01, 2.0).to_doubles();
  for (double& a : A_log) a = std::log(a);
  in.A_log = Tensor::from_values(A_log, {s.heads}, dtype);
  in.B = random_normal({s.batch, s.seq, s.groups, s.state}, seed + 4, dtype);
  in.C = random_normal({s.batch, s.seq, s.groups, s.state}, seed + 5, dtype);
  in.D = random_uniform({s.heads}, seed + 6, 0.5, 1.5, dtype);
  if (with_initial)
    in.initial_state = random_normal({s.batch, s.heads, s.head_dim, s.state}, seed + 7, dtype);
  return in;
}

struct Reference {
  std::vector<double> y, final_state;
};

// The plain recurrence, one token at a time, in double.
Reference recurrence(const Sizes& s, const ScanInputs& in, double dt_min = 0,
                     double dt_max = kInf) {
  const auto x = in.x.to_doubles(), dt_raw = in.dt_raw.to_doubles(),
             dt_bias = in.dt_bias.to_doubles(), A_log = in.A_log.to_doubles(),
             B = in.B.to_doubles(), C = in.C.to_doubles(), D = in.D.to_doubles();
  const std::vector<double> initial = in.initial_state.defined() ? in.initial_state.to_doubles()
                                                                 : std::vector<double>();
  const int64_t T = s.seq, H = s.heads, P = s.head_dim, G = s.groups, N = s.state;
  Reference out{std::vector<double>(x.size()), std::vector<double>(size_t(s.batch * H * P * N))};
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / G);
      const double A = -std::exp(A_log[h]);
      std::vector<double> S(size_t(P * N), 0.0);
      if (!initial.empty()) std::copy_n(initial.begin() + (b * H + h) * P * N, P * N, S.begin());
      for (int64_t t = 0; t < T; ++t) {
        const double u = dt_raw[(b * T + t) * H + h] + dt_bias[h];
        const double softplus = u > 20 ? u : std::log1p(std::exp(u));
        const double delta = std::min(std::max(softplus, dt_min), dt_max);
        const double keep = std::exp(delta * A);
        const double* x_t = &x[((b * T + t) * H + h) * P];
        const double* B_t = &B[((b * T + t) * G + g) * N];
        const double* C_t = &C[((b * T + t) * G + g) * N];
        for (int64_t p = 0; p < P; ++p) {
          double y = D[h] * x_t[p];
          for (int64_t n = 0; n < N; ++n) {
            double& state = S[p * N + n];
            state = keep * state + delta * x_t[p] * B_t[n];
            y += state * C_t[n];
          }
          out.y[((b * T + t) * H + h) * P + p] = y;
        }
      }
      std::copy(S.begin(), S.end(), out.final_state.begin() + (b * H + h) * P * N);
    }
  return out;
}

ops::SsdOutputs run_ssd(const std::vector<Var>& v, const ops::SsdOptions& options) {
  return ops::ssd(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], options);
}

std::vector<Var> leaves(const ScanInputs& in, bool requires_grad) {
  std::vector<Var> vars;
  for (const Tensor& t : in.list()) vars.push_back(t.defined() ? leaf(t, requires_grad) : nullptr);
  return vars;
}

// Flattens y and the final state into one vector, so gradcheck's loss covers both outputs.
class JoinNode : public autograd::Node {
 public:
  JoinNode(Shape first, Shape second) : first_(std::move(first)), second_(std::move(second)) {}
  const char* name() const override { return "join"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    const std::vector<double> grad = grad_outputs[0].to_doubles();
    const auto split = grad.begin() + shape_numel(first_);
    return {Tensor::from_values({grad.begin(), split}, first_, DType::f64),
            Tensor::from_values({split, grad.end()}, second_, DType::f64)};
  }

 private:
  Shape first_, second_;
};

Var join(const ops::SsdOutputs& out) {
  std::vector<double> values = out.y->value.to_doubles();
  const std::vector<double> state = out.final_state->value.to_doubles();
  values.insert(values.end(), state.begin(), state.end());
  const Tensor joined = Tensor::from_values(values, {int64_t(values.size())}, DType::f64);
  return autograd::record(
      std::make_shared<JoinNode>(out.y->value.shape(), out.final_state->value.shape()),
      {out.y, out.final_state}, joined);
}

// Gradients of <y, r_y> + <final_state, r_s> for fixed random r, one tensor per input.
std::vector<Tensor> gradients(const ScanInputs& in, const ops::SsdOptions& options) {
  std::vector<Var> vars = leaves(in, true);
  ops::SsdOutputs out = run_ssd(vars, options);
  autograd::backward({out.y, out.final_state},
                     {random_normal(out.y->value.shape(), 901, in.x.dtype()),
                      random_normal(out.final_state->value.shape(), 902, in.x.dtype())});
  std::vector<Tensor> grads;
  for (const Var& v : vars) {
    if (v) {
      EXPECT_TRUE(v->grad.defined() && v->grad.numel() == v->value.numel());
    }
    grads.push_back(v ? v->grad : Tensor());
  }
  return grads;
}

const char* const kInputNames[] = {"x", "dt_raw", "dt_bias", "A_log",
                                   "B", "C",      "D",       "initial_state"};

TEST(Ssd, ChunkedForwardMatchesRecurrence) {
  // T = 37 divides by no chunk size below, T = 64 by all of them.
  const Sizes shapes[] = {{2, 37, 3, 4, 1, 5}, {1, 64, 6, 3, 2, 4}};
  uint64_t seed = 100;
  for (const Sizes& s : shapes)
    for (Steps steps : {Steps::initial, Steps::large})
      for (bool with_initial : {false, true}) {
        seed += 10;
        for (DType dtype : {DType::f64, DType::f32}) {
          const ScanInputs in = random_inputs(s, seed, dtype, steps, with_initial);
          const Reference expected = recurrence(s, in);
          // f64 measures the algorithm; f32 the fp32 kernel against the same double recurrence.
          const double rtol = dtype == DType::f64 ? 1e-11 : 1e-5;
          const double atol = dtype == DType::f64 ? 1e-12 : 1e-5;
          for (int64_t chunk : {8, 16, 64}) {
            SCOPED_TRACE(str("T ", s.seq, " H ", s.heads, " G ", s.groups, " chunk ", chunk,
                             steps == Steps::large ? " large steps" : " initial steps",
                             with_initial ? " with initial state " : " ", dtype_name(dtype)));
            ops::SsdOutputs out = run_ssd(leaves(in, false), {chunk});
            EXPECT_TRUE(all_close(out.y->value, expected.y, rtol, atol));
            EXPECT_TRUE(all_close(out.final_state->value, expected.final_state, rtol, atol));
          }
        }
      }
}

TEST(Ssd, Gradcheck) {
  struct Case {
    Sizes sizes;
    int64_t chunk;
    Steps steps;
    bool with_initial;
  };
  const Case cases[] = {{{2, 13, 3, 2, 1, 3}, 4, Steps::large, true},
                        {{1, 13, 4, 3, 2, 2}, 5, Steps::initial, true},
                        {{1, 11, 2, 2, 1, 4}, 3, Steps::large, false}};
  // The loss covers both outputs, or one of them (the other then gets no gradient at all).
  enum class Loss { both, y, final_state };
  uint64_t seed = 300;
  for (const Case& c : cases)
    for (Loss loss : {Loss::both, Loss::y, Loss::final_state}) {
      const char* on = loss == Loss::both ? "both outputs" : loss == Loss::y ? "y" : "final state";
      SCOPED_TRACE(str("T ", c.sizes.seq, " chunk ", c.chunk, " H ", c.sizes.heads, " G ",
                       c.sizes.groups, " loss on ", on));
      const ScanInputs in = random_inputs(c.sizes, seed += 10, DType::f64, c.steps, c.with_initial);
      std::vector<Tensor> inputs = in.list();
      if (!c.with_initial) inputs.pop_back();
      const ops::SsdOptions options{c.chunk};
      auto result = autograd::gradcheck(
          [&](const std::vector<Var>& v) {
            ops::SsdOutputs out = ops::ssd(v[0], v[1], v[2], v[3], v[4], v[5], v[6],
                                           v.size() > 7 ? v[7] : nullptr, options);
            return loss == Loss::both ? join(out) : loss == Loss::y ? out.y : out.final_state;
          },
          inputs);
      EXPECT_TRUE(result.ok) << result.report;
      int64_t elements = 0;
      for (const Tensor& t : inputs) elements += t.numel();
      EXPECT_EQ(result.elements_checked, elements);
    }
}

TEST(Ssd, GradientsDoNotDependOnChunkSize) {
  const Sizes s{2, 23, 3, 3, 1, 4};
  const ScanInputs in = random_inputs(s, 400, DType::f64, Steps::large, true);
  const std::vector<Tensor> reference = gradients(in, {64});
  for (int64_t chunk : {1, 4, 7, 23}) {
    const std::vector<Tensor> grads = gradients(in, {chunk});
    for (size_t i = 0; i < grads.size(); ++i)
      EXPECT_TRUE(all_close(grads[i], reference[i].to_doubles(), 1e-10, 1e-10))
          << "chunk " << chunk << ", gradient of " << kInputNames[i];
  }
}

TEST(Ssd, DtClampMatchesRecurrenceAndStopsGradient) {
  const Sizes s{2, 19, 3, 2, 1, 3};
  const ScanInputs in = random_inputs(s, 500, DType::f64, Steps::large, true);
  // delta ranges over about [0.3, 3.5] here; clamp both ends.
  ops::SsdOptions options{5, 0.6, 1.5};
  const Reference expected = recurrence(s, in, options.dt_min, options.dt_max);
  ops::SsdOutputs out = run_ssd(leaves(in, false), options);
  EXPECT_TRUE(all_close(out.y->value, expected.y, 1e-11, 1e-12));
  EXPECT_TRUE(all_close(out.final_state->value, expected.final_state, 1e-11, 1e-12));

  const std::vector<double> d_dt_raw = gradients(in, options)[1].to_doubles();
  const std::vector<double> dt_raw = in.dt_raw.to_doubles(), dt_bias = in.dt_bias.to_doubles();
  int clamped = 0;
  for (size_t k = 0; k < dt_raw.size(); ++k) {
    const double delta = std::log1p(std::exp(dt_raw[k] + dt_bias[k % s.heads]));
    if (delta < options.dt_min || delta > options.dt_max) {
      ++clamped;
      EXPECT_EQ(d_dt_raw[k], 0.0) << "element " << k << " with delta " << delta;
    } else {
      EXPECT_NE(d_dt_raw[k], 0.0) << "element " << k << " with delta " << delta;
    }
  }
  EXPECT_GT(clamped, 10);
  EXPECT_LT(clamped, int(dt_raw.size()) - 10);

  auto result = autograd::gradcheck(
      [&](const std::vector<Var>& v) { return join(run_ssd(v, options)); }, in.list());
  EXPECT_TRUE(result.ok) << result.report;
}

TEST(Ssd, LongStronglyDecayingSequenceStaysFiniteInF32) {
  // delta about 0.01 to 5 and A up to 8: per-step log-decays reach about -40, so e^(-s) within one
  // chunk would overflow fp32 many times over; one slowly decaying head carries state far.
  const Sizes s{1, 600, 3, 4, 1, 8};
  ScanInputs in = random_inputs(s, 600, DType::f32, Steps::large, true);
  in.dt_bias = Tensor::from_values({inverse_softplus(0.01), 2.0, 5.0}, {3}, DType::f32);
  in.A_log = Tensor::from_values({std::log(0.05), std::log(2.0), std::log(8.0)}, {3}, DType::f32);
  const Reference expected = recurrence(s, in);
  ops::SsdOutputs out = run_ssd(leaves(in, false), {64});
  for (const Tensor& t : {out.y->value, out.final_state->value})
    for (double v : t.to_doubles()) ASSERT_TRUE(std::isfinite(v));
  EXPECT_TRUE(all_close(out.y->value, expected.y, 1e-4, 1e-5));
  EXPECT_TRUE(all_close(out.final_state->value, expected.final_state, 1e-4, 1e-5));

  // The f32 backward stays finite and agrees with the f64 one (which gradcheck validates).
  auto f64 = [](const Tensor& t) { return t.to(DType::f64); };
  const ScanInputs in64{f64(in.x), f64(in.dt_raw), f64(in.dt_bias), f64(in.A_log),
                        f64(in.B), f64(in.C),      f64(in.D),       f64(in.initial_state)};
  const std::vector<Tensor> grads32 = gradients(in, {64}), grads64 = gradients(in64, {64});
  for (size_t i = 0; i < grads32.size(); ++i) {
    for (double v : grads32[i].to_doubles()) ASSERT_TRUE(std::isfinite(v)) << kInputNames[i];
    EXPECT_TRUE(all_close(grads32[i], grads64[i].to_doubles(), 1e-5, 1e-5)) << kInputNames[i];
  }
}

TEST(Ssd, BackwardIsBitwiseDeterministicAcrossThreadCounts) {
  const Sizes s{2, 45, 6, 8, 2, 16};  // large enough for the kernel to use threads
  const ScanInputs in = random_inputs(s, 700, DType::f32, Steps::large, true);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<Tensor> serial = gradients(in, {16});
  omp_set_num_threads(4);
  const std::vector<Tensor> parallel = gradients(in, {16});
  omp_set_num_threads(threads);
  for (size_t i = 0; i < serial.size(); ++i)
    EXPECT_EQ(serial[i].to_doubles(), parallel[i].to_doubles()) << kInputNames[i];
}

// Runs ssd on f32 inputs of the given shapes and returns the error message.
std::string ssd_error(const Shape& x, const Shape& dt_raw, const Shape& B, const Shape& C,
                      const Shape& state, int64_t chunk = 64) {
  auto make = [](const Shape& shape, uint64_t seed) {
    return leaf(random_normal(shape, seed, DType::f32));
  };
  const int64_t H = x.size() == 4 ? x[2] : 1;
  try {
    ops::ssd(make(x, 1), make(dt_raw, 2), make({H}, 3), make({H}, 4), make(B, 5), make(C, 6),
             make({H}, 7), state.empty() ? nullptr : make(state, 8), {chunk});
  } catch (const Error& error) {
    return error.what();
  }
  return "no error";
}

void expect_names(const std::string& message, const std::vector<std::string>& parts) {
  for (const std::string& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
}

TEST(Ssd, BadInputsNameBothShapes) {
  // dt_raw has the wrong number of heads.
  expect_names(ssd_error({2, 5, 3, 4}, {2, 5, 4}, {2, 5, 1, 6}, {2, 5, 1, 6}, {}),
               {"dt_raw", "[2, 5, 4]", "[2, 5, 3, 4]"});
  // B's length differs from x's.
  expect_names(ssd_error({2, 5, 3, 4}, {2, 5, 3}, {2, 6, 1, 6}, {2, 6, 1, 6}, {}),
               {"B", "[2, 6, 1, 6]", "[2, 5, 3, 4]"});
  // C differs from B.
  expect_names(ssd_error({2, 5, 3, 4}, {2, 5, 3}, {2, 5, 1, 6}, {2, 5, 1, 7}, {}),
               {"C", "[2, 5, 1, 6]", "[2, 5, 1, 7]"});
  // 3 heads cannot split into 2 groups.
  expect_names(ssd_error({2, 5, 3, 4}, {2, 5, 3}, {2, 5, 2, 6}, {2, 5, 2, 6}, {}),
               {"[2, 5, 3, 4]", "[2, 5, 2, 6]"});
  // The initial state's N differs from B's.
  expect_names(ssd_error({2, 5, 3, 4}, {2, 5, 3}, {2, 5, 1, 6}, {2, 5, 1, 6}, {2, 3, 4, 5}),
               {"initial_state", "[2, 3, 4, 5]", "[2, 3, 4, 6]", "[2, 5, 1, 6]"});
  expect_names(ssd_error({2, 5, 3, 4}, {2, 5, 3}, {2, 5, 1, 6}, {2, 5, 1, 6}, {}, 0),
               {"chunk", "0"});
}

}  // namespace
}  // namespace braid
