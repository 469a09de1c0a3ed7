// The CPU decode kernels (kernels/cpu/decode.h, through layers/ops/decode.h) against naive loops in
// double written here: cache attention (GQA, window + sink, several queries, ragged lengths), KV
// cache writes, RoPE at per-sequence positions (against the training RoPE at that offset), and the
// one-token conv and SSM state updates, which also read strided row views (column slices of a wider
// projection) bit for bit as their contiguous copies.
#include <cmath>

#include "layers/ops/decode.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using testing::all_close;
using testing::random_normal;

Tensor ints(const std::vector<double>& values, const Shape& shape) { return Tensor::from_values(values, shape, DType::i32); }

TEST(DecodeKernels, CacheAttentionMatchesNaiveSoftmax) {
  const int64_t batch = 2, queries = 3, hq = 4, hk = 2, dk = 5, dv = 3, capacity = 20;
  struct Case {
    ops::AttentionOptions mask;
    std::vector<double> lengths;
  };
  for (const Case& c : {Case{{}, {20, 4}}, Case{{6, 2, 0}, {17, 9}}, Case{{0, 0, 0.3}, {3, 11}}}) {
    Tensor q = random_normal({batch, queries, hq, dk}, 1, DType::f32);
    Tensor k = random_normal({batch, hk, capacity, dk}, 2, DType::f32);
    Tensor v = random_normal({batch, hk, capacity, dv}, 3, DType::f32);
    Tensor got = ops::cache_attention(q, k, v, ints(c.lengths, {batch}), c.mask);
    const double scale = c.mask.scale > 0 ? c.mask.scale : 1.0 / std::sqrt(double(dk));
    const auto Q = q.to_doubles(), K = k.to_doubles(), V = v.to_doubles();
    std::vector<double> want;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t t = 0; t < queries; ++t)
        for (int64_t h = 0; h < hq; ++h) {
          const int64_t slot = int64_t(c.lengths[size_t(b)]) - queries + t, g = h / (hq / hk);
          std::vector<double> weights;
          double total = 0;
          for (int64_t s = 0; s <= slot; ++s) {
            const bool visible = c.mask.window == 0 || slot - s < c.mask.window || s < c.mask.sink;
            double dot = 0;
            for (int64_t i = 0; i < dk; ++i)
              dot += Q[size_t(((b * queries + t) * hq + h) * dk + i)] * K[size_t(((b * hk + g) * capacity + s) * dk + i)];
            weights.push_back(visible ? std::exp(scale * dot) : 0.0);
            total += weights.back();
          }
          for (int64_t d = 0; d < dv; ++d) {
            double sum = 0;
            for (int64_t s = 0; s <= slot; ++s) sum += weights[size_t(s)] * V[size_t(((b * hk + g) * capacity + s) * dv + d)];
            want.push_back(sum / total);
          }
        }
    EXPECT_TRUE(all_close(got, want, 1e-5, 1e-6)) << "window " << c.mask.window;
  }
  EXPECT_NE(testing::error_of([] {
              ops::cache_attention(Tensor::zeros({1, 2, 2, 4}, DType::f32), Tensor::zeros({1, 1, 8, 4}, DType::f32),
                                   Tensor::zeros({1, 1, 8, 4}, DType::f32), ints({9}, {1}), {});
            }).find("holds 9 keys"),
            std::string::npos);
}

TEST(DecodeKernels, KvCacheWriteSkipsNegativeSlots) {
  Tensor cache = random_normal({2, 3, 6, 4}, 4, DType::f32), values = random_normal({2, 2, 3, 4}, 5, DType::f32);
  std::vector<double> want = cache.to_doubles();
  const std::vector<double> slots = {5, -1, 0, 2};
  const auto vals = values.to_doubles();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 2; ++t) {
      const double slot = slots[size_t(b * 2 + t)];
      if (slot < 0) continue;
      for (int64_t h = 0; h < 3; ++h)
        for (int64_t d = 0; d < 4; ++d)
          want[size_t(((b * 3 + h) * 6 + int64_t(slot)) * 4 + d)] = vals[size_t(((b * 2 + t) * 3 + h) * 4 + d)];
    }
  ops::kv_cache_write(cache, values, ints(slots, {2, 2}));
  EXPECT_EQ(cache.to_doubles(), want);
}

TEST(DecodeKernels, RopeAtPositionsMatchesRopeAtEachOffset) {
  ops::RopeConfig config;
  Tensor x = random_normal({3, 2, 2, 8}, 6, DType::f32);
  const std::vector<double> positions = {0, 17, 9000};
  Tensor got = ops::rope_at_positions(x, ints(positions, {3}), config);
  for (int64_t b = 0; b < 3; ++b) {
    Tensor want = ops::rope(autograd::leaf(x.narrow(0, b, 1).contiguous()), config, int64_t(positions[size_t(b)]))->value;
    EXPECT_EQ(got.narrow(0, b, 1).to_doubles(), want.to_doubles()) << "sequence " << b;
  }
}

TEST(DecodeKernels, ConvStateUpdateMatchesNaiveConv) {
  const int64_t batch = 2, channels = 5, width = 4;
  Tensor state = random_normal({batch, channels, width - 1}, 7, DType::f32), x = random_normal({batch, channels}, 8, DType::f32);
  Tensor weight = random_normal({channels, width}, 9, DType::f32), bias = random_normal({channels}, 10, DType::f32);
  const auto S = state.to_doubles(), X = x.to_doubles(), W = weight.to_doubles(), Bs = bias.to_doubles();
  std::vector<double> want_out, want_state;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < channels; ++c) {
      std::vector<double> window;
      for (int64_t k = 0; k < width - 1; ++k) window.push_back(S[size_t((b * channels + c) * (width - 1) + k)]);
      window.push_back(X[size_t(b * channels + c)]);
      double v = Bs[size_t(c)];
      for (int64_t k = 0; k < width; ++k) v += W[size_t(c * width + k)] * window[size_t(k)];
      want_out.push_back(v / (1 + std::exp(-v)));
      want_state.insert(want_state.end(), window.begin() + 1, window.end());
    }
  Tensor out = ops::conv_state_update(state, x, weight, bias);
  EXPECT_TRUE(all_close(out, want_out, 1e-5, 1e-6));
  EXPECT_EQ(state.to_doubles(), want_state);
}

TEST(DecodeKernels, SsmStateUpdateMatchesRecurrence) {
  const int64_t batch = 2, heads = 4, p = 3, groups = 2, n = 5;
  Tensor state = random_normal({batch, heads, p, n}, 11, DType::f32), x = random_normal({batch, heads * p}, 12, DType::f32);
  Tensor dt = random_normal({batch, heads}, 13, DType::f32), B = random_normal({batch, groups * n}, 14, DType::f32);
  Tensor C = random_normal({batch, groups * n}, 15, DType::f32), dt_bias = random_normal({heads}, 16, DType::f32);
  Tensor A_log = random_normal({heads}, 17, DType::f32), D = random_normal({heads}, 18, DType::f32);
  ops::SsdOptions options;
  options.dt_min = 0.05;
  options.dt_max = 2.0;
  const auto S = state.to_doubles(), X = x.to_doubles(), DT = dt.to_doubles(), Bv = B.to_doubles(), Cv = C.to_doubles();
  const auto bias = dt_bias.to_doubles(), alog = A_log.to_doubles(), Dv = D.to_doubles();
  std::vector<double> want_y, want_state;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const double u = DT[size_t(b * heads + h)] + bias[size_t(h)];
      const double delta = std::clamp(std::log1p(std::exp(u)), 0.05, 2.0);
      const double alpha = std::exp(-delta * std::exp(alog[size_t(h)]));
      const int64_t g = h / (heads / groups);
      for (int64_t i = 0; i < p; ++i) {
        const double xi = X[size_t((b * heads + h) * p + i)];
        double y = Dv[size_t(h)] * xi;
        for (int64_t j = 0; j < n; ++j) {
          const double s = alpha * S[size_t(((b * heads + h) * p + i) * n + j)] + delta * xi * Bv[size_t((b * groups + g) * n + j)];
          want_state.push_back(s);
          y += s * Cv[size_t((b * groups + g) * n + j)];
        }
        want_y.push_back(y);
      }
    }
  Tensor y = ops::ssm_state_update(state, x, dt, dt_bias, A_log, B, C, D, options);
  EXPECT_TRUE(all_close(y, want_y, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(state, want_state, 1e-5, 1e-6));
  EXPECT_NE(testing::error_of([&] {
              ops::ssm_state_update(state, x, dt, dt_bias, A_log, random_normal({batch, 7}, 19, DType::f32),
                                    random_normal({batch, 7}, 20, DType::f32), D, options);
            }).find("but B has shape"),
            std::string::npos);
}

// Rows every `every` columns of a fresh (rows, columns, every) tensor: not rows at a stride (the
// columns are not unit-stride), so the ops fall back to a contiguous copy.
Tensor spaced_columns(int64_t rows, int64_t columns, int64_t every, uint64_t seed, DType dtype) {
  return random_normal({rows, columns, every}, seed, dtype).select(2, 0);
}

TEST(DecodeKernels, ConvStateUpdateReadsStridedRowsAsContiguous) {
  const int64_t batch = 3, channels = 7, width = 4;
  for (DType dtype : {DType::f32, DType::f64}) {
    // Columns 5..11 of 19-wide rows (an odd offset and stride, as an unaligned in_proj slice), and
    // every other column of a wider tensor.
    for (const Tensor& x : {random_normal({batch, 19}, 21, dtype).narrow(1, 5, channels),
                            spaced_columns(batch, channels, 2, 22, dtype)}) {
      SCOPED_TRACE(x.describe());
      ASSERT_FALSE(x.is_contiguous());
      Tensor weight = random_normal({channels, width}, 23, dtype), bias = random_normal({channels}, 24, dtype);
      Tensor state = random_normal({batch, channels, width - 1}, 25, dtype), want_state = state.clone();
      Tensor want = ops::conv_state_update(want_state, x.contiguous(), weight, bias);
      Tensor got = ops::conv_state_update(state, x, weight, bias);
      EXPECT_EQ(got.to_doubles(), want.to_doubles());
      EXPECT_EQ(state.to_doubles(), want_state.to_doubles());
    }
  }
}

TEST(DecodeKernels, SsmStateUpdateReadsStridedRowsAsContiguous) {
  const int64_t batch = 3, heads = 4, p = 3, groups = 2, n = 5;
  const int64_t xs = heads * p, gn = groups * n;
  ops::SsdOptions options;
  options.dt_min = 0.01;
  for (DType dtype : {DType::f32, DType::f64}) {
    // x | B | C | dt as column slices of one projection row (x at an odd offset), and each input from
    // a tensor of its own with another stride (dt not even rows at a stride).
    Tensor projection = random_normal({batch, 1 + xs + 2 * gn + heads + 2}, 31, dtype);
    struct Inputs {
      Tensor x, dt, B, C;
    };
    const Inputs shared{projection.narrow(1, 1, xs), projection.narrow(1, 1 + xs + 2 * gn, heads),
                        projection.narrow(1, 1 + xs, gn), projection.narrow(1, 1 + xs + gn, gn)};
    const Inputs separate{random_normal({batch, xs + 3}, 32, dtype).narrow(1, 2, xs),
                          spaced_columns(batch, heads, 3, 33, dtype),
                          random_normal({batch, 2, gn}, 34, dtype).select(1, 1),
                          random_normal({batch, gn + 1}, 35, dtype).narrow(1, 0, gn)};
    for (const Inputs& in : {shared, separate}) {
      Tensor dt_bias = random_normal({heads}, 36, dtype), A_log = random_normal({heads}, 37, dtype);
      Tensor D = random_normal({heads}, 38, dtype);
      Tensor state = random_normal({batch, heads, p, n}, 39, dtype), want_state = state.clone();
      Tensor want = ops::ssm_state_update(want_state, in.x.contiguous(), in.dt.contiguous(), dt_bias, A_log,
                                          in.B.contiguous(), in.C.contiguous(), D, options);
      Tensor got = ops::ssm_state_update(state, in.x, in.dt, dt_bias, A_log, in.B, in.C, D, options);
      EXPECT_EQ(got.to_doubles(), want.to_doubles()) << dtype_name(dtype);
      EXPECT_EQ(state.to_doubles(), want_state.to_doubles()) << dtype_name(dtype);
    }
  }
}

}  // namespace
}  // namespace braid
