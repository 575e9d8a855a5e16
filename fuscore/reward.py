"""FuScore as a differentiable reward for training fusion networks (DESIGN section 7).

    reward = FuScoreReward(model)                                   # overall score, in [1, 5]
    reward = FuScoreReward(model, weights=EVAFUSION_WEIGHTS)        # the four sub-dimensions, EVAFusion's weights
    reward = FuScoreReward(model, weights="evafusion")              # EVAFusion's reward exactly (needs a map head)
    r = reward(fused)                                               # fused: [B, C, H, W] in [0, 1] -> r: [B]
    (-r.mean()).backward()                                          # gradients reach the fused pixels
    evafusion_reward(scores, artifact_map)                          # EVAFusion's reward, map-weighted artifacts

The images never leave their device: `FuScoreProcessor.tensor_inputs` resizes, normalises and patchifies them with
torch operations under the image processor's own rules, and the model's differentiable `forward` (not `score`, which
runs under inference mode) gives the expected level value `s = sum_l p_l v_l`, smooth in the logits.

Two ways to train a fusion network with it:
  * direct: `loss = -reward(fused).mean() + lambda * fidelity`, the gradient of the expected score flowing to the pixels;
  * group-relative: G candidates per source pair from a stochastic policy, `group_advantages` of their rewards and a
    clipped policy-gradient step (`clipped_policy_loss`), as GRPO does (Shao et al., "DeepSeekMath", 2024).
`fuscore.reward_finetune` runs both on VIFB's source pairs.
"""

from contextlib import nullcontext
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from configuration_fuscore import SUB_DIMENSIONS
from attribution_fuscore import tensor_batch
from scoring_fuscore import upsample_artifact_map


# EVAFusion (Liu et al., "Bridging Human Evaluation to Infrared and Visible Image Fusion", CVPR 2026) fine-tunes its
# fusion network with the weighted sum of its reward model's four sub-scores, read from its released
# `reward_final.py` (github.com/ALKA-Wind/EVAFusion): thermal retention 1.0, texture preservation 2.0, artifacts 0.5,
# sharpness 2.0, the overall score unused. There the artifacts weight is also multiplied by 1 + the share of its
# predicted artifact heat map at or above 0.5: `evafusion_reward` applies that factor given a map, and
# `FuScoreReward(model, weights="evafusion")` with the model's own predicted map; `FuScoreReward` with these weights
# as a mapping is their plain weighted mean, without a map (the factor taken as 1).
EVAFUSION_WEIGHTS = {"thermal_retention": 1.0, "texture_preservation": 2.0, "artifacts": 0.5, "sharpness": 2.0}
EVAFUSION = "evafusion"  # `FuScoreReward(weights=EVAFUSION)`: EVAFusion's map-weighted reward, exactly
EVAFUSION_SCORE_SCALE = 5.0  # EVAFusion's reward model regresses each score divided by 5
EVAFUSION_WHITE_THRESHOLD = 0.5  # a map pixel at or above it counts as "white" (an artifact)


def white_ratio(artifact_map: torch.Tensor, threshold: float = EVAFUSION_WHITE_THRESHOLD) -> torch.Tensor:
    """The share of each map's pixels at or above `threshold` (`>=`, as EVAFusion's `compute_white_ratio_batch`).

    A hard threshold has no useful gradient (zero almost everywhere, undefined at the threshold), so, as in EVAFusion,
    the ratio is a constant of the reward: it is computed without gradient and the reward's gradient flows through
    the scores only.

    Args:
        artifact_map (`torch.Tensor` of shape `(B, H, W)` or `(B, 1, H, W)`): maps in [0, 1].
    Returns:
        `torch.Tensor` of shape `(B,)`, float32, in [0, 1], detached.
    """
    if artifact_map.ndim == 4 and artifact_map.shape[1] == 1:
        artifact_map = artifact_map[:, 0]
    if artifact_map.ndim != 3 or artifact_map[0].numel() == 0:
        raise ValueError(f"artifact_map must be [B, H, W] or [B, 1, H, W], got shape {tuple(artifact_map.shape)}.")
    with torch.no_grad():
        return (artifact_map.detach() >= threshold).flatten(1).float().mean(dim=1)


def evafusion_reward(scores: Mapping[str, torch.Tensor], artifact_map: torch.Tensor,
                     threshold: float = EVAFUSION_WHITE_THRESHOLD) -> torch.Tensor:
    """EVAFusion's fine-tuning reward, exactly: `0.5 (1 + w) A + 2 T + 1 Th + 2 S` per image.

    `A`, `T`, `Th`, `S` are the artifacts, texture preservation, thermal retention and sharpness scores and `w` the
    `white_ratio` of the image's predicted artifact map (share of pixels `>= threshold`, no gradient). The weights
    are `EVAFUSION_WEIGHTS`, unnormalised, and the overall score is not used (EVAFusion's `reward_final.py`, whose
    loss is `-0.5 * mean(reward)`). A larger artifact area raises the weight of the artifacts score, whose gradient
    then pushes harder towards fewer artifacts; the map itself gets no gradient.

    EVAFusion's reward model regresses each score divided by 5 (its labels are out of 5), so its rewards are on that
    scale: pass FuScore's [1, 5] scores divided by 5 to reproduce its values (the reward is linear in the scores, so
    undivided scores give 5 times the reward and the same gradient directions). EVAFusion computes `w` on its
    384 x 384 output map; pass the map at the resolution it should be counted on.

    Args:
        scores: `{"artifacts", "texture_preservation", "thermal_retention", "sharpness"}` -> `(B,)` tensors (extra
            keys, such as "overall", are ignored).
        artifact_map (`torch.Tensor` of shape `(B, H, W)` or `(B, 1, H, W)`): predicted maps in [0, 1].
        threshold (`float`, defaults to 0.5): EVAFusion's.
    Returns:
        `torch.Tensor` of shape `(B,)`, differentiable w.r.t. the scores.
    """
    missing = [name for name in EVAFUSION_WEIGHTS if name not in scores]
    if missing:
        raise ValueError(f"evafusion_reward needs the scores {missing} (given: {sorted(scores)}).")
    artifacts = scores["artifacts"]
    ratio = white_ratio(artifact_map, threshold).to(artifacts.device)
    if ratio.shape != artifacts.reshape(-1).shape:
        raise ValueError(f"{ratio.numel()} maps for {artifacts.numel()} artifacts scores.")
    reward = EVAFUSION_WEIGHTS["artifacts"] * (1.0 + ratio.to(artifacts.dtype)) * artifacts.reshape(-1)
    for name in ("texture_preservation", "thermal_retention", "sharpness"):
        reward = reward + EVAFUSION_WEIGHTS[name] * scores[name].reshape(-1)
    return reward


class FuScoreReward(nn.Module):
    """Per-image rewards from a frozen FuScore model, differentiable with respect to the input images.

    Args:
        model (`FuScoreForQuality`): the scorer, with its processor attached (`model.get_processor()`). It is frozen in
            place: its parameters stop requiring gradients and it stays in eval mode (`train()` on this module or a
            module holding it leaves the scorer in eval mode).
        dimensions (`str` or sequence): the rating dimensions read; by default the keys of `weights` when it is a
            mapping, else `"overall"`.
        weights (mapping or sequence of floats, or `"evafusion"`, *optional*): one weight per dimension; equal weights
            by default. The reward is the weighted mean `sum_k w_k s_k / sum_k w_k`, on the score scale [1, 5].
            EVAFusion sums its sub-scores (on [0, 1]) with the weights unnormalised; that differs from this mean by a
            constant factor, which the reward's coefficient in the loss absorbs. `EVAFUSION_WEIGHTS` are EVAFusion's
            weights, used this way without any map.

            `"evafusion"` is EVAFusion's fine-tuning reward exactly (`evafusion_reward`):
            `0.5 (1 + w) A + 2 T + 1 Th + 2 S` on the four sub-scores divided by 5 (EVAFusion's scale), `w` the
            `white_ratio` of the image's artifact map as this model predicts it (`predicted_maps`: the map head's
            per-patch probabilities of the artifacts prompt's rows, upsampled bilinearly to the image's size, as
            EVAFusion counts `w` on its output map). `w` is a hard threshold (the share of map pixels at or above
            0.5), whose gradient is zero almost everywhere, so, as in EVAFusion, it is a constant factor of each
            image's artifacts weight: computed without gradient, the reward's gradient flows through the four scores
            only. It needs a model with an artifact-map head (trained with maps, DESIGN.md section 10); `dimensions`
            must then be left unset (the four sub-dimensions).
        bf16 (`bool`): run the scorer under bfloat16 autocast (on the images' device type).
        checkpointing (`bool`): activation checkpointing of the scorer's decoder layers and vision blocks, so that
            an 8B scorer fits beside a fusion network on one GPU; the activations are recomputed in the backward pass.
            transformers checkpoints a layer only when that layer's `training` flag is set, so those layers' own flags
            are set (their submodules, attention included, stay in eval mode: Qwen-VL has no dropout at eval).
        processor (`FuScoreProcessor`, *optional*): defaults to the model's own.

    `forward(fused, ir=None, vis=None)` takes `[B, C, H, W]` tensors in [0, 1] (C = 1 or 3; the sources are needed when
    the model reads them, `input_mode="fused_ir_vis"`) and returns the `[B]` float32 rewards. All dimensions are
    scored in one forward pass of `len(dimensions) * B` rows.
    """

    def __init__(self, model, dimensions: Union[str, Sequence[str], None] = None,
                 weights: Union[Mapping[str, float], Sequence[float], None] = None, bf16: bool = False,
                 checkpointing: bool = False, processor=None):
        super().__init__()
        self.map_weighted = isinstance(weights, str)
        if self.map_weighted:
            if weights != EVAFUSION:
                raise ValueError(f"weights={weights!r}: the named weighting is {EVAFUSION!r} (EVAFusion's "
                                 "map-weighted reward); otherwise give one weight per dimension.")
            if not getattr(model.config, "artifact_map", False):
                raise ValueError("weights='evafusion' is EVAFusion's reward, whose artifacts weight grows with the "
                                 "share of the predicted artifact map at or above 0.5, but this model has no "
                                 "artifact-map head (it was trained without maps). Use a model trained with maps "
                                 "(--lambda_map on a table with artifact_heatmap), or weights=EVAFUSION_WEIGHTS for "
                                 "the weighted mean of the four scores without a map.")
            if dimensions is not None and list([dimensions] if isinstance(dimensions, str) else dimensions) != \
                    list(EVAFUSION_WEIGHTS):
                raise ValueError(f"weights='evafusion' reads EVAFusion's four dimensions {list(EVAFUSION_WEIGHTS)}; "
                                 f"leave dimensions unset (got {dimensions!r}).")
            weights = EVAFUSION_WEIGHTS
        if dimensions is None:
            dimensions = list(weights) if isinstance(weights, Mapping) else ["overall"]
        self.processor = processor or model.get_processor()
        self.dimensions = self.processor.resolve_dimensions(dimensions)
        if weights is None:
            weights = [1.0] * len(self.dimensions)
        elif isinstance(weights, Mapping):
            if set(weights) != set(self.dimensions):
                raise ValueError(f"weights name {sorted(weights)} but the dimensions are {sorted(self.dimensions)}.")
            weights = [weights[name] for name in self.dimensions]
        weights = [float(weight) for weight in weights]
        if len(weights) != len(self.dimensions) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights must be one non-negative weight per dimension ({len(self.dimensions)}) with a "
                             f"positive sum; got {weights}.")
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32) / sum(weights), persistent=False)
        self.bf16 = bf16
        self.model = model
        model.requires_grad_(False)
        self._checkpointed = []
        if checkpointing:
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; 5.17 has the older name
                model.activation_checkpointing_enable({"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            # FuScore leaves a frozen vision tower unchecked, as nothing back-propagates through it in its own
            # training; a reward's gradient does flow through it, to the pixels.
            for module in model.model.visual.modules():
                if isinstance(module, GradientCheckpointingLayer):
                    module.gradient_checkpointing = True
            self._checkpointed = [module for module in model.modules()
                                  if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing]
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        for layer in self._checkpointed:
            layer.training = True  # the flag transformers' checkpointing wrapper reads; submodules stay in eval
        return self

    def inputs(self, fused: torch.Tensor, ir: Optional[torch.Tensor] = None, vis: Optional[torch.Tensor] = None) -> dict:
        """The scorer's inputs for a batch: patches on the images' device, positions computed on the host, as the
        scoring engine computes them, then everything on the device."""
        return tensor_batch(self.model, self.processor, fused, ir, vis, self.dimensions, cast=not self.bf16)

    def _outputs(self, fused: torch.Tensor, ir: Optional[torch.Tensor], vis: Optional[torch.Tensor]):
        autocast = torch.autocast(fused.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with autocast:
            # The map head only where the reward reads the map: selecting the fused image's tokens waits for the GPU.
            return self.model(**self.inputs(fused, ir, vis), return_artifact_map=self.map_weighted)

    def dimension_scores(self, fused: torch.Tensor, ir: Optional[torch.Tensor] = None,
                         vis: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`[len(dimensions), B]` float32 expected scores, in `dimensions` order."""
        return self._outputs(fused, ir, vis).score.view(len(self.dimensions), fused.shape[0])

    def predicted_maps(self, outputs, size: Sequence[int]) -> torch.Tensor:
        """`(B, H, W)` float32 artifact maps in [0, 1] from a forward pass's map head: the rows of the artifacts
        prompt (the head reads the fused image's tokens, which come before the question, so every prompt's rows give
        the same map up to rounding), each row's per-patch probabilities on its grid, upsampled bilinearly to `size`
        (`(H, W)`, the images' size) as `model.score(..., return_maps=True)` upsamples them
        (`scoring_fuscore.upsample_artifact_map`). Detached: the map enters the reward only through `white_ratio`."""
        if outputs.artifact_probs is None:
            raise ValueError("The model's forward pass gave no artifact map (no map head).")
        batch = outputs.score.shape[0] // len(self.dimensions)
        first = self.dimensions.index("artifacts") * batch if "artifacts" in self.dimensions else 0
        grids = outputs.artifact_grids.tolist()
        maps = torch.split(outputs.artifact_probs.detach().float().cpu(), [h * w for h, w in grids])
        # The serving path's upsampling (on the host: the grids are small, the ratio is all the reward keeps).
        return torch.stack([torch.from_numpy(upsample_artifact_map(maps[row].view(*grids[row]), size))
                            for row in range(first, first + batch)]).to(outputs.artifact_probs.device)

    def forward(self, fused: torch.Tensor, ir: Optional[torch.Tensor] = None,
                vis: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self.map_weighted:
            return self.weights.to(fused.device) @ self.dimension_scores(fused, ir, vis)
        outputs = self._outputs(fused, ir, vis)
        scores = outputs.score.view(len(self.dimensions), fused.shape[0]) / EVAFUSION_SCORE_SCALE
        maps = self.predicted_maps(outputs, fused.shape[-2:])
        return evafusion_reward(dict(zip(self.dimensions, scores)), maps)



def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages: `(r - mean_G) / (std_G + eps)` within each group of G candidates.

    This is the outcome-reward advantage of GRPO (Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical
    Reasoning in Open Language Models", 2024, section 4.1.2): each candidate is judged against the other candidates
    for the same input, so no value network is needed. The standard deviation is the sample one (Bessel's
    correction) and `eps = 1e-4`, as trl's `GRPOTrainer` computes it. DESIGN section 7 and the FuScore issue ascribe a
    GRPO fine-tuning to EVAFusion; its released fine-tuning script back-propagates the weighted reward directly (the
    "direct" mode here), so this helper follows the GRPO paper, not EVAFusion's code.

    Args:
        rewards (`torch.Tensor` of shape `(P, G)`): rewards of G >= 2 candidates for each of P source pairs.
    Returns:
        `torch.Tensor` of shape `(P, G)`: zero-mean within each group; all zeros for a group of equal rewards.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [pairs, candidates] with at least 2 candidates per pair; got shape "
                         f"{tuple(rewards.shape)}.")
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    return centred / (rewards.std(dim=1, keepdim=True) + eps)


def clipped_policy_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                        clip: float = 0.2) -> torch.Tensor:
    """The clipped surrogate of PPO/GRPO, to be minimised: `-mean(min(rho A, clip(rho, 1 - e, 1 + e) A))`.

    `rho = exp(log_prob - old_log_prob)` is the probability ratio of each action unit under the current and the
    sampling policy. For an image policy the units are pixels (GRPO's are tokens): `log_prob` and `old_log_prob` are
    `[P, G, ...]` per-unit log-probabilities, `advantages` the `[P, G]` group advantages broadcast over the units; the
    mean runs over all units, as GRPO averages its token terms.
    """
    if log_prob.shape != old_log_prob.shape or log_prob.shape[:2] != advantages.shape:
        raise ValueError(f"log_prob {tuple(log_prob.shape)} and old_log_prob {tuple(old_log_prob.shape)} must be "
                         f"[P, G, ...] for advantages of shape {tuple(advantages.shape)}.")
    ratio = (log_prob - old_log_prob.detach()).exp()
    advantages = advantages.detach().reshape(advantages.shape + (1,) * (log_prob.ndim - 2))
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    return -surrogate.mean()


__all__ = ["EVAFUSION", "EVAFUSION_WEIGHTS", "EVAFUSION_WHITE_THRESHOLD", "FuScoreReward", "SUB_DIMENSIONS", "clipped_policy_loss",
           "evafusion_reward", "group_advantages", "white_ratio"]
