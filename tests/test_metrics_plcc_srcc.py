"""Tests of the PLCC / SRCC / KRCC metric (fuscore_metrics.plcc_srcc)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fuscore_metrics.plcc_srcc import correlation_metrics, fit_logistic_4p, logistic_4p, within_group_statistics

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_correlations_match_scipy():
    rng = np.random.default_rng(0)
    references = rng.uniform(1, 5, 80)
    predictions = references + rng.normal(0, 0.8, 80)
    predictions[::7] = np.round(predictions[::7])  # some ties for tau-b
    result = correlation_metrics(predictions, references)
    assert result["plcc"] == pytest.approx(stats.pearsonr(predictions, references).statistic, abs=1e-12)
    assert result["srcc"] == pytest.approx(stats.spearmanr(predictions, references).statistic, abs=1e-12)
    assert result["krcc"] == pytest.approx(stats.kendalltau(predictions, references).statistic, abs=1e-12)
    assert result["rmse_raw"] == pytest.approx(np.sqrt(np.mean((predictions - references) ** 2)), abs=1e-12)
    assert result["n"] == 80 and result["logistic_fit_converged"] is True


def test_logistic_fit_recovers_a_planted_sigmoid():
    rng = np.random.default_rng(1)
    predictions = rng.uniform(-3, 3, 150)
    references = logistic_4p(predictions, 4.6, 1.3, 0.4, 0.4)  # noise-free, strongly non-linear
    result = correlation_metrics(predictions, references)
    assert result["plcc"] < 0.96  # the raw relation is clearly not linear...
    assert result["plcc_logistic"] == pytest.approx(1.0, abs=1e-9)  # ...the fitted one is exact
    assert result["rmse"] == pytest.approx(0.0, abs=1e-6)
    params, converged = fit_logistic_4p(predictions, references)
    assert converged
    assert params[:3] == pytest.approx([4.6, 1.3, 0.4], abs=1e-5)
    assert abs(params[3]) == pytest.approx(0.4, abs=1e-5)


def test_decreasing_relation_keeps_its_sign():
    predictions = np.linspace(0, 1, 40)
    references = 5 - 4 * predictions**2
    result = correlation_metrics(predictions, references)
    assert result["srcc"] == pytest.approx(-1.0)
    assert result["krcc"] == pytest.approx(-1.0)
    assert result["plcc_logistic"] < -0.999


def test_within_group_statistics_by_hand():
    groups = ["a"] * 3 + ["b"] * 4 + ["c"] * 2 + ["d"] * 3 + ["e"] * 3
    references = [1, 2, 3] + [1, 1, 2, 3] + [1, 2] + [2, 2, 2] + [1, 2, 3]
    predictions = [0.1, 0.3, 0.2] + [2, 1, 1, 3] + [1, 2] + [1, 2, 3] + [1, 1, 1]
    result = within_group_statistics(np.array(predictions, float), np.array(references, float), groups)
    # SRCC: a = 1 - 6 * 2 / (3 * 8) = 0.5; b: Pearson of ranks [1.5, 1.5, 3, 4] and
    # [3, 1.5, 1.5, 4] = 2.25 / 4.5 = 0.5; e: constant predictions count as 0; c has 2 items
    # and d constant references, so neither counts.
    assert result["n_groups_srcc"] == 3
    assert result["srcc_within"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    # Pairs with different references: a 3 (2 agree), b 5 (3 agree + 1 prediction tie = 3.5),
    # c 1 (agrees), d 0, e 3 (all prediction ties = 1.5). 8 of 12.
    assert result["n_pairs_within"] == 12
    assert result["pairwise_accuracy_within"] == pytest.approx(8 / 12)


def test_groups_through_correlation_metrics():
    predictions = [1, 2, 3, 3, 2, 1]
    references = [1, 2, 3, 1, 2, 3]
    result = correlation_metrics(predictions, references, groups=["x", "x", "x", "y", "y", "y"])
    assert result["srcc_within"] == pytest.approx(0.0)  # +1 in x, -1 in y
    assert result["pairwise_accuracy_within"] == pytest.approx(0.5)


def test_three_items_use_the_straight_line_fit():
    result = correlation_metrics([1, 2, 4], [1, 3, 2])
    assert result["logistic_fit_converged"] is False
    assert result["plcc_logistic"] == pytest.approx(result["plcc"])  # linear mapping keeps Pearson
    slope, intercept = np.polyfit([1, 2, 4], [1, 3, 2], 1)
    residuals = np.array([1, 3, 2]) - (slope * np.array([1, 2, 4]) + intercept)
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean(residuals**2)))


def test_no_eligible_group_gives_nan():
    result = correlation_metrics([1, 2, 3, 4], [1, 2, 3, 4], groups=["a", "b", "c", "d"])
    assert math.isnan(result["srcc_within"]) and math.isnan(result["pairwise_accuracy_within"])
    assert result["n_groups_srcc"] == 0 and result["n_pairs_within"] == 0


def test_constant_predictions_are_documented_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = correlation_metrics([2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0])
    for key in ("plcc", "plcc_logistic", "srcc", "krcc", "rmse"):
        assert math.isnan(result[key]), key
    assert result["rmse_raw"] == pytest.approx(math.sqrt(1.5))
    assert result["logistic_fit_converged"] is False


def test_hard_fit_inputs_leak_no_warnings():
    rng = np.random.default_rng(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Nearly flat references and huge prediction offsets: overflow-prone for a naive exp.
        correlation_metrics(rng.normal(1e6, 1, 30), rng.normal(3, 1e-3, 30))
        correlation_metrics([0, 0, 0, 1e9], [1, 2, 3, 4])


@pytest.mark.parametrize(
    ("predictions", "references", "groups", "message"),
    [
        ([1, 2, 3], [1, 2], None, "differ in length"),
        ([1, 2], [1, 2], None, "At least 3"),
        ([1, float("nan"), 3], [1, 2, 3], None, "NaN or infinite"),
        ([1, 2, 3], [1, float("inf"), 3], None, "NaN or infinite"),
        ([[1, 2], [3, 4]], [1, 2], None, "one-dimensional"),
        (["a", "b", "c"], [1, 2, 3], None, "sequence of numbers"),
        ([1, 2, 3], [1, 2, 3], ["a", "b"], "groups has 2 entries"),
        (np.array([1, 2, 3]) + 1j, [1, 2, 3], None, "predictions must be real numbers"),
        ([1, 2, 3], [1 + 2j, 2, 3], None, "references must be real numbers"),
    ],
)
def test_degenerate_inputs_raise_clear_errors(predictions, references, groups, message):
    with pytest.raises(ValueError, match=message):
        correlation_metrics(predictions, references, groups=groups)


def test_evaluate_module_with_and_without_groups():
    evaluate = pytest.importorskip("evaluate")
    path = str(REPO_ROOT / "evaluate_metrics" / "plcc_srcc")
    predictions, references = [0.1, 0.3, 0.2, 2, 1, 1, 3], [1, 2, 3, 1, 1, 2, 3]
    groups = ["a"] * 3 + ["b"] * 4
    expected = correlation_metrics(predictions, references, groups=groups)

    plain = evaluate.load(path)
    assert plain.compute(predictions=predictions, references=references, groups=groups) == pytest.approx(expected)

    grouped = evaluate.load(path, "grouped")
    grouped.add_batch(predictions=predictions[:3], references=references[:3], groups=groups[:3])
    grouped.add_batch(predictions=predictions[3:], references=references[3:], groups=groups[3:])
    assert grouped.compute() == pytest.approx(expected)


@pytest.mark.slow
def test_evaluate_modules_load_offline(tmp_path):
    """Both evaluate modules load from the repository with the Hub switched off."""
    script = (
        "import json, evaluate\n"
        "c = evaluate.load('evaluate_metrics/plcc_srcc').compute(predictions=[1, 2, 4], references=[1, 3, 2])\n"
        "m = evaluate.load('evaluate_metrics/ivif_metrics')\n"
        "print(json.dumps({'srcc': c['srcc'], 'ivif': type(m).__name__}))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf_home"))
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    output = json.loads(completed.stdout.strip().splitlines()[-1])
    assert output == {"srcc": pytest.approx(0.5), "ivif": "IvifMetrics"}


@pytest.mark.parametrize("name", ["plcc_srcc", "ivif_metrics"])
def test_each_metric_folder_is_an_evaluate_space(name, monkeypatch):
    """As the evaluate library's own metrics: a README whose front matter is a Gradio Space card, and an app.py that
    loads the module from its folder and hands it to evaluate's widget (whose input inference accepts its features)."""
    import runpy

    import evaluate.utils
    from evaluate.utils.gradio import infer_gradio_input_types
    from huggingface_hub import SpaceCard
    from packaging.requirements import Requirement

    folder = Path(__file__).resolve().parents[1] / "evaluate_metrics" / name
    card = SpaceCard.load(folder / "README.md").data
    assert card.sdk == "gradio" and (folder / card.app_file).is_file() and {"evaluate", "metric"} <= set(card.tags)
    assert card.sdk_version.startswith("3.")  # evaluate's widget is written for Gradio 3 (gr.inputs)
    requirements = {Requirement(line).name for line in (folder / "requirements.txt").read_text().splitlines()
                    if line and not line.startswith("#")}
    assert {"evaluate", "numpy", "scipy"} <= requirements

    launched = []
    monkeypatch.setattr(evaluate.utils, "launch_gradio_widget", launched.append)
    runpy.run_path(str(folder / card.app_file), run_name="__main__")
    [module] = launched
    assert isinstance(module, evaluate.EvaluationModule) and module.info.description
    if name == "plcc_srcc":
        assert module.compute(predictions=[1.0, 2.0, 3.0, 4.0], references=[1.0, 2.0, 4.0, 3.0])["srcc"] == pytest.approx(0.8)
    features = module.features[0] if isinstance(module.features, list) else module.features
    assert len(infer_gradio_input_types(list(features.values()))) == len(features)
