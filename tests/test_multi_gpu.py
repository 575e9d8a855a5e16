# Copyright 2026 The FuScore authors. Apache-2.0.
"""Multi-GPU test of FuScore training: pair-aware DDP batches, DDP == one process, FSDP full-shard training.

As a test, `python -m pytest tests/test_multi_gpu.py` (skipped without two GPUs) launches this file itself under
accelerate and asserts that every check passes. By hand, from the repository root on a machine with two GPUs (a few
minutes at most):

    . benchmarks/device_env.sh      # only where the project is not pip-installed
    accelerate launch --config_file configs/accelerate_ddp.yaml --num_processes 2 tests/test_multi_gpu.py

With no `--mode`, under that DDP launch, it does three things and prints one table:

(a) DDP on the launched processes trains a tiny random-init model on a synthetic rating table (P source pairs x M
    fused images per batch and process) and records the rows of every batch each process trains on (through the
    collator, read back in `compute_loss`, so batches prefetched but never trained on do not count). Every batch must
    hold whole source-pair groups (P pairs, all M images of each), the processes must see disjoint batches, and every
    epoch must use each row exactly once across the processes.
(b) Before that, local rank 0 runs the same training in one process (a subprocess, `--mode single`) with the same
    global batch: gradient accumulation over as many micro-batches as there are DDP processes, which under
    accelerate's round-robin batch sharding are exactly the batches the DDP processes get at that step. The DDP
    batches must be those micro-batches, and the per-step losses and the final weights must agree to float tolerance.
    Plain SGD at a constant learning rate keeps the comparison linear in the gradients (Adam's first steps are
    close to sign(g) * lr and would magnify float noise in near-zero gradients).
(c) After that, local rank 0 launches `accelerate launch --config_file configs/accelerate_fsdp.yaml` (`--mode fsdp`)
    that trains a few steps of a larger random-init Qwen3-VL model (default `tiny:qwen3_vl:1024x8`, about 150M
    parameters) with FSDP full sharding in bf16, checks that the parameters are sharded, the losses finite, the
    weights changed, and that the full state dict gathers into a safetensors checkpoint equal to the trained weights.

The exit status is 0 only when every check passes. Results go to `--workdir` (default `runs/test_multi_gpu`), one
JSON per part plus `report.json`.

CPU dry run (gloo, same code paths, smaller FSDP model):

    accelerate launch --config_file configs/accelerate_ddp.yaml --num_processes 2 tests/test_multi_gpu.py \
        --cpu --fsdp_model tiny:qwen3_vl:64x2
"""

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the project may not be pip-installed on the GPU machine
    sys.path.insert(0, str(REPO_ROOT))

# Variables of a running torchrun / accelerate launch that a nested launch or a single-process run must not inherit.
_LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                     "ROLE_RANK", "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("all", "single", "ddp", "fsdp"), default="all",
                        help="all: (b) single reference, (a+b) DDP, (c) FSDP launch, then the table (the default).")
    parser.add_argument("--workdir", default=str(REPO_ROOT / "runs" / "test_multi_gpu"))
    parser.add_argument("--cpu", action="store_true", help="Train on CPU (gloo): a dry run of the script.")
    parser.add_argument("--model", default="tiny:qwen2_vl:32x1", help="Model of the DDP / single-process comparison.")
    parser.add_argument("--fsdp_model", default="tiny:qwen3_vl:1024x8", help="Model of the FSDP run.")
    parser.add_argument("--fsdp_project_model", default="tiny:qwen3_vl:256x2",
                        help="Model of the FSDP run of trainer_fuscore.main (evaluate, train, evaluate, save).")
    parser.add_argument("--fsdp_config", default=str(REPO_ROOT / "configs" / "accelerate_fsdp.yaml"))
    parser.add_argument("--num_scenes", type=int, default=12, help="Source pairs of the synthetic table.")
    parser.add_argument("--images_per_scene", type=int, default=4)
    parser.add_argument("--image_size", type=int, default=56)
    parser.add_argument("--pairs_per_batch", type=int, default=2, help="P per process.")
    parser.add_argument("--images_per_pair", type=int, default=4, help="M.")
    parser.add_argument("--max_steps", type=int, default=6, help="Optimizer steps of the DDP / single comparison.")
    parser.add_argument("--fsdp_steps", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=0.1, help="SGD learning rate of the comparison.")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--num_processes", type=int, default=None,
                        help="DDP processes to emulate in --mode single (default: WORLD_SIZE, else 2).")
    parser.add_argument("--atol", type=float, default=None,
                        help="Tolerance of (b) (default 1e-5 on GPU, 1e-6 on CPU).")
    parser.add_argument("--timeout", type=int, default=300, help="Seconds to wait for each sub-run.")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------------
# Training with batch recording
# ---------------------------------------------------------------------------------------------------------------------


def build_table(args):
    import datasets
    from fuscore_data.synthetic import SyntheticIVIF

    datasets.disable_progress_bars()
    table = SyntheticIVIF(image_size=args.image_size, seed=args.seed).table(args.num_scenes, args.images_per_scene)
    return table.add_column("row_id", list(range(len(table))))


def make_recording_classes():
    import torch
    from fuscore.training.collator import FuScoreCollator
    from fuscore.training.trainer import FuScoreTrainer

    class RecordingCollator(FuScoreCollator):
        """The trainer's collator, plus the table row of every sample (`row_ids`, popped again in `compute_loss`)."""

        def __call__(self, rows):
            batch = super().__call__(rows)
            batch["row_ids"] = torch.tensor([int(row["row_id"]) for row in rows], dtype=torch.long)
            return batch

    class RecordingTrainer(FuScoreTrainer):
        """Records the rows and the loss of every micro-batch this process trains on."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.records = []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            row_ids = inputs.pop("row_ids", None)
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training and row_ids is not None:
                loss = result[0] if return_outputs else result
                self.records.append({"rows": row_ids.tolist(), "loss": float(loss.detach().float())})
            return result

    return RecordingCollator, RecordingTrainer


def training_arguments(args, output_dir, **overrides):
    from fuscore.training.config import FuScoreTrainingConfig

    values = dict(
        output_dir=str(output_dir), max_steps=args.max_steps, pairs_per_batch=args.pairs_per_batch,
        images_per_pair=args.images_per_pair, learning_rate=args.learning_rate, optim="sgd",
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0, seed=args.seed,
        data_seed=args.seed, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, use_cpu=args.cpu, ddp_find_unused_parameters=False,
    )
    values.update(overrides)
    return FuScoreTrainingConfig(**values)


def train_and_record(args, model_name: str, output_dir: Path, **argument_overrides):
    import torch
    from transformers import set_seed
    from fuscore.training.config import ModelArguments
    from fuscore.training.loading import load_model

    if not args.cpu:
        # Same kernels on both sides of the comparison: no TF32 in matmuls or convolutions (the patch embedding).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    RecordingCollator, RecordingTrainer = make_recording_classes()
    set_seed(args.seed)
    model = load_model(ModelArguments(model_name_or_path=model_name, dtype="float32"))
    table = build_table(args)
    training_args = training_arguments(args, output_dir, **argument_overrides)
    collator = RecordingCollator(model.processor, model.config.level_values, training_args.objective,
                                 training_args.sigma_min)
    trainer = RecordingTrainer(model=model, args=training_args, train_dataset=table, data_collator=collator,
                               processing_class=model.processor)
    return trainer, table


# ---------------------------------------------------------------------------------------------------------------------
# (b) the single-process reference
# ---------------------------------------------------------------------------------------------------------------------


def run_single(args) -> dict:
    from safetensors.torch import save_file

    workdir = Path(args.workdir)
    world = args.num_processes or int(os.environ.get("WORLD_SIZE", 2))
    start = time.time()
    trainer, table = train_and_record(args, args.model, workdir / "single_out",
                                      gradient_accumulation_steps=world)
    initial = {name: tensor.detach().cpu().clone() for name, tensor in trainer.model.state_dict().items()}
    trainer.train()
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in trainer.model.state_dict().items()}
    save_file(weights, str(workdir / "single_weights.safetensors"))
    update = max((weights[name].float() - initial[name].float()).abs().max().item() for name in weights)
    result = {
        "mode": "single", "gradient_accumulation_steps": world, "micro_batches": trainer.records,
        "pair_ids": list(table["pair_id"]), "max_weight_update": update, "seconds": round(time.time() - start, 1),
        "device": str(trainer.args.device),
    }
    _write_json(workdir / "single.json", result)
    return result


def spawn_single(args) -> None:
    """Local rank 0 of the DDP launch runs the reference in a clean single process; the others wait for its file."""
    workdir = Path(args.workdir)
    done, failed = workdir / "single.json", workdir / "single.failed"
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        for stale in (done, failed):
            stale.unlink(missing_ok=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--mode", "single",
                   "--num_processes", os.environ.get("WORLD_SIZE", "2"), *_passthrough(args)]
        try:
            # One visible GPU: with several, a plain (non-launched) Trainer would wrap the model in DataParallel.
            env = {**_clean_env(), "CUDA_VISIBLE_DEVICES": os.environ.get("LOCAL_RANK", "0")}
            status = subprocess.run(command, env=env, cwd=REPO_ROOT, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            status = f"timeout after {args.timeout} s"
        if status != 0 or not done.is_file():
            failed.write_text(f"exit status {status}")
            raise SystemExit(f"the single-process reference failed ({status}).")
    else:
        deadline = time.time() + args.timeout
        while not done.is_file():
            if failed.is_file():
                raise SystemExit("the single-process reference failed on local rank 0.")
            if time.time() > deadline:
                raise SystemExit("timed out waiting for the single-process reference.")
            time.sleep(0.5)


# ---------------------------------------------------------------------------------------------------------------------
# (a) DDP
# ---------------------------------------------------------------------------------------------------------------------


def run_ddp(args) -> dict:
    workdir = Path(args.workdir)
    start = time.time()
    trainer, table = train_and_record(args, args.model, workdir / "ddp_out")
    accelerator = trainer.accelerator
    trainer.train()
    rank = accelerator.process_index
    record = {"rank": rank, "micro_batches": trainer.records, "device": str(trainer.args.device),
              "distributed_type": str(accelerator.distributed_type), "num_processes": accelerator.num_processes}
    _write_json(workdir / f"ddp_rank{rank}.json", record)
    if rank == 0:
        from safetensors.torch import save_file

        model = accelerator.unwrap_model(trainer.model)
        weights = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
        save_file(weights, str(workdir / "ddp_weights.safetensors"))
    accelerator.wait_for_everyone()
    result = {"num_processes": accelerator.num_processes, "distributed_type": str(accelerator.distributed_type),
              "seconds": round(time.time() - start, 1), "pair_ids": list(table["pair_id"])}
    if rank == 0:
        result["ranks"] = [json.loads((workdir / f"ddp_rank{r}.json").read_text()) for r in range(accelerator.num_processes)]
    del trainer
    return result


def check_ddp(args, ddp: dict, single: dict) -> list:
    """The (a) and (b) checks, each a dict with `check`, `ok` and `detail`; also prints the per-step loss table."""
    from safetensors.torch import load_file

    workdir = Path(args.workdir)
    pair_ids = ddp["pair_ids"]
    ranks = ddp["ranks"]
    world = ddp["num_processes"]
    P, M = args.pairs_per_batch, args.images_per_pair
    group_size = Counter(pair_ids)
    checks = []

    # (a) whole source-pair groups in every batch of every process.
    broken = []
    for r, record in enumerate(ranks):
        for step, batch in enumerate(record["micro_batches"]):
            counts = Counter(pair_ids[row] for row in batch["rows"])
            whole = all(count == min(M, group_size[pair]) for pair, count in counts.items())
            if not whole or len(counts) != P or len(set(batch["rows"])) != len(batch["rows"]):
                broken.append(f"rank {r} step {step + 1}: {dict(counts)}")
    total_batches = sum(len(record["micro_batches"]) for record in ranks)
    devices = ", ".join(record["device"] for record in ranks)
    distinct_devices = args.cpu or len({record["device"] for record in ranks}) == world
    checks.append({"check": "(a) every DDP batch holds whole source-pair groups",
                   "ok": not broken and total_batches > 0 and distinct_devices and world > 1,
                   "detail": "; ".join(broken[:3]) or f"{total_batches} batches, each {P} pairs x {M} images, on "
                             f"{world} processes ({ranks[0]['distributed_type']}; {devices})"})

    # (a) disjoint batches: at each step the processes' rows are disjoint, and each epoch uses every row once.
    steps = min(len(record["micro_batches"]) for record in ranks)
    overlaps = []
    for step in range(steps):
        seen = Counter(row for record in ranks for row in record["micro_batches"][step]["rows"])
        overlaps += [f"step {step + 1}: row {row} on {count} processes" for row, count in seen.items() if count > 1]
    steps_per_epoch = (len(pair_ids) // (P * M)) // world
    epoch_problems = []
    for epoch_start in range(0, steps - steps_per_epoch + 1, max(steps_per_epoch, 1)):
        rows = [row for record in ranks for batch in record["micro_batches"][epoch_start : epoch_start + steps_per_epoch]
                for row in batch["rows"]]
        if len(rows) != len(set(rows)):
            epoch_problems.append(f"epoch from step {epoch_start + 1} repeats rows")
    same_length = len({len(record["micro_batches"]) for record in ranks}) == 1 and steps == args.max_steps
    checks.append({"check": "(a) processes see disjoint batches", "ok": not overlaps and not epoch_problems and same_length,
                   "detail": "; ".join((overlaps + epoch_problems)[:3]) or
                   (f"{steps} steps per process, no row on two processes, each epoch's rows distinct" if same_length
                    else f"steps per process: {[len(record['micro_batches']) for record in ranks]}")})

    # (b) the DDP batches of step k are the single run's micro-batches world*k .. world*k + world - 1.
    micro = single["micro_batches"]
    mismatched = [f"step {step + 1} rank {r}" for step in range(steps) for r in range(world)
                  if world * step + r >= len(micro) or ranks[r]["micro_batches"][step]["rows"] != micro[world * step + r]["rows"]]
    checks.append({"check": "(b) DDP batches == single-process micro-batches", "ok": not mismatched and len(micro) == world * steps,
                   "detail": ", ".join(mismatched[:4]) or f"{len(micro)} micro-batches, GA={single['gradient_accumulation_steps']}"})

    # (b) losses per step, printed side by side.
    atol = args.atol if args.atol is not None else (1e-6 if args.cpu else 1e-5)
    print("\nPer-step training loss (DDP: mean of the processes' batch losses; single: mean of its micro-batches)")
    header = f"{'step':>4}  {'single (GA=' + str(world) + ')':>16}  {'DDP':>12}  {'|diff|':>10}  " + "  ".join(
        f"{'rank ' + str(r):>10}" for r in range(world))
    print(header)
    print("-" * len(header))
    worst_loss = 0.0
    for step in range(steps):
        ddp_losses = [ranks[r]["micro_batches"][step]["loss"] for r in range(world)]
        single_losses = [micro[world * step + r]["loss"] for r in range(world) if world * step + r < len(micro)]
        ddp_loss, single_loss = sum(ddp_losses) / world, sum(single_losses) / max(len(single_losses), 1)
        worst_loss = max(worst_loss, abs(ddp_loss - single_loss))
        print(f"{step + 1:>4}  {single_loss:>16.8f}  {ddp_loss:>12.8f}  {abs(ddp_loss - single_loss):>10.2e}  "
              + "  ".join(f"{loss:>10.6f}" for loss in ddp_losses))
    checks.append({"check": f"(b) per-step loss matches (|diff| <= {atol:g})", "ok": worst_loss <= atol,
                   "detail": f"max |diff| {worst_loss:.2e} over {steps} steps"})

    ddp_weights = load_file(str(workdir / "ddp_weights.safetensors"))
    single_weights = load_file(str(workdir / "single_weights.safetensors"))
    same_keys = set(ddp_weights) == set(single_weights)
    worst_weight = max((ddp_weights[k].float() - single_weights[k].float()).abs().max().item()
                       for k in ddp_weights if k in single_weights)
    checks.append({"check": f"(b) final weights match (max |diff| <= {atol:g})", "ok": same_keys and worst_weight <= atol,
                   "detail": f"max |diff| {worst_weight:.2e}; largest update {single['max_weight_update']:.2e}"})
    checks.append({"check": "(b) the comparison is not vacuous (weights moved)", "ok": single["max_weight_update"] > 100 * atol,
                   "detail": f"largest single-process update {single['max_weight_update']:.2e} > {100 * atol:g}"})
    return checks


# ---------------------------------------------------------------------------------------------------------------------
# (c) FSDP
# ---------------------------------------------------------------------------------------------------------------------


def run_fsdp(args) -> dict:
    import torch
    from safetensors.torch import load_file

    workdir = Path(args.workdir)
    start = time.time()
    out_dir = workdir / "fsdp_out"
    trainer, _ = train_and_record(
        args, args.fsdp_model, out_dir, max_steps=args.fsdp_steps, optim="adamw_torch", learning_rate=1e-4,
        lr_scheduler_type="constant", max_grad_norm=1.0,
    )
    accelerator = trainer.accelerator
    initial = {name: tensor.detach().cpu().clone() for name, tensor in trainer.model.named_parameters()}
    total_parameters = sum(tensor.numel() for tensor in initial.values())
    if torch.cuda.is_available() and not args.cpu:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    rank, world = accelerator.process_index, accelerator.num_processes

    from torch.distributed.tensor import DTensor

    local, changed, largest_change, sharded = 0, 0, 0.0, 0
    trained = {}
    for name, parameter in trainer.model.named_parameters():
        if isinstance(parameter, DTensor):
            sharded += 1
            local += parameter.to_local().numel()
            full = parameter.full_tensor()  # a collective: every process walks the same parameters in the same order
        else:
            local += parameter.numel()
            full = parameter
        full = full.detach().float().cpu()
        key = name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
        trained[key] = full
        delta = (full - initial[name].float()).abs().max().item() if name in initial else float("nan")
        largest_change = max(largest_change, delta)
        changed += int(delta > 0)

    final_dir = out_dir / "final"
    trainer.save_model(str(final_dir))  # FULL_STATE_DICT: gathered on every process, written by rank 0
    accelerator.wait_for_everyone()
    losses = [record["loss"] for record in trainer.records]
    result = {
        "rank": rank, "num_processes": world, "distributed_type": str(accelerator.distributed_type),
        "fsdp_version": getattr(getattr(accelerator.state, "fsdp_plugin", None), "fsdp_version", None),
        "mixed_precision": str(accelerator.mixed_precision), "model": args.fsdp_model,
        "parameters": total_parameters, "local_parameters": local, "sharded_tensors": sharded,
        "parameters_changed": changed, "parameter_tensors": len(initial), "largest_change": largest_change,
        "losses": losses, "steps": trainer.state.global_step,
        "peak_memory_gib": (torch.cuda.max_memory_allocated() / 2**30) if torch.cuda.is_available() and not args.cpu else None,
        "seconds": round(time.time() - start, 1),
    }
    if rank == 0:
        files = sorted(path.name for path in final_dir.iterdir())
        saved = {}
        for path in final_dir.glob("*.safetensors"):
            saved.update(load_file(str(path)))
        missing = sorted(set(trained) - set(saved))
        worst = max((saved[k].float() - trained[k]).abs().max().item() for k in trained if k in saved) if saved else float("inf")
        result.update({"saved_files": files, "saved_missing": missing[:5], "saved_max_diff": worst,
                       # Trainer.save_model also pickles its TrainingArguments (training_args.bin); weights must not be.
                       "saved_pickle_files": [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl"))
                                              and name != "training_args.bin"]})
    del trainer, initial, trained
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    # The project's own script end to end under the same launch: evaluate, train, evaluate, save the final folder.
    # A watchdog, since a step that only some processes take (a save on the main process that needs the others'
    # shards) would wait for the others forever.
    result["project_run"] = _with_watchdog(lambda: _project_run(args, rank), seconds=args.timeout / 2)
    _write_json(workdir / f"fsdp_rank{rank}.json", result)
    if result["project_run"]["status"] == "timeout":
        sys.stdout.flush()
        os._exit(0)  # the stuck thread would keep this process alive
    return result


def _project_run(args, rank: int) -> dict:
    """`trainer_fuscore.main` on a small model under the FSDP launch; rank 0 checks the saved final folder."""
    from safetensors.torch import load_file
    import trainer_fuscore
    from fuscore.training.config import ModelArguments
    from fuscore.training.loading import load_model

    output_dir = Path(args.workdir) / "fsdp_project_run"
    argv = ["--model_name_or_path", args.fsdp_project_model, "--dtype", "float32", "--train_table", "synthetic",
            "--synthetic_image_size", str(args.image_size), "--synthetic_train_scenes", "8", "--synthetic_eval_scenes", "4",
            "--synthetic_images_per_scene", "4", "--pairs_per_batch", "2", "--images_per_pair", "4", "--max_steps", "3",
            "--learning_rate", "0.001", "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
            "--disable_tqdm", "true", "--per_device_eval_batch_size", "8", "--seed", str(args.seed),
            # Arguments go on top of the demo's config: undo what of it this run must not take (CPU, schedule).
            "--synthetic_seed", "0", "--warmup_steps", "0", "--lr_scheduler_type", "linear",
            "--use_cpu", "true" if args.cpu else "false", "--output_dir", str(output_dir)]
    results = trainer_fuscore.main(argv)
    if rank != 0:
        return {"status": "ok", "detail": "finished"}
    final = Path(results["final_dir"])
    files = sorted(path.name for path in final.iterdir())
    saved = {}
    for path in final.glob("*.safetensors"):
        saved.update(load_file(str(path)))
    fresh = load_model(ModelArguments(model_name_or_path=args.fsdp_project_model, dtype="float32")).state_dict()
    problems = [f"{key}: missing" for key in fresh if key not in saved]
    problems += [f"{key}: saved {tuple(saved[key].shape)}, model {tuple(fresh[key].shape)}" for key in fresh
                 if key in saved and saved[key].shape != fresh[key].shape]
    problems += [f"pickle file {name}" for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl"))]
    moved = max([(saved[k].float() - fresh[k].float()).abs().max().item() for k in fresh
                 if k in saved and saved[k].shape == fresh[k].shape] or [0.0])
    if moved == 0.0:
        problems.append("the saved weights equal the initial ones")
    srcc = results["after"].get("eval_srcc", float("nan"))
    return {"status": "ok" if not problems else "wrong",
            "detail": "; ".join(problems[:3]) or f"final folder complete ({len(saved)} tensors, trained: max change "
                                                  f"{moved:.1e}), eval SRCC {srcc:.3f}"}


def _with_watchdog(function, seconds: float) -> dict:
    import threading
    import traceback

    outcome = {"status": "timeout", "detail": f"did not finish in {seconds:.0f} s (waits for the other processes?)"}

    def target():
        try:
            outcome.update(function())
        except BaseException as error:  # reported, not raised: the other checks still print
            outcome.update(status="error", detail=f"{type(error).__name__}: {error}"[:500],
                           traceback=traceback.format_exc()[-3000:])

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return dict(outcome)


def launch_fsdp(args, world: int) -> None:
    """Launches the FSDP part with its own accelerate config (a fresh torchrun, from local rank 0 only)."""
    workdir = Path(args.workdir)
    for stale in workdir.glob("fsdp_rank*.json"):
        stale.unlink()
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", args.fsdp_config,
               "--num_processes", str(world), "--main_process_port", str(_free_port()),
               str(Path(__file__).resolve()), "--mode", "fsdp", *_passthrough(args)]
    print(f"\n[test_multi_gpu] launching the FSDP part: {' '.join(command[1:])}", flush=True)
    try:
        subprocess.run(command, env=_clean_env(), cwd=REPO_ROOT, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print(f"[test_multi_gpu] the FSDP part did not finish in {args.timeout} s", flush=True)


def check_fsdp(args, world: int) -> list:
    workdir = Path(args.workdir)
    records = [workdir / f"fsdp_rank{r}.json" for r in range(world)]
    if not all(path.is_file() for path in records):
        return [{"check": "(c) FSDP run completed", "ok": False,
                 "detail": f"no result from ranks {[r for r, p in enumerate(records) if not p.is_file()]}; see the log above"}]
    ranks = [json.loads(path.read_text()) for path in records]
    first = ranks[0]
    fsdp = "FSDP" in first["distributed_type"]
    checks = [{"check": f"(c) FSDP trains {first['model']} ({first['parameters'] / 1e6:.1f}M params)",
               "ok": first["steps"] == args.fsdp_steps and (fsdp or args.cpu)
               and all(math.isfinite(loss) for r in ranks for loss in r["losses"]) and len(first["losses"]) == args.fsdp_steps,
               # accelerate applies FSDP on accelerators only: a CPU dry run trains the same code under MULTI_CPU.
               "skip": args.cpu and not fsdp,
               "detail": f"{first['distributed_type']} v{first['fsdp_version']}, {first['mixed_precision']}, "
                         f"{first['steps']} steps, losses rank 0: {', '.join(f'{x:.4f}' for x in first['losses'])}"}]
    shares = [r["local_parameters"] / r["parameters"] for r in ranks]
    checks.append({"check": "(c) parameters are sharded across processes",
                   "ok": all(r["sharded_tensors"] > 0 for r in ranks) and max(shares) < 1.0 / world + 0.1,
                   "skip": args.cpu and not fsdp,
                   "detail": "local share per process: " + ", ".join(f"{share:.1%}" for share in shares)
                             + (", peak GPU memory " + ", ".join(f"{r['peak_memory_gib']:.2f}" for r in ranks) + " GiB"
                                if first["peak_memory_gib"] is not None else "")})
    checks.append({"check": "(c) weights changed", "ok": first["parameters_changed"] > first["parameter_tensors"] // 2,
                   "detail": f"{first['parameters_changed']}/{first['parameter_tensors']} tensors changed, largest change "
                             f"{first['largest_change']:.2e}"})
    checks.append({"check": "(c) full state dict saved as safetensors == trained weights",
                   "ok": not first["saved_missing"] and not first["saved_pickle_files"] and first["saved_max_diff"] == 0.0
                   and "model.safetensors" in " ".join(first["saved_files"]),
                   "detail": f"files {first['saved_files']}; missing {first['saved_missing']}; max |diff| {first['saved_max_diff']:.1e}"})
    runs = [r.get("project_run") or {"status": "missing", "detail": ""} for r in ranks]
    failed = [f"rank {i}: {run['status']}: {run['detail']}" for i, run in enumerate(runs) if run["status"] != "ok"]
    checks.append({"check": f"(c) trainer_fuscore.main under FSDP ({args.fsdp_project_model})", "ok": not failed,
                   "detail": "; ".join(failed)[:300] or runs[0]["detail"]})
    return checks


# ---------------------------------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------------------------------


def print_report(checks: list, workdir: Path, seconds: float) -> bool:
    width = max(len(check["check"]) for check in checks)
    print("\n" + "=" * 100)
    print(f"FuScore multi-GPU check ({seconds:.0f} s)")
    print("=" * 100)
    print(f"{'check':<{width}}  result  detail")
    for check in checks:
        result = "SKIP" if check.get("skip") else ("PASS" if check["ok"] else "FAIL")
        print(f"{check['check']:<{width}}  {result:<6}  {check['detail']}")
    ok = all(check["ok"] or check.get("skip") for check in checks)
    print("=" * 100)
    print(f"{'ALL CHECKS PASSED' if ok else 'SOME CHECKS FAILED'}; details in {workdir}")
    _write_json(workdir / "report.json", {"ok": ok, "checks": checks, "seconds": seconds})
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.time()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))

    if args.mode == "single":
        run_single(args)
        return 0
    if args.mode == "fsdp":
        run_fsdp(args)
        return 0

    if world < 2:
        raise SystemExit("Run the DDP part under `accelerate launch --config_file configs/accelerate_ddp.yaml "
                         "--num_processes 2 tests/test_multi_gpu.py` (WORLD_SIZE is 1 here).")
    if args.mode == "all":
        spawn_single(args)
    single_path = workdir / "single.json"
    ddp = run_ddp(args)

    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    if local_rank != 0:
        return 0
    checks = []
    if single_path.is_file():
        checks += check_ddp(args, ddp, json.loads(single_path.read_text()))
    else:
        checks.append({"check": "(b) single-process reference", "ok": False, "detail": f"no {single_path}; use --mode all"})
    if args.mode == "all":
        launch_fsdp(args, world)
        checks += check_fsdp(args, world)
    ok = print_report(checks, workdir, time.time() - start)
    return 0 if ok else 1


def _passthrough(args) -> list:
    """The command-line options a sub-run needs to train the same thing."""
    options = ["--workdir", args.workdir, "--model", args.model, "--fsdp_model", args.fsdp_model,
               "--fsdp_project_model", args.fsdp_project_model,
               "--fsdp_config", args.fsdp_config, "--num_scenes", args.num_scenes,
               "--images_per_scene", args.images_per_scene, "--image_size", args.image_size,
               "--pairs_per_batch", args.pairs_per_batch, "--images_per_pair", args.images_per_pair,
               "--max_steps", args.max_steps, "--fsdp_steps", args.fsdp_steps, "--learning_rate", args.learning_rate,
               "--seed", args.seed, "--timeout", args.timeout]
    if args.atol is not None:
        options += ["--atol", args.atol]
    if args.cpu:
        options.append("--cpu")
    return [str(option) for option in options]


def _clean_env() -> dict:
    return {key: value for key, value in os.environ.items()
            if not key.startswith(_LAUNCH_VARIABLES) and not key.startswith("ACCELERATE_")}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def _write_json(path: Path, payload: dict) -> None:
    from fuscore.atomic import write_text

    write_text(path, json.dumps(payload, indent=1))  # readers polling for the file never see half of it


# ---------------------------------------------------------------------------------------------------------------------
# The test: this file under a two-process DDP launch
# ---------------------------------------------------------------------------------------------------------------------


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no torch build with CUDA: no GPUs
        return 0


try:
    import pytest
except ImportError:  # launched as a script where pytest is not installed
    pytest = None

if pytest is not None:

    @pytest.mark.slow
    @pytest.mark.skipif(_gpu_count() < 2, reason="needs two or more GPUs (DDP and FSDP across processes)")
    def test_ddp_and_fsdp_on_two_gpus(tmp_path):
        """(a) whole source-pair groups per process and disjoint batches, (b) DDP == one process with gradient
        accumulation (batches, losses, weights), (c) FSDP full-shard training, saving, and trainer_fuscore.main
        under FSDP: every check of the report passes."""
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(REPO_ROOT / "configs" / "accelerate_ddp.yaml"), "--num_processes", "2",
                   "--main_process_port", str(_free_port()), str(Path(__file__).resolve()), "--workdir", str(tmp_path)]
        completed = subprocess.run(command, env=_clean_env(), cwd=REPO_ROOT, timeout=1800, capture_output=True,
                                   text=True)
        report_file = tmp_path / "report.json"
        assert report_file.is_file(), (completed.stdout + completed.stderr)[-4000:]
        report = json.loads(report_file.read_text())
        failed = [f"{check['check']}: {check['detail']}" for check in report["checks"]
                  if not (check["ok"] or check.get("skip"))]
        assert report["ok"] and completed.returncode == 0 and not failed, failed or completed.stderr[-4000:]


if __name__ == "__main__":
    sys.exit(main())
