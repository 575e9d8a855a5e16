"""Overhead of a sharded, resumable scoring job (`fuscore.scoring_job`) against the engine's own rate, one process.

    python benchmarks/bench_score_job.py                 # on a GPU: 10,000 448-px JPEGs, Qwen3-VL-8B architecture
    python benchmarks/bench_score_job.py --tiny          # on the CPU: 10,000 64-px JPEGs, the tiny Qwen3-VL model

Throughput does not depend on the weights, so the model is built at random init (`bench_speed.build_models`).
Rows, run in turn once per round (the median round is reported):
  * engine: one `model.score(all N images, batch_size, num_workers)` call, the engine's own rate;
  * job-C: `run_scoring_job(..., output=scores.parquet, chunk_size=C)` in one process, what `fuscore score ...
    --output scores.parquet --chunk-size C` runs: chunks of C images, each one `model.score` call written as a
    Parquet chunk under a temporary name and renamed, then the merge into the output in input order.
The overhead of a job row is its median time / the engine's - 1 (target: under 5%), in wall time and in this process's
CPU time (the steadier number on a CPU shared with other work). Each job row also reports the largest difference
between its scores and the engine's (chunks change which images share a batch).
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import transformers  # noqa: E402

from bench_speed import build_models, scratch_folder, write_images  # noqa: E402
from fuscore.scoring_job import run_scoring_job  # noqa: E402
from fuscore.sources import files_source  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def timed(fn, device):
    """Wall seconds, this process's CPU seconds, and the result."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on a GPU, 16 with --tiny")
    parser.add_argument("--workers", type=int, default=None, help="decoding workers (default: 4 on a GPU, 0 on the CPU)")
    parser.add_argument("--chunk-sizes", default="2048", help="comma-separated chunk sizes, one job row each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="compile the model's blocks first (both rows)")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    batch_size = args.batch_size or (64 if device.type == "cuda" else 16)
    workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 0)
    chunk_sizes = [int(size) for size in args.chunk_sizes.split(",")]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    _, model, side = build_models(argparse.Namespace(tiny=args.tiny), device, dtype)
    if args.compile:
        model.compile_blocks()
    folder = scratch_folder("fuscore_bench_job_")
    try:
        start = time.perf_counter()
        (folder / "images").mkdir()
        paths = write_images(folder / "images", args.images, side)
        print(f"wrote {len(paths)} {side}-px JPEGs in {time.perf_counter() - start:.1f} s", flush=True)
        source = files_source([str(folder / "images")])
        dimensions = ["overall"]

        def engine():
            return model.score(paths, dimensions=dimensions, batch_size=batch_size, num_workers=workers)

        def job(chunk_size):
            output = folder / f"scores_{chunk_size}.parquet"
            output.unlink(missing_ok=True)
            run_scoring_job(model, source, dimensions, output, model_name="bench", batch_size=batch_size,
                            num_workers=workers, chunk_size=chunk_size, progress=False)
            return pq.read_table(output, columns=["overall"]).column("overall").to_numpy()

        # Warm-up (first-call costs, compilation, pyarrow's one-time import of pandas) on a few batches.
        model.score(paths[: 4 * batch_size], dimensions=dimensions, batch_size=batch_size, num_workers=workers)
        run_scoring_job(model, files_source(paths[: 2 * batch_size]), dimensions, folder / "warm-up.parquet",
                        batch_size=batch_size, num_workers=workers, chunk_size=batch_size, progress=False)
        rows = {"engine": engine, **{f"job-{size}": (lambda size=size: job(size)) for size in chunk_sizes}}
        seconds = {name: [] for name in rows}
        cpu_seconds = {name: [] for name in rows}
        reference, differences = None, {}
        for round_index in range(args.rounds):
            for name, run in rows.items():
                elapsed, cpu, scores = timed(run, device)
                seconds[name].append(elapsed)
                cpu_seconds[name].append(cpu)
                if name == "engine":
                    reference = np.asarray(scores)
                else:
                    differences[name] = float(np.max(np.abs(np.asarray(scores) - reference)))
                print(f"round {round_index + 1} {name}: {elapsed:.2f} s ({len(paths) / elapsed:.1f} img/s), "
                      f"{cpu:.2f} CPU s", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    medians = {name: float(np.median(values)) for name, values in seconds.items()}
    cpu_medians = {name: float(np.median(values)) for name, values in cpu_seconds.items()}
    results = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else cpu_name(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d"), "model": "tiny qwen3_vl" if args.tiny else "Qwen3-VL-8B architecture (random init)",
        "images": len(paths), "side": side, "batch_size": batch_size, "workers": workers, "compile": args.compile,
        "rounds": args.rounds, "seconds": seconds, "median_seconds": medians,
        "img_s": {name: len(paths) / value for name, value in medians.items()},
        "overhead": {name: medians[name] / medians["engine"] - 1 for name in medians if name != "engine"},
        # On a CPU shared with other work the wall time swings with the load; this process's CPU time does less.
        "cpu_seconds": cpu_seconds, "median_cpu_seconds": cpu_medians,
        "cpu_overhead": {name: cpu_medians[name] / cpu_medians["engine"] - 1 for name in cpu_medians if name != "engine"},
        "max_abs_score_difference": differences,
    }
    print()
    print("| row | median s | img/s | overhead vs engine | median CPU s | CPU overhead | max abs score difference |")
    print("|---|---|---|---|---|---|---|")
    for name in rows:
        overhead = "" if name == "engine" else f"{results['overhead'][name]:+.1%}"
        cpu_overhead = "" if name == "engine" else f"{results['cpu_overhead'][name]:+.1%}"
        difference = "" if name == "engine" else f"{differences[name]:.1e}"
        print(f"| {name} | {medians[name]:.2f} | {results['img_s'][name]:.1f} | {overhead} | {cpu_medians[name]:.2f} | "
              f"{cpu_overhead} | {difference} |")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
