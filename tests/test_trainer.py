"""trainer_fuscore.py and fuscore.training end to end on CPU with a tiny model: arguments, collator labels, logging,
evaluation through the Trainer's loop, saving."""

import json
import shutil

import numpy as np
import pytest
import torch

import trainer_fuscore
from fuscore.objectives import fuscore_soft_label
from fuscore.training.collator import FuScoreCollator, weightless_copy
from fuscore.training.loading import load_model, load_tables, plain_model_from_state_dict
from fuscore.tiny import build_tiny_model
from fuscore_data.synthetic import SyntheticIVIF
from conftest import load_saved


FAST = ["--model_name_or_path", "tiny:qwen2_vl:32x1", "--train_table", "synthetic", "--synthetic_image_size", "56",
        "--synthetic_train_scenes", "6", "--synthetic_eval_scenes", "4", "--synthetic_images_per_scene", "4",
        "--pairs_per_batch", "2", "--images_per_pair", "2", "--max_steps", "3", "--logging_steps", "1",
        "--save_strategy", "no", "--use_cpu", "true", "--disable_tqdm", "true", "--per_device_eval_batch_size", "8"]


def test_yaml_config_with_command_line_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_name_or_path: tiny:qwen3_vl\nobjective: deqa\nmax_steps: 7\nlambda_cross: 0.25\noutput_dir: x\n")
    model_args, data_args, training_args = trainer_fuscore.parse_arguments(["--config", str(config), "--max_steps", "9"])
    assert model_args.model_name_or_path == "tiny:qwen3_vl"
    assert training_args.objective == "deqa" and training_args.lambda_cross == 0.25
    assert training_args.max_steps == 9, "arguments after --config override the file"
    with pytest.raises(SystemExit, match="no such file"):
        trainer_fuscore.parse_arguments(["--config", str(tmp_path / "missing.yaml")])


def test_no_arguments_is_the_embedded_demo():
    model_args, data_args, training_args = trainer_fuscore.parse_arguments([])
    assert model_args.model_name_or_path.endswith("fuscore/demo_model")
    assert data_args.train_table == "synthetic" and training_args.objective == "fuscore"


def test_collator_labels_follow_the_model_level_order():
    model = build_tiny_model("qwen2_vl")
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


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_collator_computes_the_positions_the_model_would(family):
    """With a weightless copy of the model the collator adds the RoPE ids and the vision tower's positions on the
    CPU: the forward pass then gives exactly the outputs it gives when it computes them itself. The collator stays
    small enough to hand to DataLoader worker processes (no weights)."""
    import pickle

    model = build_tiny_model(family, seed=2)
    rows = SyntheticIVIF(image_size=56, seed=3).group(0, 3)
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
def test_training_run_logs_every_term_and_saves_a_loadable_folder(tmp_path, objective):
    results = trainer_fuscore.main(FAST + ["--output_dir", str(tmp_path / "run"), "--objective", objective])
    final = tmp_path / "run" / "final"
    evaluation = json.loads((final / "fuscore_eval.json").read_text())
    assert evaluation["synthetic"] is True and evaluation["objective"] == objective
    assert "srcc" in evaluation["metrics"] and np.isfinite(evaluation["metrics"]["srcc"])
    card = (final / "README.md").read_text()
    assert "not human ratings" in card and f"value: {round(evaluation['metrics']['srcc'], 4)}" in card
    assert (final / "model.safetensors").is_file()
    assert results["after"]["eval_n"] == 16


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
    model = build_tiny_model("qwen3_vl", seed=8)
    state_dict = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    plain = plain_model_from_state_dict(model, state_dict)
    assert type(plain).__name__ == "FuScoreForQuality" and plain is not model
    plain.processor = model.processor
    plain.save_pretrained(tmp_path / "final")
    assert sorted(p.name for p in (tmp_path / "final").glob("*.py")) == ["modeling_fuscore.py", "processing_fuscore.py"]
    model.save_pretrained(tmp_path / "model")
    np.testing.assert_allclose(load_saved(tmp_path / "final").score(random_images[:3]),
                               load_saved(tmp_path / "model").score(random_images[:3]), atol=1e-6)


def test_collator_fills_a_missing_overall_score_with_the_sub_score_mean():
    model = build_tiny_model("qwen2_vl")
    rows = SyntheticIVIF(image_size=56, seed=4).group(0, 2)
    rows[0]["mos"] = None
    subs = [rows[0][k] for k in ("thermal_retention", "texture_preservation", "artifacts", "sharpness")]
    batch = FuScoreCollator(model.processor, model.config.level_values)(rows)
    assert batch["mu"][0].item() == pytest.approx(float(np.mean(subs)), abs=1e-5)
    assert batch["mu"][1].item() == pytest.approx(rows[1]["mos"], abs=1e-5)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on the CPU needs a C++ compiler")
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
