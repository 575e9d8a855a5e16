"""Importers: VIFB from ../shared/data/vifb (unlabelled) and EVAFusion-style folders (rated)."""

import csv
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from fuscore_data.importers import default_vifb_dir, from_evafusion_records, load_evafusion, load_vifb
from fuscore_data.schema import RATING_FEATURES, SUB_DIMENSIONS
from fuscore_data.validation import TableValidationError


datasets.disable_progress_bars()
VIFB_DIR = default_vifb_dir()


def _save_image(path: Path, seed: int, size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.skipif(not (VIFB_DIR / "manifest.csv").is_file(), reason=f"VIFB is not at {VIFB_DIR} (set FUSCORE_VIFB_DIR)")
def test_vifb_reads_all_525_rows_unlabelled_in_place():
    table = load_vifb()
    assert len(table) == 525
    assert table.features == RATING_FEATURES
    assert len(set(table["pair_id"])) == 21 and len(set(table["method"])) == 25
    assert set(table["mos"]) == {None} and set(table["sharpness"]) == {None}
    # Images are referenced where they are, never copied.
    raw = table.cast_column("fused", datasets.Image(decode=False))[0]["fused"]
    assert raw["bytes"] is None and Path(raw["path"]).resolve().is_relative_to(VIFB_DIR.resolve())
    assert table[0]["fused"].size == table[0]["ir"].size


def test_vifb_location_is_overridable_and_errors_name_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSCORE_VIFB_DIR", str(tmp_path / "nowhere"))
    assert default_vifb_dir() == tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_vifb()

    # A tiny VIFB-shaped folder: one pair, two methods, one fused file missing.
    root = tmp_path / "mini_vifb"
    _save_image(root / "input/IR/a.png", 1)
    _save_image(root / "input/VI/a.png", 2)
    _save_image(root / "output/fused_images/a_M1.png", 3)
    (root / "manifest.csv").write_text(
        "pair,method,fused,ir,vis\n"
        "a,M1,output/fused_images/a_M1.png,input/IR/a.png,input/VI/a.png\n"
        "a,M2,output/fused_images/a_M2.png,input/IR/a.png,input/VI/a.png\n"
    )
    with pytest.raises(TableValidationError, match=r"row 1 \(pair_id='a', method='M2'\): fused image: '.*a_M2.png' does not exist"):
        load_vifb(root)
    (root / "output/fused_images/a_M2.png").write_bytes(b"garbage")
    assert len(load_vifb(root)) == 2  # existence only by default
    with pytest.raises(TableValidationError, match="a_M2.png: cannot decode"):
        load_vifb(root, check_images=True)


def _evafusion_folder(root: Path, rows):
    for i, _ in enumerate(rows):
        _save_image(root / "fused" / f"{i:05d}.png", 10 + i)
        _save_image(root / "ir" / f"{i:05d}.png", 100 + i)
        _save_image(root / "vi" / f"{i:05d}.png", 200 + i)
    header = ["Fused", "Thermal Retention", "Texture Preservation", "Artifacts", "Sharpness", "Overall Score"]
    with open(root / "scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, scores in enumerate(rows):
            writer.writerow([f"{i:05d}.png", *scores])


def test_evafusion_folder_is_read_with_its_column_names(tmp_path):
    _evafusion_folder(tmp_path, [(5, 4, 3, 2, 3.5), (1, 2, 3, 4, 2.25)])
    table = load_evafusion(tmp_path)
    assert table.features == RATING_FEATURES
    assert list(table["mos"]) == pytest.approx([3.5, 2.25])  # already on [1, 5]
    assert [table[0][name] for name in SUB_DIMENSIONS] == pytest.approx([5, 4, 3, 2])
    assert list(table["pair_id"]) == ["00000", "00001"] and list(table["method"]) == ["00000", "00001"]
    assert Path(table.cast_column("ir", datasets.Image(decode=False))[1]["ir"]["path"]).parent.name == "ir"

    zero_to_ten = load_evafusion(tmp_path, score_range=(0, 10))
    assert list(zero_to_ten["mos"]) == pytest.approx([1 + 4 * 0.35, 1 + 4 * 0.225])


def test_evafusion_errors_name_the_row(tmp_path):
    _evafusion_folder(tmp_path, [(5, 4, 3, 2, 3.5), (1, 2, 0.5, 4, 2.25)])
    with pytest.raises(TableValidationError, match=r"row 1 \(pair_id='00001', method='00001'\): artifacts=0.5 is outside"):
        load_evafusion(tmp_path)
    (tmp_path / "ir" / "00000.png").unlink()
    with pytest.raises(TableValidationError, match=r"row 0 .*ir image: '.*00000.png' does not exist"):
        load_evafusion(tmp_path, score_range=(0, 5))


def test_evafusion_record_tables_convert_to_the_schema():
    images = [Image.fromarray(np.full((20, 20, 3), v, np.uint8)) for v in (10, 20, 30, 40, 50, 60)]
    scores = [
        {"Thermal Retention": 4.0, "Texture Preservation": 3.0, "Artifacts": 5.0, "Sharpness": 2.0, "Overall Score": 3.0},
        {"Thermal Retention": 1.0, "Texture Preservation": 2.0, "Artifacts": 2.0, "Sharpness": 1.0, "Overall Score": 1.5},
    ]
    records = datasets.Dataset.from_dict(
        {"fused": images[:2], "infrared": images[2:4], "visible": images[4:], "scores": scores},
        features=datasets.Features(
            {
                "fused": datasets.Image(),
                "infrared": datasets.Image(),
                "visible": datasets.Image(),
                "scores": {k: datasets.Value("float32") for k in scores[0]},
            }
        ),
    )
    table = from_evafusion_records(records)
    assert table.features == RATING_FEATURES
    assert list(table["mos"]) == pytest.approx([3.0, 1.5])
    assert table[1]["thermal_retention"] == pytest.approx(1.0)
    assert list(table["pair_id"]) == ["0", "1"] and table[0]["mos_std"] is None
    assert np.asarray(table[0]["ir"])[0, 0, 0] == 30
