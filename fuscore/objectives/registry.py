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
    record.answer_tokens        # True: the loss also needs the NLL of the answer-prefix tokens

Peer baselines carry the peer's name only where they follow the peer's published code: `qalign` (Q-Align) and
`deqa` (DeQA-Score). The project's own controlled variants are named for what they are: `fuscore_mos_std_only`,
`nearest_onehot`, and `scalar`, a linear regression head on the answer-position hidden state of the same Qwen-VL
model trained with MSE to the overall score on [1, 5]. `scalar` is not EVAFusion's reward model: that one encodes
the fused, infrared and visible images with a frozen pretrained ViT-L/16-384, fuses the three patch sequences with a
linear projection and a second ViT encoder of the same shape (randomly initialised and also frozen in its training
script), and trains convolutional-MLP heads ending in a sigmoid with MSE on all five scores divided by 5 (one head
shared by the five unless `--multi_heads`), plus an MSE on the artifact heatmap.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable, Literal, Optional, get_args

import torch

from .labels import (ArrayLike, Targets, deqa_targets, fuscore_mos_std_only_targets, fuscore_targets, onehot_targets,
                     qalign_targets)
from .losses import GroupIds, deqa_loss, fuscore_loss, level_log_probs, onehot_loss, qalign_loss, scalar_loss
from .maps import map_loss


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


LOSS_INPUTS = ("level_log_probs", "score", "score_std", "regression", "soft_label", "mu", "sigma", "group_ids",
               "answer_nll", "answer_tokens", "lambda_within", "lambda_cross", "fixed_std", "eps")
"""Everything `compute_objective` can give a loss; each loss's signature names the ones it uses."""


@dataclass(frozen=True)
class Objective:
    """One training objective: how its labels are built, its loss, and what it needs from the model and the data.

    Attributes:
        name (`str`): the value of `--objective`.
        label (`Callable`): `label(mu, sub_scores, mos_std, sigma_min, level_values) -> (soft_label, sigma)`, the
            per-row targets a collator stores (`soft_label` `(N, L)` in `level_values`' order, `sigma` `(N,)`).
        loss (`Callable`): keyword arguments, those it uses among `level_log_probs`, `score`, `score_std`,
            `regression`, `soft_label`, `mu`, `sigma`, `group_ids`, `answer_nll`, `answer_tokens` and the options
            `lambda_within`, `lambda_cross`, `fixed_std`, `eps` (its signature is the list of its inputs:
            `compute_objective` passes it those alone) -> dict of scalar tensors: `loss` (with the gradient) and the
            terms in `terms`.
        predict (`Callable`): model outputs -> `[B]` prediction (the expected score, or the regression head's
            output), what evaluation correlates with the MOS.
        regression_head (`bool`): the model needs a regression head on the answer-position hidden state.
        softmax (`"levels"` or `"vocabulary"`): restricted softmax over the `L` level logits, or the
            full-vocabulary softmax gathered at the level tokens (DeQA-Score); `level_log_probs` applies it.
        batches (`"pair_grouped"` or `"random"`): pair-aware batches of P source pairs x M fused images
            (`PairGroupedBatchSampler`), or randomly drawn batches of the same size.
        terms (`tuple[str, ...]`): the names of the logged loss terms besides `loss`.
        description (`str`): one line for `--help` and the docs.
        answer_tokens (`bool`, defaults to False): the loss also takes `answer_nll` and `answer_tokens` `(B,)`, the
            summed next-token NLL of each row's answer-prefix tokens under the full-vocabulary softmax and their
            number (the peers' next-token cross-entropy on the answer, `fuscore.training.answer_tokens`).
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
    answer_tokens: bool = False

    @functools.cached_property
    def loss_inputs(self) -> tuple[str, ...]:
        """The keyword arguments the loss takes (its signature): what `compute_objective` passes it."""
        return tuple(inspect.signature(self.loss).parameters)

    def __post_init__(self):
        if self.softmax not in get_args(Softmax):
            raise ValueError(f"Objective {self.name!r}: softmax must be one of {get_args(Softmax)}, got {self.softmax!r}.")
        if self.batches not in get_args(Batches):
            raise ValueError(f"Objective {self.name!r}: batches must be one of {get_args(Batches)}, got {self.batches!r}.")
        unknown = sorted(set(self.loss_inputs) - set(LOSS_INPUTS))
        if unknown:
            raise ValueError(f"Objective {self.name!r}: its loss takes {unknown}, which compute_objective does not "
                             f"provide ({', '.join(LOSS_INPUTS)}).")


_RECORDS = (
    Objective(
        name="fuscore", label=fuscore_targets, loss=fuscore_loss, predict=expected_score, regression_head=False,
        softmax="levels", batches="pair_grouped", terms=("loss_dist", "loss_within", "loss_cross"),
        description="FuScore's tripartite objective: KL to the soft label + within- and cross-pair Thurstone "
                    "fidelity."),
    Objective(
        name="qalign", label=qalign_targets, loss=qalign_loss, predict=expected_score, regression_head=False,
        softmax="vocabulary", batches="random", terms=("loss_ce_level", "loss_ce_answer"), answer_tokens=True,
        description="Q-Align: one-hot on the equal-fifths level, next-token cross-entropy (full vocabulary) on the "
                    "level word and the answer prefix, random batches."),
    Objective(
        name="deqa", label=deqa_targets, loss=deqa_loss, predict=expected_score, regression_head=False,
        softmax="vocabulary", batches="random", terms=("loss_kl", "loss_ce_answer", "loss_fidelity"),
        answer_tokens=True,
        description="DeQA-Score: its soft label (untruncated-tail Gaussian, one correction, no renormalisation), "
                    "fidelity on random pairs with the predicted std fixed + 0.05 x (full-vocabulary KL + answer "
                    "cross-entropy)."),
    Objective(
        name="fuscore_mos_std_only", label=fuscore_mos_std_only_targets, loss=fuscore_loss, predict=expected_score,
        regression_head=False, softmax="levels", batches="pair_grouped",
        terms=("loss_dist", "loss_within", "loss_cross"),
        description="Ablation: the tripartite objective with the label's spread from mos_std only (no sub-score "
                    "agreement)."),
    Objective(
        name="nearest_onehot", label=onehot_targets, loss=onehot_loss, predict=expected_score, regression_head=False,
        softmax="levels", batches="pair_grouped", terms=("loss_ce",),
        description="Ablation: cross-entropy (restricted softmax) to the nearest level, one-hot."),
    Objective(
        name="scalar", label=onehot_targets, loss=scalar_loss, predict=regression_output, regression_head=True,
        softmax="levels", batches="pair_grouped", terms=("loss_mse",),
        description="Ablation: a linear regression head on the answer-position hidden state, MSE to the overall "
                    "score (not EVAFusion's ViT-L regressor)."),
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
    sub_scores, mos_std)`; `"qalign"` `qalign_label(mu)`; `"deqa"` `deqa_soft_label(mu, mos_std)` with the raw std;
    `"fuscore_mos_std_only"` `fuscore_soft_label(mu, None, mos_std)`; `"nearest_onehot"` `onehot_label(mu)`;
    `"scalar"` the same as `"nearest_onehot"` (its loss reads only `mu`; every batch keeps the same fields). The
    one-hot objectives return `sigma` as `"fuscore"` does (no loss reads it).
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
    fixed_std: bool = False,
    softmax: Optional[Softmax] = None,
    answer_nll: Optional[torch.Tensor] = None,
    answer_tokens: Optional[torch.Tensor] = None,
    eps: float = 1e-8,
    artifact_probs: Optional[torch.Tensor] = None,
    map_target: Optional[torch.Tensor] = None,
    map_patch_counts: Optional[torch.Tensor] = None,
    has_map: Optional[torch.Tensor] = None,
    lambda_map: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The training loss of one batch for `objective` (a name or its registry record, read once by the caller);
    what `FuScoreTrainer.compute_loss` calls. The loss gets the arguments its signature names (`Objective.loss_inputs`)
    and no others: an option an objective does not use (DeQA's fixed weights) reaches nothing.

    Model outputs: `level_logits` `(B, L)`, `vocab_logits` `(B, V)` (only for the full-vocabulary softmax),
    `score` `(B,)`, `score_std` `(B,)`, `regression` `(B,)`, and for the records with `answer_tokens` the summed
    NLL of each row's answer-prefix tokens `answer_nll` `(B,)` and their number `answer_tokens` `(B,)`. Batch
    labels: `soft_label` `(B, L)` (from `label_for_objective`, same level order as the logits), `mu` `(B,)`,
    `sigma` `(B,)`, `group_ids` (`list[str]` or `LongTensor` `(B,)`). `softmax` overrides the record's softmax mode
    (`--full_vocab_softmax`).

    * `"fuscore"`, `"fuscore_mos_std_only"`: `L_dist + lambda_within L_within + lambda_cross L_cross`; terms
      `loss_dist, loss_within, loss_cross`; needs level_logits, score, score_std, soft_label, mu, sigma, group_ids.
    * `"qalign"`: token-mean cross-entropy of the level word (full vocabulary) and the answer prefix; terms
      `loss_ce_level, loss_ce_answer`; needs level_logits, vocab_logits, a one-hot soft_label, answer_nll/tokens.
    * `"deqa"`: `F(random pairs, fixed std) + 0.05 sum_halves (CE + KL)` (`deqa_loss`); terms `loss_kl,
      loss_ce_answer, loss_fidelity`; needs level_logits, vocab_logits, score, soft_label, mu, sigma,
      answer_nll/tokens.
    * `"nearest_onehot"`: cross-entropy to the one-hot level; term `loss_ce`; needs level_logits, a one-hot label.
    * `"scalar"`: `MSE(regression, mu)`; term `loss_mse`; needs regression, mu.

    The artifact-map term (DESIGN.md section 10) is the same for every objective, so it is added here rather than
    in a record's loss: given the map head's `artifact_probs` `(N,)` (one per merged patch of each row's fused image,
    rows concatenated in batch order), the pooled `map_target` `(N,)`, each row's patch count `map_patch_counts`
    `(B,)` and `has_map` `(B,)` (`fuscore.objectives.map_targets`), the terms gain `loss_map` (`map_loss`: 0 when
    no row has a map) and `loss` gains `lambda_map * loss_map`. Without `artifact_probs` or `map_target` there is
    no map term, and a positive `lambda_map` is an error (the weight would silently train nothing).

    `score_std` may be None with `fixed_std`. Returns a dict of scalar tensors; `loss` carries the gradient, the
    other entries are the unweighted terms for logging.
    """
    record = get_objective(objective)
    log_probs = level_log_probs(level_logits, vocab_logits, softmax or record.softmax)
    given = dict(level_log_probs=log_probs, score=score, score_std=score_std, regression=regression,
                 soft_label=soft_label, mu=mu, sigma=sigma, group_ids=group_ids, lambda_within=lambda_within,
                 lambda_cross=lambda_cross, fixed_std=fixed_std, answer_nll=answer_nll, answer_tokens=answer_tokens,
                 eps=eps)
    terms = record.loss(**{name: given[name] for name in record.loss_inputs})
    if artifact_probs is None or map_target is None:
        if lambda_map > 0:
            raise ValueError(f"lambda_map={lambda_map} needs the map head's artifact_probs and the batch's map "
                             "targets (a model with an artifact-map head and a table with a map column).")
        return terms
    terms["loss_map"] = map_loss(artifact_probs, map_target, map_patch_counts, has_map)
    terms["loss"] = terms["loss"] + lambda_map * terms["loss_map"]
    return terms
