"""The synthetic IVIF benchmark: determinism, scores that follow the injected degradations, spread, API."""

import time

import datasets
import numpy as np
import pytest

from fuscore_data.cards import SYNTHETIC_STATEMENT
from fuscore_data.schema import RATING_FEATURES, SUB_DIMENSIONS
from fuscore_data.synthetic import (
    ALL_METHODS,
    Degradation,
    SyntheticIVIF,
    fuse,
    overall_score,
    render,
)


datasets.disable_progress_bars()
SCORE_COLUMNS = ("mos", "mos_std", *SUB_DIMENSIONS)


def _fingerprint(rows):
    return [
        (row["pair_id"], row["method"], tuple(row[c] for c in SCORE_COLUMNS), np.asarray(row["fused"]).tobytes())
        for row in rows
    ]


def _scenes(night, count=2, size=64):
    """`count` scenes of the wanted kind (the generator draws day or night per scene)."""
    generator = SyntheticIVIF(image_size=size, seed=11)
    found = []
    for index in range(200):
        scene = generator.scene(index)
        if scene.night == night:
            found.append(scene)
            if len(found) == count:
                return found
    raise AssertionError("the generator should produce both day and night scenes")


def test_groups_are_deterministic_in_seed_and_scene_index():
    first = SyntheticIVIF(image_size=48, seed=5).group(3, 4)
    again = SyntheticIVIF(image_size=48, seed=5).group(3, 4)
    assert _fingerprint(first) == _fingerprint(again)
    assert _fingerprint(SyntheticIVIF(image_size=48, seed=6).group(3, 4)) != _fingerprint(first)
    assert _fingerprint(SyntheticIVIF(image_size=48, seed=5).group(4, 4)) != _fingerprint(first)
    # Asking for more images appends rows without changing the earlier ones.
    assert _fingerprint(SyntheticIVIF(image_size=48, seed=5).group(3, 9))[:4] == _fingerprint(first)


def test_rows_follow_the_schema():
    rows = SyntheticIVIF(image_size=48, seed=2).group(7, 8)
    assert {row["pair_id"] for row in rows} == {"syn-2-7"}
    assert len({row["method"] for row in rows}) == 8  # unique within the pair even when methods repeat
    assert {row["method"].split("+")[0].split("#")[0] for row in rows} == set(ALL_METHODS)
    for row in rows:
        assert set(row) == set(RATING_FEATURES)
        assert row["fused"].size == row["ir"].size == row["vis"].size == (48, 48)
        assert row["fused"].mode == "RGB" and row["ir"].mode == "L"
        for column in ("mos", *SUB_DIMENSIONS):
            assert 1.0 <= row[column] <= 5.0
        assert row["mos_std"] >= 0


def test_table_has_the_schema_features_and_says_it_is_synthetic():
    table = SyntheticIVIF(image_size=32, seed=1).table(num_scenes=3, images_per_scene=2, start_scene=10)
    assert table.features == RATING_FEATURES
    assert len(table) == 6
    assert sorted(set(table["pair_id"])) == ["syn-1-10", "syn-1-11", "syn-1-12"]
    assert SYNTHETIC_STATEMENT in table.info.description


def test_iter_groups_splits_scenes_between_workers():
    generator = SyntheticIVIF(image_size=32, seed=4)
    worker_1_of_3 = [group[0]["pair_id"] for group in generator.iter_groups(2, start=1, step=3, stop=10)]
    assert worker_1_of_3 == ["syn-4-1", "syn-4-4", "syn-4-7"]
    endless = generator.iter_groups(2, start=2, step=3)
    assert [next(endless)[0]["pair_id"] for _ in range(3)] == ["syn-4-2", "syn-4-5", "syn-4-8"]
    assert _fingerprint(next(generator.iter_groups(2, start=5))) == _fingerprint(generator.group(5, 2))


@pytest.mark.parametrize("night", [False, True])
@pytest.mark.parametrize("method", ["laplacian_pyramid", "weighted_average", "guided_filter"])
def test_more_blur_lowers_sharpness(method, night):
    for scene in _scenes(night):
        results = [render(scene, method, Degradation(blur_sigma=s)) for s in (0.0, 0.7, 1.5, 3.0)]
        measured = [r.measurements["sharpness"] for r in results]
        assert all(a > b for a, b in zip(measured, measured[1:])), measured
        scores = [r.scores["sharpness"] for r in results]
        assert all(a >= b for a, b in zip(scores, scores[1:])) and scores[-1] < scores[0] - 1.0, scores


@pytest.mark.parametrize("night", [False, True])
@pytest.mark.parametrize("method", ["max_absolute", "laplacian_pyramid", "saliency_weighted"])
def test_more_thermal_suppression_lowers_thermal_retention(method, night):
    for scene in _scenes(night):
        results = [render(scene, method, Degradation(thermal_suppression=t)) for t in (0.0, 0.3, 0.6, 1.0)]
        measured = [r.measurements["thermal_retention"] for r in results]
        # The measurement is capped at 1 per target, so it may stay flat at first.
        assert all(a >= b for a, b in zip(measured, measured[1:])) and measured[2] > measured[3], measured
        assert measured[-1] < measured[0] - 0.15, measured
        scores = [r.scores["thermal_retention"] for r in results]
        assert all(a >= b for a, b in zip(scores, scores[1:])) and scores[-1] < scores[0] - 1.0, scores


@pytest.mark.parametrize("night", [False, True])
@pytest.mark.parametrize("method", ["weighted_average", "haar_wavelet", "guided_filter"])
def test_more_noise_lowers_the_artifacts_score(method, night):
    for scene in _scenes(night):
        results = [render(scene, method, Degradation(noise_sigma=n)) for n in (0.0, 0.02, 0.05, 0.1)]
        measured = [r.measurements["artifacts"] for r in results]
        assert all(a < b for a, b in zip(measured, measured[1:])), measured  # more artifact energy
        scores = [r.scores["artifacts"] for r in results]
        assert all(a >= b for a, b in zip(scores, scores[1:])) and scores[-1] < scores[0] - 1.0, scores


@pytest.mark.parametrize("method", ["weighted_average", "laplacian_pyramid"])
def test_stronger_jpeg_compression_lowers_the_artifacts_score_by_day(method):
    # (At night JPEG also smooths away passed-through sensor noise, so there the effect is mixed.)
    for scene in _scenes(night=False):
        scores = [render(scene, method, Degradation(jpeg_quality=q)).scores["artifacts"] for q in (None, 80, 40, 20, 5)]
        assert all(a >= b for a, b in zip(scores, scores[1:])) and scores[-1] < scores[0] - 2.0, scores


def test_each_degradation_leaves_the_unrelated_content_scores_alone():
    (scene,) = _scenes(night=False, count=1)
    clean = render(scene, "laplacian_pyramid")
    noisy = render(scene, "laplacian_pyramid", Degradation(noise_sigma=0.08))
    # Noise is an artifact, not lost content: thermal retention and texture barely move.
    for name in ("thermal_retention", "texture_preservation", "sharpness"):
        assert noisy.scores[name] == pytest.approx(clean.scores[name], abs=0.05)
    compressed = render(scene, "laplacian_pyramid", Degradation(jpeg_quality=5))
    assert compressed.scores["artifacts"] < clean.scores["artifacts"] - 1.0
    assert compressed.scores["thermal_retention"] == clean.scores["thermal_retention"]


@pytest.mark.slow
def test_scores_spread_over_the_whole_range():
    generator = SyntheticIVIF(image_size=48, seed=0)
    rows = [row for group in generator.iter_groups(6, stop=80) for row in group]
    mos = np.array([row["mos"] for row in rows])
    assert (mos < 1.5).mean() > 0.01 and (mos > 4.5).mean() > 0.01, np.histogram(mos, bins=8, range=(1, 5))
    assert np.histogram(mos, bins=4, range=(1, 5))[0].min() > 0.1 * len(rows)  # no empty quarter
    for name in SUB_DIMENSIONS:
        values = np.array([row[name] for row in rows])
        assert values.min() < 1.5 and values.max() > 4.5, name
    # Ambiguous images (sub-scores that disagree) get a wider rater spread.
    sub = np.array([[row[name] for name in SUB_DIMENSIONS] for row in rows])
    disagreement = np.sqrt(((sub - sub.mean(axis=1, keepdims=True)) ** 2).mean(axis=1))
    assert np.corrcoef(disagreement, [row["mos_std"] for row in rows])[0, 1] > 0.3


def test_overall_rule_weights_the_worst_dimension_more():
    assert overall_score([4.0, 4.0, 4.0, 4.0]) == pytest.approx(4.0)
    assert overall_score([5.0, 5.0, 5.0, 1.0]) == pytest.approx(0.6 * 4.0 + 0.4 * 1.0)
    assert overall_score([5.0, 5.0, 5.0, 1.0]) < overall_score([4.0, 4.0, 4.0, 4.0])  # same mean, lower min


@pytest.mark.parametrize("method", ALL_METHODS)
def test_fusion_methods_keep_shape_and_range_and_differ(method):
    rng = np.random.default_rng(0)
    ir, vis = rng.random((50, 38), dtype=np.float32), rng.random((50, 38), dtype=np.float32)  # odd, non-square
    fused = fuse(ir, vis, method)
    assert fused.shape == (50, 38) and fused.dtype == np.float32
    assert 0.0 <= fused.min() and fused.max() <= 1.0
    others = [fuse(ir, vis, m) for m in ALL_METHODS if m != method]
    assert all(np.abs(fused - other).mean() > 1e-3 for other in others)


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="thermal_suppression"):
        Degradation(thermal_suppression=1.5)
    with pytest.raises(ValueError, match="jpeg_quality"):
        Degradation(jpeg_quality=0)
    with pytest.raises(ValueError, match="Unknown fusion method"):
        fuse(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32), "magic")
    with pytest.raises(ValueError, match="methods"):
        SyntheticIVIF(methods=("magic",))
    for size in (31, 32.5, "64", True):  # 32.5 was silently made 32
        with pytest.raises(ValueError, match="image_size must be a whole number of pixels, at least 32"):
            SyntheticIVIF(image_size=size)


def test_224_pixels_work_and_scores_do_not_depend_much_on_size():
    small, large = SyntheticIVIF(image_size=112, seed=3), SyntheticIVIF(image_size=224, seed=3)
    rows = large.group(0, 3)
    assert rows[0]["fused"].size == (224, 224)
    # Lengths scale with the image size, so the same scene keeps similar sub-scores.
    for a, b in zip(small.group(0, 3), rows):
        assert a["method"] == b["method"]
        assert np.mean([abs(a[c] - b[c]) for c in SUB_DIMENSIONS]) < 0.6


def test_generation_is_fast_enough_for_data_loader_workers():
    generator = SyntheticIVIF(image_size=112, seed=0)
    generator.group(0, 6)  # warm-up
    start = time.perf_counter()
    count = sum(len(generator.group(i, 6)) for i in range(1, 6))
    per_image = (time.perf_counter() - start) / count
    assert per_image < 0.03, f"{per_image * 1000:.1f} ms per 112-px image (about 3 ms expected on one core)"


def test_shared_degradation_makes_the_images_of_a_pair_close():
    """`shared_degradation`: one degradation draw per scene (same kinds, strengths jittered), so the fused images of a
    pair differ mainly by method; their MOS spread within the pair is well under the default's (benchmarks/ablation.py
    uses it for the setting where method-level ordering is hard). Off by default; rows still append stably."""
    default = SyntheticIVIF(image_size=40, seed=4)
    close = SyntheticIVIF(image_size=40, seed=4, shared_degradation=0.1)
    spreads = {"default": [], "close": []}
    for scene in range(12):
        rows = close.group(scene, 6)
        kinds = {tuple(part.rstrip("0123456789.") for part in row["method"].split("#")[0].split("+")[1:])
                 for row in rows}
        assert len(kinds) == 1, f"scene {scene}: one set of degradation kinds per pair, got {kinds}"
        spreads["close"].append(np.std([row["mos"] for row in rows]))
        spreads["default"].append(np.std([row["mos"] for row in default.group(scene, 6)]))
    assert np.mean(spreads["close"]) < 0.7 * np.mean(spreads["default"])
    assert _fingerprint(close.group(2, 8))[:5] == _fingerprint(close.group(2, 5))
    assert "shared_degradation=0.1" in repr(close) and "shared_degradation" not in repr(default)
    with pytest.raises(ValueError, match="shared_degradation"):
        SyntheticIVIF(shared_degradation=1.5)
