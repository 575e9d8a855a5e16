"""Scoring at the IVIF benchmarks' native image sizes with compilation on (issue 19, target 1).

    python benchmarks/bench_mixed_sizes.py --vifb path/to/vifb --output results.json   # on a GPU, about 5 minutes
    python benchmarks/bench_mixed_sizes.py --tiny                                       # on a CPU: the code paths, seconds

The model is the Qwen3-VL-8B architecture at random init (throughput does not depend on the weights), bf16, sdpa, its
image processor keeping every image at its native size within [128^2, 1280^2] pixels. The workload (`MIX`): 1,024
fused images, 40% VIFB's own fused images (real files, its 9 native sizes, 320x240 to 768x276), 30% at MSRS's
640x480, 20% at M3FD's 1024x768 and 10% at LLVIP's 1280x1024 (smooth random scenes as JPEG, since those datasets are
not here), shuffled; in `fused_ir_vis` mode each sample adds its infrared and visible source (VIFB's own sources,
scenes of the same size for the others). Rows, per mode, in this order:

  * (fused mode, first) engine-auto-first-pass: `model.score(..., compile="auto")`, what the README advises: it
    compiles only where `scoring_fuscore.compile_pays` says it pays for the job, and otherwise scores eagerly;
  * engine-first-pass: `model.score(..., compile=True)` on the mix in a process that has compiled nothing (the
    on-disk inductor caches switched off, unless `--compile-cache`, below), compile time included: what a user who
    passes `--compile` gets. The fused_ir_vis mode runs after the fused one, on the code that one compiled (plus any
    variant it adds);
  * engine-second-pass: the same call again (compiled code in memory);
  * engine-uniform-448: the same compiled engine on 1,024 448x448 images, the reference for achieved TFLOP/s;
  * (fused mode) engine-eager: the same engine with the compiled code switched off, and from it the number of
    samples from which compiling pays;
  * plain-forward: the base model's own batched forward (`logits_to_keep=1`), the processor serial in the loop and
    the batches in input order, as a script over a folder would run it; on `--plain-images` of the mix;
  * (fused mode, last) engine-uniform-448-static: the same with `compile_blocks(dynamic=False)`, one compiled
    shape, the previous default, to show what the shape-stable compilation costs at one size.

In fused_ir_vis mode the synthetic scenes serve as their own sources (one file read three times: the sizes, not the
content, set the cost); VIFB's samples bring their real sources.

The first pass across processes (issue 31: at least 1.5x the plain forward on 512 samples of the mix).
`--compile-cache DIR` switches inductor's on-disk caches on (FX graph cache, AOTAutograd cache, its autotuning
results) and points them and Triton's kernel cache at DIR (`TORCHINDUCTOR_CACHE_DIR=DIR`,
`TRITON_CACHE_DIR=DIR/triton`); `--first-pass-only` runs only the engine's first pass with compiling (the process's
first scoring call) and the plain forward; `--plain-images 0` skips the plain forward, and `--plain-from FILE` takes
its rate from an earlier run's JSON (same machine) for the ratio. A first run on an empty DIR is a user's first job;
a second process on the same DIR is every later job on that machine (one shell line, run on a GPU):

    D=$(mktemp -d) && python benchmarks/bench_mixed_sizes.py --modes fused --images 512 --plain-images 512 \
        --first-pass-only --compile-cache $D --output cold.json && \
      python benchmarks/bench_mixed_sizes.py --modes fused --images 512 --plain-images 0 --plain-from cold.json \
        --first-pass-only --compile-cache $D --output warm.json

What a warm cache leaves: dynamo still traces each compiled frame (its bytecode analysis and guards are not cached
across processes; the cached FX graph is found by the traced graph's key), then loads the compiled code and the
Triton kernels instead of generating and compiling them, and reuses inductor's recorded autotuning choices.
`torch.compiler.save_cache_artifacts`/`load_cache_artifacts` ("Mega-Cache") package these same caches (FX graph,
AOTAutograd, Triton, autotuning, PGO) as bytes to move them to another machine; on one machine with one cache
directory they add nothing, and they skip no tracing either (not used here). Triton's own on-disk cache of
`@triton.autotune` results (`TRITON_CACHE_AUTOTUNING=1`, Triton >= 3.4) concerns hand-written autotuned Triton
kernels only: inductor's generated kernels keep their tuning in inductor's cache (`autotune_local_cache`, on by
default); the variable must be set before such kernels are imported, so set it on the command line when the model
runs any. Each pass records dynamo's per-frame metrics (`compile_profile`): the frame's whole compile time, the
backend's part (AOTAutograd and inductor, or loading from the cache; the rest is dynamo's tracing), and the cache hits.

Achieved TFLOP/s counts matmul FLOPs at each sample's real token counts (`bench_speed.count_flops_per_image`, every
image's vision attention on its own), so padding lowers it. Padding: the decoder's pad tokens over the tokens it
processes, over the engine's batches (`scoring_fuscore.plan_batches`); the vision tower packs its images and pads none.
"""

import argparse
import contextlib
import csv
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import transformers  # noqa: E402

from bench_speed import (benchmark_tokenizer, build_models, count_flops_per_image, image_processor_for,  # noqa: E402
                         matmul_peak_tflops, scratch_folder, timed, write_images)
from modeling_fuscore import FuScoreForQuality  # noqa: E402
from scoring_fuscore import to_device, compile_pays, image_tokens, plan_batches  # noqa: E402


# (benchmark, share of the workload, native size or None for VIFB's own files)
MIX = (("VIFB", 0.4, None), ("MSRS", 0.3, (640, 480)), ("M3FD", 0.2, (1024, 768)), ("LLVIP", 0.1, (1280, 1024)))
TINY_SIZES = {"MSRS": (80, 60), "M3FD": (128, 96), "LLVIP": (160, 128)}
MIN_PIXELS, MAX_PIXELS = 128 * 128, 1280 * 1280


def vifb_samples(folder: Path) -> list:
    """VIFB's (fused, ir, vis) file triples from its manifest.csv."""
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"{manifest}: not found; pass --vifb the VIFB folder (manifest.csv with fused, ir, vis columns)")
    with manifest.open(newline="") as handle:
        return [tuple(str(folder / row[key]) for key in ("fused", "ir", "vis")) for row in csv.DictReader(handle)]


def workload(folder: Path, vifb: list, count: int, tiny: bool, seed: int = 0) -> tuple:
    """`count` (fused, ir, vis) samples following `MIX`, shuffled, and the count per benchmark."""
    rng = random.Random(seed)
    samples, counts = [], {}
    for name, share, size in MIX:
        wanted = round(share * count) if name != MIX[-1][0] else count - len(samples)
        counts[name] = wanted
        if size is None:
            samples += [vifb[rng.randrange(len(vifb))] for _ in range(wanted)]
            continue
        width, height = TINY_SIZES[name] if tiny else size
        # The scenes' content does not matter for speed, their size does: one file serves as fused, ir and vis.
        samples += [(path, path, path) for path in scenes(folder, wanted, width, height, prefix=name)]
    rng.shuffle(samples)
    return samples, counts


def scenes(folder: Path, count: int, width: int, height: int, prefix: str, seed: int = 0) -> list:
    """`bench_speed.write_images` in 16 threads (PIL encodes without the GIL): the large scenes take a minute alone."""
    from concurrent.futures import ThreadPoolExecutor

    chunks = [(start, min(count, start + 64)) for start in range(0, count, 64)]
    with ThreadPoolExecutor(16) as pool:
        parts = pool.map(lambda chunk: write_images(folder, chunk[1] - chunk[0], width, seed=seed + chunk[0], height=height,
                                                    prefix=f"{prefix}_{chunk[0]:05d}"), chunks)
    return [path for part in parts for path in part]


def tiny_vifb(folder: Path) -> list:
    """Stand-in VIFB triples at three small sizes, for `--tiny` without the data."""
    triples = []
    for index, (width, height) in enumerate(((64, 48), (72, 54), (96, 40))):
        parts = [write_images(folder, 4, width, seed=100 + index * 3 + offset, height=height, prefix=f"vifb{index}_{part}")
                 for offset, part in enumerate(("fused", "ir", "vis"))]
        triples += list(zip(*parts))
    return triples


class SampleCosts:
    """Sequence length and matmul FLOPs of a sample at its real token counts (one `prepare_sample` per size)."""

    def __init__(self, processor, config):
        self.processor, self.config, self.cache = processor, config, {}

    def __call__(self, sample) -> tuple:
        from PIL import Image

        images = sample if self.processor.input_mode == "fused_ir_vis" else sample[:1]
        sizes = tuple(Image.open(path).size for path in images)
        if sizes not in self.cache:
            prepared = self.processor.prepare_sample(*sample) if self.processor.input_mode == "fused_ir_vis" \
                else self.processor.prepare_sample(sample[0])
            text = len(prepared["input_ids"])
            patches = [int(grid.prod()) for grid in prepared["image_grid_thw"]]
            flops = count_flops_per_image(self.config, text, 0)["text"]
            flops += sum(count_flops_per_image(self.config, 0, count)["vision"] for count in patches)
            self.cache[sizes] = (text, flops)
        return self.cache[sizes]


def decoder_padding(processor, samples, costs, batch_size: int) -> float:
    """Pad tokens over the tokens the decoder processes, over the engine's own batches."""
    _, batches = plan_batches(image_tokens(processor, [sample[0] for sample in samples]), ["overall"], batch_size)
    lengths = [costs(sample)[0] for sample in samples]
    processed = padded = 0
    for batch in batches:
        longest = max(lengths[position] for position in batch)
        processed += longest * len(batch)
        padded += sum(longest - lengths[position] for position in batch)
    return padded / processed


@contextlib.contextmanager
def eager_blocks(base):
    """The base model's blocks without the compiled code `compile_blocks` gave them in place (kept, and put back)."""
    blocks = list(base.model.language_model.layers) + list(base.model.visual.blocks)
    compiled = [block._compiled_call_impl for block in blocks]
    for block in blocks:
        block._compiled_call_impl = None
    try:
        yield
    finally:
        for block, call in zip(blocks, compiled):
            block._compiled_call_impl = call


def left_padded(batch):
    """The processor's right-padded batch padded on the left, as batched inference with a plain causal LM is run:
    the last position of every row is then its answer position, which `logits_to_keep=1` reads."""
    batch = dict(batch)
    shifts = batch["attention_mask"].shape[1] - batch["attention_mask"].sum(-1)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        batch[key] = torch.stack([row.roll(int(shift)) for row, shift in zip(batch[key], shifts)])
    return batch


def score_call(model, samples, args, compile=True):
    fused = [sample[0] for sample in samples]
    sources = {} if model.processor.input_mode == "fused" else {"ir": [s[1] for s in samples], "vis": [s[2] for s in samples]}
    return model.score(fused, **sources, batch_size=args.batch_size, num_workers=args.workers, compile=compile)


def compile_profile(since: int = 0) -> list:
    """Where compiling went: one entry per frame torch compiled in this process after the first `since` (dynamo's
    own metrics)."""
    from torch._dynamo.utils import get_compilation_metrics

    def microseconds(metric, name):
        value = getattr(metric, name, None)
        return value / 1e6 if value is not None else None

    return [{"frame": metric.co_name, "ops": metric.graph_op_count, "seconds": metric.entire_frame_compile_time_s,
             "backend_seconds": getattr(metric, "backend_compile_time_s", None),
             "inductor_seconds": metric.inductor_compile_time_s,
             "runtime_autotune_seconds": microseconds(metric, "runtime_triton_autotune_time_us"),
             "fx_graph_cache_hits": getattr(metric, "inductor_fx_local_cache_hit_count", None),
             "aot_autograd_cache_hits": getattr(metric, "aotautograd_local_cache_hit_count", None),
             "recompile_reason": metric.recompile_reason}
            for metric in get_compilation_metrics()[since:]]


def compiled_seconds(profile: list) -> float:
    """Seconds dynamo spent compiling the frames of `profile` (tracing, and the backend or its cache)."""
    return sum(entry["seconds"] or 0.0 for entry in profile)


def mode_rows(mode, base, fused_model, samples, uniform, args, device, dtype, peak, results):
    """The rows of one input mode; `results[f"{mode}_{row}_..."]`."""
    tokenizer = fused_model.processor.tokenizer
    patch_size = base.config.vision_config.patch_size
    # A FuScore forward switches the shared vision config to its packed attention, which a model built from the
    # config would then ask transformers for by name: build the wrappers from the base model's own setting.
    base.model.visual.config._attn_implementation = "sdpa"
    model = FuScoreForQuality.from_base_model(
        base, fused_model.config, tokenizer, image_processor_for(patch_size, min_pixels=args.min_pixels, max_pixels=args.max_pixels),
        input_mode=mode).eval()
    costs = SampleCosts(model.processor, base.config)
    mix_flops = sum(costs(sample)[1] for sample in samples)
    key = lambda row: f"{mode}_{row}"  # noqa: E731
    results[key("samples")] = len(samples)
    results[key("mix_tflop_per_sample")] = mix_flops / len(samples) / 1e12
    results[key("decoder_padding_fraction")] = decoder_padding(model.processor, samples, costs, args.batch_size)
    results[key("distinct_sizes")] = len(costs.cache)
    if not args.first_pass_only:
        uniform_model = FuScoreForQuality.from_base_model(base, fused_model.config, tokenizer,
                                                          image_processor_for(patch_size, args.side), input_mode=mode).eval()
        uniform_costs = SampleCosts(uniform_model.processor, base.config)
        uniform_flops = sum(uniform_costs(sample)[1] for sample in uniform)
        results[key("uniform_samples")] = len(uniform)
        results[key("uniform_decoder_padding_fraction")] = decoder_padding(uniform_model.processor, uniform, uniform_costs,
                                                                           args.batch_size)

    record = lambda row, seconds, count, flops: record_row(results, key(row), seconds, count, flops, peak)  # noqa: E731

    with torch.inference_mode():
        if mode == "fused" and not args.first_pass_only:
            # What `--compile auto` (the README's advice) does with this job in a process that has compiled nothing:
            # it compiles only where `compile_pays` says so, and otherwise scores eagerly.
            results[key("auto_compiles")] = compile_pays(model, model.processor, image_tokens(model.processor, [s[0] for s in samples]))
            seconds, _ = timed(lambda: score_call(model, samples, args, compile="auto"), device)
            record("engine_auto_first_pass", seconds, len(samples), mix_flops)
        compiled_before = len(compile_profile())
        seconds, first = timed(lambda: score_call(model, samples, args), device)
        record("engine_first_pass", seconds, len(samples), mix_flops)
        results[key("first_pass_compiles")] = compile_profile(compiled_before)
        results[key("first_pass_compile_seconds")] = compiled_seconds(results[key("first_pass_compiles")])
        print(f"compiled frames: {results[key('first_pass_compiles')]}", flush=True)
        print(f"{key('first_pass')}: {results[key('first_pass_compile_seconds')]:.1f} s compiling (dynamo's frame "
              f"metrics) of {seconds:.1f} s", flush=True)
        if not args.first_pass_only:
            seconds, second = timed(lambda: score_call(model, samples, args), device)
            record("engine_second_pass", seconds, len(samples), mix_flops)
            results[key("first_vs_second_pass_max_abs_diff")] = float(np.abs(np.array(first) - np.array(second)).max())
            score_call(uniform_model, uniform[: args.batch_size], args)
            seconds, _ = timed(lambda: score_call(uniform_model, uniform, args), device)
            record("engine_uniform", seconds, len(uniform), uniform_flops)
            results[key("mix_tflops_over_uniform")] = results[key("engine_second_pass_tflops")] / results[key("engine_uniform_tflops")]
        if mode == "fused" and not args.first_pass_only:
            with eager_blocks(base):
                seconds, _ = timed(lambda: score_call(model, samples, args), device)
            record("engine_eager", seconds, len(samples), mix_flops)
            # Compiling pays from this many samples of the mix on: its cost over the time it saves per sample.
            compile_seconds = (len(samples) / results[key("engine_first_pass_samples_s")]
                               - len(samples) / results[key("engine_second_pass_samples_s")])
            saved = 1 / results[key("engine_eager_samples_s")] - 1 / results[key("engine_second_pass_samples_s")]
            results[key("compile_seconds")] = compile_seconds
            results[key("compile_pays_from_samples")] = compile_seconds / saved if saved > 0 else float("inf")
    plain_rows(mode, base, model, samples, costs, first, args, device, dtype, record, key, results)


def plain_rows(mode, base, model, samples, costs, first, args, device, dtype, record, key, results) -> None:
    """The plain forward of the base model on a subset of the mix in input order (or its rate from `--plain-from`),
    and the engine's passes over it."""
    if args.plain_images <= 0:
        if args.plain_from:
            earlier = args.plain_results
            for name in ("samples_s", "tflops", "fraction_of_peak"):
                results[key(f"plain_forward_{name}")] = earlier[key(f"plain_forward_{name}")]
            results[key("plain_forward_from")] = f"{args.plain_from} ({earlier['device']}, {earlier['date']})"
        over_plain(key, results)
        return
    plain = samples[: args.plain_images]
    plain_flops = sum(costs(sample)[1] for sample in plain)
    level_ids = torch.tensor(model.config.level_token_ids, device=device)
    values = torch.tensor(model.config.level_values, device=device)
    base.model.visual.config._attn_implementation = "sdpa"  # the base model's own vision attention

    def plain_forward(batch_samples):
        images = {"fused": [s[0] for s in batch_samples]}
        if mode == "fused_ir_vis":
            images.update(ir=[s[1] for s in batch_samples], vis=[s[2] for s in batch_samples])
        batch = to_device(left_padded(model.processor(**images)), device)
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        logits = base(**batch, logits_to_keep=1).logits[:, -1, level_ids].float()
        return logits.softmax(-1) @ values

    batches = [plain[start : start + args.batch_size] for start in range(0, len(plain), args.batch_size)]
    with torch.inference_mode(), eager_blocks(base):
        plain_forward(batches[0])
        seconds, plain_scores = timed(lambda: torch.cat([plain_forward(batch) for batch in batches]), device)
    record("plain_forward", seconds, len(plain), plain_flops)
    results[key("engine_vs_plain_max_abs_diff")] = float(np.abs(np.array(first[: len(plain)]) - plain_scores.cpu().numpy()).max())
    over_plain(key, results)


def over_plain(key, results) -> None:
    """Each engine row's rate over the plain forward's, where both are known."""
    if key("plain_forward_samples_s") not in results:
        return
    for row, name in (("engine_first_pass", "first_pass_over_plain"), ("engine_auto_first_pass", "auto_first_pass_over_plain"),
                      ("engine_second_pass", "second_pass_over_plain")):
        if key(f"{row}_samples_s") in results:
            results[key(name)] = results[key(f"{row}_samples_s")] / results[key("plain_forward_samples_s")]


def record_row(results: dict, key: str, seconds: float, count: int, flops: float, peak: float) -> None:
    results[f"{key}_samples_s"] = count / seconds
    results[f"{key}_tflops"] = flops / seconds / 1e12
    results[f"{key}_fraction_of_peak"] = flops / seconds / 1e12 / peak
    print(f"{key}: {count / seconds:.1f} samples/s, {flops / seconds / 1e12:.0f} TFLOP/s "
          f"({flops / seconds / 1e12 / peak:.1%} of peak), {seconds:.1f} s", flush=True)


def static_rows(base, fused_model, uniform, args, device, peak, results) -> None:
    """The fused mode's uniform images with `compile_blocks(dynamic=False)`, one static shape (the previous
    default); last, since it compiles the blocks again."""
    torch._dynamo.reset()
    for block in list(base.model.language_model.layers) + list(base.model.visual.blocks):
        block._fuscore_compiled = False
    base.model.visual.config._attn_implementation = "sdpa"
    model = FuScoreForQuality.from_base_model(base, fused_model.config, fused_model.processor.tokenizer,
                                              image_processor_for(base.config.vision_config.patch_size, args.side)).eval()
    model.compile_blocks(dynamic=False)
    flops = sum(SampleCosts(model.processor, base.config)(sample)[1] for sample in uniform)
    with torch.inference_mode():
        score_call(model, uniform[: args.batch_size], args)
        seconds, _ = timed(lambda: score_call(model, uniform, args), device)
    record_row(results, "fused_engine_uniform_static", seconds, len(uniform), flops, peak)
    results["fused_static_over_dynamic_uniform"] = (results["fused_engine_uniform_static_samples_s"]
                                                    / results["fused_engine_uniform_samples_s"])


def format_table(r: dict) -> str:
    lines = [f"{r['device']} | torch {r['torch']} | transformers {r['transformers']} | {r['date']} | "
             f"in-run matmul peak {r['matmul_peak_tflops']:.0f} TFLOP/s | batch {r['batch_size']}, {r['workers']} decoding threads",
             "mix: " + ", ".join(f"{name} {count}" for name, count in r["mix_counts"].items()),
             compile_cache_line(r), ""]
    for mode in r["modes"]:
        key = lambda row: f"{mode}_{row}"  # noqa: E731
        uniform = (f" (uniform {r[key('uniform_decoder_padding_fraction')]:.2%})"
                   if key("uniform_decoder_padding_fraction") in r else "")
        lines += [f"### {mode}: {r[key('samples')]} samples of the mix ({r[key('distinct_sizes')]} distinct size sets, "
                  f"{r[key('mix_tflop_per_sample')]:.2f} TFLOP/sample), decoder padding {r[key('decoder_padding_fraction')]:.2%}"
                  f"{uniform}", "| row | samples/s | TFLOP/s | fraction of peak |", "|---|---|---|---|"]
        for row in ("engine_auto_first_pass", "engine_first_pass", "engine_second_pass", "engine_eager", "engine_uniform", "engine_uniform_static",
                    "plain_forward"):
            if key(f"{row}_samples_s") in r:
                lines.append(f"| {row} | {r[key(f'{row}_samples_s')]:.1f} | {r[key(f'{row}_tflops')]:.0f} | "
                             f"{r[key(f'{row}_fraction_of_peak')]:.1%} |")
        if key("compile_seconds") in r:
            eager = (f" (eager engine {r[key('engine_eager_samples_s')] / r[key('plain_forward_samples_s')]:.2f}x the plain "
                     "forward)" if key("plain_forward_samples_s") in r else "")
            lines.append(f"compiling: {r[key('compile_seconds')]:.1f} s in the first pass (first minus second pass); it "
                         f"pays from about {r[key('compile_pays_from_samples')]:.0f} samples of this mix on{eager}")
        if mode == "fused" and "fused_static_over_dynamic_uniform" in r:
            lines.append(f"uniform 448 with one static compiled shape / shape-stable: {r['fused_static_over_dynamic_uniform']:.2f}x")
        if key("auto_first_pass_over_plain") in r:
            lines.append(f"--compile auto (compiles: {r[key('auto_compiles')]}), first pass / plain forward "
                         f"{r[key('auto_first_pass_over_plain')]:.2f}x (target 1.5x)")
        if key("first_pass_compiles") in r:
            profile = r[key("first_pass_compiles")]
            autotune = sum(entry.get("runtime_autotune_seconds") or 0.0 for entry in profile)
            lines.append(f"compiling in the first pass (dynamo's frame metrics): {r[key('first_pass_compile_seconds')]:.1f} s; "
                         + "; ".join(frame_summary(entry) for entry in profile if entry["frame"] is not None)
                         + (f"; Triton autotuning at run time {autotune:.1f} s" if autotune else ""))
        if key("plain_forward_from") in r:
            lines.append(f"plain forward from {r[key('plain_forward_from')]}")
        if key("first_pass_over_plain") in r:
            lines.append(f"first pass / plain forward {r[key('first_pass_over_plain')]:.2f}x (target 1.5x)")
        else:
            lines.append("first pass / plain forward: no plain row (--plain-images 0 without --plain-from)")
        others = [f"second pass / plain {r[key('second_pass_over_plain')]:.2f}x" if key("second_pass_over_plain") in r else None,
                  f"mix TFLOP/s / uniform 448 {r[key('mix_tflops_over_uniform')]:.1%} (target 90%)"
                  if key("mix_tflops_over_uniform") in r else None,
                  f"max |score diff| first vs second pass {r[key('first_vs_second_pass_max_abs_diff')]:.1e}"
                  if key("first_vs_second_pass_max_abs_diff") in r else None,
                  f"engine vs plain {r[key('engine_vs_plain_max_abs_diff')]:.1e}" if key("engine_vs_plain_max_abs_diff") in r else None]
        lines += (["; ".join(other for other in others if other)] if any(others) else []) + [""]
    return "\n".join(lines)


def frame_summary(entry: dict) -> str:
    """One compiled frame of `compile_profile`: its compile time, the backend's part and the cache hits."""
    text = f"{entry['frame']} ({entry['ops']} ops) {entry['seconds'] or 0:.1f} s"
    if entry.get("backend_seconds") is not None:
        text += f", backend {entry['backend_seconds']:.1f} s"
    hits = [f"{name} {entry[field]}" for field, name in (("fx_graph_cache_hits", "FX graph cache hits"),
                                                           ("aot_autograd_cache_hits", "AOTAutograd cache hits"))
            if entry.get(field) is not None]
    return text + (f" ({', '.join(hits)})" if hits else "")


def compile_cache_line(r: dict) -> str:
    if r.get("compile_cache") is None:
        return "on-disk compile caches: off (FX graph and AOTAutograd caches switched off: every compilation from scratch)"
    state = "empty: a cold first job" if r["compile_cache_files_before"] == 0 else \
        f"{r['compile_cache_files_before']} files: a job after one that filled it"
    return f"on-disk compile caches: on, in {r['compile_cache']} ({state})"


def earlier_plain_rows(path: str, modes: str, device_name: str) -> dict:
    """The results of an earlier run (`--plain-from`), checked now rather than after the model is built: its plain
    row for every mode asked for, measured on this kind of device."""
    try:
        earlier = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"--plain-from {path}: cannot read it as a results file ({error})")
    missing = [f"{mode}_plain_forward_samples_s" for mode in modes.split(",") if mode
               and f"{mode}_plain_forward_samples_s" not in earlier]
    if missing:
        raise SystemExit(f"--plain-from {path}: no {', '.join(missing)} (write it with the same --modes and "
                         "--plain-images above 0)")
    if earlier.get("device") != device_name:
        raise SystemExit(f"--plain-from {path}: measured on {earlier.get('device')}, this run is on {device_name}")
    return earlier


def use_compile_cache(folder):
    """Inductor's on-disk caches on and in `folder` (with Triton's kernel cache) and the number of files it holds
    already; without a folder, the FX graph and AOTAutograd caches off, as on a machine that has compiled nothing.
    Runs before anything compiles: inductor and Triton read these variables when they first need the folder."""
    if folder is None:
        torch._inductor.config.fx_graph_cache = False
        torch._functorch.config.enable_autograd_cache = False
        return None
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    os.environ["TRITON_CACHE_DIR"] = str(folder / "triton")
    torch._inductor.config.fx_graph_cache = True
    torch._functorch.config.enable_autograd_cache = True
    torch._inductor.config.autotune_local_cache = True
    return sum(1 for path in folder.rglob("*") if path.is_file())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="toy size on the CPU (checks the code paths, seconds)")
    parser.add_argument("--vifb", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "vifb"),
                        help="VIFB folder with manifest.csv (its fused images and sources are read, never copied)")
    parser.add_argument("--images", type=int, default=1024, help="samples of the mix in fused mode")
    parser.add_argument("--ir-vis-images", type=int, default=512, help="samples of the mix in fused_ir_vis mode")
    parser.add_argument("--plain-images", type=int, default=512, help="samples the plain forward runs on")
    parser.add_argument("--modes", default="fused,fused_ir_vis")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--side", type=int, default=448, help="size of the uniform reference images")
    parser.add_argument("--no-static", action="store_true", help="skip the static-shape row (it compiles again)")
    parser.add_argument("--compile-cache", default=None, metavar="DIR",
                        help="switch inductor's on-disk caches on and keep them and Triton's in DIR (created if "
                             "missing); without it the FX graph and AOTAutograd caches are off")
    parser.add_argument("--first-pass-only", action="store_true",
                        help="only the engine's first pass with compiling (the process's first scoring call) and the "
                             "plain forward: run twice with one --compile-cache DIR for a cold and a warm first pass")
    parser.add_argument("--plain-from", default=None, metavar="JSON",
                        help="with --plain-images 0: the plain forward's rate from this earlier run's --output (same "
                             "machine, same mode and mix) for the first pass / plain ratio")
    parser.add_argument("--no-cudnn-attention", action="store_true",
                        help="switch cuDNN's attention off for the whole process (torch.backends.cuda."
                             "enable_cudnn_sdp(False)): how issue 31 measured what its plans cost a first pass")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    if args.plain_from and args.plain_images > 0:
        parser.error("--plain-from needs --plain-images 0 (the plain row is either measured here or read)")
    if args.tiny:
        args.images, args.ir_vis_images, args.batch_size, args.workers, args.side = 20, 10, 4, 0, 64
        args.plain_images = min(args.plain_images, 8)
    args.min_pixels, args.max_pixels = (32 * 32, 160 * 160) if args.tiny else (MIN_PIXELS, MAX_PIXELS)
    cache_files = use_compile_cache(args.compile_cache)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    args.plain_results = earlier_plain_rows(args.plain_from, args.modes, device_name) if args.plain_from else None
    results = {"device": device_name,
               "torch": torch.__version__, "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d"),
               "batch_size": args.batch_size, "workers": args.workers, "tokenizer": benchmark_tokenizer(args.tiny)[1],
               "min_pixels": args.min_pixels, "max_pixels": args.max_pixels, "mix": [list(entry[:2]) for entry in MIX],
               "compile_cache": args.compile_cache and str(Path(args.compile_cache).resolve()),
               "compile_cache_files_before": cache_files, "first_pass_only": args.first_pass_only,
               "cudnn_attention": not args.no_cudnn_attention}
    results["matmul_peak_tflops"] = peak = matmul_peak_tflops(device, 8192 if device.type == "cuda" else 512)
    folder = scratch_folder("fuscore_mixed_")
    vifb = tiny_vifb(folder) if args.tiny else vifb_samples(Path(args.vifb))
    modes = [mode for mode in args.modes.split(",") if mode]
    largest = max(args.images if "fused" in modes else 0, args.ir_vis_images if "fused_ir_vis" in modes else 0)
    samples, counts = workload(folder, vifb, largest, args.tiny)
    results["mix_counts"], results["modes"] = counts, modes
    uniform_side = args.side
    uniform = [] if args.first_pass_only else [
        (path, path, path) for path in scenes(folder, args.images, uniform_side, uniform_side, "uniform", seed=50)]
    start = time.perf_counter()
    base, fused_model, _ = build_models(args, device, dtype)
    print(f"built the model in {time.perf_counter() - start:.1f} s; {len(samples)} samples: {counts}", flush=True)
    # The static-shape row comes last (it compiles again); the modes after the first one run on the code it compiled.
    modes = sorted(modes, key=lambda mode: mode != "fused")
    for index, mode in enumerate(modes):
        count = args.images if mode == "fused" else args.ir_vis_images
        # Each mode's subset keeps the mix: the samples are shuffled, so a prefix follows it up to sampling noise.
        mode_rows(mode, base, fused_model, samples[:count], uniform[:count], args, device, dtype, peak, results)
        if args.output:
            Path(args.output).write_text(json.dumps(results, indent=2))
    if "fused" in modes and not args.no_static and not args.first_pass_only:
        static_rows(base, fused_model, uniform[: args.images], args, device, peak, results)
    print()
    print(format_table(results))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
