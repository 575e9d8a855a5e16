"""Training with artifact maps (DESIGN.md section 10): the map term of the objective, the collator's pooled targets,
the map head in the training script, the logged map metrics, checkpoint selection by them and resuming.

CPU, tiny model (`tiny:qwen2_vl:32x1`), synthetic scenes with planted artifacts at 56 px (a 2 x 2 merged-patch grid)
or 112 px (4 x 4): each run takes seconds.
"""

import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import trainer_fuscore
from fuscore.objectives import compute_objective, pool_map_to_grid
from fuscore.tiny import build_tiny_model
from fuscore.training.collator import FuScoreCollator, SyntheticScenes
from fuscore.training.config import DataArguments
from fuscore.training.loading import has_maps, load_tables, map_weight, without_maps
from fuscore.training.trainer import MAP_METRIC_NAMES, map_metric_rows
from fuscore_data.synthetic import SyntheticIVIF
from fuscore_metrics.map_metrics import map_metrics


datasets.disable_progress_bars()
TINY = "tiny:qwen2_vl:32x1"
SMALL = dict(hidden_size=32, num_layers=1, vision_hidden_size=32, vision_depth=1)
RUN = ["--model_name_or_path", TINY, "--dtype", "float32", "--train_table", "synthetic", "--synthetic_image_size", "56",
       "--synthetic_local_artifacts", "true", "--synthetic_train_scenes", "8", "--synthetic_eval_scenes", "4",
       "--synthetic_images_per_scene", "4", "--pairs_per_batch", "2", "--images_per_pair", "4", "--max_steps", "6",
       "--learning_rate", "0.03", "--lr_scheduler_type", "constant", "--logging_steps", "1", "--use_cpu", "true",
       "--report_to", "none", "--disable_tqdm", "true", "--per_device_eval_batch_size", "16", "--seed", "3",
       "--dataloader_num_workers", "0"]


def _batch(model, rows):
    collator = FuScoreCollator(model.processor, model.config.level_values, "fuscore")
    return collator(rows)


def _objective(model, batch, lambda_map=1.0, with_maps=True):
    inputs = {key: value for key, value in batch.items() if key not in FuScoreCollator.label_keys}
    outputs = model(**inputs)
    maps = {}
    if with_maps:
        maps = dict(artifact_probs=outputs.artifact_probs, map_target=batch["map_target"],
                    map_patch_counts=batch["map_patch_counts"], has_map=batch["has_map"])
    return compute_objective("fuscore", level_logits=outputs.level_logits, score=outputs.score,
                             score_std=outputs.score_std, soft_label=batch["soft_label"], mu=batch["mu"],
                             sigma=batch["sigma"], group_ids=batch["group_ids"], lambda_map=lambda_map, **maps)


# ---------------------------------------------------------------------------------------------------------------------
# The term, the targets and the gradient
# ---------------------------------------------------------------------------------------------------------------------


def test_the_collator_pools_each_map_to_its_fused_image_grid_and_marks_rows_without_one():
    model = build_tiny_model("qwen2_vl", input_mode="fused_ir_vis", artifact_map=True, **SMALL)
    rows = SyntheticIVIF(image_size=112, seed=2, local_artifacts=True).group(0, 3)
    rows[1] = {**rows[1], "artifact_heatmap": None}
    batch = _batch(model, rows)
    assert batch["image_grid_thw"].shape[0] == 9  # fused, ir, vis per row: the fused image's grid is the first
    assert batch["map_grids"].tolist() == [[4, 4]] * 3 and batch["map_patch_counts"].tolist() == [16] * 3
    assert batch["has_map"].tolist() == [True, False, True]
    for row in (0, 2):
        expected = pool_map_to_grid(rows[row]["artifact_heatmap"], (4, 4)).reshape(-1)
        torch.testing.assert_close(batch["map_target"][16 * row:16 * (row + 1)], expected)
    assert not batch["map_target"][16:32].any()
    # A table without the map column gives no map labels at all.
    plain = _batch(model, SyntheticIVIF(image_size=112, seed=2).group(0, 2))
    assert not {"map_target", "map_patch_counts", "map_grids", "has_map"} & set(plain)


def test_the_collator_names_the_row_of_a_bad_map():
    model = build_tiny_model("qwen2_vl", artifact_map=True, **SMALL)
    rows = SyntheticIVIF(image_size=56, seed=2, local_artifacts=True).group(0, 2)
    rows[1] = {**rows[1], "artifact_heatmap": np.full((56, 56), 2.0, dtype=np.float32)}
    expected = f"artifact_heatmap of pair 'syn-2-0', method {rows[1]['method']!r}: A float artifact map must hold"
    with pytest.raises(ValueError, match=re.escape(expected)):
        _batch(model, rows)


def test_the_map_term_is_zero_without_maps_and_trains_the_head_with_them():
    model = build_tiny_model("qwen2_vl", artifact_map=True, seed=1, **SMALL)
    rows = SyntheticIVIF(image_size=56, seed=4, local_artifacts=True).group(0, 4)
    batch = _batch(model, rows)
    plain = _objective(model, batch, lambda_map=0.0, with_maps=False)
    assert "loss_map" not in plain
    # Every row without a map: the term is exactly 0, and the loss is the tripartite one.
    empty = {**batch, "has_map": torch.zeros(4, dtype=torch.bool)}
    terms = _objective(model, empty, lambda_map=3.0)
    assert terms["loss_map"].item() == 0.0
    torch.testing.assert_close(terms["loss"], plain["loss"])
    # With maps: loss = tripartite + lambda_map * L_map, and the gradient reaches the head.
    assert batch["has_map"].all() and batch["map_target"].max() > 0
    terms = _objective(model, batch, lambda_map=3.0)
    assert terms["loss_map"].item() > 0
    torch.testing.assert_close(terms["loss"], plain["loss"] + 3.0 * terms["loss_map"])
    model.zero_grad()
    terms["loss"].backward()
    head = dict(model.artifact_head.named_parameters())
    assert all(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in head.values())
    # Weight 0: the term is logged but the head gets no gradient from it.
    model.zero_grad()
    _objective(model, batch, lambda_map=0.0)["loss"].backward()
    assert all(parameter.grad is None or not parameter.grad.any() for parameter in head.values())
    with pytest.raises(ValueError, match="lambda_map=1.0 needs the map head's artifact_probs"):
        _objective(model, batch, lambda_map=1.0, with_maps=False)


def test_map_metric_rows_are_the_map_metrics_of_each_grid():
    grids = torch.tensor([[2, 2], [1, 3], [2, 2]])
    probs = torch.tensor([0.9, 0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.1, 0.2, 0.3, 0.4])
    target = torch.tensor([1.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.3, 0.3, 0.3, 0.3])
    rows = map_metric_rows(probs, target, grids, torch.tensor([True, True, False]))
    assert rows.shape == (3, len(MAP_METRIC_NAMES))
    expected = map_metrics(probs[:4].reshape(2, 2).numpy(), target[:4].reshape(2, 2).numpy())
    assert rows[0].tolist() == pytest.approx([expected[name] for name in ("mse", "nss", "cc", "sim", "auc_judd", "kl")])
    assert rows[0, 0].item() == pytest.approx(((0.1 ** 2) + 0.1 ** 2 + 0.2 ** 2 + 0.2 ** 2) / 4)
    # A target that marks nothing has an MSE but no saliency metric; a row without a map has nothing.
    assert rows[1, 0].item() == pytest.approx(0.25) and torch.isnan(rows[1, 1:]).all()
    assert torch.isnan(rows[2]).all()


# ---------------------------------------------------------------------------------------------------------------------
# The weight, the head and the tables
# ---------------------------------------------------------------------------------------------------------------------


def test_the_weight_defaults_to_the_tables_maps_and_a_positive_weight_needs_them(tmp_path):
    with_maps = SyntheticIVIF(image_size=56, seed=1, local_artifacts=True).table(2, 2)
    without = SyntheticIVIF(image_size=56, seed=1).table(2, 2)
    assert has_maps(with_maps) and not has_maps(without)
    assert has_maps(SyntheticIVIF(local_artifacts=True)) and not has_maps(SyntheticIVIF())  # the synthetic stream
    assert has_maps(SyntheticScenes(SyntheticIVIF(local_artifacts=True), 2))
    empty = with_maps.map(lambda row: {"artifact_heatmap": None})
    assert not has_maps(empty)
    assert map_weight(None, with_maps) == 1.0 and map_weight(None, without) == 0.0 and map_weight(0.0, with_maps) == 0.0
    assert map_weight(2.5, with_maps) == 2.5
    # A model without a map head: the column goes (rows would decode the maps for nothing); the stream stays.
    assert "artifact_heatmap" not in without_maps(with_maps).column_names and without_maps(without) is without
    generator = SyntheticIVIF(local_artifacts=True)
    assert without_maps(generator) is generator
    with pytest.raises(ValueError, match="--lambda_map 1.0: the synthetic training table has no map column "
                                         "'artifact_heatmap'.*--synthetic_local_artifacts true"):
        map_weight(1.0, without, DataArguments())
    with pytest.raises(ValueError, match="has a 'artifact_heatmap' column with no map in it"):
        map_weight(1.0, empty, DataArguments(train_table=str(tmp_path / "table")))
    with pytest.raises(ValueError, match="--lambda_map -1.0: must be 0 or more"):
        trainer_fuscore.parse_arguments(RUN + ["--output_dir", str(tmp_path / "x"), "--lambda_map", "-1"])


def test_a_positive_weight_on_a_table_without_maps_fails_before_any_work(tmp_path):
    position = RUN.index("--synthetic_local_artifacts")
    run = RUN[:position] + RUN[position + 2:]
    with pytest.raises(ValueError, match="--lambda_map 1.0: the synthetic training table has no map column"):
        trainer_fuscore.main(run + ["--output_dir", str(tmp_path / "run"), "--lambda_map", "1"])
    assert not (tmp_path / "run").exists()


def test_loaded_tables_keep_the_map_column(tmp_path):
    table = SyntheticIVIF(image_size=56, seed=1, local_artifacts=True).table(4, 3)
    table.save_to_disk(str(tmp_path / "table"))
    train, held_out = load_tables(DataArguments(train_table=str(tmp_path / "table"), eval_fraction=0.5), seed=0)
    assert "artifact_heatmap" in train.column_names and "artifact_heatmap" in held_out.column_names
    assert np.asarray(train[0]["artifact_heatmap"]).shape == (56, 56)


# ---------------------------------------------------------------------------------------------------------------------
# The training script with maps: the loss falls, the metrics are logged, checkpoints resume
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A run on synthetic scenes with maps (weight unset: 1 for a table with maps), a checkpoint after each step and
    the map NSS choosing the best checkpoint."""
    output_dir = tmp_path_factory.mktemp("maps")
    results = trainer_fuscore.main(RUN + ["--output_dir", str(output_dir), "--save_strategy", "steps", "--save_steps",
                                          "2", "--eval_strategy", "steps", "--eval_steps", "2",
                                          "--metric_for_best_model", "map_nss"])
    return {"results": results, "output_dir": output_dir,
            "weights": load_file(str(Path(results["final_dir"]) / "model.safetensors"))}


@pytest.mark.slow
def test_a_short_run_gives_the_model_a_head_and_lowers_the_map_loss(reference):
    results = reference["results"]
    # Six steps move the fresh head's probabilities (about 0.5) towards the maps' mean (0.24 to 0.42 a batch here);
    # most of the per-patch error is the maps' own spread, which only localisation removes: observed 0.1851 -> 0.1807.
    assert results["after"]["eval_loss_map"] < 0.99 * results["before"]["before_loss_map"]
    assert any(name.startswith("model.artifact_head.") or name.startswith("artifact_head.")
               for name in reference["weights"])
    from modeling_fuscore import FuScoreForQuality

    saved = FuScoreForQuality.from_pretrained(results["final_dir"])
    assert saved.config.artifact_map and saved.artifact_head is not None


@pytest.mark.slow
def test_map_metrics_are_logged_for_train_and_eval_and_choose_the_best_checkpoint(reference):
    import json

    state = json.loads((reference["output_dir"] / "checkpoint-6" / "trainer_state.json").read_text())
    train_logs = [entry for entry in state["log_history"] if "loss" in entry and "eval_loss" not in entry]
    eval_logs = [entry for entry in state["log_history"] if "eval_loss" in entry]
    assert len(train_logs) == 6 and len(eval_logs) == 3
    for entry in train_logs:
        assert set(MAP_METRIC_NAMES) <= set(entry), entry
        assert 0 <= entry["map_sim"] <= 1 and 0 <= entry["map_auc_judd"] <= 1 and entry["loss_map"] >= 0
    for entry in eval_logs:
        assert {f"eval_{name}" for name in MAP_METRIC_NAMES} <= set(entry), entry
    best = max(eval_logs, key=lambda entry: entry["eval_map_nss"])
    assert state["best_metric"] == best["eval_map_nss"]
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best['step']}")
    for name in MAP_METRIC_NAMES:
        assert np.isfinite(reference["results"]["after"][f"eval_{name}"]), name


@pytest.mark.slow
def test_resuming_a_run_with_maps_reaches_the_same_weights(reference, tmp_path):
    resumed = trainer_fuscore.main(RUN + ["--output_dir", str(tmp_path / "resumed"), "--save_strategy", "no",
                                          "--eval_strategy", "steps", "--eval_steps", "2", "--metric_for_best_model",
                                          "map_nss", "--resume_from_checkpoint",
                                          str(reference["output_dir"] / "checkpoint-4")])
    weights = load_file(str(Path(resumed["final_dir"]) / "model.safetensors"))
    assert set(weights) == set(reference["weights"])
    assert all(torch.equal(weights[key], reference["weights"][key]) for key in weights)
    assert resumed["after"]["eval_loss_map"] == reference["results"]["after"]["eval_loss_map"]
    # The map weight decides the trajectory: a resume with another one is refused.
    with pytest.raises(ValueError, match=r"--lambda_map null -> 2"):
        trainer_fuscore.main(RUN + ["--output_dir", str(tmp_path / "other"), "--lambda_map", "2",
                                    "--resume_from_checkpoint", str(reference["output_dir"] / "checkpoint-4")])


def test_with_lora_the_map_head_trains_whole_and_merges_back():
    from fuscore.training.config import ModelArguments
    from fuscore.training.loading import load_model
    from fuscore.training.trainer import has_artifact_head

    model = load_model(ModelArguments(model_name_or_path=TINY, dtype="float32", use_lora=True, lora_r=4, lora_alpha=8),
                       artifact_head=True)
    assert has_artifact_head(model)
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad and "artifact" in name}
    assert len(trained) == 4  # the head's two layers, weights and biases
    # The same build without LoRA: the head as it starts.
    before = load_model(ModelArguments(model_name_or_path=TINY, dtype="float32"), artifact_head=True)
    before = before.artifact_head.state_dict()
    batch = _batch(model.get_base_model(), SyntheticIVIF(image_size=56, seed=4, local_artifacts=True).group(0, 2))
    optimizer = torch.optim.Adam([parameter for parameter in model.parameters() if parameter.requires_grad], lr=0.01)
    _objective(model, batch)["loss_map"].backward()
    optimizer.step()
    merged = model.merge_and_unload()
    after = merged.artifact_head.state_dict()
    assert set(after) == set(before) and all(not torch.equal(after[name], before[name]) for name in before)
    assert (after["out.bias"] - before["out.bias"]).abs().item() == pytest.approx(0.01, rel=1e-3)  # one Adam step
