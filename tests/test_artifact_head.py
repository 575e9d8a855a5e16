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


# ------------------------------------------------------------------------------------------------ saving and loading
_LOAD_AND_MAP = """
import json, numpy as np
from transformers import AutoModel
model = AutoModel.from_pretrained({folder!r}, trust_remote_code=True)
images = list(np.load({images!r}))
results = model.score(images, return_maps=True, batch_size=2)
print(json.dumps({{"module": type(model).__module__, "flag": model.config.artifact_map,
                   "scores": [r["overall"] for r in results], "maps": [r["artifact_map"].tolist() for r in results]}}))
"""


@pytest.fixture(scope="module")
def saved_with_head(head_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("artifact_head") / "model"
    head_models["qwen3_vl"].save_pretrained(folder)
    return folder


def _maps(model, images):
    return [result["artifact_map"] for result in model.score(images, return_maps=True, batch_size=2)]


def test_the_head_is_saved_in_the_safetensors_and_loads_back(head_models, images, saved_with_head, tmp_path):
    import json

    from safetensors import safe_open

    from conftest import load_saved
    from fuscore.export import export_model
    from fuscore.hub import load_model
    from modeling_fuscore import FuScoreForQuality

    with safe_open(saved_with_head / "model.safetensors", "pt") as weights:
        names = set(weights.keys())
    assert {"artifact_head.dense.weight", "artifact_head.dense.bias", "artifact_head.out.weight",
            "artifact_head.out.bias"} <= names
    assert json.loads((saved_with_head / "config.json").read_text())["artifact_map"] is True
    expected = _maps(load_saved(saved_with_head), images[:3])
    exported = export_model(saved_with_head, tmp_path / "export").folder
    for loaded in (FuScoreForQuality.from_pretrained(saved_with_head), load_model(saved_with_head),
                   FuScoreForQuality.from_pretrained(exported)):
        assert loaded.config.artifact_map and loaded.artifact_head is not None
        for got, want in zip(_maps(loaded, images[:3]), expected):
            np.testing.assert_allclose(got, want, atol=1e-6)
    # The head's weights are the saved model's, not a fresh init.
    torch.testing.assert_close(load_model(saved_with_head).artifact_head.out.weight,
                               head_models["qwen3_vl"].artifact_head.out.weight)


def test_a_folder_whose_weights_lack_the_head_is_refused_and_one_without_it_has_no_maps(tiny_models, images,
                                                                                         saved_with_head, tmp_path):
    import json
    import shutil

    from fuscore.export import NotAFuScoreModelError
    from fuscore.hub import load_model

    plain = tmp_path / "plain"
    tiny_models["qwen3_vl"].save_pretrained(plain)
    assert json.loads((plain / "config.json").read_text())["artifact_map"] is False
    loaded = load_model(plain)
    assert loaded.artifact_head is None
    with pytest.raises(ValueError, match="trained without artifact maps.*model.explain"):
        loaded.score(images[0], return_maps=True)
    # config.json says there is a head, the weights have none: its maps would come from a random head.
    lying = tmp_path / "lying"
    shutil.copytree(plain, lying)
    config = json.loads((lying / "config.json").read_text())
    config["artifact_map"] = True
    (lying / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotAFuScoreModelError, match="artifact_head"):
        load_model(lying)


@pytest.mark.slow
def test_remote_code_in_a_clean_process_serves_the_saved_maps(saved_with_head, images, tmp_path):
    from conftest import load_saved, run_clean_python

    np.save(tmp_path / "images.npy", np.stack([image[:52, :66] for image in images[1:]]))
    stacked = list(np.load(tmp_path / "images.npy"))
    loaded = load_saved(saved_with_head)
    expected = loaded.score(stacked, return_maps=True, batch_size=2)
    result = run_clean_python(_LOAD_AND_MAP.format(folder=str(saved_with_head), images=str(tmp_path / "images.npy")),
                              tmp_path)
    assert result["module"].startswith("transformers_modules.") and result["flag"] is True
    np.testing.assert_allclose(result["scores"], [r["overall"] for r in expected], atol=1e-6)
    for got, want in zip(result["maps"], expected):
        np.testing.assert_allclose(np.asarray(got, np.float32), want["artifact_map"], atol=1e-6)
        assert np.asarray(got).shape == (52, 66)
