// Shared by the CUDA suites: skip (saying why) when no device is present.
#pragma once

#include <gtest/gtest.h>

#include "runtime/device.h"

namespace braid::testing {

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device on this machine; CUDA tests need a GPU";
  }
};

}  // namespace braid::testing
