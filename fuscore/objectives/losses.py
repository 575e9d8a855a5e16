# Copyright 2025 The FuScore Authors.
# Licensed under the Apache License, Version 2.0.
"""Losses of FuScore and of its baselines (DESIGN.md section 4), in torch.

The building blocks (`distribution_kl`, `thurstone_fidelity`, the pair masks, `tripartite_loss`) take level
log-probabilities or logits in the same level order as the labels; they never look at the level values. The
`*_loss` functions at the end are the objectives' losses as their registry records hold them: keyword arguments in,
a dict of scalar terms out (`loss` carries the gradient, the other entries are the unweighted terms for logging).
Inputs in half precision are upcast to float32 (the way trl upcasts logits before a loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import torch
import torch.nn.functional as F


__all__ = [
    "distribution_kl",
    "thurstone_fidelity",
    "within_pair_mask",
    "cross_pair_mask",
    "tripartite_loss",
    "fuscore_loss",
    "deqa_loss",
    "qalign_loss",
    "random_pair_mask",
    "onehot_loss",
    "scalar_loss",
    "level_log_probs",
]

GroupIds = Union[Sequence[Union[str, int]], torch.Tensor]


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



# ---------------------------------------------------------------------------------------------------------------------
# Softmax modes: log-probabilities of the level words
# ---------------------------------------------------------------------------------------------------------------------


def level_log_probs(level_logits: Optional[torch.Tensor], vocab_logits: Optional[torch.Tensor] = None,
                    softmax: str = "levels") -> Optional[torch.Tensor]:
    """Log-probabilities of the `L` level words at the answer position, `(B, L)`, float32 or wider.

    * `softmax="levels"`: the restricted softmax, renormalised over the `L` level logits (FuScore's default).
    * `softmax="vocabulary"`: the full-vocabulary softmax gathered at the level tokens (DeQA-Score),
      `log p_l = logit_l - logsumexp(vocab_logits)`; these sum to less than one. Needs `vocab_logits` `(B, V)`, the
      model's answer-position logits over the whole vocabulary (`return_vocab_logits=True`).

    Returns None when `level_logits` is None (the losses then say which input is missing).
    """
    if level_logits is None:
        return None
    if softmax == "levels":
        return _level_log_probs(level_logits, restrict_softmax=True)
    if softmax == "vocabulary":
        if vocab_logits is None:
            raise ValueError("softmax='vocabulary' needs `vocab_logits` (call the model with return_vocab_logits=True).")
        return _float(level_logits - vocab_logits.logsumexp(-1, keepdim=True))
    raise ValueError(f"`softmax` must be 'levels' or 'vocabulary', got {softmax!r}.")


# ---------------------------------------------------------------------------------------------------------------------
# The objectives' losses (what the registry records hold). Keyword arguments: `level_log_probs` (B, L) from
# `level_log_probs`, the model's `score`, `score_std`, `regression` (B,), the batch's `soft_label` (B, L), `mu`,
# `sigma` (B,), `group_ids` (B,), and the options; each declares exactly what it uses, and `compute_objective` passes
# each only what it declares.
# ---------------------------------------------------------------------------------------------------------------------


def fuscore_loss(*, level_log_probs=None, score=None, score_std=None, soft_label=None, mu=None, sigma=None,
                 group_ids=None, lambda_within: float = 1.0, lambda_cross: float = 0.5, fixed_std: bool = False,
                 eps: float = 1e-8) -> dict[str, torch.Tensor]:
    """`L_dist + lambda_within L_within + lambda_cross L_cross` (`tripartite_loss`); terms `loss_dist`,
    `loss_within`, `loss_cross`."""
    _require("fuscore", level_logits=level_log_probs, score=score, soft_label=soft_label, mu=mu, sigma=sigma,
             group_ids=group_ids)
    if not fixed_std:
        _require("fuscore", score_std=score_std)
    return tripartite_loss(level_log_probs, score, score_std, soft_label, mu, sigma, group_ids,
                           lambda_within=lambda_within, lambda_cross=lambda_cross, fixed_std=fixed_std,
                           restrict_softmax=False, eps=eps)


# DeQA-Score's weights (scripts/train.sh): the fidelity term (--weight_rank), the next-token loss (--weight_next_token)
# and the KL relative to it (--weight_softkl: the model adds the KL to the next-token loss before the 0.05 applies,
# src/model/modeling_mplug_owl2.py, so the KL also carries 0.05, once per image of each pair).
DEQA_RANK_WEIGHT = 1.0
DEQA_NEXT_TOKEN_WEIGHT = 0.05
DEQA_SOFTKL_WEIGHT = 1.0


def random_pair_mask(batch_size: int, device=None) -> torch.Tensor:
    """`(B, B)` mask pairing row `i` with row `i + B // 2` for `i < B // 2`: a randomly drawn batch read as
    `B // 2` random image pairs (DeQA-Score's `item_A` and `item_B`); with an odd `B` the last row is unpaired."""
    half = batch_size // 2
    mask = torch.zeros(batch_size, batch_size, dtype=torch.bool, device=device)
    rows = torch.arange(half, device=device)
    mask[rows, rows + half] = True
    return mask


def _answer_ce(answer_nll: torch.Tensor, answer_tokens: torch.Tensor, rows: slice) -> torch.Tensor:
    """Token mean of the answer-prefix NLL over `rows` (what `CrossEntropyLoss()` gives on those rows' labels)."""
    nll, tokens = _float(answer_nll).reshape(-1)[rows], answer_tokens.reshape(-1)[rows]
    return nll.sum() / tokens.sum().clamp_min(1).to(nll.dtype)


def deqa_loss(*, level_log_probs=None, score=None, soft_label=None, mu=None, sigma=None, answer_nll=None,
              answer_tokens=None, eps: float = 1e-8) -> dict[str, torch.Tensor]:
    """DeQA-Score's training loss (src/model/modeling_mplug_owl2.py `forward_pair` with scripts/train.sh's options).

    The batch is randomly drawn (the record's `batches="random"`) and read as pairs: row `i` with row `i + B // 2`
    (`random_pair_mask`), the first half as DeQA's `item_A`, the second as `item_B`. With `h` a half:

        L = 1.0 * mean_pairs F  +  0.05 * sum_h (CE_h + 1.0 * KL_h)

    * `F`: Thurstone fidelity with the predicted std fixed at 1 (`use_fix_std`), the target from the labels' raw std
      (`sigma` as `deqa_targets` gives it, no floor); the score is the restricted-softmax expectation.
    * `KL_h`: batch mean over the half of `KL(q || p)`, `p` the full-vocabulary softmax at the level tokens
      (`level_log_probs` from `softmax="vocabulary"`), `q` the label as built (not renormalised).
    * `CE_h`: the token mean, over the half, of the next-token NLL of the answer's other tokens: `answer_nll` `(B,)`
      holds each row's summed NLL of its answer-prefix tokens and `answer_tokens` `(B,)` their number. DeQA's answer is
      "The quality of the image is <level>." and its CE covers every answer token but the level word (whose position
      the KL takes); FuScore's model reads the level at the end of its answer prefix, so the CE covers the answer
      prefix, teacher-forced; the period and end-of-turn after the level word never reach FuScore's model.

    `fixed_std` and the within/cross weights are not its arguments: the weights are DeQA's. Terms:
    `loss_kl` and `loss_ce_answer` (means over the batch), `loss_fidelity`.
    """
    _require("deqa", level_logits=level_log_probs, score=score, soft_label=soft_label, mu=mu, sigma=sigma,
             answer_nll=answer_nll, answer_tokens=answer_tokens)
    batch_size = score.numel()
    halves = (slice(0, batch_size // 2), slice(batch_size // 2, batch_size))
    kl = [distribution_kl(soft_label[h], level_log_probs[h]) for h in halves if h.stop > h.start]
    ce = [_answer_ce(answer_nll, answer_tokens, h) for h in halves if h.stop > h.start]
    loss_fidelity = thurstone_fidelity(score, None, mu, sigma, random_pair_mask(batch_size, level_log_probs.device),
                                       fixed_std=True, eps=eps)
    loss = DEQA_RANK_WEIGHT * loss_fidelity + DEQA_NEXT_TOKEN_WEIGHT * sum(
        c + DEQA_SOFTKL_WEIGHT * k for c, k in zip(ce, kl))
    return {"loss": loss, "loss_kl": distribution_kl(soft_label, level_log_probs).detach(),
            "loss_ce_answer": _answer_ce(answer_nll, answer_tokens, slice(None)).detach(),
            "loss_fidelity": loss_fidelity.detach()}


def qalign_loss(*, level_log_probs=None, soft_label=None, answer_nll=None,
                answer_tokens=None) -> dict[str, torch.Tensor]:
    """Q-Align's training loss: the next-token cross-entropy of its answer "The quality of the image is <level>.",
    full-vocabulary softmax, one token mean over every answer token of the batch (plain supervised fine-tuning).

    In FuScore's reading that is the answer-prefix tokens, teacher-forced (`answer_nll` `(B,)` summed per row,
    `answer_tokens` `(B,)` their number), and the level word at the answer position, whose target is the one-hot
    `soft_label` (`qalign_label`) and whose log-probability comes from the full-vocabulary softmax
    (`level_log_probs` from `softmax="vocabulary"`); the period and end-of-turn after the level word never reach
    FuScore's model. Terms: `loss_ce_level`, `loss_ce_answer` (token means of each part).
    """
    _require("qalign", level_logits=level_log_probs, soft_label=soft_label, answer_nll=answer_nll,
             answer_tokens=answer_tokens)
    target = _one_hot_target("qalign", soft_label.detach().to(level_log_probs.device))
    level_nll = -level_log_probs.gather(-1, target[:, None]).squeeze(-1)
    answer_sum, answer_count = _float(answer_nll).sum(), answer_tokens.sum().to(level_nll.dtype)
    loss = (answer_sum + level_nll.sum()) / (answer_count + level_nll.numel())
    return {"loss": loss, "loss_ce_level": level_nll.mean().detach(),
            "loss_ce_answer": (answer_sum / answer_count.clamp_min(1)).detach()}


def _one_hot_target(objective: str, target: torch.Tensor) -> torch.Tensor:
    if not bool(((target == 0) | (target == 1)).all() and (target.sum(dim=-1) == 1).all()):
        raise ValueError(f"objective={objective!r} needs one-hot `soft_label` rows (use `label_for_objective`).")
    return target.argmax(dim=-1)


def onehot_loss(*, level_log_probs=None, soft_label=None) -> dict[str, torch.Tensor]:
    """Cross-entropy to the one-hot level; term `loss_ce`. Raises if `soft_label` is not one-hot."""
    _require("nearest_onehot", level_logits=level_log_probs, soft_label=soft_label)
    target = _one_hot_target("nearest_onehot", soft_label.detach().to(level_log_probs.device))
    loss_ce = F.nll_loss(level_log_probs, target)
    return {"loss": loss_ce, "loss_ce": loss_ce}


def scalar_loss(*, regression=None, mu=None) -> dict[str, torch.Tensor]:
    """`MSE(regression, mu)` on the regression head's output; term `loss_mse`."""
    _require("scalar", regression=regression, mu=mu)
    prediction = _float(regression).reshape(-1)
    loss_mse = F.mse_loss(prediction, mu.detach().to(prediction.device, prediction.dtype).reshape(-1))
    return {"loss": loss_mse, "loss_mse": loss_mse}
