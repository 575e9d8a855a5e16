# Copyright 2025 The FuScore Authors.
# Licensed under the Apache License, Version 2.0.
"""Soft labels, training objectives and the pair-aware batch sampler of FuScore (DESIGN.md sections 3 and 4).

Conventions used throughout this module:

* A *level distribution* is a vector over the ``L`` rating levels (``L = 5``). Its entry ``l`` is the mass on the
  level whose value is ``level_values[l]``, in **the order in which ``level_values`` is given**. The default order is
  ascending, ``(1, 2, 3, 4, 5)`` (bad..excellent). A model that stores its level words as excellent..bad passes
  ``level_values=(5, 4, 3, 2, 1)`` to the label builders, and the labels come out in its own logit order; the losses
  never look at the values, they only need the label and the logits in the same order.
* Scores (``mu``, the predicted ``score``) live on the level scale, ``[min(level_values), max(level_values)]``.
* Label builders work in float64 (numpy + ``scipy.stats.norm``); the losses work in torch, in float32 or wider
  (bf16/fp16 inputs are upcast, the way trl upcasts logits before a loss).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal, Optional, Union, get_args

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch.utils.data import Sampler


__all__ = [
    "DEFAULT_LEVEL_VALUES",
    "ObjectiveName",
    "OBJECTIVES",
    "fuscore_soft_label",
    "deqa_soft_label",
    "onehot_label",
    "label_for_objective",
    "distribution_kl",
    "thurstone_fidelity",
    "within_pair_mask",
    "cross_pair_mask",
    "tripartite_loss",
    "compute_objective",
    "PairGroupedBatchSampler",
]

DEFAULT_LEVEL_VALUES: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0)
"""Level values in ascending order (bad, poor, fair, good, excellent)."""

ObjectiveName = Literal["fuscore", "deqa", "onehot", "scalar"]
OBJECTIVES: tuple[str, ...] = get_args(ObjectiveName)

MeanCorrection = Literal["iterative", "single"]

ArrayLike = Union[float, Sequence[float], np.ndarray, torch.Tensor]
GroupIds = Union[Sequence[Union[str, int]], torch.Tensor]

# Spreads (or pairwise variances) below this are treated as "no spread" when dividing.
_TINY = 1e-12


# ---------------------------------------------------------------------------------------------------------------------
# Soft labels (float64, numpy inside)
# ---------------------------------------------------------------------------------------------------------------------


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
        level_values (sequence or tensor of shape `(L,)`, *optional*, defaults to `(1, 2, 3, 4, 5)`):
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


def deqa_soft_label(
    mu: ArrayLike,
    mos_std: Optional[ArrayLike],
    sigma_min: float = 0.2,
    level_values: Optional[ArrayLike] = None,
    mean_correction: MeanCorrection = "iterative",
    mean_tol: float = 0.1,
) -> tuple[Union[np.ndarray, torch.Tensor], Union[np.ndarray, torch.Tensor, float]]:
    """DeQA-Score baseline label: the Gaussian of `fuscore_soft_label` built from `mos_std` alone (no sub-scores).

    `sigma = max(sigma_min, mos_std)`, same discretisation (tails folded, unlike the original DeQA-Score script which
    leaves the tails out), same mean-preserving correction and fallback, so the two label modes differ only in where
    the spread comes from. Shapes and return types as in `fuscore_soft_label`.
    """
    return fuscore_soft_label(
        mu,
        sub_scores=None,
        mos_std=mos_std,
        sigma_min=sigma_min,
        level_values=level_values,
        mean_correction=mean_correction,
        mean_tol=mean_tol,
    )


def onehot_label(mu: ArrayLike, level_values: Optional[ArrayLike] = None) -> Union[np.ndarray, torch.Tensor]:
    """Q-Align baseline label: one-hot on the level nearest to `mu`, halves rounded up (2.5 -> 3, 4.5 -> 5).

    Args:
        mu (`float`, array or tensor of shape `(N,)`): scores on the level scale.
        level_values (sequence or tensor of shape `(L,)`, *optional*, defaults to `(1, 2, 3, 4, 5)`).

    Returns:
        `(L,)` or `(N, L)` one-hot rows in the order of `level_values` (tensor if `mu` is a tensor, numpy otherwise).
    """
    values = _level_values_np(level_values)
    order = np.argsort(values)
    sorted_values = values[order]
    scalar_input = np.ndim(_to_numpy(mu)) == 0
    mu_np = _check_range(np.atleast_1d(_to_numpy(mu)), values)
    midpoints = (sorted_values[:-1] + sorted_values[1:]) / 2.0
    # side="right": a score exactly on a midpoint goes to the upper level (round half up).
    index_sorted = np.searchsorted(midpoints, mu_np, side="right")
    q = np.zeros((mu_np.size, values.size))
    q[np.arange(mu_np.size), order[index_sorted]] = 1.0
    return _like_input(q[0] if scalar_input else q, mu, False)


def label_for_objective(
    objective: ObjectiveName,
    mu: Optional[ArrayLike],
    sub_scores: Optional[ArrayLike] = None,
    mos_std: Optional[ArrayLike] = None,
    sigma_min: float = 0.2,
    level_values: Optional[ArrayLike] = None,
) -> tuple[Union[np.ndarray, torch.Tensor], Union[np.ndarray, torch.Tensor, float]]:
    """The `(soft_label, sigma)` a collator stores for `objective`, so `compute_objective` gets matching labels.

    * `"fuscore"`: `fuscore_soft_label(mu, sub_scores, mos_std)`.
    * `"deqa"`: `deqa_soft_label(mu, mos_std)` (sub-scores only serve to fill a missing `mu`).
    * `"onehot"`: `onehot_label(mu)`; `sigma` as for `"fuscore"` (unused by the loss, kept for evaluation).
    * `"scalar"`: the raw score `mu` itself is the target; the label returned is the one-hot one (unused by the
      loss) so every batch has the same fields.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"`objective` must be one of {OBJECTIVES}, got {objective!r}.")
    reference = mu if mu is not None else sub_scores
    values = _level_values_np(level_values)
    # Sub-scores fill a missing overall score for every mode; only "fuscore" also uses their spread.
    filled_mu, _, scalar_input = _resolve_scores(mu, sub_scores, values)
    filled = _like_input(filled_mu[0] if scalar_input else filled_mu, reference, scalar_input)
    if objective == "deqa":
        return deqa_soft_label(filled, mos_std, sigma_min=sigma_min, level_values=level_values)
    q, sigma = fuscore_soft_label(mu, sub_scores, mos_std, sigma_min=sigma_min, level_values=level_values)
    if objective in ("onehot", "scalar"):
        q = onehot_label(filled, level_values)
    return q, sigma


# ---------------------------------------------------------------------------------------------------------------------
# Losses (torch)
# ---------------------------------------------------------------------------------------------------------------------


def _float(x: torch.Tensor) -> torch.Tensor:
    """Upcasts half precision to float32; float32/float64 stay as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def distribution_kl(target_q: torch.Tensor, pred_log_probs: torch.Tensor) -> torch.Tensor:
    """`mean_i KL(q_i || p_i) = mean_i sum_l q_il (log q_il - log p_il)`, with `0 log 0 = 0`.

    Args:
        target_q (`torch.Tensor` of shape `(B, L)`): target distributions (no gradient is taken through them).
        pred_log_probs (`torch.Tensor` of shape `(B, L)`): predicted log-probabilities over the same levels, in the
            same order. Entries where `q = 0` contribute nothing, even if the prediction is `-inf` there.

    Returns:
        Scalar tensor, differentiable w.r.t. `pred_log_probs`.
    """
    if target_q.shape != pred_log_probs.shape:
        raise ValueError(
            f"`target_q` {tuple(target_q.shape)} and `pred_log_probs` {tuple(pred_log_probs.shape)} differ in shape."
        )
    log_p = _float(pred_log_probs)
    q = target_q.detach().to(log_p.dtype)
    positive = q > 0
    # torch.where keeps the q = 0 entries (and their gradient) at exactly 0, whatever log p is there.
    terms = torch.where(positive, q * (torch.log(torch.where(positive, q, 1.0)) - log_p), 0.0)
    return terms.sum(dim=-1).mean()


def _group_codes(group_ids: GroupIds, device: Optional[torch.device]) -> torch.Tensor:
    if isinstance(group_ids, torch.Tensor):
        if group_ids.ndim != 1:
            raise ValueError(f"`group_ids` must be 1-D, got shape {tuple(group_ids.shape)}.")
        return group_ids.to(device) if device is not None else group_ids
    codes: dict[Union[str, int], int] = {}
    return torch.tensor([codes.setdefault(g, len(codes)) for g in group_ids], dtype=torch.long, device=device)


def within_pair_mask(group_ids: GroupIds, device: Optional[torch.device] = None) -> torch.Tensor:
    """`(B, B)` bool mask of ordered pairs `(i, j)`, `i != j`, of fused images made from the same source pair.

    Args:
        group_ids (`list[str]`, `list[int]` or `torch.LongTensor` of shape `(B,)`): source pair id of each image.
        device (*optional*): where to build the mask (defaults to `group_ids`' device, or CPU for a list).
    """
    codes = _group_codes(group_ids, device)
    same = codes[:, None] == codes[None, :]
    return same & ~torch.eye(codes.numel(), dtype=torch.bool, device=codes.device)


def cross_pair_mask(group_ids: GroupIds, device: Optional[torch.device] = None) -> torch.Tensor:
    """`(B, B)` bool mask of ordered pairs `(i, j)` of fused images made from different source pairs."""
    codes = _group_codes(group_ids, device)
    return codes[:, None] != codes[None, :]


def thurstone_fidelity(
    pred_score: torch.Tensor,
    pred_std: Optional[torch.Tensor],
    target_mu: torch.Tensor,
    target_sigma: torch.Tensor,
    pair_mask: torch.Tensor,
    fixed_std: bool = False,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Mean Thurstone fidelity loss over the pairs selected by `pair_mask` (DESIGN.md section 4).

    For a pair `(i, j)`:

    * target `P_ij = Phi((mu_i - mu_j) / sqrt(sigma_i^2 + sigma_j^2))`, computed without gradient; the variance sum
      is floored at `eps` so that two labels with zero spread give `P = 0.5` (equal) or `P = 0/1` instead of NaN;
    * prediction `P^_ij = Phi((s_i - s_j) / sqrt(sd_i^2 + sd_j^2 + eps))`, or `sd_i = sd_j = 1` with `fixed_std`;
    * `F_ij = 1 - sqrt(P_ij P^_ij + eps) - sqrt((1 - P_ij)(1 - P^_ij) + eps)`.

    Pairs are *ordered*: every True entry `(i, j)` off the diagonal is one pair (the diagonal is always ignored).
    `F_ij = F_ji` because `P_ji = 1 - P_ij` and `P^_ji = 1 - P^_ij`, so for a symmetric mask the mean over ordered
    pairs equals the mean over `i < j`.

    Args:
        pred_score (`torch.Tensor` of shape `(B,)`): predicted scores `s`.
        pred_std (`torch.Tensor` of shape `(B,)`, *optional*): predicted spreads `sd`; ignored (may be None) with
            `fixed_std`.
        target_mu (`torch.Tensor` of shape `(B,)`): label means.
        target_sigma (`torch.Tensor` of shape `(B,)`): label spreads.
        pair_mask (`torch.BoolTensor` of shape `(B, B)`): pairs to use.
        fixed_std (`bool`, defaults to False): use `sd = 1` for every prediction (DeQA-Score/Q-Align style).
        eps (`float`, defaults to 1e-8): must be positive; keeps square roots and divisions finite.

    Returns:
        Scalar tensor: the mean of `F_ij` over the selected pairs, or exactly 0 (still attached to the graph of the
        predictions, with zero, finite gradients) when none is selected.
    """
    score = _float(pred_score).reshape(-1)
    batch_size = score.numel()
    if pair_mask.shape != (batch_size, batch_size):
        raise ValueError(f"`pair_mask` must have shape ({batch_size}, {batch_size}), got {tuple(pair_mask.shape)}.")
    mask = pair_mask.to(device=score.device, dtype=torch.bool) & ~torch.eye(
        batch_size, dtype=torch.bool, device=score.device
    )

    with torch.no_grad():
        mu = target_mu.detach().to(score.device, score.dtype).reshape(-1)
        sigma = target_sigma.detach().to(score.device, score.dtype).reshape(-1)
        target_variance = (sigma[:, None] ** 2 + sigma[None, :] ** 2).clamp_min(eps)
        target_prob = torch.special.ndtr((mu[:, None] - mu[None, :]) / target_variance.sqrt())

    if fixed_std:
        pred_variance = torch.full((batch_size, batch_size), 2.0 + eps, dtype=score.dtype, device=score.device)
    else:
        if pred_std is None:
            raise ValueError("`pred_std` is required unless `fixed_std=True`.")
        std = _float(pred_std).reshape(-1)
        pred_variance = std[:, None] ** 2 + std[None, :] ** 2 + eps
    pred_prob = torch.special.ndtr((score[:, None] - score[None, :]) / pred_variance.sqrt())

    fidelity = (
        1.0
        - torch.sqrt(target_prob * pred_prob + eps)
        - torch.sqrt((1.0 - target_prob) * (1.0 - pred_prob) + eps)
    )
    selected = torch.where(mask, fidelity, 0.0)
    # clamp_min(1): no pair -> 0 / 1 = 0, and the backward pass sends zeros through `torch.where`.
    return selected.sum() / mask.sum().clamp_min(1).to(selected.dtype)


def _level_log_probs(level_logits: torch.Tensor, restrict_softmax: bool) -> torch.Tensor:
    level_logits = _float(level_logits)
    # log_softmax is idempotent on log-probabilities that sum to one, so logits and log-probs are both accepted.
    return F.log_softmax(level_logits, dim=-1) if restrict_softmax else level_logits


def tripartite_loss(
    level_logits: torch.Tensor,
    score: torch.Tensor,
    score_std: Optional[torch.Tensor],
    q: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    group_ids: GroupIds,
    lambda_within: float = 1.0,
    lambda_cross: float = 0.5,
    fixed_std: bool = False,
    restrict_softmax: bool = True,
    eps: float = 1e-8,
) -> dict[str, torch.Tensor]:
    """`L = L_dist + lambda_within L_within + lambda_cross L_cross` (DESIGN.md section 4).

    Args:
        level_logits (`torch.Tensor` of shape `(B, L)`): logits (or log-probabilities) of the level words.
        score (`torch.Tensor` of shape `(B,)`): predicted score `s = sum_l p_l v_l`.
        score_std (`torch.Tensor` of shape `(B,)`, *optional*): predicted spread `sd`; may be None with `fixed_std`.
        q (`torch.Tensor` of shape `(B, L)`): soft labels, in the same level order as `level_logits`.
        mu (`torch.Tensor` of shape `(B,)`), sigma (`torch.Tensor` of shape `(B,)`): label mean and spread.
        group_ids (`list[str]` or `torch.LongTensor` of shape `(B,)`): source pair (`pair_id`) of each image.
        lambda_within (`float`, defaults to 1.0), lambda_cross (`float`, defaults to 0.5): term weights.
        fixed_std (`bool`, defaults to False): Thurstone terms with `sd = 1` instead of the predicted spread.
        restrict_softmax (`bool`, defaults to True): renormalise over the `L` level entries (restricted softmax). Set
            False to pass log-probabilities from the full-vocabulary softmax gathered at the level tokens (the
            DeQA-Score variant); the KL is then taken against a `p` that sums to less than one.
        eps (`float`, defaults to 1e-8): see `thurstone_fidelity`.

    Returns:
        `dict` with `loss` (the total, to backpropagate) and the unweighted terms `loss_dist`, `loss_within`,
        `loss_cross` (for logging). A Thurstone term with no eligible pair in the batch is 0.
    """
    log_probs = _level_log_probs(level_logits, restrict_softmax)
    loss_dist = distribution_kl(q, log_probs)
    within = within_pair_mask(group_ids, device=log_probs.device)
    cross = cross_pair_mask(group_ids, device=log_probs.device)
    loss_within = thurstone_fidelity(score, score_std, mu, sigma, within, fixed_std=fixed_std, eps=eps)
    loss_cross = thurstone_fidelity(score, score_std, mu, sigma, cross, fixed_std=fixed_std, eps=eps)
    loss = loss_dist + lambda_within * loss_within + lambda_cross * loss_cross
    return {"loss": loss, "loss_dist": loss_dist, "loss_within": loss_within, "loss_cross": loss_cross}


def _require(objective: str, **tensors: Optional[object]) -> None:
    missing = [name for name, value in tensors.items() if value is None]
    if missing:
        raise ValueError(f"objective={objective!r} needs {', '.join(missing)}.")


def compute_objective(
    objective: ObjectiveName,
    *,
    level_logits: Optional[torch.Tensor] = None,
    score: Optional[torch.Tensor] = None,
    score_std: Optional[torch.Tensor] = None,
    regression: Optional[torch.Tensor] = None,
    soft_label: Optional[torch.Tensor] = None,
    mu: Optional[torch.Tensor] = None,
    sigma: Optional[torch.Tensor] = None,
    group_ids: Optional[GroupIds] = None,
    lambda_within: float = 1.0,
    lambda_cross: float = 0.5,
    lambda_fidelity: float = 1.0,
    fixed_std: bool = False,
    restrict_softmax: bool = True,
    eps: float = 1e-8,
) -> dict[str, torch.Tensor]:
    """The training loss of one batch for the objective picked by one option; what `FuScoreTrainer` calls.

    Model outputs: `level_logits` `(B, L)`, `score` `(B,)`, `score_std` `(B,)`, `regression` `(B,)` or `(B, 1)`.
    Batch labels: `soft_label` `(B, L)` (from `label_for_objective`, same level order as the logits), `mu` `(B,)`,
    `sigma` `(B,)`, `group_ids` (`list[str]` or `LongTensor` `(B,)`).

    * `"fuscore"`: `L_dist + lambda_within L_within + lambda_cross L_cross`; returns `loss, loss_dist, loss_within,
      loss_cross`; needs level_logits, score, score_std, soft_label, mu, sigma, group_ids.
    * `"deqa"`: `KL(q_deqa || p) + lambda_fidelity L_fid` over all pairs of the batch; returns `loss, loss_dist,
      loss_fidelity`; needs level_logits, score, score_std, soft_label, mu, sigma.
    * `"onehot"`: cross-entropy to the one-hot level (Q-Align); returns `loss, loss_ce`; needs level_logits and a
      one-hot soft_label.
    * `"scalar"`: `MSE(regression, mu)`; returns `loss, loss_mse`; needs regression, mu.

    Decisions: `"deqa"` uses every ordered pair `i != j` of the batch (DeQA-Score compares random pairs, i.e. the
    pairs of a randomly drawn batch, with no within/cross split), so give it a plain random sampler rather than
    `PairGroupedBatchSampler` to stay faithful. `"onehot"` takes its target from `soft_label` (so it follows the
    logits' level order) and raises if that is not one-hot. `score_std` may be None with `fixed_std`.

    Returns:
        `dict[str, torch.Tensor]` of scalar tensors; `loss` carries the gradient, the other entries are the unweighted
        terms for logging.
    """
    if objective == "fuscore":
        _require(objective, level_logits=level_logits, score=score, soft_label=soft_label, mu=mu, sigma=sigma,
                 group_ids=group_ids)
        if not fixed_std:
            _require(objective, score_std=score_std)
        return tripartite_loss(
            level_logits, score, score_std, soft_label, mu, sigma, group_ids,
            lambda_within=lambda_within, lambda_cross=lambda_cross, fixed_std=fixed_std,
            restrict_softmax=restrict_softmax, eps=eps,
        )
    if objective == "deqa":
        _require(objective, level_logits=level_logits, score=score, soft_label=soft_label, mu=mu, sigma=sigma)
        if not fixed_std:
            _require(objective, score_std=score_std)
        log_probs = _level_log_probs(level_logits, restrict_softmax)
        loss_dist = distribution_kl(soft_label, log_probs)
        all_pairs = torch.ones(score.numel(), score.numel(), dtype=torch.bool, device=log_probs.device)
        loss_fidelity = thurstone_fidelity(score, score_std, mu, sigma, all_pairs, fixed_std=fixed_std, eps=eps)
        return {"loss": loss_dist + lambda_fidelity * loss_fidelity, "loss_dist": loss_dist,
                "loss_fidelity": loss_fidelity}
    if objective == "onehot":
        _require(objective, level_logits=level_logits, soft_label=soft_label)
        log_probs = _level_log_probs(level_logits, restrict_softmax)
        target = soft_label.detach().to(log_probs.device)
        if not bool(((target == 0) | (target == 1)).all() and (target.sum(dim=-1) == 1).all()):
            raise ValueError("objective='onehot' needs one-hot `soft_label` rows (use `label_for_objective`).")
        loss_ce = F.nll_loss(log_probs, target.argmax(dim=-1))
        return {"loss": loss_ce, "loss_ce": loss_ce}
    if objective == "scalar":
        _require(objective, regression=regression, mu=mu)
        prediction = _float(regression).reshape(-1)
        loss_mse = F.mse_loss(prediction, mu.detach().to(prediction.device, prediction.dtype).reshape(-1))
        return {"loss": loss_mse, "loss_mse": loss_mse}
    raise ValueError(f"`objective` must be one of {OBJECTIVES}, got {objective!r}.")


# ---------------------------------------------------------------------------------------------------------------------
# Pair-aware batch sampler
# ---------------------------------------------------------------------------------------------------------------------


class PairGroupedBatchSampler(Sampler[list[int]]):
    """Batches of `pairs_per_batch` source pairs x `images_per_pair` fused images of each (DESIGN.md section 4).

    Each epoch, with a numpy generator seeded by `(seed, epoch)`:

    1. Source pairs with at least two images are cut into *chunks* of `images_per_pair` (M) distinct images after a
       shuffle. A pair with `2 <= n <= M` images gives one chunk of all `n` (a smaller batch). A pair with `n > M`
       gives `ceil(n / M)` chunks of exactly M: the last one is topped up with images of the same pair drawn from its
       other chunks, so every image is seen every epoch and no chunk repeats an image.
    2. Chunks are dealt into `K = floor(C / P)` batches so that no batch holds two chunks of the same source pair:
       pairs in decreasing number of chunks (random among equals), each into the batches with the most free slots
       (random among equals). This greedy (Ryser's) always succeeds here because every pair has at most `K` chunks
       (a pair with more, which only happens when it dominates the data set, is capped at `K` chunks, fixed at
       construction). With `drop_last=True` each batch holds exactly P pairs and the `C - K P < P` chunks left over
       are taken from the pairs with the most chunks; with `drop_last=False` they are added as extra pairs to some
       batches (up to `P + 1` pairs, so nothing is dropped).
    3. Source pairs with a single image give no within-pair term, so they are not chunked: they are shuffled and
       dealt round-robin onto the batches as extra images (they serve the distribution and cross-pair terms).
    4. The batch order is shuffled, then split between processes round-robin by rank: `batches[rank::num_replicas]`,
       whole batches, so a source pair's chunk never straddles processes. With `drop_last=True` the batch list is
       cut to a multiple of `num_replicas`; with `drop_last=False` it is padded with its first batches (as
       `torch.utils.data.DistributedSampler` pads indices).

    Hence every batch has at least two source pairs of at least two images. The batch count does not depend on the
    epoch, and the iteration is a pure function of `(seed, epoch, rank)`: resuming mid-epoch by skipping the first `k`
    batches (`accelerate.skip_first_batches`, or `itertools.islice(sampler, k, None)`) yields the same remainder.
    The HF `Trainer` calls `set_epoch` on it each epoch. Pass `num_replicas=1` when accelerate shards the batch
    sampler itself (its `BatchSamplerShard` also hands out whole batches); pass the world size and rank when the
    sampler is used on a non-prepared `DataLoader`.

    Args:
        group_ids (`list[str | int]` or `torch.Tensor` of shape `(N,)`): the source pair (`pair_id`) of each data set
            index.
        pairs_per_batch (`int`, at least 2): P.
        images_per_pair (`int`, at least 2): M.
        seed (`int`, defaults to 0): base seed; must be the same on every process.
        num_replicas (`int`, defaults to 1), rank (`int`, defaults to 0): data-parallel world size and this rank.
        drop_last (`bool`, defaults to True): see 2. and 4.
    """

    def __init__(
        self,
        group_ids: GroupIds,
        pairs_per_batch: int,
        images_per_pair: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = True,
    ) -> None:
        if pairs_per_batch < 2:
            raise ValueError(f"`pairs_per_batch` must be at least 2 (cross-pair terms), got {pairs_per_batch}.")
        if images_per_pair < 2:
            raise ValueError(f"`images_per_pair` must be at least 2 (within-pair terms), got {images_per_pair}.")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"Need `num_replicas >= 1` and `0 <= rank < num_replicas`, got {num_replicas}, {rank}.")
        if isinstance(group_ids, torch.Tensor):
            group_ids = group_ids.tolist()
        self.pairs_per_batch = pairs_per_batch
        self.images_per_pair = images_per_pair
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0

        # Insertion order (first appearance) keeps the grouping independent of hash seeds.
        members: dict[Union[str, int], list[int]] = {}
        for index, group in enumerate(group_ids):
            members.setdefault(group, []).append(index)
        self._groups = [np.asarray(indices, dtype=np.int64) for indices in members.values() if len(indices) >= 2]
        self._singletons = np.asarray(
            [indices[0] for indices in members.values() if len(indices) == 1], dtype=np.int64
        )

        chunk_counts = np.asarray([math.ceil(len(g) / images_per_pair) for g in self._groups], dtype=np.int64)
        num_batches = int(chunk_counts.sum()) // pairs_per_batch
        # A pair cannot appear twice in a batch, so it can fill at most `num_batches` chunks; capping may lower the
        # batch count, hence the fixed point.
        while True:
            capped = np.minimum(chunk_counts, num_batches)
            new_num_batches = int(capped.sum()) // pairs_per_batch
            if new_num_batches == num_batches:
                break
            num_batches = new_num_batches
        if num_batches < 1:
            raise ValueError(
                f"Need at least pairs_per_batch={pairs_per_batch} source pairs with two or more images to build one "
                f"batch, got {len(self._groups)}."
            )
        self._chunk_counts = capped
        self._num_global_batches = num_batches
        if drop_last:
            self._num_batches_per_rank = num_batches // num_replicas
            if self._num_batches_per_rank < 1:
                raise ValueError(f"{num_batches} batches cannot be split between {num_replicas} processes.")
        else:
            self._num_batches_per_rank = math.ceil(num_batches / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch whose batches `__iter__` yields (call it before each epoch, as for `DistributedSampler`)."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Number of batches this rank yields per epoch (the same for every epoch)."""
        return self._num_batches_per_rank

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches(self.epoch)

    def _chunks_of(self, group: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
        size = self.images_per_pair
        shuffled = rng.permutation(group)
        if len(shuffled) <= size:
            return [shuffled]
        chunks = [shuffled[start : start + size] for start in range(0, len(shuffled), size)]
        last = chunks[-1]
        if len(last) < size:
            # Top up from this pair's other images; never repeats an image inside the chunk.
            others = shuffled[: len(shuffled) - len(last)]
            chunks[-1] = np.concatenate([last, rng.choice(others, size=size - len(last), replace=False)])
        # A capped pair (more chunks than batches) keeps a random subset of its chunks this epoch.
        if count < len(chunks):
            keep = np.sort(rng.choice(len(chunks), size=count, replace=False))
            chunks = [chunks[k] for k in keep]
        return chunks

    def epoch_batches(self, epoch: Optional[int] = None) -> list[list[int]]:
        """This rank's batches for `epoch` (defaults to the current one), as lists of data set indices."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        num_batches = self._num_global_batches
        demands = self._chunk_counts.copy()
        chunks = [self._chunks_of(g, int(c), rng) for g, c in zip(self._groups, demands)]

        leftover = int(demands.sum()) - num_batches * self.pairs_per_batch
        capacity = np.full(num_batches, self.pairs_per_batch, dtype=np.int64)
        if self.drop_last:
            # Drop the `leftover` chunks one by one from the pairs with the most chunks (random among equals).
            for _ in range(leftover):
                largest = np.flatnonzero(demands == demands.max())
                victim = rng.choice(largest)
                chunks[victim].pop(rng.integers(len(chunks[victim])))
                demands[victim] -= 1
        else:
            capacity[rng.choice(num_batches, size=leftover, replace=False)] += 1

        # Ryser's greedy: pairs by decreasing demand, each into the batches with the most free slots.
        batch_chunks: list[list[np.ndarray]] = [[] for _ in range(num_batches)]
        group_order = np.lexsort((rng.random(len(demands)), -demands))
        for g in group_order:
            demand = int(demands[g])
            if demand == 0:
                continue
            # Integer free slots plus a tie-breaking jitter in [0, 0.5): the `demand` largest keys are the batches
            # with the most free slots, random among equals.
            key = capacity + 0.5 * rng.random(num_batches)
            if demand >= num_batches:
                target_batches = np.arange(num_batches)
            else:
                target_batches = np.argpartition(-key, demand - 1)[:demand]
            target_batches = target_batches[capacity[target_batches] > 0]
            capacity[target_batches] -= 1
            for chunk, b in zip(chunks[g], target_batches):
                batch_chunks[b].append(chunk)

        batches = [
            np.concatenate([chunk_list[k] for k in rng.permutation(len(chunk_list))]).tolist()
            for chunk_list in batch_chunks
        ]
        batches = [batches[k] for k in rng.permutation(num_batches)]

        if self.drop_last:
            batches = batches[: self._num_batches_per_rank * self.num_replicas]
        for position, index in enumerate(rng.permutation(self._singletons)):
            batches[position % len(batches)].append(int(index))
        if not self.drop_last:
            padding = self._num_batches_per_rank * self.num_replicas - len(batches)
            batches = batches + [list(batches[k % len(batches)]) for k in range(padding)]
        return batches[self.rank :: self.num_replicas]
