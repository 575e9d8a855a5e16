# Copyright 2026 The FuScore authors. Apache-2.0.
"""`FuScoreTrainer`: a thin `transformers.Trainer` with FuScore's objective, pair-aware batches and correlation
metrics (DESIGN.md section 4), in the shape of trl's `RewardTrainer`."""

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
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
from .loading import RUN_SETTINGS_NAME, named_write_errors
from .sampling import EndlessBatchSampler, PairGroupedBatchSampler


class FuScoreTrainer(Trainer):
    """`Trainer` with FuScore's objective in `compute_loss`, pair-aware batches and correlation metrics.

    The objective's registry record (`fuscore.objectives.get_objective(args.objective)`) decides the loss, the softmax
    mode, the prediction that evaluation correlates with the MOS, and the batch layout. Every loss term is logged
    separately for training (`loss_dist`, `loss_within`, `loss_cross`, ..., averaged over the logging interval and
    over the processes) and for evaluation (`eval_loss_dist`, ..., through the Trainer's own evaluation loop, which
    gathers them across processes with the predictions). The default `compute_metrics` gives PLCC, SRCC, KRCC, RMSE
    and the within-pair SRCC and ranking accuracy through the project's `evaluate` module (`fuscore_metrics`).

    The loss is a batch mean, so the model is marked as not taking `num_items_in_batch` and the Trainer divides by the
    accumulation steps: accumulating k batches gives the same update as one k-times-larger batch. Checkpoints are
    written whole or not at all: under a temporary name beside `checkpoint-N`, renamed into place once every process
    has written its part.
    """

    def __init__(self, *args, compute_metrics=None, **kwargs):
        super().__init__(*args, compute_metrics=compute_metrics, **kwargs)
        self.objective = get_objective(self.args.objective)
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
        self._term_sums: dict[str, float] = {}
        self._term_count = 0
        self._last_terms: dict[str, torch.Tensor] = {}
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
        answer = {}
        if self.objective.answer_tokens:
            # The peers' next-token cross-entropy on the answer prefix, from the same forward pass's hidden states.
            fuscore_model = self.accelerator.unwrap_model(model)
            if hasattr(fuscore_model, "get_base_model"):  # peft
                fuscore_model = fuscore_model.get_base_model()
            with capture_last_hidden_state(fuscore_model) as captured:
                outputs = model(**inputs, return_vocab_logits=softmax == "vocabulary")
            answer["answer_nll"], answer["answer_tokens"] = answer_token_nll(
                fuscore_model, captured["hidden_states"], labels["answer_labels"])
        else:
            outputs = model(**inputs, return_vocab_logits=softmax == "vocabulary")
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
            **answer,
        )
        self._last_terms = {name: value.detach() for name, value in terms.items() if name != "loss"}
        if model.training:
            for name, value in self._last_terms.items():
                self._term_sums[name] = self._term_sums.get(name, 0.0) + float(value)
            self._term_count += 1
        return (terms["loss"], outputs) if return_outputs else terms["loss"]

    def log(self, logs: dict, *args, **kwargs) -> None:
        """Adds the training loss terms, averaged since the last log and over the processes, to a training log."""
        if self._term_count and "loss" in logs:
            # The Trainer logs on every process (it gathers the loss here too), so this gather is collective.
            names = list(self._term_sums)
            means = torch.tensor([[self._term_sums[name] / self._term_count for name in names]], dtype=torch.float64,
                                 device=self.args.device)
            logs.update(zip(names, self.accelerator.gather(means).mean(dim=0).tolist()))
            self._term_sums, self._term_count = {}, 0
        super().log(logs, *args, **kwargs)

    # ------------------------------------------------------------------ evaluation
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """One evaluation batch through `compute_loss`: the loss, the "logits" `[B, 1 + T]` (the record's prediction,
        then each of its `T` loss terms repeated per row, so the Trainer gathers them with the predictions), and the
        labels `(mos, group_ids)`."""
        inputs = self._prepare_inputs(inputs)
        labels = (inputs["mos"], inputs["group_ids"])
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach().mean()
        if prediction_loss_only:
            return loss, None, None
        prediction = self.objective.predict(outputs).detach().float().reshape(-1)
        terms = [self._last_terms[name].float().expand_as(prediction) for name in self.objective.terms]
        return loss, torch.stack([prediction, *terms], dim=1), labels

    def evaluation_loop(self, *args, **kwargs):
        """The Trainer's loop; an evaluation before training then leaves the model as it found it.

        The loop prepares a model not yet prepared with accelerate's `prepare_model(evaluation_mode=True)` (no DDP
        wrapper), which marks it as prepared: `train()` would then never wrap it in `DistributedDataParallel`, and
        under several processes each would train its own copy without synchronising gradients (measured: after the
        first step the two processes' gradient norms differ from the one-process run's). That preparation is undone.
        """
        prepared = getattr(self.model, "_is_accelerate_prepared", False)
        output = super().evaluation_loop(*args, **kwargs)
        if (not prepared and not self.is_in_train and self.model_wrapped is self.model
                and not (self.is_fsdp_enabled or self.is_deepspeed_enabled)):
            model = self.model
            if "_original_forward" in vars(model):  # the mixed-precision wrapper of the forward pass
                model.forward = model._original_forward
                del model._original_forward
            if hasattr(model, "_is_accelerate_prepared"):
                del model._is_accelerate_prepared
            self.accelerator._models = [entry for entry in self.accelerator._models if entry is not model]
        return output

    def correlation_metrics(self, prediction: EvalPrediction) -> dict:
        """The default `compute_metrics`: correlations of the prediction column with the MOS (`correlation_metrics`)
        and the mean of each loss term over the evaluated images."""
        columns = np.asarray(prediction.predictions)
        mos, groups = prediction.label_ids
        metrics = correlation_metrics(columns[:, 0], np.asarray(mos), np.asarray(groups))
        for column, name in enumerate(self.objective.terms, start=1):
            metrics[name] = float(columns[:, column].astype(np.float64).mean())
        return metrics

    # ------------------------------------------------------------------ checkpoints, whole or absent
    def _get_output_dir(self, trial) -> str:
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
