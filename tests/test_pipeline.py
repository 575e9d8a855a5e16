"""The custom pipeline (pipeline_fuscore.FuScorePipeline) against the model's own scoring, in this process.

Loading it as remote code from an exported folder or a cached repo id, in a clean process, is in test_export.py.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import pipeline_fuscore


ALL_DIMENSIONS = ("overall", "thermal_retention", "texture_preservation", "artifacts", "sharpness")


@pytest.fixture(scope="module")
def scorer(tiny_model):
    return pipeline(pipeline_fuscore.TASK_NAME, model=tiny_model, device="cpu")


@pytest.fixture
def images(random_images):
    return random_images[:4]  # four sizes


def test_result_matches_model_score_for_every_dimension(scorer, tiny_model, images):
    result = scorer(images[0])
    expected = tiny_model.score(images[0], dimensions=ALL_DIMENSIONS, return_details=True)
    assert set(result) == {"score", "std", "probs", "dimensions"}
    assert list(result["dimensions"]) == list(ALL_DIMENSIONS[1:])
    assert result["score"] == pytest.approx(expected["overall"]["score"], abs=1e-5)
    assert result["std"] == pytest.approx(expected["overall"]["std"], abs=1e-5)
    assert list(result["probs"]) == list(tiny_model.config.level_words)
    assert list(result["probs"].values()) == pytest.approx(expected["overall"]["probs"], abs=1e-5)
    for dim in ALL_DIMENSIONS[1:]:
        assert result["dimensions"][dim]["score"] == pytest.approx(expected[dim]["score"], abs=1e-5)
        assert result["dimensions"][dim]["std"] == pytest.approx(expected[dim]["std"], abs=1e-5)
    # The score is the expectation of the level values under the level distribution.
    values = tiny_model.config.level_values
    assert sum(p * v for p, v in zip(result["probs"].values(), values)) == pytest.approx(result["score"], abs=1e-5)


def test_input_forms_give_the_same_scores(scorer, images):
    array = images[1]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    forms = [array, Image.fromarray(array), buffer.getvalue(), {"fused": array}]
    scores = [scorer(form)["score"] for form in forms]
    assert scores == pytest.approx([scores[0]] * len(forms), abs=1e-6)


def test_lists_batches_and_generators_match_single_calls(scorer, tiny_model, images):
    expected = tiny_model.score(images)
    one_by_one = [result["score"] for result in scorer(images)]
    batched = [result["score"] for result in scorer(images, batch_size=3)]
    streamed = [result["score"] for result in scorer((image for image in images), batch_size=2)]
    assert one_by_one == pytest.approx(expected, abs=1e-5)
    assert batched == pytest.approx(expected, abs=1e-5)
    assert streamed == pytest.approx(expected, abs=1e-5)
    assert len(set(round(score, 6) for score in expected)) > 1, "different images must get different scores"


def test_dimensions_argument_and_sources(images, tiny_model_ir_vis):
    model = tiny_model_ir_vis
    scorer = pipeline(pipeline_fuscore.TASK_NAME, model=model, device="cpu")
    fused, ir, vis = images[2], images[2][..., 0], images[2][..., 1]
    result = scorer({"fused": fused, "ir": ir, "vis": vis}, dimensions=["sharpness"])
    assert list(result["dimensions"]) == ["sharpness"]  # overall is always the top level
    expected = model.score(fused, ir=ir, vis=vis, dimensions=("overall", "sharpness"))
    assert result["score"] == pytest.approx(expected["overall"], abs=1e-5)
    assert result["dimensions"]["sharpness"]["score"] == pytest.approx(expected["sharpness"], abs=1e-5)
    with pytest.raises(ValueError, match="infrared and visible sources"):
        scorer(fused)


def test_bad_inputs_fail_clearly(scorer, images, tmp_path):
    with pytest.raises(ValueError, match="'fused'"):
        scorer({"image": images[0]})
    with pytest.raises(ValueError, match="Unknown rating dimension"):
        scorer(images[0], dimensions=["colour"])
    missing = tmp_path / "missing.png"
    with pytest.raises(ValueError, match="missing.png"):
        scorer(str(missing))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_the_pipeline_scores_through_the_engine_exactly_as_model_score(scorer, tiny_model, images, batch_size):
    """One inference path: each DataLoader batch of the pipeline is one engine call, so its numbers are those of
    `model.score` on the same images at the matching batch size, bit for bit."""
    results = scorer(images, batch_size=batch_size)
    expected = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        expected += tiny_model.score(chunk, dimensions="all", batch_size=len(chunk) * len(ALL_DIMENSIONS),
                                     return_details=True)
    for result, reference in zip(results, expected, strict=True):
        assert result["score"] == reference["overall"]["score"] and result["std"] == reference["overall"]["std"]
        assert list(result["probs"].values()) == reference["overall"]["probs"]
        for dim in ALL_DIMENSIONS[1:]:
            assert result["dimensions"][dim]["score"] == reference[dim]["score"]
    streamed = list(scorer((image for image in images), batch_size=batch_size))
    assert [r["score"] for r in streamed] == [r["score"] for r in results]


def test_a_datasets_column_streams_through_key_dataset_with_workers(scorer, tiny_model, images, tmp_path):
    """As a user scores a `datasets` image column: `KeyDataset` through transformers' DataLoader, decoded images and
    the `{bytes, path}` dicts of an `Image(decode=False)` column alike, with workers decoding."""
    import datasets
    from transformers.pipelines.pt_utils import KeyDataset

    paths = []
    for index, array in enumerate(images):
        paths.append(str(tmp_path / f"fused_{index}.png"))
        Image.fromarray(array).save(paths[-1])
    table = datasets.Dataset.from_dict({"image": paths}).cast_column("image", datasets.Image())
    expected = tiny_model.score(paths)
    decoded = [r["score"] for r in scorer(KeyDataset(table, "image"), batch_size=1)]
    assert decoded == pytest.approx(expected, abs=1e-5)
    raw = table.cast_column("image", datasets.Image(decode=False))
    assert set(raw[0]["image"]) == {"bytes", "path"}
    streamed = scorer(KeyDataset(raw, "image"), batch_size=2, num_workers=2)
    assert not isinstance(streamed, list), "a dataset is streamed, not materialized"
    assert [r["score"] for r in streamed] == pytest.approx(expected, abs=1e-5)
    in_memory = {"bytes": open(paths[0], "rb").read(), "path": None}
    assert scorer(in_memory)["score"] == pytest.approx(expected[0], abs=1e-5)
    with pytest.raises(ValueError, match="neither bytes nor a path"):
        scorer({"bytes": None, "path": None})


def test_the_call_is_transformers_own():
    """The pipeline adds stages (preprocess, _forward, postprocess), not its own `__call__`, so batching, DataLoader
    workers and dataset streaming are transformers'."""
    assert "__call__" not in pipeline_fuscore.FuScorePipeline.__dict__


def test_processor_takes_images_as_transformers_processors_do(tiny_model, images):
    processor = tiny_model.get_processor()
    by_images = processor(images=images[:2])
    for other in (processor(images[:2]), processor(fused=images[:2])):
        assert other.keys() == by_images.keys()
        for key in by_images:
            assert torch.equal(other[key], by_images[key])
    with torch.no_grad():
        forward_score = tiny_model(**processor(images=images[0])).score.item()
    assert forward_score == pytest.approx(tiny_model.score(images[0]), abs=1e-5)
    with pytest.raises(ValueError, match="own rating prompt"):
        processor(images=images[0], text="Rate this image.")
    with pytest.raises(ValueError, match="not both"):
        processor(images=images[0], fused=images[0])
    with pytest.raises(TypeError, match="dimensions"):
        processor(images=images[0], dimensions=["overall"])


def test_an_exif_rotated_file_is_turned_upright_once(scorer, tiny_model, images, tmp_path):
    """The pipeline decodes in `preprocess` and the engine checks the decoded image again: a phone photo stored
    sideways (EXIF orientation 6) is still turned upright exactly once, as `model.score` turns it."""
    path = tmp_path / "sideways.png"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(images[3]).save(path, exif=exif)
    upright = np.asarray(Image.fromarray(images[3]).transpose(Image.Transpose.ROTATE_270))
    assert scorer(str(path))["score"] == pytest.approx(tiny_model.score(str(path)), abs=1e-6)
    assert scorer(str(path))["score"] == pytest.approx(tiny_model.score(upright), abs=1e-6)
