"""The peer of build/bench_attention: the same causal bf16 shapes (batch*seqlen = 16K, hidden 2048)
through torch.nn.functional.scaled_dot_product_attention with the FlashAttention and the cuDNN
backends, timed with CUDA events: forward, backward and forward + backward, one JSON object per
measurement. TFLOP/s use the FlashAttention convention (causal forward = 2*B*H*T^2*D, backward 2.5x,
forward + backward 3.5x), as the braid bench does."""
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [  # (batch, time, heads, head dim)
    (2, 8192, 16, 128), (4, 4096, 16, 128), (8, 2048, 16, 128),
    (2, 8192, 32, 64), (4, 4096, 32, 64), (8, 2048, 32, 64),
]
BACKENDS = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]


def time_ms(run, warmup, repeats):
    for _ in range(warmup):
        run()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        run()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / repeats


def main():
    card = torch.cuda.get_device_name()
    for batch, time, heads, dim in SHAPES:
        shape = f"B={batch} T={time} H={heads} D={dim} causal"
        # SDPA takes (B, H, T, D).
        q, k, v, grad = (torch.randn(batch, heads, time, dim, device="cuda", dtype=torch.bfloat16)
                         for _ in range(4))
        q.requires_grad_(True)
        k.requires_grad_(True)
        v.requires_grad_(True)
        forward_flops = 2.0 * batch * heads * time * time * dim
        repeats = 10 if time >= 8192 else 20
        for name, backend in BACKENDS:
            try:
                with sdpa_kernel(backend):
                    def forward():
                        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

                    out = forward()
                    forward_ms = time_ms(forward, 3, repeats)
                    backward_ms = time_ms(
                        lambda: torch.autograd.grad(out, (q, k, v), grad, retain_graph=True), 3,
                        repeats)
                    both_ms = time_ms(
                        lambda: torch.autograd.grad(forward(), (q, k, v), grad), 2, repeats)
            except RuntimeError as error:  # backend unavailable for this shape or card
                print(json.dumps({"bench": "attention", "backend": name, "shape": shape,
                                  "error": str(error).splitlines()[0]}))
                continue
            for bench, ms, flops in (("attention fwd", forward_ms, forward_flops),
                                     ("attention bwd", backward_ms, 2.5 * forward_flops),
                                     ("attention fwd+bwd", both_ms, 3.5 * forward_flops)):
                print(json.dumps({"bench": bench, "engine": f"torch {torch.__version__}",
                                  "backend": name, "card": card, "shape": shape,
                                  "ms": round(ms, 4), "tflops": round(flops / (ms * 1e-3) / 1e12, 1)}),
                      flush=True)
            del out


if __name__ == "__main__":
    main()
