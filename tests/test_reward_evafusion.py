"""EVAFusion's reward with the artifact map's white ratio (fuscore.reward.evafusion_reward), against a hand
computation."""

import pytest
import torch

from fuscore.reward import EVAFUSION_WEIGHTS, evafusion_reward, white_ratio


def _scores():
    # On EVAFusion's scale (score / 5).
    values = {"artifacts": [0.8, 0.6], "texture_preservation": [0.6, 0.4], "thermal_retention": [0.7, 1.0],
              "sharpness": [0.5, 0.2], "overall": [0.1, 0.1]}
    return {name: torch.tensor(value, requires_grad=True) for name, value in values.items()}


MAPS = torch.tensor([[[0.5, 0.49], [0.9, 0.0]],   # 0.5 counts (>=): 2 of 4 pixels white
                     [[0.0, 0.0], [0.3, 0.499]]])  # none white


def test_white_ratio_counts_pixels_at_or_above_the_threshold_without_gradient():
    maps = MAPS.clone().requires_grad_(True)
    ratio = white_ratio(maps)
    assert ratio.tolist() == [0.5, 0.0] and not ratio.requires_grad
    assert white_ratio(maps[:, None]).tolist() == [0.5, 0.0]  # (B, 1, H, W) as EVAFusion's head gives
    assert white_ratio(maps, threshold=0.3).tolist() == [0.75, 0.5]  # 0.3 itself counts
    with pytest.raises(ValueError, match="B, H, W"):
        white_ratio(MAPS[0])


def test_reward_matches_the_hand_computation_and_its_gradient_flows_through_the_scores():
    scores = _scores()
    maps = MAPS.clone().requires_grad_(True)
    reward = evafusion_reward(scores, maps)
    # Image 1: 0.5 * (1 + 0.5) * 0.8 + 2 * 0.6 + 1 * 0.7 + 2 * 0.5 = 0.6 + 1.2 + 0.7 + 1.0 = 3.5
    # Image 2: 0.5 * (1 + 0.0) * 0.6 + 2 * 0.4 + 1 * 1.0 + 2 * 0.2 = 0.3 + 0.8 + 1.0 + 0.4 = 2.5 (overall unused)
    assert reward.tolist() == pytest.approx([3.5, 2.5])
    reward.sum().backward()
    assert scores["artifacts"].grad.tolist() == pytest.approx([0.75, 0.5])
    assert scores["texture_preservation"].grad.tolist() == [2.0, 2.0]
    assert scores["thermal_retention"].grad.tolist() == [1.0, 1.0]
    assert scores["sharpness"].grad.tolist() == [2.0, 2.0]
    assert scores["overall"].grad is None and maps.grad is None
    assert EVAFUSION_WEIGHTS == {"thermal_retention": 1.0, "texture_preservation": 2.0, "artifacts": 0.5,
                                 "sharpness": 2.0}


def test_without_artifacts_the_reward_is_the_plain_weighted_sum():
    scores = {name: torch.tensor([4.0]) for name in EVAFUSION_WEIGHTS}
    assert evafusion_reward(scores, torch.zeros(1, 8, 8)).item() == pytest.approx(4.0 * 5.5)
    assert evafusion_reward(scores, torch.ones(1, 8, 8)).item() == pytest.approx(4.0 * 6.0)  # w = 1: 0.5 * 2


def test_missing_scores_or_mismatched_maps_are_refused():
    scores = _scores()
    with pytest.raises(ValueError, match="sharpness"):
        evafusion_reward({k: v for k, v in scores.items() if k != "sharpness"}, MAPS)
    with pytest.raises(ValueError, match="3 maps for 2"):
        evafusion_reward(scores, torch.zeros(3, 2, 2))
