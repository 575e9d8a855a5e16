"""benchmarks/ablation.py (issue 32): the declared analysis, the bookkeeping (one writer, resume, deadline, failures,
published results left alone) and, at toy size on the CPU, the whole pipeline from tables to the results page."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import ablation  # noqa: E402


def test_presets_meet_the_design_and_published_results_need_publish(tmp_path):
    gpu = ablation.parse_args([])
    assert gpu.eval_scenes >= ablation.MIN_EVAL_SCENES and len(gpu.seeds) == 8 and gpu.settings == ["close", "standard"]
    assert len(ablation.ROWS) == 9 and Path(gpu.output) == ablation.DEFAULT_OUTPUT
    assert ablation.output_paths(gpu) == [(ablation.DEFAULT_OUTPUT / "results_ablation.json",
                                           ablation.DEFAULT_OUTPUT / "RESULTS_ablation.md")]
    with pytest.raises(SystemExit):  # the tracked results are replaced only on request
        ablation.parse_args(["--output", str(REPO_ROOT / "benchmarks")])
    published = ablation.parse_args(["--output", str(tmp_path), "--publish"])
    assert (ablation.RESULTS_JSON, ablation.RESULTS_MD) in ablation.output_paths(published)
    with pytest.raises(SystemExit):
        ablation.parse_args(["--jobs", "0"])


def test_pending_runs_demo_first_then_seed_major(tmp_path):
    args = ablation.parse_args(["--output", str(tmp_path), "--seeds", "0", "1", "--rows", "demo", "kl_only",
                                "kl_within"])
    todo = ablation.pending_runs(args, [{"setting": "close", "row": "kl_only", "seed": 0}])
    assert todo[:2] == [("close", "demo", 0), ("standard", "demo", 0)]
    assert todo[2:5] == [("close", "kl_within", 0), ("standard", "kl_only", 0), ("standard", "kl_within", 0)]
    assert all(seed == 1 for *_, seed in todo[5:]) and len(todo) == 9


def test_paired_t_interval_by_hand():
    """The old run's close-setting differences: t = -2.03 on 2 df, p = 0.18 (issue 32's audit)."""
    result = ablation.paired_t(np.array([-0.0647, -0.1679, -0.0254]), comparisons=17)
    assert result["t"] == pytest.approx(-2.03, abs=0.01) and result["p"] == pytest.approx(0.18, abs=0.005)
    mean, half = -0.086, 4.302653 * np.std([-0.0647, -0.1679, -0.0254], ddof=1) / np.sqrt(3)
    assert (result["low"], result["high"]) == pytest.approx((mean - half, mean + half), abs=1e-4)
    assert result["p_adjusted"] == pytest.approx(min(1.0, 17 * result["p"]))
    assert ablation.paired_t(np.zeros(4))["p"] == 1.0


def _results(effect: float, noise: float, seeds=range(8)) -> dict:
    """Fake runs: every row's accuracy is 0.7 + a per-seed offset; kl_within adds `effect` (+ noise per seed)."""
    rng = np.random.default_rng(0)
    setup = ablation.setup_of(ablation.parse_args([]))
    runs = []
    for setting in ablation.SETTINGS:
        runs.append({"setting": setting, "row": "demo", "seed": 0, "setup": setup, "accuracy_truth": 0.7,
                     "srcc_within_truth": 0.5, "srcc_truth": 0.8, "accuracy_mos": 0.65, "mean_pred_sd": 1.0,
                     "device": "NVIDIA H100 80GB HBM3"})
        for seed in seeds:
            offset = 0.01 * seed
            for row in ablation.ROWS:
                value = 0.7 + offset + (effect + noise * rng.standard_normal() if row == "kl_within" else 0.0)
                runs.append({"setting": setting, "row": row, "seed": seed, "setup": setup, "accuracy_truth": value,
                             "srcc_within_truth": value - 0.2, "srcc_truth": value + 0.1, "accuracy_mos": value - 0.05,
                             "mean_pred_sd": 1.1, "train_loss_dist": 0.3, "train_loss_within": 0.01,
                             "train_loss_cross": 0.02, "device": "NVIDIA H100 80GB HBM3"})
    return {"runs": runs, "jobs": 12, "wall_seconds": 400.0, "date": "2026-12-06",
            "versions": {"torch": "2.11", "transformers": "5.17.0", "python": "3.11"},
            "tables": {setting: {"images": 3072, "scenes": 512, "pairs_within": 7680, "mos_accuracy_truth": 0.86,
                                 "mos_srcc_within_truth": 0.79, "mos_srcc_truth": 0.95, "median_mos_std": 1.1}
                       for setting in ablation.SETTINGS}}


def test_analysis_states_only_what_the_interval_carries():
    helped = ablation.analysis(_results(effect=0.02, noise=0.002))
    assert helped["comparisons"] == len(ablation.SECONDARY) == 17 and len(helped["secondary"]) == 17
    assert helped["primary"]["n"] == 8 and helped["primary"]["low"] > 0
    assert "**raised**" in ablation.primary_sentence(helped["primary"])
    assert "**lowered**" in ablation.primary_sentence(ablation.analysis(_results(-0.02, 0.002))["primary"])
    unclear = ablation.analysis(_results(effect=0.0, noise=0.01))["primary"]
    assert unclear["low"] < 0 < unclear["high"]
    assert "**no difference was found**" in ablation.primary_sentence(unclear)
    text = ablation.render(_results(effect=0.02, noise=0.002))
    assert "on NVIDIA H100 80GB HBM3 GPU, 12 runs at a time; torch 2.11, transformers 5.17.0" in text
    assert "## Secondary contrasts (17 comparisons, Bonferroni)" in text
    assert "| `standard` | KL + within − KL only |" in text and "86.0% of them like the truth" in text
    assert "Below the design's" not in text and "| demo checkpoint, not fine-tuned |" in text


# A stand-in for run_one and for the tables: the bookkeeping without training.
def fake_runner(args, row, seed, setting_paths, cache):
    assert setting_paths == {"train": "train-table", "eval": "eval-table"}
    value = 0.7 + 0.01 * seed + (0.02 if row == "kl_within" else 0.0)
    return {"accuracy_truth": value, "srcc_within_truth": value, "srcc_truth": value, "accuracy_mos": value,
            "mean_pred_sd": 1.0, "train_seconds": 1.0, "eval_seconds": 0.5, "device": "cpu"}


def failing_runner(args, row, seed, setting_paths, cache):
    if row == "kl_cross":
        raise RuntimeError("kl_cross broke")
    return fake_runner(args, row, seed, setting_paths, cache)


@pytest.fixture
def no_tables(monkeypatch):
    monkeypatch.setattr(ablation, "build_tables", lambda args, folder, settings: {
        setting: {"train": "train-table", "eval": "eval-table"} for setting in settings})
    monkeypatch.setattr(ablation, "load_split", lambda path, truth_labels=False: path)
    monkeypatch.setattr(ablation, "table_facts", lambda table: _results(0, 0)["tables"]["close"])


def _args(tmp_path, *extra):
    return ablation.parse_args(["--preset", "tiny", "--output", str(tmp_path / "out"), *extra])


def test_results_after_every_run_resume_and_published_files_untouched(tmp_path, no_tables):
    published = {path: path.read_bytes() for path in (ablation.RESULTS_JSON, ablation.RESULTS_MD)}
    args = _args(tmp_path, "--settings", "close", "--rows", "kl_only", "kl_within", "--seeds", "0")
    ablation.run_all(args, runner=fake_runner)
    saved = json.loads((tmp_path / "out" / "results_ablation.json").read_text())
    assert sorted(run["row"] for run in saved["runs"]) == ["kl_only", "kl_within"]
    assert "# Does the within-pair Thurstone term help?" in (tmp_path / "out" / "RESULTS_ablation.md").read_text()
    # --resume keeps those two and adds seed 1 and the other setting (a shard run later).
    resumed = ablation.run_all(_args(tmp_path, "--rows", "kl_only", "kl_within", "--seeds", "0", "1", "--resume"),
                               runner=fake_runner)
    assert len(resumed["runs"]) == 8 and resumed["runs"][:2] == saved["runs"]
    assert {path: path.read_bytes() for path in published} == published  # never written without --publish


def test_deadline_and_failures_keep_what_finished(tmp_path, no_tables, capsys):
    results = ablation.run_all(_args(tmp_path, "--settings", "close", "--rows", "kl_only", "--deadline", "0"),
                               runner=fake_runner)
    assert results["runs"] == [] and "not started before --deadline" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="kl_cross"):
        ablation.run_all(_args(tmp_path, "--settings", "close", "--rows", "kl_only", "kl_cross", "--seeds", "0"),
                         runner=failing_runner)
    saved = json.loads((tmp_path / "out" / "results_ablation.json").read_text())
    assert [run["row"] for run in saved["runs"]] == ["kl_only"]


def test_truth_labels_replace_only_the_mos(tmp_path):
    import datasets

    from fuscore_data.synthetic import SyntheticIVIF, overall_score

    table = SyntheticIVIF(image_size=32, seed=5).table(2, 3).remove_columns(["ir", "vis", "fused"])
    table.save_to_disk(str(tmp_path / "t"))
    plain, truth = ablation.load_split(str(tmp_path / "t")), ablation.load_split(str(tmp_path / "t"), truth_labels=True)
    assert plain["row"] == [0, 1, 2, 3, 4, 5] and plain["mos"] == table["mos"]
    subs = np.array([[row[name] for name in ("thermal_retention", "texture_preservation", "artifacts", "sharpness")]
                     for row in table])
    np.testing.assert_allclose(truth["mos"], overall_score(subs), atol=1e-5)
    assert truth["mos_std"] == plain["mos_std"] and not np.allclose(truth["mos"], plain["mos"])
    assert isinstance(truth, datasets.Dataset)


@pytest.mark.slow
def test_tiny_pipeline_end_to_end(tmp_path):
    """Tables, cached patches, fine-tuning the demo checkpoint (KL only, KL + within, the truth arm), the scoring
    against the truth and the analysis, at toy size on the CPU (about 40 s on 2 shared cores)."""
    ablation.main(["--preset", "tiny", "--output", str(tmp_path / "out"), "--settings", "close", "--rows", "demo",
                   "kl_only", "kl_within", "truth_kl_within"])
    saved = json.loads((tmp_path / "out" / "results_ablation.json").read_text())
    runs = {(run["row"], run["seed"]): run for run in saved["runs"]}
    assert set(runs) == {("demo", 0), *((row, seed) for row in ("kl_only", "kl_within", "truth_kl_within")
                                        for seed in (0, 1))}
    tuned = runs[("kl_within", 0)]
    assert 0 <= tuned["accuracy_truth"] <= 1 and tuned["mean_pred_sd"] > 0
    assert [entry["step"] for entry in tuned["train_log"]] == [1, 2]
    assert {"loss_dist", "loss_within", "loss_cross"} <= set(tuned["train_log"][-1])
    assert {"eval_loss_dist", "eval_loss_within", "eval_loss_cross"} <= set(tuned)
    # The weights differ, the batches are the same: the first logged losses match term by term, not in total.
    assert tuned["train_log"][0]["loss_within"] == pytest.approx(runs[("kl_only", 0)]["train_log"][0]["loss_within"])
    assert tuned["train_log"][0]["loss"] > runs[("kl_only", 0)]["train_log"][0]["loss"]
    assert runs[("demo", 0)]["train_log"] == [] and saved["tables"]["close"]["scenes"] == 3
    text = (tmp_path / "out" / "RESULTS_ablation.md").read_text()
    assert "## Primary result" in text and "2 paired seeds" in text and "Below the design's 512" in text
