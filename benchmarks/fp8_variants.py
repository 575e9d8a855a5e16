"""What each float8 choice buys and costs, one at a time (issue 19, target 2): the ablation behind `bench_fp8.py`.

    python benchmarks/fp8_variants.py --output fp8_variants.json        # on a GPU of compute capability 8.9+ (~6 min)
    python benchmarks/fp8_variants.py --tiny                            # on a CPU, float8 emulated: the code paths

Variants (torchao's row-wise dynamic float8, `Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())`, the
configuration `FuScoreForQuality.quantize_fp8` applies, on different sets of linear layers and settings):

  * `decoder`: the decoder's linear layers (what `quantize_fp8` does; the row `bf16` is the same model unquantized);
  * `decoder_mlp`: the decoder's MLP only (gate, up, down), its attention projections in bf16;
  * `decoder_vision_blocks`: the decoder and the vision blocks' linear layers (attention and MLP), the patch
    mergers in bf16;
  * `decoder_vision_all`: the decoder and every linear layer of the vision tower, mergers included;
  * `decoder_exact_accum`: `decoder` with `Float8MMConfig(use_fast_accum=False)` (Hopper's fp8 tensor cores then
    promote the accumulator to fp32 as they go);
  * `decoder_inductor_config`, `decoder_vision_blocks_inductor_config` (last, since they change the process's
    compiler settings): torchao's recommended inductor settings (`set_inductor_config=True`: coordinate-descent
    tuning of the generated kernels).

Per variant, at real size (Qwen3-VL-8B architecture at random init, 448 px JPEGs, batch 64, prepared batches,
compiled blocks): the model-only rate, the compile time, the level logits' relative error against bf16, and a
profile of one batch (device time in bf16 and float8 matmuls, attention and the rest, with the fifteen costliest
kernels; inductor's fused kernels that take an amax count as activation quantization). Then, on trained weights, the shipped demo model over VIFB's fused images (eager, every dimension) with
the variants that change numerics: SRCC against its bf16 scores and the largest |difference|.
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
from bench_speed import (build_models, count_flops_per_image, matmul_peak_tflops, scratch_folder, timed,  # noqa: E402
                         write_images)
from fuscore.atomic import write_text  # noqa: E402
from modeling_fuscore import FuScoreForQuality  # noqa: E402
from scoring_fuscore import to_device  # noqa: E402

# name: (decoder layers: "all" / "mlp", vision tower: None / "blocks" / "all", fast accumulation, torchao's inductor settings)
VARIANTS = {
    "decoder": ("all", None, True, False),
    "decoder_mlp": ("mlp", None, True, False),
    "decoder_vision_blocks": ("all", "blocks", True, False),
    "decoder_vision_all": ("all", "all", True, False),
    "decoder_exact_accum": ("all", None, False, False),
    "decoder_inductor_config": ("all", None, True, True),
    "decoder_vision_blocks_inductor_config": ("all", "blocks", True, True),
}
# The variants whose numerics differ (the inductor settings change kernels, not what is quantized).
FIDELITY_VARIANTS = ("decoder", "decoder_mlp", "decoder_vision_blocks", "decoder_vision_all", "decoder_exact_accum")


def quantize_variant(model, name: str) -> None:
    """Quantizes `model` in place as variant `name` (`decoder` through `model.quantize_fp8()` itself)."""
    from torchao.float8.inference import Float8MMConfig
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    decoder, vision, fast_accum, inductor = VARIANTS[name]
    if (decoder, vision, fast_accum, inductor) == ("all", None, True, False):
        if not model.quantize_fp8():
            raise SystemExit("quantize_fp8 kept bf16 here")
        return
    config = Float8DynamicActivationFloat8WeightConfig(
        granularity=PerRow(), activation_value_lb=1e-12, set_inductor_config=inductor,
        mm_config=Float8MMConfig(use_fast_accum=fast_accum))

    def linear(module):  # as quantize_fp8: a layer with an all-zero weight row stays in bf16
        return isinstance(module, torch.nn.Linear) and not bool(module.weight.detach().abs().amax(-1).eq(0).any())

    quantize_(model.model.language_model.layers, config,
              filter_fn=lambda module, fqn: linear(module) and (decoder == "all" or ".mlp." in f".{fqn}"))
    if vision:
        quantize_(model.model.visual, config,
                  filter_fn=lambda module, fqn: linear(module) and (vision == "all" or fqn.startswith("blocks.")))


def classify(name: str) -> str:
    name = name.lower()
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
    prepared = []
    for start in range(0, len(paths), args.batch_size):
        batch = dict(processor(paths[start : start + args.batch_size]))
        batch.update(model.position_inputs(batch))
        batch = to_device(batch, device)
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        prepared.append(batch)
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
    parser.add_argument("--parts", default="fidelity,speed")
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
        if "fidelity" in args.parts:
            fidelity_part(args, device, results)
        if "speed" in args.parts:
            speed_part(args, device, results)
    args.save()


if __name__ == "__main__":
    main()
