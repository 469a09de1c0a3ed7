#pragma once

#include "autograd/variable.h"

namespace braid::ops {

// Rows of `table` (V, d) picked by `ids` (any shape, integer dtype i32, i64, u16 or u32) -> ids'
// shape + (d). The ids get no gradient; the table's gradient is the scatter-add of the output's.
autograd::Var embedding(const autograd::Var& table, const autograd::Var& ids);
// The rows rounded to `out_dtype` as they are written (the inference step's bf16 activations from
// the fp32 table, with no cast after; on the CPU a conversion follows the lookup).
autograd::Var embedding(const autograd::Var& table, const autograd::Var& ids, DType out_dtype);

}  // namespace braid::ops
