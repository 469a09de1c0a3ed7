// ops::decode_step_indices: a decode step's positions, slots and lengths advanced in place from the
// tokens each sequence holds, against window_slot() and the layout rules of layers/inference_cache.h,
// over enough steps to wrap a window ring several times.
#include <gtest/gtest.h>

#include <algorithm>

#include "layers/inference_cache.h"
#include "layers/ops/decode.h"

namespace braid {
namespace {

void expect_steps(const std::vector<int64_t>& start, int64_t window, int64_t sink, int64_t window_capacity) {
  const int64_t batch = int64_t(start.size());
  std::vector<double> initial(size_t(5 * batch), -7.0);  // rows 0-3 are outputs: start them as junk
  for (int64_t b = 0; b < batch; ++b) initial[size_t(4 * batch + b)] = double(start[size_t(b)]);
  Tensor indices = Tensor::from_values(initial, {5, batch}, DType::i32);
  for (int64_t step = 0; step < 25; ++step) {
    ops::decode_step_indices(indices, window, sink, window_capacity);
    const std::vector<double> got = indices.to_doubles();
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t position = start[size_t(b)] + step;
      const int64_t slot = window > 0 ? window_slot(position, window, sink) : position;
      EXPECT_EQ(got[size_t(b)], position) << "step " << step << " sequence " << b;
      EXPECT_EQ(got[size_t(batch + b)], position + 1);
      EXPECT_EQ(got[size_t(2 * batch + b)], slot);
      EXPECT_EQ(got[size_t(3 * batch + b)], std::min(position + 1, window_capacity));
      EXPECT_EQ(got[size_t(4 * batch + b)], position + 1);
    }
  }
}

TEST(DecodeStepIndices, FollowsTheCacheLayouts) {
  expect_steps({1, 6, 13}, 5, 2, 7);    // sink 2 + ring of 5
  expect_steps({3, 4}, 4, 0, 4);        // ring only
  expect_steps({2, 9, 1}, 0, 0, 64);    // no window: slot = position
}

TEST(DecodeStepIndices, RejectsBadIndices) {
  EXPECT_THROW(ops::decode_step_indices(Tensor::zeros({4, 2}, DType::i32), 0, 0, 8), Error);
  EXPECT_THROW(ops::decode_step_indices(Tensor::zeros({5, 2}, DType::f32), 0, 0, 8), Error);
  EXPECT_THROW(ops::decode_step_indices(Tensor::zeros({5, 2}, DType::i32), -1, 0, 8), Error);
}

}  // namespace
}  // namespace braid
