"""Training is reproducible: the same seed gives the same weights, resuming mid-epoch continues the same batches to the
same end, gradient accumulation is a batch mean, scores do not depend on batching. Plus the multi-GPU configs.

CPU, tiny model (`tiny:qwen2_vl:32x1`), a synthetic table of 12 scenes x 4 images at 56 px: each run takes seconds.
"""

import copy
from contextlib import contextmanager
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import trainer_fuscore
from fuscore.tiny import FAMILIES, build_tiny_model
from fuscore.training.collator import FuScoreCollator
from fuscore.training.config import FuScoreTrainingConfig, ModelArguments
from fuscore.training.loading import load_model
from fuscore_data.synthetic import SyntheticIVIF


datasets.disable_progress_bars()
REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = "tiny:qwen2_vl:32x1"

# 12 scenes x 4 images, P=2 pairs x M=4 images: 6 batches per epoch, so 8 steps cross into the second epoch.
RUN = ["--model_name_or_path", TINY, "--dtype", "float32", "--train_table", "synthetic", "--synthetic_image_size", "56",
       "--synthetic_train_scenes", "12", "--synthetic_eval_scenes", "4", "--synthetic_images_per_scene", "4",
       "--pairs_per_batch", "2", "--images_per_pair", "4", "--max_steps", "8", "--learning_rate", "0.001",
       "--lr_scheduler_type", "linear", "--warmup_steps", "2", "--logging_steps", "1", "--use_cpu", "true",
       "--report_to", "none", "--disable_tqdm", "true", "--per_device_eval_batch_size", "16", "--seed", "5"]
STEPS_PER_EPOCH = 6


@contextmanager
def recorded_batches():
    """Records, for every training micro-batch, its source-pair codes, its labels and its loss."""
    records = []
    original = trainer_fuscore.FuScoreTrainer.compute_loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        groups, mu = inputs["group_ids"].tolist(), inputs["mu"].tolist()
        result = original(self, model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            loss = result[0] if return_outputs else result
            records.append({"groups": groups, "mu": mu, "loss": float(loss.detach())})
        return result

    trainer_fuscore.FuScoreTrainer.compute_loss = compute_loss
    try:
        yield records
    finally:
        trainer_fuscore.FuScoreTrainer.compute_loss = original


def _train(output_dir: Path, *extra: str) -> dict:
    with recorded_batches() as records:
        results = trainer_fuscore.main(RUN + ["--output_dir", str(output_dir), *extra])
    return {"weights": load_file(str(Path(results["final_dir"]) / "model.safetensors")), "batches": list(records),
            "after": results["after"], "train": results["train"]}


def _max_difference(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max((a[key].float() - b[key].float()).abs().max().item() for key in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, with a checkpoint after every step (checkpoint-3 is mid-epoch 1, -7 mid-epoch 2)."""
    output_dir = tmp_path_factory.mktemp("reference")
    run = _train(output_dir, "--save_strategy", "steps", "--save_steps", "1")
    run["output_dir"] = output_dir
    return run


@pytest.fixture(scope="module")
def initial_weights():
    model = load_model(ModelArguments(model_name_or_path=TINY, dtype="float32"))
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------------
# Same seed, same result
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_same_seed_gives_identical_batches_and_weights(reference, initial_weights, tmp_path):
    again = _train(tmp_path / "again", "--save_strategy", "no")  # saving checkpoints must not perturb training
    assert again["batches"] == reference["batches"]
    assert all(torch.equal(again["weights"][key], reference["weights"][key]) for key in reference["weights"])
    assert again["after"]["eval_srcc"] == reference["after"]["eval_srcc"]
    # Not vacuous: training moved the weights, and another seed takes other batches to other weights.
    assert _max_difference(reference["weights"], {k: initial_weights[k] for k in reference["weights"]}) > 1e-3
    other = _train(tmp_path / "other", "--save_strategy", "no", "--seed", "6")
    assert [b["groups"] for b in other["batches"]] != [b["groups"] for b in reference["batches"]]
    assert _max_difference(other["weights"], reference["weights"]) > 1e-4


def test_every_batch_holds_whole_source_pairs_and_each_epoch_every_scene_once(reference):
    batches = reference["batches"]
    assert len(batches) == 8
    for batch in batches:
        codes, counts = np.unique(batch["groups"], return_counts=True)
        assert len(codes) == 2 and (counts == 4).all()
    first_epoch = [code for batch in batches[:STEPS_PER_EPOCH] for code in set(batch["groups"])]
    assert len(first_epoch) == len(set(first_epoch)) == 12
    assert batches[STEPS_PER_EPOCH]["groups"] != batches[0]["groups"], "the second epoch is reshuffled"


# ---------------------------------------------------------------------------------------------------------------------
# Resuming from a mid-epoch checkpoint
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("step", [3, 7])
def test_resuming_mid_epoch_continues_the_same_batches_to_the_same_weights(reference, tmp_path, step):
    checkpoint = reference["output_dir"] / f"checkpoint-{step}"
    assert checkpoint.is_dir()
    resumed = _train(tmp_path / "resumed", "--save_strategy", "no", "--resume_from_checkpoint", str(checkpoint))
    # The remaining batches, in order, with the same labels and (same weights so far) the same losses.
    assert [b["groups"] for b in resumed["batches"]] == [b["groups"] for b in reference["batches"][step:]]
    assert [b["mu"] for b in resumed["batches"]] == [b["mu"] for b in reference["batches"][step:]]
    np.testing.assert_allclose([b["loss"] for b in resumed["batches"]], [b["loss"] for b in reference["batches"][step:]],
                               rtol=1e-5, atol=1e-7)
    # Bit for bit on the CPU: the same weights, hence the same evaluation.
    assert all(torch.equal(resumed["weights"][key], reference["weights"][key]) for key in reference["weights"])
    for name in ("eval_srcc", "eval_plcc", "eval_rmse", "eval_srcc_within"):
        assert resumed["after"][name] == reference["after"][name], name


def test_resuming_from_the_last_step_trains_no_further_step(reference, tmp_path, capsys):
    """A run killed during its final save holds checkpoint-<max_steps>: resuming from it trains nothing more (the
    Trainer alone would train a step past max_steps and write checkpoint-9) and ends with the uninterrupted run's
    model and evaluation, bit for bit."""
    output_dir = tmp_path / "killed_in_final_save"
    resumed = _train(output_dir, "--save_strategy", "steps", "--save_steps", "1", "--resume_from_checkpoint",
                     str(reference["output_dir"] / "checkpoint-8"))
    assert resumed["batches"] == []
    assert not [entry.name for entry in output_dir.iterdir() if entry.name.startswith("checkpoint-")]
    assert "holds the whole run (step 8): no further step is trained" in capsys.readouterr().out
    assert all(torch.equal(resumed["weights"][key], reference["weights"][key]) for key in reference["weights"])
    for name in ("eval_srcc", "eval_plcc", "eval_rmse", "eval_srcc_within"):
        assert resumed["after"][name] == reference["after"][name], name


@pytest.mark.parametrize("change, refused", [
    (["--learning_rate", "0.01"], "--learning_rate 0.001 -> 0.01"),
    (["--pairs_per_batch", "3"], "--pairs_per_batch 2 -> 3"),
    (["--seed", "6"], "--seed 5 -> 6"),
    (["--max_steps", "2"], "has already trained 4 steps"),
])
def test_a_resume_with_settings_that_change_the_trajectory_is_refused(reference, tmp_path, change, refused):
    with pytest.raises(ValueError, match="Cannot resume|already trained") as error:
        trainer_fuscore.main(RUN + ["--output_dir", str(tmp_path / "out"), "--resume_from_checkpoint",
                                    str(reference["output_dir"] / "checkpoint-4"), *change])
    assert refused in str(error.value)
    assert not (tmp_path / "out" / "final").exists()


@pytest.mark.slow
def test_a_resume_applies_and_names_the_settings_that_keep_the_trajectory(reference, tmp_path, capsys):
    resumed = _train(tmp_path / "out", "--save_strategy", "no", "--logging_steps", "2", "--resume_from_checkpoint",
                     str(reference["output_dir"] / "checkpoint-4"))
    out = capsys.readouterr().out
    assert "resume: --logging_steps 1 -> 2 (applied" in out and "--save_strategy \"steps\" -> \"no\" (applied" in out
    assert all(torch.equal(resumed["weights"][key], reference["weights"][key]) for key in reference["weights"])
    longer = _train(tmp_path / "longer", "--save_strategy", "no", "--max_steps", "10", "--resume_from_checkpoint",
                    str(reference["output_dir"] / "checkpoint-4"))
    assert len(longer["batches"]) == 6
    assert "resume: --max_steps 8 -> 10 (applied: training continues" in capsys.readouterr().out


@pytest.mark.slow
def test_resuming_with_the_last_checkpoint_keyword(reference, tmp_path):
    import shutil

    output_dir = tmp_path / "interrupted"  # a run stopped after step 5 holds that step's checkpoint
    shutil.copytree(reference["output_dir"] / "checkpoint-5", output_dir / "checkpoint-5")
    resumed = _train(output_dir, "--save_strategy", "no", "--resume_from_checkpoint", "last")
    assert [b["groups"] for b in resumed["batches"]] == [b["groups"] for b in reference["batches"][5:]]
    assert all(torch.equal(resumed["weights"][key], reference["weights"][key]) for key in reference["weights"])


# ---------------------------------------------------------------------------------------------------------------------
# Gradient accumulation
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_scenes():
    """Two source pairs x 4 images: one P=2 x M=4 batch, or two P=2 x M=2 half batches covering the same rows."""
    return SyntheticIVIF(image_size=56, seed=21).table(num_scenes=2, images_per_scene=4)


class _InputRecordingTrainer(trainer_fuscore.FuScoreTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.seen.append({key: value.detach().clone() for key, value in inputs.items()})
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def _one_sgd_update(table, tmp_path, learning_rate=1.0, **overrides):
    model = load_model(ModelArguments(model_name_or_path=TINY, dtype="float32"))
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = FuScoreTrainingConfig(
        output_dir=str(tmp_path), max_steps=1, optim="sgd", learning_rate=learning_rate, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0, use_cpu=True, report_to="none", disable_tqdm=True,
        save_strategy="no", logging_steps=1, seed=0, **overrides)
    collator = FuScoreCollator(model.processor, model.config.level_values, args.objective, args.sigma_min)
    trainer = _InputRecordingTrainer(model=model, args=args, train_dataset=table, data_collator=collator)
    trainer.train()
    update = {name: p.detach() - initial[name] for name, p in model.named_parameters()}
    return update, trainer


def _assert_same_update(a: dict, b: dict):
    scale = max(t.abs().max().item() for t in a.values())
    assert scale > 1e-4, "the update must be large enough to compare"
    worst = max((a[name] - b[name]).abs().max().item() for name in a)
    assert worst <= 1e-5 * scale + 1e-8, f"updates differ by {worst:.3g} (largest update {scale:.3g})"


@pytest.mark.slow
def test_accumulating_two_half_batches_equals_one_full_batch(two_scenes, tmp_path):
    # The distributional term is a mean over images, so two halves of 4 average to the batch of 8 exactly; the
    # Thurstone terms look at pairs of images, which two halves cannot see across, so they are off here.
    kl_only = dict(lambda_within=0.0, lambda_cross=0.0)
    full, full_trainer = _one_sgd_update(two_scenes, tmp_path / "full", pairs_per_batch=2, images_per_pair=4, **kl_only)
    halves, half_trainer = _one_sgd_update(two_scenes, tmp_path / "halves", pairs_per_batch=2, images_per_pair=2,
                                           gradient_accumulation_steps=2, **kl_only)
    assert [len(batch["mu"]) for batch in full_trainer.seen] == [8]
    assert [len(batch["mu"]) for batch in half_trainer.seen] == [4, 4]
    assert sorted(torch.cat([b["mu"] for b in half_trainer.seen]).tolist()) == sorted(full_trainer.seen[0]["mu"].tolist())
    _assert_same_update(full, halves)


def test_accumulation_update_is_the_mean_of_the_micro_batch_gradients(two_scenes, tmp_path):
    """With the full tripartite objective: k accumulated micro-batches step along the gradient of their mean loss."""
    accumulated, trainer = _one_sgd_update(two_scenes, tmp_path / "acc", pairs_per_batch=2, images_per_pair=2,
                                           gradient_accumulation_steps=2)
    assert len(trainer.seen) == 2
    reference = load_model(ModelArguments(model_name_or_path=TINY, dtype="float32"))
    reference.train()
    losses = []
    for batch in trainer.seen:
        loss = trainer_fuscore.FuScoreTrainer.compute_loss(trainer, reference, copy.copy(batch))
        losses.append(loss)
    terms = trainer._metrics["train"]  # holds what these compute_loss calls recorded
    assert sum(terms["loss_within"]) > 0 and sum(terms["loss_cross"]) > 0, "the pairwise terms must be active"
    (sum(losses) / len(losses)).backward()
    expected = {name: -1.0 * p.grad for name, p in reference.named_parameters() if p.grad is not None}
    assert set(expected) == {name for name, value in accumulated.items() if value.abs().max() > 0}
    _assert_same_update({name: accumulated[name] for name in expected}, expected)


# ---------------------------------------------------------------------------------------------------------------------
# Scores do not depend on the batch
# ---------------------------------------------------------------------------------------------------------------------


def test_trained_model_scores_do_not_depend_on_batch_size_or_order(reference, random_images, tmp_path):
    from modeling_fuscore import FuScoreForQuality

    final = Path(reference["output_dir"]) / "final"
    model = FuScoreForQuality.from_pretrained(str(final))
    one = np.array(model.score(random_images, batch_size=1))
    assert np.ptp(one) > 1e-4, "image-dependent scores, or the comparison is vacuous"
    for batch_size in (3, 8):
        np.testing.assert_allclose(model.score(random_images, batch_size=batch_size), one, atol=1e-5, rtol=0)
    order = np.random.default_rng(0).permutation(len(random_images))
    shuffled = np.array(model.score([random_images[i] for i in order], batch_size=4))
    np.testing.assert_allclose(shuffled, one[order], atol=1e-5, rtol=0)

    # The trainer's evaluation path (the Trainer's loop: collator, right padding, gather) agrees with itself across
    # batch sizes and order, and with the model's own scoring.
    table = SyntheticIVIF(image_size=56, seed=1_000_003).table(4, 4)
    collator = FuScoreCollator(model.get_processor(), model.config.level_values)

    def predicted(rows, batch_size):
        args = FuScoreTrainingConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                     per_device_eval_batch_size=batch_size)
        trainer = trainer_fuscore.FuScoreTrainer(model=model, args=args, data_collator=collator)
        return trainer.predict(rows).predictions

    by_one = predicted(table, 1)
    np.testing.assert_allclose(predicted(table, 16), by_one, atol=1e-5, rtol=0)
    reverse = predicted(table.select(range(len(table) - 1, -1, -1)), 5)
    np.testing.assert_allclose(reverse[::-1], by_one, atol=1e-5, rtol=0)
    np.testing.assert_allclose(by_one, model.score(list(table["fused"]), batch_size=4), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Several GPUs: sharding metadata and the shipped configs
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_fsdp_auto_wrap_finds_the_models_layer_classes(family):
    """FSDP's transformer auto-wrap falls back to `_no_split_modules`; every name there must exist in the model."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    model = build_tiny_model(family, num_layers=1, vision_depth=1)
    present = {type(module).__name__ for module in model.modules()}
    assert model._no_split_modules and set(model._no_split_modules) <= present, sorted(model._no_split_modules)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    assert sum(bool(policy(module)) for module in model.modules()) == 2  # one decoder layer, one vision block


def test_accelerate_configs_load_and_name_real_layer_classes():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType
    from accelerate.utils.fsdp_utils import get_module_class_from_name

    ddp = load_config_from_file(str(REPO_ROOT / "configs" / "accelerate_ddp.yaml"))
    assert ddp.distributed_type == DistributedType.MULTI_GPU and ddp.num_machines == 1
    fsdp = load_config_from_file(str(REPO_ROOT / "configs" / "accelerate_fsdp.yaml"))
    assert fsdp.distributed_type == DistributedType.FSDP
    assert fsdp.fsdp_config["fsdp_version"] == 2 and fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    model = build_tiny_model("qwen3_vl", num_layers=1, vision_depth=1)  # the recipe's family
    for name in fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(","):
        assert get_module_class_from_name(model, name) is not None, name


@pytest.mark.parametrize("name", ["qwen3vl_8b_lora.yaml", "qwen3vl_8b_lora_multi_gpu.yaml"])
def test_recipe_configs_parse_into_the_trainer_arguments(name):
    # bf16 / tf32 need a GPU, which the test machine lacks: override them exactly as a CPU user would.
    model_args, data_args, training_args = trainer_fuscore.parse_arguments(
        ["--config", str(REPO_ROOT / "configs" / name), "--use_cpu", "true", "--tf32", "false"])
    assert model_args.model_name_or_path == "Qwen/Qwen3-VL-8B-Instruct" and model_args.dtype == "bfloat16"
    assert model_args.use_lora and model_args.lora_r == 64
    assert data_args.train_table == "path/to/your_table"
    assert training_args.bf16 and training_args.gradient_checkpointing
    assert training_args.objective == "fuscore"
    assert (training_args.pairs_per_batch, training_args.images_per_pair) == (4, 4)
    if name == "qwen3vl_8b_lora.yaml":  # the setting measured best within the plain loop's memory (RESULTS_speed.md)
        assert training_args.activation_memory_budget == 0.2 and training_args.compile_blocks
        assert training_args.uncheckpointed_layers == 0 and training_args.checkpointing_policy is None
    single = trainer_fuscore.parse_arguments(["--config", str(REPO_ROOT / "configs" / "qwen3vl_8b_lora.yaml"),
                                              "--use_cpu", "true", "--tf32", "false"])[2]
    # The multi-GPU recipe on 4 processes keeps the one-GPU recipe's global batch.
    processes = 1 if name == "qwen3vl_8b_lora.yaml" else 4
    global_batch = training_args.pairs_per_batch * training_args.images_per_pair * processes * training_args.gradient_accumulation_steps
    assert global_batch == single.pairs_per_batch * single.images_per_pair * single.gradient_accumulation_steps == 64


@pytest.mark.slow
def test_uncheckpointed_layers_reach_the_model_when_training_starts(tmp_path, monkeypatch):
    """--uncheckpointed_layers is applied when the Trainer switches checkpointing on; bad values fail before any work."""
    seen = []
    original = trainer_fuscore.FuScoreTrainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:  # the evaluations go through compute_loss too
            seen.append([layer.gradient_checkpointing for layer in model.model.language_model.layers])
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trainer_fuscore.FuScoreTrainer, "compute_loss", compute_loss)
    three_layers = ["--model_name_or_path", "tiny:qwen2_vl:32x3", "--max_steps", "1", "--eval_strategy", "no",
                    "--save_strategy", "no", "--gradient_checkpointing", "true"]
    trainer_fuscore.main(RUN + three_layers + ["--uncheckpointed_layers", "1", "--output_dir", str(tmp_path / "run")])
    assert seen and seen[0] == [True, True, False]

    with pytest.raises(ValueError, match="--uncheckpointed_layers.*uncheckpointed_layers=4: the language model has 3 decoder layers"):
        trainer_fuscore.main(RUN + three_layers + ["--uncheckpointed_layers", "4", "--output_dir", str(tmp_path / "too_many")])
    with pytest.raises(ValueError, match="--uncheckpointed_layers needs --gradient_checkpointing"):
        trainer_fuscore.parse_arguments(RUN + ["--uncheckpointed_layers", "1", "--output_dir", str(tmp_path / "no_ckpt")])
    assert not (tmp_path / "too_many" / "final").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Named errors before the work
# ---------------------------------------------------------------------------------------------------------------------


def test_bad_table_arguments_and_output_dir_are_named(tmp_path):
    from fuscore.training.config import DataArguments
    from fuscore.training.loading import check_output_dir, load_tables, parse_score_range
    from fuscore_data.tables import save_arrow

    table = SyntheticIVIF(image_size=32, seed=1).table(num_scenes=4, images_per_scene=2)
    folder = save_arrow(table, tmp_path / "table")
    with pytest.raises(ValueError, match="--eval_fraction 0.0: .* has no test split .* between 0 and 1"):
        load_tables(DataArguments(train_table=str(folder), eval_fraction=0.0), seed=0)
    for text in ("a,b", "5,1", "1", "1,2,3"):
        with pytest.raises(ValueError, match=f"--score_range '{text}': give the table's score scale as two numbers"):
            parse_score_range(text)
    assert parse_score_range("1, 5") == (1.0, 5.0) and parse_score_range(None) is None
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("")
    with pytest.raises(ValueError, match="--output_dir .*not_a_folder is a file"):
        check_output_dir(a_file)
    with pytest.raises(ValueError, match="is a file"):  # the whole run: refused before the model loads
        trainer_fuscore.main(RUN + ["--output_dir", str(a_file)])
