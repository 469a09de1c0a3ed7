// Embedding lookup: forward against a naive gather, the table's gradient through gradcheck, and the
// messages for bad ids.
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "layers/ops/embedding.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::error_of;
using testing::random_normal;

// Uniform random ids in [0, vocab), stored as `dtype`.
Tensor random_ids(const Shape& shape, int64_t vocab, uint64_t seed, DType dtype) {
  std::vector<double> ids = testing::random_uniform(shape, seed, 0.0, double(vocab)).to_doubles();
  for (double& id : ids) id = std::floor(id);
  return Tensor::from_values(ids, shape, dtype);
}

std::vector<double> naive_embedding(const Tensor& table, const Tensor& ids) {
  const int64_t dim = table.size(1);
  std::vector<double> rows = table.to_doubles(), out;
  for (double id : ids.to_doubles())
    for (int64_t j = 0; j < dim; ++j) out.push_back(rows[size_t(int64_t(id) * dim + j)]);
  return out;
}

TEST(Embedding, ForwardMatchesNaiveGather) {
  struct Case {
    Shape ids_shape;
    int64_t vocab, dim;
    DType ids_dtype;
  };
  for (const Case& c : {Case{{2, 3}, 11, 5, DType::i32}, Case{{7}, 50, 33, DType::i64},
                        Case{{3, 1, 4}, 9, 2, DType::u16}, Case{{5}, 300, 7, DType::u32}}) {
    Tensor table = random_normal({c.vocab, c.dim}, 501, DType::f32);
    Tensor ids = random_ids(c.ids_shape, c.vocab, 502, c.ids_dtype);
    Var out = ops::embedding(leaf(table), leaf(ids));
    Shape out_shape = c.ids_shape;
    out_shape.push_back(c.dim);
    EXPECT_EQ(out->value.shape(), out_shape);
    EXPECT_TRUE(all_close(out->value, naive_embedding(table, ids), 0, 0))
        << dtype_name(c.ids_dtype);
  }
}

TEST(Embedding, RowsInAnotherDtypeAreTheTableRows) {
  Tensor table = random_normal({13, 6}, 505, DType::f32);
  Tensor ids = random_ids({2, 4}, 13, 506, DType::i32);
  Var out = ops::embedding(leaf(table), leaf(ids), DType::f64);
  EXPECT_EQ(out->value.dtype(), DType::f64);
  EXPECT_EQ(out->value.shape(), (Shape{2, 4, 6}));
  EXPECT_TRUE(all_close(out->value, naive_embedding(table, ids), 0, 0));  // f32 -> f64 is exact
}

TEST(Embedding, Gradcheck) {
  // Few rows and more ids than rows, so ids repeat and their gradients must add up.
  for (const auto& [ids_shape, vocab, dim] : {std::tuple{Shape{9}, int64_t(4), int64_t(3)},
                                              std::tuple{Shape{2, 5}, int64_t(6), int64_t(5)}}) {
    auto result = autograd::gradcheck(
        [](const std::vector<Var>& in) { return ops::embedding(in[0], in[1]); },
        {random_normal({vocab, dim}, 511), random_ids(ids_shape, vocab, 512, DType::i32)});
    EXPECT_TRUE(result.ok) << result.report;
  }
}

TEST(Embedding, TableGradientScatterAddsInOrderAndIdsGetNone) {
  const int64_t vocab = 37, dim = 19;
  Tensor ids = random_ids({6, 41}, vocab, 521, DType::i64);
  Var table = leaf(random_normal({vocab, dim}, 522, DType::f32), true), ids_var = leaf(ids);
  Var out = ops::embedding(table, ids_var);
  Tensor seed = random_normal({6, 41, dim}, 523, DType::f32);
  autograd::backward({out}, {seed});
  std::vector<double> d_out = seed.to_doubles(), id = ids.to_doubles();
  std::vector<double> expected(size_t(vocab * dim), 0.0);
  for (size_t i = 0; i < id.size(); ++i)
    for (int64_t j = 0; j < dim; ++j)
      expected[size_t(int64_t(id[i]) * dim + j)] += d_out[i * size_t(dim) + size_t(j)];
  EXPECT_TRUE(all_close(table->grad, expected, 1e-6, 1e-6));
  EXPECT_FALSE(ids_var->grad.defined());
}

TEST(Embedding, OutOfRangeIdNamesIdPositionAndVocab) {
  Var table = leaf(random_normal({11, 4}, 531, DType::f32));
  for (double bad : {11.0, -1.0}) {
    Tensor ids = Tensor::from_values({0, 3, 10, 2, 5, bad}, {2, 3}, DType::i32);
    std::string message = error_of([&] { ops::embedding(table, leaf(ids)); });
    EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                        str("token id ", int64_t(bad), " at position [1, 2]"), message);
    EXPECT_PRED_FORMAT2(::testing::IsSubstring, "V = 11", message);
  }
}

TEST(Embedding, RejectsFloatIdsAndNonMatrixTable) {
  Var table = leaf(random_normal({11, 4}, 541, DType::f32));
  std::string message =
      error_of([&] { ops::embedding(table, leaf(random_normal({3}, 542, DType::f32))); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "embedding: ids must be an integer tensor, got f32[3]", message);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "[11, 4]", message);
  message = error_of([&] {
    ops::embedding(leaf(random_normal({44}, 543, DType::f32)),
                   leaf(random_ids({3}, 4, 544, DType::i32)));
  });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "embedding: table must have 2 dimensions, got shape [44]", message);
}

}  // namespace
}  // namespace braid
