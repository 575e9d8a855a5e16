# Copyright 2025 The FuScore Authors.
# Licensed under the Apache License, Version 2.0.
"""The objective registry: one record per training objective (DESIGN.md section 4), and the two functions every
caller goes through, `label_for_objective` (collator side) and `compute_objective` (loss side).

A record says everything that differs between objectives, so the trainer, the collator, the evaluation and model
loading read it instead of testing names:

    record = get_objective("scalar")
    record.regression_head      # True: load or build the model with a regression head
    record.predict(outputs)     # [B] prediction that the evaluation correlates with the MOS
    record.softmax              # "levels" or "vocabulary": how the level logits become log-probabilities
    record.batches              # "pair_grouped" (PairGroupedBatchSampler) or "random" (randomly drawn batches)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional, get_args

import torch

from .labels import ArrayLike, Targets, deqa_targets, fuscore_targets, onehot_targets
from .losses import GroupIds, deqa_loss, fuscore_loss, level_log_probs, onehot_loss, scalar_loss


__all__ = [
    "Objective",
    "OBJECTIVE_REGISTRY",
    "OBJECTIVES",
    "ObjectiveName",
    "Softmax",
    "Batches",
    "get_objective",
    "label_for_objective",
    "compute_objective",
    "expected_score",
    "regression_output",
]

Softmax = Literal["levels", "vocabulary"]
Batches = Literal["pair_grouped", "random"]
ObjectiveName = str
"""An objective's name: a key of `OBJECTIVE_REGISTRY` (`OBJECTIVES` lists them)."""


def expected_score(outputs) -> torch.Tensor:
    """The model's expected level value `s = sum_l p_l v_l`, `[B]` (`FuScoreOutput.score`)."""
    return outputs.score


def regression_output(outputs) -> torch.Tensor:
    """The regression head's output, `[B]` (`FuScoreOutput.regression`)."""
    if outputs.regression is None:
        raise ValueError("This objective predicts with the regression head, but the model has none "
                         "(build or load it with regression_head=True).")
    return outputs.regression


@dataclass(frozen=True)
class Objective:
    """One training objective: how its labels are built, its loss, and what it needs from the model and the data.

    Attributes:
        name (`str`): the value of `--objective`.
        label (`Callable`): `label(mu, sub_scores, mos_std, sigma_min, level_values) -> (soft_label, sigma)`, the
            per-row targets a collator stores (`soft_label` `(N, L)` in `level_values`' order, `sigma` `(N,)`).
        loss (`Callable`): keyword arguments (`level_log_probs`, `score`, `score_std`, `regression`, `soft_label`,
            `mu`, `sigma`, `group_ids` and the options `lambda_within`, `lambda_cross`, `lambda_fidelity`,
            `fixed_std`, `eps`) -> dict of scalar tensors: `loss` (with the gradient) and the terms in `terms`.
        predict (`Callable`): model outputs -> `[B]` prediction (the expected score, or the regression head's
            output), what evaluation correlates with the MOS.
        regression_head (`bool`): the model needs a regression head on the answer-position hidden state.
        softmax (`"levels"` or `"vocabulary"`): restricted softmax over the `L` level logits, or the
            full-vocabulary softmax gathered at the level tokens (DeQA-Score); `level_log_probs` applies it.
        batches (`"pair_grouped"` or `"random"`): pair-aware batches of P source pairs x M fused images
            (`PairGroupedBatchSampler`), or randomly drawn batches of the same size.
        terms (`tuple[str, ...]`): the names of the logged loss terms besides `loss`.
        description (`str`): one line for `--help` and the docs.
    """

    name: str
    label: Callable[..., Targets]
    loss: Callable[..., dict]
    predict: Callable[..., torch.Tensor]
    regression_head: bool
    softmax: Softmax
    batches: Batches
    terms: tuple[str, ...]
    description: str = ""

    def __post_init__(self):
        if self.softmax not in get_args(Softmax):
            raise ValueError(f"Objective {self.name!r}: softmax must be one of {get_args(Softmax)}, got {self.softmax!r}.")
        if self.batches not in get_args(Batches):
            raise ValueError(f"Objective {self.name!r}: batches must be one of {get_args(Batches)}, got {self.batches!r}.")


_RECORDS = (
    Objective(
        name="fuscore", label=fuscore_targets, loss=fuscore_loss, predict=expected_score, regression_head=False,
        softmax="levels", batches="pair_grouped", terms=("loss_dist", "loss_within", "loss_cross"),
        description="FuScore's tripartite objective: KL to the soft label + within- and cross-pair Thurstone "
                    "fidelity."),
    Objective(
        name="deqa", label=deqa_targets, loss=deqa_loss, predict=expected_score, regression_head=False,
        softmax="levels", batches="pair_grouped", terms=("loss_dist", "loss_fidelity"),
        description="Ablation in DeQA-Score's shape: the label's spread from mos_std only, KL + fidelity over every "
                    "pair of the batch."),
    Objective(
        name="onehot", label=onehot_targets, loss=onehot_loss, predict=expected_score, regression_head=False,
        softmax="levels", batches="pair_grouped", terms=("loss_ce",),
        description="Ablation: cross-entropy to the nearest level (one-hot)."),
    Objective(
        name="scalar", label=onehot_targets, loss=scalar_loss, predict=regression_output, regression_head=True,
        softmax="levels", batches="pair_grouped", terms=("loss_mse",),
        description="Regression head on the answer-position hidden state, MSE to the score."),
)

OBJECTIVE_REGISTRY: dict[str, Objective] = {record.name: record for record in _RECORDS}
"""Every objective by name. A new objective is one more record here."""

OBJECTIVES: tuple[str, ...] = tuple(OBJECTIVE_REGISTRY)


def get_objective(name: ObjectiveName) -> Objective:
    """The registry record of the objective `name`; a ValueError listing the known names otherwise."""
    if isinstance(name, Objective):
        return name
    try:
        return OBJECTIVE_REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown objective {name!r}: choose one of {', '.join(OBJECTIVE_REGISTRY)}.") from None


def label_for_objective(
    objective: ObjectiveName,
    mu: Optional[ArrayLike],
    sub_scores: Optional[ArrayLike] = None,
    mos_std: Optional[ArrayLike] = None,
    sigma_min: float = 0.2,
    level_values: Optional[ArrayLike] = None,
) -> Targets:
    """The `(soft_label, sigma)` a collator stores for `objective`, so `compute_objective` gets matching labels.

    Sub-scores fill a missing overall score for every objective. Per record: `"fuscore"` `fuscore_soft_label(mu,
    sub_scores, mos_std)`; `"deqa"` `deqa_soft_label(mu, mos_std)`; `"onehot"` `onehot_label(mu)` with `sigma` as
    for `"fuscore"`; `"scalar"` the same as `"onehot"` (its loss reads only `mu`; every batch keeps the same fields).
    """
    return get_objective(objective).label(mu, sub_scores, mos_std, sigma_min=sigma_min, level_values=level_values)


def compute_objective(
    objective: ObjectiveName,
    *,
    level_logits: Optional[torch.Tensor] = None,
    vocab_logits: Optional[torch.Tensor] = None,
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
    softmax: Optional[Softmax] = None,
    eps: float = 1e-8,
) -> dict[str, torch.Tensor]:
    """The training loss of one batch for `objective`; what `FuScoreTrainer.compute_loss` calls.

    Model outputs: `level_logits` `(B, L)`, `vocab_logits` `(B, V)` (only for the full-vocabulary softmax),
    `score` `(B,)`, `score_std` `(B,)`, `regression` `(B,)`. Batch labels: `soft_label` `(B, L)` (from
    `label_for_objective`, same level order as the logits), `mu` `(B,)`, `sigma` `(B,)`, `group_ids`
    (`list[str]` or `LongTensor` `(B,)`). `softmax` overrides the record's softmax mode (`--full_vocab_softmax`).

    * `"fuscore"`: `L_dist + lambda_within L_within + lambda_cross L_cross`; terms `loss_dist, loss_within,
      loss_cross`; needs level_logits, score, score_std, soft_label, mu, sigma, group_ids.
    * `"deqa"`: `KL(q_deqa || p) + lambda_fidelity L_fid` over all pairs of the batch; terms `loss_dist,
      loss_fidelity`; needs level_logits, score, score_std, soft_label, mu, sigma.
    * `"onehot"`: cross-entropy to the one-hot level; term `loss_ce`; needs level_logits and a one-hot soft_label.
    * `"scalar"`: `MSE(regression, mu)`; term `loss_mse`; needs regression, mu.

    `score_std` may be None with `fixed_std`. Returns a dict of scalar tensors; `loss` carries the gradient, the
    other entries are the unweighted terms for logging.
    """
    record = get_objective(objective)
    log_probs = level_log_probs(level_logits, vocab_logits, softmax or record.softmax)
    return record.loss(level_log_probs=log_probs, score=score, score_std=score_std, regression=regression,
                       soft_label=soft_label, mu=mu, sigma=sigma, group_ids=group_ids, lambda_within=lambda_within,
                       lambda_cross=lambda_cross, lambda_fidelity=lambda_fidelity, fixed_std=fixed_std, eps=eps)
