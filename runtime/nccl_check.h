// Check for NCCL calls. Include only from NCCL-enabled translation units.
#pragma once

#include <nccl.h>

#include "runtime/error.h"

#define NCCL_CHECK(call)                                                                  \
  do {                                                                                    \
    ncclResult_t braid_status_ = (call);                                                  \
    if (braid_status_ != ncclSuccess)                                                     \
      ::braid::raise(#call, __FILE__, __LINE__,                                           \
                     ::braid::str("NCCL error: ", ncclGetErrorString(braid_status_)));    \
  } while (0)
