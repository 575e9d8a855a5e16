# Copyright 2025 The FuScore Authors.
# Licensed under the Apache License, Version 2.0.
"""Soft labels of FuScore and of its baselines (DESIGN.md section 3), in float64 numpy.

Conventions:

* A *level distribution* is a vector over the ``L`` rating levels (``L = 5``). Its entry ``l`` is the mass on the
  level whose value is ``level_values[l]``, in **the order in which ``level_values`` is given**. The default is the
  model's own order, ``DEFAULT_LEVEL_VALUES = (5, 4, 3, 2, 1)`` (excellent..bad, the order of the level words and
  of the model's level logits), so a label built with the defaults lines up with ``FuScoreForQuality``'s logits.
  Any other order (e.g. ascending ``(1, 2, 3, 4, 5)``) gives the same masses in that order: every builder works on
  the sorted values and permutes back, so the numbers do not depend on the order asked for.
* Scores (``mu``) live on the level scale, ``[min(level_values), max(level_values)]``.
* Builders take numpy, lists or tensors; they return numpy float64, or float64 tensors on ``mu``'s device when ``mu``
  is a tensor.

The ``*_targets`` functions at the end are what an objective's registry record uses as its label builder: the
``(soft_label, sigma)`` pair a collator stores for each row, filling a missing overall score from the sub-scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Optional, Union, get_args

import numpy as np
import torch
from scipy.stats import norm

from configuration_fuscore import DEFAULT_LEVEL_VALUES


__all__ = [
    "DEFAULT_LEVEL_VALUES",
    "MeanCorrection",
    "resolve_overall_score",
    "fuscore_soft_label",
    "deqa_soft_label",
    "qalign_label",
    "onehot_label",
    "fuscore_targets",
    "deqa_targets",
    "fuscore_mos_std_only_targets",
    "qalign_targets",
    "onehot_targets",
    "mos_standard_error",
]

MeanCorrection = Literal["iterative", "single"]

ArrayLike = Union[float, Sequence[float], np.ndarray, torch.Tensor]

# Spreads (or pairwise variances) below this are treated as "no spread" when dividing.
_TINY = 1e-12


def _level_values_np(level_values: Optional[ArrayLike]) -> np.ndarray:
    values = np.asarray(DEFAULT_LEVEL_VALUES if level_values is None else _to_numpy(level_values), dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"`level_values` must be a 1-D sequence of at least two values, got shape {values.shape}.")
    if np.unique(values).size != values.size:
        raise ValueError(f"`level_values` must be distinct, got {values.tolist()}.")
    return values


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    # dtype=float turns None into NaN, so lists with missing entries are accepted.
    return np.asarray(x, dtype=np.float64)


def _like_input(x: np.ndarray, reference: ArrayLike, scalar: bool) -> Union[np.ndarray, torch.Tensor, float]:
    """Returns `x` as a float64 torch tensor on `reference`'s device if `reference` is a tensor, else as numpy."""
    if isinstance(reference, torch.Tensor):
        return torch.as_tensor(x, dtype=torch.float64, device=reference.device)
    if scalar and x.ndim == 0:
        return float(x)
    return x


def _check_range(mu: np.ndarray, values: np.ndarray) -> np.ndarray:
    lo, hi = values.min(), values.max()
    if np.any(~np.isfinite(mu)):
        raise ValueError("`mu` is missing (NaN) and there is no sub-score to take the mean of.")
    # Scores mapped to [1, 5] by floating point arithmetic may overshoot by an ulp; anything more is a data bug.
    if np.any(mu < lo - 1e-6) or np.any(mu > hi + 1e-6):
        raise ValueError(f"`mu` must lie in [{lo}, {hi}] (the level scale), got values in [{mu.min()}, {mu.max()}].")
    return np.clip(mu, lo, hi)


def _two_level_split(mu: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """Mass `1 - frac` on the level just below `mu` and `frac` on the one just above (one-hot on an exact level).

    Args:
        mu (`np.ndarray` of shape `(N,)`): scores inside `[sorted_values[0], sorted_values[-1]]`.
        sorted_values (`np.ndarray` of shape `(L,)`): ascending level values.

    Returns:
        `np.ndarray` of shape `(N, L)`, in ascending level order. Its mean is exactly `mu` (linear interpolation).
    """
    num_levels = sorted_values.size
    # Index of the level at or just below mu; mu == max value uses the last interval with frac = 1.
    lower = np.clip(np.searchsorted(sorted_values, mu, side="right") - 1, 0, num_levels - 2)
    frac = (mu - sorted_values[lower]) / (sorted_values[lower + 1] - sorted_values[lower])
    rows = np.arange(mu.size)
    q = np.zeros((mu.size, num_levels))
    q[rows, lower] = 1.0 - frac
    q[rows, lower + 1] += frac
    return q


def _discretised_gaussian(mu: np.ndarray, sigma: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """`q_l = Phi((b_l^+ - mu) / sigma) - Phi((b_l^- - mu) / sigma)` with tails folded into the end levels.

    The bin edges are the midpoints between consecutive levels (`l +- 0.5` for levels 1..5); the first level takes
    everything below its upper edge, the last everything above its lower edge, so the rows sum to one.
    """
    midpoints = (sorted_values[:-1] + sorted_values[1:]) / 2.0
    upper = np.concatenate([midpoints, [np.inf]])
    lower = np.concatenate([[-np.inf], midpoints])
    z_upper = (upper[None, :] - mu[:, None]) / sigma[:, None]
    z_lower = (lower[None, :] - mu[:, None]) / sigma[:, None]
    return norm.cdf(z_upper) - norm.cdf(z_lower)


def _mean_preserving_correction(
    q: np.ndarray, mu: np.ndarray, sorted_values: np.ndarray, mode: MeanCorrection
) -> tuple[np.ndarray, np.ndarray]:
    """The DeQA-Score correction `q' = max(alpha q + beta, 0)`, renormalised.

    With `A = sum q`, `B = sum q_l v_l`, `c` the mean of the level values (3 for levels 1..5) and `L` their number,
    `alpha = (mu - c) / (B - c A)` and `beta = (1 - alpha A) / L` make `alpha q + beta` sum to one with mean `mu`.
    Clipping negative entries breaks that mean again.

    * `mode="single"`: DESIGN.md literally: one affine step, clip, renormalise.
    * `mode="iterative"`: where the step clipped something, the same formula is solved again on the Gaussian
      restricted to the levels that stayed positive (`A, B, c, L` over those levels, zero mass elsewhere), until
      nothing is clipped. At most `L - 1` rounds since the support shrinks each time. When the first step clips
      nothing the result is identical to `single`; otherwise the mean is exact instead of off by up to ~0.3.

    Returns:
        `(q', ok)`: `q'` of shape `(N, L)` and a boolean `(N,)`, False where the correction is undefined (`alpha` not
        finite or not positive, i.e. the label would be flipped, or a support of a single level).
    """
    num_rows, num_levels = q.shape
    out = np.zeros_like(q)
    ok = np.zeros(num_rows, dtype=bool)
    support = np.ones_like(q, dtype=bool)
    pending = np.ones(num_rows, dtype=bool)
    max_rounds = 1 if mode == "single" else num_levels - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(max_rounds):
            size = support.sum(axis=1)
            center = (sorted_values[None, :] * support).sum(axis=1) / size
            mass = (q * support).sum(axis=1)
            first_moment = (q * sorted_values[None, :] * support).sum(axis=1)
            denominator = first_moment - center * mass
            # mu == c and a Gaussian already centred on c (e.g. mu = 3): any alpha keeps the mean; take 1.
            alpha = np.where(
                np.abs(denominator) > _TINY,
                (mu - center) / denominator,
                np.where(np.abs(mu - center) <= _TINY, 1.0, np.nan),
            )
            beta = (1.0 - alpha * mass) / size
            candidate = np.where(support, alpha[:, None] * q + beta[:, None], 0.0)
            valid = np.isfinite(alpha) & (alpha > 0) & (size >= 2)
            clipped = (candidate < 0).any(axis=1)

            if mode == "single":
                positive = np.clip(candidate, 0.0, None)
                total = positive.sum(axis=1, keepdims=True)
                done = pending & valid & (total[:, 0] > 0)
                out[done] = positive[done] / total[done]
                ok |= done
                break

            done = pending & valid & ~clipped
            out[done] = candidate[done]
            ok |= done
            pending &= valid & clipped
            if not pending.any():
                break
            support = np.where(pending[:, None], support & (candidate > 0), support)
    # Renormalise away float rounding (a no-op up to 1 ulp for the rows that succeeded).
    out = np.clip(out, 0.0, None)
    totals = out.sum(axis=1, keepdims=True)
    out = np.divide(out, totals, out=np.zeros_like(out), where=totals > 0)
    return out, ok


def _resolve_scores(
    mu: Optional[ArrayLike], sub_scores: Optional[ArrayLike], values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool]:
    """`mu` (filled with the sub-score mean where missing), `sigma_sub` and whether the input was a single row.

    Returns:
        `mu` of shape `(N,)`, `sigma_sub = sqrt(mean_k (s_k - mu)^2)` over the sub-scores present, of shape `(N,)`
        (0 where none is present), and True when `mu` is a scalar (or absent, with sub-scores of shape `(K,)`).
    """
    mu_np = None if mu is None else _to_numpy(mu)
    scalar_input = mu_np is not None and mu_np.ndim == 0
    mu_np = None if mu_np is None else np.atleast_1d(mu_np)
    if sub_scores is None:
        if mu_np is None:
            raise ValueError("Either `mu` or `sub_scores` must be given.")
        return _check_range(mu_np, values), np.zeros_like(mu_np), scalar_input

    subs = _to_numpy(sub_scores)
    if subs.ndim == 1:
        subs = subs[None, :]
        scalar_input = scalar_input or mu_np is None
    if subs.ndim != 2:
        raise ValueError(f"`sub_scores` must have shape (K,) or (N, K), got {subs.shape}.")
    if mu_np is None:
        mu_np = np.full(subs.shape[0], np.nan)
    if subs.shape[0] != mu_np.shape[0]:
        raise ValueError(f"`sub_scores` has {subs.shape[0]} rows but `mu` has {mu_np.shape[0]}.")
    present = np.isfinite(subs)
    count = present.sum(axis=1)
    sub_sum = np.where(present, subs, 0.0).sum(axis=1)
    sub_mean = np.divide(sub_sum, count, out=np.full(count.shape, np.nan), where=count > 0)
    mu_np = _check_range(np.where(np.isfinite(mu_np), mu_np, sub_mean), values)
    squared = np.where(present, (subs - mu_np[:, None]) ** 2, 0.0).sum(axis=1)
    sigma_sub = np.sqrt(np.divide(squared, count, out=np.zeros_like(squared), where=count > 0))
    return mu_np, sigma_sub, scalar_input


def resolve_overall_score(mu: Optional[ArrayLike], sub_scores: Optional[ArrayLike] = None,
                          level_values: Optional[ArrayLike] = None) -> np.ndarray:
    """The overall score `mu` of each row, `(N,)`: the given one, or the mean of the sub-scores present where it is
    missing (DESIGN.md section 3); the same rule the soft labels use."""
    return _resolve_scores(mu, sub_scores, _level_values_np(level_values))[0]


def fuscore_soft_label(
    mu: Optional[ArrayLike],
    sub_scores: Optional[ArrayLike] = None,
    mos_std: Optional[ArrayLike] = None,
    sigma_min: float = 0.2,
    level_values: Optional[ArrayLike] = None,
    mean_correction: MeanCorrection = "iterative",
    mean_tol: float = 0.1,
) -> tuple[Union[np.ndarray, torch.Tensor], Union[np.ndarray, torch.Tensor, float]]:
    """FuScore soft label (DESIGN.md section 3): a discretised Gaussian whose width says how consensual the rating is.

    Steps, per row:

    1. `mu` = the overall score; where it is missing (None/NaN), the mean of the sub-scores present.
    2. Agreement spread `sigma_sub = sqrt(mean_k (s_k - mu)^2)` over the sub-scores present (None/NaN are skipped;
       0 when none is present).
    3. Total spread `sigma = max(sigma_min, sqrt(sigma_sub^2 + mos_std^2))` (`mos_std` missing -> 0).
    4. `N(mu, sigma^2)` discretised on the levels with edges at the midpoints between levels (`l +- 0.5`), tails folded
       into the end levels, with `scipy.stats.norm.cdf`.
    5. DeQA-Score mean-preserving correction, see `mean_correction` below.
    6. Fallback to the two-level split (mass `1 - frac` on `floor(mu)`, `frac` on `ceil(mu)`; one-hot when `mu` is a
       level) where the raw spread is at the floor (`sqrt(sigma_sub^2 + mos_std^2) <= sigma_min`), where the
       correction is undefined, or where `|E[q'] - mu| > mean_tol`.

    Decisions where DESIGN.md is silent:

    * DESIGN.md asks both for a single clip-and-renormalise step accepted up to `|E[q'] - mu| <= 0.1`, and for the
      label mean to equal `mu` to 1e-3. The single step misses the mean by more than 1e-3 for about half of
      `(mu, sigma)` in `[1, 5] x [0.2, 2]` (worst ~0.33 at the end levels). The default, `"iterative"`, re-solves the
      same `alpha, beta` formula on the levels that stayed positive until nothing is clipped: where the single step
      clips nothing it gives the same label, otherwise its mean is exact. `"single"` is DESIGN.md word for word (the
      mean is then only guaranteed to `mean_tol`).
    * With `"iterative"` the mean equals `mu` to float precision on every path, fallback included (the two-level
      split interpolates linearly between the two bracketing levels, so its mean is exact too).
    * A correction with `alpha <= 0` (it would flip the label) counts as failed and falls back.
    * "At the floor" means the raw spread is `<= sigma_min`; the returned `sigma` is the floored one (it is the
      Thurstone target spread).
    * Entropy grows with `sigma_sub` for total spreads in about `[0.5, 1.2]` at every `mu` (checked on a grid). Near
      the floor the DeQA step with `alpha < 1` spreads `beta` uniformly, which can lower the entropy by up to 0.05 nat
      as `sigma` grows; above ~1.5 the folded tails pile mass on the end levels and entropy falls again.
    * `mu` outside the level range by more than 1e-6 raises; smaller overshoots are clipped.
    * For non-default `level_values` (any order, any spacing) the "3" and "5" of DESIGN.md generalise to the mean of
      the level values and their number; the edges are the midpoints between consecutive sorted values.

    Args:
        mu (`float`, array or tensor of shape `(N,)`, or `None`):
            Overall score on the level scale. None/NaN entries are replaced by the mean of the sub-scores.
        sub_scores (array or tensor of shape `(K,)` for a scalar `mu`, or `(N, K)`, *optional*):
            The sub-scores (e.g. the four IVIF sub-dimensions) on the level scale; None/NaN for missing ones.
        mos_std (`float`, array or tensor of shape `(N,)`, *optional*):
            Spread of the raters' overall scores on the level scale; None/NaN means 0.
        sigma_min (`float`, defaults to 0.2): floor of the total spread.
        level_values (sequence or tensor of shape `(L,)`, *optional*, defaults to `DEFAULT_LEVEL_VALUES`, 5..1):
            Values of the levels, in the order wanted for the output's last axis.
        mean_correction (`"iterative"` or `"single"`, defaults to `"iterative"`): see above.
        mean_tol (`float`, defaults to 0.1): largest `|E[q'] - mu|` accepted before falling back.

    Returns:
        `(q, sigma)`: `q` of shape `(N, L)` (or `(L,)` for a scalar `mu`) summing to one over the last axis, and the
        floored total spread `sigma` of shape `(N,)` (or a float). Tensors (float64, on `mu`'s device) when `mu` is a
        tensor, numpy float64 otherwise.
    """
    if mean_correction not in get_args(MeanCorrection):
        raise ValueError(f"`mean_correction` must be one of {get_args(MeanCorrection)}, got {mean_correction!r}.")
    values = _level_values_np(level_values)
    order = np.argsort(values)
    sorted_values = values[order]

    reference = mu if mu is not None else sub_scores
    mu_np, sigma_sub, scalar_input = _resolve_scores(mu, sub_scores, values)

    if mos_std is None:
        rater_std = np.zeros_like(mu_np)
    else:
        rater_std = np.broadcast_to(np.atleast_1d(_to_numpy(mos_std)), mu_np.shape)
        rater_std = np.where(np.isfinite(rater_std), rater_std, 0.0)
        if np.any(rater_std < 0):
            raise ValueError("`mos_std` must be non-negative.")

    raw_sigma = np.sqrt(sigma_sub**2 + rater_std**2)
    at_floor = raw_sigma <= sigma_min
    sigma = np.maximum(sigma_min, raw_sigma)

    fallback = _two_level_split(mu_np, sorted_values)
    # The Gaussian is only evaluated where sigma > 0 (sigma_min may be 0); those rows fall back anyway.
    safe_sigma = np.where(sigma > 0, sigma, 1.0)
    gaussian = _discretised_gaussian(mu_np, safe_sigma, sorted_values)
    corrected, ok = _mean_preserving_correction(gaussian, mu_np, sorted_values, mean_correction)
    mean_error = np.abs(corrected @ sorted_values - mu_np)
    use_fallback = at_floor | ~ok | (mean_error > mean_tol)
    q_sorted = np.where(use_fallback[:, None], fallback, corrected)

    # Back to the caller's level order.
    q = np.empty_like(q_sorted)
    q[:, order] = q_sorted
    if scalar_input:
        return _like_input(q[0], reference, True), _like_input(sigma[0], reference, True)
    return _like_input(q, reference, False), _like_input(sigma, reference, False)


Density = Literal["cdf", "pdf"]

# DeQA-Score's constants (build_soft_labels/gen_soft_label.py and its config.json): the std under which the label
# falls back to the two-level split, the largest accepted miss of the corrected mean, and the guard added to the
# denominator of alpha.
DEQA_STD_THRESHOLD = 0.2
DEQA_MEAN_TOLERANCE = 0.1
DEQA_ALPHA_GUARD = 1e-9
# DeQA-Score's `get_level` widens each equal-fifths bin by this much, so a score up to 1e-8 above an edge stays in
# the lower level.
QALIGN_EDGE_TOLERANCE = 1e-8


def _equally_spaced(sorted_values: np.ndarray, name: str) -> float:
    steps = np.diff(sorted_values)
    if not np.allclose(steps, steps[0], rtol=0, atol=1e-9):
        raise ValueError(f"{name} needs equally spaced level values, got {sorted_values.tolist()}.")
    return float(steps[0])


def deqa_soft_label(
    mu: ArrayLike,
    mos_std: Optional[ArrayLike],
    level_values: Optional[ArrayLike] = None,
    density: Density = "cdf",
) -> tuple[Union[np.ndarray, torch.Tensor], Union[np.ndarray, torch.Tensor, float]]:
    """DeQA-Score's soft label, as its label script builds it (build_soft_labels/gen_soft_label.py).

    Per row, with the levels `v_l` (1..5), their centre `c` (3), their number `L` (5) and their spacing `d` (1):

    1. `p_l = Phi(v_l + d/2; mu, std) - Phi(v_l - d/2; mu, std)` (`density="cdf"`, what DeQA's config uses for
       SPAQ), or `p_l = phi(v_l; mu, std)` (`density="pdf"`, its choice for KonIQ and KADID). No tail folding: the
       mass outside `[v_1 - d/2, v_L + d/2]` is dropped.
    2. One affine correction, `A = sum p`, `B = sum p_l v_l`, `alpha = (mu - c) / (B - c A + 1e-9)`,
       `beta = (1 - alpha A) / L`, `q = max(alpha p + beta, 0)`, **not renormalised**: where a level clips, the row
       sums to more than one. At `mu = c` exactly, alpha is 0 and the label is uniform (the `1e-9` guard).
    3. The two-level split (mass `1 - frac` on `floor(mu)`, `frac` on `ceil(mu)`) where `std < 0.2` or
       `|sum_l q_l v_l - mu| > 0.1`.

    `std` is `mos_std` on the level scale, with no floor (None/NaN count as 0, hence the split). DeQA's split gives
    the neighbouring level 1e-8 of mass when `mu` sits on a level (its bins are widened by 1e-8); this one is exact.

    Args:
        mu (`float`, array or tensor of shape `(N,)`): scores on the level scale.
        mos_std (`float`, array or tensor of shape `(N,)`, or None): the raters' spread on the level scale.
        level_values (*optional*, defaults to `DEFAULT_LEVEL_VALUES`, 5..1): equally spaced level values, in the
            order wanted for the output.
        density (`"cdf"` or `"pdf"`, defaults to `"cdf"`): see 1.

    Returns:
        `(q, std)`: `q` of shape `(N, L)` (or `(L,)` for a scalar `mu`) and the raw std `(N,)` (or a float), the one
        DeQA's fidelity term reads. Tensors when `mu` is a tensor, numpy float64 otherwise.
    """
    if density not in get_args(Density):
        raise ValueError(f"`density` must be one of {get_args(Density)}, got {density!r}.")
    values = _level_values_np(level_values)
    order = np.argsort(values)
    sorted_values = values[order]
    spacing = _equally_spaced(sorted_values, "The DeQA-Score label")
    scalar_input = np.ndim(_to_numpy(mu)) == 0
    mu_np = _check_range(np.atleast_1d(_to_numpy(mu)), values)
    if mos_std is None:
        std = np.zeros_like(mu_np)
    else:
        std = np.broadcast_to(np.atleast_1d(_to_numpy(mos_std)), mu_np.shape).astype(np.float64)
        std = np.where(np.isfinite(std), std, 0.0)
        if np.any(std < 0):
            raise ValueError("`mos_std` must be non-negative.")

    split = std < DEQA_STD_THRESHOLD
    scale = np.where(split, 1.0, std)[:, None]  # the split rows never use their Gaussian
    if density == "cdf":
        p = (norm.cdf(sorted_values[None, :] + spacing / 2, mu_np[:, None], scale)
             - norm.cdf(sorted_values[None, :] - spacing / 2, mu_np[:, None], scale))
    else:
        p = norm.pdf(sorted_values[None, :], mu_np[:, None], scale)
    centre, count = sorted_values.mean(), sorted_values.size
    mass, first_moment = p.sum(axis=1), p @ sorted_values
    alpha = (mu_np - centre) / (first_moment - centre * mass + DEQA_ALPHA_GUARD)
    beta = (1.0 - alpha * mass) / count
    q = np.maximum(alpha[:, None] * p + beta[:, None], 0.0)
    split |= np.abs(q @ sorted_values - mu_np) > DEQA_MEAN_TOLERANCE
    q_sorted = np.where(split[:, None], _two_level_split(mu_np, sorted_values), q)

    out = np.empty_like(q_sorted)
    out[:, order] = q_sorted
    if scalar_input:
        return _like_input(out[0], mu, True), _like_input(std[0], mu, True)
    return _like_input(out, mu, False), _like_input(std, mu, False)


def qalign_label(mu: ArrayLike, level_values: Optional[ArrayLike] = None) -> Union[np.ndarray, torch.Tensor]:
    """Q-Align's label: one-hot on the level whose bin of equal fifths of the score range holds `mu`.

    On the level scale `[lo, hi]` (1..5) the upper edges of levels 1..4 are `lo + k (hi - lo) / 5` (1.8, 2.6, 3.4,
    4.2); a score on an edge, or up to 1e-8 above it, belongs to the lower level (DeQA-Score's `get_level`, which
    re-implements Q-Align's binning; Q-Align publishes its labels as data, not the script). The scores must already
    be on the table's range mapped to the level scale (Q-Align bins the data set's own min..max range).

    Returns:
        `(L,)` or `(N, L)` one-hot rows in the order of `level_values` (tensor if `mu` is a tensor, numpy otherwise).
    """
    def upper_edges(sorted_values):
        lo, hi, count = sorted_values[0], sorted_values[-1], sorted_values.size
        return lo + np.arange(1, count) * (hi - lo) / count + QALIGN_EDGE_TOLERANCE

    # side="left": the first bin whose upper edge (+ tolerance) is at or above mu.
    return _one_hot_in_bins(mu, level_values, upper_edges, side="left")


def onehot_label(mu: ArrayLike, level_values: Optional[ArrayLike] = None) -> Union[np.ndarray, torch.Tensor]:
    """One-hot on the level nearest to `mu`, halves rounded up (2.5 -> 3, 4.5 -> 5): the `nearest_onehot` ablation.

    Not Q-Align's label (that is `qalign_label`, bins of equal fifths): the two differ for a fifth of the scale.

    Args:
        mu (`float`, array or tensor of shape `(N,)`): scores on the level scale.
        level_values (sequence or tensor of shape `(L,)`, *optional*, defaults to `DEFAULT_LEVEL_VALUES`, 5..1).

    Returns:
        `(L,)` or `(N, L)` one-hot rows in the order of `level_values` (tensor if `mu` is a tensor, numpy otherwise).
    """
    # side="right": a score exactly on a midpoint goes to the upper level (round half up).
    return _one_hot_in_bins(mu, level_values, lambda v: (v[:-1] + v[1:]) / 2.0, side="right")


def _one_hot_in_bins(mu: ArrayLike, level_values: Optional[ArrayLike], upper_edges, side: str):
    """One-hot rows on the level whose bin holds `mu`; `upper_edges(sorted_values)` gives the bins' upper edges on the
    ascending level values, `side` which bin a score on an edge joins (numpy's `searchsorted`)."""
    values = _level_values_np(level_values)
    order = np.argsort(values)
    scalar_input = np.ndim(_to_numpy(mu)) == 0
    mu_np = _check_range(np.atleast_1d(_to_numpy(mu)), values)
    index_sorted = np.searchsorted(upper_edges(values[order]), mu_np, side=side)
    q = np.zeros((mu_np.size, values.size))
    q[np.arange(mu_np.size), order[index_sorted]] = 1.0
    return _like_input(q[0] if scalar_input else q, mu, False)


# ---------------------------------------------------------------------------------------------------------------------
# Label builders of the objectives: (mu, sub_scores, mos_std) -> (soft_label, sigma), what a collator stores per row
# ---------------------------------------------------------------------------------------------------------------------

Targets = tuple[Union[np.ndarray, torch.Tensor], Union[np.ndarray, torch.Tensor, float]]


def _filled_mu(mu: Optional[ArrayLike], sub_scores: Optional[ArrayLike],
               level_values: Optional[ArrayLike]) -> Union[np.ndarray, torch.Tensor, float]:
    """`mu` with the sub-score mean where it is missing, in `mu`'s own kind (scalar, numpy or tensor)."""
    reference = mu if mu is not None else sub_scores
    filled, _, scalar_input = _resolve_scores(mu, sub_scores, _level_values_np(level_values))
    return _like_input(filled[0] if scalar_input else filled, reference, scalar_input)


def fuscore_targets(mu: Optional[ArrayLike], sub_scores: Optional[ArrayLike] = None,
                    mos_std: Optional[ArrayLike] = None, sigma_min: float = 0.2,
                    level_values: Optional[ArrayLike] = None) -> Targets:
    """`fuscore_soft_label(mu, sub_scores, mos_std)`: the spread comes from the sub-scores and the raters."""
    return fuscore_soft_label(mu, sub_scores, mos_std, sigma_min=sigma_min, level_values=level_values)


def deqa_targets(mu: Optional[ArrayLike], sub_scores: Optional[ArrayLike] = None,
                 mos_std: Optional[ArrayLike] = None, sigma_min: float = 0.2,
                 level_values: Optional[ArrayLike] = None) -> Targets:
    """`deqa_soft_label(mu, mos_std)`: DeQA-Score's label and its raw std (`sigma_min` does not apply: DeQA has
    no floor); sub-scores only fill a missing `mu`."""
    return deqa_soft_label(_filled_mu(mu, sub_scores, level_values), mos_std, level_values=level_values)


def fuscore_mos_std_only_targets(mu: Optional[ArrayLike], sub_scores: Optional[ArrayLike] = None,
                                 mos_std: Optional[ArrayLike] = None, sigma_min: float = 0.2,
                                 level_values: Optional[ArrayLike] = None) -> Targets:
    """`fuscore_soft_label(mu, None, mos_std)`: FuScore's label machinery with the spread from `mos_std` alone
    (`sigma = max(sigma_min, mos_std)`); sub-scores only fill a missing `mu`."""
    return fuscore_soft_label(_filled_mu(mu, sub_scores, level_values), None, mos_std, sigma_min=sigma_min,
                              level_values=level_values)


def _with_fuscore_sigma(q, mu, sub_scores, mos_std, sigma_min, level_values) -> Targets:
    # No loss of a one-hot objective reads sigma; it is FuScore's so every batch keeps the same fields.
    _, sigma = fuscore_soft_label(mu, sub_scores, mos_std, sigma_min=sigma_min, level_values=level_values)
    return q, sigma


def qalign_targets(mu: Optional[ArrayLike], sub_scores: Optional[ArrayLike] = None,
                   mos_std: Optional[ArrayLike] = None, sigma_min: float = 0.2,
                   level_values: Optional[ArrayLike] = None) -> Targets:
    """`qalign_label(mu)` (equal-fifths bins), with `sigma` as `fuscore_targets` gives it."""
    q = qalign_label(_filled_mu(mu, sub_scores, level_values), level_values)
    return _with_fuscore_sigma(q, mu, sub_scores, mos_std, sigma_min, level_values)


def onehot_targets(mu: Optional[ArrayLike], sub_scores: Optional[ArrayLike] = None,
                   mos_std: Optional[ArrayLike] = None, sigma_min: float = 0.2,
                   level_values: Optional[ArrayLike] = None) -> Targets:
    """`onehot_label(mu)` (the nearest level), with `sigma` as `fuscore_targets` gives it."""
    q = onehot_label(_filled_mu(mu, sub_scores, level_values), level_values)
    return _with_fuscore_sigma(q, mu, sub_scores, mos_std, sigma_min, level_values)


# ---------------------------------------------------------------------------------------------------------------------
# The Thurstone targets' spread as the MOS standard error (ours, issue 32; off unless asked for)
# ---------------------------------------------------------------------------------------------------------------------


def mos_standard_error(mos_std: ArrayLike, num_raters: int) -> Union[np.ndarray, torch.Tensor, float]:
    """`mos_std / sqrt(num_raters)`: the standard error of each image's MOS, an option of ours (not in DESIGN.md's
    objective, not a peer's) for the spread of the Thurstone targets (`FuScoreTrainingConfig.pair_target_raters`).

    By default the within- and cross-pair targets `P_ij = Phi((mu_i - mu_j) / sqrt(sigma_i^2 + sigma_j^2))` use the
    soft label's spread (sub-score disagreement and the raters' spread of one image, median about 1.4 on the
    synthetic benchmark), so most within-pair targets sit near 1/2 even where the MOS orders the pair reliably. The
    confidence that `mu_i > mu_j` is set by the standard error of each mean instead; with this spread the targets
    carry that confidence. The soft label itself (the KL term's target) is unchanged.

    Args:
        mos_std (`float`, array or tensor of shape `(N,)`): the raters' standard deviation of each image's overall
            score, on the level scale; every entry must be present (not NaN) and non-negative.
        num_raters (`int`): raters behind each MOS (at least 1).

    Returns:
        The standard errors, `(N,)` (a float for a scalar input; a float64 tensor on `mos_std`'s device for a tensor).
    """
    if isinstance(num_raters, bool) or not isinstance(num_raters, (int, np.integer)) or num_raters < 1:
        raise ValueError(f"`num_raters` must be a whole number, at least 1, got {num_raters!r}.")
    spread = _to_numpy(mos_std)
    if np.any(~np.isfinite(spread)):
        raise ValueError("`mos_std` is missing (NaN) for some rows: the MOS standard error needs every row's raters' "
                         "spread.")
    if np.any(spread < 0):
        raise ValueError("`mos_std` must be non-negative.")
    return _like_input(spread / np.sqrt(float(num_raters)), mos_std, np.ndim(spread) == 0)
