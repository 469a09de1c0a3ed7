// Check for MPI calls. Include only from MPI-enabled translation units.
#pragma once

#include <mpi.h>

#include "runtime/error.h"

#define MPI_CHECK(call)                                                                   \
  do {                                                                                    \
    int braid_status_ = (call);                                                           \
    if (braid_status_ != MPI_SUCCESS) {                                                   \
      char braid_text_[MPI_MAX_ERROR_STRING];                                             \
      int braid_len_ = 0;                                                                 \
      MPI_Error_string(braid_status_, braid_text_, &braid_len_);                          \
      ::braid::raise(#call, __FILE__, __LINE__,                                           \
                     ::braid::str("MPI error: ", std::string(braid_text_, braid_len_)));  \
    }                                                                                     \
  } while (0)
