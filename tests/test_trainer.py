"""trainer_fuscore.py and fuscore.training end to end on CPU with a tiny model: arguments, collator labels, logging,
evaluation through the Trainer's loop, saving."""

import copy
import itertools
import json
import math
import shutil

import numpy as np
import pytest
import torch
from datasets import concatenate_datasets

import trainer_fuscore
from fuscore.objectives import fuscore_soft_label
from fuscore.training.collator import FuScoreCollator, weightless_copy
from fuscore.training.config import FuScoreTrainingConfig
from fuscore.training.loading import load_model, load_tables, plain_model_from_state_dict
from fuscore.tiny import build_tiny_model
from fuscore_data.synthetic import SyntheticIVIF
from conftest import MODEL_CODE_FILES, load_saved


FAST = ["--model_name_or_path", "tiny:qwen2_vl:32x1", "--train_table", "synthetic", "--synthetic_image_size", "56",
        "--synthetic_train_scenes", "6", "--synthetic_eval_scenes", "4", "--synthetic_images_per_scene", "4",
        "--pairs_per_batch", "2", "--images_per_pair", "2", "--max_steps", "3", "--logging_steps", "1",
        "--save_strategy", "no", "--use_cpu", "true", "--disable_tqdm", "true", "--per_device_eval_batch_size", "8"]


def test_yaml_config_with_command_line_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_name_or_path: tiny:qwen3_vl\nobjective: deqa\nmax_steps: 7\nlambda_cross: 0.25\noutput_dir: x\n"
                      "gradient_checkpointing_kwargs: {\"use_reentrant\": false}\nlearning_rate: 1.0e-4\n")
    model_args, data_args, training_args = trainer_fuscore.parse_arguments(["--config", str(config), "--max_steps", "9"])
    assert model_args.model_name_or_path == "tiny:qwen3_vl"
    assert training_args.objective == "deqa" and training_args.lambda_cross == 0.25
    assert training_args.max_steps == 9, "arguments after --config override the file"
    assert training_args.gradient_checkpointing_kwargs == {"use_reentrant": False} and training_args.learning_rate == 1e-4
    config.write_text("objective: ranking\noutput_dir: x\n")
    with pytest.raises(ValueError, match="Unknown objective 'ranking': choose one of fuscore, qalign, deqa"):
        trainer_fuscore.parse_arguments(["--config", str(config)])
    with pytest.raises(SystemExit, match="no such file"):
        trainer_fuscore.parse_arguments(["--config", str(tmp_path / "missing.yaml")])


def test_no_arguments_is_the_embedded_demo():
    model_args, data_args, training_args = trainer_fuscore.parse_arguments([])
    assert model_args.model_name_or_path.endswith("fuscore/demo_model")
    assert data_args.train_table == "synthetic" and training_args.objective == "fuscore"


def test_collator_labels_follow_the_model_level_order(tiny_model):
    model = tiny_model
    rows = SyntheticIVIF(image_size=56, seed=3).group(0, 3)
    collator = FuScoreCollator(model.processor, model.config.level_values, "fuscore")
    batch = collator(rows)
    values = torch.tensor(model.config.level_values)  # excellent..bad = 5..1
    torch.testing.assert_close(batch["soft_label"] @ values, batch["mu"], atol=1e-3, rtol=0)
    expected, _ = fuscore_soft_label(rows[0]["mos"], [rows[0][k] for k in ("thermal_retention", "texture_preservation", "artifacts", "sharpness")],
                                     rows[0]["mos_std"], level_values=model.config.level_values)
    np.testing.assert_allclose(batch["soft_label"][0].numpy(), expected, atol=1e-6)
    assert batch["group_ids"].unique().numel() == 1, "one scene: one source-pair code"
    assert batch["input_ids"].shape[0] == 3


def test_pair_target_raters_sets_the_thurstone_spread_to_the_mos_standard_error(tiny_model):
    """Off by default (sigma is the soft label's spread); with `pair_target_raters=n` sigma is mos_std / sqrt(n) and
    the soft label is unchanged; a row without mos_std is named; the config refuses it for a peer's objective."""
    model = tiny_model
    rows = SyntheticIVIF(image_size=56, seed=3).group(0, 3)
    default = FuScoreCollator(model.processor, model.config.level_values)(rows)
    sem = FuScoreCollator(model.processor, model.config.level_values, pair_target_raters=24)(rows)
    mos_std = torch.tensor([row["mos_std"] for row in rows])
    torch.testing.assert_close(sem["sigma"], mos_std / math.sqrt(24))
    assert bool((default["sigma"] > sem["sigma"]).all())  # the label's spread includes mos_std itself
    torch.testing.assert_close(sem["soft_label"], default["soft_label"])
    rows[1]["mos_std"] = None
    with pytest.raises(ValueError, match="needs every row's mos_std.*method"):
        FuScoreCollator(model.processor, model.config.level_values, pair_target_raters=24)(rows)
    with pytest.raises(ValueError, match="num_raters"):
        FuScoreCollator(model.processor, model.config.level_values, pair_target_raters=0)
    with pytest.raises(ValueError, match="deqa"):
        FuScoreTrainingConfig(output_dir="unused", objective="deqa", pair_target_raters=24)
    assert FuScoreTrainingConfig(output_dir="unused").pair_target_raters is None


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_collator_computes_the_positions_the_model_would(family):
    """With a weightless copy of the model the collator adds the RoPE ids and the vision tower's positions on the
    CPU: the forward pass then gives exactly the outputs it gives when it computes them itself. The collator stays
    small enough to hand to DataLoader worker processes (no weights)."""
    import pickle

    # A model that has scored: its vision config holds the packed attention, which its weightless copy must not take
    # for a flash-attention kernel to import.
    model = build_tiny_model(family, seed=2)
    rows = SyntheticIVIF(image_size=56, seed=3).group(0, 3)
    model.score(rows[0]["fused"])
    rows[1]["fused"] = np.asarray(rows[1]["fused"])[:40]  # another size: padding and unequal vision segments
    plain = FuScoreCollator(model.processor, model.config.level_values)(rows)
    position_model = weightless_copy(model)
    assert all(parameter.device.type == "meta" for parameter in position_model.parameters())
    collator = FuScoreCollator(model.processor, model.config.level_values, position_model=position_model)
    batch = collator(rows)
    assert {"position_ids", "vision_inputs"} <= set(batch) and not {"position_ids", "vision_inputs"} & set(plain)
    inputs = lambda b: {k: v for k, v in b.items() if k not in FuScoreCollator.label_keys}  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs(batch)).level_logits, model(**inputs(plain)).level_logits, rtol=0, atol=0)
    assert len(pickle.dumps(collator)) < len(pickle.dumps(model)) / 4
    # The Trainer's loaders move each batch with accelerate's `send_to_device`: the nested positions must move too.
    from accelerate.utils import send_to_device

    moved = send_to_device(batch, "meta")
    assert all(value.device.type == "meta" for value in [*moved.values(), *moved["vision_inputs"].values()]
               if torch.is_tensor(value))


@pytest.mark.parametrize("objective", ["fuscore", "scalar"])
def test_training_run_logs_every_term_and_saves_a_loadable_folder(tmp_path, objective, capsys):
    results = trainer_fuscore.main(FAST + ["--output_dir", str(tmp_path / "run"), "--objective", objective])
    final = tmp_path / "run" / "final"
    evaluation = json.loads((final / "fuscore_eval.json").read_text())
    assert evaluation["synthetic"] is True and evaluation["objective"] == objective
    assert "srcc" in evaluation["metrics"] and np.isfinite(evaluation["metrics"]["srcc"])
    card = (final / "README.md").read_text()
    assert "not human ratings" in card and f"value: {round(evaluation['metrics']['srcc'], 4)}" in card
    assert (final / "model.safetensors").is_file()
    assert results["after"]["eval_n"] == 16
    # Evaluation through the Trainer's loop logs the eval loss and every term of the objective's loss; with two full
    # evaluation batches of 8 the loss is the terms' weighted sum.
    after, before = results["after"], results["before"]
    if objective == "fuscore":
        assert after["eval_loss"] == pytest.approx(after["eval_loss_dist"] + after["eval_loss_within"]
                                                   + 0.5 * after["eval_loss_cross"], rel=1e-5)
        assert {"before_loss", "before_loss_dist", "before_loss_within", "before_loss_cross"} <= set(before)
    else:
        assert after["eval_loss"] == pytest.approx(after["eval_loss_mse"], rel=1e-6)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["after"] == after
    # The header names the config the run stacked on (none: it names a model) and the overrides.
    printed = capsys.readouterr().out
    assert "config: none: the library's defaults" in printed
    assert "overrides: --model_name_or_path tiny:qwen2_vl:32x1 --train_table synthetic" in printed


def test_a_run_naming_a_model_or_table_starts_from_the_library_defaults_not_the_demo(tmp_path, monkeypatch, capsys):
    """Issue 25: `--model_name_or_path X` (or `--train_table T`) without --config must not train with the CPU demo's
    settings (use_cpu, float32, 80 steps, no checkpoints, outputs/demo): the TrainingArguments' defaults apply, bf16
    where the device has it, and the output folder is the run's own. The printed header says so."""
    import yaml
    from transformers import TrainingArguments

    library = TrainingArguments(output_dir=str(tmp_path))
    for argv in (["--model_name_or_path", "tiny:qwen2_vl", "--max_steps", "2"], ["--train_table=path/to/my_table"],
                 ["--model-name-or-path", "tiny:qwen2_vl"]):
        model_args, data_args, training_args = trainer_fuscore.parse_arguments(argv)
        assert not training_args.use_cpu and model_args.dtype == "auto"
        assert training_args.save_strategy == library.save_strategy == "steps" and training_args.save_steps == library.save_steps
        assert training_args.learning_rate == library.learning_rate and training_args.seed == library.seed
        assert training_args.output_dir not in (trainer_fuscore.DEMO_OUTPUT_DIR, library.output_dir)
        assert training_args.output_dir.startswith("outputs/")
    assert trainer_fuscore.parse_arguments(["--train_table", "path/to/my_table"])[2].output_dir == "outputs/demo_model-my_table"
    assert trainer_fuscore.parse_arguments(["--train_table", "t", "--output_dir", "mine"])[2].output_dir == "mine"
    # bf16 where the device has it (and not when the user chose a precision or the CPU).
    monkeypatch.setattr(trainer_fuscore, "bf16_available", lambda: True)
    assert trainer_fuscore.suited_defaults(None, ["--train_table", "t"])[:2] == ["--bf16", "true"]
    assert "--bf16" not in trainer_fuscore.suited_defaults(None, ["--train_table", "t", "--fp16", "true"])
    assert "--bf16" not in trainer_fuscore.suited_defaults(None, ["--train_table", "t", "--use_cpu", "true"])
    monkeypatch.setattr(trainer_fuscore, "bf16_available", lambda: False)
    assert "--bf16" not in trainer_fuscore.suited_defaults(None, ["--train_table", "t"])

    # The demo with a change stays one flag away; with one's own table it never writes to the demo's folder.
    demo = yaml.safe_load(trainer_fuscore.DEMO_CONFIG.read_text())
    _, _, training_args = trainer_fuscore.parse_arguments(["--config", str(trainer_fuscore.DEMO_CONFIG), "--max_steps", "10"])
    assert training_args.max_steps == 10 and training_args.use_cpu and training_args.output_dir == demo["output_dir"]
    _, _, training_args = trainer_fuscore.parse_arguments(["--config", str(trainer_fuscore.DEMO_CONFIG),
                                                           "--train_table", "my/table", "--max_steps", "10"])
    assert training_args.use_cpu and training_args.output_dir == "outputs/demo_model-table"
    _, _, training_args = trainer_fuscore.parse_arguments(["--train_table", "my/table", "--max_steps", "10"])
    assert training_args.output_dir != demo["output_dir"]

    monkeypatch.setattr(trainer_fuscore, "run", lambda *args: {})
    monkeypatch.setattr(trainer_fuscore, "format_report", lambda results: "")
    trainer_fuscore.main(["--model_name_or_path", "tiny:qwen2_vl", "--max_steps", "2", "--output_dir", "out"])
    printed = capsys.readouterr().out
    assert "config: none: the library's defaults" in printed and "embedded demo" not in printed
    trainer_fuscore.main([])
    assert f"config: {trainer_fuscore.DEMO_CONFIG} (the embedded demo)" in capsys.readouterr().out


def test_arguments_without_config_override_the_demo(tmp_path):
    """Issue 15 item 9: one flag changes one thing; the rest is the demo's config, not the dataclass defaults
    (arguments that name neither a model nor a table)."""
    import yaml

    demo = yaml.safe_load(trainer_fuscore.DEMO_CONFIG.read_text())
    model_args, data_args, training_args = trainer_fuscore.parse_arguments(["--output_dir", str(tmp_path / "out")])
    assert training_args.output_dir == str(tmp_path / "out")
    assert (data_args.synthetic_eval_scenes, data_args.synthetic_train_scenes) == (demo["synthetic_eval_scenes"],
                                                                                  demo["synthetic_train_scenes"]) == (64, 96)
    assert training_args.seed == demo["seed"] and training_args.max_steps == demo["max_steps"]
    assert training_args.learning_rate == demo["learning_rate"] and training_args.use_cpu
    # A named config replaces the demo's entirely.
    config = tmp_path / "mine.yaml"
    config.write_text("output_dir: elsewhere\nmax_steps: 5\n")
    model_args, data_args, training_args = trainer_fuscore.parse_arguments(["--config", str(config), "--seed", "3"])
    assert (training_args.max_steps, training_args.seed, data_args.synthetic_eval_scenes) == (5, 3, 24)


def test_help_starts_with_what_the_script_does(capsys):
    with pytest.raises(SystemExit) as exit_info:
        trainer_fuscore.parse_arguments(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Train FuScore")
    assert "With no arguments this runs the embedded demo" in printed.split("options:")[0]
    assert "--objective" in printed and "fuscore: FuScore's tripartite objective" in " ".join(printed.split())
    from trl import TrlParser

    assert trainer_fuscore.TrlParser is TrlParser, "the arguments go through trl's parser"


def test_training_logs_each_loss_term(tmp_path):
    model_args, data_args, training_args = trainer_fuscore.parse_arguments(FAST + ["--output_dir", str(tmp_path)])
    model = load_model(model_args)
    train, evaluation = load_tables(data_args, seed=0)
    collator = FuScoreCollator(model.get_processor(), model.config.level_values)
    trainer = trainer_fuscore.FuScoreTrainer(model=model, args=training_args, train_dataset=train, eval_dataset=evaluation,
                                             data_collator=collator)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all({"loss_dist", "loss_within", "loss_cross"} <= set(entry) for entry in logged)
    for entry in logged:
        assert entry["loss"] == pytest.approx(entry["loss_dist"] + entry["loss_within"] + 0.5 * entry["loss_cross"], rel=1e-4)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "training must change the weights"


def test_training_on_a_saved_rating_table_validates_and_normalises(tmp_path):
    """A user's table (scores out of 10) in the imagefolder layout: held-out pairs split off, scores mapped to [1, 5]."""
    from fuscore_data.tables import save_imagefolder

    table = SyntheticIVIF(image_size=56, seed=11).table(num_scenes=6, images_per_scene=3)
    table = table.map(lambda row: {"mos": 2.5 * (row["mos"] - 1), "mos_std": 2.5 * row["mos_std"],
                                   **{k: 2.5 * (row[k] - 1) for k in ("thermal_retention", "texture_preservation", "artifacts", "sharpness")}})
    folder = tmp_path / "table"
    save_imagefolder(table, folder)
    argv = FAST + ["--train_table", str(folder), "--score_range", "0,10", "--eval_fraction", "0.34",
                   "--output_dir", str(tmp_path / "run")]
    model_args, data_args, training_args = trainer_fuscore.parse_arguments(argv)
    train, evaluation = load_tables(data_args, seed=0)
    assert set(train["pair_id"]).isdisjoint(evaluation["pair_id"])
    assert len(set(evaluation["pair_id"])) == 2
    assert min(train["mos"]) >= 1 and max(train["mos"]) <= 5

    bad = table.map(lambda row, index: {"mos": float("nan") if index == 4 else row["mos"]}, with_indices=True)
    bad_folder = tmp_path / "bad"
    bad.save_to_disk(str(bad_folder))
    model_args, data_args, training_args = trainer_fuscore.parse_arguments(argv[:-2] + ["--train_table", str(bad_folder), "--output_dir", str(tmp_path / "run2")])
    with pytest.raises(ValueError, match="row 4"):
        load_tables(data_args, seed=0)


def test_plain_copy_from_a_gathered_state_dict_saves_like_the_model(tmp_path, random_images):
    """The FSDP save path: a gathered full state dict goes into a plain model, which saves and scores the same."""
    # A model that has scored (packed vision attention on its config), as the trained model has after its evaluation.
    model = build_tiny_model("qwen3_vl", seed=8)
    model.score(random_images[0])
    state_dict = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    plain = plain_model_from_state_dict(model, state_dict)
    assert type(plain).__name__ == "FuScoreForQuality" and plain is not model
    plain.processor = model.processor
    plain.save_pretrained(tmp_path / "final")
    assert sorted(p.name for p in (tmp_path / "final").glob("*.py")) == sorted(MODEL_CODE_FILES)
    model.save_pretrained(tmp_path / "model")
    np.testing.assert_allclose(load_saved(tmp_path / "final").score(random_images[:3]),
                               load_saved(tmp_path / "model").score(random_images[:3]), atol=1e-6)


def test_collator_fills_a_missing_overall_score_with_the_sub_score_mean(tiny_model):
    model = tiny_model
    rows = SyntheticIVIF(image_size=56, seed=4).group(0, 2)
    rows[0]["mos"] = None
    subs = [rows[0][k] for k in ("thermal_retention", "texture_preservation", "artifacts", "sharpness")]
    batch = FuScoreCollator(model.processor, model.config.level_values)(rows)
    assert batch["mu"][0].item() == pytest.approx(float(np.mean(subs)), abs=1e-5)
    assert batch["mu"][1].item() == pytest.approx(rows[1]["mos"], abs=1e-5)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.slow
def test_compiled_blocks_train_like_eager_with_lora_and_checkpointing(tmp_path):
    """--compile_blocks (the GPU recipe's setting) with LoRA and activation checkpointing trains the same model."""
    common = FAST + ["--use_lora", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0",
                     "--gradient_checkpointing", "true", "--gradient_checkpointing_kwargs", '{"use_reentrant": false}']
    eager = trainer_fuscore.main(common + ["--output_dir", str(tmp_path / "eager")])
    torch._dynamo.reset()
    compiled = trainer_fuscore.main(common + ["--output_dir", str(tmp_path / "compiled"), "--compile_blocks", "true"])
    torch._dynamo.reset()
    assert compiled["train"]["train_loss"] == pytest.approx(eager["train"]["train_loss"], rel=1e-4)
    assert compiled["after"]["eval_srcc"] == pytest.approx(eager["after"]["eval_srcc"], abs=1e-4)
    assert compiled["after"]["eval_plcc"] == pytest.approx(eager["after"]["eval_plcc"], abs=1e-4)
    assert eager["after"]["eval_plcc"] != pytest.approx(eager["before"]["before_plcc"], abs=1e-6), "training must change the model"


def test_synthetic_stream_gives_whole_scenes_sharded_by_accelerate(tiny_model, tmp_path):
    """The endless stream: batch k = scenes kP..kP+P-1, each scene's M images; under several processes accelerate's
    BatchSamplerShard hands each process whole batches (the same mechanism as the table path); a run trains on it."""
    from accelerate.data_loader import BatchSamplerShard

    from fuscore.training.collator import SyntheticScenes
    from fuscore.training.sampling import EndlessBatchSampler

    scenes = SyntheticScenes(SyntheticIVIF(image_size=56, seed=3), images_per_pair=3)
    sampler = EndlessBatchSampler(pairs_per_batch=2)
    first = list(itertools.islice(iter(sampler), 4))
    assert first == [[0, 1], [2, 3], [4, 5], [6, 7]]
    shards = [list(itertools.islice(iter(BatchSamplerShard(sampler, num_processes=2, process_index=r)), 2))
              for r in range(2)]
    assert shards == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]
    rows = scenes[5]
    assert len(rows) == 3 and {row["pair_id"] for row in rows} == {SyntheticIVIF(56, seed=3).group(5, 3)[0]["pair_id"]}
    model = tiny_model
    batch = FuScoreCollator(model.processor, model.config.level_values)([scenes[0], scenes[1]])
    assert batch["input_ids"].shape[0] == 6 and batch["group_ids"].unique().numel() == 2

    seen = []
    original = trainer_fuscore.FuScoreTrainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            seen.append(inputs["group_ids"].tolist())
        return original(self, model, inputs, *args, **kwargs)

    trainer_fuscore.FuScoreTrainer.compute_loss = compute_loss
    try:
        trainer_fuscore.main(FAST + ["--output_dir", str(tmp_path / "run"), "--synthetic_stream", "true"])
    finally:
        trainer_fuscore.FuScoreTrainer.compute_loss = original
    assert len(seen) == 3 and all(len(set(groups)) == 2 and len(groups) == 4 for groups in seen)
    assert len({code for groups in seen for code in groups}) == 6, "fresh scenes every step"


def test_an_objective_that_wants_random_batches_gets_them(tiny_model, monkeypatch, tmp_path):
    """The record's `batches` decides the sampler: "random" draws plain random batches of P x M images."""
    import dataclasses

    from fuscore.objectives import OBJECTIVE_REGISTRY
    from fuscore.training.config import FuScoreTrainingConfig

    monkeypatch.setitem(OBJECTIVE_REGISTRY, "fuscore_random",
                        dataclasses.replace(OBJECTIVE_REGISTRY["fuscore"], name="fuscore_random", batches="random"))
    table = SyntheticIVIF(image_size=56, seed=2).table(num_scenes=6, images_per_scene=4)
    model = copy.deepcopy(tiny_model)  # the Trainer prepares the model it is given
    batches = {}
    for objective in ("fuscore", "fuscore_random"):
        args = FuScoreTrainingConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", objective=objective,
                                     pairs_per_batch=2, images_per_pair=4, seed=0)
        trainer = trainer_fuscore.FuScoreTrainer(model=model, args=args, train_dataset=table,
                                                 data_collator=FuScoreCollator(model.processor, model.config.level_values))
        batches[objective] = [batch["group_ids"].tolist() for batch in trainer.get_train_dataloader()]
    assert all(sorted(np.unique(groups, return_counts=True)[1]) == [4, 4] for groups in batches["fuscore"])
    assert len(batches["fuscore_random"]) == 3 and all(len(groups) == 8 for groups in batches["fuscore_random"])
    assert any(sorted(np.unique(groups, return_counts=True)[1]) != [4, 4] for groups in batches["fuscore_random"])


def test_a_table_of_single_image_pairs_fails_at_the_start_naming_it(tmp_path, monkeypatch):
    """Issue 15 item 8: every source pair with one image cannot give pair-aware batches: a clear error before any
    evaluation, not the metric's "At least 3 items are needed"."""
    from fuscore_data.tables import save_imagefolder

    monkeypatch.setattr(trainer_fuscore.FuScoreTrainer, "evaluate",
                        lambda *args, **kwargs: pytest.fail("evaluated before checking the table"))
    folder = tmp_path / "singles"
    save_imagefolder(SyntheticIVIF(image_size=56, seed=5).table(num_scenes=10, images_per_scene=1), folder)
    with pytest.raises(ValueError, match=rf"the training table {folder}: 0 of its \d+ source pairs have two or more "
                                         r"fused images.*Every source pair has a single image"):
        trainer_fuscore.main(FAST + ["--train_table", str(folder), "--output_dir", str(tmp_path / "run")])
    # A held-out part too small for the correlations is named as well.
    folder = tmp_path / "small"
    save_imagefolder(SyntheticIVIF(image_size=56, seed=5).table(num_scenes=6, images_per_scene=2), folder)
    with pytest.raises(ValueError, match=rf"the held-out part of the training table {folder} has 2 fused image"):
        trainer_fuscore.main(FAST + ["--train_table", str(folder), "--eval_fraction", "0.17",
                                     "--output_dir", str(tmp_path / "run2")])
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run2" / "final").exists()


def test_an_evaluation_before_training_leaves_the_model_unprepared(tiny_model, tmp_path):
    """accelerate marks a model it prepared for evaluation as prepared; `train()` would then not wrap it in DDP and
    several processes would train apart (tests/test_reliability_saving.py measures it under two processes). The
    trainer's evaluate and predict undo that preparation before training. Their loss terms are means over the images,
    weighted as the Trainer weights the loss: with uneven batches (3 + 2 images) the loss is still their weighted sum."""
    from fuscore.training.config import FuScoreTrainingConfig

    model = copy.deepcopy(tiny_model)  # the Trainer prepares the model it is given
    table = SyntheticIVIF(image_size=56, seed=1).table(num_scenes=2, images_per_scene=2)
    table = concatenate_datasets([table, table.select([0])])
    args = FuScoreTrainingConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_eval_batch_size=3)
    trainer = trainer_fuscore.FuScoreTrainer(model=model, args=args, eval_dataset=table,
                                             data_collator=FuScoreCollator(model.processor, model.config.level_values))
    for prefix, metrics in (("eval", trainer.evaluate()), ("test", trainer.predict(table).metrics)):
        assert {f"{prefix}_loss", f"{prefix}_loss_dist", f"{prefix}_srcc"} <= set(metrics)
        assert metrics[f"{prefix}_loss"] == pytest.approx(metrics[f"{prefix}_loss_dist"] + metrics[f"{prefix}_loss_within"]
                                                          + 0.5 * metrics[f"{prefix}_loss_cross"], rel=1e-5)
        assert not getattr(model, "_is_accelerate_prepared", False) and model not in trainer.accelerator._models
    assert trainer.state.log_history[-1]["eval_loss_dist"] == pytest.approx(metrics["test_loss_dist"], rel=1e-6)


def test_help_lists_fuscore_options_first_in_groups(capsys):
    """`trainer_fuscore.py --help`: the project's own options, grouped by what they set, before the stock Trainer's."""
    with pytest.raises(SystemExit) as done:
        trainer_fuscore.parse_arguments(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    headings = [line for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    groups = [heading for heading in headings if heading.startswith(("FuScore", "Trainer"))]
    assert [group.split(" (")[0] for group in groups] == ["FuScore model", "FuScore data",
                                                          "FuScore objective and training", "Trainer"]
    stock = text.index(groups[-1])
    for own in ("--model_name_or_path", "--train_table", "--objective", "--lambda_within", "--images_per_pair"):
        assert text.index(own) < stock, own
    assert text.index("--learning_rate") > stock and text.index("--per_device_train_batch_size") > stock


@pytest.mark.slow
def test_tensorboard_logs_under_output_dir_with_the_evaluation_before_training_as_eval(tmp_path, monkeypatch):
    """Issue 25: the evaluation before training and the first training curves went to ./runs of the working folder,
    and the pre-training metrics were filed under train/. Everything goes under output_dir; step 0's evaluation is
    eval/."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    output = tmp_path / "run"
    results = trainer_fuscore.main(FAST + ["--output_dir", str(output), "--report_to", "tensorboard"])
    assert not (tmp_path / "runs").exists(), "nothing under ./runs of the working folder"
    event_folders = {path.parent for path in output.glob("runs/*/events.out.tfevents.*")}
    assert len(event_folders) == 1, event_folders
    events = EventAccumulator(str(event_folders.pop()))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert not [tag for tag in tags if "before" in tag], tags
    srcc = {event.step: event.value for event in events.Scalars("eval/srcc")}
    assert srcc[0] == pytest.approx(results["before"]["before_srcc"], rel=1e-6)
    assert srcc[3] == pytest.approx(results["after"]["eval_srcc"], rel=1e-6)
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2, 3]


@pytest.mark.slow
def test_real_images_with_synthetic_labels_are_labelled_truthfully_in_the_table_and_the_model(tmp_path):
    """Issue 25: `save_imagefolder(..., synthetic=True)` on real (VIFB) images wrote a card saying the images "were
    generated procedurally by fuscore_data.synthetic"; a model trained on that table got `"synthetic": false` and no
    caveat. The card says the labels are synthetic and where the images come from; the model says it learned
    synthetic labels."""
    from fuscore_data.cards import SYNTHETIC_LABELS_STATEMENT, SYNTHETIC_STATEMENT, has_synthetic_labels
    from fuscore_data.importers import VIFB_DESCRIPTION
    from fuscore_data.tables import save_imagefolder

    table = SyntheticIVIF(image_size=56, seed=12).table(num_scenes=6, images_per_scene=3)
    table.info.description = VIFB_DESCRIPTION  # images from elsewhere (VIFB's), scores constructed
    folder = save_imagefolder(table, tmp_path / "vifb_synthetic_labels", synthetic=True,
                              image_source="VIFB's source pairs and fused results")
    card = (folder / "README.md").read_text()
    assert "procedurally" not in card and SYNTHETIC_STATEMENT not in card
    assert SYNTHETIC_LABELS_STATEMENT in card and "Its images: VIFB's source pairs and fused results." in card
    assert has_synthetic_labels(folder)
    unknown = save_imagefolder(table, tmp_path / "unknown", synthetic=True, description="")
    assert "does not record where its images come from" in (unknown / "README.md").read_text()
    assert not has_synthetic_labels(save_imagefolder(table, tmp_path / "rated", synthetic=False))

    results = trainer_fuscore.main(FAST + ["--train_table", str(folder), "--eval_fraction", "0.34",
                                           "--output_dir", str(tmp_path / "run")])
    final = tmp_path / "run" / "final"
    evaluation = json.loads((final / "fuscore_eval.json").read_text())
    assert evaluation["synthetic"] is True and results["after"]
    model_card = (final / "README.md").read_text()
    assert "trained on synthetic labels" in model_card and "not human ratings" in model_card
    assert "FuScore's synthetic benchmark" not in model_card
