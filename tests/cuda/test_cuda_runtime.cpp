// The runtime on a real CUDA device: the caching allocator over cudaMalloc, transfers and casts,
// and the Philox fills giving the host's numbers.
#include <cmath>

#include "runtime/caching_allocator.h"
#include "runtime/rng.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using CudaRuntime = testing::CudaTest;

TEST_F(CudaRuntime, CachingAllocatorReusesAndCounts) {
  Allocator& allocator = cuda_allocator(0);
  const AllocatorStats before = allocator.stats();
  void* first;
  {
    Tensor a = Tensor::empty({1000}, DType::f32, Device::cuda(0));  // 4000 B -> 4096 B class
    first = a.raw_data();
    AllocatorStats during = allocator.stats();
    EXPECT_EQ(during.allocated - before.allocated, 4096u);
    EXPECT_EQ(during.allocations - before.allocations, 1u);
  }
  const AllocatorStats freed = allocator.stats();
  EXPECT_EQ(freed.allocated, before.allocated);
  EXPECT_EQ(freed.frees - before.frees, 1u);
  Tensor b = Tensor::empty({1000}, DType::f32, Device::cuda(0));
  EXPECT_EQ(b.raw_data(), first);  // served from the cache
  EXPECT_EQ(allocator.stats().system_allocations, freed.system_allocations);
  EXPECT_GE(allocator.stats().reserved, allocator.stats().allocated);
}

TEST_F(CudaRuntime, OverAllocationRaisesWithReport) {
  try {
    Tensor::empty({int64_t(1) << 40}, DType::f32, Device::cuda(0));  // 4 TiB
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    std::string text = error.what();
    EXPECT_NE(text.find("out of memory on cuda:0"), std::string::npos) << text;
    EXPECT_NE(text.find("caching allocator"), std::string::npos) << text;
    EXPECT_NE(text.find("free)"), std::string::npos) << text;  // the device line
  }
  Tensor after = Tensor::full({16}, 2.0, DType::f32, Device::cuda(0));  // the device still works
  EXPECT_EQ(after.to_doubles()[15], 2.0);
}

TEST_F(CudaRuntime, TransfersAndCastsRoundTrip) {
  Tensor host = testing::random_normal({5, 7}, 31, DType::f32);
  Tensor device = host.to(Device::cuda(0));
  EXPECT_EQ(device.to_doubles(), host.to_doubles());
  // Cast on the device, then compare with the host cast.
  EXPECT_EQ(device.to(DType::bf16).to_doubles(), host.to(DType::bf16).to_doubles());
  // A strided device view copied to the host.
  Tensor columns = device.narrow(1, 2, 3);
  EXPECT_EQ(columns.to(Device::cpu()).to_doubles(), host.narrow(1, 2, 3).to_doubles());
  // Host -> strided device destination.
  Tensor target = Tensor::zeros({5, 7}, DType::f64, Device::cuda(0));
  target.narrow(1, 2, 3).copy_from(host.narrow(1, 0, 3));
  std::vector<double> got = target.to_doubles(), src = host.to_doubles();
  EXPECT_EQ(got[0], 0.0);
  EXPECT_EQ(got[2], src[0]);
  EXPECT_EQ(got[7 + 4], src[7 + 2]);
}

// Device copies take several paths (one memcpy run, 16-byte vectors over aligned rows, a typed
// element loop, a converting loop); each must move the same elements as the host copy.
TEST_F(CudaRuntime, StridedCopiesAndFillsMatchTheHost) {
  struct View {
    Shape shape;
    int64_t dim, start, length;  // narrow(dim, start, length) of a tensor of `shape`
  };
  const std::vector<View> views = {
      {{1000003}, 0, 0, 1000003},  // one run
      {{64, 96}, 1, 32, 64},       // aligned column block: vector rows
      {{64, 96}, 1, 3, 29},        // misaligned column block: element loop
      {{4, 6, 40}, 1, 1, 3},       // merges into rows of 120
      {{300, 5}, 1, 2, 1},         // a strided column
  };
  const std::vector<std::pair<DType, DType>> casts = {{DType::f32, DType::f32}, {DType::bf16, DType::bf16},
                                                      {DType::f32, DType::bf16}, {DType::bf16, DType::f32},
                                                      {DType::f64, DType::f64}, {DType::f32, DType::f64}};
  uint64_t seed = 500;
  for (const View& view : views) {
    for (const auto& [from, to] : casts) {
      SCOPED_TRACE(shape_str(view.shape) + " " + dtype_name(from) + " -> " + dtype_name(to));
      const Tensor host = testing::random_normal(view.shape, ++seed, from);
      const Tensor host_part = host.narrow(view.dim, view.start, view.length);
      const Tensor device_part = host.to(Device::cuda(0)).narrow(view.dim, view.start, view.length);
      // Into a fresh contiguous tensor, and into the same window of another strided tensor.
      EXPECT_EQ(device_part.to(to).to_doubles(), host_part.to(to).to_doubles());
      Tensor host_target = testing::random_normal(view.shape, ++seed, to);
      Tensor device_target = host_target.to(Device::cuda(0));
      host_target.narrow(view.dim, view.start, view.length).copy_from(host_part);
      device_target.narrow(view.dim, view.start, view.length).copy_from(device_part);
      EXPECT_EQ(device_target.to_doubles(), host_target.to_doubles());
    }
    for (double value : {0.0, 2.5}) {
      Tensor host_target = testing::random_normal(view.shape, ++seed, DType::bf16);
      Tensor device_target = host_target.to(Device::cuda(0));
      host_target.narrow(view.dim, view.start, view.length).fill_(value);
      device_target.narrow(view.dim, view.start, view.length).fill_(value);
      EXPECT_EQ(device_target.to_doubles(), host_target.to_doubles()) << "fill " << value;
    }
  }
}

TEST_F(CudaRuntime, PhiloxFillsMatchTheHost) {
  for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
    Tensor host_u = Tensor::empty({4099}, dtype), device_u = Tensor::empty({4099}, dtype, Device::cuda(0));
    fill_uniform(host_u, 77, 12, -1.0, 3.0);
    fill_uniform(device_u, 77, 12, -1.0, 3.0);
    EXPECT_EQ(device_u.to_doubles(), host_u.to_doubles()) << dtype_name(dtype);
    Tensor host_n = Tensor::empty({4099}, dtype), device_n = Tensor::empty({4099}, dtype, Device::cuda(0));
    fill_normal(host_n, 78, 8, 0.5, 2.0);
    fill_normal(device_n, 78, 8, 0.5, 2.0);
    // Same integer stream; log/sin/cos may differ by an ulp of double between host and device libm,
    // which can flip the last bit of the rounded value.
    std::vector<double> a = device_n.to_doubles(), b = host_n.to_doubles();
    const double tolerance = dtype == DType::f64 ? 1e-13 : dtype == DType::f32 ? 1e-6 : 1e-2;
    EXPECT_TRUE(testing::all_close(a, b, tolerance, tolerance)) << dtype_name(dtype);
  }
}

}  // namespace
}  // namespace braid
