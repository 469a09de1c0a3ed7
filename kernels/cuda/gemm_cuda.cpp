// cuBLASLt behind kernels/cuda/gemm.h. cuBLASLt is column-major; a row-major (R, C) matrix with
// row stride ld is the column-major (C, R) matrix with the same ld, so the row-major product
// C = op(A) op(B) is computed as the column-major product Cᵀ = op(B)ᵀ op(A)ᵀ: B's storage is
// cuBLASLt's first operand, A's the second, and the transpose flags carry over unchanged.
#include "kernels/cuda/gemm.h"

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "runtime/allocator.h"
#include "runtime/cuda_check.h"

namespace braid::kernels::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

// Everything that decides the descriptors and the algorithm of one product.
struct PlanKey {
  int device;
  bool trans_a, trans_b;
  int64_t M, N, K, lda, ldb, ldc;
  DType dtype, c_dtype;
  // Largest power of two (up to 256) dividing every pointer: the heuristic may only pick
  // algorithms whose alignment needs these pointers meet.
  uint32_t alignment;

  auto tie() const { return std::tie(device, trans_a, trans_b, M, N, K, lda, ldb, ldc, dtype, c_dtype, alignment); }
  bool operator<(const PlanKey& other) const { return tie() < other.tie(); }
};

// The descriptors live as long as the process; destroying them is host-only work.
struct Plan {
  cublasLtMatmulDesc_t operation = nullptr;
  cublasLtMatrixLayout_t a_layout = nullptr, b_layout = nullptr, c_layout = nullptr;
  cublasLtMatmulAlgo_t algorithm{};

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (c_layout) cublasLtMatrixLayoutDestroy(c_layout);
    if (b_layout) cublasLtMatrixLayoutDestroy(b_layout);
    if (a_layout) cublasLtMatrixLayoutDestroy(a_layout);
    if (operation) cublasLtMatmulDescDestroy(operation);
  }
};

// The handle and workspace of one device. Never destroyed: at process exit the CUDA context may
// already be gone, and the driver reclaims both.
struct DeviceState {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

std::mutex state_mutex;
std::map<int, DeviceState> device_states;
std::map<PlanKey, std::unique_ptr<Plan>> plans;

// Caller holds state_mutex.
const DeviceState& device_state(int device) {
  DeviceState& state = device_states[device];
  if (!state.workspace) {
    state.workspace = cuda_allocator(device).allocate(kWorkspaceBytes);
    CUDA_CHECK(cudaSetDevice(device));  // the allocator may have switched devices
  }
  if (!state.handle) CUBLAS_CHECK(cublasLtCreate(&state.handle));
  return state;
}

uint32_t common_alignment(const void* A, const void* B, const void* C) {
  const uintptr_t bits = reinterpret_cast<uintptr_t>(A) | reinterpret_cast<uintptr_t>(B) |
                         reinterpret_cast<uintptr_t>(C) | uintptr_t(256);
  return uint32_t(bits & (~bits + 1));  // lowest set bit
}

cudaDataType_t cuda_data_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    default: BRAID_FAIL("cuda gemm: operands must be f32 or bf16, got ", dtype_name(dtype));
  }
}

// A column-major (rows, cols) layout with leading dimension ld.
cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
  cublasLtMatrixLayout_t layout = nullptr;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, uint64_t(rows), uint64_t(cols), ld));
  return layout;
}

std::unique_ptr<Plan> make_plan(const PlanKey& key, cublasLtHandle_t handle) {
  auto plan = std::make_unique<Plan>();
  const cudaDataType_t type = cuda_data_type(key.dtype);
  // fp32 accumulation; CUBLAS_COMPUTE_32F (not _FAST_TF32) keeps f32 inputs out of TF32.
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->operation, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t first_op = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t second_op = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->operation, CUBLASLT_MATMUL_DESC_TRANSA,
                                              &first_op, sizeof(first_op)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->operation, CUBLASLT_MATMUL_DESC_TRANSB,
                                              &second_op, sizeof(second_op)));
  // Column-major views of the row-major storage (see the top of this file).
  plan->a_layout = key.trans_b ? make_layout(type, key.K, key.N, key.ldb)
                               : make_layout(type, key.N, key.K, key.ldb);
  plan->b_layout = key.trans_a ? make_layout(type, key.M, key.K, key.lda)
                               : make_layout(type, key.K, key.M, key.lda);
  plan->c_layout = make_layout(cuda_data_type(key.c_dtype), key.N, key.M, key.ldc);

  cublasLtMatmulPreference_t preference = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  const uint64_t workspace_bytes = kWorkspaceBytes;
  const uint32_t alignment = key.alignment;
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(
      preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof(workspace_bytes));
  for (auto attribute : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                         CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    if (status == CUBLAS_STATUS_SUCCESS)
      status = cublasLtMatmulPreferenceSetAttribute(preference, attribute, &alignment, sizeof(alignment));
  if (status == CUBLAS_STATUS_SUCCESS)
    status = cublasLtMatmulAlgoGetHeuristic(handle, plan->operation, plan->a_layout, plan->b_layout,
                                            plan->c_layout, plan->c_layout, preference, 1, &result,
                                            &found);
  cublasLtMatmulPreferenceDestroy(preference);
  CUBLAS_CHECK(status);
  BRAID_CHECK(found > 0, "cuda gemm: cuBLASLt has no algorithm for ", key.trans_a ? "Aᵀ" : "A", " * ",
              key.trans_b ? "Bᵀ" : "B", " with M=", key.M, " N=", key.N, " K=", key.K, " lda=",
              key.lda, " ldb=", key.ldb, " ldc=", key.ldc, " in ", dtype_name(key.dtype), " to ",
              dtype_name(key.c_dtype));
  plan->algorithm = result.algo;
  return plan;
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
          int64_t lda, const void* B, int64_t ldb, float beta, void* C, int64_t ldc, DType dtype,
          DType c_dtype, cudaStream_t stream) {
  BRAID_CHECK(M >= 0 && N >= 0 && K >= 0, "cuda gemm: negative size M=", M, " N=", N, " K=", K);
  const int64_t a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
  BRAID_CHECK(lda >= std::max<int64_t>(a_cols, 1) && ldb >= std::max<int64_t>(b_cols, 1) &&
                  ldc >= std::max<int64_t>(N, 1),
              "cuda gemm: leading dimensions lda=", lda, " ldb=", ldb, " ldc=", ldc,
              " are below the row lengths ", a_cols, ", ", b_cols, ", ", N);
  cuda_data_type(dtype);  // rejects other dtypes before any early return
  cuda_data_type(c_dtype);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    // Nothing to sum: C = beta * C, which only the beta == 0 case needs so far.
    BRAID_CHECK(beta == 0.0f, "cuda gemm: K=0 with beta=", beta, " is not supported");
    CUDA_CHECK(cudaMemset2DAsync(C, size_t(ldc) * dtype_size(c_dtype), 0,
                                 size_t(N) * dtype_size(c_dtype), size_t(M), stream));
    return;
  }
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const PlanKey key{device, trans_a, trans_b, M, N, K, lda, ldb, ldc, dtype, c_dtype,
                     common_alignment(A, B, C)};
  cublasLtHandle_t handle;
  void* workspace;
  const Plan* plan;
  {
    std::lock_guard<std::mutex> lock(state_mutex);
    const DeviceState& state = device_state(device);
    handle = state.handle;
    workspace = state.workspace;
    std::unique_ptr<Plan>& slot = plans[key];
    if (!slot) {
      std::unique_ptr<Plan> made;
      try {
        made = make_plan(key, handle);
      } catch (...) {
        plans.erase(key);
        throw;
      }
      slot = std::move(made);
    }
    plan = slot.get();
  }
  CUBLAS_CHECK(cublasLtMatmul(handle, plan->operation, &alpha, B, plan->a_layout, A, plan->b_layout,
                              &beta, C, plan->c_layout, C, plan->c_layout, &plan->algorithm,
                              workspace, kWorkspaceBytes, stream));
}

size_t gemm_plan_cache_size() {
  std::lock_guard<std::mutex> lock(state_mutex);
  return plans.size();
}

}  // namespace braid::kernels::cuda
