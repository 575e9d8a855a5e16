# Copyright 2026 The FuScore authors. Apache-2.0.
"""Train FuScore on a rating table with the tripartite objective.

    accelerate launch trainer_fuscore.py --config configs/qwen3vl_8b_lora.yaml   # a real base model, your table
    python trainer_fuscore.py                                                    # the embedded demo (CPU, minutes)

The objective (DESIGN.md section 4) is a KL term towards a per-image soft label plus Thurstone fidelity terms
within a source pair and across source pairs; `--objective qalign|deqa` switches to the peers' objectives and
`--objective fuscore_mos_std_only|nearest_onehot|scalar` to the controlled ablations (`fuscore.objectives.registry`
says what each is), so the paper's ablation is one command per row. The labels and losses live in
`fuscore.objectives`, the batch samplers in `fuscore.training`; this file wires them into a `transformers.Trainer`.
"""

import copy
import json
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, IterableDataset
from transformers import AutoModel, HfArgumentParser, PreTrainedConfig, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from fuscore.objectives import OBJECTIVES, compute_objective, get_objective, label_for_objective, resolve_overall_score
from fuscore.training.answer_tokens import (answer_prefix_ids, answer_token_labels, answer_token_nll,
                                            capture_last_hidden_state)
from fuscore.training.sampling import PairGroupedBatchSampler, RandomBatchSampler
from fuscore_data.schema import SUB_DIMENSIONS


logger = logging.get_logger(__name__)
REPO_ROOT = Path(__file__).resolve().parent
DEMO_MODEL = REPO_ROOT / "fuscore" / "demo_model"


# ---------------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=str(DEMO_MODEL),
        metadata={"help": "A FuScore checkpoint (folder or Hub id), a Qwen-VL base checkpoint such as "
                          "Qwen/Qwen3-VL-8B-Instruct, or 'tiny:<family>[:<hidden>x<layers>]' for a random-init toy model."},
    )
    input_mode: str = field(default="fused", metadata={"help": "'fused' or 'fused_ir_vis' (for a new model from a base)."})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})
    attn_implementation: Optional[str] = field(default=None, metadata={"help": "sdpa, flash_attention_2, eager."})
    use_lora: bool = field(default=False, metadata={"help": "LoRA on the language model only (peft)."})
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    min_pixels: Optional[int] = field(default=None, metadata={"help": "Image processor lower pixel bound (new models)."})
    max_pixels: Optional[int] = field(default=None, metadata={"help": "Image processor upper pixel bound (new models)."})


@dataclass
class DataArguments:
    train_table: str = field(
        default="synthetic",
        metadata={"help": "A rating table: a `save_to_disk` folder, an imagefolder folder with metadata.csv/jsonl, "
                          "or 'synthetic' (the embedded synthetic benchmark)."},
    )
    eval_table: Optional[str] = field(default=None, metadata={"help": "Held-out table; default: a scene-disjoint split of train_table."})
    eval_fraction: float = field(default=0.2, metadata={"help": "Fraction of source pairs held out when eval_table is unset."})
    score_range: Optional[str] = field(default=None, metadata={"help": "'lo,hi' declared range of the table's scores (default: its min/max)."})
    dimension: str = field(default="overall", metadata={"help": "The rating prompt trained on."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic training scenes."})
    synthetic_eval_seed: int = field(default=1_000_003, metadata={"help": "Seed of the held-out synthetic scenes (never trained on)."})
    synthetic_train_scenes: int = 64
    synthetic_eval_scenes: int = 24
    synthetic_images_per_scene: int = 6
    synthetic_image_size: int = 112
    synthetic_stream: bool = field(default=False, metadata={"help": "Fresh synthetic scenes every step (needs max_steps)."})


@dataclass
class FuScoreTrainingArguments(TrainingArguments):
    objective: str = field(default="fuscore", metadata={"help": f"One of {OBJECTIVES}."})
    lambda_within: float = field(default=1.0, metadata={"help": "Weight of the within-source-pair Thurstone term."})
    lambda_cross: float = field(default=0.5, metadata={"help": "Weight of the cross-source-pair Thurstone term."})
    fixed_std: bool = field(default=False, metadata={"help": "Thurstone terms with sd=1 instead of the predicted std."})
    sigma_min: float = field(default=0.2, metadata={"help": "Floor of the soft label's spread."})
    pairs_per_batch: int = field(default=4, metadata={"help": "P: source pairs per batch (per process)."})
    images_per_pair: int = field(default=4, metadata={"help": "M: fused images of each source pair per batch."})
    full_vocab_softmax: bool = field(default=False, metadata={"help": "KL on the full-vocabulary softmax (DeQA-Score variant)."})
    compile_blocks: bool = field(default=False, metadata={
        "help": "torch.compile each decoder layer, and the vision blocks when the vision tower is frozen or not "
                "checkpointed (FuScoreForQuality.compile_blocks): fuses the norms, rotary embeddings and activations. "
                "Measured 1.8x samples/s for Qwen3-VL-8B LoRA with checkpointing on one H100 (41.6 against 23.5 "
                "eager, benchmarks/RESULTS_speed.md). Needs Triton on a GPU or a C++ compiler on the CPU; compiling "
                "took about 10-15 s on that H100."})
    uncheckpointed_layers: int = field(default=0, metadata={
        "help": "With --gradient_checkpointing: the last N decoder layers keep their activations instead of "
                "recomputing them in the backward pass (FuScoreForQuality.uncheckpointed_layers). Each layer left "
                "unchecked costs about 0.44 GiB for Qwen3-VL-8B at 16 images of 448 px and saves its recomputation; "
                "benchmarks/RESULTS_speed.md has the measured trade."})
    remove_unused_columns: bool = False  # the collator needs the raw image and score columns

    def __post_init__(self):
        super().__post_init__()
        get_objective(self.objective)  # an unknown name fails here, listing the known ones
        if self.uncheckpointed_layers < 0:
            raise ValueError(f"--uncheckpointed_layers {self.uncheckpointed_layers}: must be 0 or more.")
        if self.uncheckpointed_layers and not self.gradient_checkpointing:
            raise ValueError("--uncheckpointed_layers needs --gradient_checkpointing: without checkpointing every "
                             "layer keeps its activations already.")


# ---------------------------------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------------------------------


def pair_code(pair_id: str) -> int:
    """A stable integer for a source pair id, identical in every process (for gathering across processes)."""
    return zlib.crc32(str(pair_id).encode("utf-8"))


class FuScoreCollator:
    """Turns rating-table rows into model inputs plus the labels of the chosen objective.

    Each row is a dict with `fused` (and `ir`, `vis` when the model reads them), `pair_id`, `mos` and optionally
    `mos_std` and the four sub-scores, all on [1, 5]. The batch carries `soft_label` `[B, L]` in the model's level
    order, `mu`, `sigma` and `mos` `[B]`, and `group_ids` `[B]` (stable codes of `pair_id`). Given a
    `position_model` (a FuScoreForQuality; `weightless_copy` makes one that costs no memory), it also carries the
    batch's `position_ids` and `vision_inputs` (`FuScoreForQuality.position_inputs`), computed here on the CPU: inside
    the forward pass the base model would compute them on the GPU, with per-row loops that synchronise with it.
    """

    label_keys = ("soft_label", "mu", "sigma", "group_ids", "mos", "answer_labels")

    def __init__(self, processor, level_values: Sequence[float], objective: str = "fuscore", sigma_min: float = 0.2,
                 dimension: str = "overall", position_model=None):
        self.processor = processor
        self.position_model = position_model
        self.level_values = list(level_values)
        self.objective = objective
        self.sigma_min = sigma_min
        self.dimension = dimension
        # The peers' objectives also train the answer prefix's tokens (fuscore.training.answer_tokens).
        self.answer_ids = answer_prefix_ids(processor, dimension) if get_objective(objective).answer_tokens else None

    def __call__(self, rows: Sequence[dict]):
        samples = [
            self.processor.prepare_sample(row["fused"], row.get("ir"), row.get("vis"), self.dimension,
                                          source=f"pair {row.get('pair_id')!r}, method {row.get('method')!r}")
            for row in rows
        ]
        # A plain dict: accelerate moves a BatchFeature with its own `.to()`, which leaves nested tensors behind.
        batch = dict(self.processor.collate(samples))
        if self.position_model is not None:
            batch.update(self.position_model.position_inputs(batch))
        mu = np.array([_optional_float(row.get("mos")) for row in rows], dtype=np.float64)
        sub_scores = np.array([[_optional_float(row.get(name)) for name in SUB_DIMENSIONS] for row in rows], dtype=np.float64)
        mos_std = np.array([_optional_float(row.get("mos_std"), default=0.0) for row in rows], dtype=np.float64)
        soft_label, sigma = label_for_objective(self.objective, mu, sub_scores, mos_std, sigma_min=self.sigma_min,
                                                level_values=self.level_values)
        filled_mu = resolve_overall_score(mu, sub_scores, self.level_values)
        batch["soft_label"] = torch.as_tensor(np.asarray(soft_label), dtype=torch.float32)
        batch["mu"] = torch.as_tensor(filled_mu, dtype=torch.float32)
        batch["sigma"] = torch.as_tensor(np.asarray(sigma), dtype=torch.float32)
        batch["mos"] = batch["mu"].clone()
        batch["group_ids"] = torch.tensor([pair_code(row["pair_id"]) for row in rows], dtype=torch.long)
        if self.answer_ids is not None:
            batch["answer_labels"] = answer_token_labels(batch["input_ids"], batch["attention_mask"], self.answer_ids)
        return batch


def weightless_copy(model):
    """The model rebuilt from its configuration on the meta device: no weights, no memory, but the same methods and
    configuration (enough for `position_inputs`), and cheap to hand to data-loading worker processes."""
    with torch.device("meta"):
        return type(model)(copy.deepcopy(model.config))


def _optional_float(value, default=float("nan")) -> float:
    if value is None:
        return default
    value = float(value)
    return default if math.isnan(value) else value


class SyntheticBatchStream(IterableDataset):
    """Endless fresh synthetic batches of P scenes x M fused images, for training without a fixed table.

    Batch `k` is built from scenes `k*P ... k*P+P-1` of the generator, so the stream is deterministic in the seed;
    DataLoader workers and processes take interleaved batch numbers, and `start_batch` resumes mid-stream.
    """

    def __init__(self, generator, pairs_per_batch: int, images_per_pair: int, start_batch: int = 0):
        self.generator = generator
        self.pairs_per_batch = pairs_per_batch
        self.images_per_pair = images_per_pair
        self.start_batch = start_batch

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        rank = int(os.environ.get("RANK", 0))
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        stride = num_workers * world_size
        batch_number = self.start_batch + rank * num_workers + worker_id
        while True:
            first_scene = batch_number * self.pairs_per_batch
            rows = []
            for scene in range(first_scene, first_scene + self.pairs_per_batch):
                rows.extend(self.generator.group(scene, self.images_per_pair))
            yield rows
            batch_number += stride


# ---------------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------------


class FuScoreTrainer(Trainer):
    """`Trainer` with FuScore's objective in `compute_loss`, pair-aware batches and correlation metrics.

    Every loss term is logged separately (`loss_dist`, `loss_within`, `loss_cross`, ...). The loss is a batch mean,
    so the model is marked as not taking `num_items_in_batch` and the Trainer divides by the accumulation steps:
    accumulating k batches gives the same update as one k-times-larger batch.
    """

    def __init__(self, *args, data_collator=None, **kwargs):
        super().__init__(*args, data_collator=data_collator, **kwargs)
        self.objective = get_objective(self.args.objective)
        if self.args.n_gpu > 1:
            # Trainer's fallback for several GPUs in one process is DataParallel, which would cut the pair-aware
            # batches into slices without whole source-pair groups.
            raise ValueError(
                f"{self.args.n_gpu} GPUs are visible to a single process. Launch one process per GPU with "
                "`accelerate launch --num_processes N trainer_fuscore.py ...`, or set CUDA_VISIBLE_DEVICES to one GPU."
            )
        self.model_accepts_loss_kwargs = False
        self._term_sums: dict[str, float] = {}
        self._term_count = 0

    # ------------------------------------------------------------------ data
    def get_train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset
        if isinstance(dataset, IterableDataset):
            # Workers and processes already take disjoint batch numbers (see SyntheticBatchStream).
            return DataLoader(dataset, batch_size=None, collate_fn=self.data_collator,
                              num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
                              persistent_workers=self.args.dataloader_num_workers > 0)
        # Global batches of whole source-pair groups; accelerate hands whole batches round-robin to the processes
        # (BatchSamplerShard without split_batches), so no group is ever cut between processes.
        if self.objective.batches == "random":
            sampler = RandomBatchSampler(len(dataset), self.args.pairs_per_batch * self.args.images_per_pair,
                                         seed=self.args.seed)
        else:
            sampler = PairGroupedBatchSampler(dataset["pair_id"], self.args.pairs_per_batch,
                                              self.args.images_per_pair, seed=self.args.seed)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = {key: inputs.pop(key) for key in FuScoreCollator.label_keys if key in inputs}
        softmax = "vocabulary" if self.args.full_vocab_softmax else self.objective.softmax
        answer = {}
        if self.objective.answer_tokens:
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
        if model.training:
            for name, value in terms.items():
                if name != "loss":
                    self._term_sums[name] = self._term_sums.get(name, 0.0) + float(value.detach())
            self._term_count += 1
        return (terms["loss"], outputs) if return_outputs else terms["loss"]

    def log(self, logs: dict, *args, **kwargs) -> None:
        if self._term_count and "loss" in logs:
            logs.update({name: total / self._term_count for name, total in self._term_sums.items()})
            self._term_sums, self._term_count = {}, 0
        super().log(logs, *args, **kwargs)

    # ------------------------------------------------------------------ evaluation
    def predict_scores(self, dataset, batch_size: Optional[int] = None) -> dict:
        """Scores of a table's rows with their labels, gathered from every process: arrays `score`, `mos`, `group`."""
        loader = DataLoader(dataset, batch_size=batch_size or self.args.per_device_eval_batch_size,
                            collate_fn=self.data_collator, num_workers=self.args.dataloader_num_workers)
        loader = self.accelerator.prepare(loader)
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        scores, mos, groups = [], [], []
        with torch.no_grad():
            for batch in loader:
                labels = {key: batch.pop(key, None) for key in FuScoreCollator.label_keys}
                batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
                output = model(**batch)
                prediction = self.objective.predict(output)
                gathered = self.accelerator.gather_for_metrics((prediction.float(), labels["mos"], labels["group_ids"]))
                scores.append(gathered[0].cpu())
                mos.append(gathered[1].cpu())
                groups.append(gathered[2].cpu())
        model.train(was_training)
        return {"score": torch.cat(scores).numpy(), "mos": torch.cat(mos).numpy(), "group": torch.cat(groups).numpy()}

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        start = time.time()
        predictions = self.predict_scores(dataset)
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in correlation_metrics(predictions).items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 3)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def correlation_metrics(predictions: dict) -> dict:
    """PLCC, SRCC, KRCC, RMSE and within-pair SRCC / ranking accuracy through the project's `evaluate` module."""
    import evaluate
    import fuscore_metrics

    metric = evaluate.load(str(Path(fuscore_metrics.__file__).parent / "plcc_srcc"))
    result = metric.compute(predictions=predictions["score"].tolist(), references=predictions["mos"].tolist(),
                            groups=predictions["group"].tolist())
    return {key: float(value) for key, value in result.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Model and data loading
# ---------------------------------------------------------------------------------------------------------------------


def load_model(model_args: ModelArguments, regression_head: bool = False):
    """A FuScore checkpoint, a new FuScore model on a Qwen-VL base, or a tiny random-init model."""
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
        # Only a FuScore checkpoint runs remote code (FuScore's own files); a base checkpoint's folder code never runs.
        model = AutoModel.from_pretrained(name, trust_remote_code=True, **kwargs)
        if regression_head and model.regression_head is None:
            logger.warning("%s has no regression head; the objective trains a freshly initialised one.", name)
            model.add_regression_head()
        model.get_processor()
    else:
        model = FuScoreForQuality.from_base(name, input_mode=model_args.input_mode, regression_head=regression_head,
                                            min_pixels=model_args.min_pixels, max_pixels=model_args.max_pixels, **kwargs)
    if model_args.use_lora:
        from fuscore.lora import add_language_model_lora

        model = add_language_model_lora(model, r=model_args.lora_r, alpha=model_args.lora_alpha, dropout=model_args.lora_dropout)
    return model


def load_tables(data_args: DataArguments, seed: int):
    """(train, eval) rating tables on the [1, 5] scale; the synthetic benchmark or the user's table."""
    from fuscore_data.synthetic import SyntheticIVIF

    if data_args.train_table == "synthetic":
        train_generator = SyntheticIVIF(image_size=data_args.synthetic_image_size, seed=data_args.synthetic_seed)
        eval_table = SyntheticIVIF(image_size=data_args.synthetic_image_size, seed=data_args.synthetic_eval_seed).table(
            data_args.synthetic_eval_scenes, data_args.synthetic_images_per_scene)
        if data_args.synthetic_stream:
            return train_generator, eval_table
        return train_generator.table(data_args.synthetic_train_scenes, data_args.synthetic_images_per_scene), eval_table

    import datasets

    from fuscore_data.tables import load_table, normalize_scores, split_by_pair
    from fuscore_data.validation import validate_table

    score_range = tuple(float(x) for x in data_args.score_range.split(",")) if data_args.score_range else None
    splits = {}
    table = load_table(data_args.train_table)
    if isinstance(table, datasets.DatasetDict):
        if "train" not in table:
            raise ValueError(f"{data_args.train_table} has splits {list(table)} but no 'train' split.")
        splits["train"] = table["train"]
        held_out = next((name for name in ("test", "validation") if name in table), None)
        if held_out and not data_args.eval_table:
            splits["test"] = table[held_out]
    else:
        splits["train"] = table
    if data_args.eval_table:
        evaluation = load_table(data_args.eval_table)
        splits["test"] = evaluation["test"] if isinstance(evaluation, datasets.DatasetDict) else evaluation
    elif "test" not in splits:
        divided = split_by_pair(splits["train"], test_size=data_args.eval_fraction, seed=seed)
        splits = {"train": divided["train"], "test": divided["test"]}
    tables = datasets.DatasetDict(splits)
    # Every problem of every row (missing or corrupt images, NaN scores, duplicates, leaked scenes) before training.
    validate_table(tables, score_range=score_range)
    tables = normalize_scores(tables, score_range=score_range)
    return tables["train"], tables["test"]


# ---------------------------------------------------------------------------------------------------------------------
# Script
# ---------------------------------------------------------------------------------------------------------------------

DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


def yaml_to_argv(path: str) -> list:
    """A YAML config as command-line arguments, so that arguments given after it on the command line override it."""
    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a config file must be a mapping of argument names to values.")
    argv = []
    for key, value in config.items():
        if isinstance(value, list):
            argv += [f"--{key}", *[str(item) for item in value]]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        elif value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def parse_arguments(argv: Sequence[str]):
    """`--config file.yaml [overrides]`, plain arguments, or nothing (the embedded demo)."""
    parser = HfArgumentParser((ModelArguments, DataArguments, FuScoreTrainingArguments))
    argv = list(argv)
    if not argv:
        argv = ["--config", str(DEMO_CONFIG)]
    if "--config" in argv:
        position = argv.index("--config")
        if position + 1 >= len(argv):
            raise SystemExit("--config needs a YAML file.")
        config_path = argv[position + 1]
        if not Path(config_path).is_file():
            raise SystemExit(f"--config {config_path}: no such file.")
        argv = yaml_to_argv(config_path) + argv[:position] + argv[position + 2 :]
    return parser.parse_args_into_dataclasses(args=argv)


def run(model_args: ModelArguments, data_args: DataArguments, training_args: FuScoreTrainingArguments) -> dict:
    """Evaluates, trains, evaluates again and saves a Hub-ready folder; returns the metrics before and after."""
    set_seed(training_args.seed)
    model = load_model(model_args, regression_head=get_objective(training_args.objective).regression_head)
    fuscore_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    layer_count = len(fuscore_model.model.language_model.layers)
    if training_args.uncheckpointed_layers > layer_count:  # checked here, before the evaluation that precedes training
        raise ValueError(f"--uncheckpointed_layers {training_args.uncheckpointed_layers}: the model's language model "
                         f"has {layer_count} decoder layers.")
    # Read when the Trainer switches checkpointing on, at the start of training.
    fuscore_model.uncheckpointed_layers = training_args.uncheckpointed_layers
    if training_args.compile_blocks:
        # A trained vision tower stays eager under checkpointing: torch refuses to compile its blocks inside
        # checkpointing's recompute regions ("RNG ops in recompute regions"). A frozen one is never checkpointed.
        trained_and_checkpointed = fuscore_model.trains_vision_tower() and training_args.gradient_checkpointing
        fuscore_model.compile_blocks(vision_tower=not trained_and_checkpointed)
    processor = model.get_processor()
    level_values = model.config.level_values
    train_data, eval_data = load_tables(data_args, training_args.seed)
    if data_args.synthetic_stream:
        if training_args.max_steps <= 0:
            raise ValueError("--synthetic_stream needs --max_steps: the stream has no end.")
        train_data = SyntheticBatchStream(train_data, training_args.pairs_per_batch, training_args.images_per_pair)
    collator = FuScoreCollator(processor, level_values, training_args.objective, training_args.sigma_min, data_args.dimension,
                               position_model=weightless_copy(fuscore_model))
    trainer = FuScoreTrainer(model=model, args=training_args, train_dataset=train_data, eval_dataset=eval_data,
                             data_collator=collator, processing_class=processor)

    if trainer.is_fsdp_enabled:
        # FSDP shards the model only when training starts; before that it sits unsharded on the CPU.
        logger.warning("FSDP: the evaluation before training is skipped.")
        before = {}
    else:
        before = trainer.evaluate(metric_key_prefix="before")
    resume = training_args.resume_from_checkpoint
    if resume in ("true", "True", "last"):
        resume = get_last_checkpoint(training_args.output_dir)
    train_output = trainer.train(resume_from_checkpoint=resume)
    after = trainer.evaluate(metric_key_prefix="eval")

    final_dir = Path(training_args.output_dir) / "final"
    save_final_model(trainer, final_dir, model_args, data_args, training_args, after)
    trainer.accelerator.wait_for_everyone()
    return {"before": before, "after": after, "train": train_output.metrics, "final_dir": str(final_dir)}


def save_final_model(trainer, final_dir: Path, model_args, data_args, training_args, metrics: dict) -> None:
    """Saves the trained model (LoRA merged) with its processor, remote code, metrics and a model card.

    Call it on every process: under FSDP gathering the full weights is collective; only the main process writes.
    Under FSDP with LoRA the adapter is saved unmerged (merging needs the full weights in one process).
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
    model.save_pretrained(final_dir, state_dict=state_dict)
    if state_dict is not None:
        processor.save_pretrained(final_dir)
    evaluation = {
        "metrics": {key.removeprefix("eval_"): value for key, value in metrics.items() if key.startswith("eval_")},
        "dataset": data_args.eval_table or (f"synthetic (held-out seed {data_args.synthetic_eval_seed})"
                                             if data_args.train_table == "synthetic" else f"{data_args.train_table} (held-out pairs)"),
        "synthetic": data_args.train_table == "synthetic",
        "objective": training_args.objective,
        "base_model": model_args.model_name_or_path,
        "dimension": data_args.dimension,
    }
    (final_dir / "fuscore_eval.json").write_text(json.dumps(evaluation, indent=2))
    write_model_card(final_dir, evaluation)


def plain_model_from_state_dict(model, state_dict: dict):
    """A plain `FuScoreForQuality` holding `state_dict`, for saving a model that FSDP2 has turned into an instance of
    its own subclass (saving that would copy torch's FSDP source files into the folder as "remote code")."""
    model_class = next(cls for cls in type(model).__mro__ if cls.__name__ == "FuScoreForQuality")
    with torch.device("meta"):
        plain = model_class(model.config)
    plain.load_state_dict(state_dict, assign=True)
    if model.config.tie_word_embeddings:
        plain.tie_weights()
    return plain


def format_report(results: dict) -> str:
    names = ("plcc", "plcc_logistic", "srcc", "krcc", "srcc_within", "pairwise_accuracy_within")
    lines = ["", "held-out scenes       " + "  ".join(f"{name:>24}" for name in names)]
    for label, prefix in (("before fine-tuning", "before"), ("after fine-tuning", "eval")):
        values = [results["before" if prefix == "before" else "after"].get(f"{prefix}_{name}", float("nan")) for name in names]
        lines.append(f"{label:<21} " + "  ".join(f"{value:>24.4f}" for value in values))
    lines.append(f"saved: {results['final_dir']}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    results = run(model_args, data_args, training_args)
    if training_args.process_index == 0:
        print(format_report(results))
    return results


if __name__ == "__main__":
    main()
