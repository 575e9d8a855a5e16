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

    python benchmarks/bench_attention_shapes.py --parts fp8 --output fp8_attention.json   # needs nvidia-cudnn-frontend

`--parts fp8`: float8 attention where a maintained kernel offers it on Hopper, cuDNN's `sdpa_fp8` through its Python
frontend (`pip install nvidia-cudnn-frontend`), at the two steady shapes, against torch's bf16 kernels, in device
time per call (the profiler's kernel times: what a pass pays when the host keeps ahead). Per-tensor scales: q, k and v
quantized from their absolute maxima (the quantization's own device time is a row of its own: inductor's compiled
amax and cast, what the model would add unless fused into the kernels before), the softmax probabilities at 448 (they
lie in [0, 1]), the output at 448 / max|v| (each output row is a convex combination of v's rows, so it cannot exceed
that). On Hopper cuDNN's float8 attention takes head sizes that are multiples of 16 and gives float8 outputs only: the
vision tower's head size 72 runs zero-padded to 80 (zero columns of q and k leave the scores as they are; v's zero
columns give output columns that are dropped). The output's relative error is against torch's bf16 attention.
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


FP8_MAX = 448.0  # the largest float8 e4m3 value


def device_ms(fn, calls: int = 20) -> float:
    """Device time of one call of `fn` (the sum of its kernels' times, from the profiler), averaged over `calls`."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    total_us = sum(event.device_time for event in profiler.events()
                   if event.device_type == torch.autograd.DeviceType.CUDA and not getattr(event, "is_user_annotation", False))
    return total_us / 1e3 / calls


def per_tensor_fp8(tensor: torch.Tensor, head_size: int) -> tuple:
    """`tensor` zero-padded to `head_size` and quantized to float8 e4m3 with one scale from its absolute maximum;
    the descale (1 / scale) as cuDNN's [1, 1, 1, 1] float32 tensor."""
    padded = F.pad(tensor, (0, head_size - tensor.shape[-1])) if head_size > tensor.shape[-1] else tensor
    amax = padded.abs().amax().float().clamp(min=1e-12)
    return (padded.float() * (FP8_MAX / amax)).to(torch.float8_e4m3fn), (amax / FP8_MAX).reshape(1, 1, 1, 1)


def cudnn_fp8_attention(query8, key8, value8, causal: bool, attn_scale: float):
    """A cuDNN float8 attention graph built for these float8 tensors' shapes; returns `run(descales, scale_o)`,
    which fills and returns the float8 output ([batch, heads, length, head size], like `query8`)."""
    import cudnn

    handle = cudnn.create_handle()
    cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream().cuda_stream)
    e4m3, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    graph = cudnn.pygraph(io_data_type=e4m3, intermediate_data_type=fp32, compute_data_type=fp32, handle=handle)
    q, k, v = (graph.tensor_like(tensor) for tensor in (query8, key8, value8))
    scalars = [torch.ones(1, 1, 1, 1, device=query8.device, dtype=torch.float32) for _ in range(6)]
    descale_q, descale_k, descale_v, descale_s, scale_s, scale_o = (graph.tensor_like(t) for t in scalars)
    output, _, amax_s, amax_o = graph.sdpa_fp8(
        q=q, k=k, v=v, descale_q=descale_q, descale_k=descale_k, descale_v=descale_v, descale_s=descale_s,
        scale_s=scale_s, scale_o=scale_o, is_inference=True, attn_scale=attn_scale, use_causal_mask=causal)
    out = torch.empty(*query8.shape[:-1], value8.shape[-1], device=query8.device, dtype=torch.float8_e4m3fn)
    output.set_output(True).set_dim(list(out.shape)).set_stride(list(out.stride())).set_data_type(e4m3)
    amaxes = [torch.empty(1, 1, 1, 1, device=query8.device, dtype=torch.float32) for _ in range(2)]
    for tensor in (amax_s, amax_o):
        tensor.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(fp32)
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    workspace = torch.empty(graph.get_workspace_size(), device=query8.device, dtype=torch.uint8)
    scalars[3].fill_(1.0 / FP8_MAX)  # descale_s: the probabilities were stored times 448
    scalars[4].fill_(FP8_MAX)  # scale_s

    def run(descales: tuple, output_scale: torch.Tensor) -> torch.Tensor:
        for target, value in zip((scalars[0], scalars[1], scalars[2], scalars[5]), (*descales, output_scale)):
            target.copy_(value)
        graph.execute({q: query8, k: key8, v: value8, descale_q: scalars[0], descale_k: scalars[1],
                       descale_v: scalars[2], descale_s: scalars[3], scale_s: scalars[4], scale_o: scalars[5],
                       output: out, amax_s: amaxes[0], amax_o: amaxes[1]}, workspace, handle=handle)
        return out

    return run


def fp8_attention_rows(device) -> dict:
    """cuDNN's float8 attention against torch's bf16 kernels at the two steady shapes (device times in ms)."""
    rows = {}
    quantize = torch.compile(per_tensor_fp8, dynamic=False)
    for kind, (make, _, hot_shape) in KINDS.items():
        query, key, value, causal, gqa = make(*hot_shape, device)
        head_size = -(-query.shape[-1] // 16) * 16
        row = {"shape": list(query.shape), "kv_heads": key.shape[1], "head_size_run": head_size}
        for name, backend in BACKENDS.items():
            try:
                with sdpa_kernel([backend]):
                    row[f"bf16_{name}_ms"] = round(device_ms(plain((query, key, value, causal, gqa))), 4)
            except RuntimeError as error:
                row[f"bf16_{name}_ms"] = f"{type(error).__name__}: {error}"[:160]
        try:
            (q8, dq), (k8, dk), (v8, dv) = (quantize(t, head_size) for t in (query, key, value))
            row["quantize_qkv_ms"] = round(device_ms(lambda: [quantize(t, head_size) for t in (query, key, value)]), 4)
            run = cudnn_fp8_attention(q8, k8, v8, causal, attn_scale=query.shape[-1] ** -0.5)
            output_scale = FP8_MAX / (dv * FP8_MAX)  # 448 / max|v|
            row["cudnn_fp8_ms"] = round(device_ms(lambda: run((dq, dk, dv), output_scale)), 4)
            out = run((dq, dk, dv), output_scale).float()[..., : query.shape[-1]] / output_scale
            reference = F.scaled_dot_product_attention(query, key, value, is_causal=causal, enable_gqa=gqa).float()
            row["rel_error_vs_bf16"] = float((out - reference).norm() / reference.norm())
            best = min(v for k, v in row.items() if k.startswith("bf16_") and isinstance(v, float))
            row["fp8_with_quantize_over_best_bf16"] = round((row["cudnn_fp8_ms"] + row["quantize_qkv_ms"]) / best, 3)
            row["fp8_alone_over_best_bf16"] = round(row["cudnn_fp8_ms"] / best, 3)
        except Exception as error:  # noqa: BLE001 - no frontend, no support for the shape: recorded as the row
            row["cudnn_fp8_error"] = f"{type(error).__name__}: {error}"[:400]
        rows[kind] = row
        print(f"fp8 attention {kind}: {row}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="shapes", help="shapes (first calls at new shapes per backend), fp8 "
                                                          "(cuDNN's float8 attention at the steady shapes)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark times GPU attention kernels: run it on a CUDA GPU")
    device = torch.device("cuda")
    torch.manual_seed(0)
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
               "cudnn_attention_after_calls": acceleration_fuscore.CUDNN_ATTENTION_AFTER_CALLS, "rows": {}}
    if "shapes" in args.parts:
        shape_rows(device, results)
    if "fp8" in args.parts:
        try:
            import cudnn

            results["cudnn_frontend"], results["cudnn_backend"] = cudnn.__version__, cudnn.backend_version()
        except Exception as error:  # noqa: BLE001
            results["cudnn_frontend"] = f"not importable: {type(error).__name__}: {error}"[:200]
        results["fp8_attention"] = fp8_attention_rows(device)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


def shape_rows(device, results: dict) -> None:
    """The first and second calls at new shapes and the steady time per backend, and the control matmul row."""
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


if __name__ == "__main__":
    main()
