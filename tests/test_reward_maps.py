"""EVAFusion's reward exactly, with the scorer's own predicted artifact map: `FuScoreReward(model, weights="evafusion")`
(DESIGN.md sections 7 and 10), against a hand computation; the white ratio is a constant factor (no gradient)."""

import pytest
import torch
from torch import nn

from fuscore.reward import EVAFUSION_WEIGHTS, FuScoreReward
from scoring_fuscore import upsample_artifact_map
from fuscore.reward_finetune import FinetuneSettings, run_reward_finetune
from fuscore.tiny import build_tiny_model
from fuscore_data.importers import default_vifb_dir


SMALL = dict(hidden_size=32, num_layers=1, vision_hidden_size=32, vision_depth=1)
# Per-patch artifact probabilities of three 56 x 56 images (a 2 x 2 merged-patch grid each, row-major): all above
# 0.5 (white ratio 1), all below (0), and the top row above, the bottom below (0.5, worked out below).
PROBS = torch.tensor([[0.9, 0.7, 0.6, 0.8], [0.2, 0.1, 0.3, 0.4], [0.8, 0.8, 0.2, 0.2]])
WHITE = torch.tensor([1.0, 0.0, 0.5])


class FixedHead(nn.Module):
    """A map head whose logits are the given per-patch probabilities, for every prompt's rows."""

    def __init__(self, probs: torch.Tensor, prompts: int):
        super().__init__()
        self.logits = torch.logit(probs.reshape(-1)).repeat(prompts)

    def forward(self, hidden_states):
        assert hidden_states.shape[0] == self.logits.numel()
        return self.logits.to(hidden_states.dtype) + 0 * hidden_states.sum(-1)


def test_the_bilinear_upsampling_of_the_half_map_is_white_on_its_top_half():
    """Hand check of `WHITE[2]`: rows of a 2-row map upsampled to 56 take their centres at y = 14 and 42; pixel row i
    (centre i + 0.5) is 0.8 - 0.6 (i + 0.5 - 14) / 28 between them, >= 0.5 exactly for i <= 27: half the rows."""
    grid = PROBS[2].view(2, 2)
    upsampled = torch.from_numpy(upsample_artifact_map(grid, (56, 56)))
    assert upsampled.shape == (56, 56)
    column = upsampled[:, 0]
    assert column[27].item() == pytest.approx(0.8 - 0.6 * 13.5 / 28) and column[28].item() == pytest.approx(0.8 - 0.6 * 14.5 / 28)
    assert ((upsampled >= 0.5).float().mean()).item() == 0.5


def test_evafusion_reward_uses_the_predicted_map_white_ratio_with_the_gradient_through_the_scores():
    model = build_tiny_model("qwen2_vl", artifact_map=True, seed=2, **SMALL)
    model.artifact_head = FixedHead(PROBS, prompts=4)
    reward = FuScoreReward(model, weights="evafusion")
    assert reward.dimensions == list(EVAFUSION_WEIGHTS) == ["thermal_retention", "texture_preservation", "artifacts",
                                                           "sharpness"]
    images = torch.rand(3, 3, 56, 56, generator=torch.Generator().manual_seed(0)).requires_grad_()
    value = reward(images)
    value.sum().backward()
    gradient = images.grad.clone()
    images.grad = None
    # By hand: EVAFusion's reward on the scores / 5 (its scale), the white ratio a constant of each image.
    thermal, texture, artifacts, sharpness = reward.dimension_scores(images) / 5
    hand = 0.5 * (1 + WHITE) * artifacts + 2 * texture + 1 * thermal + 2 * sharpness
    torch.testing.assert_close(value, hand)
    hand.sum().backward()
    torch.testing.assert_close(gradient, images.grad)
    assert gradient.abs().sum() > 0
    # Worked numbers for the first image: w = 1 doubles the artifacts weight to 1.
    first = (artifacts[0] + 2 * texture[0] + thermal[0] + 2 * sharpness[0]).item()
    assert value[0].item() == pytest.approx(first, rel=1e-6)
    # Without the map factor (w = 0) the second image's reward is the plain weighted sum.
    assert value[1].item() == pytest.approx((0.5 * artifacts[1] + 2 * texture[1] + thermal[1] + 2 * sharpness[1]).item(),
                                            rel=1e-6)
    maps = reward.predicted_maps(reward._outputs(images, None, None), (56, 56))
    assert maps.shape == (3, 56, 56) and not maps.requires_grad
    assert ((maps >= 0.5).float().flatten(1).mean(1)).tolist() == WHITE.tolist()


def test_evafusion_reward_needs_a_model_with_a_map_head():
    model = build_tiny_model("qwen2_vl", **SMALL)
    with pytest.raises(ValueError, match="weights='evafusion' is EVAFusion's reward.*this model has no artifact-map head"):
        FuScoreReward(model, weights="evafusion")
    FuScoreReward(model, weights=EVAFUSION_WEIGHTS)  # the weighted mean without a map stays available
    with_head = build_tiny_model("qwen2_vl", artifact_map=True, **SMALL)
    with pytest.raises(ValueError, match="leave dimensions unset"):
        FuScoreReward(with_head, weights="evafusion", dimensions=["overall"])
    with pytest.raises(ValueError, match="the named weighting is 'evafusion'"):
        FuScoreReward(with_head, weights="q-insight")


def test_the_reward_example_refuses_the_map_reward_for_a_scorer_without_a_head():
    with pytest.raises(ValueError, match="this model has no artifact-map head"):
        run_reward_finetune(FinetuneSettings(weights="evafusion_map", pretrain_steps=0, steps=0),
                            model=build_tiny_model("qwen2_vl", **SMALL), progress=False)
    with pytest.raises(ValueError, match="weights must be one of 'overall', 'evafusion', 'evafusion_map'"):
        run_reward_finetune(FinetuneSettings(weights="mine"))


@pytest.mark.slow
@pytest.mark.skipif(not (default_vifb_dir() / "manifest.csv").is_file(),
                    reason=f"VIFB is not at {default_vifb_dir()} (set FUSCORE_VIFB_DIR)")
def test_the_reward_example_runs_with_the_map_reward(tmp_path):
    model = build_tiny_model("qwen2_vl", artifact_map=True, seed=3, **SMALL).float()
    settings = FinetuneSettings(weights="evafusion_map", pretrain_steps=1, steps=1, crop=56, batch_pairs=2,
                                eval_max_side=96, held_out_pairs=2, modes=("direct",), figure_pairs=1)
    results = run_reward_finetune(settings, model=model, progress=False)
    for evaluation in results["held_out"].values():
        # EVAFusion's reward on scores / 5 lies between 5.5 x 1/5 (all scores 1, w = 0) and 6 (all 5, w = 1).
        assert all(1.1 - 1e-6 <= value <= 6.0 + 1e-6 for value in evaluation["per_pair"]["reward"])
        assert evaluation["mean"]["reward"] != evaluation["mean"]["FuScore"]
    assert "| reward |" in results["table"]
