"""FuScore as a differentiable reward: tensor inputs on the device, gradients, invariances, group advantages."""

import copy
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fuscore.reward import EVAFUSION_WEIGHTS, FuScoreReward, clipped_policy_loss, group_advantages
from fuscore.tiny import FAMILIES, QWEN3_VISION_FAMILIES, build_tiny_model
from processing_fuscore import FuScoreProcessor, ImageInputError


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth 8-bit RGB scene (bicubic upsampling of random colours), so resampling differences stay realistic."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def as_tensor(*images: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """8-bit H x W x 3 arrays -> a [B, 3, H, W] tensor in [0, 1] with the same pixels."""
    return torch.stack([torch.from_numpy(image.copy()).permute(2, 0, 1) for image in images]).to(dtype) / 255


def on_grid(family: str) -> tuple:
    """A size that is already on the family's patch grid (multiples of patch x merge, inside the pixel bounds)."""
    return (64, 96) if family in QWEN3_VISION_FAMILIES else (56, 84)  # patch 16 or 14, merged 2x2


def with_backend(model, backend: str):
    """The model's processor with its image processor in the given backend (same sizes, patches and statistics)."""
    if backend == "pil":
        return model.get_processor()
    pytest.importorskip("torchvision")
    from transformers import Qwen2VLImageProcessor

    pil = model.get_processor().image_processor
    image_processor = Qwen2VLImageProcessor(patch_size=pil.patch_size, merge_size=pil.merge_size,
                                            temporal_patch_size=pil.temporal_patch_size, image_mean=pil.image_mean,
                                            image_std=pil.image_std, min_pixels=pil.size["shortest_edge"],
                                            max_pixels=pil.size["longest_edge"])
    processor = model.get_processor()
    return FuScoreProcessor(image_processor, processor.tokenizer, prompts=processor.prompts, input_mode=processor.input_mode)


# ------------------------------------------------------------------------------------------- tensor vs file path
@pytest.mark.parametrize("backend", ["pil", "torchvision"])
@pytest.mark.parametrize("family", FAMILIES)
def test_tensor_path_gives_the_file_path_score(tiny_models, family, backend, tmp_path):
    """On the patch grid the tensor path is the file path exactly. Off it, the file path resamples 8-bit values in two
    passes with rounding and clipping between them (both backends), the tensor path floats: the resized pixels differ
    by a fraction of an 8-bit level on average (0.27 measured on these and VIFB images, up to 5.6 at clipped edges)
    and the scores by the effect of that (at most 3.2e-4 here; the demo scorer on 105 VIFB fused images: mean
    2.3e-3, at most 1.6e-2)."""
    model = copy.deepcopy(tiny_models[family])  # FuScoreReward freezes the model it is given
    processor = with_backend(model, backend)
    reward = FuScoreReward(model, processor=processor)
    std = max(processor.image_processor.image_std)
    for height, width in [on_grid(family), (75, 101), (300, 420)]:
        image = smooth_image(height, width, seed=height)
        path = tmp_path / f"{family}_{height}x{width}.png"
        Image.fromarray(image).save(path)
        file_score = model.score(str(path), processor=processor)
        file_batch = processor([str(path)])
        tensor_batch = processor.tensor_inputs(as_tensor(image))
        for key in ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw"):
            assert torch.equal(file_batch[key], tensor_batch[key]), key
        gap = (file_batch["pixel_values"] - tensor_batch["pixel_values"]).abs()
        with torch.no_grad():
            tensor_score = reward(as_tensor(image)).item()
        if (height, width) == on_grid(family):
            assert gap.max() < 1e-6
            assert tensor_score == pytest.approx(file_score, abs=1e-5)
        else:
            assert 0 < gap.mean() < 0.5 / 255 / std  # half an 8-bit level, in normalised units
            assert tensor_score == pytest.approx(file_score, abs=2e-3)


def test_tensor_path_with_sources_and_grey_images(tmp_path):
    """A model that reads the sources: the tensor path matches the file path with ir and vis, a grey [B, 1, H, W]
    tensor is its replicated RGB (as `load_image` makes it), and sources of another size are resized to the grid."""
    model = build_tiny_model("qwen2_vl", input_mode="fused_ir_vis", seed=3)
    reward = FuScoreReward(model)
    fused, ir, vis = (smooth_image(56, 84, seed) for seed in (1, 2, 3))
    ir[..., 1] = ir[..., 2] = ir[..., 0]  # a grey infrared image
    paths = []
    for name, image in (("fused", fused), ("ir", ir), ("vis", vis)):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(image).save(paths[-1])
    file_score = model.score(str(paths[0]), ir=str(paths[1]), vis=str(paths[2]))
    with torch.no_grad():
        tensor_score = reward(as_tensor(fused), ir=as_tensor(ir)[:, :1], vis=as_tensor(vis)).item()
        assert tensor_score == pytest.approx(file_score, abs=1e-5)
        large_vis = torch.nn.functional.interpolate(as_tensor(vis), size=(112, 168), mode="bicubic", antialias=True)
        assert reward(as_tensor(fused), ir=as_tensor(ir), vis=large_vis).item() == pytest.approx(file_score, abs=2e-3)
    with pytest.raises(ImageInputError, match="pass ir= and vis="):
        reward(as_tensor(fused))
    with pytest.raises(ImageInputError, match="infrared: 56x56 pixels.*registered"):
        reward(as_tensor(fused), ir=torch.rand(1, 1, 56, 56), vis=as_tensor(vis))


def test_tensor_inputs_reject_bad_tensors(tiny_models):
    processor = tiny_models["qwen2_vl"].get_processor()
    for bad, message in [(torch.rand(3, 56, 56), "got a torch.float32 tensor of shape \\(3, 56, 56\\)"),
                         (torch.randint(0, 255, (1, 3, 56, 56), dtype=torch.uint8), "floating-point"),
                         (torch.rand(1, 4, 56, 56), "C = 1 or 3"),
                         (torch.rand(1, 3, 8, 56), "8 pixels.*at least 16"),
                         (np.zeros((1, 3, 56, 56)), "got ndarray")]:
        with pytest.raises(ImageInputError, match=message):
            processor.tensor_inputs(bad)
    with pytest.raises(ValueError, match="Unknown rating dimension 'beauty'"):
        processor.tensor_inputs(torch.rand(1, 3, 56, 56), dimensions=["overall", "beauty"])


def test_patch_layout_cache_is_per_size_and_never_copied(tiny_models, tmp_path):
    """The layout cache is rebuilt on demand: a deep copy or a pickle of the processor carries none of it, and saving
    the processor writes none of it."""
    processor = tiny_models["qwen3_vl"].get_processor()
    processor.tensor_inputs(torch.rand(2, 3, 64, 96))
    processor.tensor_inputs(torch.rand(1, 3, 64, 64))
    assert len(processor._tensor_layouts) >= 2
    assert len(pickle.dumps(processor._tensor_layouts)) < 200  # pickles to an empty cache, without the tensors
    clone = copy.deepcopy(processor)
    assert len(clone._tensor_layouts) == 0
    assert torch.equal(clone.tensor_inputs(torch.ones(1, 3, 64, 96))["pixel_values"],
                       processor.tensor_inputs(torch.ones(1, 3, 64, 96))["pixel_values"])
    processor.save_pretrained(tmp_path)
    assert "_tensor_layouts" not in (tmp_path / "processor_config.json").read_text()


@pytest.mark.slow
def test_patch_layout_holds_indices_above_float32_precision():
    """The layout of an image of more than 2**24 values (3 x 2400 x 2400) is exact: float32 patches alone are not."""
    from transformers import Qwen2VLImageProcessorPil

    processor = FuScoreProcessor.__new__(FuScoreProcessor)  # the layout needs only the image processor
    # One frame per patch (no temporal duplication) keeps this test's memory down: the layout is then a permutation.
    processor.image_processor = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=1,
                                                         min_pixels=56 * 56, max_pixels=2408 * 2408)
    layout = processor._tensor_layout(2408, 2408, "cpu")[2]
    assert 3 * 2408 * 2408 > 2**24
    counts = torch.bincount(layout.flatten(), minlength=3 * 2408 * 2408)
    assert counts.numel() == 3 * 2408 * 2408 and counts.min().item() == counts.max().item() == 1


# ---------------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_matches_finite_differences(tiny_models, family):
    """float64 scorer (its score is cast to float32 at the end): the directional derivative along several masked
    copies of the gradient, by central differences, matches the analytic one (observed to 1e-4 relative)."""
    model = copy.deepcopy(tiny_models[family]).double()
    if family.endswith("_moe"):  # the grouped matmul of the experts takes no float64: the per-expert loop does
        model.model.set_experts_implementation("eager")
    reward = FuScoreReward(model, weights=EVAFUSION_WEIGHTS)
    generator = torch.Generator().manual_seed(0)
    images = (0.2 + 0.6 * torch.rand(2, 3, 40, 60, dtype=torch.float64, generator=generator)).requires_grad_()
    reward(images).sum().backward()
    gradient = images.grad
    assert gradient.abs().sum() > 0
    masks = {"all": torch.ones_like(gradient)}
    for name, index in (("left half", (..., slice(0, 30))), ("top half", (..., slice(0, 20), slice(None))),
                        ("red channel", (slice(None), 0)), ("second image", (1,))):
        masks[name] = torch.zeros_like(gradient)
        masks[name][index] = 1
    eps = 1e-2
    for name, mask in masks.items():
        direction = mask * gradient / (mask * gradient).norm()
        analytic = (gradient * direction).sum().item()
        with torch.no_grad():
            numeric = ((reward(images + eps * direction).sum() - reward(images - eps * direction).sum()) / (2 * eps)).item()
        assert numeric == pytest.approx(analytic, rel=2e-3, abs=2e-4), name


def test_reward_is_batch_size_invariant_and_per_image(tiny_models):
    """Rewards (and their gradients) of images scored together equal those of each image alone; an image's reward
    has no gradient with respect to the other images."""
    model = copy.deepcopy(tiny_models["qwen2_5_vl"])  # FuScoreReward freezes the model it is given
    reward = FuScoreReward(model, dimensions=["overall", "sharpness", "artifacts"], weights=[2.0, 1.0, 1.0])
    images = torch.rand(4, 3, 50, 70, generator=torch.Generator().manual_seed(2)).requires_grad_()
    together = reward(images)
    assert together.shape == (4,)
    (first_gradient,) = torch.autograd.grad(together[0], images, retain_graph=True)
    assert first_gradient[1:].abs().max() == 0 and first_gradient[0].abs().max() > 0
    (together_gradient,) = torch.autograd.grad(together.sum(), images)
    for index in range(4):
        alone_image = images[index : index + 1].detach().requires_grad_()
        alone = reward(alone_image)
        alone.backward()
        assert alone.item() == pytest.approx(together[index].item(), abs=1e-5)
        torch.testing.assert_close(alone_image.grad[0], together_gradient[index], rtol=1e-4, atol=1e-6)


def test_scorer_is_frozen_in_eval_mode_and_gets_no_gradient(tiny_models):
    model = copy.deepcopy(tiny_models["qwen3_vl"]).train()
    reward = FuScoreReward(model, checkpointing=True)
    assert not any(parameter.requires_grad for parameter in model.parameters())
    holder = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), reward)  # a reward inside a trained module
    holder.train()
    assert not any(module.training for module in model.modules() if module not in reward._checkpointed)
    fused = holder[0](torch.rand(2, 3, 64, 64))
    holder[1](fused).sum().backward()
    assert all(parameter.grad is None for parameter in model.parameters())
    assert holder[0].weight.grad is not None and holder[0].weight.grad.abs().sum() > 0


def counted(function, calls: dict, name: str):
    def wrapper(*args, **kwargs):
        calls[name] += 1
        return function(*args, **kwargs)

    return wrapper


def test_checkpointing_recomputes_decoder_layers_and_vision_blocks_with_equal_results(tiny_models):
    """Checkpointing (decoder layers and vision blocks: the gradient flows through the frozen tower to the pixels)
    gives the same rewards and gradients, and the checkpointed blocks do run twice, once in the backward pass."""
    images = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(4))
    results = {}
    for checkpointing in (False, True):
        model = copy.deepcopy(tiny_models["qwen3_vl"])
        reward = FuScoreReward(model, checkpointing=checkpointing)
        calls = {"decoder": 0, "vision": 0}
        for name, mlp in (("decoder", model.model.language_model.layers[0].mlp), ("vision", model.model.visual.blocks[0].mlp)):
            mlp.forward = counted(mlp.forward, calls, name)  # module hooks do not run in checkpointing's recompute
        pixels = images.clone().requires_grad_()
        value = reward(pixels)
        value.sum().backward()
        results[checkpointing] = (value.detach(), pixels.grad, dict(calls))
    assert results[False][2] == {"decoder": 1, "vision": 1}
    assert results[True][2] == {"decoder": 2, "vision": 2}
    torch.testing.assert_close(results[True][0], results[False][0])
    torch.testing.assert_close(results[True][1], results[False][1])


def test_bf16_autocast_reward_is_close_and_differentiable(tiny_models):
    model = copy.deepcopy(tiny_models["qwen2_vl"])  # FuScoreReward freezes the model it is given
    images = torch.rand(2, 3, 56, 84, generator=torch.Generator().manual_seed(5))
    exact = FuScoreReward(model)(images)
    pixels = images.clone().requires_grad_()
    approximate = FuScoreReward(model, bf16=True)(pixels)
    assert approximate.dtype == torch.float32
    torch.testing.assert_close(approximate.detach(), exact.detach(), atol=0.05, rtol=0)
    approximate.sum().backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0


def test_reward_weights_combine_dimensions(tiny_models):
    """The reward is the weighted mean of the dimension scores; EVAFusion's weights name its four sub-dimensions."""
    model = copy.deepcopy(tiny_models["qwen2_vl"])  # FuScoreReward freezes the model it is given
    images = torch.rand(3, 3, 56, 56, generator=torch.Generator().manual_seed(6))
    reward = FuScoreReward(model, weights=EVAFUSION_WEIGHTS)
    assert reward.dimensions == ["thermal_retention", "texture_preservation", "artifacts", "sharpness"]
    with torch.no_grad():
        scores = reward.dimension_scores(images)
        combined = reward(images)
        singles = [FuScoreReward(model, dimensions=name)(images) for name in reward.dimensions]
    expected = (torch.tensor([1.0, 2.0, 0.5, 2.0]) @ scores) / 5.5
    torch.testing.assert_close(combined, expected)
    torch.testing.assert_close(scores, torch.stack(singles), atol=1e-5, rtol=0)
    assert FuScoreReward(model).dimensions == ["overall"]
    with pytest.raises(ValueError, match="weights name"):
        FuScoreReward(model, dimensions=["overall"], weights={"sharpness": 1.0})
    with pytest.raises(ValueError, match="one non-negative weight per dimension"):
        FuScoreReward(model, dimensions=["overall", "sharpness"], weights=[1.0])
    with pytest.raises(ValueError, match="Unknown rating dimension"):
        FuScoreReward(model, dimensions="beauty")


# ------------------------------------------------------------------------------------------------ group-relative
def test_group_advantages_on_a_hand_example():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0], [2.0, 0.0, 1.0]])
    advantages = group_advantages(rewards, eps=0.0 + 1e-4)
    # Group 1: mean 2, sample std 1. Group 2: equal rewards, no preference. Group 3: mean 1, std 1.
    expected = torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, -1.0, 0.0]]) / (1 + 1e-4)
    torch.testing.assert_close(advantages, expected)
    with pytest.raises(ValueError, match="at least 2 candidates"):
        group_advantages(torch.ones(4, 1))


def test_clipped_policy_loss_clips_the_ratio_on_the_advantage_side():
    """With advantage +1 the gain stops at ratio 1 + clip (no gradient past it); with -1 at 1 - clip."""
    old = torch.zeros(1, 2, 3)
    advantages = torch.tensor([[1.0, -1.0]])
    for shift, expected_gradient in [(0.0, [-1 / 6, 1 / 6]), (0.5, [0.0, 1.6487 / 6]), (-0.5, [-0.6065 / 6, 0.0])]:
        log_prob = torch.full((1, 2, 3), shift, requires_grad=True)
        loss = clipped_policy_loss(log_prob, old, advantages, clip=0.2)
        loss.backward()
        torch.testing.assert_close(log_prob.grad[0, :, 0], torch.tensor(expected_gradient), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="must be \\[P, G, ...\\]"):
        clipped_policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 2))
