// Checks for CUDA runtime and cuBLAS/cuBLASLt calls: a failure raises braid::Error naming the call.
// Include only from CUDA-enabled translation units.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "runtime/error.h"

#define CUDA_CHECK(call)                                                                  \
  do {                                                                                    \
    cudaError_t braid_status_ = (call);                                                   \
    if (braid_status_ != cudaSuccess)                                                     \
      ::braid::raise(#call, __FILE__, __LINE__,                                           \
                     ::braid::str("CUDA error ", cudaGetErrorName(braid_status_), ": ",   \
                                  cudaGetErrorString(braid_status_)));                    \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, not at the next sync.
#define CUDA_CHECK_LAST_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                                \
  do {                                                                                    \
    cublasStatus_t braid_status_ = (call);                                                \
    if (braid_status_ != CUBLAS_STATUS_SUCCESS)                                           \
      ::braid::raise(#call, __FILE__, __LINE__,                                           \
                     ::braid::str("cuBLAS error ", cublasGetStatusName(braid_status_), ": ", \
                                  cublasGetStatusString(braid_status_)));                 \
  } while (0)
