"""The artifact-map term (fuscore.objectives.maps): pooling to the patch grid and the masked MSE, by hand."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from fuscore.objectives import artifact_map_array, map_loss, map_targets, pool_map_to_grid


def test_pooling_takes_the_mean_over_each_patch_footprint():
    artifact_map = np.array([[1, 1, 0, 0],
                             [1, 0, 0, 0],
                             [0, 0, 1, 1],
                             [0, 0, 1, 1]], dtype=np.float32)
    # Quadrant means: 3/4, 0, 0, 1.
    assert pool_map_to_grid(artifact_map, (2, 2)).tolist() == [[0.75, 0.0], [0.0, 1.0]]  # exact in float32
    assert pool_map_to_grid(artifact_map, (1, 1)).item() == pytest.approx(artifact_map.mean())
    # A grid that does not divide the map: rows {0, 1} and {1, 2} of a 3-row map (adaptive average pooling).
    column = np.array([[0.0], [0.3], [0.9]], dtype=np.float32)
    assert pool_map_to_grid(column, (2, 1)).reshape(-1).tolist() == pytest.approx([0.15, 0.6])
    with pytest.raises(ValueError, match="positive"):
        pool_map_to_grid(artifact_map, (0, 2))


def test_stored_maps_are_grey_over_255():
    grey = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    expected = np.array([[0.0, 1.0], [0.2, 0.4]])
    np.testing.assert_allclose(artifact_map_array(grey), expected, atol=1e-7)
    np.testing.assert_allclose(artifact_map_array(Image.fromarray(grey)), expected, atol=1e-7)
    rgb = Image.fromarray(np.stack([grey] * 3, axis=-1))  # a grey map saved as RGB reads the same
    np.testing.assert_allclose(artifact_map_array(rgb), expected, atol=1 / 255)
    assert artifact_map_array(np.array([[[0.5, 0.25]]])).tolist() == [[0.5, 0.25]]
    sixteen = Image.fromarray(np.array([[0, 65535], [13107, 26214]], dtype=np.uint16))
    np.testing.assert_allclose(artifact_map_array(sixteen), expected, atol=1e-6)
    np.testing.assert_allclose(artifact_map_array(Image.fromarray(expected.astype(np.float32))), expected,
                               atol=1e-7)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        artifact_map_array(np.array([[0.5, 1.5]]))
    with pytest.raises(ValueError, match="2-D"):
        artifact_map_array(np.zeros((2, 2, 3), dtype=np.float32))


def test_map_targets_flatten_in_token_order_with_a_mask():
    first = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    target, has_map = map_targets([first, None, Image.fromarray(np.full((4, 4), 255, np.uint8))],
                                  [(1, 2), (2, 2), (1, 1)])
    assert target.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert has_map.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="2 maps but 1 grids"):
        map_targets([first, first], [(1, 1)])


def test_map_loss_by_hand_and_rows_without_a_map_count_zero():
    # Image A (2 patches): probs (.2, .8) vs target (0, 1): MSE .04. Image B (3 patches): (.5, .5, .5) vs (1, 0, .5):
    # (.25 + .25 + 0) / 3. Image C has no map: its target holds NaN and must not matter.
    probs = torch.tensor([0.2, 0.8, 0.5, 0.5, 0.5, 0.9, 0.1], requires_grad=True)
    target = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.5, float("nan"), float("nan")])
    loss = map_loss(probs, target, [2, 3, 2], torch.tensor([True, True, False]))
    assert loss.item() == pytest.approx((0.04 + 0.5 / 3) / 2)
    loss.backward()
    # d/dp of (1/2) * (1/n) * sum_patches (p - t)^2 = (p - t) / n, n the patches of its image; 0 for image C.
    expected = [0.2 / 2, -0.2 / 2, -0.5 / 3, 0.5 / 3, 0.0, 0.0, 0.0]
    assert probs.grad.tolist() == pytest.approx(expected)
    # Every row with a map by default.
    assert map_loss(probs.detach()[:5], target[:5], [2, 3]).item() == pytest.approx((0.04 + 0.5 / 3) / 2)


def test_map_loss_without_any_map_is_zero_and_keeps_finite_gradients():
    probs = torch.tensor([0.3, 0.7, 0.1], requires_grad=True)
    loss = map_loss(probs, torch.full((3,), float("nan")), torch.tensor([1, 2]), torch.tensor([False, False]))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert probs.grad.tolist() == [0.0, 0.0, 0.0]


def test_map_loss_is_the_mean_over_images_not_patches():
    """A large image and a small one weigh the same."""
    probs = torch.cat([torch.zeros(100), torch.ones(1)])
    target = torch.cat([torch.ones(100), torch.zeros(1)])  # both images entirely wrong: MSE 1 each
    assert map_loss(probs, target, [100, 1]).item() == pytest.approx(1.0)
    half = torch.cat([torch.zeros(100), torch.zeros(1)])
    assert map_loss(half, target, [100, 1]).item() == pytest.approx(0.5)  # the small image right, the large wrong


def test_half_precision_is_upcast_and_bad_splits_are_refused():
    probs = torch.tensor([0.25, 0.75], dtype=torch.bfloat16)
    loss = map_loss(probs, torch.tensor([0.0, 1.0]), [2])
    assert loss.dtype == torch.float32 and math.isclose(loss.item(), 0.0625)
    with pytest.raises(ValueError, match="must split"):
        map_loss(probs, torch.tensor([0.0, 1.0]), [3])
    with pytest.raises(ValueError, match="has_map has 2 rows"):
        map_loss(probs, torch.tensor([0.0, 1.0]), [2], torch.tensor([True, False]))
