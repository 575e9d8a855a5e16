"""`FuScoreForQuality.explain`: SmoothGrad saliency of the expected score with respect to the fused image's pixels
(`attribution_fuscore`): attribution, not artifact detection."""

import copy

import numpy as np
import pytest
import torch

from attribution_fuscore import gaussian_blur, normalise
from processing_fuscore import ImageInputError


def _images(count, seed=0, sizes=((40, 52),)):
    """Random images; of one size unless told (the differentiable path computes a patch layout once per size)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(count)]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])  # patches of 14 and of 16 pixels
def test_a_map_is_finite_in_the_unit_range_and_of_the_images_size(tiny_models, family):
    model = tiny_models[family]
    images = _images(2, sizes=((40, 52), (63, 45)))
    maps = model.explain(images, samples=3)
    assert isinstance(maps, list) and len(maps) == 2
    for image, saliency in zip(images, maps):
        assert isinstance(saliency, np.ndarray) and saliency.dtype == np.float32
        assert saliency.shape == image.shape[:2]  # not the model's resized grid
        assert np.isfinite(saliency).all() and saliency.min() >= 0 and saliency.max() == 1
        assert saliency.std() > 0


def test_an_images_map_alone_equals_its_map_in_a_list_and_a_seed_fixes_it(tiny_models):
    model = tiny_models["qwen2_vl"]
    a, b, c = _images(3, seed=1)
    alone = model.explain(b, samples=4, seed=3)
    in_list = model.explain([a, b, c], samples=4, seed=3, batch_size=3)  # the copies split over two passes
    np.testing.assert_allclose(in_list[1], alone, atol=1e-5)
    np.testing.assert_array_equal(model.explain(b, samples=4, seed=3), alone)
    assert not np.allclose(model.explain(b, samples=4, seed=4), alone, atol=1e-3)  # the seed drives the noise


def test_the_raw_map_is_the_gradient_of_the_score_through_the_reward_path(tiny_models):
    """With one copy, no noise and no blur, the map is `|d score / d pixels|` summed over the channels, normalised:
    checked against the gradient of `fuscore.reward.FuScoreReward` (the differentiable path fusion networks train
    through) at the same pixels."""
    from fuscore.reward import FuScoreReward

    model = tiny_models["qwen2_vl"]
    image = _images(1, seed=2)[0]
    raw = model.explain(image, samples=1, noise=0.0, blur=0, dimension="sharpness")
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).requires_grad_(True)
    reward = FuScoreReward(copy.deepcopy(model), dimensions="sharpness")
    reward(pixels).sum().backward()
    expected = normalise(pixels.grad[0].abs().sum(0)).numpy()
    np.testing.assert_allclose(raw, expected, atol=1e-5)


def test_blur_and_normalisation():
    ramp = torch.arange(12.0).view(3, 4)
    assert torch.allclose(gaussian_blur(torch.full((5, 7), 2.0), 1.5, 0.7), torch.full((5, 7), 2.0))
    assert torch.equal(gaussian_blur(ramp, 0, 0), ramp)
    spike = torch.zeros(9, 9)
    spike[4, 4] = 1
    blurred = gaussian_blur(spike, 1.0, 1.0)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-6) and blurred[4, 4] == blurred.max() < 1
    assert torch.allclose(blurred, blurred.T, atol=1e-7)  # the same sigma on both axes
    saliency = torch.cat([torch.ones(99), torch.tensor([1000.0])])  # one outlier: the 99th percentile is 1
    assert torch.equal(normalise(saliency), torch.ones(100))
    assert torch.equal(normalise(torch.zeros(4, 4)), torch.zeros(4, 4))
    assert torch.equal(normalise(torch.tensor([0.0, 0.0, 2.0])), torch.tensor([0.0, 0.0, 1.0]))


def test_the_model_is_left_as_it_was(tiny_models):
    model = copy.deepcopy(tiny_models["qwen3_vl"])
    model.train()
    frozen = [name for index, (name, _) in enumerate(model.named_parameters()) if index % 3 == 0]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name not in frozen)
    flags = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    image = _images(1, seed=3)[0]
    with torch.no_grad():  # a caller's no-grad (or inference) mode does not stop the explanation, nor is it changed
        saliency = model.explain(image, samples=2)
    with torch.inference_mode():
        np.testing.assert_allclose(model.explain(image, samples=2), saliency, atol=1e-6)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert model.training and all(module.training for module in model.modules())
    assert {name: parameter.requires_grad for name, parameter in model.named_parameters()} == flags
    assert all(parameter.grad is None for parameter in model.parameters())
    model.eval()
    np.testing.assert_allclose(model.explain(image, samples=2), saliency, atol=1e-6)  # explained in eval mode anyway
    assert not model.training


def test_a_model_that_reads_the_sources_is_explained_on_its_fused_image():
    from fuscore.tiny import build_tiny_model

    model = build_tiny_model("qwen2_vl", input_mode="fused_ir_vis", seed=4)
    fused, ir, vis = _images(1, seed=5) * 3
    ir, vis = ir[..., 0], 255 - vis  # grey infrared, another visible image, of the fused image's size
    saliency = model.explain(fused, ir=ir, vis=vis, samples=2)
    assert saliency.shape == fused.shape[:2] and np.isfinite(saliency).all()
    assert model.explain([fused], ir=[ir], vis=[vis], samples=2)[0] == pytest.approx(saliency, abs=1e-6)
    with pytest.raises(ImageInputError, match="ir= and vis="):
        model.explain(fused, samples=2)


def test_explain_refuses_bad_settings(tiny_models):
    model = tiny_models["qwen2_vl"]
    image = _images(1)[0]
    with pytest.raises(ValueError, match="samples"):
        model.explain(image, samples=0)
    with pytest.raises(ValueError, match="noise"):
        model.explain(image, noise=-0.1)
    with pytest.raises(ValueError, match="blur"):
        model.explain(image, blur=float("nan"))
    with pytest.raises(ValueError, match="one dimension"):
        model.explain(image, dimension="all")
    with pytest.raises(ValueError, match="2 images but 1 infrared"):
        model.explain(_images(2), ir=[image])


def test_a_model_with_an_artifact_map_head_is_explained_like_any_other():
    """The saliency map is the score's: a model with the artifact map head gets the map that the same scorer without
    the head gets (the head does not feed the score), and no gradient is left on any parameter, the head's included."""
    from fuscore.tiny import build_tiny_model

    with_head = build_tiny_model("qwen2_vl", seed=6, artifact_map=True)
    without = build_tiny_model("qwen2_vl", seed=6)
    without.load_state_dict({key: value for key, value in with_head.state_dict().items()
                             if not key.startswith("artifact_head.")})
    image = _images(1, seed=6)[0]
    saliency = with_head.explain(image, samples=2)
    assert saliency.shape == image.shape[:2] and np.isfinite(saliency).all()
    np.testing.assert_allclose(saliency, without.explain(image, samples=2), atol=1e-6)
    assert all(parameter.grad is None for parameter in with_head.parameters())
