"""The artifact map head (DESIGN.md section 10): its outputs' shapes and order, what it reads, and what it leaves alone."""

import copy

import numpy as np
import pytest
import torch

from configuration_fuscore import FuScoreConfig
from fuscore.objectives.maps import map_loss, map_targets
from fuscore.tiny import FAMILIES, build_tiny_model
from modeling_fuscore import FuScoreArtifactHead, fused_image_tokens


def with_head(model, seed: int = 0):
    """A copy of `model` with an artifact head whose weights are large enough for the map to vary over the image
    (the default init gives probabilities within a hair of 0.5, which would make the invariance checks vacuous)."""
    model = copy.deepcopy(model)
    model.add_artifact_head()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for linear in (model.artifact_head.dense, model.artifact_head.out):
            linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) / linear.in_features**0.5 * 3)
    return model.eval()


@pytest.fixture(scope="module")
def head_models(tiny_models):
    return {family: with_head(model) for family, model in tiny_models.items()}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    # Sizes whose merged-patch grids differ (2x2 up to 3x4 on the tiny processors), so rows need padding.
    return [rng.integers(0, 256, (40 + 12 * i, 56 + 10 * i, 3), dtype=np.uint8) for i in range(4)]


def fused_grids(batch, images_per_row: int) -> torch.Tensor:
    return batch["image_grid_thw"][::images_per_row, 1:] // 2


@pytest.mark.parametrize("family", FAMILIES)
def test_one_probability_per_merged_patch_of_each_fused_image(head_models, images, family):
    model = head_models[family]
    batch = model.processor(images)
    with torch.no_grad():
        output = model(**batch)
    grids = fused_grids(batch, 1)
    assert output.artifact_grids.dtype == torch.long and output.artifact_grids.tolist() == grids.tolist()
    assert output.artifact_probs.dtype == torch.float32
    assert output.artifact_probs.shape == (int(grids.prod(-1).sum()),)
    assert ((output.artifact_probs > 0) & (output.artifact_probs < 1)).all()
    assert output.artifact_probs.std() > 1e-3  # the map varies over the image


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "qwen3_5"])
def test_with_sources_the_map_covers_the_fused_image_and_reads_it_alone(head_models, images, family):
    fused_only = head_models[family]
    model = copy.deepcopy(fused_only)
    model.processor = copy.copy(model.processor)
    model.processor.input_mode = "fused_ir_vis"
    rng = np.random.default_rng(4)
    fused = [images[0], images[2]]
    ir = [rng.integers(0, 256, image.shape, dtype=np.uint8) for image in fused]
    vis = [rng.integers(0, 256, image.shape, dtype=np.uint8) for image in fused]
    with torch.no_grad():
        batch = model.processor(fused, ir=ir, vis=vis)
        output = model(**batch)
        other_sources = model(**model.processor(fused, ir=vis, vis=ir))
        alone = fused_only(**fused_only.processor(fused))
    assert output.artifact_grids.tolist() == fused_grids(batch, 3).tolist()
    assert output.artifact_probs.shape == (int(output.artifact_grids.prod(-1).sum()),)
    # Causal attention: the fused image comes first, so its tokens read neither the sources nor the question.
    torch.testing.assert_close(other_sources.artifact_probs, output.artifact_probs, atol=1e-5, rtol=0)
    # Only the system turn and the prompt's wording before the images differ from the fused-only prompt: none here.
    torch.testing.assert_close(alone.artifact_probs, output.artifact_probs, atol=1e-5, rtol=0)
    assert not torch.allclose(other_sources.score, output.score)  # the scores do read the sources


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl_moe", "qwen3_5_moe"])
def test_map_of_an_image_does_not_depend_on_its_batch_its_padding_or_the_dimension(head_models, images, family):
    model = head_models[family]
    with torch.no_grad():
        alone = [model(**model.processor([image])).artifact_probs for image in images]
        batched = model(**model.processor(images[::-1]))
        sharpness = model(**model.processor(images, dimension="sharpness"))
    counts = batched.artifact_grids.prod(-1).tolist()
    for probs, expected in zip(torch.split(batched.artifact_probs, counts), alone[::-1]):
        torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(sharpness.artifact_probs, torch.cat(alone), atol=1e-5, rtol=0)


def test_patches_come_in_row_major_grid_order(tiny_models):
    """The merger merges each run of merge_size**2 consecutive patches of the image processor's output; those runs
    follow the merged-patch grid row by row, the order `map_targets` flattens a pooled map in."""
    processor = tiny_models["qwen2_vl"].processor
    patch, merge = processor.image_processor.patch_size, processor.merge_size
    cell = patch * merge
    grid_h, grid_w = 3, 4
    index = np.arange(grid_h * grid_w, dtype=np.float32).reshape(grid_h, grid_w)
    # Each merged patch a constant grey level (its row-major index), on the processor's grid already: no resampling.
    image = np.kron(index * 20, np.ones((cell, cell), dtype=np.float32)).astype(np.uint8)
    batch = processor([np.stack([image] * 3, -1)])
    assert (batch["image_grid_thw"][0, 1:] // merge).tolist() == [grid_h, grid_w]
    merged = batch["pixel_values"].reshape(grid_h * grid_w, merge * merge, -1)
    levels = merged.mean(dim=(1, 2))
    assert torch.argsort(levels).tolist() == list(range(grid_h * grid_w))
    assert merged.std(dim=1).max() < 1e-5  # the merge_size**2 patches of a run are one constant merged cell
    target, _ = map_targets([index / index.max()], [(grid_h, grid_w)])
    assert torch.argsort(target).tolist() == list(range(grid_h * grid_w))


def test_fused_image_tokens_finds_each_rows_first_image():
    image, pad, text = 7, 0, 3
    # Row 0: two images (2x2 and 2x3 merged grids after the merge), right-padded; row 1: one image of 1x2.
    input_ids = torch.tensor([
        [text, 8, image, image, image, image, 9, 8] + [image] * 6 + [9, text, pad, pad],
        [text, text, 8, image, image, 9, text, text, text, text, text, text, text, text, text, pad, pad, pad],
    ])
    image_grid_thw = torch.tensor([[1, 4, 4], [1, 4, 6], [1, 2, 4]])
    mask, grids = fused_image_tokens(input_ids, image_grid_thw, image, merge_size=2)
    assert grids.tolist() == [[2, 2], [1, 2]]
    assert mask[0].nonzero().flatten().tolist() == [2, 3, 4, 5]
    assert mask[1].nonzero().flatten().tolist() == [3, 4]


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_the_head_and_the_model(head_models, images, family):
    model = copy.deepcopy(head_models[family]).train()
    output = model(**model.processor(images[:2]))
    target, has_map = map_targets([np.ones((8, 8), np.float32), None], output.artifact_grids.tolist())
    map_loss(output.artifact_probs, target, output.artifact_grids.prod(-1), has_map).backward()
    for parameter in model.artifact_head.parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.model.language_model.parameters())
    assert model.lm_head.weight.grad is None  # the map does not touch the level words


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_5_moe"])
def test_without_the_head_there_are_no_maps_and_the_head_changes_no_score(tiny_models, head_models, images, family):
    plain, mapped = tiny_models[family], head_models[family]
    assert plain.artifact_head is None and not plain.config.artifact_map
    batch = plain.processor(images)
    with torch.no_grad():
        before, after = plain(**batch), mapped(**batch)
    assert before.artifact_probs is None and before.artifact_grids is None
    for name in ("level_logits", "level_probs", "score", "score_std"):
        torch.testing.assert_close(getattr(after, name), getattr(before, name), atol=0, rtol=0)


def test_add_artifact_head_sets_the_flag_and_old_configs_load_without_it(tiny_models):
    model = copy.deepcopy(tiny_models["qwen2_vl"])
    model.add_artifact_head()
    assert model.config.artifact_map is True and isinstance(model.artifact_head, FuScoreArtifactHead)
    assert model.config.to_dict()["artifact_map"] is True
    # A config.json written before the head existed has no `artifact_map` key.
    saved = tiny_models["qwen2_vl"].config.to_dict()
    saved.pop("artifact_map", None)
    assert FuScoreConfig(**{k: v for k, v in saved.items() if k != "model_type"}).artifact_map is False
    built = build_tiny_model("qwen3_vl", artifact_map=True)
    assert built.config.artifact_map and built.artifact_head is not None
    # The fresh head starts near 0.5 everywhere: no map is favoured before training.
    with torch.no_grad():
        probs = built(**built.processor([np.zeros((56, 56, 3), np.uint8)])).artifact_probs
    assert ((probs - 0.5).abs() < 0.1).all()
