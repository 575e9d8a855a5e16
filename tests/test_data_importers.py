"""Importers: VIFB from ../shared/data/vifb (unlabelled). EVAFusion: tests/test_data_evafusion.py."""

from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from fuscore_data.importers import default_vifb_dir, load_vifb
from fuscore_data.schema import RATING_FEATURES
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
