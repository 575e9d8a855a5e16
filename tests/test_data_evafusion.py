"""EVAFusion as it is published: a `save_to_disk` dataset with `fused`, `infrared`, `visible`, `artifact_heatmap`
and a `scores` struct out of 5, read by `fuscore_data.importers.load_evafusion`, by `load_table` and by the trainer.

The scores below are made up (EVAFusion's own are VLM scores reviewed by experts; none ship here)."""

import io
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from fuscore_data import evafusion as evafusion_module
from fuscore_data.evafusion import EVAFUSION_HUB_ID, is_evafusion_layout
from fuscore_data.importers import default_vifb_dir, load_evafusion
from fuscore_data.schema import RATING_FEATURES, SUB_DIMENSIONS
from fuscore_data.tables import load_table, save_arrow, save_imagefolder
from fuscore_data.validation import TableValidationError


datasets.disable_progress_bars()
REPO_ROOT = Path(__file__).resolve().parents[1]
VIFB_DIR = default_vifb_dir()
HAS_VIFB = (VIFB_DIR / "manifest.csv").is_file()
SCORE_KEYS = ("Thermal Retention", "Texture Preservation", "Artifacts", "Sharpness", "Overall Score")
# EVAFusion's features as its training code reads them.
EVAFUSION_FEATURES = datasets.Features(
    {
        "fused": datasets.Image(),
        "infrared": datasets.Image(),
        "visible": datasets.Image(),
        "artifact_heatmap": datasets.Image(),
        "scores": {key: datasets.Value("float32") for key in SCORE_KEYS},
    }
)
SMALL_VIFB_PAIRS = ("peopleshadow", "walking", "manWalking", "running")  # the smallest scenes (<= 328 x 254)
VIFB_METHODS = ("ADF", "CBF", "GFF")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _generated(seed: int, size=(24, 32), grey=False) -> bytes:
    rng = np.random.default_rng(seed)
    return _png(rng.integers(0, 255, size if grey else (*size, 3), dtype=np.uint8))


def _heatmap(size) -> bytes:
    """A grey map, as EVAFusion's artifact heatmaps are."""
    width, height = size
    return _png((np.add.outer(np.arange(height), np.arange(width)) % 256).astype(np.uint8))


def _scores(i: int, overall=None) -> dict:
    values = [1 + (i * 7 + k * 3) % 9 / 2 for k in range(4)]  # made-up numbers in [1, 5]
    return dict(zip(SCORE_KEYS, [*values, float(np.mean(values)) if overall is None else overall]))


def _records(pairs: int = 3, per_pair: int = 3, *, start=0) -> list[dict]:
    """Generated images: pair p's infrared and visible images are shared by its rows, as in EVAFusion."""
    rows = []
    for p in range(start, start + pairs):
        infrared, visible = _generated(1000 + p, grey=True), _generated(2000 + p)
        for m in range(per_pair):
            i = len(rows) + start * per_pair
            rows.append({"fused": {"bytes": _generated(10 * p + m), "path": None},
                         "infrared": {"bytes": infrared, "path": None}, "visible": {"bytes": visible, "path": None},
                         "artifact_heatmap": {"bytes": _heatmap((32, 24)), "path": None}, "scores": _scores(i)})
    return rows


def _dataset(rows) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows, features=EVAFUSION_FEATURES)


def _vifb_records() -> tuple[list[dict], list[str]]:
    """EVAFusion's schema with VIFB's images (4 scenes x 3 methods), made-up scores; and the VIFB pair of each row."""
    import csv

    with open(VIFB_DIR / "manifest.csv", newline="") as handle:
        manifest = [row for row in csv.DictReader(handle) if row["pair"] in SMALL_VIFB_PAIRS and row["method"] in VIFB_METHODS]
    rows = []
    for i, row in enumerate(manifest):
        fused = VIFB_DIR / row["fused"]
        rows.append({"fused": str(fused), "infrared": str(VIFB_DIR / row["ir"]), "visible": str(VIFB_DIR / row["vis"]),
                     "artifact_heatmap": {"bytes": _heatmap(Image.open(fused).size), "path": None}, "scores": _scores(i)})
    return rows, [row["pair"] for row in manifest]


@pytest.fixture(scope="module")
def saved_evafusion(tmp_path_factory) -> Path:
    """A `save_to_disk` folder as EVAFusion's training code reads it: a DatasetDict with split "train", images
    embedded. VIFB's images where VIFB is here, generated ones elsewhere."""
    folder = tmp_path_factory.mktemp("evafusion") / "train"
    rows = _vifb_records()[0] if HAS_VIFB else _records(pairs=4, per_pair=3)
    datasets.DatasetDict({"train": _dataset(rows)}).save_to_disk(str(folder))
    return folder


@pytest.mark.skipif(not HAS_VIFB, reason=f"VIFB is not at {VIFB_DIR} (set FUSCORE_VIFB_DIR)")
def test_a_saved_evafusion_dataset_of_vifb_images_loads_as_a_rating_table(saved_evafusion):
    rows, vifb_pairs = _vifb_records()
    table = load_evafusion(saved_evafusion)
    assert list(table) == ["train"]
    train = table["train"]
    assert train.features == datasets.Features({**RATING_FEATURES, "artifact_heatmap": datasets.Image()})
    # One pair_id per VIFB scene, derived from the sources' bytes alone.
    assert len(set(train["pair_id"])) == len(SMALL_VIFB_PAIRS)
    assert [train["pair_id"].index(p) for p in train["pair_id"]] == [vifb_pairs.index(p) for p in vifb_pairs]
    assert sorted(train["method"]) == sorted(["fused-0", "fused-1", "fused-2"] * len(SMALL_VIFB_PAIRS))
    assert list(train["mos"]) == pytest.approx([row["scores"]["Overall Score"] for row in rows])  # [1, 5] kept
    assert list(train["sharpness"]) == pytest.approx([row["scores"]["Sharpness"] for row in rows])
    # The cells are VIFB's own files, byte for byte (embedded by save_to_disk, never re-encoded).
    raw = train.cast_column("fused", datasets.Image(decode=False)).cast_column("ir", datasets.Image(decode=False))
    assert raw[5]["fused"]["bytes"] == Path(rows[5]["fused"]).read_bytes()
    assert raw[5]["ir"]["bytes"] == Path(rows[5]["infrared"]).read_bytes()
    assert train[0]["artifact_heatmap"].mode == "L" and train[0]["artifact_heatmap"].size == train[0]["fused"].size
    assert "reviewed by experts" in train.info.description and "crowd" in train.info.description


def test_pair_ids_come_from_the_sources_content_stably(tmp_path):
    rows = _records(pairs=3, per_pair=3)
    order = [4, 0, 8, 2, 6, 1, 3, 7, 5]  # pairs interleaved
    table = load_evafusion(_dataset([rows[i] for i in order]))
    pair_of = dict(zip(order, table["pair_id"]))
    assert [len({pair_of[i] for i in range(p * 3, p * 3 + 3)}) for p in range(3)] == [1, 1, 1]
    assert len(set(table["pair_id"])) == 3
    assert all(len(p) == evafusion_module.PAIR_ID_HEX_DIGITS and int(p, 16) >= 0 for p in table["pair_id"])
    # Another row order, and the same images stored as files instead of bytes: the same ids.
    for i, row in enumerate(rows):
        for column in ("infrared", "visible"):
            path = tmp_path / f"{column}_{i}.png"
            path.write_bytes(row[column]["bytes"])
            row[column] = str(path)
    as_files = load_evafusion(_dataset(rows))
    assert [pair_of[i] for i in range(9)] == list(as_files["pair_id"])
    # Methods: a per-pair index in table order.
    assert list(as_files["method"]) == ["fused-0", "fused-1", "fused-2"] * 3
    assert sorted(table["method"]) == sorted(as_files["method"])

    # A different infrared with the same visible image is another pair; a pair column in the source is kept.
    changed = _records(pairs=1, per_pair=2)
    changed[1]["infrared"] = {"bytes": _generated(77, grey=True), "path": None}
    assert len(set(load_evafusion(_dataset(changed))["pair_id"])) == 2
    with_pairs = _dataset(_records(pairs=2, per_pair=2)).add_column("pair_id", ["a", "a", "b", "b"])
    assert list(load_evafusion(with_pairs)["pair_id"]) == ["a", "a", "b", "b"]


def test_scores_outside_the_range_name_the_row_and_suggest_zero_to_five():
    rows = _records(pairs=2, per_pair=2)
    rows[2]["scores"]["Artifacts"] = 0.0
    with pytest.raises(TableValidationError, match=r"row 2 \(pair_id='[0-9a-f]{16}', method='fused-0'\): artifacts=0 is outside") as raised:
        load_evafusion(_dataset(rows))
    assert "score_range=(0, 5)" in str(raised.value) and len(raised.value.problems) == 1
    table = load_evafusion(_dataset(rows), score_range=(0, 5))
    assert table[2]["artifacts"] == pytest.approx(1.0)
    assert table[0]["mos"] == pytest.approx(1 + 4 * rows[0]["scores"]["Overall Score"] / 5)


def test_bad_scores_and_missing_sources_are_named():
    rows = _records(pairs=2, per_pair=2)
    features = EVAFUSION_FEATURES.copy()
    features["scores"] = {key: datasets.Value("string") for key in SCORE_KEYS}
    for row in rows:
        row["scores"] = {key: str(value) for key, value in row["scores"].items()}
    with pytest.raises(TableValidationError, match=r"row 0: scores\['Thermal Retention'\] is '.*', not a number"):
        load_evafusion(datasets.Dataset.from_list(rows, features=features))

    rows = _records(pairs=1, per_pair=2)
    rows[1]["infrared"] = rows[1]["visible"] = None
    with pytest.raises(TableValidationError, match="row 1: no infrared or visible image"):
        load_evafusion(_dataset(rows))
    rows[1]["infrared"] = "/nonexistent/ir.png"
    with pytest.raises(TableValidationError, match="row 1: infrared image: '/nonexistent/ir.png' does not exist"):
        load_evafusion(_dataset(rows))

    with pytest.raises(ValueError, match=r"needs the columns .*missing \['scores'\]"):
        load_evafusion(_dataset(_records(1, 2)).remove_columns("scores"))
    rows = [{**row, "scores": {"Sharpness": 3.0}} for row in _records(1, 2)]
    no_overall = datasets.Dataset.from_list(rows, features=datasets.Features(
        {**EVAFUSION_FEATURES, "scores": {"Sharpness": datasets.Value("float32")}}))
    with pytest.raises(ValueError, match="'Overall Score'"):
        load_evafusion(no_overall)


def test_splits_of_a_dataset_dict(tmp_path):
    train, dev = _dataset(_records(pairs=2, per_pair=2)), _dataset(_records(pairs=2, per_pair=2, start=2))
    table = load_evafusion(datasets.DatasetDict({"train": train, "dev": dev}))
    assert list(table) == ["train", "dev"] and set(table["train"]["pair_id"]).isdisjoint(table["dev"]["pair_id"])
    assert len(load_evafusion(datasets.DatasetDict({"train": train, "dev": dev}), split="dev")) == 4

    leaky = datasets.DatasetDict({"train": train, "dev": train.select([1])})
    with pytest.raises(TableValidationError, match="is in split 'train' and in split 'dev'") as raised:
        load_evafusion(leaky)
    assert "merge_splits=True" in str(raised.value)
    with pytest.raises(TableValidationError, match=r"row 4 .*its fused image is the same file as row 1's"):
        load_evafusion(leaky, merge_splits=True)  # the merged copy holds the same fused image twice
    merged = load_evafusion(datasets.DatasetDict({"train": train, "dev": dev}), merge_splits=True)
    assert isinstance(merged, datasets.Dataset) and len(merged) == 8


def test_every_source_kind_loads_the_same(tmp_path, saved_evafusion):
    from_folder = load_evafusion(saved_evafusion, check_images=False)["train"]
    dataset = datasets.load_from_disk(str(saved_evafusion))
    from_dataset = load_evafusion(dataset["train"], check_images=False)
    # A local data folder for datasets.load_dataset (parquet files, as the Hub serves datasets).
    parquet_dir = tmp_path / "parquet"
    parquet_dir.mkdir()
    dataset["train"].to_parquet(str(parquet_dir / "train.parquet"))
    from_load_dataset = load_evafusion(str(parquet_dir), split="train", check_images=False,
                                       cache_dir=str(tmp_path / "cache"))
    for other in (from_dataset, from_load_dataset):
        assert other.features == from_folder.features
        for column in ("pair_id", "method", "mos", *SUB_DIMENSIONS):
            assert list(other[column]) == list(from_folder[column])
    assert dataset["train"].column_names == list(EVAFUSION_FEATURES)  # the source is left as it was
    with pytest.raises(TypeError, match="load_from_disk"):
        load_evafusion(saved_evafusion, revision="main")
    with pytest.raises(TypeError, match="streaming"):
        load_evafusion(dataset["train"].to_iterable_dataset())
    with pytest.raises(KeyError, match=r"no split 'test'; it has \['train'\]"):
        load_evafusion(saved_evafusion, split="test")
    with pytest.raises(ValueError, match="not in EVAFusion's layout"):
        load_evafusion(dataset["train"].rename_column("infrared", "ir"))
    assert EVAFUSION_HUB_ID == "HHOODD/EVAFusion_dataset"


def test_images_are_not_decoded_to_convert_and_once_to_check(monkeypatch):
    """Conversion renames image cells without decoding them; checking decodes each distinct image once."""
    import processing_fuscore

    rows = _records(pairs=2, per_pair=3)

    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(datasets.Image, "decode_example", refuse)
    table = load_evafusion(_dataset(rows), check_images=False)
    assert len(table) == 6

    calls = []
    real = processing_fuscore.load_image
    monkeypatch.setattr(processing_fuscore, "load_image", lambda image, **kw: calls.append(1) or real(image, **kw))
    load_evafusion(_dataset(rows))
    # 6 fused + 2 infrared + 2 visible + 1 heatmap (all six rows carry the same map: one decode)
    assert len(calls) == 11


def test_load_table_reads_a_saved_evafusion_folder_on_its_own_scale(tmp_path, saved_evafusion):
    table = load_table(saved_evafusion)["train"]
    assert table.features == datasets.Features({**RATING_FEATURES, "artifact_heatmap": datasets.Image()})
    assert len(set(table["pair_id"])) == 4 and is_evafusion_layout(datasets.load_from_disk(str(saved_evafusion)))
    # Out of 5 with zeros: load_table keeps the scores as stored; the declared range maps them later.
    rows = _records(pairs=2, per_pair=2)
    rows[0]["scores"]["Overall Score"] = 0.0
    folder = tmp_path / "zeros"
    _dataset(rows).save_to_disk(str(folder))
    assert load_table(folder)[0]["mos"] == 0.0
    # The artifact heatmap survives the project's writers and readers.
    for writer in (save_arrow, save_imagefolder):
        written = writer(table, tmp_path / writer.__name__)
        back = load_table(written, cache_dir=tmp_path / "cache")
        back = back["train"] if isinstance(back, datasets.DatasetDict) else back
        assert back.features == table.features
        assert np.array_equal(np.asarray(back[3]["artifact_heatmap"]), np.asarray(table[3]["artifact_heatmap"]))
        assert list(back["pair_id"]) == list(table["pair_id"])


@pytest.mark.slow
def test_trainer_trains_a_step_on_a_saved_evafusion_folder(tmp_path, saved_evafusion, monkeypatch):
    """In this process: the trainer's command line is what runs, a fresh interpreter is not what is tested."""
    import json

    import trainer_fuscore

    output = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    trainer_fuscore.main(["--model_name_or_path", "tiny:qwen2_vl:32x1", "--train_table", str(saved_evafusion),
                          "--score_range", "1,5", "--eval_fraction", "0.25", "--pairs_per_batch", "2",
                          "--images_per_pair", "2", "--max_steps", "1", "--logging_steps", "1", "--save_strategy", "no",
                          "--use_cpu", "true", "--disable_tqdm", "true", "--per_device_eval_batch_size", "8",
                          "--dataloader_num_workers", "0", "--output_dir", str(output)])

    evaluation = json.loads((output / "final" / "fuscore_eval.json").read_text())
    assert evaluation["synthetic"] is False and evaluation["metrics"]["n"] == 3
    assert (output / "final" / "model.safetensors").is_file()


def test_trainer_tables_take_evafusion_dev_folder_on_its_own_scale(tmp_path):
    """EVAFusion ships its held-out folder as split "dev", scored out of 5: the trainer reads it as the eval table on
    [1, 5] (not the observed min/max) and keeps the heat map, the map term's target."""
    from fuscore.training.config import DataArguments
    from fuscore.training.loading import load_tables

    train_dir, dev_dir = tmp_path / "train", tmp_path / "dev"
    datasets.DatasetDict({"train": _dataset(_records(pairs=3, per_pair=3))}).save_to_disk(str(train_dir))
    datasets.DatasetDict({"dev": _dataset(_records(pairs=2, per_pair=3, start=10))}).save_to_disk(str(dev_dir))
    train, held_out = load_tables(DataArguments(train_table=str(train_dir), eval_table=str(dev_dir)), seed=0)
    assert len(train) == 9 and len(held_out) == 6
    assert "artifact_heatmap" in train.column_names and "artifact_heatmap" in held_out.column_names
    raw = [_scores(i)["Overall Score"] for i in range(9)]
    np.testing.assert_allclose(sorted(train["mos"]), sorted(raw), atol=1e-6)
