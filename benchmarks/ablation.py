"""Does FuScore's within-pair Thurstone term help? The objective ablation of issue 32, one command:

    python benchmarks/ablation.py --output $OUT/ablation          # the whole design on one GPU machine (16 cores)
    python benchmarks/ablation.py --settings close --output DIR  # one shard (then --settings standard --resume)
    python benchmarks/ablation.py --preset tiny --output DIR     # the whole pipeline at toy size on a CPU
    python benchmarks/ablation.py --render-only --output DIR     # the analysis again from DIR/results_ablation.json

Every run fine-tunes the shipped demo checkpoint (`fuscore/demo_model`, synthetic-trained, 1.2 M parameters) with
one variant of FuScore's objective on synthetic scenes of a seed it never saw, for the same steps and batches, and
is scored on held-out synthetic scenes (another seed) against the *constructed truth* (`fuscore_data.synthetic`:
`0.6 mean + 0.4 min` of the four oracle sub-scores, recomputed from the table's sub-score columns), not against the
simulated raters' noisy MOS. Labels are synthetic (constructed truth plus simulated raters), never human ratings.

Settings (`SyntheticIVIF(shared_degradation=...)`): `close` (0.1: one degradation draw per source pair, so the fused
images of a pair are close in quality and their order is hard to see) and `standard` (None: each image its own
degradations).

Rows (lambda_w = the within-pair term's weight, lambda_c = the cross-pair term's; every row keeps the KL term):

    kl_only            lambda_w 0,    lambda_c 0
    kl_within          lambda_w 1,    lambda_c 0
    kl_cross           lambda_w 0,    lambda_c 0.5
    kl_within_cross    lambda_w 1,    lambda_c 0.5   (the shipped objective)
    within_fixed_sd    lambda_w 1,    lambda_c 0, predicted sd fixed at 1 in the Thurstone term (`fixed_std`)
    within_sem         lambda_w 1,    lambda_c 0, the Thurstone targets' spread is the MOS standard error
                       mos_std / sqrt(raters) (`pair_target_raters`, an option of ours)
    placebo            lambda_w 1e-3, lambda_c 0: how far runs diverge from a negligible change of the objective
    truth_kl_only      kl_only trained on the constructed truth as the label mean (mos := truth; mos_std and the
    truth_kl_within    kl_within   sub-scores unchanged, so the label's spread is the same)
    demo               the checkpoint itself, not fine-tuned (evaluated once per setting; a reference, not compared)

Each row runs with the same seeds; a seed sets the order of the training batches (the model, the data and the
schedule are the same for every run), so rows are compared *paired by seed*.

Declared analysis (fixed before the run; the script computes it and writes the tables itself):

* Metric: within-pair ranking accuracy against the constructed truth on the held-out scenes (pairs of fused images
  of one source pair whose truths differ; a tie in the prediction counts 1/2). Beside it: mean within-pair SRCC and
  overall SRCC against the truth, within-pair accuracy against the MOS, the mean predicted sd, and every loss term
  (training, logged 10 times per run, and held-out).
* Primary contrast (one): `close`, kl_within minus kl_only, paired by seed, 95% paired t-interval (n - 1 degrees of
  freedom), two-sided p. The term helps (hurts) if the interval lies above (below) 0; otherwise this run finds no
  difference and the interval says how large an effect it excludes.
* Secondary contrasts (`SECONDARY`, 17 over both settings): the same statistics, each with its p multiplied by 17
  (Bonferroni); a secondary contrast is called a difference only if that adjusted p is below 0.05. The placebo's
  per-seed differences from kl_only measure the run-to-run divergence that no change of the objective explains.

Machinery: tables are generated once per setting (in parallel), and every image is run through the processor once
and cached on disk (every row and seed reuses the same image patches), so a run costs only its training steps and
one forward pass over the held-out images. `--jobs N` runs N trainings at once, one process each (on a GPU they
share it: a model this small leaves it mostly idle); the parent alone writes `results_ablation.json` and
`RESULTS_ablation.md` in `--output` after every run, so a run cut short keeps what finished (`--deadline` starts no
run that would end past it; `--resume` does the rest). Runs go seed by seed, so a cut leaves whole seeds. The
tracked `benchmarks/RESULTS_ablation.md` and `benchmarks/results_ablation.json` are written only with `--publish`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from fuscore.hub import DEMO_MODEL  # noqa: E402


# key -> (label, training options, label source). Options are FuScoreTrainingConfig fields.
ROWS = {
    "kl_only": ("KL only", dict(lambda_within=0.0, lambda_cross=0.0), "mos"),
    "kl_within": ("KL + within", dict(lambda_within=1.0, lambda_cross=0.0), "mos"),
    "kl_cross": ("KL + cross", dict(lambda_within=0.0, lambda_cross=0.5), "mos"),
    "kl_within_cross": ("KL + within + cross (shipped)", dict(lambda_within=1.0, lambda_cross=0.5), "mos"),
    "within_fixed_sd": ("KL + within, predicted sd fixed", dict(lambda_within=1.0, lambda_cross=0.0, fixed_std=True),
                        "mos"),
    "within_sem": ("KL + within, target spread = MOS standard error",
                   dict(lambda_within=1.0, lambda_cross=0.0, pair_target_raters="raters"), "mos"),
    "placebo": ("placebo: KL + 0.001 within", dict(lambda_within=1e-3, lambda_cross=0.0), "mos"),
    "truth_kl_only": ("KL only, truth as label", dict(lambda_within=0.0, lambda_cross=0.0), "truth"),
    "truth_kl_within": ("KL + within, truth as label", dict(lambda_within=1.0, lambda_cross=0.0), "truth"),
}
DEMO_ROW = "demo"  # the checkpoint before fine-tuning, once per setting
SETTINGS = {"close": 0.1, "standard": None}  # SyntheticIVIF(shared_degradation=...)
PRIMARY = ("close", "kl_within", "kl_only")
PRIMARY_METRIC = "accuracy_truth"
# (setting, row, reference): every contrast but the primary one, in both settings.
SECONDARY = (
    ("standard", "kl_within", "kl_only"),
    *[(setting, row, reference) for setting in SETTINGS for row, reference in (
        ("kl_cross", "kl_only"),
        ("kl_within_cross", "kl_cross"),
        ("within_fixed_sd", "kl_within"),
        ("within_sem", "kl_within"),
        ("within_sem", "kl_only"),
        ("placebo", "kl_only"),
        ("truth_kl_within", "truth_kl_only"),
        ("truth_kl_only", "kl_only"),
    )],
)
METRICS = (("accuracy_truth", "within-pair accuracy (truth)"), ("srcc_within_truth", "within-pair SRCC (truth)"),
           ("srcc_truth", "SRCC (truth)"), ("accuracy_mos", "within-pair accuracy (MOS)"),
           ("mean_pred_sd", "mean predicted sd"))
TERMS = ("loss_dist", "loss_within", "loss_cross")
RESULTS_JSON = REPO_ROOT / "benchmarks" / "results_ablation.json"
RESULTS_MD = REPO_ROOT / "benchmarks" / "RESULTS_ablation.md"
DEFAULT_OUTPUT = REPO_ROOT / "outputs" / "ablation"

# `gpu` (the default) is sized for one H100/H200 machine with 16 CPU cores: 9 rows x 2 settings x 8 seeds = 144
# fine-tunings plus the 2 demo evaluations in about 7 minutes (the estimate is in RESULTS_ablation.md's header).
# `tiny` is the whole pipeline at toy size on a CPU (tests/test_ablation.py). Flags override the preset.
PRESETS = {
    "gpu": dict(steps=200, image_size=112, train_scenes=480, eval_scenes=512, images_per_scene=6, pairs_per_batch=8,
                images_per_pair=4, learning_rate=2e-4, warmup_steps=20, eval_batch_size=192, jobs=12,
                seeds=list(range(8))),
    "tiny": dict(steps=2, image_size=56, train_scenes=4, eval_scenes=3, images_per_scene=3, pairs_per_batch=2,
                 images_per_pair=2, learning_rate=2e-4, warmup_steps=0, eval_batch_size=9, jobs=1, seeds=[0, 1]),
}
MIN_EVAL_SCENES = 512  # the floor; a smaller run is marked as below it


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="gpu",
                        help="Scale and parallelism (flags below override it): `gpu` (default) or `tiny` (CPU toy).")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help="Folder of results_ablation.json and RESULTS_ablation.md, written after every run.")
    parser.add_argument("--publish", action="store_true",
                        help="Also write the tracked benchmarks/RESULTS_ablation.md and results_ablation.json "
                             "(replacing the published results).")
    parser.add_argument("--model", default=str(DEMO_MODEL), help="The checkpoint every run fine-tunes.")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--rows", nargs="+", default=[*ROWS, DEMO_ROW], choices=[*ROWS, DEMO_ROW])
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--train-scenes", type=int)
    parser.add_argument("--eval-scenes", type=int, help=f"Held-out scenes (the design asks for >= {MIN_EVAL_SCENES}).")
    parser.add_argument("--images-per-scene", type=int)
    parser.add_argument("--pairs-per-batch", type=int)
    parser.add_argument("--images-per-pair", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--warmup-steps", type=int)
    parser.add_argument("--eval-batch-size", type=int)
    parser.add_argument("--raters", type=int, default=24,
                        help="Simulated raters per scene (SyntheticIVIF num_raters); within_sem's pair_target_raters.")
    parser.add_argument("--train-seed", type=int, default=320_001,
                        help="Seed of the training scenes (the demo checkpoint was trained on seeds 0 and 1).")
    parser.add_argument("--eval-seed", type=int, default=320_002, help="Seed of the held-out scenes.")
    parser.add_argument("--jobs", type=int, help="Fine-tunings at once, one process each (CUDA: all on one GPU).")
    parser.add_argument("--deadline", type=float, default=None,
                        help="Seconds after the start past which no run starts that its worker's mean run time says "
                             "would end later; what is done is saved, --resume does the rest.")
    parser.add_argument("--resume", action="store_true",
                        help="Keep the runs of this setup already in --output's results_ablation.json.")
    parser.add_argument("--render-only", action="store_true", help="Only write the analysis from --output's results.")
    args = parser.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("steps", "image_size", "train_scenes", "eval_scenes", "images_per_scene", "pairs_per_batch",
                "images_per_pair", "eval_batch_size", "jobs", "raters"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}.")
    if args.images_per_pair > args.images_per_scene:
        parser.error(f"--images-per-pair {args.images_per_pair} exceeds --images-per-scene {args.images_per_scene}.")
    if args.train_scenes < args.pairs_per_batch:
        parser.error(f"--train-scenes {args.train_scenes} is fewer than one batch of --pairs-per-batch "
                     f"{args.pairs_per_batch}.")
    output = Path(args.output).resolve()
    if not args.publish and output in (RESULTS_JSON.parent.resolve(),):
        parser.error(f"--output {args.output} is where the published results live; pass --publish to replace them.")
    return args


def setup_of(args) -> dict:
    """What must match for two runs to be comparable (and for --resume to keep a run)."""
    keys = ("steps", "image_size", "train_scenes", "eval_scenes", "images_per_scene", "pairs_per_batch",
            "images_per_pair", "learning_rate", "warmup_steps", "raters", "train_seed", "eval_seed")
    return {**{key: getattr(args, key) for key in keys}, "model": Path(args.model).name}


# ---------------------------------------------------------------------------------------------------------------------
# Data: per setting a training and a held-out table, and every image's processor output, built once on disk
# ---------------------------------------------------------------------------------------------------------------------

TABLE_CHUNK_SCENES = 32


def _table_chunk(model: str, image_size: int, seed: int, shared_degradation, start: int, count: int,
                 images_per_scene: int, raters: int, samples_path: str):
    """Scenes `start .. start + count - 1` as a table (no source images: the models read the fused image only), and
    their images through the checkpoint's processor, saved to `samples_path`."""
    import torch

    from fuscore_data.synthetic import SyntheticIVIF
    from modeling_fuscore import FuScoreForQuality

    torch.set_num_threads(1)  # one of many chunk processes: threads of their own only oversubscribe the cores
    generator = SyntheticIVIF(image_size=image_size, seed=seed, shared_degradation=shared_degradation,
                              num_raters=raters)
    table = generator.table(count, images_per_scene, start_scene=start).remove_columns(["ir", "vis"])
    processor = FuScoreForQuality.from_pretrained(model).get_processor()
    samples = [processor.prepare_sample(row["fused"], source=f"pair {row['pair_id']!r}, method {row['method']!r}")
               for row in table]
    torch.save(stack_samples(samples), samples_path)
    return table.remove_columns(["fused"])


def _table_chunk_star(chunk):
    return _table_chunk(*chunk)


def stack_samples(samples: list) -> dict:
    """The processor's per-image samples as a few stacked tensors (memory-mapped by every worker)."""
    import torch

    patches = {tuple(sample["pixel_values"].shape) for sample in samples}
    if len(patches) != 1 or any(sample["image_grid_thw"].shape[0] != 1 for sample in samples):
        raise ValueError(f"The cached samples need one image of one size per row; got patch shapes {sorted(patches)}.")
    lengths = torch.tensor([len(sample["input_ids"]) for sample in samples])
    input_ids = torch.zeros(len(samples), int(lengths.max()), dtype=torch.long)
    for row, sample in enumerate(samples):
        input_ids[row, : lengths[row]] = torch.as_tensor(sample["input_ids"])
    return {"pixel_values": torch.stack([sample["pixel_values"] for sample in samples]),
            "image_grid_thw": torch.cat([sample["image_grid_thw"] for sample in samples]),
            "input_ids": input_ids, "lengths": lengths}


class CachedSamples:
    """Row `i`'s processor sample from the stacked tensors of `stack_samples` (read-only, shared by memory map)."""

    def __init__(self, path):
        import torch

        self.data = torch.load(path, mmap=True, weights_only=True)

    def __len__(self) -> int:
        return len(self.data["lengths"])

    def __getitem__(self, row: int) -> dict:
        return {"input_ids": self.data["input_ids"][row, : int(self.data["lengths"][row])].tolist(),
                "image_grid_thw": self.data["image_grid_thw"][row: row + 1],
                "pixel_values": self.data["pixel_values"][row]}


def build_tables(args, folder: Path, settings=None) -> dict:
    """`folder/<setting>/<split>` (`save_to_disk`, no image columns) and `<split>.samples.pt` (the images' processor
    output) for each of `settings` (default: `args.settings`); returns `{setting: {split: folder}}`. Built in chunks
    of scenes, in parallel."""
    import datasets
    import torch

    datasets.disable_progress_bars()
    settings = list(args.settings if settings is None else settings)
    parts = []  # (setting, split, chunk arguments)
    for setting in settings:
        for split, seed, scenes in (("train", args.train_seed, args.train_scenes),
                                    ("eval", args.eval_seed, args.eval_scenes)):
            (folder / setting).mkdir(parents=True, exist_ok=True)
            for start in range(0, scenes, TABLE_CHUNK_SCENES):
                parts.append((setting, split, (
                    str(args.model), args.image_size, seed, SETTINGS[setting], start,
                    min(TABLE_CHUNK_SCENES, scenes - start), args.images_per_scene, args.raters,
                    str(folder / setting / f"{split}-{start}.samples.pt"))))
    workers = min(max(args.jobs, 16) if args.jobs > 1 else 1, len(parts))
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # Single-threaded children (OpenMP and BLAS read these at import): with a thread pool each, 16 processes
        # oversubscribed a 16-core H100 machine and building the tables took 501 s (2026-12-06).
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = "1"
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            chunks = list(pool.map(_table_chunk_star, [chunk for *_, chunk in parts]))
    else:
        chunks = [_table_chunk(*chunk) for *_, chunk in parts]
    paths = {}
    for setting in settings:
        for split in ("train", "eval"):
            mine = [(chunk, table) for (s, sp, chunk), table in zip(parts, chunks) if (s, sp) == (setting, split)]
            path = folder / setting / split
            datasets.concatenate_datasets([table for _, table in mine]).save_to_disk(str(path))
            pieces = [torch.load(chunk[-1], mmap=True, weights_only=True) for chunk, _ in mine]
            width = max(piece["input_ids"].shape[1] for piece in pieces)
            merged = {key: torch.cat([piece[key] for piece in pieces]) for key in ("pixel_values", "image_grid_thw",
                                                                                  "lengths")}
            merged["input_ids"] = torch.cat([torch.nn.functional.pad(piece["input_ids"],
                                                                     (0, width - piece["input_ids"].shape[1]))
                                             for piece in pieces])
            torch.save(merged, f"{path}.samples.pt")
            for chunk, _ in mine:
                Path(chunk[-1]).unlink()
            paths.setdefault(setting, {})[split] = str(path)
    return paths


def truth_of(table) -> np.ndarray:
    """The constructed overall truth of each row, from its four oracle sub-scores (`fuscore_data.synthetic`)."""
    from configuration_fuscore import SUB_DIMENSIONS
    from fuscore_data.synthetic import overall_score

    return overall_score(np.stack([np.asarray(table[name], dtype=np.float64) for name in SUB_DIMENSIONS], axis=-1))


def table_facts(table) -> dict:
    """How well the held-out MOS itself orders the images by the truth: the ceiling noise puts on MOS scoring."""
    from fuscore_metrics.plcc_srcc.plcc_srcc import correlation_metrics

    truth, mos = truth_of(table), np.asarray(table["mos"], dtype=np.float64)
    metrics = correlation_metrics(mos, truth, table["pair_id"])
    return {"images": len(table), "scenes": len(set(table["pair_id"])), "mos_accuracy_truth":
            metrics["pairwise_accuracy_within"], "mos_srcc_within_truth": metrics["srcc_within"],
            "mos_srcc_truth": metrics["srcc"], "pairs_within": int(metrics["n_pairs_within"]),
            "median_mos_std": float(np.median(table["mos_std"]))}


# ---------------------------------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------------------------------


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _collator_class():
    from fuscore.training.collator import FuScoreCollator

    class CachedCollator(FuScoreCollator):
        """FuScore's collator reading each row's processor output from the cache (`row` column) instead of its
        image: every row and seed reuses the same patches."""

        def __init__(self, samples: CachedSamples, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.samples = samples

        def prepare_samples(self, rows):
            return [self.samples[int(row["row"])] for row in rows]

    return CachedCollator


def load_split(path: str, truth_labels: bool = False):
    """A table of `build_tables` with a `row` column (the cache index); with `truth_labels`, `mos` := the truth."""
    import datasets

    table = datasets.load_from_disk(path)
    table = table.add_column("row", list(range(len(table))))
    if truth_labels:
        table = table.remove_columns(["mos"]).add_column("mos", truth_of(table).astype(np.float32).tolist())
    return table


def evaluate_run(trainer, collator, table, batch_size: int) -> dict:
    """Scores, predicted sd and held-out loss terms over `table` (through the trainer's own `compute_loss`), and the
    metrics against the truth and the MOS."""
    import torch

    from fuscore_metrics.plcc_srcc.plcc_srcc import correlation_metrics

    model = trainer.model
    model.eval()
    scores, sds = [], []
    trainer._metrics["eval"].clear()  # compute_loss records each term per image here (the trainer's eval metrics)
    for start in range(0, len(table), batch_size):
        rows = table.select(range(start, min(start + batch_size, len(table))))
        inputs = trainer._prepare_inputs(collator(list(rows)))
        with torch.no_grad():
            _, outputs = trainer.compute_loss(model, inputs, return_outputs=True)
        scores.append(outputs.score.float().cpu())
        sds.append(outputs.score_std.float().cpu())
    score = torch.cat(scores).numpy().astype(np.float64)
    groups = table["pair_id"]
    truth = correlation_metrics(score, truth_of(table), groups)
    mos = correlation_metrics(score, np.asarray(table["mos"], dtype=np.float64), groups)
    return {"accuracy_truth": truth["pairwise_accuracy_within"], "srcc_within_truth": truth["srcc_within"],
            "srcc_truth": truth["srcc"], "plcc_truth": truth["plcc"], "accuracy_mos": mos["pairwise_accuracy_within"],
            "srcc_within_mos": mos["srcc_within"], "srcc_mos": mos["srcc"],
            "mean_pred_sd": float(torch.cat(sds).double().mean()),
            **{f"eval_{name}": float(np.mean(values)) for name, values in trainer._metrics["eval"].items()}}


def run_one(args, row: str, seed: int, setting_paths: dict, cache: dict) -> dict:
    """Fine-tunes the checkpoint with `row`'s objective (no training for the demo row) and scores it."""
    import torch
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    from fuscore.training.collator import weightless_copy
    from fuscore.training.config import FuScoreTrainingConfig
    from fuscore.training.trainer import FuScoreTrainer
    from modeling_fuscore import FuScoreForQuality

    cuda = torch.cuda.is_available()
    _, options, labels = ROWS.get(row, ("", dict(lambda_within=0.0, lambda_cross=0.0), "mos"))
    options = {key: (args.raters if value == "raters" else value) for key, value in options.items()}
    for split in ("train", "eval"):
        if split not in cache:
            cache[split] = CachedSamples(f"{setting_paths[split]}.samples.pt")
    if ("train", labels) not in cache:
        cache[("train", labels)] = load_split(setting_paths["train"], truth_labels=labels == "truth")
    if "eval_table" not in cache:
        cache["eval_table"] = load_split(setting_paths["eval"])
    set_seed(seed)
    model = FuScoreForQuality.from_pretrained(args.model, dtype=torch.float32)
    processor = model.get_processor()
    with tempfile.TemporaryDirectory(prefix="fuscore-ablation-") as output_dir:
        training_args = FuScoreTrainingConfig(
            output_dir=output_dir, objective="fuscore", max_steps=args.steps, learning_rate=args.learning_rate,
            warmup_steps=args.warmup_steps, lr_scheduler_type="cosine", weight_decay=0.0, seed=seed,
            pairs_per_batch=args.pairs_per_batch, images_per_pair=args.images_per_pair,
            logging_steps=max(args.steps // 10, 1), save_strategy="no", report_to="none", disable_tqdm=True,
            use_cpu=not cuda, tf32=True if cuda else None, dataloader_num_workers=0, **options)
        collator = _collator_class()(cache["train"], processor, model.config.level_values, "fuscore",
                                     training_args.sigma_min, position_model=weightless_copy(model),
                                     pair_target_raters=training_args.pair_target_raters)
        trainer = FuScoreTrainer(model=model, args=training_args, train_dataset=cache[("train", labels)],
                                 data_collator=collator, processing_class=processor)
        trainer.remove_callback(PrinterCallback)  # one line per run is printed by the parent instead
        started, cpu_started = time.time(), time.process_time()
        log = []
        if row != DEMO_ROW:
            trainer.train()
            log = [{key: value for key, value in entry.items() if key in ("step", "loss", "grad_norm", *TERMS)}
                   for entry in trainer.state.log_history if "loss" in entry]
        train_seconds, cpu_seconds = time.time() - started, time.process_time() - cpu_started
        started = time.time()
        collator.samples = cache["eval"]
        metrics = evaluate_run(trainer, collator, cache["eval_table"], args.eval_batch_size)
        eval_seconds = time.time() - started
    last = log[-1] if log else {}
    return {**metrics, **{f"train_{name}": last.get(name) for name in ("loss", *TERMS)}, "train_log": log,
            "train_seconds": round(train_seconds, 2), "train_cpu_seconds": round(cpu_seconds, 2),
            "eval_seconds": round(eval_seconds, 2), "device": device_name()}


# ---------------------------------------------------------------------------------------------------------------------
# Running: workers, one writer, deadline, resume
# ---------------------------------------------------------------------------------------------------------------------


def load_results(path: Path) -> dict:
    if not path.is_file():
        return {"runs": []}
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SystemExit(f"{path} is not valid JSON ({error}); give another --output or remove it.") from None
    if not isinstance(results, dict) or not isinstance(results.get("runs"), list):
        raise SystemExit(f"{path} has no list 'runs': not an ablation results file.")
    return results


def pending_runs(args, kept: list) -> list:
    """The (setting, row, seed) runs still to do, seed-major (a run cut short leaves whole seeds); the demo row once
    per setting, first."""
    done = {(run["setting"], run["row"], run["seed"]) for run in kept}
    todo = [(setting, DEMO_ROW, 0) for setting in args.settings if DEMO_ROW in args.rows]
    todo += [(setting, row, seed) for seed in args.seeds for setting in args.settings for row in args.rows
             if row != DEMO_ROW]
    return [task for task in todo if task not in done]


def execute(args, runner, table_paths: dict, tasks, deadline=None):
    """Runs tasks from `tasks` (an iterator, or a multiprocessing queue) one after another, yielding `(task, metrics
    or None, error or None)`. A task is skipped when this worker's mean run time says it would end past `deadline`."""
    import queue as queue_module

    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    caches, durations = {}, []
    while True:
        if hasattr(tasks, "get_nowait"):
            try:
                task = tasks.get_nowait()
            except queue_module.Empty:
                return
        else:
            task = next(tasks, None)
            if task is None:
                return
        if deadline is not None:
            expected = sum(durations) / len(durations) if durations else 0.0
            if time.time() + expected > deadline:
                yield task, None, "skipped: it would not end before --deadline"
                continue
        setting, row, seed = task
        started = time.time()
        try:
            metrics = runner(args, row, seed, table_paths[setting], caches.setdefault(setting, {}))
        except Exception:  # reported by the parent with the run's name; the other runs go on
            import traceback

            yield task, None, traceback.format_exc()
            continue
        durations.append(time.time() - started)
        yield task, metrics, None


def _worker(args, runner, table_paths, tasks, results, deadline):
    """A worker process: its own CUDA context and runs, each result sent to the parent (the one writer)."""
    import torch

    torch.set_num_threads(1)
    try:
        for item in execute(args, runner, table_paths, tasks, deadline):
            results.put(item)
    finally:
        results.put(None)


def _parallel(args, runner, table_paths, todo, jobs, deadline):
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    tasks, results = context.Queue(), context.Queue()
    for task in todo:
        tasks.put(task)
    workers = [context.Process(target=_worker, args=(args, runner, table_paths, tasks, results, deadline))
               for _ in range(jobs)]
    for worker in workers:
        worker.start()
    running = len(workers)
    try:
        while running:
            try:
                item = results.get(timeout=5)
            except Exception:  # queue.Empty: check that no worker died without a word
                if all(not worker.is_alive() for worker in workers):
                    break
                continue
            if item is None:
                running -= 1
            else:
                yield item
    finally:
        for worker in workers:
            worker.join(timeout=30)
        crashed = [worker.exitcode for worker in workers if worker.exitcode not in (0, None)]
        if crashed:
            print(f"{len(crashed)} worker processes ended with exit codes {crashed}; their current runs are lost.",
                  flush=True)


def output_paths(args) -> list[tuple[Path, Path]]:
    """(results JSON, results page) pairs to write: --output's, and the tracked ones with --publish."""
    folder = Path(args.output)
    paths = [(folder / RESULTS_JSON.name, folder / RESULTS_MD.name)]
    if args.publish and folder.resolve() != RESULTS_JSON.parent.resolve():
        paths.append((RESULTS_JSON, RESULTS_MD))
    return paths


def write_outputs(args, results: dict) -> None:
    """The results JSON and the analysis page, after each run (atomically: a kill leaves the previous versions)."""
    from fuscore.atomic import write_text

    text = render(results) if any(run["row"] != DEMO_ROW for run in results["runs"]) else None
    for json_path, page_path in output_paths(args):
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_text(json_path, json.dumps(results, indent=1) + "\n")
        if text is not None:
            write_text(page_path, text)


def run_all(args, runner=None) -> dict:
    """Every pending run, `args.jobs` at a time, each result saved as soon as its run ends (by this process only)."""
    import torch

    runner = runner or run_one
    started = time.time()
    deadline = None if args.deadline is None else started + args.deadline
    results_path = output_paths(args)[0][0]
    setup = setup_of(args)
    previous = load_results(results_path) if args.resume else {"runs": []}
    kept = [run for run in previous["runs"] if run.get("setup") == setup]
    if args.resume:
        print(f"Resuming: {len(kept)} finished runs of this setup kept from {results_path}.", flush=True)
    results = {"runs": kept, "tables": previous.get("tables", {}) if kept else {}, "jobs": args.jobs,
               "wall_seconds": previous.get("wall_seconds", 0.0) if kept else 0.0,
               "versions": versions(), "date": time.strftime("%Y-%m-%d", time.gmtime())}
    todo = pending_runs(args, kept)
    total = len(todo) + len(kept)
    count, failures, skipped = len(kept), [], []
    jobs = min(args.jobs, max(len(todo), 1))
    print(f"{len(todo)} runs to do ({total} in all), {jobs} at a time, on {device_name()}; {args.steps} steps of "
          f"{args.pairs_per_batch} x {args.images_per_pair} images each; {args.eval_scenes} held-out scenes x "
          f"{args.images_per_scene}.", flush=True)
    if not todo:
        return results
    with tempfile.TemporaryDirectory(prefix="fuscore-ablation-tables-") as folder:
        table_paths = build_tables(args, Path(folder), sorted({setting for setting, *_ in todo}))
        for setting in table_paths:
            results["tables"][setting] = table_facts(load_split(table_paths[setting]["eval"]))
        print(f"Tables and image caches built in {time.time() - started:.0f} s.", flush=True)
        if jobs == 1:
            stream = execute(args, runner, table_paths, iter(todo), deadline)
        else:
            torch.set_num_threads(1)
            stream = _parallel(args, runner, table_paths, todo, jobs, deadline)
        for (setting, row, seed), metrics, error in stream:
            if metrics is None:
                (skipped if error.startswith("skipped") else failures).append((setting, row, seed))
                print(f"[{setting} {row} seed {seed}] {error}", flush=True)
                continue
            results["runs"].append({"setting": setting, "row": row, "seed": seed, "setup": setup, **metrics})
            count += 1
            print(f"[{count}/{total}] {setting:8s} {row:16s} seed {seed}: accuracy (truth) "
                  f"{metrics['accuracy_truth']:.4f}, SRCC (truth) {metrics['srcc_truth']:.4f}, sd "
                  f"{metrics['mean_pred_sd']:.3f} ({metrics['train_seconds']:.0f} s train, "
                  f"{metrics['eval_seconds']:.0f} s eval; {time.time() - started:.0f} s so far)", flush=True)
            write_outputs(args, {**results, "wall_seconds": round(results["wall_seconds"] + time.time() - started, 1)})
    results["wall_seconds"] = round(results["wall_seconds"] + time.time() - started, 1)
    write_outputs(args, results)
    print(throughput_note(args, results, jobs), flush=True)
    if skipped:
        print(f"{len(skipped)} runs not started before --deadline; run the same command with --resume for them.")
    if failures:
        raise SystemExit(f"{len(failures)} runs failed: {failures} (tracebacks above); the others are saved.")
    return results


def versions() -> dict:
    import torch
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}


def throughput_note(args, results: dict, jobs: int) -> str:
    runs = [run for run in results["runs"] if run["row"] != DEMO_ROW and run["setup"] == setup_of(args)]
    if not runs:
        return "No fine-tuning finished."
    per_step = float(np.mean([run["train_seconds"] / run["setup"]["steps"] for run in runs]))
    evaluation = float(np.mean([run["eval_seconds"] for run in runs]))
    return (f"Measured at {jobs} runs at a time: {1000 * per_step:.0f} ms per training step per run, {evaluation:.1f} s "
            f"per held-out evaluation, {results['wall_seconds']:.0f} s for the command.")


# ---------------------------------------------------------------------------------------------------------------------
# The declared analysis
# ---------------------------------------------------------------------------------------------------------------------


def paired(runs: list, setting: str, row: str, reference: str, metric: str) -> tuple[np.ndarray, list]:
    """Per-seed differences `row - reference` in `setting` over the seeds both have, and those seeds."""
    values = {(run["row"], run["seed"]): run[metric] for run in runs if run["setting"] == setting}
    seeds = sorted(seed for (name, seed) in values if name == row and (reference, seed) in values)
    return np.array([values[(row, seed)] - values[(reference, seed)] for seed in seeds], dtype=float), seeds


def paired_t(differences: np.ndarray, comparisons: int = 1) -> dict:
    """Mean, 95% paired t-interval, t, df, two-sided p and the Bonferroni-adjusted p (`comparisons` tests)."""
    from scipy import stats

    n = len(differences)
    mean = float(differences.mean()) if n else float("nan")
    if n < 2:
        return {"n": n, "mean": mean, "low": float("nan"), "high": float("nan"), "t": float("nan"),
                "p": float("nan"), "p_adjusted": float("nan")}
    sd = float(differences.std(ddof=1))
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(0.975, n - 1)) * se
    if se == 0:
        t, p = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    else:
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), n - 1))
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "t": t, "p": p,
            "p_adjusted": min(1.0, p * comparisons)}


def analysis(results: dict) -> dict:
    """The declared analysis: the primary contrast and the secondary ones (on `PRIMARY_METRIC`, SRCC beside it)."""
    runs = [run for run in results["runs"] if run["row"] != DEMO_ROW]
    out = {"primary": None, "secondary": [], "comparisons": len(SECONDARY)}
    setting, row, reference = PRIMARY
    differences, seeds = paired(runs, setting, row, reference, PRIMARY_METRIC)
    if len(seeds):
        out["primary"] = {"setting": setting, "row": row, "reference": reference, "seeds": seeds,
                          "differences": differences.tolist(), **paired_t(differences),
                          "srcc_truth": paired_t(paired(runs, setting, row, reference, "srcc_truth")[0])}
    for setting, row, reference in SECONDARY:
        differences, seeds = paired(runs, setting, row, reference, PRIMARY_METRIC)
        if len(seeds):
            out["secondary"].append({"setting": setting, "row": row, "reference": reference, "seeds": seeds,
                                     **paired_t(differences, len(SECONDARY)),
                                     "srcc_truth": paired_t(paired(runs, setting, row, reference, "srcc_truth")[0])})
    return out


def primary_sentence(primary: dict) -> str:
    """What the primary contrast says, in the words its interval allows."""
    if primary is None or primary["n"] < 2:
        return "The primary contrast has fewer than two paired seeds: no interval, no conclusion."
    interval = f"{primary['mean']:+.4f}, 95% CI [{primary['low']:+.4f}, {primary['high']:+.4f}]"
    stats_text = f"t = {primary['t']:.2f} on {primary['n'] - 1} df, p = {primary['p']:.3g}, {primary['n']} paired seeds"
    if primary["low"] > 0:
        verdict = "the within-pair term **raised** within-pair accuracy against the truth"
    elif primary["high"] < 0:
        verdict = "the within-pair term **lowered** within-pair accuracy against the truth"
    else:
        bound = max(abs(primary["low"]), abs(primary["high"]))
        verdict = ("**no difference was found**: the interval includes 0; effects larger than "
                   f"{bound:.4f} in accuracy (either way) are excluded at this size")
    return f"In `close`, KL + within minus KL only: {interval} ({stats_text}): {verdict}."


def _cell(values) -> str:
    values = np.asarray([value for value in values if value is not None], dtype=float)
    if values.size == 0:
        return ""
    if values.size == 1:
        return f"{values[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def _contrast_row(entry: dict, adjusted: bool) -> str:
    srcc = entry["srcc_truth"]
    cells = [f"`{entry['setting']}`", f"{ROWS[entry['row']][0]} − {ROWS[entry['reference']][0]}",
             f"{entry['mean']:+.4f} [{entry['low']:+.4f}, {entry['high']:+.4f}]", f"{entry['t']:.2f}",
             f"{entry['p']:.3g}"]
    if adjusted:
        verdict = ("difference" if entry["p_adjusted"] < 0.05 else "none found")
        cells += [f"{entry['p_adjusted']:.3g}", verdict]
    cells += [f"{srcc['mean']:+.4f} [{srcc['low']:+.4f}, {srcc['high']:+.4f}]", str(entry["n"])]
    return "| " + " | ".join(cells) + " |"


def render(results: dict) -> str:
    runs = [run for run in results["runs"]]
    trained = [run for run in runs if run["row"] != DEMO_ROW]
    if not trained:
        raise SystemExit("No fine-tuning runs to analyse.")
    setup = trained[0]["setup"]
    devices = sorted({run.get("device", "cpu") for run in trained})
    seeds = sorted({run["seed"] for run in trained})
    found = analysis(results)
    v = results.get("versions", {})
    wall = results.get("wall_seconds")
    machine = ", ".join(devices) + ("" if devices == ["cpu"] else f" GPU, {results.get('jobs', 1)} runs at a time")
    small = setup["eval_scenes"] < MIN_EVAL_SCENES
    lines = [
        "# Does the within-pair Thurstone term help? The objective ablation of issue 32",
        "",
        f"`benchmarks/ablation.py`, {results.get('date', '')}, on {machine}; torch {v.get('torch', '?')}, "
        f"transformers {v.get('transformers', '?')}, Python {v.get('python', '?')}"
        + (f"; {wall / 60:.1f} min for the command" if wall else "") + ". Labels are synthetic (constructed truth "
        "plus simulated raters), never human.",
        "",
        f"Every run fine-tunes the shipped demo checkpoint (`{setup['model']}`) for {setup['steps']} steps of "
        f"{setup['pairs_per_batch']} source pairs x {setup['images_per_pair']} fused images ({setup['image_size']} px, "
        f"AdamW, learning rate {setup['learning_rate']:g}, {setup['warmup_steps']} warm-up steps, cosine) on "
        f"{setup['train_scenes']} training scenes x {setup['images_per_scene']} (synthetic seed {setup['train_seed']}, "
        f"never seen by the checkpoint), and is scored on {setup['eval_scenes']} held-out scenes x "
        f"{setup['images_per_scene']} (seed {setup['eval_seed']}) against the constructed truth. Seeds "
        f"{', '.join(map(str, seeds))}: a seed sets the order of the training batches; rows are paired by seed."
        + (f" **Below the design's {MIN_EVAL_SCENES} held-out scenes: a toy run, not a result.**" if small else ""),
        "",
        "## Declared analysis (fixed before the run)",
        "",
        "* Primary metric: within-pair ranking accuracy against the constructed truth (pairs of one source pair's "
        "fused images whose truths differ; a predicted tie counts 1/2).",
        "* Primary contrast (one): `close`, KL + within minus KL only, paired by seed, 95% paired t-interval. The "
        "term helps (hurts) only if the interval lies above (below) 0.",
        f"* Secondary contrasts: {len(SECONDARY)} (listed below), each with its p multiplied by {len(SECONDARY)} "
        "(Bonferroni); one is called a difference only if that adjusted p is below 0.05. The placebo (weight 0.001) "
        "measures how far runs diverge from a negligible change of the objective.",
        "",
        "## Primary result",
        "",
        primary_sentence(found["primary"]),
    ]
    if found["primary"]:
        lines += ["", "Per-seed differences (seeds " + ", ".join(map(str, found["primary"]["seeds"])) + "): "
                  + ", ".join(f"{d:+.4f}" for d in found["primary"]["differences"]) + ". Within-pair SRCC against "
                  "the truth, same contrast: " + f"{found['primary']['srcc_truth']['mean']:+.4f} "
                  f"[{found['primary']['srcc_truth']['low']:+.4f}, {found['primary']['srcc_truth']['high']:+.4f}]."]
    for setting in SETTINGS:
        setting_runs = [run for run in runs if run["setting"] == setting]
        if not setting_runs:
            continue
        facts = results.get("tables", {}).get(setting)
        lines += ["", f"## Setting `{setting}`", ""]
        if facts:
            lines += [f"Held-out table: {facts['scenes']} scenes, {facts['images']} images, {facts['pairs_within']} "
                      f"within-pair comparisons; the simulated MOS itself orders {100 * facts['mos_accuracy_truth']:.1f}% "
                      f"of them like the truth (within-pair SRCC {facts['mos_srcc_within_truth']:.3f}, SRCC "
                      f"{facts['mos_srcc_truth']:.3f}; median mos_std {facts['median_mos_std']:.2f}).", ""]
        lines += ["| row | " + " | ".join(label for _, label in METRICS)
                  + " | train loss_dist | train loss_within | train loss_cross | seeds |",
                  "|---" * (len(METRICS) + 5) + "|"]
        for row in (DEMO_ROW, *ROWS):
            row_runs = [run for run in setting_runs if run["row"] == row]
            if row_runs:
                label = "demo checkpoint, not fine-tuned" if row == DEMO_ROW else ROWS[row][0]
                cells = [_cell([run[name] for run in row_runs]) for name, _ in METRICS]
                cells += [_cell([run.get(f"train_{term}") for run in row_runs]) for term in TERMS]
                lines.append(f"| {label} | " + " | ".join(cells) + f" | {len(row_runs) if row != DEMO_ROW else '-'} |")
        lines += ["", "Mean ± standard deviation over seeds; training loss terms (unweighted) are the means over the "
                  "last logging interval; every logged interval and the held-out loss terms are in the JSON."]
    lines += ["", f"## Secondary contrasts ({len(SECONDARY)} comparisons, Bonferroni)", "",
              "| setting | contrast | Δ within-pair accuracy (truth) [95% CI] | t | p | p × "
              f"{len(SECONDARY)} | reading | Δ SRCC (truth) [95% CI] | seeds |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [_contrast_row(entry, adjusted=True) for entry in found["secondary"] if entry["n"] >= 2]
    placebo = [entry for entry in found["secondary"] if entry["row"] == "placebo" and entry["n"] >= 2]
    if placebo:
        lines += ["", "Run-to-run divergence: the placebo's per-seed differences from KL only have standard deviation "
                  + ", ".join(f"{entry['sd']:.4f} (`{entry['setting']}`)" for entry in placebo)
                  + " in within-pair accuracy; differences of that size between rows are noise."]
    lines += ["", "Per-run numbers (every metric, the training log of every run): `results_ablation.json` beside this "
              "page."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.render_only:
        results = load_results(output_paths(args)[0][0])
        write_outputs(args, results)
    else:
        results = run_all(args)
    print(render(results))


if __name__ == "__main__":
    main()
