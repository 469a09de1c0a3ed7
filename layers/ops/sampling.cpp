#include "layers/ops/sampling.h"

#include "layers/ops/checks.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/sampling.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

Tensor sample_tokens(const Tensor& logits_in, double temperature, int64_t top_k, double top_p, uint64_t seed,
                     uint64_t draw) {
  const char* op = "sample_tokens";
  check_dim(op, "logits (batch, vocab)", logits_in, 2);
  check_dtype(op, "logits", logits_in, DType::f32);
  BRAID_CHECK(logits_in.size(1) >= 1, op, ": logits ", shape_str(logits_in.shape()), " hold no vocabulary");
  BRAID_CHECK(top_k >= 0, op, ": top_k must be >= 0, got ", top_k);
  BRAID_CHECK(logits_in.device().is_cuda(), op, ": logits are on ", logits_in.device().to_string(),
              "; it samples on CUDA (the host sampler is braid::sample_token)");
  const Tensor logits = logits_in.contiguous();
  const int64_t batch = logits.size(0), vocab = logits.size(1);
  Tensor tokens = Tensor::empty({batch}, DType::i32, logits.device());
#ifdef BRAID_CUDA
  cuda_set_device(logits.device().index);
  const kernels::cuda::SamplingParams params{temperature, top_k, top_p, seed, draw};
  const size_t bytes = kernels::cuda::sample_tokens_workspace_bytes(batch, vocab, params);
  Tensor workspace = bytes ? Tensor::empty({int64_t((bytes + 1) / 2)}, DType::u16, logits.device()) : Tensor();
  kernels::cuda::sample_tokens(logits.data<float>(), tokens.data<int32_t>(), batch, vocab, params,
                               bytes ? workspace.raw_data() : nullptr, compute_stream());
#else
  (void)temperature, (void)top_p, (void)seed, (void)draw, (void)vocab;
#endif
  return tokens;
}

}  // namespace braid::ops
