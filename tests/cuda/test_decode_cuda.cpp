// The CUDA decode kernels (kernels/cuda/decode.h) against their CPU twins through the ops of
// layers/ops/decode.h: fp32 (1e-5) and bf16 (1e-2) activations, ragged lengths and odd sizes, masks
// with window + sink, several query tokens (chunked prefill), and caches long enough to be split.
// Cache attention is covered per GQA group a CTA packs (1, 2, 4, 8, and 3 / 12 that pad or take
// two head blocks), per head dims (16-byte chunks or the element path), and per split count.
#include <algorithm>

#include "kernels/cuda/decode.h"
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
  SCOPED_TRACE(::testing::Message() << "B " << batch << " Tq " << queries << " Hq " << hq << " Hk " << hk << " Dqk "
                                    << dk << " Dv " << dv << " S " << capacity << " window " << mask.window
                                    << " sink " << mask.sink << " " << dtype_name(dtype));
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

// One token per sequence over ragged lengths (a full cache not a multiple of the tile, a single
// key, one ending mid-tile) for each group size, at the presets' head dims (64, 96, 128; Q/K 72,
// 64, 48, 96 with V 128, 128, 96, 192; the tiny 8 with 16) and at dims the 16-byte path cannot
// take (V 20: fp32 chunks, bf16 elements).
TEST_F(CudaDecode, CacheAttentionGroupsAndHeadDims) {
  struct HeadDims {
    int64_t qk, v;
  };
  uint64_t seed = 100;
  for (DType dtype : {DType::f32, DType::bf16}) {
    const double rtol = dtype == DType::f32 ? 1e-5 : 1e-2;
    for (int64_t group : {1, 2, 4, 8})
      for (HeadDims dims : {HeadDims{64, 64}, HeadDims{96, 96}, HeadDims{128, 128}, HeadDims{72, 128},
                            HeadDims{64, 128}, HeadDims{48, 96}, HeadDims{96, 192}, HeadDims{8, 16},
                            HeadDims{64, 20}}) {
        expect_cache_attention(3, 1, 2 * group, 2, dims.qk, dims.v, 777, {777, 1, 450}, {}, dtype, rtol, seed);
        seed += 3;
      }
  }
}

// Groups that do not fill a power-of-two CTA (3: one padding head) or exceed one (12: 8 + 4 heads).
TEST_F(CudaDecode, CacheAttentionOddAndLargeGroups) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const double rtol = dtype == DType::f32 ? 1e-5 : 1e-2;
    expect_cache_attention(2, 1, 6, 2, 64, 128, 333, {333, 200}, {}, dtype, rtol, 200);
    expect_cache_attention(2, 2, 12, 1, 128, 128, 1000, {1000, 517}, {}, dtype, rtol, 210);
  }
}

// Many splits merged through the LSE (8192 slots: 64 splits, of which a 4999-key row fills 40),
// chunked-prefill rows over the cache, and window + sink masks whose gap between the sink and the
// window skips whole tiles and leaves whole splits empty (LSE -inf in the merge).
TEST_F(CudaDecode, CacheAttentionLongCachesPrefillAndWindows) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const double rtol = dtype == DType::f32 ? 1e-5 : 1e-2;
    expect_cache_attention(2, 1, 8, 2, 128, 128, 8192, {4999, 8192}, {}, dtype, rtol, 300);
    expect_cache_attention(2, 17, 8, 2, 72, 128, 600, {600, 40}, {0, 0, 0.2}, dtype, rtol, 310);
    expect_cache_attention(2, 3, 8, 2, 64, 128, 1000, {1000, 300}, {100, 4, 0}, dtype, rtol, 320);
    expect_cache_attention(3, 4, 4, 1, 128, 64, 2000, {2000, 50, 700}, {256, 0, 0}, dtype, rtol, 330);
  }
}

// The split rule needs no GPU: a full cache gives each CTA 128 to 512 slots, and the workspace holds
// a partial row and an LSE per (row, query head, split) exactly when there are several splits.
TEST(CudaDecodePlan, SplitsBoundTheSlotsOfEachCta) {
  using kernels::cuda::CacheAttentionDims;
  for (int64_t capacity : {1, 64, 500, 2048, 8192, 32768, 100000}) {
    for (const CacheAttentionDims& base : {CacheAttentionDims{4, 1, 16, 4, 72, 128, 0},
                                           CacheAttentionDims{1, 1, 8, 8, 128, 128, 0},
                                           CacheAttentionDims{1, 512, 32, 4, 64, 64, 0}}) {
      CacheAttentionDims dims = base;
      dims.capacity = capacity;
      SCOPED_TRACE(::testing::Message() << "S " << capacity << " rows " << dims.batch * dims.queries);
      const int64_t splits = kernels::cuda::cache_attention_splits(dims);
      EXPECT_GE(splits, 1);
      EXPECT_GE(splits * 512, capacity);
      EXPECT_LE(splits, std::max<int64_t>(1, (capacity + 127) / 128));
      const size_t per_split = size_t(dims.batch * dims.queries * dims.q_heads * (dims.v_dim + 1));
      EXPECT_EQ(kernels::cuda::cache_attention_workspace_floats(dims), splits == 1 ? 0 : per_split * size_t(splits));
    }
  }
  // The 1b intra decode (B 4, Hq 16, Hk 4): 16 CTAs per split, so 16 splits of 128 slots at 2K
  // and 33 of ~256 at 8K fill the card.
  EXPECT_EQ(kernels::cuda::cache_attention_splits({4, 1, 16, 4, 72, 128, 2048}), 16);
  EXPECT_EQ(kernels::cuda::cache_attention_splits({4, 1, 16, 4, 72, 128, 8192}), 33);
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
      Tensor x = normal({s.batch, s.heads * s.head_dim}, 91, dtype), dt = normal({s.batch, s.heads}, 92, dtype);
      Tensor B = normal({s.batch, s.groups * s.state}, 93, dtype), C = normal({s.batch, s.groups * s.state}, 94, dtype);
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

// The decode path's inputs are column slices of in_proj's output rows (x | B | C and dt at offsets
// that need not be 16-byte aligned), read in place: the GPU on such views against the CPU on
// contiguous copies.
TEST_F(CudaDecode, ConvStateUpdateReadsStridedRows) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (int64_t channels : {int64_t(37), int64_t(2304 + 256)}) {
      SCOPED_TRACE(::testing::Message() << "C " << channels << " " << dtype_name(dtype));
      const int64_t offset = 3, row = channels + 2 * offset + 1;
      Tensor wide = normal({3, row}, 84, dtype), state = normal({3, channels, 3}, 85, dtype);
      Tensor weight = random_normal({channels, 4}, 86, DType::f32), bias = random_normal({channels}, 87, DType::f32);
      Tensor gpu_state = on_gpu(state, dtype);
      Tensor want = ops::conv_state_update(state, wide.narrow(1, offset, channels).contiguous(), weight, bias);
      Tensor got = ops::conv_state_update(gpu_state, on_gpu(wide, dtype).narrow(1, offset, channels), weight.to(kGpu),
                                          bias.to(kGpu));
      EXPECT_TRUE(close_to_reference(back(got), want.to_doubles(), dtype == DType::f32 ? 1e-5 : 1e-2));
      EXPECT_EQ(back(gpu_state), state.to_doubles());
    }
  }
}

TEST_F(CudaDecode, SsmStateUpdateReadsStridedRows) {
  struct Shape5 {
    int64_t batch, heads, head_dim, groups, state;
  };
  for (DType dtype : {DType::f32, DType::bf16}) {
    // The 1b intra branch (16 heads of 144, one group of 128), a ragged one, and two groups.
    for (const Shape5& s : {Shape5{4, 16, 144, 1, 128}, Shape5{3, 5, 33, 1, 128}, Shape5{2, 4, 16, 2, 16}}) {
      SCOPED_TRACE(::testing::Message() << "H " << s.heads << " P " << s.head_dim << " " << dtype_name(dtype));
      const int64_t xs = s.heads * s.head_dim, gn = s.groups * s.state;
      // One projection row: z | x | B | C | dt | 1 spare, so x starts at an odd offset.
      const int64_t x0 = 1 + xs, b0 = x0 + xs, c0 = b0 + gn, dt0 = c0 + gn, row = dt0 + s.heads + 1;
      Tensor projection = normal({s.batch, row}, 100, dtype), gpu_projection = on_gpu(projection, dtype);
      Tensor state = random_normal({s.batch, s.heads, s.head_dim, s.state}, 101, DType::f32);
      Tensor dt_bias = random_normal({s.heads}, 102, DType::f32), A_log = random_normal({s.heads}, 103, DType::f32);
      Tensor D = random_normal({s.heads}, 104, DType::f32);
      ops::SsdOptions options;
      Tensor gpu_state = state.to(kGpu);
      auto part = [](const Tensor& t, int64_t start, int64_t length) { return t.narrow(1, start, length); };
      Tensor want = ops::ssm_state_update(state, part(projection, x0, xs).contiguous(),
                                          part(projection, dt0, s.heads).contiguous(), dt_bias, A_log,
                                          part(projection, b0, gn).contiguous(), part(projection, c0, gn).contiguous(),
                                          D, options);
      Tensor got = ops::ssm_state_update(gpu_state, part(gpu_projection, x0, xs), part(gpu_projection, dt0, s.heads),
                                         dt_bias.to(kGpu), A_log.to(kGpu), part(gpu_projection, b0, gn),
                                         part(gpu_projection, c0, gn), D.to(kGpu), options);
      EXPECT_TRUE(close_to_reference(back(got), want.to_doubles(), dtype == DType::f32 ? 1e-5 : 1e-2));
      EXPECT_TRUE(close_to_reference(back(gpu_state), state.to_doubles(), 1e-5));
    }
  }
}

}  // namespace
}  // namespace braid
