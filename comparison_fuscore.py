# Copyright 2026 The FuScore authors. Apache-2.0.
"""Pairwise comparison of fused images under FuScore's Thurstone model (DESIGN.md section 11): the engine behind
`FuScoreForQuality.compare`, and the one definition of the formula (`fuscore.pairwise` imports it from here).

This file is Hub remote code: it imports only the standard library, torch and its siblings `configuration_fuscore.py`
(the level values) and `scoring_fuscore.py` (the scoring engine). Like the scoring engine it drives any FuScore model
object, so it never imports `modeling_fuscore.py`.

Each fused image's quality is read from its predicted level distribution as a normal variable with the distribution's
mean `s` and standard deviation `sd` (`level_moments`: the model's `score` and `score_std`). For images a and b the
difference `D = X_a - X_b` is then `N(s_a - s_b, sd_a^2 + sd_b^2)`, so

    P(a better than b) = Phi((s_a - s_b) / sqrt(sd_a^2 + sd_b^2)),

the model the training objective's fidelity terms fit (DESIGN.md section 4): 0.5 for an image against itself, and
`P(a, b) + P(b, a) = 1`. With a tie band `t > 0` a difference `|D| <= t` is a tie (the Thurstone-Mosteller model with
a tie threshold, Glenn and David, 1960): P(a) = `Phi((s_a - s_b - t) / sigma)`, P(b) = `Phi((s_b - s_a - t) / sigma)`,
P(tie) the rest. The variance is floored at `eps`, so two one-level distributions (sd = 0) give 0.5 / 0 / 1 instead
of NaN.
"""

import hashlib
import os
from typing import NamedTuple, Sequence, Union

import torch


try:  # Hub remote code: the sibling files are part of the same dynamic module package.
    from .configuration_fuscore import DEFAULT_LEVEL_VALUES
except ImportError:  # A checkout or an installed FuScore: the siblings are top-level modules.
    from configuration_fuscore import DEFAULT_LEVEL_VALUES
try:
    from .scoring_fuscore import check_count, score_images
except ImportError:
    from scoring_fuscore import check_count, score_images


TensorLike = Union[torch.Tensor, float, Sequence[float]]


class PairwiseOutcome(NamedTuple):
    """Probabilities of the three outcomes of comparing image a with image b; they sum to 1.

    `preference_probabilities` gives tensors of the inputs' broadcast shape; `FuScoreForQuality.compare` gives floats
    for one pair and lists of floats for lists of pairs. Without a tie band `tie` is 0 and `b_better = 1 - a_better`.
    As a tuple it unpacks as `a_better, tie, b_better = ...`.
    """

    a_better: Union[torch.Tensor, float, list]
    tie: Union[torch.Tensor, float, list]
    b_better: Union[torch.Tensor, float, list]


def level_moments(level_probs: torch.Tensor, level_values: Sequence[float] = DEFAULT_LEVEL_VALUES) -> tuple:
    """Mean `s = sum_l p_l v_l` and standard deviation `sd = sqrt(sum_l p_l (v_l - s)^2)` of level distributions.

    Args:
        level_probs (`torch.Tensor` of shape `(..., L)`): probabilities over the levels, in `level_values`' order (the
            model's own order by default: excellent..bad = 5..1).
    Returns:
        `(score, std)`, each of shape `(...)`, as the model's `score` and `score_std`.
    """
    probs = torch.as_tensor(level_probs)
    probs = probs.to(torch.promote_types(probs.dtype, torch.float32))
    values = torch.as_tensor(level_values, dtype=probs.dtype, device=probs.device)
    if probs.shape[-1] != values.numel():
        raise ValueError(f"level_probs has {probs.shape[-1]} levels but level_values {values.numel()}.")
    score = probs @ values
    std = (probs * (values - score[..., None]) ** 2).sum(-1).clamp_min(0).sqrt()
    return score, std


def preference_probabilities(score_a: TensorLike, std_a: TensorLike, score_b: TensorLike, std_b: TensorLike,
                             tie_band: float = 0.0, eps: float = 1e-8) -> PairwiseOutcome:
    """Thurstone outcome probabilities of comparing image a with image b (module docstring), broadcast over batches.

    Args:
        score_a, std_a, score_b, std_b: predicted scores and spreads (tensors or numbers, broadcastable).
        tie_band (`float`, defaults to 0): half-width `t` of the band of score differences called a tie, on the score
            scale; 0 gives two outcomes (`tie` is 0).
        eps (`float`): floor of the variance `sd_a^2 + sd_b^2`.
    Returns:
        `PairwiseOutcome(a_better, tie, b_better)` of tensors; `a_better` of (a, b) equals `b_better` of (b, a), bit
        for bit.
    """
    if not tie_band >= 0:
        raise ValueError(f"tie_band must be >= 0, got {tie_band}.")
    tensors = [torch.as_tensor(x) for x in (score_a, std_a, score_b, std_b)]
    dtype = torch.promote_types(torch.result_type(*tensors[:2]), torch.result_type(*tensors[2:]))
    dtype = torch.promote_types(dtype, torch.float32)
    score_a, std_a, score_b, std_b = (x.to(dtype) for x in tensors)
    sigma = (std_a**2 + std_b**2).clamp_min(eps).sqrt()
    difference = score_a - score_b
    a_better = torch.special.ndtr((difference - tie_band) / sigma)
    b_better = torch.special.ndtr((-difference - tie_band) / sigma)
    # The rest is the tie (written so, it is the same for (a, b) and (b, a), bit for bit).
    tie = (1.0 - (a_better + b_better)).clamp_min(0) if tie_band > 0 else torch.zeros_like(a_better)
    return PairwiseOutcome(a_better, tie, b_better)


def compare_distributions(probs_a: torch.Tensor, probs_b: torch.Tensor, tie_band: float = 0.0,
                          level_values: Sequence[float] = DEFAULT_LEVEL_VALUES) -> PairwiseOutcome:
    """`preference_probabilities` from two (batches of) level distributions `(..., L)`."""
    return preference_probabilities(*level_moments(probs_a, level_values), *level_moments(probs_b, level_values),
                                    tie_band=tie_band)


# ---------------------------------------------------------------------------------------------------------------------
# Comparing images with a model
# ---------------------------------------------------------------------------------------------------------------------


def image_key(image) -> tuple:
    """A key under which two inputs are the same image: a path by its absolute name, encoded bytes and arrays
    (numpy or torch, anything with `shape`, `dtype` and `tobytes`/`numpy`) by their content, anything else (a PIL
    image) by identity. `None` (no source) is its own key."""
    if image is None:
        return ("none",)
    if isinstance(image, (str, os.PathLike)):
        return ("path", os.path.abspath(os.fspath(image)))
    if isinstance(image, bytes):
        return ("bytes", hashlib.sha256(image).hexdigest())
    if torch.is_tensor(image):
        data = image.detach().cpu().contiguous()
        content = data.view(torch.uint8).numpy().tobytes() if data.ndim else data.numpy().tobytes()
        return ("array", tuple(data.shape), str(data.dtype), hashlib.sha256(content).hexdigest())
    if hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "tobytes"):
        return ("array", tuple(image.shape), str(image.dtype), hashlib.sha256(image.tobytes()).hexdigest())
    return ("object", id(image))


def _per_pair(images, count: int, name: str) -> list:
    """One entry per pair: a single image (or None) repeated, or a list of `count` entries."""
    if not isinstance(images, (list, tuple)):
        return [images] * count
    if len(images) != count:
        raise ValueError(f"Got {count} pairs but {len(images)} {name} images.")
    return list(images)


def compare_images(model, processor, a, b, ir=None, vis=None, ir_b=None, vis_b=None, dimension: str = "overall",
                   tie_band: float = 0.0, batch_size: int = 8, num_workers: int = 0,
                   progress: bool = False) -> PairwiseOutcome:
    """`FuScoreForQuality.compare`: the outcome probabilities of comparing fused image(s) `a` with `b`.

    Every distinct image (with its sources, for a model that reads them) is scored once, by the scoring engine
    (`score_images`), in one call: an image compared with itself, or with several others, is not scored again, so
    an image against itself gives exactly 0.5. Then `preference_probabilities` of the two images' predicted scores and
    spreads, in float64.

    Args:
        a, b: one fused image each, or two lists of the same length (pair `i` is `a[i]` against `b[i]`).
        ir, vis: the sources of `a` (and of `b` unless `ir_b`, `vis_b` are given): one image for every pair or one
            per pair. Read only by models whose `input_mode` is `"fused_ir_vis"`.
        ir_b, vis_b: the sources of `b` where they differ from `a`'s (images of different scenes).
        dimension: the one rating dimension compared.
        tie_band, batch_size, num_workers, progress: as `preference_probabilities` and `score_images`.

    Returns:
        `PairwiseOutcome(a_better, tie, b_better)`: floats for one pair, lists of floats for lists.
    """
    if not tie_band >= 0:
        raise ValueError(f"tie_band must be >= 0, got {tie_band}.")
    check_count(batch_size, "batch_size")
    single = not isinstance(a, (list, tuple))
    if single != (not isinstance(b, (list, tuple))):
        raise ValueError("compare takes one image for a and one for b, or two lists of the same length.")
    a_list, b_list = ([a], [b]) if single else (list(a), list(b))
    if len(a_list) != len(b_list) or not a_list:
        raise ValueError(f"compare needs two non-empty lists of the same length; got {len(a_list)} and {len(b_list)}.")
    count = len(a_list)
    names = processor.resolve_dimensions(dimension, argument="dimension")
    if len(names) != 1:
        raise ValueError(f"compare compares on one dimension at a time; got {dimension!r}.")
    ir_a, vis_a = _per_pair(ir, count, "ir"), _per_pair(vis, count, "vis")
    ir_b = ir_a if ir_b is None else _per_pair(ir_b, count, "ir_b")
    vis_b = vis_a if vis_b is None else _per_pair(vis_b, count, "vis_b")
    reads_sources = processor.input_mode == "fused_ir_vis"

    distinct, keys = {}, []  # image key -> position among the images scored; per side, each pair's position
    fused, ir_list, vis_list = [], [], []
    for images, irs, viss in ((a_list, ir_a, vis_a), (b_list, ir_b, vis_b)):
        positions = []
        for image, ir_image, vis_image in zip(images, irs, viss):
            key = (image_key(image),) + ((image_key(ir_image), image_key(vis_image)) if reads_sources else ())
            if key not in distinct:
                distinct[key] = len(fused)
                fused.append(image)
                ir_list.append(ir_image)
                vis_list.append(vis_image)
            positions.append(distinct[key])
        keys.append(positions)
    no_sources = all(source is None for source in ir_list + vis_list)
    results = score_images(model, processor, fused, None if no_sources else ir_list, None if no_sources else vis_list,
                           names, batch_size=batch_size, num_workers=num_workers, progress=progress)[names[0]]
    score = torch.tensor(results["score"], dtype=torch.float64)
    std = torch.tensor(results["std"], dtype=torch.float64)
    first, second = torch.tensor(keys[0]), torch.tensor(keys[1])
    outcome = preference_probabilities(score[first], std[first], score[second], std[second], tie_band=tie_band)
    values = [probability.tolist() for probability in outcome]
    return PairwiseOutcome(*(value[0] for value in values)) if single else PairwiseOutcome(*values)


__all__ = ["PairwiseOutcome", "compare_distributions", "compare_images", "image_key", "level_moments",
           "preference_probabilities"]
