"""What each speed option buys, one at a time, at real size (Qwen3-VL-8B architecture, random init).

    python benchmarks/speed_variants.py --part scoring    # model-only forward variants, profile, engine end to end
    python benchmarks/speed_variants.py --part training   # LoRA r=64 training variants
    python benchmarks/speed_variants.py --part training-profile   # where a training step's time goes (the recipe)
    python benchmarks/speed_variants.py --part engine     # image decoding: processes vs threads, engine options
    python benchmarks/speed_variants.py --part training-checkpointing   # checkpointing of the frozen vision tower
    python benchmarks/speed_variants.py --tiny            # both parts at toy size on the CPU (checks the code paths)

`bench_speed.py` is the headline table against the baselines; this script is the ablation behind it: the same
forward with the multimodal RoPE ids computed inside `forward` (the base model's loop, which synchronises with the
GPU per row) or beforehand on the CPU, eager or with the decoder layers and vision blocks compiled
(`FuScoreForQuality.compile_blocks`), with a profile of where the device time goes (matrix products, attention,
everything else, and idle gaps); and the training step with and without activation checkpointing and compilation.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers  # noqa: E402
from bench_speed import (count_flops_per_image, image_processor_for, kernel_breakdown, matmul_peak_tflops,  # noqa: E402
                         qwen3_vl_8b_config, scratch_folder, timed, write_images)
from transformers import AutoModelForImageTextToText  # noqa: E402

from fuscore.objectives import compute_objective, label_for_objective  # noqa: E402
from fuscore.tiny import build_tiny_tokenizer, tiny_base_config  # noqa: E402
from modeling_fuscore import FuScoreConfig, FuScoreForQuality  # noqa: E402
from scoring_fuscore import to_device  # noqa: E402


def build(args, device, dtype):
    tokenizer = build_tiny_tokenizer()
    if args.tiny:
        base_config, side = tiny_base_config("qwen3_vl", tokenizer, num_layers=3), 64
    else:
        base_config, side = qwen3_vl_8b_config(tokenizer), 448
    torch.manual_seed(0)
    with torch.device(device):
        base = AutoModelForImageTextToText.from_config(base_config, dtype=dtype, attn_implementation="sdpa")
    model = FuScoreForQuality.from_base_model(base, FuScoreConfig(base_config=base.config), tokenizer,
                                              image_processor_for(base_config.vision_config.patch_size, side))
    return base, model.eval(), side


def scoring_part(args, device, dtype, results):
    base, model, side = build(args, device, dtype)
    processor = model.processor
    folder = scratch_folder("fuscore_variants_")
    paths = write_images(folder, args.images, side)
    sample = processor.prepare_sample(paths[0])
    flops = count_flops_per_image(base.config, len(sample["input_ids"]), int(sample["image_grid_thw"].prod()))
    peak = results["matmul_peak_tflops"]
    batches = [paths[i : i + args.batch_size] for i in range(0, len(paths), args.batch_size)]
    cpu_batches = [processor(b) for b in batches]
    with_ids = []
    for batch in cpu_batches:
        batch = dict(batch)
        batch["position_ids"] = model.rope_position_ids(batch)
        with_ids.append({k: v.to(device) for k, v in batch.items()})
    without_ids = [{k: v for k, v in b.items() if k != "position_ids"} for b in with_ids]
    for b in with_ids + without_ids:
        b["pixel_values"] = b["pixel_values"].to(dtype)

    def rate(prepared, repeats=2):
        with torch.inference_mode():
            model(**prepared[0])
            seconds, _ = timed(lambda: [model(**b).score for b in prepared], device, repeats=repeats)
        return len(paths) / seconds

    def record(name, img_s):
        results[f"{name}_img_s"] = img_s
        results[f"{name}_fraction_of_peak"] = img_s * flops["total"] / 1e12 / peak
        print(f"{name}: {img_s:.1f} img/s, {results[f'{name}_fraction_of_peak']:.1%} of peak", flush=True)

    def profile(name, prepared):
        if device.type != "cuda":
            return
        from torch.profiler import ProfilerActivity, profile as torch_profile

        with torch.inference_mode():
            model(**prepared[0])
            torch.cuda.synchronize()
            with torch_profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as profiler:
                start = time.perf_counter()
                model(**prepared[0]).score.sum().item()
                wall = time.perf_counter() - start
        breakdown = kernel_breakdown(profiler, wall)
        results[f"{name}_profile"] = breakdown
        print(f"{name} profile: " + ", ".join(f"{k} {v:.1%}" for k, v in breakdown.items()), flush=True)
        results[f"{name}_top_kernels"] = profiler.key_averages().table(sort_by="cuda_time_total", row_limit=15,
                                                                        max_name_column_width=70)

    numerics(model, with_ids, without_ids, results)
    record("eager_rope_in_forward", rate(without_ids))
    record("eager_rope_precomputed", rate(with_ids))
    with torch.inference_mode():
        b = without_ids[0]
        seconds, _ = timed(lambda: base.model.get_rope_index(input_ids=b["input_ids"], mm_token_type_ids=b["mm_token_type_ids"],
                                                             image_grid_thw=b["image_grid_thw"], attention_mask=b["attention_mask"]), device, 3)
        results["rope_index_on_gpu_ms"] = seconds * 1e3
        c = cpu_batches[0]
        seconds, _ = timed(lambda: model.rope_position_ids(c), torch.device("cpu"), 3)
        results["rope_index_on_cpu_ms"] = seconds * 1e3
        seconds, _ = timed(lambda: base.model.get_image_features(b["pixel_values"], b["image_grid_thw"]), device, 3)
        results["eager_vision_ms"] = seconds * 1e3
        results["eager_vision_tflops"] = flops["vision"] * args.batch_size / seconds / 1e12
    print(f"rope index per batch: {results['rope_index_on_gpu_ms']:.1f} ms on the GPU tensors, "
          f"{results['rope_index_on_cpu_ms']:.1f} ms on the CPU; vision tower {results['eager_vision_ms']:.1f} ms "
          f"({results['eager_vision_tflops']:.0f} TFLOP/s)", flush=True)
    profile("eager_rope_precomputed", with_ids)
    with torch.inference_mode():
        eager_scores = torch.cat([model(**b).score for b in without_ids]).float().cpu().numpy()

    start = time.perf_counter()
    model.compile_blocks()
    with torch.inference_mode():
        model(**with_ids[0]).score.sum().item()
    results["compile_seconds"] = time.perf_counter() - start
    print(f"compile + first batch: {results['compile_seconds']:.1f} s", flush=True)
    record("compiled_rope_precomputed", rate(with_ids))
    with torch.inference_mode():
        b = with_ids[0]
        seconds, _ = timed(lambda: base.model.get_image_features(b["pixel_values"], b["image_grid_thw"]), device, 3)
        results["compiled_vision_ms"] = seconds * 1e3
        results["compiled_vision_tflops"] = flops["vision"] * args.batch_size / seconds / 1e12
    print(f"compiled vision tower {results['compiled_vision_ms']:.1f} ms ({results['compiled_vision_tflops']:.0f} TFLOP/s)", flush=True)
    profile("compiled_rope_precomputed", with_ids)
    with torch.inference_mode():
        b = with_ids[0]
        seconds, _ = timed(lambda: base.model.visual.patch_embed(b["pixel_values"]), device, 3)
        results["patch_embed_conv3d_ms"] = seconds * 1e3
        if device.type == "cuda":
            from torch.profiler import ProfilerActivity, profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as profiler:
                base.model.get_image_features(b["pixel_values"], b["image_grid_thw"])
                torch.cuda.synchronize()
            results["compiled_vision_top_ops"] = profiler.key_averages().table(sort_by="cuda_time_total", row_limit=25,
                                                                               max_name_column_width=70)
    print(f"patch embedding (Conv3d) alone: {results['patch_embed_conv3d_ms']:.1f} ms", flush=True)

    with torch.inference_mode():
        model.score(paths[: args.batch_size], batch_size=args.batch_size, num_workers=args.workers)
        seconds, scores = timed(lambda: model.score(paths, batch_size=args.batch_size, num_workers=args.workers), device)
    record("compiled_engine_e2e", len(paths) / seconds)
    engine_breakdown(model, processor, paths, args, device, results)
    results["compiled_engine_vs_eager_max_abs_diff"] = float(np.abs(np.array(scores) - eager_scores).max())
    print(f"max |compiled engine - eager forward| = {results['compiled_engine_vs_eager_max_abs_diff']:.2e}", flush=True)


def engine_breakdown(model, processor, paths, args, device, results):
    """Where the end-to-end engine's wall time goes: main-process time in collate (GPU image preprocessing), RoPE ids,
    forward launch and the rest (waiting for workers, copies, reading results), plus the GPU's busy time."""
    import scoring_fuscore

    spent = {"collate": 0.0, "rope": 0.0, "forward": 0.0}

    def timed_call(name, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - start
        return wrapper

    spent["vision_positions"] = 0.0
    processor.collate = timed_call("collate", type(processor).collate.__get__(processor))
    model.rope_position_ids = timed_call("rope", type(model).rope_position_ids.__get__(model))
    model.vision_tower_inputs = timed_call("vision_positions", type(model).vision_tower_inputs.__get__(model))
    model.forward = timed_call("forward", type(model).forward.__get__(model))
    original_property = type(processor).__dict__["supports_device_preprocessing"]
    patch_embed = model.model.visual.patch_embed
    default_switch_interval = sys.getswitchinterval()
    try:
        # Worker processes against decoding threads, and the CPU-made patches, were measured here on 2026-11-26
        # (RESULTS_speed.md). Now: thread counts; Python's GIL switch interval (a thread waiting for the GIL, such as
        # the GPU thread after each synchronisation, waits up to this long while another thread runs Python); the
        # patch embedding's Conv3d replaced by its equivalent matmul.
        variants = (("8_decode_threads", 8, {}), ("4_decode_threads", 4, {}), ("2_decode_threads", 2, {}),
                    ("8_decode_threads_switch_0.5ms", 8, {"switch_interval": 0.0005}),
                    ("4_decode_threads_switch_0.5ms", 4, {"switch_interval": 0.0005}),
                    ("4_decode_threads_matmul_patch_embed", 4, {"matmul_patch_embed": True}))
        for variant, workers, options in variants:
            sys.setswitchinterval(options.get("switch_interval", default_switch_interval))
            if options.get("matmul_patch_embed"):
                patch_embed.forward = lambda hidden_states: F.linear(
                    hidden_states.to(patch_embed.proj.weight.dtype),
                    patch_embed.proj.weight.view(patch_embed.proj.out_channels, -1), patch_embed.proj.bias)
            for key in spent:
                spent[key] = 0.0
            with torch.inference_mode():
                if device.type == "cuda":
                    from torch.profiler import ProfilerActivity, profile as torch_profile

                    with torch_profile(activities=[ProfilerActivity.CUDA]) as profiler:
                        start = time.perf_counter()
                        scoring_fuscore.score_images(model, processor, paths, [None] * len(paths), [None] * len(paths), ["overall"],
                                                      batch_size=args.batch_size, num_workers=workers)
                        torch.cuda.synchronize()
                        wall = time.perf_counter() - start
                    busy = kernel_breakdown(profiler, wall)
                else:
                    start = time.perf_counter()
                    scoring_fuscore.score_images(model, processor, paths, [None] * len(paths), [None] * len(paths), ["overall"],
                                                  batch_size=args.batch_size, num_workers=workers)
                    wall = time.perf_counter() - start
                    busy = {"gpu_idle_fraction_of_wall": float("nan")}
            entry = {"img_s": len(paths) / wall, "wall_s": wall, **{f"{k}_s": v for k, v in spent.items()},
                     "gpu_idle_fraction_of_wall": busy["gpu_idle_fraction_of_wall"]}
            results[f"engine_breakdown_{variant}"] = entry
            print(f"engine {variant}: " + ", ".join(f"{k} {v:.3g}" for k, v in entry.items()), flush=True)
            patch_embed.__dict__.pop("forward", None)
    finally:
        sys.setswitchinterval(default_switch_interval)
        patch_embed.__dict__.pop("forward", None)
        type(processor).supports_device_preprocessing = original_property
        for name in ("collate", "rope_position_ids", "vision_tower_inputs", "forward"):
            for obj in (processor, model):
                obj.__dict__.pop(name, None)


def loader_only(processor, paths, args, results):
    """Image decoding alone (no model): time to the first batch and to the last, worker processes against threads."""
    import scoring_fuscore

    items = [(index, "overall") for index in range(len(paths))]
    dataset = scoring_fuscore._ScoringDataset(processor, paths, [None] * len(paths), [None] * len(paths), items, defer_pixels=True)
    batches = [list(range(i, min(i + args.batch_size, len(paths)))) for i in range(0, len(paths), args.batch_size)]
    loaders = {
        "processes": lambda: torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=args.workers,
                                                         collate_fn=lambda samples: samples, pin_memory=torch.cuda.is_available(),
                                                         worker_init_fn=scoring_fuscore._single_threaded_worker),
        "threads": lambda: scoring_fuscore._decoded_in_threads(dataset, batches, args.workers),
    }
    for name, make in loaders.items():
        start = time.perf_counter()
        first = None
        for _ in make():
            if first is None:
                first = time.perf_counter() - start
        total = time.perf_counter() - start
        results[f"loader_{name}"] = {"first_batch_s": first, "total_s": total, "img_s": len(paths) / total}
        print(f"loader only, {name}: first batch after {first:.2f} s, all {len(paths)} images in {total:.2f} s", flush=True)


def engine_part(args, device, dtype, results):
    base, model, side = build(args, device, dtype)
    folder = scratch_folder("fuscore_variants_")
    paths = write_images(folder, args.images, side)
    loader_only(model.processor, paths, args, results)
    model.compile_blocks()
    with torch.inference_mode():
        model.score(paths[: args.batch_size], batch_size=args.batch_size, num_workers=args.workers)
    engine_breakdown(model, model.processor, paths, args, device, results)


def numerics(model, with_ids, without_ids, results):
    """Scores of the first two batches' first 16 images: eager bf16 (RoPE ids inside forward or precomputed),
    compiled bf16, and an eager float32 copy of the model as the reference."""
    import copy

    subsets = []
    for b_with, b_without in zip(with_ids[:2], without_ids[:2]):
        count = 16
        patches = int(b_with["image_grid_thw"][:count].prod(-1).sum())
        def cut(b):
            out = {k: (v[:, :count] if k == "position_ids" else v[:count]) for k, v in b.items() if k != "pixel_values"}
            out["image_grid_thw"] = b["image_grid_thw"][:count]
            out["pixel_values"] = b["pixel_values"][:patches]
            return out
        subsets.append((cut(b_with), cut(b_without)))

    def run(m, use_ids, dtype=None):
        outs = []
        with torch.inference_mode():
            for b_with, b_without in subsets:
                b = dict(b_with if use_ids else b_without)
                if dtype is not None:
                    b["pixel_values"] = b["pixel_values"].to(dtype)
                outs.append(m(**b))
        return (torch.cat([o.score for o in outs]).double(), torch.cat([o.level_logits for o in outs]).double())

    eager_inside, _ = run(model, False)
    eager, eager_logits = run(model, True)
    reference_model = copy.deepcopy(model).float()
    reference, reference_logits = run(reference_model, True, torch.float32)
    del reference_model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    model.compile_blocks()
    compiled, compiled_logits = run(model, True)
    relative = lambda out, ref: float((out - ref).norm() / ref.norm())  # noqa: E731
    results.update(
        rope_inside_vs_precomputed_max_abs=float((eager_inside - eager).abs().max()),
        eager_bf16_vs_fp32_score_max_abs=float((eager - reference).abs().max()),
        compiled_bf16_vs_fp32_score_max_abs=float((compiled - reference).abs().max()),
        compiled_vs_eager_bf16_score_max_abs=float((compiled - eager).abs().max()),
        eager_bf16_vs_fp32_logits_rel=relative(eager_logits, reference_logits),
        compiled_bf16_vs_fp32_logits_rel=relative(compiled_logits, reference_logits),
        reference_score_range=[float(reference.min()), float(reference.max())],
    )
    print("numerics: " + ", ".join(f"{k}={results[k]}" for k in (
        "rope_inside_vs_precomputed_max_abs", "eager_bf16_vs_fp32_score_max_abs", "compiled_bf16_vs_fp32_score_max_abs",
        "compiled_vs_eager_bf16_score_max_abs", "eager_bf16_vs_fp32_logits_rel", "compiled_bf16_vs_fp32_logits_rel",
        "reference_score_range")), flush=True)
    # Back to eager for the timings that follow: drop the compiled wrappers.
    for blocks in (model.model.language_model.layers, model.model.visual.blocks):
        for block in blocks:
            block._compiled_call_impl = None
            block._fuscore_compiled = False
    torch._dynamo.reset()


def training_part(args, device, dtype, results):
    from fuscore.lora import add_language_model_lora

    base, model, side = build(args, device, dtype)
    processor = model.processor
    folder = scratch_folder("fuscore_variants_")
    pairs, per_pair = 4, 4
    batch_size = pairs * per_pair
    paths = write_images(folder, batch_size, side)
    sample = processor.prepare_sample(paths[0])
    flops = count_flops_per_image(base.config, len(sample["input_ids"]), int(sample["image_grid_thw"].prod()))
    peak = results["matmul_peak_tflops"]
    rng = np.random.default_rng(0)
    mu = rng.uniform(1, 5, batch_size)
    sub = np.clip(mu[:, None] + rng.normal(0, 0.4, (batch_size, 4)), 1, 5)
    soft_label, sigma = label_for_objective("fuscore", mu, sub, None, level_values=model.config.level_values)
    as_tensor = lambda values: torch.tensor(values, dtype=torch.float32, device=device)  # noqa: E731
    labels = dict(soft_label=as_tensor(soft_label), mu=as_tensor(mu), sigma=as_tensor(sigma),
                  group_ids=torch.arange(pairs, device=device).repeat_interleave(per_pair))
    batch = dict(processor(paths))
    if args.part == "training-profile":  # as trainer_fuscore.py's collator: RoPE ids and vision positions from the CPU
        batch.update(model.position_inputs(batch))
    else:
        batch["position_ids"] = model.rope_position_ids(batch)
    batch = to_device(batch, device)
    batch["pixel_values"] = batch["pixel_values"].to(dtype)

    peft_model = add_language_model_lora(model, r=64, alpha=128, dropout=0.0)
    peft_model.enable_input_require_grads()
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-5)

    # The plain loop's step (as in bench_speed.py): the base model's own head, full-vocabulary logits and CE.
    target = torch.full_like(batch["input_ids"], -100)
    target[torch.arange(batch_size), batch["attention_mask"].sum(-1) - 1] = model.config.level_token_ids[0]

    def baseline_step():
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            loss = base(**{k: v for k, v in batch.items() if k != "position_ids"}, labels=target).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def step():
        # Mixed precision as the Trainer runs it with bf16=True (the float32 LoRA adapters then multiply in bf16).
        # The committed results_speed_variants_training_h100.json and the training profile predate this: measured
        # without autocast, their LoRA matmuls ran in float32.
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            out = peft_model(**batch)
        loss = compute_objective("fuscore", level_logits=out.level_logits, score=out.score, score_std=out.score_std, **labels)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def measure(name, checkpointing, step=step, checkpoint_vision_tower=False):
        if checkpointing:
            # FuScoreForQuality leaves its frozen vision tower unchecked; a plain model checkpoints every block.
            enabled = base if checkpoint_vision_tower else peft_model
            enabled.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            peft_model.gradient_checkpointing_disable()
        start = time.perf_counter()
        for _ in range(2):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        results[f"{name}_warmup_seconds"] = time.perf_counter() - start
        seconds, _ = timed(lambda: [step() for _ in range(args.train_steps)], device)
        samples_s = args.train_steps * batch_size / seconds
        executed = (3 if checkpointing else 2) * flops["text"] + flops["vision"]
        results[f"{name}_samples_s"] = samples_s
        results[f"{name}_fraction_of_peak"] = samples_s * executed / 1e12 / peak
        results[f"{name}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        print(f"{name}: {samples_s:.2f} samples/s, {results[f'{name}_fraction_of_peak']:.1%} of peak, "
              f"{results[f'{name}_peak_gib']:.1f} GiB (warm-up {results[f'{name}_warmup_seconds']:.0f} s)", flush=True)

    if args.part == "training-profile":
        # Where a training step's time goes, for FuScore's recipe as trainer_fuscore.py --compile_blocks runs it:
        # compiled decoder layers and (frozen, unchecked) vision blocks, positions from the CPU, checkpointing.
        model.compile_blocks()
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        for _ in range(3):
            step()
        profile_steps("train_compiled_ckpt", step, device, results, flops, batch_size)
        return
    if args.part == "training-checkpointing":
        # What checkpointing the frozen vision tower costs (nothing back-propagates through it), for the plain loop
        # and for FuScore, and what compiling its blocks then adds. RoPE ids inside the forward, as the Trainer runs.
        batch.pop("position_ids")
        # Eager rows first: the plain loop shares the decoder layers that `compile_blocks` compiles in place.
        measure("baseline_ckpt_all_blocks", True, baseline_step, checkpoint_vision_tower=True)
        measure("baseline_ckpt_language_model_only", True, baseline_step)
        measure("baseline_ckpt_all_blocks_again", True, baseline_step, checkpoint_vision_tower=True)  # drift check
        measure("train_eager_ckpt_all_blocks", True, checkpoint_vision_tower=True)
        measure("train_eager_ckpt_language_model_only", True)
        model.compile_blocks(vision_tower=False)
        measure("train_compiled_layers_ckpt_all_blocks", True, checkpoint_vision_tower=True)
        measure("train_compiled_layers_ckpt_language_model_only", True)
        model.compile_blocks()
        measure("train_compiled_layers_and_vision_ckpt_language_model_only", True)
        return
    measure("train_eager_ckpt", True)
    measure("train_eager_nockpt", False)
    model.compile_blocks(vision_tower=False)
    measure("train_compiled_ckpt", True)
    measure("train_compiled_nockpt", False)


def profile_steps(name, step, device, results, flops, batch_size, steps=2):
    """Device time of `steps` training steps by kernel class, the vision tower's share, and the top operators."""
    if device.type != "cuda":
        return
    from torch.profiler import ProfilerActivity, profile as torch_profile

    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU], record_shapes=True) as profiler:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    results[f"{name}_profile"] = kernel_breakdown(profiler, wall)
    results[f"{name}_profile_step_ms"] = wall / steps * 1e3
    results[f"{name}_top_ops"] = profiler.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70)
    # By input shape: LoRA's rank-64 matmuls show up apart from the frozen projections'.
    results[f"{name}_top_ops_by_shape"] = profiler.key_averages(group_by_input_shape=True).table(
        sort_by="cuda_time_total", row_limit=40, max_name_column_width=40, max_shapes_column_width=80)
    print(f"{name} profile ({wall / steps * 1e3:.0f} ms per step): " + ", ".join(
        f"{k} {v:.1%}" for k, v in results[f"{name}_profile"].items()), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("scoring", "training", "training-profile", "training-checkpointing", "engine",
                                           "both"), default="both")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        args.batch_size, args.images, args.workers, args.train_steps = 4, 8, 2, 1
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
               "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d"), "batch_size": args.batch_size}
    results["matmul_peak_tflops"] = matmul_peak_tflops(device, 8192 if device.type == "cuda" else 512)
    print(f"{results['device']}, torch {results['torch']}, transformers {results['transformers']}; "
          f"matmul peak {results['matmul_peak_tflops']:.0f} TFLOP/s", flush=True)
    try:
        if args.part == "engine":
            engine_part(args, device, dtype, results)
        if args.part in ("scoring", "both"):
            scoring_part(args, device, dtype, results)
        if args.part in ("training", "training-profile", "training-checkpointing", "both"):
            if args.part == "both":
                torch._dynamo.reset()
            training_part(args, device, dtype, results)
    finally:
        if args.output:
            Path(args.output).write_text(json.dumps(results, indent=2))
    for key, value in results.items():
        if isinstance(value, str) and "\n" in value:
            print(f"\n{key}:\n{value}")


if __name__ == "__main__":
    main()
