"""Speed and memory of FuScore as a differentiable reward (`fuscore.reward.FuScoreReward`) beside the scoring engine.

    python benchmarks/bench_reward.py --output benchmarks/results_reward_h100.json   # on a GPU: Qwen3-VL-8B, 448 px
    python benchmarks/bench_reward.py --tiny                                         # on a CPU: toy size, seconds

The model is the Qwen3-VL-8B-Instruct architecture at random init in bfloat16 (throughput does not depend on the
weights; `bench_speed.qwen3_vl_8b_config`), every image 448 x 448 (784 patches, 196 visual tokens), the overall
dimension. Rows, each the median of `--rounds` timed rounds of `--steps` batches of `--batch-size` images:
  * engine_e2e: `FuScoreForQuality.score` from JPEG files (the plain inference engine, eager, decoding threads);
  * engine_model: the engine's forward alone under inference mode, on inputs prepared beforehand;
  * reward_preprocess: `FuScoreProcessor.tensor_inputs` and the positions on device tensors (no model);
  * reward_fwd_bwd: `FuScoreReward` forward and backward to the input pixels, with the scorer's activations kept;
  * reward_fwd_bwd_checkpointed: the same with activation checkpointing of the decoder layers and vision blocks.
Peak memory is `torch.cuda.max_memory_allocated` during a row (the weights included); on the CPU it is not measured.
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers  # noqa: E402

from bench_speed import build_models, scratch_folder, synchronize, write_images  # noqa: E402
from fuscore.reward import FuScoreReward  # noqa: E402
from scoring_fuscore import to_device  # noqa: E402


def measure(step, device, steps: int, rounds: int, images_per_step: int) -> dict:
    """Images/s (median round) and peak device memory of `step`, after two warm-up calls."""
    for _ in range(2):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rates = []
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        rates.append(steps * images_per_step / (time.perf_counter() - start))
    result = {"img_s": statistics.median(rates), "img_s_rounds": rates}
    result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return result


def reward_step(reward, images: torch.Tensor) -> torch.Tensor:
    """One reward forward and backward to the input pixels (a fresh leaf copy of `images`); returns their gradient."""
    pixels = images.clone().requires_grad_()
    reward(pixels).sum().backward()
    return pixels.grad


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="toy size on the CPU (checks the code paths, seconds)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per reward step and engine batch")
    parser.add_argument("--steps", type=int, default=8, help="batches per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="decoding threads of the engine")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        args.batch_size, args.steps, args.rounds, args.workers = 4, 2, 3, 0
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d"),
               "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds, "dtype": str(dtype)}

    start = time.perf_counter()
    _, model, side = build_models(args, device, dtype)  # bench_speed's: the same model as its engine rows
    results["parameters_b"] = sum(p.numel() for p in model.parameters()) / 1e9
    results["side"] = side
    results["weights_gib"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    processor = model.get_processor()
    results["image_processor"] = type(processor.image_processor).__name__
    print(f"built {results['parameters_b']:.2f} B parameters in {time.perf_counter() - start:.1f} s; "
          f"{side} px images", flush=True)
    rows = {}

    # --- the plain inference engine -------------------------------------------------------------------------------
    folder = scratch_folder("fuscore_bench_reward_")
    paths = write_images(folder, args.batch_size * args.steps, side)
    rows["engine_e2e"] = measure(lambda: model.score(paths, batch_size=args.batch_size, num_workers=args.workers),
                                 device, 1, args.rounds, len(paths))
    batch = processor(paths[: args.batch_size])
    batch = {**batch, **model.position_inputs(batch)}
    batch = to_device(batch, device)
    batch["pixel_values"] = batch["pixel_values"].to(dtype)

    def engine_forward():
        with torch.inference_mode():
            return model(**batch).score

    rows["engine_model"] = measure(engine_forward, device, args.steps, args.rounds, args.batch_size)

    # --- the reward ---------------------------------------------------------------------------------------------
    images = torch.rand(args.batch_size, 3, side, side, device=device)
    reward = FuScoreReward(model)
    rows["reward_preprocess"] = measure(lambda: reward.inputs(images), device, args.steps, args.rounds, args.batch_size)

    rows["reward_fwd_bwd"] = measure(lambda: reward_step(reward, images), device, args.steps, args.rounds, args.batch_size)
    checkpointed = FuScoreReward(model, checkpointing=True)
    rows["reward_fwd_bwd_checkpointed"] = measure(lambda: reward_step(checkpointed, images), device, args.steps,
                                                  args.rounds, args.batch_size)
    results["rows"] = rows
    engine = rows["engine_model"]["img_s"]
    for name, row in rows.items():
        memory = f"{row['peak_gib']:.1f} GiB peak" if row["peak_gib"] is not None else "peak not measured on the CPU"
        print(f"{name:30s} {row['img_s']:9.2f} img/s  ({row['img_s'] / engine:.2f}x engine model-only)  {memory}")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
