# Copyright 2025 The FuScore authors. Licensed under the Apache License, Version 2.0.
"""Correlation between predicted quality scores and mean opinion scores (MOS).

PLCC (raw and after the VQEG 4-parameter logistic mapping), SRCC, KRCC and RMSE, plus,
when the items are grouped (fused images of one source pair), the mean within-group SRCC and
the within-group pairwise ranking accuracy. Statistics come from scipy.stats; the logistic
mapping is fitted with scipy.optimize.curve_fit.

This file is self-contained (numpy, scipy, datasets, evaluate) because
`evaluate.load("evaluate_metrics/plcc_srcc")` copies it alone into the module cache.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence

import datasets
import evaluate
import numpy as np
from scipy import optimize, special, stats

MIN_ITEMS = 3
"""Fewer items than this make every statistic meaningless; inputs this short raise ValueError."""


def logistic_4p(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic, f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2.

    Written with scipy.special.expit, which does not overflow for large |x - b3| / |b4|.
    """
    scale = max(abs(b4), np.finfo(float).tiny)
    return (b1 - b2) * special.expit((x - b3) / scale) + b2


def fit_logistic_4p(predictions: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, bool]:
    """Fit `logistic_4p` mapping predictions to references by least squares.

    Initial values follow common IQA practice: the plateaus at the extreme references (swapped
    when the rank correlation is negative, so the fit can be decreasing), the midpoint at the
    mean prediction and the slope scale at the standard deviation of the predictions.

    Returns:
        (params, converged). When curve_fit does not converge, or with fewer than 4 items (the
        4 parameters would be underdetermined), the params describe the least-squares straight
        line instead (b1 = slope, b2 = intercept, b3 = b4 = NaN) and converged is False.
    """
    if len(predictions) >= 4:
        rho = stats.spearmanr(predictions, references).statistic
        high, low = float(references.max()), float(references.min())
        if rho < 0:
            high, low = low, high
        initial = [high, low, float(predictions.mean()), float(predictions.std())]
        try:
            with warnings.catch_warnings():
                # OptimizeWarning: covariance not estimable; irrelevant, only the params are used.
                warnings.simplefilter("ignore", optimize.OptimizeWarning)
                params, _ = optimize.curve_fit(logistic_4p, predictions, references, p0=initial, maxfev=20000)
            if np.all(np.isfinite(params)):
                return params, True
        except (RuntimeError, ValueError):
            pass
    slope, intercept = np.polyfit(predictions, references, deg=1)
    return np.array([slope, intercept, np.nan, np.nan]), False


def apply_fitted_mapping(predictions: np.ndarray, params: np.ndarray, converged: bool) -> np.ndarray:
    """Apply the result of `fit_logistic_4p` (the logistic, or the linear fallback)."""
    if converged:
        return logistic_4p(predictions, *params)
    return params[0] * predictions + params[1]


def _as_scores(values, name: str) -> np.ndarray:
    if np.iscomplexobj(values):  # float64 would drop the imaginary part with only a warning
        raise ValueError(f"{name} must be real numbers, got complex values.")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a sequence of numbers: {error}") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s).")
    return array


def _is_constant(values: np.ndarray) -> bool:
    return bool(np.all(values == values[0]))


def within_group_statistics(
    predictions: np.ndarray, references: np.ndarray, groups: Sequence[Hashable]
) -> dict[str, float]:
    """Ranking quality inside groups (e.g. the fused images of one source pair).

    * `srcc_within`: mean over groups of the group's SRCC. A group counts when it has at least
      `MIN_ITEMS` items and non-constant references; a group whose predictions are constant
      counts as SRCC 0 (it orders nothing). NaN when no group counts.
    * `pairwise_accuracy_within`: over all within-group pairs (i, j) whose references differ,
      the fraction ordered like the references; a pair tied in the predictions scores 1/2.
      Pairs tied in the references are left out (they have no order to get right). NaN when
      there is no such pair.
    * `n_groups_srcc`, `n_pairs_within`: how many groups / pairs those two numbers average.
    """
    labels = np.asarray([str(group) for group in groups])
    group_srcc = []
    pair_scores_sum = 0.0
    pair_count = 0
    for label in np.unique(labels):
        members = labels == label
        group_predictions = predictions[members]
        group_references = references[members]
        if len(group_references) >= MIN_ITEMS and not _is_constant(group_references):
            if _is_constant(group_predictions):
                group_srcc.append(0.0)
            else:
                group_srcc.append(stats.spearmanr(group_predictions, group_references).statistic)
        # Upper triangle of all pairwise differences within the group.
        upper = np.triu_indices(len(group_references), k=1)
        reference_order = np.sign(np.subtract.outer(group_references, group_references)[upper])
        prediction_order = np.sign(np.subtract.outer(group_predictions, group_predictions)[upper])
        ordered = reference_order != 0
        agreement = np.where(prediction_order == 0, 0.5, (prediction_order == reference_order).astype(float))
        pair_scores_sum += float(agreement[ordered].sum())
        pair_count += int(ordered.sum())
    return {
        "srcc_within": float(np.mean(group_srcc)) if group_srcc else float("nan"),
        "pairwise_accuracy_within": pair_scores_sum / pair_count if pair_count else float("nan"),
        "n_groups_srcc": len(group_srcc),
        "n_pairs_within": pair_count,
    }


def correlation_metrics(predictions, references, groups: Sequence[Hashable] | None = None) -> dict[str, float]:
    """PLCC / SRCC / KRCC / RMSE between predicted scores and references (MOS).

    Args:
        predictions: predicted scores, one per item.
        references: ground-truth scores (MOS), same length.
        groups: optional group id per item (e.g. the source pair); adds within-group statistics.

    Returns:
        * `plcc`: Pearson correlation of the raw predictions.
        * `plcc_logistic`: Pearson correlation after the 4-parameter logistic mapping (VQEG),
          negative when the fitted curve is decreasing (so it has the sign of plcc and srcc).
        * `srcc`: Spearman rank correlation; `krcc`: Kendall tau-b.
        * `rmse`: RMSE between the mapped predictions and the references (the IQA convention;
          in MOS units). `rmse_raw`: RMSE of the raw predictions, meaningful only when they
          are on the MOS scale.
        * `logistic_fit_converged`: False when curve_fit failed (or there are only 3 items) and
          a straight-line fit was used for `plcc_logistic` and `rmse`.
        * `n`: number of items; with `groups`, the keys of `within_group_statistics`.
        Correlations keep their sign. When the predictions or the references are constant the
        correlations are undefined and returned as NaN (documented, not an error).

    Raises:
        ValueError: different lengths, fewer than `MIN_ITEMS` items, NaN/inf values, or
        `groups` of a different length.
    """
    predictions = _as_scores(predictions, "predictions")
    references = _as_scores(references, "references")
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length: {len(predictions)} vs {len(references)}."
        )
    if len(predictions) < MIN_ITEMS:
        raise ValueError(f"At least {MIN_ITEMS} items are needed, got {len(predictions)}.")

    if groups is not None:
        groups = list(groups)
        if len(groups) != len(predictions):
            raise ValueError(f"groups has {len(groups)} entries but there are {len(predictions)} predictions.")

    nan = float("nan")
    result: dict[str, float] = {"n": len(predictions)}
    result["rmse_raw"] = float(np.sqrt(np.mean((predictions - references) ** 2)))
    if _is_constant(predictions) or _is_constant(references):
        result.update(plcc=nan, plcc_logistic=nan, srcc=nan, krcc=nan, rmse=nan, logistic_fit_converged=False)
    else:
        params, converged = fit_logistic_4p(predictions, references)
        mapped = apply_fitted_mapping(predictions, params, converged)
        result["plcc"] = float(stats.pearsonr(predictions, references).statistic)
        # A decreasing fitted curve makes pearson(mapped, references) positive; give it the
        # curve's direction so plcc_logistic reads like plcc and srcc.
        direction = np.sign(params[0] - params[1]) if converged else np.sign(params[0])
        result["plcc_logistic"] = (
            nan if _is_constant(mapped) else float(direction * stats.pearsonr(mapped, references).statistic)
        )
        result["srcc"] = float(stats.spearmanr(predictions, references).statistic)
        result["krcc"] = float(stats.kendalltau(predictions, references).statistic)
        result["rmse"] = float(np.sqrt(np.mean((mapped - references) ** 2)))
        result["logistic_fit_converged"] = converged

    if groups is not None:
        result.update(within_group_statistics(predictions, references, groups))
    return result


# ----------------------------------------------------------------------------------------
# evaluate module
# ----------------------------------------------------------------------------------------
_DESCRIPTION = """\
Agreement between predicted quality scores and mean opinion scores: PLCC (raw and after the
VQEG 4-parameter logistic fit), SRCC, KRCC, RMSE after the fit (and raw), and with source-pair
groups the mean within-group SRCC and within-group pairwise ranking accuracy.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted scores.
    references (`list` of `float`): mean opinion scores.
    groups (`list` of `str`, optional): group (source pair) of each item. With the default
        configuration pass it to `compute`; with the "grouped" configuration it is an input
        column that `add_batch` accepts too.
Returns:
    plcc, plcc_logistic, srcc, krcc, rmse, rmse_raw, logistic_fit_converged, n and, with
    groups, srcc_within, pairwise_accuracy_within, n_groups_srcc, n_pairs_within.
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("evaluate_metrics/plcc_srcc")
    >>> metric.compute(predictions=[1.0, 2.0, 3.5, 4.0], references=[1.2, 1.9, 3.0, 4.4])["srcc"]
    1.0
"""

_CITATION = """\
@techreport{vqeg2000,
  title={Final report from the Video Quality Experts Group on the validation of objective models of video quality assessment},
  author={{Video Quality Experts Group}},
  year={2000}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PlccSrcc(evaluate.Metric):
    """evaluate wrapper around `correlation_metrics`."""

    def _info(self):
        columns = {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
        if self.config_name == "grouped":
            columns["groups"] = datasets.Value("string")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(columns),
            reference_urls=["https://www.its.bldrdoc.gov/vqeg/projects/frtv-phase-i/frtv-phase-i.aspx"],
        )

    def _compute(self, predictions, references, groups=None):
        return correlation_metrics(predictions, references, groups=groups)
