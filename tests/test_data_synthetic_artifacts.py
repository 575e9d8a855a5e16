"""Localised artifacts in the synthetic benchmark (`SyntheticIVIF(local_artifacts=True)`) and their maps: off by default
with the very tables of before, each kind planted where it says, marked by its mask, and lowering the artifacts score."""

import hashlib

import datasets
import numpy as np
import pytest

from fuscore_data.schema import RATING_FEATURES, SUB_DIMENSIONS
from fuscore_data.synthetic import (
    LOCAL_ARTIFACT_KINDS,
    Degradation,
    LocalArtifact,
    SyntheticIVIF,
    make_scene,
    overall_score,
    render,
    sample_local_artifacts,
)
from fuscore_data.tables import load_table, save_imagefolder

datasets.disable_progress_bars()


def _table_digest(table) -> str:
    """sha256 over every cell: decoded pixels (not PNG bytes, which depend on the encoder's version) and values."""
    digest = hashlib.sha256()
    for row in table:
        for key in sorted(row):
            value = row[key]
            digest.update(key.encode())
            if hasattr(value, "mode"):
                digest.update(value.mode.encode())
                digest.update(np.asarray(value).tobytes())
            else:
                digest.update(repr(value).encode())
    return digest.hexdigest()


# Computed with the generator as it was before local artifacts existed (commit 98b8f05).
PINNED_TABLES = [
    (dict(image_size=48, seed=3), "66ca8014f0710ae195b659bc15cf4d339d9c940387a778049e792f176e52e05f"),
    (dict(image_size=40, seed=5, shared_degradation=0.1, night_fraction=0.5),
     "7cc271e61a23f369fa126418c4d640c543449bc528f14459639df831fca64143"),
]


@pytest.mark.parametrize(("kwargs", "digest"), PINNED_TABLES)
def test_off_by_default_the_tables_are_those_of_before(kwargs, digest):
    assert _table_digest(SyntheticIVIF(**kwargs).table(3, 4)) == digest
    assert _table_digest(SyntheticIVIF(**kwargs, local_artifacts=False).table(3, 4)) == digest


def _scene(night=False, size=112):
    return make_scene(np.random.default_rng([1, 3 + night]), size, night=night)


def _disc(artifact, size):
    coordinates = (np.arange(size) + 0.5) / size
    return ((coordinates[:, None] - artifact.center_y) ** 2
            + (coordinates[None, :] - artifact.center_x) ** 2) <= artifact.radius**2


def _luma(rgb):
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0


def _placed(scene, kind, strength, radius=0.12):
    """An artifact of `kind` where the sampler puts that kind (halos on a strong edge, ghosts on a warm target)."""
    placed = next(a for seed in range(50) for a in sample_local_artifacts(np.random.default_rng(seed), scene, 1.0, 5)
                  if a.kind == kind)
    return LocalArtifact(kind, placed.center_y, placed.center_x, radius, strength, angle=0.7, seed=3)


@pytest.mark.parametrize("night", [False, True])
@pytest.mark.parametrize("kind", LOCAL_ARTIFACT_KINDS)
def test_each_kind_is_planted_in_its_region_marked_by_its_mask_and_lowers_only_the_artifacts_score(kind, night):
    scene = _scene(night)
    size = scene.size
    artifact = _placed(scene, kind, 0.8)
    plain = render(scene, "laplacian_pyramid", Degradation(blur_sigma=0.6))
    planted = render(scene, "laplacian_pyramid", Degradation(blur_sigma=0.6), local_artifacts=[artifact])
    (mask,) = planted.planted_masks
    changed = np.any(planted.fused != plain.fused, axis=-1)
    if kind == "blocking":  # the 8-px-aligned square around the disc
        rows, columns = np.nonzero(changed)
        region = np.zeros_like(changed)
        region[rows.min():rows.max() + 1, columns.min():columns.max() + 1] = True
        assert rows.min() % 8 == 0 and columns.min() % 8 == 0
        assert region.sum() <= (2 * 0.12 * size + 16) ** 2
    else:
        region = _disc(artifact, size)
    assert not changed[~region].any()  # nothing moves outside the artifact's region
    assert mask.any() and not mask[~region].any()  # the mask is non-empty and inside the region
    shift = np.abs(_luma(planted.fused) - _luma(plain.fused))
    if kind == "noise":
        assert np.array_equal(mask, region)
    elif kind in ("halo", "ghosting"):
        assert mask[region & (shift >= 0.035)].all()  # every visibly moved pixel is marked
    elif kind == "saturation":
        assert mask.sum() >= 0.4 * region.sum() and (_luma(planted.fused)[mask] > 0.9).all()
    # The map marks the planted artifact and what the plain rendering's map marked.
    assert planted.artifact_map.dtype == np.uint8 and set(np.unique(planted.artifact_map)) <= {0, 255}
    plain_map = render(scene, "laplacian_pyramid", Degradation(blur_sigma=0.6), artifact_map=True).artifact_map
    assert np.array_equal(planted.artifact_map > 0, (plain_map > 0) | mask)
    assert plain.artifact_map is None  # no map unless asked for
    # Only the artifacts score moves, and down.
    assert planted.scores["artifacts"] < plain.scores["artifacts"] - 0.1
    for name in ("thermal_retention", "texture_preservation", "sharpness"):
        assert planted.scores[name] == plain.scores[name]


def test_stronger_artifacts_score_lower():
    scene = _scene()
    for kind in ("blocking", "halo", "noise", "ghosting"):
        scores = [render(scene, "guided_filter", local_artifacts=[_placed(scene, kind, u, 0.14)]).scores["artifacts"]
                  for u in (0.2, 1.0)]
        assert scores[1] < scores[0], kind


def test_benchmark_with_local_artifacts_has_maps_every_kind_and_lower_truth():
    plain, planted = SyntheticIVIF(64, seed=4), SyntheticIVIF(64, seed=4, local_artifacts=True)
    assert "local_artifacts=True" in repr(planted) and "local_artifacts" not in repr(plain)
    kinds, drops, with_plants, empty_maps = set(), [], 0, 0
    for scene_index in range(12):
        base, rows = plain.group(scene_index, 6), planted.group(scene_index, 6)
        for before, row in zip(base, rows):
            assert set(row) == {*RATING_FEATURES, "artifact_heatmap"}
            heatmap = np.asarray(row["artifact_heatmap"])
            assert row["artifact_heatmap"].mode == "L" and heatmap.shape == (64, 64)
            empty_maps += not heatmap.any()
            # The same scene, method and degradations: only the planted artifacts differ.
            assert row["method"].startswith(before["method"].split("#")[0])
            tags = row["method"][len(before["method"].split("#")[0]):].split("+")[1:]
            found = {kind for kind in LOCAL_ARTIFACT_KINDS for tag in tags if tag.startswith(kind)}
            kinds |= found
            truth = [overall_score(np.array([r[name] for name in SUB_DIMENSIONS])) for r in (before, row)]
            if found:
                with_plants += 1
                drops.append(before["artifacts"] - row["artifacts"])
                assert heatmap.any()
                assert truth[1] <= truth[0] + 0.02
            else:
                assert row["artifacts"] == before["artifacts"] and row["mos"] == before["mos"]
    assert kinds == set(LOCAL_ARTIFACT_KINDS)
    assert 0.55 < with_plants / 72 < 0.95
    assert min(drops) > -0.02 and np.mean(drops) > 0.3
    assert empty_maps > 0  # clean images have an all-zero map (known clean), not a missing one
    # Rows stay deterministic, and asking for more images appends rows.
    again = SyntheticIVIF(64, seed=4, local_artifacts=True)
    first, more = planted.group(2, 3), again.group(2, 5)
    for a, b in zip(first, more[:3]):
        assert a["method"] == b["method"] and np.array_equal(np.asarray(a["artifact_heatmap"]), np.asarray(b["artifact_heatmap"]))


def test_table_with_maps_round_trips_through_an_image_folder(tmp_path):
    table = SyntheticIVIF(48, seed=1, local_artifacts=True).table(num_scenes=2, images_per_scene=3)
    assert table.features == datasets.Features({**RATING_FEATURES, "artifact_heatmap": datasets.Image()})
    assert "Localised artifacts" in table.info.description
    back = load_table(save_imagefolder(table, tmp_path / "synthetic"), cache_dir=tmp_path / "cache")["train"]
    assert back.features == table.features
    for i in range(len(table)):
        assert np.array_equal(np.asarray(back[i]["artifact_heatmap"]), np.asarray(table[i]["artifact_heatmap"]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(kind="smudge"), "Unknown local artifact"),
        (dict(center_y=1.2), "center_y"),
        (dict(strength=-0.1), "strength"),
        (dict(radius=0.0), "radius"),
    ],
)
def test_invalid_local_artifacts_are_refused(kwargs, message):
    arguments = dict(kind="noise", center_y=0.5, center_x=0.5, radius=0.1, strength=0.5) | kwargs
    with pytest.raises(ValueError, match=message):
        LocalArtifact(**arguments)
