# Copyright 2026 The FuScore authors. Apache-2.0.
"""Train FuScore, the IVIF quality scorer on a Qwen-VL model, on a rating table with the tripartite objective.

With no arguments this runs the embedded demo (configs/demo.yaml: the shipped checkpoint, fine-tuned briefly on CPU
on synthetic scenes, minutes). --config FILE.yaml names a config, and arguments after it override that file (trl's
TrlParser). Without --config, a run that names a model (--model_name_or_path) or a table (--train_table) starts from
the library's defaults, never from the demo's CPU settings: the TrainingArguments' defaults (checkpoints every 500
steps), bf16 where the device has it, and --output_dir outputs/<model>-<table>; other arguments without --config
change the demo. The run prints which config it stacked on and what it added.

    python trainer_fuscore.py                                                    # the embedded demo
    python trainer_fuscore.py --config configs/demo.yaml --max_steps 10          # the demo with a change
    accelerate launch trainer_fuscore.py --model_name_or_path Qwen/Qwen3-VL-8B-Instruct --train_table path/to/table
    accelerate launch trainer_fuscore.py --config configs/qwen3vl_8b_lora.yaml --train_table path/to/table

The objective (DESIGN.md section 4) is a KL term towards a per-image soft label plus Thurstone fidelity terms within
a source pair and across source pairs, and on a table with artifact maps (`artifact_heatmap`) a map term that trains
an artifact-map head (DESIGN.md section 10, --lambda_map); --objective switches to a baseline or an ablation (one registry record each,
fuscore.objectives), so the paper's ablation is one command per row. The pieces live in fuscore.training; this script
evaluates, trains, evaluates again and saves a Hub-ready folder under <output_dir>/final.
"""

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml
from transformers import set_seed
from transformers.utils import logging
from trl import TrlParser

from fuscore.atomic import remove_stale_temporaries, write_text
from fuscore.hub import save_model_folder
from fuscore.objectives import get_objective
from fuscore.training.collator import FuScoreCollator, SyntheticScenes, weightless_copy
from fuscore.hub import DEMO_MODEL
from fuscore.training.config import DEMO_CONFIG, DataArguments, FuScoreTrainingConfig, ModelArguments
from fuscore.training.loading import (
    check_output_dir,
    check_resume_settings,
    check_tables,
    load_finished_run,
    load_model,
    load_tables,
    map_weight,
    resolve_resume_checkpoint,
    without_maps,
    run_settings,
    save_final_model,
)
from fuscore.training.trainer import FuScoreTrainer, has_artifact_head


__all__ = ["FuScoreTrainer", "parse_arguments", "run", "main"]

logger = logging.get_logger(__name__)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


DEMO_OUTPUT_DIR = "outputs/demo"
"""The demo's `output_dir` (configs/demo.yaml): only the demo's own model and data write there."""
RUN_NAMING_FLAGS = ("--model_name_or_path", "--train_table")
"""Flags that make a run the user's own rather than the demo (without `--config` it starts from the library's defaults)."""


def _flag_value(argv: Sequence[str], flag: str) -> Optional[str]:
    """The value given to `flag` in `argv` (`--flag value` or `--flag=value`, with `_` or `-` inside the name as the
    parser takes both; the last one wins), else None."""
    value = None
    spellings = {flag, "--" + flag[2:].replace("_", "-")}
    for position, argument in enumerate(argv):
        name = argument.split("=", 1)[0]
        if name in spellings and "=" in argument:
            value = argument.split("=", 1)[1]
        elif name in spellings and position + 1 < len(argv):
            value = argv[position + 1]
    return value


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name.rstrip("/\\")).name or name).strip("-.") or "run"


def default_output_dir(model_name: Optional[str], train_table: Optional[str]) -> str:
    """`outputs/<model>-<table>`: where a run on the user's own model or table writes when no --output_dir is given."""
    model = _slug(model_name.replace(":", "-")) if model_name else "demo_model"
    return f"outputs/{model}-{_slug(train_table or 'synthetic')}"


def bf16_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def split_config(argv: Sequence[str]) -> tuple:
    """`(config file or None, overrides)`: the file named by `--config`; else the demo's config, or None (the
    library's defaults) when the arguments name a model or a table; and the other arguments."""
    argv = list(argv)
    if "--config" not in argv:
        if any(_flag_value(argv, flag) is not None for flag in RUN_NAMING_FLAGS):
            return None, argv
        return str(DEMO_CONFIG), argv
    position = argv.index("--config")
    if position + 1 >= len(argv):
        raise SystemExit("--config needs a YAML file.")
    config = argv[position + 1]
    if not Path(config).is_file():
        raise SystemExit(f"--config {config}: no such file.")
    return config, argv[:position] + argv[position + 2:]


def suited_defaults(config: Optional[str], overrides: Sequence[str]) -> list:
    """The arguments a run adds to what it was given, as flags: with no config, bf16 where the device has it; and an
    `--output_dir` of its own for a run on the user's model or table whose config would write to the demo's folder."""
    added = []
    model, table = _flag_value(overrides, "--model_name_or_path"), _flag_value(overrides, "--train_table")
    if config is None and not any(_flag_value(overrides, flag) is not None for flag in ("--bf16", "--fp16", "--use_cpu")) \
            and bf16_available():
        added += ["--bf16", "true"]
    own_run = (model is not None and Path(model).resolve() != DEMO_MODEL.resolve()) or table not in (None, "synthetic")
    if _flag_value(overrides, "--output_dir") is None:
        config_dir = yaml.safe_load(Path(config).read_text()).get("output_dir") if config else None
        if config is None or (own_run and config_dir is not None and Path(config_dir) == Path(DEMO_OUTPUT_DIR)):
            added += ["--output_dir", default_output_dir(model, table)]
    return added


def describe_config(config: Optional[str]) -> str:
    if config is None:
        return "none: the library's defaults (TrainingArguments' defaults, bf16 where the device has it)"
    demo = Path(config).resolve() == DEMO_CONFIG.resolve()
    return f"{config}{' (the embedded demo)' if demo else ''}"


def parse_arguments(argv: Sequence[str]):
    """`(ModelArguments, DataArguments, FuScoreTrainingConfig)` from a YAML config (`--config`; else the demo's, or the
    library's defaults for a run that names a model or a table) with the command-line arguments on top, through trl's
    `TrlParser`."""
    config, overrides = split_config(argv)
    added = suited_defaults(config, overrides)
    # `--help` starts with what the script does (the module docstring); the long usage line would bury it.
    parser = TrlParser((ModelArguments, DataArguments, FuScoreTrainingConfig), description=__doc__,
                       usage=argparse.SUPPRESS, formatter_class=_HelpFormatter)
    group_options(parser)
    return parser.parse_args_and_config(([] if config is None else ["--config", config]) + added + list(overrides))


def group_options(parser: argparse.ArgumentParser) -> None:
    """`--help` lists FuScore's own options first, by what they set (model, data, objective and training), then the
    stock Trainer's (`TrainingArguments`, over a hundred). HfArgumentParser puts every field into one "options" list
    and has no hook to split a subclass's fields from its parent's, so the actions are moved between argparse groups."""
    from dataclasses import fields

    from transformers import TrainingArguments

    stock = {field.name for field in fields(TrainingArguments)}
    titles = {
        "FuScore model (ModelArguments)": {field.name for field in fields(ModelArguments)},
        "FuScore data (DataArguments)": {field.name for field in fields(DataArguments)},
        "FuScore objective and training (FuScoreTrainingConfig)":
            {field.name for field in fields(FuScoreTrainingConfig)} - stock,
        "Trainer (transformers TrainingArguments; FuScore's defaults where the config sets them)": stock,
    }
    options = parser._optionals  # argparse keeps its groups in private lists; their layout has not changed in years
    groups = [parser.add_argument_group(title) for title in titles]
    for action in list(options._group_actions):
        for group, names in zip(groups, titles.values()):
            if action.dest in names:
                options._group_actions.remove(action)
                group._group_actions.append(action)
                break


def run(model_args: ModelArguments, data_args: DataArguments, training_args: FuScoreTrainingConfig) -> dict:
    """Evaluates, trains, evaluates again and saves a Hub-ready folder; returns the metrics before and after."""
    set_seed(training_args.seed)
    objective = get_objective(training_args.objective)
    if training_args.hub_adapter_only:
        check_adapter_push(model_args)
    # Before any work: a named checkpoint must be complete, and `last` passes over incomplete ones.
    check_output_dir(training_args.output_dir)
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    # ...and this run's settings must be the checkpoint's where they decide what is trained (else refused).
    resume_plan = check_resume_settings(resume, model_args, data_args, training_args) if resume else None
    # The tables first: whether they have maps decides the artifact-map term's weight and the model's map head.
    train_data, eval_data = load_tables(data_args, training_args.seed)
    lambda_map = map_weight(training_args.lambda_map, train_data, data_args)
    model = load_model(model_args, regression_head=objective.regression_head, artifact_head=lambda_map > 0)
    if not has_artifact_head(model):  # the maps would be decoded with every row for nothing
        train_data, eval_data = without_maps(train_data), without_maps(eval_data)
    if training_args.map_head_only:
        freeze_all_but_map_head(model, lambda_map, model_args)
    fuscore_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    if training_args.compile_blocks:
        # A trained vision tower stays eager under checkpointing: torch refuses to compile its blocks inside
        # checkpointing's recompute regions ("RNG ops in recompute regions"). A frozen one is never checkpointed.
        trained_and_checkpointed = fuscore_model.trains_vision_tower() and training_args.gradient_checkpointing
        fuscore_model.compile_blocks(vision_tower=not trained_and_checkpointed)
    # Checked here, before the evaluation that precedes training; applied when the Trainer switches checkpointing on.
    try:
        fuscore_model.configure_checkpointing(training_args.uncheckpointed_layers, training_args.checkpointing_policy,
                                              training_args.activation_memory_budget)
    except ValueError as error:
        raise ValueError(f"--uncheckpointed_layers / --checkpointing_policy / --activation_memory_budget: {error}") from None
    processor = model.get_processor()
    if data_args.synthetic_stream:
        if training_args.max_steps <= 0:
            raise ValueError("--synthetic_stream needs --max_steps: the stream has no end.")
        train_data = SyntheticScenes(train_data, training_args.images_per_pair)
    check_tables(train_data, eval_data, data_args, training_args)
    collator = FuScoreCollator(processor, model.config.level_values, objective, training_args.sigma_min,
                               data_args.dimension, position_model=weightless_copy(fuscore_model),
                               pair_target_raters=training_args.pair_target_raters)
    trainer = FuScoreTrainer(model=model, args=training_args, train_dataset=train_data, eval_dataset=eval_data,
                             data_collator=collator, processing_class=processor, lambda_map=lambda_map)
    trainer.run_settings = run_settings(model_args, data_args, training_args)
    output_dir = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        for stale in remove_stale_temporaries(output_dir):  # left by a run killed while it saved
            logger.warning("Removed %s, left half-written by an interrupted run.", stale)
        if training_args.resume_from_checkpoint:
            print(f"resuming from {resume}" if resume else f"no complete checkpoint in {output_dir}: training from the start")
        for note in (resume_plan or {}).get("notes", []):
            print(f"resume: {note}")
        if resume_plan and resume_plan["trained"]:
            print(f"resume: {resume} holds the whole run (step {resume_plan['step']}): no further step is trained")
    trainer.accelerator.wait_for_everyone()

    if trainer.is_fsdp_enabled:
        # FSDP shards the model only when training starts; before that it sits unsharded on the CPU.
        logger.warning("FSDP: the evaluation before training is skipped.")
        before = {}
    else:
        # Logged as the evaluation at step 0 (`eval/...` in TensorBoard), reported as `before_...`.
        before = {f"before_{key.removeprefix('eval_')}": value
                  for key, value in trainer.evaluate(metric_key_prefix="eval").items()}
    if resume_plan and resume_plan["trained"]:
        train_output = load_finished_run(trainer, resume)
    else:
        train_output = trainer.train(resume_from_checkpoint=resume)
    after = trainer.evaluate(metric_key_prefix="eval")

    final_dir = output_dir / "final"
    adapter_dir = output_dir / "adapter"
    if training_args.hub_adapter_only and trainer.is_world_process_zero():
        # Saved before save_final_model merges the adapter into the weights.
        save_model_folder(trainer.accelerator.unwrap_model(trainer.model), adapter_dir, overwrite=True)
    save_final_model(trainer, final_dir, model_args, data_args, training_args, after)
    results = {"before": before, "after": after, "train": train_output.metrics, "final_dir": str(final_dir),
               "resumed_from": resume, "num_processes": trainer.accelerator.num_processes}
    if training_args.push_to_hub and trainer.is_world_process_zero():
        source = adapter_dir if training_args.hub_adapter_only else final_dir
        results["hub"] = push_final_model(source, output_dir / "hub", trainer.hub_model_id, training_args,
                                          base_model=model_args.model_name_or_path)
    if trainer.is_world_process_zero():
        write_text(output_dir / "results.json", json.dumps(results, indent=2))
    trainer.accelerator.wait_for_everyone()
    return results


def freeze_all_but_map_head(model, lambda_map: float, model_args: ModelArguments) -> None:
    """`--map_head_only`: every parameter but the artifact-map head's stops requiring a gradient (checked: a map
    term to train, no LoRA)."""
    if lambda_map <= 0:
        raise ValueError("--map_head_only trains the artifact-map head alone, but the map term is off (--lambda_map 0, "
                         "or a training table without maps).")
    if model_args.use_lora:
        raise ValueError("--map_head_only freezes everything but the map head; --use_lora would train adapters too.")
    model.requires_grad_(False)
    model.artifact_head.requires_grad_(True)


def check_adapter_push(model_args: ModelArguments) -> None:
    """`--hub_adapter_only` pushes an adapter that loads on its base by repo id: fails before any work unless the run
    trains LoRA on a FuScore model named by its Hub repo id."""
    from fuscore.export import check_fuscore_config
    from fuscore.hub import check_repo_id

    if not model_args.use_lora:
        raise ValueError("--hub_adapter_only needs --use_lora: without LoRA there is no adapter to push.")
    try:
        check_repo_id(model_args.model_name_or_path, "--model_name_or_path")
    except ValueError as error:
        raise ValueError(f"--hub_adapter_only: {error} The pushed adapter names its base by Hub repo id; push the "
                         "base first, or push the merged model (leave --hub_adapter_only out).") from None
    check_fuscore_config(model_args.model_name_or_path, "--hub_adapter_only (the adapter's base)")


def push_final_model(source: Path, export_dir: Path, repo_id: str, training_args: FuScoreTrainingConfig,
                     base_model: Optional[str] = None) -> dict:
    """`--push_to_hub`: the final folder (LoRA merged), or with `--hub_adapter_only` the adapter folder, exported as
    `fuscore export` does (code files, processor, pipeline registration, handler, card with the evaluation; for an
    adapter, peft's files naming `base_model` and a card) into `export_dir`, then uploaded to `repo_id` in one commit
    that replaces the model files the Trainer pushed with its checkpoints. Returns the repo and commit URL."""
    from fuscore.export import export_model

    adapter_only = training_args.hub_adapter_only
    evaluation = json.loads((source.parent / "final" / "fuscore_eval.json").read_text())
    result = export_model(source, export_dir, overwrite=True, repo_id=repo_id, push_to_hub=repo_id,
                          adapter_only=adapter_only, evaluation=evaluation,
                          hub_base_model=base_model if adapter_only else None,
                          private=bool(training_args.hub_private_repo), token=training_args.hub_token)
    print(f"pushed {export_dir} to {repo_id}: {result.hub_url}", flush=True)
    return {"repo_id": repo_id, "commit_url": result.hub_url, "folder": str(export_dir), "kind": result.kind}


def format_report(results: dict) -> str:
    names = ("plcc", "plcc_logistic", "srcc", "krcc", "srcc_within", "pairwise_accuracy_within")
    lines = ["", "held-out scenes       " + "  ".join(f"{name:>24}" for name in names)]
    for label, prefix in (("before fine-tuning", "before"), ("after fine-tuning", "eval")):
        values = [results["before" if prefix == "before" else "after"].get(f"{prefix}_{name}", float("nan")) for name in names]
        lines.append(f"{label:<21} " + "  ".join(f"{value:>24.4f}" for value in values))
    maps = ("loss_map", "map_nss", "map_cc", "map_sim", "map_auc_judd", "map_kl")
    if f"eval_{maps[0]}" in results["after"]:  # a model with an artifact-map head, on held-out scenes with maps
        lines += ["", "artifact maps         " + "  ".join(f"{name:>12}" for name in maps)]
        for label, prefix in (("before fine-tuning", "before"), ("after fine-tuning", "eval")):
            values = [results["before" if prefix == "before" else "after"].get(f"{prefix}_{name}", float("nan"))
                      for name in maps]
            lines.append(f"{label:<21} " + "  ".join(f"{value:>12.4f}" for value in values))
    lines.append(f"saved: {results['final_dir']}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    model_args, data_args, training_args = parse_arguments(argv)
    if training_args.process_index == 0:
        config, overrides = split_config(argv)
        added = suited_defaults(config, overrides)
        print(f"config: {describe_config(config)}\n"
              f"overrides: {' '.join(overrides) if overrides else 'none'}\n"
              f"added: {' '.join(added) if added else 'none'}", flush=True)
    results = run(model_args, data_args, training_args)
    if training_args.process_index == 0:
        print(format_report(results))
    return results


if __name__ == "__main__":
    main()
