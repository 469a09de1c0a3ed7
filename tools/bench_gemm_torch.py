"""The peer of build/bench_gemm: the same shapes (y = x @ w.T, bf16, 8192 tokens) through torch.matmul
on the same card, timed with CUDA events, one JSON object per shape."""
import json

import torch

SHAPES = [
    ("square 8192", 8192, 8192, 8192),
    ("1b mamba in_proj", 8192, 2048, 8480),
    ("1b mamba out_proj", 8192, 4096, 2048),
    ("1b ffn gate/up", 8192, 2048, 8192),
    ("1b ffn down", 8192, 8192, 2048),
    ("1b attention qkv", 8192, 2048, 3072),
]

for name, tokens, fan_in, fan_out in SHAPES:
    x = torch.randn(tokens, fan_in, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(fan_out, fan_in, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        y = x @ w.T
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    repeats = 50
    start.record()
    for _ in range(repeats):
        y = x @ w.T
    stop.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(stop) / 1e3 / repeats
    print(json.dumps({"engine": f"torch {torch.__version__}", "card": torch.cuda.get_device_name(),
                      "shape": name, "M": tokens, "N": fan_out, "K": fan_in, "ms": round(seconds * 1e3, 4),
                      "tflops": round(2 * tokens * fan_in * fan_out / seconds / 1e12, 1)}))
