// ops::embedding on a CUDA device against the CPU backend: the gathered rows and the table's
// gradient (sorted, segmented, atomics-free) for every id dtype, repeated ids, ids 0 and V-1, long
// runs of one id, odd and 16-byte-multiple widths; the gradient equal to the CPU's bit for bit and
// the same on every run; the bf16 output of the kernel, and of the op when the inference step asks
// for it (with i32 ids read as given); and the out-of-range message.
#include <algorithm>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "kernels/cuda/embedding.h"
#include "layers/ops/embedding.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::OpInput;

using CudaEmbedding = testing::CudaTest;

// The gather copies; each gradient row adds f32 values in position order on both sides.
constexpr double kF32Rtol = 1e-5;

// Ids in [0, vocab) that include 0 and vocab - 1, repeat, and (with `heavy`) give one id a third
// of all positions, as a frequent token would.
Tensor make_ids(const Shape& shape, int64_t vocab, uint64_t seed, DType dtype, bool heavy = false) {
  const int64_t n = shape_numel(shape);
  std::vector<uint32_t> sampled = testing::sample_ids(size_t(n), uint64_t(vocab), seed);
  std::vector<double> ids(sampled.begin(), sampled.end());
  if (n > 0) ids[0] = double(vocab - 1);
  if (n > 1) ids[size_t(n - 1)] = 0;
  if (n > 3) ids[size_t(n / 2)] = ids[1];  // a repeat even when the vocabulary is large
  if (heavy)
    for (int64_t i = 2; i < n; i += 3) ids[size_t(i)] = double(vocab / 2);
  return Tensor::from_values(ids, shape, dtype);
}

struct EmbeddingCase {
  Shape ids_shape;
  int64_t vocab, dim;
  DType ids_dtype;
  bool heavy;
};

TEST_F(CudaEmbedding, RowsAndTableGradientMatchTheCpu) {
  const std::vector<EmbeddingCase> cases = {
      {{1}, 7, 5, DType::i32, false},             // T = 1, odd width: scalar path
      {{3}, 11, 33, DType::i64, false},           // more rows than ids
      {{2, 37}, 50, 64, DType::u16, false},       // ids repeat: more ids than rows
      {{3, 1, 4}, 9, 2, DType::u32, false},       // width below one vector
      {{300}, 1000, 68, DType::i32, true},        // a long run of one id
      {{2, 300}, 4099, 2048, DType::i64, false},  // the 1B width
      {{1, 300}, 3, 300, DType::u32, false},      // every id repeated ~100 times
  };
  uint64_t seed = 100;
  // The table is a parameter (f32 in both runs) and the ids are constants, so the bf16 run reads
  // the same numbers as the f32 one; it is kept to show the op ignores the activation dtype.
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const EmbeddingCase& c : cases) {
      SCOPED_TRACE(shape_str(c.ids_shape) + " V " + std::to_string(c.vocab) + " d " +
                   std::to_string(c.dim) + " ids " + dtype_name(c.ids_dtype) + " " +
                   dtype_name(dtype));
      testing::expect_cuda_matches_cpu(
          [](const std::vector<Var>& in) { return std::vector<Var>{ops::embedding(in[0], in[1])}; },
          {{testing::random_normal({c.vocab, c.dim}, seed, DType::f32), OpInput::Role::parameter},
           {make_ids(c.ids_shape, c.vocab, seed + 1, c.ids_dtype, c.heavy),
            OpInput::Role::constant}},
          dtype, kF32Rtol, seed + 2);
      seed += 10;
    }
  }
}

// The table's gradient on the GPU for ids and seed gradient on the host.
std::vector<double> gpu_table_gradient(const Tensor& table, const Tensor& ids, const Tensor& seed) {
  Var table_var = leaf(table.to(Device::cuda(0)), true);
  Var out = ops::embedding(table_var, leaf(ids.to(Device::cuda(0))));
  autograd::backward({out}, {seed.to(Device::cuda(0))});
  EXPECT_TRUE(table_var->grad.device().is_cuda());
  EXPECT_EQ(table_var->grad.dtype(), DType::f32);
  return table_var->grad.to_doubles();
}

TEST_F(CudaEmbedding, TableGradientIsTheCpusBitForBitOnEveryRun) {
  // The same additions in the same order as the CPU twin, so even f32 agrees exactly.
  const int64_t vocab = 517, dim = 96;
  const Tensor table = testing::random_normal({vocab, dim}, 200, DType::f32);
  const Tensor ids = make_ids({4, 300}, vocab, 201, DType::i64, true);
  const Tensor seed = testing::random_normal({4, 300, dim}, 202, DType::f32);
  Var cpu_table = leaf(table.clone(), true);
  autograd::backward({ops::embedding(cpu_table, leaf(ids))}, {seed});
  const std::vector<double> want = cpu_table->grad.to_doubles();
  const std::vector<double> first = gpu_table_gradient(table, ids, seed);
  EXPECT_TRUE(first == want) << "the GPU table gradient differs from the CPU's";
  for (int run = 0; run < 2; ++run)
    EXPECT_TRUE(gpu_table_gradient(table, ids, seed) == first) << "run " << run << " differs";
}

TEST_F(CudaEmbedding, KernelWritesBf16Rows) {
  // The op outputs the table's f32; the kernel can also write bf16 activations directly.
  const int64_t vocab = 37, dim = 72, n = 45;
  const Tensor table = testing::random_normal({vocab, dim}, 300, DType::f32);
  const Tensor ids = make_ids({n}, vocab, 301, DType::i64);
  for (int64_t width : {dim, int64_t(7)}) {  // vector and scalar paths
    SCOPED_TRACE("width " + std::to_string(width));
    const Tensor narrow_table = table.narrow(1, 0, width).contiguous();
    const Tensor table_device = narrow_table.to(Device::cuda(0));
    const Tensor ids_device = ids.to(Device::cuda(0));
    Tensor out = Tensor::empty({n, width}, DType::bf16, Device::cuda(0));
    kernels::cuda::embedding_forward(table_device.data<float>(), ids_device.data<int64_t>(),
                                     out.raw_data(), n, width, DType::bf16, nullptr);
    const std::vector<double> rows = narrow_table.to(DType::bf16).to_doubles();
    const std::vector<double> id = ids.to_doubles();
    std::vector<double> want;
    for (double v : id)
      for (int64_t j = 0; j < width; ++j) want.push_back(rows[size_t(int64_t(v) * width + j)]);
    EXPECT_TRUE(out.to_doubles() == want);
  }
}

// The inference step's lookup: i32 ids as given (no tape), rows written in the activation dtype.
// bf16 rows are the table rounded to bf16, bit for bit what a cast after an f32 lookup gives.
TEST_F(CudaEmbedding, InferenceLookupWritesActivationRowsFromI32Ids) {
  autograd::NoGradScope no_grad;
  const int64_t vocab = 41, dim = 2048;
  const Tensor table = testing::random_normal({vocab, dim}, 310, DType::f32);
  const Tensor ids = make_ids({4, 1}, vocab, 311, DType::i32);
  const Var table_gpu = leaf(table.to(Device::cuda(0))), ids_gpu = leaf(ids.to(Device::cuda(0)));
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    Var rows = ops::embedding(table_gpu, ids_gpu, dtype);
    EXPECT_EQ(rows->value.dtype(), dtype);
    EXPECT_EQ(rows->value.shape(), (Shape{4, 1, dim}));
    const std::vector<double> table_rows = table.to(dtype).to_doubles(), id = ids.to_doubles();
    std::vector<double> want;
    for (double v : id)
      for (int64_t j = 0; j < dim; ++j) want.push_back(table_rows[size_t(int64_t(v) * dim + j)]);
    EXPECT_TRUE(rows->value.to_doubles() == want);
  }
}

TEST_F(CudaEmbedding, OutOfRangeIdGivesTheCpuMessage) {
  const Tensor table = testing::random_normal({11, 4}, 400, DType::f32);
  for (double bad : {11.0, -1.0}) {
    const Tensor ids = Tensor::from_values({0, 3, 10, 2, 5, bad}, {2, 3}, DType::i32);
    const std::string cpu = testing::error_of([&] { ops::embedding(leaf(table), leaf(ids)); });
    const std::string gpu = testing::error_of([&] {
      ops::embedding(leaf(table.to(Device::cuda(0))), leaf(ids.to(Device::cuda(0))));
    });
    EXPECT_EQ(gpu, cpu);
    EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                        str("token id ", int64_t(bad), " at position [1, 2]"), gpu);
    EXPECT_PRED_FORMAT2(::testing::IsSubstring, "V = 11", gpu);
  }
}

TEST_F(CudaEmbedding, IdsOnAnotherDeviceAreRefused) {
  const Tensor table = testing::random_normal({11, 4}, 500, DType::f32).to(Device::cuda(0));
  const Tensor ids = Tensor::from_values({0, 3}, {2}, DType::i32);
  const std::string message =
      testing::error_of([&] { ops::embedding(leaf(table), leaf(ids)); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "must be on the same device", message);
}

}  // namespace
}  // namespace braid
