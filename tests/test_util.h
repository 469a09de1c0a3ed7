// Helpers shared by the test suites: fresh random inputs and element-wise comparison.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace braid::testing {

// Normal(0, stddev) values; every call with a new `seed` gives new numbers.
inline Tensor random_normal(const Shape& shape, uint64_t seed, DType dtype = DType::f64,
                            double stddev = 1.0) {
  Tensor tensor = Tensor::empty(shape, dtype);
  fill_normal(tensor, seed, 0, 0.0, stddev);
  return tensor;
}

inline Tensor random_uniform(const Shape& shape, uint64_t seed, double low, double high,
                             DType dtype = DType::f64) {
  Tensor tensor = Tensor::empty(shape, dtype);
  fill_uniform(tensor, seed, 0, low, high);
  return tensor;
}

// |actual - expected| <= atol + rtol * |expected| for every element; reports the worst one.
inline ::testing::AssertionResult all_close(const std::vector<double>& actual,
                                            const std::vector<double>& expected, double rtol,
                                            double atol) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure()
           << "size " << actual.size() << " vs expected " << expected.size();
  double worst = 0;
  size_t worst_index = 0;
  bool ok = true;
  for (size_t i = 0; i < actual.size(); ++i) {
    double excess = std::abs(actual[i] - expected[i]) - (atol + rtol * std::abs(expected[i]));
    if (!(excess <= 0) && (ok || excess > worst || std::isnan(excess))) {
      ok = false;
      worst = excess;
      worst_index = i;
    }
  }
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "element " << worst_index << ": got " << actual[worst_index] << ", expected "
         << expected[worst_index] << " (rtol " << rtol << ", atol " << atol << ")";
}

inline ::testing::AssertionResult all_close(const Tensor& actual, const std::vector<double>& expected,
                                            double rtol, double atol) {
  return all_close(actual.to_doubles(), expected, rtol, atol);
}

// The message of the braid::Error that `action` raises, checked to be one line; a failure when it
// raises none.
template <typename Action>
std::string error_of(Action&& action) {
  try {
    action();
  } catch (const Error& error) {
    EXPECT_EQ(std::string(error.what()).find('\n'), std::string::npos) << "not one line: " << error.what();
    return error.message();
  }
  ADD_FAILURE() << "expected braid::Error";
  return "";
}

// Ids below `bound` from a fixed LCG: deterministic, distinct-looking, never all zeros.
inline std::vector<uint32_t> sample_ids(size_t count, uint64_t bound, uint64_t seed) {
  std::vector<uint32_t> ids(count);
  uint64_t state = seed * 2654435761u + 1;
  for (uint32_t& id : ids) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    id = uint32_t((state >> 33) % bound);
  }
  return ids;
}

}  // namespace braid::testing
