# Copyright 2025 The FuScore authors. Licensed under the Apache License, Version 2.0.
"""Agreement of a predicted artifact map with a target map: NSS, CC, SIM, AUC-Judd and KL, plus MSE.

The five are the saliency-benchmark metrics of the MIT Saliency Benchmark (Bylinskii, Judd, Oliva, Torralba and
Durand, "What do different evaluation metrics tell us about saliency models?", TPAMI 2018; its MATLAB code
`code_forMetrics/`), which EVAFusion selects its artifact-map checkpoints by (NSS, CC, SIM, AUC-Judd). A target map is
read as a density (CC, SIM, KL) and, binarised at `target > fixation_threshold`, as the "fixations" (NSS, AUC-Judd).
As in EVAFusion's evaluation, a target with no pixel above the threshold (an image without artifacts) has no
saliency metric; it is scored by MSE alone (`mse_empty`).

Where the MIT code is random or undefined, a fixed value is given instead (all documented in README.md):
* AUC-Judd: the MIT code jitters the map by uniform noise of 1e-7 to break ties. Here ties are handled exactly by
  the *expected* MIT value over that jitter, so equal inputs give equal scores.
* A constant prediction: NSS 0 and CC 0 (it singles out nothing: chance level), SIM and KL read it as the uniform
  distribution (an all-zero prediction included). A constant non-empty target: CC 0.
* AUC-Judd of a target that marks every pixel (nothing left to reject): NaN, and it is left out of the means.

This file is self-contained (numpy, datasets, evaluate) because `evaluate.load("evaluate_metrics/map_metrics")`
copies it alone into the module cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np

MAP_METRICS = ("nss", "cc", "sim", "auc_judd", "kl")
"""The saliency metrics, each defined only for a target with at least one fixation (pixel above the threshold)."""
HIGHER_IS_BETTER = {"nss": True, "cc": True, "sim": True, "auc_judd": True, "kl": False, "mse": False}
KL_EPS = float(np.finfo(np.float64).eps)  # MATLAB's eps, the regulariser of the MIT code's KLdiv (2.2204e-16)


def _as_map(values, name: str) -> np.ndarray:
    if hasattr(values, "getbands"):  # a PIL image: its grey levels
        values = np.asarray(values.convert("L"))
    if isinstance(values, np.ndarray) and values.dtype == np.uint8:
        values = values.astype(np.float64) / 255.0  # an 8-bit grey image, as EVAFusion's maps are stored
    if np.iscomplexobj(values):
        raise ValueError(f"{name} must be real numbers, got complex values.")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a 2-D array of numbers: {error}") from None
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.size < 2:
        raise ValueError(f"{name} must be a 2-D map of at least 2 pixels, got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(array)))} NaN or infinite value(s).")
    if array.min() < 0:
        raise ValueError(f"{name} has negative values (min {array.min():g}); maps are intensities or probabilities >= 0.")
    return array


def _checked_pair(prediction, target) -> tuple[np.ndarray, np.ndarray]:
    prediction, target = _as_map(prediction, "prediction"), _as_map(target, "target")
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction {prediction.shape} and target {target.shape} differ in shape; resize the prediction to the "
            "target's size first."
        )
    return prediction, target


def _is_constant(x: np.ndarray) -> bool:
    return bool(x.max() == x.min())


def _standardised(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std with the sample std (ddof=1, MATLAB's `std`); a constant map gives zeros."""
    if _is_constant(x):
        return np.zeros_like(x)
    return (x - x.mean()) / x.std(ddof=1)


def _distribution(x: np.ndarray, stretch: bool) -> np.ndarray:
    """The map as a distribution summing to 1: min-max stretched first when `stretch` (as the MIT SIM does); a
    constant map (zeros included) is the uniform distribution."""
    if _is_constant(x):
        return np.full_like(x, 1.0 / x.size)
    if stretch:
        x = (x - x.min()) / (x.max() - x.min())
    return x / x.sum()


def nss(prediction, fixations) -> float:
    """Normalized Scanpath Saliency: the mean of the standardised prediction (zero mean, sample std 1) over the
    fixated pixels. NaN when there is no fixation; 0 for a constant prediction."""
    prediction, fixations = _checked_pair(prediction, fixations)
    fixated = fixations > 0
    if not fixated.any():
        return float("nan")
    return float(_standardised(prediction)[fixated].mean())


def cc(prediction, target) -> float:
    """Pearson's linear correlation coefficient between the two maps; 0 when either is constant."""
    prediction, target = _checked_pair(prediction, target)
    if _is_constant(prediction) or _is_constant(target):
        return 0.0
    a, b = prediction - prediction.mean(), target - target.mean()
    return float(np.clip((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()), -1.0, 1.0))


def sim(prediction, target) -> float:
    """Similarity (histogram intersection): `sum_i min(P_i, Q_i)` of the two maps min-max stretched to [0, 1] and
    normalised to sum 1, in [0, 1] (1: the same distribution). A constant map is the uniform distribution."""
    prediction, target = _checked_pair(prediction, target)
    return float(np.minimum(_distribution(prediction, True), _distribution(target, True)).sum())


def kl(prediction, target) -> float:
    """KL divergence of the prediction from the target, both normalised to sum 1 (not stretched):
    `sum_i Q_i log(eps + Q_i / (P_i + eps))`, eps = 2.2204e-16 as in the MIT code. 0 for a perfect prediction, lower is
    better. A constant map (zeros included) is the uniform distribution."""
    prediction, target = _checked_pair(prediction, target)
    p, q = _distribution(prediction, False), _distribution(target, False)
    return float(np.sum(q * np.log(KL_EPS + q / (p + KL_EPS))))


def auc_judd(prediction, fixations) -> float:
    """AUC-Judd: the area under the ROC curve whose thresholds are the prediction's values at the fixated pixels
    (true positives: fixated pixels at or above the threshold; false positives: the other pixels at or above it),
    joined by straight lines from (0, 0) to (1, 1), as the MIT benchmark's `AUC_Judd.m` computes it.

    The MIT code breaks ties between equal prediction values with random jitter; this gives the expected value of
    that computation over the jitter, in closed form. In a group of tied pixels holding `p` fixations, with `K`
    fixations strictly above the group, a non-fixated pixel has on average `K + p / 2` fixations above it; it adds
    `(k + 1/2) / N_fix` when `k < N_fix` fixations are above it and 1 when all are, so its expected credit is
    `(K + p / 2 + q / 2) / N_fix`, `q = 1` if `K + p < N_fix` else `p / (p + 1)`. AUC = mean credit over the
    non-fixated pixels. Without ties this is exactly the MIT value. A constant prediction scores
    `0.5 + 0.5 / (N_fix + 1)` (the linear interpolation of Judd's curve favours it slightly over 0.5).

    Returns NaN when there is no fixation, or no pixel that is not one.
    """
    prediction, fixations = _checked_pair(prediction, fixations)
    fixated = (fixations > 0).ravel()
    num_fixations = int(fixated.sum())
    num_others = fixated.size - num_fixations
    if num_fixations == 0 or num_others == 0:
        return float("nan")
    values, group = np.unique(prediction.ravel(), return_inverse=True)  # ascending values
    positives = np.bincount(group, weights=fixated, minlength=len(values))[::-1]  # now descending
    negatives = np.bincount(group, weights=~fixated, minlength=len(values))[::-1]
    above = np.cumsum(positives) - positives  # fixations strictly above each group
    last = above + positives >= num_fixations  # the group holding the lowest fixation, and those below it
    q = np.where(last, positives / (positives + 1.0), 1.0)
    credit = (above + positives / 2.0 + q / 2.0) / num_fixations
    return float(np.clip((negatives * credit).sum() / num_others, 0.0, 1.0))


def mse(prediction, target) -> float:
    """Mean squared error between the two maps (EVAFusion's map loss and its score for targets without artifacts)."""
    prediction, target = _checked_pair(prediction, target)
    return float(np.mean((prediction - target) ** 2))


def map_metrics(prediction, target, fixation_threshold: float = 0.0) -> dict[str, float]:
    """All metrics of one predicted map against one target map of the same shape.

    Args:
        prediction: 2-D array of values >= 0 (an artifact probability map; a uint8 array is read as grey / 255).
        target: 2-D array of values >= 0 of the same shape (e.g. EVAFusion's `artifact_heatmap` / 255).
        fixation_threshold: target pixels above it are the "fixations" of NSS and AUC-Judd (default 0: any pixel the
            target marks at all, as the public reimplementation of Rich Human Feedback's heat-map metrics does).

    Returns:
        `nss`, `cc`, `sim`, `auc_judd`, `kl` (all NaN when the target has no fixation) and `mse`.
    """
    prediction, target = _checked_pair(prediction, target)
    fixations = target > float(fixation_threshold)
    result = {"mse": mse(prediction, target)}
    if not fixations.any():
        return {**{name: float("nan") for name in MAP_METRICS}, **result}
    return {
        "nss": nss(prediction, fixations),
        "cc": cc(prediction, target),
        "sim": sim(prediction, target),
        "auc_judd": auc_judd(prediction, fixations),
        "kl": kl(prediction, target),
        **result,
    }


def map_metrics_batch(
    predictions: Sequence, targets: Sequence, fixation_threshold: float = 0.0
) -> dict[str, float]:
    """Per-map `map_metrics`, averaged as EVAFusion reports them.

    Returns:
        * `nss`, `cc`, `sim`, `auc_judd`, `kl`: means over the maps whose target has a fixation (AUC-Judd also leaves
          out targets that mark every pixel); NaN when no map counts.
        * `mse`: mean over all maps; `mse_empty`: mean over the maps whose target is empty (NaN when none is).
        * `n_maps`, `n_empty`: how many maps, and how many with an empty target.

    Raises:
        ValueError: different numbers of predictions and targets, no map, or a map that `map_metrics` refuses (its
            index named).
    """
    predictions, targets = list(predictions), list(targets)
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets.")
    if not predictions:
        raise ValueError("No maps to evaluate.")
    rows, empty = [], []
    for i, (prediction, target) in enumerate(zip(predictions, targets)):
        try:
            row = map_metrics(prediction, target, fixation_threshold)
        except ValueError as error:
            raise ValueError(f"map {i}: {error}") from None
        rows.append(row)
        empty.append(bool(np.isnan(row["nss"])))
    nan = float("nan")
    result = {}
    for name in MAP_METRICS:
        values = np.array([row[name] for row in rows])
        values = values[~np.isnan(values)]
        result[name] = float(values.mean()) if values.size else nan
    errors = np.array([row["mse"] for row in rows])
    empty = np.array(empty)
    result["mse"] = float(errors.mean())
    result["mse_empty"] = float(errors[empty].mean()) if empty.any() else nan
    result["n_maps"] = len(rows)
    result["n_empty"] = int(empty.sum())
    return result


# ----------------------------------------------------------------------------------------
# evaluate module
# ----------------------------------------------------------------------------------------
_DESCRIPTION = """\
Agreement of predicted artifact (or saliency) maps with target maps: NSS, CC, SIM, AUC-Judd and KL with the MIT
Saliency Benchmark's definitions (deterministic where its code is random), over the maps whose target marks any pixel,
and MSE over all maps and over those whose target is empty, as EVAFusion evaluates its artifact heat maps.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D arrays): predicted maps, values >= 0.
    references (`list` of 2-D arrays): target maps of the same shapes, values >= 0 (grey / 255).
    fixation_threshold (`float`, defaults to 0): target pixels above it count as fixations (NSS, AUC-Judd).
Returns:
    nss, cc, sim, auc_judd, kl, mse, mse_empty, n_maps, n_empty.
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("evaluate_metrics/map_metrics")
    >>> metric.compute(predictions=[[[0.9, 0.1], [0.2, 0.0]]], references=[[[1.0, 0.0], [0.0, 0.0]]])["auc_judd"]
    1.0
"""

_CITATION = """\
@article{bylinskii2018metrics,
  title={What do different evaluation metrics tell us about saliency models?},
  author={Bylinskii, Zoya and Judd, Tilke and Oliva, Aude and Torralba, Antonio and Durand, Fr{\\'e}do},
  journal={IEEE Transactions on Pattern Analysis and Machine Intelligence},
  volume={41}, number={3}, pages={740--757}, year={2018}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MapMetrics(evaluate.Metric):
    """evaluate wrapper around `map_metrics_batch`."""

    def _info(self):
        grid = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": grid, "references": grid}),
            reference_urls=["https://github.com/cvzoya/saliency/tree/master/code_forMetrics", "https://saliency.tuebingen.ai/"],
        )

    def _compute(self, predictions, references, fixation_threshold: float = 0.0):
        return map_metrics_batch(predictions, references, fixation_threshold=fixation_threshold)
