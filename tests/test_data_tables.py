"""Rating tables: schema round trips, the image-folder layout, atomic writers, cards, normalisation, splits."""

import json
import os

import datasets
import numpy as np
import pytest
from huggingface_hub import DatasetCard
from PIL import Image

from fuscore_data import tables
from fuscore_data.cards import SYNTHETIC_STATEMENT, size_category, write_dataset_card
from fuscore_data.schema import RATING_FEATURES, SUB_DIMENSIONS, conform_to_schema
from fuscore_data.synthetic import SyntheticIVIF
from fuscore_data.tables import load_table, normalize_scores, save_arrow, save_imagefolder, split_by_pair
from fuscore_data.validation import TableValidationError


datasets.disable_progress_bars()


@pytest.fixture(scope="module")
def synthetic_table():
    return SyntheticIVIF(image_size=32, seed=0).table(num_scenes=4, images_per_scene=3)


def _rows(**columns):
    """A schema table from column lists; absent columns are None."""
    length = len(next(iter(columns.values())))
    full = {name: columns.get(name, [None] * length) for name in RATING_FEATURES}
    return datasets.Dataset.from_dict(full, features=RATING_FEATURES)


def _image(seed, size=20):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def _pixels(image):
    return np.asarray(image.convert("RGB"))


def _assert_same_rows(expected, actual):
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual):
        assert (a["pair_id"], a["method"]) == (b["pair_id"], b["method"])
        for column in ("mos", "mos_std", *SUB_DIMENSIONS):
            assert a[column] == pytest.approx(b[column], abs=1e-6), column
        for column in ("fused", "ir", "vis"):
            np.testing.assert_array_equal(_pixels(a[column]), _pixels(b[column]))


def _leftovers(parent, name):
    return [p for p in os.listdir(parent) if p.startswith(f".{name}.")]


def test_schema_round_trip_through_save_to_disk(synthetic_table, tmp_path):
    out = save_arrow(synthetic_table, tmp_path / "arrow")
    loaded = load_table(out)
    assert isinstance(loaded, datasets.Dataset)
    assert loaded.features == RATING_FEATURES
    _assert_same_rows(synthetic_table, loaded)
    assert SYNTHETIC_STATEMENT in (out / "README.md").read_text()


def test_imagefolder_layout_loads_with_datasets_imagefolder_offline(synthetic_table, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    splits = split_by_pair(synthetic_table, test_size=1, seed=0)
    out = save_imagefolder(splits, tmp_path / "folder", pretty_name="Tiny synthetic")

    first = json.loads((out / "train" / "metadata.jsonl").read_text().splitlines()[0])
    assert {"fused_file_name", "ir_file_name", "vis_file_name"} <= set(first)

    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "test"}
    for name in ("fused", "ir", "vis"):
        assert isinstance(loaded["train"].features[name], datasets.Image)
    for split in ("train", "test"):
        _assert_same_rows(splits[split], conform_to_schema(loaded[split]))

    # The card's `configs` entry lets a plain load_dataset(<folder>) find the same splits.
    by_card = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache2"))
    assert {split: len(ds) for split, ds in by_card.items()} == {split: len(ds) for split, ds in splits.items()}

    ours = load_table(out, cache_dir=tmp_path / "cache3")
    assert list(ours) == ["train", "test"]
    assert ours["train"].features == RATING_FEATURES
    _assert_same_rows(splits["test"], ours["test"])


def test_plain_load_dataset_keeps_the_schema_types(tmp_path, monkeypatch):
    """`datasets.load_dataset(<folder>)`, with no FuScore code, reads the card's declared features: scores stay
    float32 and a column empty in every row keeps its type (not null)."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    table = _rows(fused=[_image(1), _image(2)], pair_id=["p", "q"], method=["a", "a"], mos=[3.25, 2.5],
                  sharpness=[None, 4.0])
    out = save_imagefolder(table, tmp_path / "typed")
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.features == RATING_FEATURES
    assert loaded["mos"] == [3.25, 2.5] and loaded["sharpness"] == [None, 4.0] and loaded["mos_std"] == [None, None]
    assert loaded["ir"] == [None, None]


def test_imagefolder_keeps_missing_sources_and_scores_as_none(tmp_path):
    table = _rows(fused=[_image(1), _image(2)], pair_id=["p", "q"], method=["a", "a"], mos=[None, 2.5])
    out = save_imagefolder(table, tmp_path / "unlabelled")
    loaded = load_table(out, split="train", cache_dir=tmp_path / "cache")
    assert loaded["ir"] == [None, None] and loaded["vis"] == [None, None]
    assert loaded["mos"] == [None, 2.5]
    assert loaded["sharpness"] == [None, None]
    np.testing.assert_array_equal(_pixels(loaded[1]["fused"]), _pixels(_image(2)))


def test_imagefolder_copies_stored_bytes_without_reencoding(tmp_path):
    jpeg = tmp_path / "src.jpg"
    _image(3, size=32).save(jpeg, quality=40)
    table = _rows(fused=[str(jpeg)], pair_id=["p"], method=["m"], mos=[3.0])
    out = save_imagefolder(table, tmp_path / "copy")
    (written,) = (out / "train" / "fused").iterdir()
    assert written.suffix == ".jpg"
    assert written.read_bytes() == jpeg.read_bytes()


def test_writers_validate_first_and_write_nothing_on_failure(tmp_path):
    table = _rows(fused=[_image(1), str(tmp_path / "missing.png")], pair_id=["p", "q"], method=["a", "b"])
    for writer, name in ((save_imagefolder, "bad_folder"), (save_arrow, "bad_arrow")):
        with pytest.raises(TableValidationError, match="missing.png"):
            writer(table, tmp_path / name)
        assert not (tmp_path / name).exists()
        assert _leftovers(tmp_path, name) == []


def test_writer_failing_half_way_leaves_nothing(tmp_path, monkeypatch, synthetic_table):
    calls = []
    real_copy = tables._copy_image

    def copy_then_fail(*args):
        calls.append(args)
        if len(calls) == 5:
            raise OSError("disk full (simulated)")
        return real_copy(*args)

    monkeypatch.setattr(tables, "_copy_image", copy_then_fail)
    with pytest.raises(OSError, match="simulated"):
        save_imagefolder(synthetic_table, tmp_path / "half")
    assert len(calls) == 5  # it did start writing
    assert not (tmp_path / "half").exists()
    assert _leftovers(tmp_path, "half") == []


def test_writer_refuses_an_existing_folder_unless_overwrite(tmp_path, synthetic_table):
    target = tmp_path / "table"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_arrow(synthetic_table, target)
    assert (target / "old.txt").exists()
    save_arrow(synthetic_table, target, overwrite=True)
    assert not (target / "old.txt").exists()
    assert len(load_table(target)) == len(synthetic_table)
    assert _leftovers(tmp_path, "table") == []


@pytest.mark.parametrize("writer", [save_arrow, save_imagefolder])
def test_writers_go_through_fuscore_atomic(tmp_path, monkeypatch, synthetic_table, writer):
    """A full disk is one AtomicWriteError naming the table's folder; the folder gets the umask's permissions."""
    from fuscore import atomic

    written = writer(synthetic_table, tmp_path / "ok")
    assert written == tmp_path / "ok" and os.stat(written).st_mode & 0o777 == 0o777 & ~atomic.current_umask()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tables, "write_dataset_card", disk_full)
    with pytest.raises(atomic.AtomicWriteError, match=r"full.*No space left on device"):
        writer(synthetic_table, tmp_path / "full")
    assert sorted(os.listdir(tmp_path)) == ["ok"]


def test_dataset_card_header_and_synthetic_statement(tmp_path, synthetic_table):
    human = _rows(fused=[_image(1)], pair_id=["p"], method=["m"], mos=[4.0])
    path = write_dataset_card(human, tmp_path / "human", pretty_name="Rated pairs", license="cc-by-4.0")
    card = DatasetCard.load(path)
    assert card.data.license == "cc-by-4.0"
    assert card.data.pretty_name == "Rated pairs"
    assert card.data.task_categories == ["visual-question-answering"]
    assert card.data.size_categories == ["n<1K"]
    assert "image-fusion" in card.data.tags and "synthetic" not in card.data.tags
    assert SYNTHETIC_STATEMENT not in card.text and "This dataset is synthetic" not in card.text

    card = DatasetCard.load(write_dataset_card(synthetic_table, tmp_path / "syn.md"))
    assert "synthetic" in card.data.tags
    assert card.data.license == "apache-2.0"
    assert SYNTHETIC_STATEMENT in card.text and "NOT ratings given by human observers" in card.text
    assert "thermal_retention" in card.text  # what the truth means is spelled out
    vifb_like = human.map(lambda row: row)
    vifb_like.info.license = "vifb-research-use"
    card = DatasetCard.load(write_dataset_card(vifb_like, tmp_path / "vifb.md"))
    assert (card.data.license, card.data.license_name, card.data.license_link) == (
        "other", "vifb-research-use", "https://github.com/xingchenzhang/VIFB")
    card = DatasetCard.load(write_dataset_card(human, tmp_path / "own.md", license="lab-terms",
                                               license_link="https://example.org/terms"))
    assert (card.data.license, card.data.license_name) == ("other", "lab-terms")
    unknown = DatasetCard.load(write_dataset_card(human, tmp_path / "unknown.md"))
    assert unknown.data.license is None  # never an unnamed "other"
    assert [size_category(n) for n in (999, 1000, 54_321, 2_000_000)] == ["n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]


def test_normalize_with_declared_range():
    table = _rows(
        fused=[_image(1), _image(2), _image(3)],
        pair_id=["p", "p", "q"],
        method=["a", "b", "a"],
        mos=[0.0, 10.0, 2.5],
        mos_std=[1.0, None, 0.5],
        sharpness=[5.0, 7.5, None],
    )
    out = normalize_scores(table, score_range=(0, 10))
    assert list(out["mos"]) == pytest.approx([1.0, 5.0, 2.0])
    assert list(out["sharpness"])[:2] == pytest.approx([3.0, 4.0]) and out["sharpness"][2] is None
    assert out["mos_std"][0] == pytest.approx(0.4) and out["mos_std"][1] is None  # scaled by 4 / 10, not shifted
    assert out.features == RATING_FEATURES

    with pytest.raises(TableValidationError, match=r"row 1: mos=10 is outside the declared range \[0, 5\]"):
        normalize_scores(table, score_range=(0, 5))
    with pytest.raises(ValueError, match="hi > lo"):
        normalize_scores(table, score_range=(5, 5))


def test_normalize_with_observed_range_is_shared_by_splits():
    def make(scores, pairs, first_seed):
        images = [_image(first_seed + i) for i in range(len(scores))]
        return _rows(fused=images, pair_id=pairs, method=[f"m{i}" for i in range(len(scores))], mos=scores)

    splits = datasets.DatasetDict({"train": make([20.0, 60.0], ["a", "b"], 10), "test": make([100.0], ["c"], 20)})
    out = normalize_scores(splits)
    assert list(out["train"]["mos"]) == pytest.approx([1.0, 3.0])
    assert list(out["test"]["mos"]) == pytest.approx([5.0])

    with pytest.raises(ValueError, match="pass score_range"):
        normalize_scores(make([3.0, 3.0], ["a", "b"], 30))


def test_split_by_pair_never_shares_a_scene():
    pairs = [f"scene{i}" for i in range(20) for _ in range(3)]
    table = _rows(fused=[None] * 60, pair_id=pairs, method=[f"m{i % 3}" for i in range(60)])
    splits = split_by_pair(table, test_size=0.2, validation_size=3, seed=7)
    assert list(splits) == ["train", "validation", "test"]
    seen = {name: set(split["pair_id"]) for name, split in splits.items()}
    assert (len(seen["train"]), len(seen["validation"]), len(seen["test"])) == (13, 3, 4)
    assert not (seen["train"] & seen["test"]) and not (seen["train"] & seen["validation"]) and not (seen["validation"] & seen["test"])
    assert sum(len(split) for split in splits.values()) == 60
    for split in splits.values():  # every row of a chosen scene goes with it
        assert len(split) == 3 * len(set(split["pair_id"]))

    again = split_by_pair(table.shuffle(seed=1), test_size=0.2, validation_size=3, seed=7)
    assert set(again["test"]["pair_id"]) == seen["test"]  # depends on the pairs and the seed, not the row order
    other = split_by_pair(table, test_size=0.2, validation_size=3, seed=8)
    assert set(other["test"]["pair_id"]) != seen["test"]

    with pytest.raises(ValueError, match="no training pair"):
        split_by_pair(table, test_size=10, validation_size=10)
    with pytest.raises(ValueError, match="pass an int"):
        split_by_pair(table, test_size=2.0)
