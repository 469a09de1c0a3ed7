// Embedding lookup on CUDA (MODEL.md section 1: x0 = Embed(tokens)), the twin of
// kernels/cpu/embedding.h: out[i, :] = table[ids[i], :] for an f32 table (V, d) and n token ids;
// backward writes d_table (V, d) fresh, row v the sum in position order of the d_out rows whose id
// is v. Ids must already be checked to lie in [0, V).
// Forward: one block per (token, column slab), VEC = 4 columns per thread. Backward, without
// atomics: a stable radix sort of (id, position) pairs (CUB), a binary search per id for the start
// of its run, then one block per (vocabulary row, column slab) adds its run's rows in order (zero
// for ids that do not occur), so the result is deterministic.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

// table (V, dim) f32; ids (n) i64 or i32; out (n, dim) of `out_dtype` (f32, or bf16 for activations).
void embedding_forward(const float* table, const int64_t* ids, void* out, int64_t n, int64_t dim,
                       DType out_dtype, cudaStream_t stream);
void embedding_forward(const float* table, const int32_t* ids, void* out, int64_t n, int64_t dim,
                       DType out_dtype, cudaStream_t stream);

// Floats of scratch embedding_backward needs for n ids and a vocabulary of `vocab` rows.
size_t embedding_backward_workspace_floats(int64_t n, int64_t vocab);

// ids (n) i64; d_out (n, dim) f32; writes d_table (vocab, dim) f32. `workspace` holds
// embedding_backward_workspace_floats(n, vocab) floats.
void embedding_backward(const int64_t* ids, const float* d_out, float* d_table, float* workspace,
                        int64_t n, int64_t vocab, int64_t dim, cudaStream_t stream);

}  // namespace braid::kernels::cuda
