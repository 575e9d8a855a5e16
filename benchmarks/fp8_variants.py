"""What each float8 choice buys and costs, one at a time (issues 19 and 31): the ablation behind `bench_fp8.py`.

    python benchmarks/fp8_variants.py --output fp8_variants.json        # on a GPU of compute capability 8.9+ (~6 min)
    python benchmarks/fp8_variants.py --parts kernels                   # the fused kernels alone (~1 min)
    python benchmarks/fp8_variants.py --tiny                            # on a CPU, float8 emulated: the code paths

Part `kernels` (GPU): each Triton kernel of `float8_fuscore.py` at the shapes of a 64-image batch of 448 px at 8B
(vision rows 1,152 and 4,304 wide, decoder rows 4,096 and 2 x 12,288), against its plain-torch twin (relative error
of the dequantized rows, scale error) and timed (`triton.testing.do_bench`, median), with the bytes it must move and
the rate that gives; beside it the bf16 kernel it replaces (the norm or activation alone) and the unfused
quantization (`torch.compile` of the twin, which is what torchao's path ran); and `torch._scaled_mm` with and without
the bias in its epilogue.

Variants (part `speed`, and `fidelity` for those whose numerics differ):

  * `torchao_decoder`: torchao's row-wise dynamic float8 (`Float8DynamicActivationFloat8WeightConfig(
    granularity=PerRow())`) on the decoder's linear layers: what `quantize_fp8` did before the fused blocks;
  * `torchao_decoder_vision_blocks`: the same on the vision blocks' linear layers too;
  * `fused_decoder`: `quantize_fp8(vision_tower=False)`, the fused float8 decoder layers of `float8_fuscore.py`;
  * `fused`: `quantize_fp8()`, the fused decoder layers and vision blocks (what `score(fp8=True)` runs).

Per variant, at real size (Qwen3-VL-8B architecture at random init, 448 px JPEGs, batch 64, prepared batches,
compiled blocks): the model-only rate, the compile time, the level logits' relative error against bf16, and a
profile of one batch (device time in bf16 and float8 matmuls, attention, quantization and the rest, with the fifteen
costliest kernels: inductor's fused kernels that take an amax and the fused norm/activation kernels count as
quantization). Then, on trained weights, the shipped demo model over VIFB's fused images (eager, every dimension):
SRCC against its bf16 scores and the largest |difference|.
"""

import argparse
import contextlib
import copy
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers  # noqa: E402

from bench_fp8 import DEFAULT_VIFB, DEMO_MODEL, cpu_float8_emulation, relative_errors, vifb_fused_images  # noqa: E402
from bench_speed import (build_models, count_flops_per_image, matmul_peak_tflops, prepared_batches,  # noqa: E402
                         scratch_folder, timed, write_images)
from fuscore.atomic import write_text  # noqa: E402
from modeling_fuscore import FuScoreForQuality  # noqa: E402

# name: (how the decoder is quantized, how the vision blocks are: None / "torchao" / "fused")
VARIANTS = {
    "torchao_decoder": ("torchao", None),
    "torchao_decoder_vision_blocks": ("torchao", "torchao"),
    "fused_decoder": ("fused", None),
    "fused": ("fused", "fused"),
}
FIDELITY_VARIANTS = tuple(VARIANTS)


def quantize_variant(model, name: str) -> None:
    """Quantizes `model` in place as variant `name` (the fused ones through `model.quantize_fp8` itself)."""
    decoder, vision = VARIANTS[name]
    if decoder == "fused":
        if not model.quantize_fp8(vision_tower=vision == "fused"):
            raise SystemExit("quantize_fp8 kept bf16 here")
        return
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), activation_value_lb=1e-12,
                                                       set_inductor_config=False)

    def linear(module):  # as the torchao path of quantize_fp8: a layer with an all-zero weight row stays in bf16
        return isinstance(module, torch.nn.Linear) and not bool(module.weight.detach().abs().amax(-1).eq(0).any())

    quantize_(model.model.language_model.layers, config, filter_fn=lambda module, fqn: linear(module))
    if vision:
        quantize_(model.model.visual, config, filter_fn=lambda module, fqn: linear(module) and fqn.startswith("blocks."))


def classify(name: str) -> str:
    name = name.lower()
    if "norm_quant" in name or "act_quant" in name:  # float8_fuscore's fused kernels (norm or activation included)
        return "quantize"
    if name.startswith("triton"):  # inductor's fused kernels; those taking an amax quantize activations to float8
        return "quantize" if "amax" in name else "other"
    if any(key in name for key in ("gemm", "nvjet", "cutlass", "sm90_xmma", "cublas", "scaled_mm")):
        return "matmul_fp8" if any(key in name for key in ("e4m3", "f8", "fp8", "qqtst", "float8")) else "matmul_bf16"
    if any(key in name for key in ("flash", "fmha", "attention", "cudnn")):
        return "attention"
    return "other"


def profile_batch(model, batch, device) -> dict:
    """Device time of one forward by kernel class (fractions of the forward's wall time) and the fifteen costliest."""
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as profiler:
        seconds, _ = timed(lambda: model(**batch), device)
    kernels = {}
    for event in profiler.events():
        if device.type == "cuda" and (event.device_type != torch.autograd.DeviceType.CUDA or getattr(event, "is_user_annotation", False)):
            continue
        if device.type == "cpu" and event.cpu_parent is not None:
            continue
        time_s = (event.device_time if device.type == "cuda" else event.self_cpu_time_total) / 1e6
        kernels[event.name] = kernels.get(event.name, 0.0) + time_s
    classes = {}
    for name, time_s in kernels.items():
        classes[classify(name)] = classes.get(classify(name), 0.0) + time_s
    top = sorted(kernels.items(), key=lambda item: -item[1])[:15]
    return {"wall_seconds": seconds, **{f"{key}_fraction": value / seconds for key, value in classes.items()},
            "top_kernels": [[name[:120], time_s / seconds] for name, time_s in top]}


# (what, rows, columns, kind): a 64-image batch of 448 px at 8B has 50,176 vision rows and 14,656 decoder rows.
KERNEL_CASES = [
    ("vision LayerNorm + quantize", 50176, 1152, "layer_norm"),
    ("vision add + LayerNorm + quantize", 50176, 1152, "add_layer_norm"),
    ("vision GELU + quantize", 50176, 4304, "gelu_tanh"),
    ("vision attention output quantize", 50176, 1152, "identity"),
    ("decoder RMSNorm + quantize", 14656, 4096, "rms_norm"),
    ("decoder add + RMSNorm + quantize", 14656, 4096, "add_rms_norm"),
    ("decoder SiLU(gate) * up + quantize", 14656, 12288, "silu_mul"),
    ("decoder attention output quantize", 14656, 4096, "identity"),
]
# (what, M, K, N): the vision qkv and the decoder's gate/up products of the same batch.
SCALED_MM_CASES = [("vision qkv", 50176, 1152, 3456), ("decoder gate/up", 14656, 4096, 24576)]


def kernels_part(args, device, results: dict) -> None:
    """The fused kernels against their plain-torch twins, and their speed against what they replace."""
    import float8_fuscore as f8
    import triton
    from triton.testing import do_bench

    bench = lambda fn: do_bench(fn, warmup=25, rep=200, return_mode="median") / 1e3  # noqa: E731 (seconds)
    big = torch.randn(256 * 2**20 // 2, device=device, dtype=torch.bfloat16)
    copy_seconds = bench(lambda: big.clone())
    bandwidth = 2 * big.numel() * 2 / copy_seconds
    results["kernels"] = {"copy_bandwidth_gb_s": bandwidth / 1e9, "cases": {}, "scaled_mm": {}}
    print(f"device-to-device copy: {bandwidth / 1e9:.0f} GB/s (read + write)", flush=True)
    generator = torch.Generator(device=device).manual_seed(0)
    for what, rows, columns, kind in KERNEL_CASES:
        width = 2 * columns if kind == "silu_mul" else columns
        x = torch.randn(rows, width, device=device, generator=generator).mul_(2).to(torch.bfloat16)
        x[::97, ::31] *= 40  # outliers, as real activations have
        residual = torch.randn(rows, columns, device=device, generator=generator).to(torch.bfloat16)
        weight = (1 + 0.1 * torch.randn(columns, device=device, generator=generator)).to(torch.bfloat16)
        bias = (0.1 * torch.randn(columns, device=device, generator=generator)).to(torch.bfloat16)
        rms = "rms" in kind
        add = kind.startswith("add")
        if "norm" in kind:
            kwargs = dict(weight=weight, bias=None if rms else bias, eps=1e-6, rms=rms, residual=residual if add else None)
            fused = lambda: f8.norm_quant(x, **kwargs)  # noqa: E731
            twin = lambda: f8.norm_quant_reference(x, kwargs["residual"], weight, kwargs["bias"], 1e-6, rms)  # noqa: E731
            if rms:
                alone = lambda: (x + residual if add else x).float().pow(2).mean(-1, keepdim=True)  # noqa: E731
            else:
                alone = lambda: torch.nn.functional.layer_norm(x + residual if add else x, (columns,), weight, bias, 1e-6)  # noqa: E731
        else:
            fused = lambda: f8.act_quant(x, kind)  # noqa: E731
            twin = lambda: f8.act_quant_reference(x, kind)  # noqa: E731
            alone = {"gelu_tanh": lambda: torch.nn.functional.gelu(x, approximate="tanh"),
                     "silu_mul": lambda: torch.nn.functional.silu(x[:, :columns]) * x[:, columns:],
                     "identity": lambda: x.clone()}[kind]
        output, reference = fused(), twin()
        dequantized = output[0].float() * output[1]
        expected = reference[0].float() * reference[1]
        row = {"rows": rows, "columns": columns,
               "dequantized_rel_error": float((dequantized - expected).norm() / expected.norm()),
               "scale_rel_error_max": float(((output[1] - reference[1]).abs() / reference[1]).max()),
               "finite": bool(torch.isfinite(dequantized).all())}
        if add:
            row["residual_sum_max_abs_diff"] = float((output[2].float() - reference[2].float()).abs().max())
        # Bytes it must move: its input (and residual) read, float8 rows and scales written (and the sum).
        moved = x.numel() * 2 + rows * columns + rows * 4 + (2 * rows * columns * 2 if add else 0)
        row["fused_seconds"] = bench(fused)
        row["fused_gb_s"] = moved / row["fused_seconds"] / 1e9
        # The row as one tile of the next power of two (the kernels before the two-tile rows), for the difference.
        two_tiles = f8._launch_shape
        f8._launch_shape = lambda width: (triton.next_power_of_2(width), 0, *two_tiles(width)[2:])
        row["one_tile_seconds"] = bench(fused)
        f8._launch_shape = two_tiles
        # The launch shapes around the shipped one: (rows per program, warps) -> seconds.
        block = triton.next_power_of_2(columns)
        shipped = dict(f8.LAUNCH_SHAPES)
        row["launch_shapes"] = {}
        for per_program in (1, 2, 4, 8):
            for warps in (2, 4, 8, 16):
                if per_program * block > 32768 or per_program * block < 32 * warps:
                    continue
                f8.LAUNCH_SHAPES[block] = (per_program, warps)
                row["launch_shapes"][f"{per_program}x{warps}"] = bench(fused)
        f8.LAUNCH_SHAPES.clear()
        f8.LAUNCH_SHAPES.update(shipped)
        best = min(row["launch_shapes"], key=row["launch_shapes"].get)
        print(f"    launch shapes (rows x warps): best {best} {row['launch_shapes'][best] * 1e3:.3f} ms; shipped "
              f"{shipped.get(block)}: {row['fused_seconds'] * 1e3:.3f} ms", flush=True)
        row["bf16_alone_seconds"] = bench(alone)
        compiled_twin = torch.compile(twin, dynamic=False)
        compiled_twin()
        row["compiled_twin_seconds"] = bench(compiled_twin)
        results["kernels"]["cases"][what] = row
        print(f"{what} [{rows} x {columns}]: rel error {row['dequantized_rel_error']:.1e}, scale {row['scale_rel_error_max']:.1e}; "
              f"fused {row['fused_seconds'] * 1e3:.3f} ms ({row['fused_gb_s']:.0f} GB/s; one tile "
              f"{row['one_tile_seconds'] * 1e3:.3f} ms), the bf16 op alone "
              f"{row['bf16_alone_seconds'] * 1e3:.3f} ms, compiled twin (unfused quantization) "
              f"{row['compiled_twin_seconds'] * 1e3:.3f} ms", flush=True)
        if not row["finite"] or row["dequantized_rel_error"] > 2e-2:
            raise SystemExit(f"{what}: the fused kernel does not match its twin")
    for what, m, k, n in SCALED_MM_CASES:
        a = torch.randn(m, k, device=device, generator=generator).to(torch.bfloat16)
        w = torch.randn(n, k, device=device, generator=generator).to(torch.bfloat16) / k**0.5
        linear = torch.nn.Linear(k, n, device=device, dtype=torch.bfloat16)
        linear.weight.data.copy_(w)
        holder = f8.Float8Weight(linear)
        qa, sa = f8.act_quant(a, "identity")
        with_bias = lambda: holder(qa, sa, torch.bfloat16)  # noqa: E731
        bias, holder.bias = holder.bias, None
        without = holder(qa, sa, torch.bfloat16)
        holder.bias = bias
        error = float(((with_bias() - without).float() - bias.float()).abs().max())
        row = {"with_bias_seconds": bench(with_bias), "bias_epilogue_max_abs_error": error,
               "bf16_seconds": bench(lambda: torch.nn.functional.linear(a, w, linear.bias))}
        holder.bias = None
        row["without_bias_seconds"] = bench(lambda: holder(qa, sa, torch.bfloat16))
        holder.bias = bias
        flop = 2 * m * k * n
        row.update(fp8_tflops=flop / row["with_bias_seconds"] / 1e12, bf16_tflops=flop / row["bf16_seconds"] / 1e12)
        results["kernels"]["scaled_mm"][what] = row
        print(f"_scaled_mm {what} [{m} x {k} x {n}]: {row['with_bias_seconds'] * 1e3:.3f} ms with bias "
              f"({row['fp8_tflops']:.0f} TFLOP/s), {row['without_bias_seconds'] * 1e3:.3f} ms without, bf16 "
              f"{row['bf16_seconds'] * 1e3:.3f} ms ({row['bf16_tflops']:.0f} TFLOP/s); bias error {error:.2e}", flush=True)
    args.save()


def speed_part(args, device, results: dict) -> None:
    dtype = torch.bfloat16
    base, model, side = build_models(args, device, dtype)
    base_config = base.config
    del base
    folder = scratch_folder("fuscore_fp8_variants_")
    paths = write_images(folder, args.batch_size * args.batches, side)
    processor = model.processor
    sample = processor.prepare_sample(paths[0])
    flops = count_flops_per_image(base_config, len(sample["input_ids"]), int(sample["image_grid_thw"].prod()))
    results["tflop_per_image"] = flops["total"] / 1e12
    prepared = prepared_batches(model, paths, args.batch_size)
    images = len(paths)
    reference = None
    for name in ["bf16", *args.variants]:
        start = time.perf_counter()
        variant = copy.deepcopy(model)
        if name != "bf16":
            quantize_variant(variant, name)
        if not args.eager:
            variant.compile_blocks()
        with torch.inference_mode():
            variant(**prepared[0])  # compiles
            compile_seconds = time.perf_counter() - start
            rates, outputs = [], None
            for _ in range(args.rounds):
                seconds, outputs = timed(lambda: [variant(**b) for b in prepared], device)
                rates.append(images / seconds)
            profile = profile_batch(variant, prepared[0], device)
        logits = torch.cat([o.level_logits for o in outputs])
        row = {"img_s": float(np.median(rates)), "rounds_img_s": rates, "setup_and_compile_seconds": compile_seconds,
               "bf16_peak_fraction": float(np.median(rates)) * flops["total"] / 1e12 / results["matmul_peak_tflops"],
               "profile": profile}
        if reference is None:
            reference = logits
        else:
            errors = relative_errors(logits, reference)
            row.update(level_logits_rel_error_mean=float(errors.mean()), level_logits_rel_error_max=float(errors.max()),
                       speedup_model=row["img_s"] / results["variants"]["bf16"]["img_s"])
        results["variants"][name] = row
        print(f"{name}: {row['img_s']:.1f} img/s" + (f" = {row['speedup_model']:.3f}x bf16, logits rel error mean "
              f"{row['level_logits_rel_error_mean']:.3f}" if "speedup_model" in row else "") +
              f"; setup+compile {compile_seconds:.1f} s; profile " +
              ", ".join(f"{k[:-9]} {v:.1%}" for k, v in profile.items() if k.endswith("_fraction")), flush=True)
        del variant, outputs
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        args.save()


def fidelity_part(args, device, results: dict) -> None:
    paths = vifb_fused_images(Path(args.vifb), args.vifb_limit)
    bf16 = FuScoreForQuality.from_pretrained(DEMO_MODEL, dtype=torch.bfloat16).to(device).eval()
    dimensions = list(bf16.get_processor().prompts)
    kwargs = dict(dimensions=dimensions, batch_size=args.batch_size, num_workers=args.workers)
    with torch.inference_mode():
        reference = bf16.score(paths, **kwargs)
    results["demo_images"] = len(paths)
    for name in [v for v in args.variants if v in FIDELITY_VARIANTS]:
        model = copy.deepcopy(bf16)
        quantize_variant(model, name)
        with torch.inference_mode():
            scores = model.score(paths, **kwargs)
        per_dim = {}
        for dim in dimensions:
            a, b = np.array(scores[dim]), np.array(reference[dim])
            per_dim[dim] = {"srcc": float(spearmanr(a, b).statistic), "max_abs_diff": float(np.abs(a - b).max())}
        row = {"dimensions": per_dim, "srcc_min": min(d["srcc"] for d in per_dim.values()),
               "max_abs_diff": max(d["max_abs_diff"] for d in per_dim.values())}
        results["demo"][name] = row
        print(f"demo {name}: SRCC min {row['srcc_min']:.4f}, max |diff| {row['max_abs_diff']:.4f} (" +
              ", ".join(f"{d} {v['max_abs_diff']:.3f}" for d, v in per_dim.items()) + ")", flush=True)
        args.save()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="toy size on the CPU, float8 emulated (checks the code paths)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, in this order")
    parser.add_argument("--parts", default="kernels,fidelity,speed")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8, help="prepared batches timed per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--eager", action="store_true", help="without compile_blocks (the tiny run's default)")
    parser.add_argument("--vifb", default=str(DEFAULT_VIFB))
    parser.add_argument("--vifb-limit", type=int, default=None, help="first N fused images (0: all; --tiny: 6)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    args.variants = [name for name in args.variants.split(",") if name]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        args.batch_size, args.batches, args.rounds, args.workers, args.eager = 4, 2, 1, 0, True
        args.vifb_limit = 6 if args.vifb_limit is None else args.vifb_limit
    args.vifb_limit = args.vifb_limit or 0
    import torchao

    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "transformers": transformers.__version__, "torchao": torchao.__version__,
               "date": time.strftime("%Y-%m-%d"), "batch_size": args.batch_size, "compiled": not args.eager,
               "float8_emulated_on_cpu": device.type == "cpu", "variants": {}, "demo": {}}
    results["matmul_peak_tflops"] = matmul_peak_tflops(device, 8192 if device.type == "cuda" else 512)
    args.save = lambda: args.output and write_text(args.output, json.dumps(results, indent=2))
    emulation = cpu_float8_emulation() if device.type == "cpu" else contextlib.nullcontext()
    with emulation, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if "kernels" in args.parts and device.type == "cuda":
            kernels_part(args, device, results)
        if "fidelity" in args.parts:
            fidelity_part(args, device, results)
        if "speed" in args.parts:
            speed_part(args, device, results)
    args.save()


if __name__ == "__main__":
    main()
