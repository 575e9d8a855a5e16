# Copyright 2026 The FuScore authors. Apache-2.0.
"""What FuScore training reads and writes: the model, the rating tables (checked before any work), the checkpoints
to resume from, and the final Hub-ready folder (written whole or not at all)."""

import contextlib
import json
import re
from pathlib import Path
from typing import Optional

import torch
from transformers import PreTrainedConfig
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from fuscore.atomic import AtomicWriteError, atomic_folder

from .config import DataArguments, ModelArguments


logger = logging.get_logger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


def load_model(model_args: ModelArguments, regression_head: bool = False, artifact_head: bool = False):
    """A FuScore checkpoint, a new FuScore model on a Qwen-VL base, or a tiny random-init model.

    A FuScore checkpoint is loaded with this checkout's (or installation's) `FuScoreForQuality`, never with code from
    the checkpoint's folder; a base checkpoint's folder code never runs either. `regression_head` comes from the
    objective's registry record: a checkpoint without one gets a freshly initialised head. `artifact_head` (a
    positive `lambda_map`, `map_weight`) gives the model an artifact-map head the same way (`add_artifact_head`); a
    checkpoint that has one keeps it either way.
    """
    from modeling_fuscore import FuScoreForQuality

    name = model_args.model_name_or_path
    dtype = model_args.dtype if model_args.dtype != "auto" else "auto"
    kwargs = {"dtype": dtype}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if name.startswith("tiny:"):
        from fuscore.tiny import build_tiny_model

        parts = name.split(":")
        size = {}
        if len(parts) > 2:
            hidden, layers = parts[2].split("x")
            size = dict(hidden_size=int(hidden), num_layers=int(layers), vision_hidden_size=int(hidden), vision_depth=int(layers))
        pixel_bounds = {k: v for k, v in (("min_pixels", model_args.min_pixels), ("max_pixels", model_args.max_pixels)) if v}
        model = build_tiny_model(parts[1], input_mode=model_args.input_mode, regression_head=regression_head, **pixel_bounds, **size)
    elif PreTrainedConfig.get_config_dict(name)[0].get("model_type") == "fuscore":
        from fuscore.hub import load_model as load_fuscore_model

        model = load_fuscore_model(name, **kwargs)  # the library's one loader (checks, processor, level words)
        if regression_head and model.regression_head is None:
            logger.warning("%s has no regression head; the objective trains a freshly initialised one.", name)
            model.add_regression_head()
    else:
        model = FuScoreForQuality.from_base(name, input_mode=model_args.input_mode, regression_head=regression_head,
                                            min_pixels=model_args.min_pixels, max_pixels=model_args.max_pixels, **kwargs)
    if artifact_head and not getattr(model.config, "artifact_map", False):
        if not name.startswith("tiny:"):
            logger.warning("%s has no artifact-map head; the map term trains a freshly initialised one.", name)
        model.add_artifact_head()
    if model_args.use_lora:
        from fuscore.lora import add_language_model_lora

        model = add_language_model_lora(model, r=model_args.lora_r, alpha=model_args.lora_alpha, dropout=model_args.lora_dropout)
    return model


def plain_model_from_state_dict(model, state_dict: dict):
    """A plain `FuScoreForQuality` holding `state_dict`, for saving a model that FSDP2 has turned into an instance of
    its own subclass (saving that would copy torch's FSDP source files into the folder as "remote code")."""
    from modeling_fuscore import FuScoreForQuality

    with torch.device("meta"):
        plain = FuScoreForQuality(model.config)
    plain.load_state_dict(state_dict, assign=True)
    if model.config.tie_word_embeddings:
        plain.tie_weights()
    return plain


# ---------------------------------------------------------------------------------------------------------------------
# Rating tables
# ---------------------------------------------------------------------------------------------------------------------


HELD_OUT_SPLITS = ("test", "validation", "dev")
EVAFUSION_SCORE_RANGE = (1.0, 5.0)


def held_out_split(table, where: str):
    """The held-out part of an eval table: the table itself, or its test/validation/dev split, or its only split."""
    import datasets

    if not isinstance(table, datasets.DatasetDict):
        return table
    name = next((name for name in HELD_OUT_SPLITS if name in table), None)
    if name is None and len(table) == 1:
        name = next(iter(table))
    if name is None:
        raise ValueError(f"{where} has splits {list(table)}: name one of {list(HELD_OUT_SPLITS)} or give a single split.")
    return table[name]


def load_tables(data_args: DataArguments, seed: int):
    """(train, eval) rating tables on the [1, 5] scale; the synthetic benchmark or the user's table.

    With `synthetic_stream` the first item is the `SyntheticIVIF` generator itself (the trainer streams its scenes).
    """
    from fuscore_data.synthetic import SyntheticIVIF

    if data_args.train_table == "synthetic":
        maps = data_args.synthetic_local_artifacts
        train_generator = SyntheticIVIF(image_size=data_args.synthetic_image_size, seed=data_args.synthetic_seed,
                                        local_artifacts=maps)
        eval_table = SyntheticIVIF(image_size=data_args.synthetic_image_size, seed=data_args.synthetic_eval_seed,
                                   local_artifacts=maps).table(data_args.synthetic_eval_scenes,
                                                               data_args.synthetic_images_per_scene)
        if data_args.synthetic_stream:
            return train_generator, eval_table
        return train_generator.table(data_args.synthetic_train_scenes, data_args.synthetic_images_per_scene), eval_table

    import datasets

    from fuscore_data.tables import load_table, normalize_scores, split_by_pair
    from fuscore_data.validation import validate_table

    from fuscore_data.evafusion import EVAFUSION_DESCRIPTION

    score_range = parse_score_range(data_args.score_range)
    splits = {}
    table = load_table(data_args.train_table)
    if isinstance(table, datasets.DatasetDict):
        if "train" not in table:
            raise ValueError(f"{data_args.train_table} has splits {list(table)} but no 'train' split.")
        splits["train"] = table["train"]
        held_out = next((name for name in HELD_OUT_SPLITS if name in table), None)
        if held_out and not data_args.eval_table:
            splits["test"] = table[held_out]
    else:
        splits["train"] = table
    if data_args.eval_table:
        splits["test"] = held_out_split(load_table(data_args.eval_table), data_args.eval_table)
    elif "test" not in splits:
        if not 0 < data_args.eval_fraction < 1:
            raise ValueError(f"--eval_fraction {data_args.eval_fraction}: {data_args.train_table} has no test split "
                             "and no --eval_table is given, so this fraction of its source pairs is held out for "
                             "evaluation; give a value between 0 and 1 (exclusive), or an --eval_table.")
        divided = split_by_pair(splits["train"], test_size=data_args.eval_fraction, seed=seed)
        splits = {"train": divided["train"], "test": divided["test"]}
    if score_range is None and splits["train"].info.description == EVAFUSION_DESCRIPTION:
        # EVAFusion scores are out of 5: its own declared scale, not the table's observed min and max.
        score_range = EVAFUSION_SCORE_RANGE
        logger.warning(f"{data_args.train_table} is an EVAFusion table: scores read on [1, 5] (--score_range to change).")
    # The artifact heat map (`MAP_COLUMN`) stays: the collator decodes it row by row, for the map term.
    tables = datasets.DatasetDict(splits)
    # Every problem of every row (missing or corrupt images, NaN scores, duplicates, leaked scenes) before training.
    validate_table(tables, score_range=score_range)
    tables = normalize_scores(tables, score_range=score_range)
    return tables["train"], tables["test"]


MAP_COLUMN = "artifact_heatmap"
"""The rating tables' optional map column (`fuscore_data.schema.EXTRA_FEATURES`): EVAFusion's grey artifact heat map,
or the synthetic benchmark's planted-artifact masks."""
DEFAULT_LAMBDA_MAP = 1.0


def has_maps(table) -> bool:
    """Whether a training table (or the synthetic stream's generator) gives artifact maps: a map column with at least
    one non-null row, counted on the Arrow column without decoding an image."""
    if not hasattr(table, "column_names"):  # the generator, or the stream's `SyntheticScenes` around it
        return bool(getattr(getattr(table, "generator", table), "local_artifacts", False))
    if MAP_COLUMN not in table.column_names:
        return False
    return table.with_format("arrow")[MAP_COLUMN].null_count < len(table)


def without_maps(table):
    """The table without its map column (a model without a map head never reads it; a row read from a `datasets`
    table decodes every image column it has). Anything else, the synthetic stream's generator included, as it is."""
    if hasattr(table, "remove_columns") and MAP_COLUMN in getattr(table, "column_names", ()):
        return table.remove_columns(MAP_COLUMN)
    return table


def map_weight(lambda_map: Optional[float], train_table, data_args: Optional[DataArguments] = None) -> float:
    """The weight of the artifact-map term (DESIGN.md section 10) for this run: `--lambda_map` as given, or when it is
    unset `DEFAULT_LAMBDA_MAP` if the training table has maps (`has_maps`) and 0 otherwise.

    Raises:
        ValueError: a positive `--lambda_map` for a training table without maps (named).
    """
    maps = has_maps(train_table)
    if lambda_map is None:
        return DEFAULT_LAMBDA_MAP if maps else 0.0
    if lambda_map > 0 and not maps:
        table = None if data_args is None else data_args.train_table
        name = _table_name(table, "training") if data_args is not None else "the training table"
        synthetic = data_args is not None and table in (None, "synthetic")
        hint = (" Add --synthetic_local_artifacts true for synthetic scenes with planted artifacts and their maps."
                if synthetic else "")
        where = (f"has no map column {MAP_COLUMN!r}" if not hasattr(train_table, "column_names")
                 or MAP_COLUMN not in train_table.column_names else f"has a {MAP_COLUMN!r} column with no map in it")
        raise ValueError(f"--lambda_map {lambda_map}: {name} {where}, so the artifact-map term has no targets.{hint} "
                         "Leave --lambda_map unset or 0 to train without maps.")
    return float(lambda_map)


def parse_score_range(text: Optional[str]) -> Optional[tuple]:
    """`--score_range lo,hi` as two numbers, lo < hi (None when unset); a named error otherwise."""
    if not text:
        return None
    parts = [part.strip() for part in str(text).split(",")]
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        low = high = None
    if low is None or not low < high:
        raise ValueError(f"--score_range {text!r}: give the table's score scale as two numbers lo,hi with lo < hi, "
                         "e.g. --score_range 1,5.")
    return low, high


def check_output_dir(output_dir) -> None:
    """`--output_dir` must be a folder (or not exist yet): checked before the model loads."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file; give a folder for the checkpoints and the final model.")
    if not path.exists() and any(parent.exists() and not parent.is_dir() for parent in path.parents):
        raise ValueError(f"--output_dir {output_dir}: a parent of it is a file; give a folder path.")


def check_tables(train_table, eval_table, data_args: DataArguments, training_args) -> None:
    """Fails before any evaluation or training when the tables cannot give what the run needs: the batches the
    objective's record asks for (pair-aware batches need `pairs_per_batch` source pairs with two or more fused
    images), and a held-out table large enough for the correlation metrics. The message names the table."""
    from collections import Counter

    from fuscore.objectives import get_objective
    from fuscore_metrics.plcc_srcc import MIN_ITEMS

    train_name = _table_name(data_args.train_table, "training")
    eval_name = (_table_name(data_args.eval_table, "held-out") if data_args.eval_table
                 else f"the held-out part of {train_name}")
    batch_images = training_args.pairs_per_batch * training_args.images_per_pair
    # The synthetic stream (no columns) makes every batch P whole scenes of M images by construction.
    if hasattr(train_table, "column_names") and get_objective(training_args.objective).batches == "random":
        if len(train_table) < batch_images:
            raise ValueError(f"{train_name} has {len(train_table)} fused images, fewer than one batch of "
                             f"--pairs_per_batch x --images_per_pair = {batch_images}.")
    elif hasattr(train_table, "column_names"):
        sizes = Counter(train_table["pair_id"])
        grouped = sum(1 for size in sizes.values() if size >= 2)
        if grouped < training_args.pairs_per_batch:
            raise ValueError(
                f"{train_name}: {grouped} of its {len(sizes)} source pairs have two or more fused images, but every "
                f"pair-aware batch needs --pairs_per_batch={training_args.pairs_per_batch} of them (the within-pair "
                "term compares fused images of one source pair). "
                + ("Every source pair has a single image: is `pair_id` the source pair (scene), not the image?"
                   if grouped == 0 else "Lower --pairs_per_batch or add images.")
            )
    if eval_table is not None and len(eval_table) < MIN_ITEMS:
        raise ValueError(f"{eval_name} has {len(eval_table)} fused image(s); the evaluation's correlations need at "
                         f"least {MIN_ITEMS}. Give a larger --eval_table or --eval_fraction.")


def _table_name(table: Optional[str], role: str) -> str:
    return f"the synthetic {role} table" if table in (None, "synthetic") else f"the {role} table {table}"


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------

_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors")
_INDEXES = ("model.safetensors.index.json", "adapter_model.safetensors.index.json")


def checkpoint_problems(folder) -> list:
    """Why `folder` is not a complete Trainer checkpoint (empty when it is): trainer state (written last) readable,
    model weights present (every shard of a sharded save), optimizer and scheduler states present."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    problems = []
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
        if "global_step" not in state:
            problems.append("trainer_state.json has no global_step")
    except FileNotFoundError:
        problems.append("no trainer_state.json")
    except (OSError, ValueError) as error:
        problems.append(f"trainer_state.json unreadable ({error})")
    index = next((folder / name for name in _INDEXES if (folder / name).is_file()), None)
    if index is not None:
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
            problems += [f"no weight shard {shard}" for shard in sorted(shards) if not (folder / shard).is_file()]
        except (OSError, ValueError, KeyError) as error:
            problems.append(f"{index.name} unreadable ({error})")
    elif not any((folder / name).is_file() for name in _WEIGHTS) and not any(folder.glob("pytorch_model_fsdp*")):
        problems.append("no model weights")
    if not any((folder / name).exists() for name in ("optimizer.pt", "optimizer.bin", "optimizer_0")):
        problems.append("no optimizer state")
    if not (folder / "scheduler.pt").is_file():
        problems.append("no scheduler state")
    return problems


def newest_complete_checkpoint(output_dir) -> tuple:
    """`(path or None, skipped)`: the complete `checkpoint-N` of `output_dir` with the largest N, and the newer
    incomplete ones passed over as `(path, problems)`."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None, []
    numbered = sorted(((int(match.group(1)), entry) for entry in output_dir.iterdir()
                       if (match := _CHECKPOINT_NAME.match(entry.name)) and entry.is_dir()), reverse=True)
    skipped = []
    for _, folder in numbered:
        problems = checkpoint_problems(folder)
        if not problems:
            return folder, skipped
        skipped.append((folder, problems))
    return None, skipped


def resolve_resume_checkpoint(resume_from_checkpoint, output_dir) -> Optional[str]:
    """The checkpoint `--resume_from_checkpoint` names, checked complete before any work.

    `last` (or `true`) is the newest complete checkpoint of `output_dir` (None when there is none: training starts
    from the beginning); incomplete newer ones, left by a run killed while it saved, are passed over and named. A
    named folder that is not a complete checkpoint is an error naming what it lacks.
    """
    if resume_from_checkpoint in (None, False, "", "false", "False"):
        return None
    if resume_from_checkpoint in (True, "true", "True", "last"):
        found, skipped = newest_complete_checkpoint(output_dir)
        for folder, problems in skipped:
            logger.warning("Skipping %s: incomplete checkpoint (%s).", folder, "; ".join(problems))
        return str(found) if found is not None else None
    problems = checkpoint_problems(resume_from_checkpoint)
    if problems:
        raise ValueError(f"--resume_from_checkpoint {resume_from_checkpoint} is not a complete checkpoint: "
                         f"{'; '.join(problems)}. Use --resume_from_checkpoint last for the newest complete one.")
    return str(resume_from_checkpoint)


# What a checkpoint records of the run that wrote it (beside trainer_state.json), read back on resume.
RUN_SETTINGS_NAME = "fuscore_run_settings.json"
# Settings that decide the trajectory: a resumed run with another value would equal no uninterrupted run (the
# checkpoint's optimizer and scheduler states hold the old ones; the batches would change), so a change is refused.
TRAJECTORY_SETTINGS = {
    "model": ("model_name_or_path", "input_mode", "dtype", "use_lora", "lora_r", "lora_alpha", "lora_dropout",
              "min_pixels", "max_pixels"),
    "data": ("train_table", "eval_table", "eval_fraction", "score_range", "dimension", "synthetic_seed",
             "synthetic_eval_seed", "synthetic_train_scenes", "synthetic_eval_scenes", "synthetic_images_per_scene",
             "synthetic_image_size", "synthetic_stream", "synthetic_local_artifacts"),
    "training": ("learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "weight_decay",
                 "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "optim", "optim_args",
                 "optim_target_modules", "seed", "data_seed", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "pairs_per_batch", "images_per_pair", "objective", "sigma_min",
                 "lambda_within", "lambda_cross", "lambda_map", "map_head_only", "fixed_std", "full_vocab_softmax", "label_smoothing_factor",
                 "train_sampling_strategy", "dataloader_drop_last", "average_tokens_across_devices",
                 "neftune_noise_alpha", "bf16", "fp16"),
}
# How long the run goes: a longer run continues the checkpoint's (applied, and said: the learning-rate schedule then
# spans the new length); one that ends before the checkpoint's step is refused.
LENGTH_SETTINGS = ("max_steps", "num_train_epochs")
# Bookkeeping that differs between any two launches: not compared.
UNCOMPARED_SETTINGS = ("resume_from_checkpoint", "local_rank", "hub_token")


def run_settings(model_args, data_args, training_args) -> dict:
    """The run's settings as JSON-ready values, `{"model": ..., "data": ..., "training": ...}`."""
    import dataclasses

    def plain(values: dict) -> dict:
        return json.loads(json.dumps(values, default=str))

    return {"model": plain(dataclasses.asdict(model_args)), "data": plain(dataclasses.asdict(data_args)),
            "training": plain(training_args.to_dict())}


def _same(old, new) -> bool:
    numbers = (int, float)
    if isinstance(old, numbers) and isinstance(new, numbers) and not isinstance(old, bool) and not isinstance(new, bool):
        return float(old) == float(new)  # the Trainer keeps some step counts as floats (1.0 for 1)
    return old == new


def _shown(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value)


def check_resume_settings(checkpoint, model_args, data_args, training_args) -> dict:
    """What a resume from `checkpoint` does with this run's settings, checked before any work.

    Returns `{"notes": [...], "trained": bool}`: the settings that differ from the checkpoint's run and are applied
    (said in `notes`), and whether the checkpoint already holds the whole run (its step is the run's last: the
    resumed run then trains no further step and its model is the checkpoint's, as an uninterrupted run's is).
    Raises ValueError naming each trajectory setting that differs, or a run that ends before the checkpoint's step.
    """
    checkpoint = Path(checkpoint)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    step = int(state["global_step"])
    planned = int(state.get("max_steps") or 0)
    notes, refused = [], []
    record = checkpoint / RUN_SETTINGS_NAME
    if not record.is_file():
        notes.append(f"{checkpoint} records no settings ({RUN_SETTINGS_NAME}, written since 2026-12-06): they were "
                     "not compared with this run's")
        old = None
    else:
        try:
            old = json.loads(record.read_text())
        except ValueError as error:
            raise ValueError(f"{record} is damaged ({error}); it records the settings the checkpoint was trained "
                             "with. Resume from another checkpoint.") from None
    now = run_settings(model_args, data_args, training_args)
    length_changed = False
    if old is not None:
        for group, values in now.items():
            for name, value in values.items():
                if name in UNCOMPARED_SETTINGS or name not in old.get(group, {}) or _same(old[group][name], value):
                    continue
                change = f"--{name} {_shown(old[group][name])} -> {_shown(value)}"
                if name in TRAJECTORY_SETTINGS.get(group, ()):
                    refused.append(change)
                elif name in LENGTH_SETTINGS:
                    length_changed = True
                    notes.append(f"{change} (applied: training continues to the new length; the learning-rate schedule "
                                 "now spans it, so the run equals no uninterrupted run of either length)")
                else:
                    notes.append(f"{change} (applied: it does not change what is trained)")
    if refused:
        raise ValueError(f"Cannot resume from {checkpoint} with other training settings: {'; '.join(refused)}. The "
                         "checkpoint's optimizer, schedule and batches belong to its own settings, so the resumed run "
                         "would equal no uninterrupted one. Resume with the checkpoint's values, or start a new run "
                         f"(another --output_dir) from its weights with --model_name_or_path {checkpoint}.")
    target = training_args.max_steps if training_args.max_steps > 0 else (planned if not length_changed else 0)
    if target and step > target:
        raise ValueError(f"--max_steps {target}: the checkpoint {checkpoint} has already trained {step} steps. Resume "
                         f"with --max_steps {step} or more, or start a new run from an earlier checkpoint.")
    return {"notes": notes, "trained": bool(target) and step >= target, "step": step}


def load_finished_run(trainer, checkpoint):
    """For a checkpoint that holds the whole run (`check_resume_settings(...)["trained"]`): its weights and trainer
    state, and the `TrainOutput` of a run that trains no further step. (The Trainer would train one more step from
    it, past `max_steps`.)"""
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return TrainOutput(trainer.state.global_step, losses[-1] if losses else float("nan"),
                       {"train_steps_this_run": 0, "resumed_at_step": trainer.state.global_step})


# ---------------------------------------------------------------------------------------------------------------------
# The final folder
# ---------------------------------------------------------------------------------------------------------------------


def save_final_model(trainer, final_dir: Path, model_args, data_args, training_args, metrics: dict) -> None:
    """Saves the trained model (LoRA merged) with its processor, remote code, metrics and a model card, as one folder
    that appears under `final_dir` only once it is complete (a previous one is replaced then).

    Call it on every process: under FSDP gathering the full weights is collective; only the main process writes.
    Under FSDP with LoRA the adapter is saved unmerged (merging needs the full weights in one process). A write that
    fails (disk full, permission) raises `AtomicWriteError` naming `final_dir` and leaves nothing under that name.
    """
    from fuscore.model_card import write_model_card

    state_dict = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if not trainer.is_world_process_zero():
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    processor = model.get_processor()
    if state_dict is not None and not hasattr(model, "peft_config"):
        model = plain_model_from_state_dict(model, state_dict)
        state_dict = None
    elif hasattr(model, "merge_and_unload") and state_dict is None:
        model = model.merge_and_unload()
    model.processor = processor
    evaluation = {
        "metrics": {key.removeprefix("eval_"): value for key, value in metrics.items() if key.startswith("eval_")},
        "dataset": evaluation_dataset_name(data_args),
        "synthetic": labels_are_synthetic(data_args),
        "objective": training_args.objective,
        "base_model": model_args.model_name_or_path,
        "dimension": data_args.dimension,
    }
    final_dir = Path(final_dir)
    with named_write_errors(final_dir), atomic_folder(final_dir, overwrite=True) as staging:
        model.save_pretrained(staging, state_dict=state_dict)
        if state_dict is not None:
            processor.save_pretrained(staging)
        (staging / "fuscore_eval.json").write_text(json.dumps(evaluation, indent=2))
        write_model_card(staging, evaluation)


def evaluation_dataset_name(data_args) -> str:
    """What the final evaluation ran on, as the model card and `fuscore_eval.json` name it."""
    if data_args.eval_table:
        return data_args.eval_table
    if data_args.train_table != "synthetic":
        return f"{data_args.train_table} (held-out pairs)"
    planted = ", planted artifacts" if data_args.synthetic_local_artifacts else ""
    return f"synthetic (held-out seed {data_args.synthetic_eval_seed}{planted})"


def labels_are_synthetic(data_args) -> bool:
    """Whether the run learned from or was evaluated on synthetic labels: FuScore's synthetic benchmark, or a saved
    table whose card or description says its labels are synthetic (`fuscore_data.cards.has_synthetic_labels`)."""
    from fuscore_data.cards import has_synthetic_labels

    tables = [table for table in (data_args.train_table, data_args.eval_table) if table]
    return any(table == "synthetic" or has_synthetic_labels(table) for table in tables)


@contextlib.contextmanager
def named_write_errors(folder):
    """Inside an `atomic_folder(folder)`: safetensors reports a full disk or a refused write as its own error type,
    which becomes the `AtomicWriteError` naming `folder` that an `OSError` there becomes (the folder was not left)."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as error:
        raise AtomicWriteError(f"Could not write the folder {Path(folder).absolute()}: {error}. Nothing was left "
                               "under that name.") from error
