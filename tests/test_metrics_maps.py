"""Tests of the artifact-map metrics (fuscore_metrics.map_metrics): hand-worked values, the MIT procedure, degenerate
maps and the evaluate module."""

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

from fuscore_metrics.map_metrics import auc_judd, cc, kl, map_metrics, map_metrics_batch, nss, sim

REPO_ROOT = Path(__file__).resolve().parents[1]
PREDICTION = np.array([[0.9, 0.8, 0.1], [0.4, 0.3, 0.2]])
TARGET = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def mit_auc_judd(prediction: np.ndarray, fixations: np.ndarray, jitter: np.ndarray | None = None) -> float:
    """The MIT benchmark's AUC_Judd.m, step by step (a reference for the closed form)."""
    s = (prediction + (0 if jitter is None else jitter)).ravel()
    f = fixations.ravel() > 0
    thresholds = np.sort(s[f])[::-1]
    tp, fp = [0.0], [0.0]
    for i, threshold in enumerate(thresholds, start=1):
        above = np.sum(s >= threshold)
        tp.append(i / f.sum())
        fp.append((above - i) / (f.size - f.sum()))
    tp.append(1.0)
    fp.append(1.0)
    return float(np.trapezoid(tp, fp) if hasattr(np, "trapezoid") else np.trapz(tp, fp))


def test_all_metrics_on_a_hand_worked_example():
    result = map_metrics(PREDICTION, TARGET)
    # Prediction mean 0.45, deviations (.45, .35, -.35, -.05, -.15, -.25), squares sum 0.535, sample std sqrt(.107).
    # NSS: the fixations are at 0.9 and 0.3: ((.45) + (-.15)) / 2 / sqrt(.107).
    assert result["nss"] == pytest.approx(0.15 / math.sqrt(0.107), abs=1e-12)
    # CC: target deviations (2/3, -1/3, -1/3, -1/3, 2/3, -1/3): cross sum 0.3, target squares 4/3.
    assert result["cc"] == pytest.approx(0.3 / math.sqrt(0.535 * 4 / 3), abs=1e-12)
    # SIM: prediction stretched (p - .1) / .8 = (1, .875, 0, .375, .25, .125), sum 2.625 -> 8/21 and 2/21 where the
    # target (stretched: itself; normalised: 1/2 at each fixation) is non-zero: 8/21 + 2/21.
    assert result["sim"] == pytest.approx(10 / 21, abs=1e-12)
    # KL: prediction / 2.7 is 1/3 and 1/9 at the fixations, target 1/2 there: .5 ln(1.5) + .5 ln(4.5).
    assert result["kl"] == pytest.approx(0.5 * math.log(1.5) + 0.5 * math.log(4.5), abs=1e-9)
    # AUC-Judd: thresholds .9 then .3; points (0, 0), (0, .5), (2/4 of the others >= .3, 1), (1, 1):
    # area .5 * (.5 + 1) / 2 + .5 * 1 = 0.875.
    assert result["auc_judd"] == pytest.approx(0.875, abs=1e-12)
    assert result["mse"] == pytest.approx((0.01 + 0.64 + 0.01 + 0.16 + 0.49 + 0.04) / 6, abs=1e-12)
    for name, function in (("nss", nss), ("cc", cc), ("sim", sim), ("kl", kl), ("auc_judd", auc_judd)):
        assert function(PREDICTION, TARGET) == pytest.approx(result[name], abs=1e-12)


def test_perfect_and_inverted_predictions():
    target = np.zeros((4, 4))
    target[1:3, 1:3] = 1.0
    perfect = map_metrics(target, target)
    assert perfect["cc"] == pytest.approx(1.0) and perfect["sim"] == pytest.approx(1.0)
    assert perfect["kl"] == pytest.approx(0.0, abs=1e-12) and perfect["mse"] == 0.0
    # The fixated quarter: 12 zeros and 4 ones, mean 1/4, sample std sqrt(3/16 * 16/15) = 1/sqrt(5): (3/4) sqrt(5).
    assert perfect["nss"] == pytest.approx(0.75 * math.sqrt(5))
    # All four fixations tie at 1 above every other pixel: AUC 1 (the group holds the last fixation: q = 4/5, but no
    # other pixel is in it).
    assert perfect["auc_judd"] == pytest.approx(1.0)
    inverted = map_metrics(1.0 - target, target)
    assert inverted["cc"] == pytest.approx(-1.0) and inverted["sim"] == pytest.approx(0.0)
    assert inverted["nss"] == pytest.approx(-0.75 * math.sqrt(5))  # the fixated pixels hold 0, the mean 3/4


def test_auc_judd_without_ties_is_the_mit_procedure():
    rng = np.random.default_rng(0)
    for _ in range(20):
        prediction = rng.random((7, 9))
        fixations = rng.random((7, 9)) < 0.2
        fixations[0, 0] = True
        fixations[-1, -1] = False
        assert auc_judd(prediction, fixations) == pytest.approx(mit_auc_judd(prediction, fixations), abs=1e-12)


def test_auc_judd_with_ties_is_the_expected_jittered_mit_value():
    # Hand: values (.5 fixated, .5, .5, .2 fixated). The .5 group holds 1 fixation (K = 0, K + p = 1 < 2: q = 1), so
    # each of its two other pixels earns (0 + 1/2 + 1/2) / 2 = 1/2; no other pixel is below .2. AUC = 1/2.
    prediction = np.array([[0.5, 0.5], [0.5, 0.2]])
    fixations = np.array([[1, 0], [0, 1]])
    assert auc_judd(prediction, fixations) == pytest.approx(0.5, abs=1e-12)
    # A constant prediction with one fixation of four pixels: 0.5 + 0.5 / 2.
    assert auc_judd(np.ones((2, 2)), np.array([[1, 0], [0, 0]])) == pytest.approx(0.75, abs=1e-12)
    # The MIT code's own jitter, averaged over many draws, converges to the closed form on a map full of ties.
    rng = np.random.default_rng(1)
    prediction = rng.integers(0, 3, (6, 6)).astype(float)
    fixations = rng.random((6, 6)) < 0.3
    draws = [mit_auc_judd(prediction, fixations, rng.random((6, 6)) * 1e-7) for _ in range(4000)]
    assert auc_judd(prediction, fixations) == pytest.approx(np.mean(draws), abs=3 * np.std(draws) / np.sqrt(4000) + 1e-9)


def test_degenerate_maps_give_their_documented_values_without_warnings():
    target = np.array([[1.0, 0.0], [0.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for constant in (np.ones((2, 2)), np.zeros((2, 2)), np.full((2, 2), 0.3)):
            result = map_metrics(constant, target)
            assert result["nss"] == 0.0 and result["cc"] == 0.0
            assert result["sim"] == pytest.approx(0.25)  # min(1/4, 1) at the fixation, 0 elsewhere
            assert result["kl"] == pytest.approx(math.log(4.0))  # 1 * log(1 / (1/4))
            assert result["auc_judd"] == pytest.approx(0.75)
        # A constant non-empty target: CC 0; a target marking every pixel: AUC-Judd NaN (nothing to reject).
        everywhere = map_metrics(PREDICTION, np.full((2, 3), 0.6))
        assert everywhere["cc"] == 0.0 and math.isnan(everywhere["auc_judd"])
        assert everywhere["nss"] == pytest.approx(0.0, abs=1e-12)  # the mean of a standardised map
        # An empty target: no saliency metric, MSE only.
        empty = map_metrics(PREDICTION, np.zeros((2, 3)))
        assert all(math.isnan(empty[name]) for name in ("nss", "cc", "sim", "auc_judd", "kl"))
        assert empty["mse"] == pytest.approx(np.mean(PREDICTION**2))


def test_fixation_threshold_binarises_the_target():
    target = np.array([[0.9, 0.04], [0.0, 0.0]])
    assert map_metrics(PREDICTION[:, :2], target)["auc_judd"] == pytest.approx(auc_judd(PREDICTION[:, :2], target > 0))
    strict = map_metrics(PREDICTION[:, :2], target, fixation_threshold=0.05)
    assert strict["auc_judd"] == pytest.approx(auc_judd(PREDICTION[:, :2], target > 0.05))
    assert math.isnan(map_metrics(PREDICTION[:, :2], target, fixation_threshold=0.95)["nss"])


def test_batch_averages_over_non_empty_targets_and_reports_empty_ones_by_mse():
    maps = [(PREDICTION, TARGET), (np.ones((2, 3)), TARGET), (PREDICTION, np.zeros((2, 3))),
            (PREDICTION, np.full((2, 3), 0.6))]
    result = map_metrics_batch([p for p, _ in maps], [t for _, t in maps])
    rows = [map_metrics(p, t) for p, t in maps]
    assert result["n_maps"] == 4 and result["n_empty"] == 1
    assert result["nss"] == pytest.approx((rows[0]["nss"] + 0.0 + rows[3]["nss"]) / 3)
    assert result["auc_judd"] == pytest.approx((0.875 + rows[1]["auc_judd"]) / 2)  # the all-marked target is out
    assert result["mse"] == pytest.approx(np.mean([row["mse"] for row in rows]))
    assert result["mse_empty"] == pytest.approx(rows[2]["mse"])
    assert math.isnan(map_metrics_batch([PREDICTION], [TARGET])["mse_empty"])
    all_empty = map_metrics_batch([PREDICTION], [np.zeros((2, 3))])
    assert math.isnan(all_empty["nss"]) and all_empty["n_empty"] == 1


def test_grey_images_and_arrays_are_read_as_grey_over_255():
    from PIL import Image

    grey = (TARGET * 255).astype(np.uint8)
    assert map_metrics(PREDICTION, grey) == pytest.approx(map_metrics(PREDICTION, TARGET))
    assert map_metrics(PREDICTION, Image.fromarray(grey)) == pytest.approx(map_metrics(PREDICTION, TARGET))


@pytest.mark.parametrize(
    ("prediction", "target", "message"),
    [
        (np.ones((2, 3)), np.ones((3, 2)), "differ in shape"),
        (np.array([[np.nan, 1.0]]), np.ones((1, 2)), "NaN or infinite"),
        (np.array([[-0.1, 1.0]]), np.ones((1, 2)), "negative"),
        (np.ones(4), np.ones(4), "2-D map"),
        (np.ones((1, 1)), np.ones((1, 1)), "at least 2 pixels"),
        ([["a", "b"]], np.ones((1, 2)), "array of numbers"),
    ],
)
def test_bad_inputs_raise_clear_errors(prediction, target, message):
    with pytest.raises(ValueError, match=message):
        map_metrics(prediction, target)


def test_batch_errors_name_the_map():
    with pytest.raises(ValueError, match="map 1: prediction"):
        map_metrics_batch([PREDICTION, np.ones((3, 3))], [TARGET, TARGET])
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        map_metrics_batch([PREDICTION, PREDICTION], [TARGET])
    with pytest.raises(ValueError, match="No maps"):
        map_metrics_batch([], [])


def test_evaluate_module_matches_the_plain_function():
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(str(REPO_ROOT / "evaluate_metrics" / "map_metrics"))
    predictions = [PREDICTION, np.ones((2, 3)), np.full((3, 2), 0.25)]
    targets = [TARGET, TARGET, np.array([[0, 0], [1, 0], [0, 0.5]])]
    expected = map_metrics_batch(predictions, targets)
    metric.add_batch(predictions=[p.tolist() for p in predictions[:2]], references=[t.tolist() for t in targets[:2]])
    metric.add_batch(predictions=[predictions[2].tolist()], references=[targets[2].tolist()])
    assert metric.compute() == pytest.approx(expected, abs=1e-6, nan_ok=True)  # evaluate stores float32


@pytest.mark.slow
def test_evaluate_module_loads_offline(tmp_path):
    script = (
        "import json, evaluate\n"
        "m = evaluate.load('evaluate_metrics/map_metrics')\n"
        "r = m.compute(predictions=[[[0.9, 0.1], [0.2, 0.0]]], references=[[[1.0, 0.0], [0.0, 0.0]]])\n"
        "print(json.dumps({'auc_judd': r['auc_judd'], 'n_maps': r['n_maps']}))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf_home"))
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == {"auc_judd": 1.0, "n_maps": 1}
