"""Serving artifact maps (DESIGN.md section 10): `model.score(..., return_maps=True)`, the scoring engine's batching,
the pipeline, `fuscore score --maps`, the scoring job and the Gradio app."""

import copy

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import load_saved
from scoring_fuscore import upsample_artifact_map
from test_artifact_head import with_head


@pytest.fixture(scope="module")
def mapped(tiny_models):
    return with_head(tiny_models["qwen2_vl"], seed=2)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(11)
    sizes = [(40, 56), (52, 66), (61, 45), (40, 56), (70, 84), (33, 47)]  # mixed grids; two alike
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


@pytest.fixture(scope="module")
def saved_folders(mapped, tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("maps_models")
    mapped.save_pretrained(root / "with_head")
    tiny_models["qwen2_vl"].save_pretrained(root / "plain")
    return root / "with_head", root / "plain"


def test_upsampling_is_bilinear_between_cell_centres_by_hand():
    # A 1 x 2 grid onto 8 pixels: cell centres at pixels 1.5 and 5.5; constant beyond them, linear between.
    upsampled = upsample_artifact_map(np.array([[0.0, 1.0]], np.float32), (3, 8))
    assert upsampled.dtype == np.float32 and upsampled.shape == (3, 8)
    np.testing.assert_allclose(upsampled, np.tile([0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1], (3, 1)), atol=1e-7)
    np.testing.assert_allclose(upsample_artifact_map(np.full((2, 3), 0.3), (17, 29)), np.full((17, 29), 0.3), atol=1e-7)


def test_score_returns_a_map_of_each_images_own_size(mapped, images):
    result = mapped.score(images[1], return_maps=True)
    assert set(result) == {"overall", "artifact_map"} and isinstance(result["overall"], float)
    artifact_map = result["artifact_map"]
    assert artifact_map.dtype == np.float32 and artifact_map.shape == images[1].shape[:2]
    assert artifact_map.min() >= 0 and artifact_map.max() <= 1 and artifact_map.std() > 1e-3
    assert result["overall"] == pytest.approx(mapped.score(images[1]), abs=1e-6)
    # It is the forward pass's patch grid, upsampled.
    with torch.no_grad():
        output = mapped(**mapped.processor([images[1]]))
    grid = output.artifact_probs.reshape(output.artifact_grids[0].tolist()).numpy()
    np.testing.assert_allclose(artifact_map, upsample_artifact_map(grid, images[1].shape[:2]), atol=1e-6)

    several = mapped.score(images[:3], dimensions=["overall", "sharpness"], return_maps=True, return_details=True)
    assert isinstance(several, list) and len(several) == 3
    for image, entry in zip(images, several):
        assert set(entry) == {"overall", "sharpness", "artifact_map"}
        assert set(entry["sharpness"]) == {"score", "std", "probs"}
        assert entry["artifact_map"].shape == image.shape[:2]


def test_the_engine_gives_each_image_its_own_map_at_any_batch_size(mapped, images):
    """Items are sorted by size and cut into batches; each image's map must come back to it, from any batch."""
    alone = [mapped.score(image, return_maps=True)["artifact_map"] for image in images]
    assert not np.allclose(alone[0], alone[3], atol=1e-3), "two images of one size have different maps"
    for batch_size in (2, 5, 12):  # 12 items: every image with both dimensions in one batch
        together = mapped.score(images, dimensions=["sharpness", "overall"], batch_size=batch_size, return_maps=True)
        for entry, expected in zip(together, alone):
            np.testing.assert_allclose(entry["artifact_map"], expected, atol=1e-5, rtol=0)


def test_scores_alone_do_not_run_the_head(mapped, images):
    """Selecting the map's tokens waits for the GPU: the engine skips the head unless maps are asked for."""
    calls = []
    handle = mapped.artifact_head.register_forward_hook(lambda *args: calls.append(1))
    try:
        same_size = [images[0], images[3]]  # one batch
        mapped.score(same_size, batch_size=2)
        assert calls == []
        mapped.score(same_size, batch_size=2, return_maps=True)
        assert calls == [1]
    finally:
        handle.remove()


def test_a_model_without_the_head_refuses_maps_and_points_at_explain(tiny_models, images):
    from scoring_fuscore import score_images

    plain = tiny_models["qwen2_vl"]
    for call in (lambda: plain.score(images[0], return_maps=True),
                 lambda: score_images(plain, plain.processor, images[:1], return_maps=True)):
        with pytest.raises(ValueError, match=r"trained without artifact maps.*model\.explain"):
            call()


def test_the_pipeline_returns_the_same_maps(mapped, images, tiny_models):
    from transformers import pipeline

    import pipeline_fuscore

    scorer = pipeline(pipeline_fuscore.TASK_NAME, model=mapped, device="cpu")
    expected = mapped.score(images[:3], return_maps=True)
    for batch_size in (1, 2):
        results = scorer(list(images[:3]), return_maps=True, batch_size=batch_size, dimensions=["overall"])
        for result, want in zip(results, expected):
            assert result["score"] == pytest.approx(want["overall"], abs=1e-5)
            np.testing.assert_allclose(result["artifact_map"], want["artifact_map"], atol=1e-5)
    assert "artifact_map" not in scorer(images[0])
    plain = pipeline(pipeline_fuscore.TASK_NAME, model=tiny_models["qwen2_vl"], device="cpu")
    with pytest.raises(ValueError, match="trained without artifact maps"):
        plain(images[0], return_maps=True)


def _write_images(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        paths.append(folder / f"img{index:02d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def test_cli_writes_one_png_per_row_resumes_and_refuses_to_overwrite(saved_folders, images, tmp_path, capsys):
    from fuscore.cli import main

    with_head, plain = saved_folders
    paths = _write_images(tmp_path / "images", images[:4])
    maps, output = tmp_path / "maps", tmp_path / "scores.parquet"
    command = ["score", str(tmp_path / "images"), "--model", str(with_head), "--dimensions", "overall",
               "--batch-size", "3", "--output", str(output), "--maps", str(maps)]
    assert main(command) == 0
    rows = pq.read_table(output).to_pylist()
    assert sorted(p.name for p in maps.iterdir()) == sorted(row["artifact_map"] for row in rows)
    expected = load_saved(with_head).score([str(p) for p in paths], return_maps=True)
    for row, path, want in zip(rows, paths, expected):
        assert row["key"] == str(path.absolute()) and row["artifact_map"].startswith(path.stem + "-")
        written = np.asarray(Image.open(maps / row["artifact_map"]))
        assert written.dtype == np.uint8 and written.shape == want["artifact_map"].shape
        np.testing.assert_allclose(written / 255, want["artifact_map"], atol=0.5 / 255 + 1e-6)

    capsys.readouterr()
    (maps / rows[1]["artifact_map"]).unlink()  # a map deleted since: its item is scored again
    assert main(command) == 0
    assert "1 scored again: their maps were missing" in capsys.readouterr().err
    assert (maps / rows[1]["artifact_map"]).is_file()

    other = [*command[:-3], str(tmp_path / "other.parquet"), "--maps", str(maps)]
    assert main(other) == 2
    assert "already holds files" in capsys.readouterr().err and not (tmp_path / "other.parquet").exists()
    assert main([*other, "--overwrite"]) == 0
    assert main([*command[:-2]]) == 2  # the same output without maps: another job
    assert "artifact maps" in capsys.readouterr().err
    assert main(["score", str(paths[0]), "--model", str(plain), "--maps", str(tmp_path / "none")]) == 2
    error = capsys.readouterr().err
    assert "trained without artifact maps" in error and "model.explain" in error and not (tmp_path / "none").exists()


def test_an_interrupted_job_keeps_the_maps_of_its_rows_and_a_relaunch_completes_them(saved_folders, images, tmp_path):
    from fuscore.scoring_job import parts_folder, run_scoring_job
    from fuscore.sources import files_source

    with_head, _ = saved_folders
    _write_images(tmp_path / "images", images)
    model = load_saved(with_head)
    output, maps = tmp_path / "scores.parquet", tmp_path / "maps"
    calls = []

    def interrupt_third_batch(module, args, kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    handle = model.register_forward_pre_hook(interrupt_third_batch, with_kwargs=True)
    with pytest.raises(KeyboardInterrupt):
        run_scoring_job(model, files_source([str(tmp_path / "images")]), ["overall"], output, batch_size=2,
                        progress=False, maps_dir=maps)
    handle.remove()
    kept = [row for part in parts_folder(output).glob("part-*.parquet") for row in pq.read_table(part).to_pylist()]
    assert len(kept) == 4 and all((maps / row["artifact_map"]).is_file() for row in kept)
    result = run_scoring_job(model, files_source([str(tmp_path / "images")]), ["overall"], output, batch_size=2,
                             progress=False, maps_dir=maps)
    assert (result.n_reused, result.n_scored, result.n_items) == (4, 2, 6)
    rows = pq.read_table(output).to_pylist()
    fresh = run_scoring_job(model, files_source([str(tmp_path / "images")]), ["overall"], None, batch_size=2,
                            progress=False, maps_dir=tmp_path / "fresh_maps")
    for row, again in zip(rows, fresh.table.to_pylist()):
        assert row["artifact_map"] == again["artifact_map"]
        assert np.array_equal(np.asarray(Image.open(maps / row["artifact_map"])),
                              np.asarray(Image.open(tmp_path / "fresh_maps" / again["artifact_map"])))


@pytest.mark.slow
def test_the_app_overlays_the_map_when_the_model_has_the_head(mapped, tiny_models, images, tmp_path):
    pytest.importorskip("gradio")
    from app_support import load_app_module

    app = load_app_module()
    path = _write_images(tmp_path, images[1:2])[0]
    assert app.has_artifact_maps(mapped) and not app.has_artifact_maps(tiny_models["qwen2_vl"])
    artifact_map = mapped.score(str(path), return_maps=True)["artifact_map"]
    overlay = np.asarray(app.map_overlay(str(path), artifact_map), dtype=np.float32)
    alpha = app.OVERLAY_OPACITY * artifact_map[..., None]
    np.testing.assert_allclose(overlay, (1 - alpha) * images[1] + alpha * np.array(app.OVERLAY_COLOR), atol=0.5 + 1e-3)

    blocks = app.build_app(mapped, "tiny with maps")
    endpoint = next(fn for fn in blocks.fns.values() if fn.api_name == "score")
    assert [type(block).__name__ for block in endpoint.outputs] == ["Dataframe", "BarPlot", "Image"]
    table, levels, shown = endpoint.fn({"path": str(path), "url": None})
    assert np.array_equal(np.asarray(shown), np.asarray(app.map_overlay(str(path), artifact_map)))
    plain_blocks = app.build_app(copy.copy(tiny_models["qwen2_vl"]), "plain")
    plain_endpoint = next(fn for fn in plain_blocks.fns.values() if fn.api_name == "score")
    assert len(plain_endpoint.outputs) == 2
