"""Scoring and training speed of FuScore at real size (Qwen3-VL-8B architecture, random init), against baselines.

    python benchmarks/bench_speed.py                 # on a GPU: the full table (about 5 minutes on one H100)
    python benchmarks/bench_speed.py --tiny          # on a CPU: the same code paths at toy size, in seconds

Throughput does not depend on the weights, so the model is built from the architecture's config at random init.
Rows (all in one run, on one GPU, against an in-run bf16 matmul peak):
  * generate-1by1: processor + `generate(max_new_tokens=1, output_scores=True)` one image at a time (how
    Q-Align/DeQA-style scripts score);
  * batched-forward: plain `Qwen3VLForConditionalGeneration` forward, batch B, `logits_to_keep=1`, processor run
    serially in the loop (end to end) and on inputs prepared beforehand (model only);
  * fuscore-engine: `FuScoreForQuality.score` from image files (DataLoader workers, batches sorted by visual-token
    count, level rows of the LM head at the answer position only), and its model-only forward;
  * training: LoRA r=64 on the language model with activation checkpointing on pair-aware batches of 4 pairs x 4
    images (FuScore objective) against a plain loop with full-vocabulary logits and cross-entropy at equal batch.
"""

import argparse
import json
import platform
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


def image_processor_for(patch_size: int, side: int):
    from transformers import Qwen2VLImageProcessor

    kwargs = dict(patch_size=patch_size, merge_size=2, temporal_patch_size=2, min_pixels=side * side,
                  max_pixels=side * side, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return Qwen2VLImageProcessor(**kwargs)


def write_images(folder: Path, count: int, side: int, seed: int = 0) -> list:
    """Smooth random scenes saved as JPEG (decoding is part of the end-to-end cost)."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        coarse = rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((side, side), Image.BICUBIC)
        noise = rng.integers(-12, 13, (side, side, 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
        path = folder / f"img_{index:04d}.jpg"
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="toy size on the CPU (checks the code paths, seconds)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--one-by-one-images", type=int, default=48)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        args.batch_size, args.images, args.one_by_one_images, args.workers, args.train_steps = 4, 16, 4, 0, 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d"),
               "batch_size": args.batch_size}
    results["matmul_peak_tflops"] = matmul_peak_tflops(device, 8192 if device.type == "cuda" else 512)
    print(f"matmul peak: {results['matmul_peak_tflops']:.1f} TFLOP/s", flush=True)

    tokenizer = build_tiny_tokenizer()
    if args.tiny:
        base_config, side = tiny_base_config("qwen3_vl", tokenizer), 64
    else:
        base_config, side = qwen3_vl_8b_config(tokenizer), 448
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(device):
        base = AutoModelForImageTextToText.from_config(base_config, dtype=dtype, attn_implementation="sdpa")
    base.eval()
    results["parameters_b"] = sum(p.numel() for p in base.parameters()) / 1e9
    print(f"built {results['parameters_b']:.2f} B parameters in {time.perf_counter() - start:.1f} s", flush=True)
    config = FuScoreConfig(base_config=base.config)
    model = FuScoreForQuality.from_base_model(base, config, tokenizer, image_processor_for(base_config.vision_config.patch_size, side))
    model.eval()
    processor = model.processor
    level_ids = torch.tensor(config.level_token_ids, device=device)
    values = torch.tensor(config.level_values, device=device)

    folder = Path(tempfile.mkdtemp(prefix="fuscore_bench_"))
    paths = write_images(folder, args.images, side)
    sample = processor.prepare_sample(paths[0])
    text_tokens, patches = len(sample["input_ids"]), int(sample["image_grid_thw"].prod())
    flops = count_flops_per_image(base.config, text_tokens, patches)
    results.update(sequence_length=text_tokens, vision_patches=patches, tflop_per_image=flops["total"] / 1e12)
    print(f"sequence {text_tokens} tokens, {patches} patches, {flops['total'] / 1e12:.2f} TFLOP/image", flush=True)

    def to_device(batch):
        batch = batch.to(device)
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        return batch

    # --- baseline 1: one image at a time through generate ---------------------------------------------------
    def generate_one(path):
        inputs = to_device(processor([path]))
        out = base.generate(**inputs, max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True)
        probs = out.scores[0][0, level_ids].float().softmax(-1)
        return float(probs @ values)

    with torch.inference_mode():
        for path in paths[:3]:
            generate_one(path)
        seconds, generate_scores = timed(lambda: [generate_one(p) for p in paths[: args.one_by_one_images]], device)
    results["generate_1by1_img_s"] = args.one_by_one_images / seconds
    print(f"generate one by one: {results['generate_1by1_img_s']:.1f} img/s", flush=True)

    # --- baseline 2: plain batched forward, logits_to_keep=1 ------------------------------------------------
    batches = [paths[i : i + args.batch_size] for i in range(0, len(paths), args.batch_size)]

    def plain_forward(batch):
        out = base(**batch, logits_to_keep=1)
        probs = out.logits[:, -1, level_ids].float().softmax(-1)
        return probs @ values

    with torch.inference_mode():
        plain_forward(to_device(processor(batches[0])))  # warm-up
        seconds, plain_scores = timed(lambda: torch.cat([plain_forward(to_device(processor(b))) for b in batches]), device)
        results["batched_forward_e2e_img_s"] = len(paths) / seconds
        prepared = [to_device(processor(b)) for b in batches]
        seconds, _ = timed(lambda: [plain_forward(b) for b in prepared], device)
        results["batched_forward_model_img_s"] = len(paths) / seconds
    print(f"plain batched forward: {results['batched_forward_e2e_img_s']:.1f} img/s end to end, "
          f"{results['batched_forward_model_img_s']:.1f} model only", flush=True)

    # --- FuScore engine ---------------------------------------------------------------------------------------
    with torch.inference_mode():
        model.score(paths[: args.batch_size], batch_size=args.batch_size, num_workers=args.workers)  # warm-up
        seconds, engine_scores = timed(lambda: model.score(paths, batch_size=args.batch_size, num_workers=args.workers), device)
        results["engine_e2e_img_s"] = len(paths) / seconds
        seconds, _ = timed(lambda: [model(**b).score for b in prepared], device)
        results["engine_model_img_s"] = len(paths) / seconds
    results["engine_vs_plain_max_abs_diff"] = float(np.abs(np.array(engine_scores) - plain_scores.cpu().numpy()).max())
    results["engine_vs_generate_max_abs_diff"] = float(np.abs(np.array(engine_scores[: len(generate_scores)]) - np.array(generate_scores)).max())
    print(f"fuscore engine: {results['engine_e2e_img_s']:.1f} img/s end to end, {results['engine_model_img_s']:.1f} model only; "
          f"max |engine - plain| = {results['engine_vs_plain_max_abs_diff']:.2e}", flush=True)

    # where the model-only time goes: vision tower alone
    with torch.inference_mode():
        batch = prepared[0]
        seconds, _ = timed(lambda: base.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"]), device, repeats=3)
        results["vision_tower_fraction_of_forward"] = seconds / (args.batch_size / results["engine_model_img_s"])
        results["vision_tower_tflops"] = flops["vision"] * args.batch_size / seconds / 1e12

    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as profiler:
            model(**prepared[0]).score.sum().item()
        results["profile"] = profiler.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60)

    peak = results["matmul_peak_tflops"]
    for key in ("generate_1by1", "batched_forward_e2e", "batched_forward_model", "engine_e2e", "engine_model"):
        results[f"{key}_fraction_of_peak"] = results[f"{key}_img_s"] * flops["total"] / 1e12 / peak

    # --- training throughput ----------------------------------------------------------------------------------
    results.update(train_benchmark(base, model, processor, paths, args, device, dtype, flops, peak))

    print()
    print(format_table(results))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


def train_benchmark(base, model, processor, paths, args, device, dtype, flops, peak) -> dict:
    """LoRA r=64 + activation checkpointing, 4 pairs x 4 images, FuScore objective vs full-vocabulary CE loop."""
    from fuscore.lora import add_language_model_lora

    pairs, per_pair = 4, 4
    batch_size = pairs * per_pair
    group_ids = torch.arange(pairs).repeat_interleave(per_pair).to(device)
    rng = np.random.default_rng(0)
    mu = rng.uniform(1, 5, batch_size)
    sub = np.clip(mu[:, None] + rng.normal(0, 0.4, (batch_size, 4)), 1, 5)
    soft_label, sigma = label_for_objective("fuscore", mu, sub, None, level_values=model.config.level_values)
    labels = dict(soft_label=torch.tensor(soft_label, dtype=torch.float32, device=device), mu=torch.tensor(mu, dtype=torch.float32, device=device),
                  sigma=torch.tensor(sigma, dtype=torch.float32, device=device), group_ids=group_ids)
    batch = processor(paths[:batch_size]).to(device)
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    results = {"train_batch": batch_size}

    def run(step_fn, module):
        optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            step_fn().backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)
        def steps():
            for _ in range(args.train_steps):
                step_fn().backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)
        seconds, _ = timed(steps, device)
        memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        return args.train_steps * batch_size / seconds, memory

    # FuScore: answer-position level rows only, tripartite objective.
    peft_model = add_language_model_lora(model, r=64, alpha=128, dropout=0.0)
    peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model.enable_input_require_grads()
    peft_model.train()

    def fuscore_step():
        out = peft_model(**batch)
        return compute_objective("fuscore", level_logits=out.level_logits, score=out.score, score_std=out.score_std, **labels)["loss"]

    results["train_fuscore_samples_s"], results["train_fuscore_peak_gib"] = run(fuscore_step, peft_model)
    # The same without activation checkpointing: FuScore keeps no full-vocabulary logits, so at this batch the
    # activations fit and the recomputed forward pass can be skipped.
    peft_model.gradient_checkpointing_disable()
    results["train_fuscore_nockpt_samples_s"], results["train_fuscore_nockpt_peak_gib"] = run(fuscore_step, peft_model)
    peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # Baseline: the same LoRA model, plain causal-LM loss with full-vocabulary logits over the whole sequence
    # (a plain Trainer on the base model with labels on the answer token).
    lm = base  # shares the LoRA-wrapped modules
    target = torch.full_like(batch["input_ids"], -100)
    lengths = batch["attention_mask"].sum(-1)
    target[torch.arange(batch_size), lengths - 1] = model.config.level_token_ids[0]
    base_inputs = {k: v for k, v in batch.items()}

    def baseline_step():
        return lm(**base_inputs, labels=target).loss

    results["train_baseline_samples_s"], results["train_baseline_peak_gib"] = run(baseline_step, peft_model)
    # Executed matmul FLOPs per sample with activation checkpointing: forward, recomputed forward and the
    # activation-gradient pass through the language model (LoRA weight gradients are negligible); the frozen vision
    # tower runs forward once (no gradient flows into it).
    per_sample = 3 * flops["text"] + flops["vision"]
    results["train_fuscore_fraction_of_peak"] = results["train_fuscore_samples_s"] * per_sample / 1e12 / peak
    results["train_baseline_fraction_of_peak"] = results["train_baseline_samples_s"] * per_sample / 1e12 / peak
    results["train_fuscore_nockpt_fraction_of_peak"] = results["train_fuscore_nockpt_samples_s"] * (2 * flops["text"] + flops["vision"]) / 1e12 / peak
    return results


def format_table(r: dict) -> str:
    lines = [f"GPU/CPU: {r['device']} | torch {r['torch']} | transformers {r['transformers']} | {r['date']}",
             f"model {r['parameters_b']:.2f} B params, sequence {r['sequence_length']} tokens, {r['vision_patches']} patches, "
             f"{r['tflop_per_image']:.2f} TFLOP/image | in-run matmul peak {r['matmul_peak_tflops']:.0f} TFLOP/s",
             "", "| scoring path | images/s | fraction of matmul peak |", "|---|---|---|"]
    for label, key in (("generate, one at a time", "generate_1by1"), (f"plain batched forward (b={r['batch_size']}), end to end", "batched_forward_e2e"),
                       ("plain batched forward, model only", "batched_forward_model"), ("FuScore engine, end to end (files)", "engine_e2e"),
                       ("FuScore forward, model only", "engine_model")):
        lines.append(f"| {label} | {r[key + '_img_s']:.1f} | {r[key + '_fraction_of_peak']:.1%} |")
    lines += ["", f"engine / plain batched (end to end): {r['engine_e2e_img_s'] / r['batched_forward_e2e_img_s']:.2f}x; "
                  f"engine / generate one by one: {r['engine_e2e_img_s'] / r['generate_1by1_img_s']:.2f}x",
              f"max |engine - plain| score difference (bf16): {r['engine_vs_plain_max_abs_diff']:.3e}; vs generate: {r['engine_vs_generate_max_abs_diff']:.3e}",
              f"vision tower: {r['vision_tower_fraction_of_forward']:.0%} of the model-only forward at {r['vision_tower_tflops']:.0f} TFLOP/s",
              "", "| training (LoRA r=64, activation checkpointing, batch 4x4) | samples/s | fraction of peak | peak memory GiB |", "|---|---|---|---|",
              f"| FuScore (level rows, tripartite objective) | {r['train_fuscore_samples_s']:.2f} | {r['train_fuscore_fraction_of_peak']:.1%} | {r['train_fuscore_peak_gib']:.1f} |",
              f"| plain loop, full-vocabulary logits + CE | {r['train_baseline_samples_s']:.2f} | {r['train_baseline_fraction_of_peak']:.1%} | {r['train_baseline_peak_gib']:.1f} |",
              f"| FuScore without activation checkpointing | {r['train_fuscore_nockpt_samples_s']:.2f} | {r['train_fuscore_nockpt_fraction_of_peak']:.1%} | {r['train_fuscore_nockpt_peak_gib']:.1f} |",
              f"training speed-up over the plain loop: {r['train_fuscore_samples_s'] / r['train_baseline_samples_s']:.2f}x with checkpointing, "
              f"{r['train_fuscore_nockpt_samples_s'] / r['train_baseline_samples_s']:.2f}x without"]
    if "profile" in r:
        lines += ["", "model-only forward profile (top kernels by device time):", r["profile"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
