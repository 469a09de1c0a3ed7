// The CUDA decode kernels (kernels/cuda/decode.h) against their CPU twins through the ops of
// layers/ops/decode.h: fp32 (1e-5) and bf16 (1e-2) activations, ragged lengths and odd sizes, masks
// with window + sink, several query tokens (chunked prefill), and caches long enough to be split.
#include "layers/ops/decode.h"
#include "tests/cuda/cuda_test_util.h"

namespace braid {
namespace {

using CudaDecode = testing::CudaTest;
using testing::close_to_reference;
using testing::random_normal;

const Device kGpu = Device::cuda(0);

// The activation as both runs read it: rounded to `dtype` first.
Tensor as_read(const Tensor& host, DType dtype) { return dtype == DType::bf16 ? host.to(DType::bf16).to(DType::f32) : host; }
Tensor on_gpu(const Tensor& host, DType dtype) { return host.to(dtype).to(kGpu); }
std::vector<double> back(const Tensor& gpu) { return gpu.to(Device::cpu()).to(DType::f32).to_doubles(); }
Tensor ints(const std::vector<double>& values, const Shape& shape) { return Tensor::from_values(values, shape, DType::i32); }

Tensor normal(const Shape& shape, uint64_t seed, DType dtype) {
  return as_read(random_normal(shape, seed, DType::f32), dtype);
}

void expect_cache_attention(int64_t batch, int64_t queries, int64_t hq, int64_t hk, int64_t dk, int64_t dv,
                            int64_t capacity, const std::vector<double>& lengths, ops::AttentionOptions mask,
                            DType dtype, double rtol, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "B " << batch << " Tq " << queries << " S " << capacity << " window "
                                    << mask.window << " " << dtype_name(dtype));
  Tensor q = normal({batch, queries, hq, dk}, seed, dtype), k = normal({batch, hk, capacity, dk}, seed + 1, dtype);
  Tensor v = normal({batch, hk, capacity, dv}, seed + 2, dtype), len = ints(lengths, {batch});
  Tensor want = ops::cache_attention(q, k, v, len, mask);
  Tensor got = ops::cache_attention(on_gpu(q, dtype), on_gpu(k, dtype), on_gpu(v, dtype), len.to(kGpu), mask);
  EXPECT_TRUE(close_to_reference(back(got), want.to_doubles(), rtol));
}

TEST_F(CudaDecode, CacheAttentionMatchesCpu) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const double rtol = dtype == DType::f32 ? 1e-5 : 1e-2;
    // Decode: one token, ragged lengths, GQA 4:1, Q/K dim 72 and V dim 128 (the intra-hybrid heads).
    expect_cache_attention(3, 1, 8, 2, 72, 128, 700, {700, 1, 333}, {}, dtype, rtol, 10);
    // W-layer decode reads a full ring with no mask; chunked prefill uses window + sink.
    expect_cache_attention(2, 5, 4, 4, 64, 64, 90, {90, 37}, {16, 3, 0}, dtype, rtol, 20);
    expect_cache_attention(1, 7, 6, 3, 33, 17, 64, {64}, {}, dtype, rtol, 30);
    // A long cache split across many CTAs, then merged through the LSE.
    expect_cache_attention(1, 1, 4, 1, 128, 128, 9000, {8999}, {}, dtype, rtol, 40);
    expect_cache_attention(2, 1, 2, 2, 64, 64, 5000, {4097, 1200}, {512, 64, 0}, dtype, rtol, 50);
  }
}

TEST_F(CudaDecode, KvCacheWriteMatchesCpu) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    Tensor cache = normal({2, 3, 11, 5}, 60, dtype), values = normal({2, 4, 3, 5}, 61, dtype);
    Tensor slots = ints({0, 10, -1, 4, 7, 2, 3, -1}, {2, 4});
    Tensor gpu_cache = on_gpu(cache, dtype);
    ops::kv_cache_write(cache, values, slots);
    ops::kv_cache_write(gpu_cache, on_gpu(values, dtype), slots.to(kGpu));
    EXPECT_EQ(back(gpu_cache), cache.to_doubles());
  }
}

TEST_F(CudaDecode, RopeAtPositionsMatchesCpu) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    ops::RopeConfig config;
    Tensor x = normal({3, 2, 5, 72}, 70, dtype), positions = ints({0, 8191, 40000}, {3});
    Tensor want = ops::rope_at_positions(x, positions, config);
    Tensor got = ops::rope_at_positions(on_gpu(x, dtype), positions.to(kGpu), config);
    EXPECT_TRUE(close_to_reference(back(got), want.to_doubles(), dtype == DType::f32 ? 1e-5 : 1e-2));
  }
}

TEST_F(CudaDecode, ConvStateUpdateMatchesCpu) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (int64_t channels : {int64_t(37), int64_t(2304 + 256)}) {
      Tensor state = normal({3, channels, 3}, 80, dtype), x = normal({3, channels}, 81, dtype);
      Tensor weight = random_normal({channels, 4}, 82, DType::f32), bias = random_normal({channels}, 83, DType::f32);
      Tensor gpu_state = on_gpu(state, dtype);
      Tensor want = ops::conv_state_update(state, x, weight, bias);
      Tensor got = ops::conv_state_update(gpu_state, on_gpu(x, dtype), weight.to(kGpu), bias.to(kGpu));
      const double rtol = dtype == DType::f32 ? 1e-5 : 1e-2;
      EXPECT_TRUE(close_to_reference(back(got), want.to_doubles(), rtol));
      EXPECT_EQ(back(gpu_state), state.to_doubles());  // a shift and a copy: exact
    }
  }
}

TEST_F(CudaDecode, SsmStateUpdateMatchesCpu) {
  struct Shape5 {
    int64_t batch, heads, head_dim, groups, state;
  };
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const Shape5& s : {Shape5{3, 5, 33, 1, 128}, Shape5{2, 4, 16, 2, 16}, Shape5{4, 16, 144, 1, 128}}) {
      SCOPED_TRACE(::testing::Message() << "H " << s.heads << " P " << s.head_dim << " " << dtype_name(dtype));
      Tensor state = random_normal({s.batch, s.heads, s.head_dim, s.state}, 90, DType::f32);
      Tensor x = normal({s.batch, s.heads, s.head_dim}, 91, dtype), dt = normal({s.batch, s.heads}, 92, dtype);
      Tensor B = normal({s.batch, s.groups, s.state}, 93, dtype), C = normal({s.batch, s.groups, s.state}, 94, dtype);
      Tensor dt_bias = random_normal({s.heads}, 95, DType::f32), A_log = random_normal({s.heads}, 96, DType::f32);
      Tensor D = random_normal({s.heads}, 97, DType::f32);
      ops::SsdOptions options;
      Tensor gpu_state = state.to(kGpu);
      Tensor want = ops::ssm_state_update(state, x, dt, dt_bias, A_log, B, C, D, options);
      Tensor got = ops::ssm_state_update(gpu_state, on_gpu(x, dtype), on_gpu(dt, dtype), dt_bias.to(kGpu),
                                         A_log.to(kGpu), on_gpu(B, dtype), on_gpu(C, dtype), D.to(kGpu), options);
      const double rtol = dtype == DType::f32 ? 1e-5 : 1e-2;
      EXPECT_TRUE(close_to_reference(back(got), want.to_doubles(), rtol));
      EXPECT_TRUE(close_to_reference(back(gpu_state), state.to_doubles(), 1e-5));  // fp32 state either way
    }
  }
}

}  // namespace
}  // namespace braid
