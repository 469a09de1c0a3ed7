// Runs a templated body with T = the C++ type of a floating dtype on the CPU backend.
//
//   dispatch_cpu_float("rmsnorm", x.dtype(), [&]<typename T>() { kernels::cpu::rmsnorm_forward<T>(...); });
#pragma once

#include "runtime/dtype.h"
#include "runtime/error.h"

namespace braid::ops {

template <typename Body>
void dispatch_cpu_float(const char* op, DType dtype, Body&& body) {
  switch (dtype) {
    case DType::f32: body.template operator()<float>(); return;
    case DType::f64: body.template operator()<double>(); return;
    default: BRAID_FAIL(op, ": the CPU backend computes in f32 or f64, got ", dtype_name(dtype));
  }
}

}  // namespace braid::ops
