# Copyright 2026 The FuScore authors. Apache-2.0.
"""`FuScoreTrainer`: a thin `transformers.Trainer` with FuScore's objective, pair-aware batches and correlation
metrics (DESIGN.md section 4), in the shape of trl's `RewardTrainer`."""

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from torch.utils.data import DataLoader
from transformers import EvalPrediction, Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

from fuscore.atomic import AtomicWriteError, atomic_folder
from fuscore.objectives import compute_objective, get_objective

from .answer_tokens import answer_token_nll, capture_last_hidden_state
from .collator import FuScoreCollator, SyntheticScenes
from .loading import RUN_SETTINGS_NAME, map_weight, named_write_errors
from .sampling import EndlessBatchSampler, PairGroupedBatchSampler


class FuScoreTrainer(Trainer):
    """`Trainer` with FuScore's objective in `compute_loss`, pair-aware batches and correlation metrics.

    The objective's registry record (`fuscore.objectives.get_objective(args.objective)`) decides the loss, the softmax
    mode, the prediction that evaluation correlates with the MOS, and the batch layout. Every loss term is logged
    separately, in trl's shape: `compute_loss` appends each term, gathered across the processes, to
    `self._metrics["train"]` or `self._metrics["eval"]`, and `log` adds their means to the record and clears them.
    Training logs `loss_dist`, `loss_within`, `loss_cross`, ... (the mean over the steps since the last log and over
    the processes); evaluation logs `eval_loss_dist`, ... (the mean over the evaluated images, weighted as the
    Trainer weights `eval_loss`), which `evaluate()` also returns. A model with an artifact-map head on a table with
    a map column also logs `loss_map` and the map metrics EVAFusion selects checkpoints by, `map_nss`, `map_cc`,
    `map_sim`, `map_auc_judd` and `map_kl` (`MAP_METRIC_NAMES`), over the images that have a map (the saliency
    metrics over those whose map marks something): computed per image on the merged-patch grid, the predicted
    probabilities against the map pooled to that grid (what the loss sees), with the project's `map_metrics`; in
    training the mean per step, in evaluation the mean per image. They choose the best checkpoint only when asked,
    e.g. `--metric_for_best_model map_nss` (`--greater_is_better false` for `map_kl`). The map term's weight is the
    `lambda_map` argument (the script passes the one `loading.map_weight` resolved), else `args.lambda_map` resolved
    against the training table the same way; a positive weight needs a model with a map head. What needs every prediction at once goes through the
    Trainer's `compute_metrics` hook: by default PLCC, SRCC, KRCC, RMSE and the within-pair SRCC and ranking accuracy
    through the project's `evaluate` module (`fuscore_metrics`).

    The loss is a batch mean, so the model is marked as not taking `num_items_in_batch` and the Trainer divides by the
    accumulation steps: accumulating k batches gives the same update as one k-times-larger batch. Checkpoints are
    written whole or not at all: under a temporary name beside `checkpoint-N`, renamed into place once every process
    has written its part.
    """

    def __init__(self, *args, compute_metrics=None, lambda_map=None, **kwargs):
        super().__init__(*args, compute_metrics=compute_metrics, **kwargs)
        self.objective = get_objective(self.args.objective)
        # The artifact-map term's weight (DESIGN.md section 10): as the script resolved it (`loading.map_weight`), or
        # resolved here from `args.lambda_map` and the training table.
        self.lambda_map = (map_weight(self.args.lambda_map, self.train_dataset) if lambda_map is None
                           else float(lambda_map))
        if self.lambda_map > 0 and not has_artifact_head(self.model):
            raise ValueError(f"lambda_map={self.lambda_map} trains the artifact-map head, but the model has none: "
                             "give it one with model.add_artifact_head() (trainer_fuscore.py does when the weight is "
                             "positive).")
        if self.compute_metrics is None:
            self.compute_metrics = self.correlation_metrics
        if self.args.n_gpu > 1:
            # Trainer's fallback for several GPUs in one process is DataParallel, which would cut the pair-aware
            # batches into slices without whole source-pair groups.
            raise ValueError(
                f"{self.args.n_gpu} GPUs are visible to a single process. Launch one process per GPU with "
                "`accelerate launch --num_processes N trainer_fuscore.py ...`, or set CUDA_VISIBLE_DEVICES to one GPU."
            )
        self.model_accepts_loss_kwargs = False
        self._log_under_output_dir()
        # Each loss term's values since the last log, per mode (trl's shape); `log` averages and clears them.
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._eval_prefix = "eval"  # the running evaluation's `metric_key_prefix`, which its logged terms carry
        self._checkpoint_staging = None
        self.run_settings = None  # the run's settings (`loading.run_settings`), recorded in each checkpoint

    def _log_under_output_dir(self) -> None:
        """Every local `report_to` log goes under `output_dir`, from the first record on. TensorBoard's callback picks
        `output_dir/runs/<date>` only when training starts, so an evaluation before training would open its writer
        in `./runs` of the working folder (and keep it for the first training curves); Weights & Biases and MLflow
        write to `./wandb` and `./mlruns` unless told otherwise (their environment variables still win)."""
        from transformers.integrations import TensorBoardCallback
        from transformers.integrations.integration_utils import default_logdir

        for callback in self.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
                callback.logging_dir = os.path.join(self.args.output_dir, default_logdir())
        report_to = self.args.report_to or []
        if "wandb" in report_to:
            os.environ.setdefault("WANDB_DIR", os.path.abspath(self.args.output_dir))
        if "mlflow" in report_to:
            os.environ.setdefault("MLFLOW_TRACKING_URI", Path(self.args.output_dir, "mlruns").absolute().as_uri())

    @property
    def softmax(self) -> str:
        """The softmax mode of the loss: the record's own, or the full vocabulary with `--full_vocab_softmax`."""
        return "vocabulary" if self.args.full_vocab_softmax else self.objective.softmax

    # ------------------------------------------------------------------ data
    def get_train_dataloader(self) -> DataLoader:
        """Batches as the objective's record asks: pair-aware (whole source-pair groups), randomly drawn, or the
        endless synthetic stream. accelerate shards every kind the same way: whole batches round-robin to the
        processes (`BatchSamplerShard` without `split_batches`), so no group is ever cut between processes."""
        dataset, args = self.train_dataset, self.args
        options = dict(collate_fn=self.data_collator, num_workers=args.dataloader_num_workers,
                       pin_memory=args.dataloader_pin_memory)
        if isinstance(dataset, SyntheticScenes):
            loader = DataLoader(dataset, batch_sampler=EndlessBatchSampler(args.pairs_per_batch),
                                persistent_workers=args.dataloader_num_workers > 0, **options)
        elif self.objective.batches == "random":
            loader = DataLoader(dataset, batch_size=args.pairs_per_batch * args.images_per_pair, drop_last=True,
                                sampler=self._get_train_sampler(dataset), **options)
        else:
            sampler = PairGroupedBatchSampler(dataset["pair_id"], args.pairs_per_batch, args.images_per_pair,
                                              seed=args.seed)
            loader = DataLoader(dataset, batch_sampler=sampler, **options)
        return self.accelerator.prepare(loader)

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = {key: inputs.pop(key) for key in FuScoreCollator.label_keys if key in inputs}
        softmax = self.softmax
        # The map head's output only for a batch with maps (selecting the fused image's tokens waits for the GPU).
        maps = "map_target" in labels
        answer = {}
        if self.objective.answer_tokens:
            # The peers' next-token cross-entropy on the answer prefix, from the same forward pass's hidden states.
            fuscore_model = self.accelerator.unwrap_model(model)
            if hasattr(fuscore_model, "get_base_model"):  # peft
                fuscore_model = fuscore_model.get_base_model()
            with capture_last_hidden_state(fuscore_model) as captured:
                outputs = model(**inputs, return_vocab_logits=softmax == "vocabulary", return_artifact_map=maps)
            answer["answer_nll"], answer["answer_tokens"] = answer_token_nll(
                fuscore_model, captured["hidden_states"], labels["answer_labels"])
        else:
            outputs = model(**inputs, return_vocab_logits=softmax == "vocabulary", return_artifact_map=maps)
        map_inputs = self._map_inputs(outputs, labels)
        terms = compute_objective(
            self.objective,
            level_logits=outputs.level_logits,
            vocab_logits=outputs.vocab_logits,
            score=outputs.score,
            score_std=outputs.score_std,
            regression=outputs.regression,
            soft_label=labels["soft_label"],
            mu=labels["mu"],
            sigma=labels["sigma"],
            group_ids=labels["group_ids"],
            lambda_within=self.args.lambda_within,
            lambda_cross=self.args.lambda_cross,
            fixed_std=self.args.fixed_std,
            softmax=softmax,
            lambda_map=self.lambda_map,
            **answer,
            **map_inputs,
        )
        self._record_terms({name: value for name, value in terms.items() if name != "loss_map"},
                           training=model.training, rows=labels["mu"].shape[0])
        if map_inputs:
            self._record_map_metrics(map_inputs, labels["map_grids"], training=model.training)
        return (terms["loss"], outputs) if return_outputs else terms["loss"]

    def _map_inputs(self, outputs, labels: dict) -> dict:
        """The map term's inputs (`compute_objective`'s `artifact_probs`, `map_target`, `map_patch_counts`,
        `has_map`) when the model has a map head and the batch has maps; else none."""
        probs = getattr(outputs, "artifact_probs", None)
        if probs is None or "map_target" not in labels:
            return {}
        grids = getattr(outputs, "artifact_grids", None)
        if grids is not None and not torch.equal(grids.to(labels["map_grids"].device), labels["map_grids"]):
            raise RuntimeError(f"The map head's patch grids {grids.tolist()} differ from the collator's "
                               f"{labels['map_grids'].tolist()}: the map targets would be pooled to the wrong grid.")
        return {"artifact_probs": probs, "map_target": labels["map_target"],
                "map_patch_counts": labels["map_patch_counts"], "has_map": labels["has_map"]}

    def _record_map_metrics(self, map_inputs: dict, grids: torch.Tensor, training: bool) -> None:
        """Appends `loss_map` and the map metrics of the batch's images with a map to `self._metrics`, gathered across
        the processes (collective): in training one value per step (the mean over the images of all processes that
        have the metric), in evaluation one value per image."""
        values = map_metric_rows(map_inputs["artifact_probs"], map_inputs["map_target"], grids,
                                 map_inputs["has_map"])
        values = values.to(self.accelerator.device)
        metrics = self._metrics["train" if training else "eval"]
        if training:
            defined = ~torch.isnan(values)
            totals = torch.stack([torch.where(defined, values, 0.0).sum(dim=0), defined.sum(dim=0).float()])
            totals = self.accelerator.gather(totals[None]).sum(dim=0)
            for name, total, count in zip(MAP_METRIC_NAMES, *totals.tolist()):
                if count > 0:
                    metrics[name].append(total / count)
        else:
            gathered = self.accelerator.gather_for_metrics(values)
            for name, column in zip(MAP_METRIC_NAMES, gathered.T.tolist()):
                metrics[name].extend(value for value in column if not math.isnan(value))

    def _record_terms(self, terms: dict, training: bool, rows: int) -> None:
        """Appends the batch's loss terms, gathered across the processes (every process computes a loss for every
        batch, so the gather is collective), to `self._metrics`: in training one value per batch, the mean over the
        processes; in evaluation one value per image, gathered as the Trainer gathers `eval_loss` (padding rows that
        accelerate adds to even out the last batch are dropped), so their mean weighs the batches alike."""
        names = [name for name in terms if name != "loss"]
        if not names:
            return
        values = torch.stack([terms[name].detach().float() for name in names])
        if training:
            columns = self.accelerator.gather(values[None]).mean(dim=0)[:, None]
        else:
            columns = self.accelerator.gather_for_metrics(values.repeat(rows, 1)).T
        metrics = self._metrics["train" if training else "eval"]
        for name, column in zip(names, columns.tolist()):
            metrics[name].extend(column)

    def log(self, logs: dict, *args, **kwargs) -> None:
        """Adds the mean of each loss term recorded since the last log (training or evaluation, as the model is in)
        to the record, then clears them, as trl's trainers do. The record of `evaluate()` is its returned dict, so the
        evaluation terms are returned too."""
        mode = "train" if self.model.training else "eval"
        prefix = "" if mode == "train" else f"{self._eval_prefix}_"
        logs.update({f"{prefix}{name}": sum(values) / len(values)
                     for name, values in self._metrics[mode].items() if values})
        super().log(logs, *args, **kwargs)
        self._metrics[mode].clear()

    # ------------------------------------------------------------------ evaluation
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """One evaluation batch through `compute_loss`: the loss, the record's prediction `[B]` (what evaluation
        correlates with the MOS) and the labels `(mos, group_ids)`."""
        inputs = self._prepare_inputs(inputs)
        labels = (inputs["mos"], inputs["group_ids"])
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach().mean()
        if prediction_loss_only:
            return loss, None, None
        return loss, self.objective.predict(outputs).detach().float().reshape(-1), labels

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        """The Trainer's evaluation; its record and its returned dict also hold the mean of each loss term
        (`eval_loss_dist`, ...), and an evaluation before training leaves the model as it found it
        (`_left_unprepared`)."""
        self._metrics["eval"].clear()  # what a `predict` or a direct `compute_loss` call left
        self._eval_prefix = metric_key_prefix
        with self._left_unprepared():
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test"):
        """The Trainer's prediction (the record's prediction per image, the labels, the metrics); its metrics also
        hold the mean of each loss term (`test_loss_dist`, ...), and the model is left as found (`_left_unprepared`)."""
        self._metrics["eval"].clear()
        with self._left_unprepared():
            output = super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        output.metrics.update({f"{metric_key_prefix}_{name}": sum(values) / len(values)
                               for name, values in self._metrics["eval"].items() if values})
        self._metrics["eval"].clear()
        return output

    @contextlib.contextmanager
    def _left_unprepared(self):
        """Undoes the preparation that the Trainer's evaluation loop gives a model not yet prepared, outside training.

        The loop prepares it with accelerate's `prepare_model(evaluation_mode=True)` (no DDP wrapper), which marks it
        as prepared: `train()` would then never wrap it in `DistributedDataParallel`, and under several processes each
        would train its own copy without synchronising gradients (measured: after the first step the two processes'
        gradient norms differ from the one-process run's). No public setting avoids that preparation, and accelerate
        has no public call that un-prepares one model (`Accelerator.free_memory` drops every prepared object and
        resets the step, and leaves the model's marks), so the marks are removed here by name: the forward's
        mixed-precision wrapper, `_is_accelerate_prepared` and the accelerator's reference.
        """
        prepared = getattr(self.model, "_is_accelerate_prepared", False)
        try:
            yield
        finally:
            if (not prepared and not self.is_in_train and self.model_wrapped is self.model
                    and not (self.is_fsdp_enabled or self.is_deepspeed_enabled)):
                model = self.model
                if "_original_forward" in vars(model):  # the mixed-precision wrapper of the forward pass
                    model.forward = model._original_forward
                    del model._original_forward
                if hasattr(model, "_is_accelerate_prepared"):
                    del model._is_accelerate_prepared
                self.accelerator._models = [entry for entry in self.accelerator._models if entry is not model]

    def correlation_metrics(self, prediction: EvalPrediction) -> dict:
        """The default `compute_metrics`: correlations of the predictions with the MOS (`correlation_metrics`)."""
        mos, groups = prediction.label_ids
        return correlation_metrics(np.asarray(prediction.predictions), np.asarray(mos), np.asarray(groups))

    # ------------------------------------------------------------------ checkpoints, whole or absent
    # The two private overrides that stay. The Trainer writes `checkpoint-N` in place, file by file, and its rotation
    # deletes old ones in place, so a run killed while saving leaves a folder under a checkpoint's name that is not a
    # checkpoint. No setting or callback changes where it writes (`on_save` runs once the folder is written), and
    # `save_only_model` / `save_total_limit` only choose what is written and kept. So `_save_checkpoint` runs the
    # Trainer's own save into a staging folder (which `_get_output_dir` names while it runs) and renames it into
    # place, and `_rotate_checkpoints_whole` applies `save_total_limit` as `transformers.trainer_utils.
    # rotate_checkpoints` does, renaming each folder away before deleting it. Both are the same in 5.17 and 5.25.
    def _get_output_dir(self, trial) -> str:
        """The run folder, or the staging folder while `_save_checkpoint` runs the Trainer's save."""
        if self._checkpoint_staging is not None:
            return str(self._checkpoint_staging)
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, written by every process into a temporary folder beside `checkpoint-N` and
        renamed into place once complete, so a run killed while saving leaves no `checkpoint-N` to resume from."""
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        main = self.is_world_process_zero()
        with named_write_errors(run_dir / name), contextlib.ExitStack() as stack:
            staging = stack.enter_context(atomic_folder(run_dir / name, overwrite=True)) if main else None
            staging = Path(broadcast_object_list([str(staging) if main else None])[0])
            self._checkpoint_staging = staging
            try:
                super()._save_checkpoint(model, trial)  # writes staging/checkpoint-N
            except RuntimeError as error:
                named = torch_write_error(error, staging / name, run_dir / name)
                if named is None:
                    raise
                raise named from error
            finally:
                self._checkpoint_staging = None
            self.accelerator.wait_for_everyone()
            if main:
                written = staging / name
                if self.run_settings is not None:  # what a resume compares its settings with
                    (written / RUN_SETTINGS_NAME).write_text(json.dumps(self.run_settings, indent=2))
                best = self.state.best_model_checkpoint
                if best is not None and Path(best).parent == staging:
                    self.state.best_model_checkpoint = str(run_dir / Path(best).name)
                    self.state.save_to_json(str(written / TRAINER_STATE_NAME))
                for entry in written.iterdir():
                    os.replace(entry, staging / entry.name)
                written.rmdir()
        # Leaving the block renamed the complete folder to checkpoint-N.
        self.accelerator.wait_for_everyone()
        if main:
            self._rotate_checkpoints_whole(run_dir)

    def _rotate_checkpoints_whole(self, run_dir: Path) -> None:
        """`save_total_limit` as the Trainer applies it (keep the newest and the best), each old checkpoint renamed
        away before it is deleted, so a kill mid-deletion leaves no half checkpoint under its name."""
        limit = self.args.save_total_limit
        if not limit or limit <= 0:
            return
        checkpoints = sort_checkpoints(str(run_dir), use_mtime=False)
        protected = {checkpoints[-1]} if checkpoints else set()
        if self.state.best_model_checkpoint is not None:
            protected.add(str(Path(self.state.best_model_checkpoint)))
        remaining = len(checkpoints)
        for checkpoint in checkpoints:
            if remaining <= max(limit, len(protected)):
                break
            if checkpoint not in protected:
                folder = Path(checkpoint)
                retired = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
                os.replace(folder, retired / folder.name)
                shutil.rmtree(retired, ignore_errors=True)
                remaining -= 1


# How torch.save reports a file it could not write (a full disk): "[enforce fail at inline_container.cc:672] .
# unexpected pos 640 vs 598", or "PytorchStreamWriter failed writing file data/0: file write failed".
_TORCH_WRITE_FAILURE = re.compile(r"unexpected pos|PytorchStreamWriter failed|file write failed")
# The files the Trainer writes with torch.save into a checkpoint, in the order it writes them.
_TORCH_SAVED_FILES = ("training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")
_FULL_DISK_BYTES = 64 * 2**20


def torch_write_error(error: RuntimeError, written: Path, final: Path):
    """The `AtomicWriteError` for a checkpoint file that torch.save could not write, or None for another error.

    torch reports a full disk as a RuntimeError naming neither the file nor the cause. The file is the last one, in the
    Trainer's write order, that exists in `written` (torch creates it when it starts writing); it is named as it would
    have been under `final`. With under 64 MiB free on the disk that holds it, the error is ENOSPC."""
    if not _TORCH_WRITE_FAILURE.search(str(error)):
        return None
    present = [path for pattern in _TORCH_SAVED_FILES for path in sorted(written.glob(pattern))]
    name = final / present[-1].name if present else final
    free = shutil.disk_usage(written if written.exists() else final.parent).free
    detail = (str(error).strip().splitlines() or [""])[0]
    if free < _FULL_DISK_BYTES:
        named = AtomicWriteError(f"Could not write {name}: No space left on device (the disk holding it has "
                                 f"{free / 2**20:.1f} MiB free; torch: {detail}). Nothing was left under {final}: "
                                 "free some space and resume from the last complete checkpoint.")
        named.errno = errno.ENOSPC
    else:
        named = AtomicWriteError(f"Could not write {name}: torch could not write the file ({detail}), as when the "
                                 f"disk is full or the file may not grow. Nothing was left under {final}.")
    return named


def correlation_metrics(scores, mos, groups) -> dict:
    """PLCC, SRCC, KRCC, RMSE and within-pair SRCC / ranking accuracy through the project's `evaluate` module."""
    import evaluate
    import fuscore_metrics

    metric = evaluate.load(str(Path(fuscore_metrics.__file__).parent / "plcc_srcc"))
    result = metric.compute(predictions=np.asarray(scores).tolist(), references=np.asarray(mos).tolist(),
                            groups=np.asarray(groups).tolist())
    return {key: float(value) for key, value in result.items()}


MAP_METRIC_NAMES = ("loss_map", "map_nss", "map_cc", "map_sim", "map_auc_judd", "map_kl")
"""What the trainer logs of the artifact maps: the map term (per-image MSE on the patch grid) and the saliency metrics
EVAFusion selects checkpoints by (`fuscore_metrics.map_metrics`)."""


def has_artifact_head(model) -> bool:
    """Whether a model (possibly wrapped by peft or accelerate) has an artifact-map head."""
    while hasattr(model, "module") and not hasattr(model, "config"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return bool(getattr(getattr(model, "config", None), "artifact_map", False))


def map_metric_rows(artifact_probs: torch.Tensor, map_target: torch.Tensor, grids: torch.Tensor,
                    has_map: torch.Tensor) -> torch.Tensor:
    """`(B, len(MAP_METRIC_NAMES))` float32: each image's map MSE and saliency metrics on its merged-patch grid
    (`(h, w)` of `grids`), its predicted probabilities against its pooled target; NaN for an image without a map, and
    for the saliency metrics of one whose target marks nothing (or of a one-patch grid)."""
    from fuscore_metrics.map_metrics import map_metrics

    counts = (grids[:, 0] * grids[:, 1]).tolist()
    predictions = torch.split(artifact_probs.detach().float().cpu().reshape(-1), counts)
    targets = torch.split(map_target.detach().float().cpu().reshape(-1), counts)
    rows = torch.full((len(counts), len(MAP_METRIC_NAMES)), float("nan"))
    for row, (prediction, target, (height, width), present) in enumerate(
            zip(predictions, targets, grids.tolist(), has_map.tolist())):
        if not present:
            continue
        rows[row, 0] = float(((prediction - target) ** 2).mean())
        if height * width >= 2:
            values = map_metrics(prediction.reshape(height, width).numpy(), target.reshape(height, width).numpy())
            rows[row, 1:] = torch.tensor([values[name] for name in ("nss", "cc", "sim", "auc_judd", "kl")])
    return rows
