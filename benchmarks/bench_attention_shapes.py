"""What attention costs at a shape it has not met before, per sdpa backend (issue 31: the first pass on mixed sizes).

    python benchmarks/bench_attention_shapes.py --output results.json   # on a GPU, about 30 seconds

The shapes are the Qwen3-VL-8B scoring engine's: the decoder's causal attention (32 query heads, 8 key/value heads,
head size 128; batches of 32 at ten sequence lengths, and 64 x 228 tokens, a 64-image batch of 448 px) and the vision
tower's per-image attention of the packed vision attention (16 heads, head size 72; ten image counts and lengths, and
64 images of 784 patches). For each of torch's cuDNN, flash and memory-efficient kernels (`sdpa_kernel`): the first
and the second call at each new shape (wall time to the end of the kernel), and the steady time at the 448-px shape.
Then FuScore's `acceleration_fuscore.scaled_dot_product_attention`, which leaves cuDNN to shapes met
`CUDNN_ATTENTION_AFTER_CALLS` times: its first call at each new shape, and its steady time once a shape is hot.
A control row times the first `torch.matmul` at new shapes (cuBLAS builds no plan).
"""

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import acceleration_fuscore  # noqa: E402

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def decoder_inputs(batch: int, length: int, device) -> tuple:
    query = torch.randn(batch, 32, length, 128, device=device, dtype=torch.bfloat16)
    key, value = (torch.randn(batch, 8, length, 128, device=device, dtype=torch.bfloat16) for _ in range(2))
    return query, key, value, True, True  # causal, grouped key/value heads


def vision_inputs(images: int, length: int, device) -> tuple:
    query, key, value = (torch.randn(images, 16, length, 72, device=device, dtype=torch.bfloat16) for _ in range(3))
    return query, key, value, False, False


KINDS = {"decoder": (decoder_inputs, [(32, 300 + 37 * i) for i in range(10)], (64, 228)),
         "vision": (vision_inputs, [(8 + i, 400 + 64 * i) for i in range(10)], (64, 784))}


def wall(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def steady(fn, calls: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def plain(inputs):
    query, key, value, causal, gqa = inputs
    return lambda: F.scaled_dot_product_attention(query, key, value, is_causal=causal, enable_gqa=gqa)


def fuscore(inputs):
    query, key, value, causal, gqa = inputs
    return lambda: acceleration_fuscore.scaled_dot_product_attention(query, key, value, causal, None, gqa)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark times GPU attention kernels: run it on a CUDA GPU")
    device = torch.device("cuda")
    torch.manual_seed(0)
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
               "cudnn_attention_after_calls": acceleration_fuscore.CUDNN_ATTENTION_AFTER_CALLS, "rows": {}}
    ms = lambda seconds: round(seconds * 1e3, 3)  # noqa: E731
    for name, backend in [*BACKENDS.items(), ("fuscore", None)]:
        for kind, (make, new_shapes, hot_shape) in KINDS.items():
            row = {}
            try:
                with sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext():
                    call = plain if backend is not None else fuscore
                    firsts, seconds = [], []
                    for shape in new_shapes:
                        fn = call(make(*shape, device))
                        firsts.append(wall(fn))
                        seconds.append(wall(fn))
                    fn = call(make(*hot_shape, device))
                    for _ in range(acceleration_fuscore.CUDNN_ATTENTION_AFTER_CALLS if backend is None else 0):
                        fn()  # FuScore's operator: past the calls after which the shape takes cuDNN
                    row = {"first_call_ms": [ms(t) for t in firsts], "second_call_ms": [ms(t) for t in seconds],
                           "steady_ms": ms(steady(fn)), "steady_shape": list(hot_shape)}
            except RuntimeError as error:  # a backend that does not take these inputs
                row = {"error": f"{type(error).__name__}: {error}"[:200]}
            results["rows"][f"{name}_{kind}"] = row
            if "error" in row:
                print(f"{name:9s} {kind:7s}: {row['error']}", flush=True)
            else:
                firsts = sorted(row["first_call_ms"])
                print(f"{name:9s} {kind:7s}: first call at a new shape median {firsts[len(firsts) // 2]:.2f} ms "
                      f"(max {firsts[-1]:.2f}), second call median {sorted(row['second_call_ms'])[5]:.2f} ms; "
                      f"steady at {hot_shape}: {row['steady_ms']:.3f} ms", flush=True)
    weight = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    results["matmul_first_call_ms"] = [
        ms(wall(lambda: torch.randn(1000 + 77 * i, 4096, device=device, dtype=torch.bfloat16) @ weight))
        for i in range(10)]
    print(f"control, the first matmul at new shapes: {results['matmul_first_call_ms']} ms", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
