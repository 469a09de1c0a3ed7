// Embedding lookup (MODEL.md section 1: x0 = Embed(tokens)): out[i, :] = table[ids[i], :] for a
// table (V, d) and n token ids; backward scatter-adds the rows of d_out into d_table (V, d).
// Ids must already be checked to lie in [0, V).
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

template <typename T>
void embedding_forward(const T* table, const int64_t* ids, T* out, int64_t n, int64_t dim);

// Writes d_table (vocab, dim) fresh: row v is the sum, in position order, of the d_out rows whose
// id is v (zero for ids that do not occur). Deterministic for any thread count.
template <typename T>
void embedding_backward(const int64_t* ids, const T* d_out, T* d_table, int64_t n, int64_t vocab,
                        int64_t dim);

}  // namespace braid::kernels::cpu
