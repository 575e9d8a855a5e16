"""Inputs an adversarial user hands to fuscore_data: each fails with an error naming the file and line (or row),
instead of a `datasets`/pyarrow message that names neither ("changed from number to string in row 5")."""

import json
import shutil
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fuscore_data.importers import load_vifb
from fuscore_data.synthetic import SyntheticIVIF
from fuscore_data.tables import load_table, normalize_scores, save_arrow, save_imagefolder, split_by_pair
from fuscore_data.validation import TableValidationError, validate_table


datasets.disable_progress_bars()


@pytest.fixture(scope="module")
def synthetic_table():
    return SyntheticIVIF(image_size=32, seed=1).table(num_scenes=3, images_per_scene=3)


@pytest.fixture(scope="module")
def saved_folder(synthetic_table, tmp_path_factory):
    return save_imagefolder(synthetic_table, tmp_path_factory.mktemp("base") / "table")


@pytest.fixture
def folder(saved_folder, tmp_path):
    """A fresh copy of a 9-row image-folder table (split "train") to damage."""
    return Path(shutil.copytree(saved_folder, tmp_path / "table"))


def _metadata(folder: Path) -> Path:
    return folder / "train" / "metadata.jsonl"


def _lines(folder: Path) -> list[str]:
    return _metadata(folder).read_text().splitlines()


def _write(folder: Path, lines: list[str]) -> None:
    _metadata(folder).write_text("\n".join(lines) + "\n")


def _set(folder: Path, index: int, key: str, value) -> None:
    lines = _lines(folder)
    row = json.loads(lines[index])
    row[key] = value
    lines[index] = json.dumps(row)
    _write(folder, lines)


def _fused_file(folder: Path, index: int) -> Path:
    return folder / "train" / json.loads(_lines(folder)[index])["fused_file_name"]


def _cut(folder: Path, index: int) -> None:
    lines = _lines(folder)
    lines[index] = lines[index][:40]
    _write(folder, lines)


def _mixed_extra_column(folder: Path) -> None:
    _set(folder, 1, "note", "fine")
    _set(folder, 4, "note", 3)


JSONL_CASES = {
    "a string mos": (lambda f: _set(f, 5, "mos", "high"), r"line 6: mos is 'high', a string; scores must be numbers"),
    "a number written as a string": (lambda f: _set(f, 5, "mos", "3.5"), r'line 6: mos is \'3.5\'.*write 3.5, not "3.5"'),
    "a truncated last line": (lambda f: _cut(f, 8), r"line 9: not valid JSON .*cut short"),
    "a truncated line in the middle": (lambda f: _cut(f, 3), r"line 4: not valid JSON .*cut short"),
    "a boolean score": (lambda f: _set(f, 2, "sharpness", True), r"line 3: sharpness is True, a boolean"),
    "a numeric pair_id": (lambda f: _set(f, 1, "pair_id", 7), r'line 2: pair_id is 7, a number; write it as a string \("7"\)'),
    "a missing image file": (lambda f: _fused_file(f, 2).unlink(), r"line 3: fused_file_name '.*\.png': there is no such file"),
    "a line that is not an object": (lambda f: _write(f, _lines(f)[:2] + ["[1, 2]"] + _lines(f)[3:]), r"line 3: a JSON list"),
    "a file outside the folder": (lambda f: _set(f, 2, "ir_file_name", "../../etc/passwd"), r"line 3: ir_file_name '\.\./\.\./etc/passwd' points outside"),
    "text that is not UTF-8": (lambda f: _metadata(f).write_bytes(_metadata(f).read_bytes().replace(b'"method": "', b'"method": "\xe9', 1)),
                               r"line 1: not UTF-8 text"),
    "an extra column of mixed types": (_mixed_extra_column, r"line 5: note is a number here but a string on line 2"),
}


@pytest.mark.parametrize("case", list(JSONL_CASES))
def test_a_bad_metadata_jsonl_names_the_file_and_line(folder, tmp_path, case):
    damage, message = JSONL_CASES[case]
    damage(folder)
    with pytest.raises(TableValidationError, match=r"'.*table/train/metadata\.jsonl' " + message) as raised:
        load_table(folder, cache_dir=tmp_path / "cache")
    assert len(raised.value.problems) == 1


def test_harmless_metadata_variations_still_load(folder, tmp_path):
    """Blank lines, a byte-order mark and mixed image extensions are fine; bad rows are found by validation."""
    lines = _lines(folder)
    _metadata(folder).write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines[:4]) + "\n\n\n" + "\n".join(lines[4:]) + "\n").encode())
    jpeg = _fused_file(folder, 3).with_suffix(".JPG")
    Image.open(_fused_file(folder, 3)).convert("RGB").save(jpeg, format="JPEG")
    _fused_file(folder, 3).unlink()
    lines = _lines(folder)
    row = json.loads(lines[3])
    row["fused_file_name"] = str(jpeg.relative_to(folder / "train"))
    lines[3] = json.dumps(row)
    _write(folder, lines)
    table = load_table(folder, cache_dir=tmp_path / "cache")
    assert len(table["train"]) == 9
    validate_table(table)

    _set(folder, 2, "mos", None)  # a missing score is found by validation, naming the row
    with pytest.raises(TableValidationError, match=r"\[train\] row 2 .*mos is missing"):
        validate_table(load_table(folder, cache_dir=tmp_path / "cache2"))


def test_a_bad_metadata_csv_names_the_file_and_line(tmp_path):
    split = tmp_path / "table" / "train"
    split.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(split / f"{i}.png")
    rows = ["fused_file_name,pair_id,method,mos", "0.png,a,m0,3.5", "1.png,a,m1,excellent", "2.png,b,m0,NA"]
    (split / "metadata.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(TableValidationError, match=r"metadata\.csv' line 3: mos is 'excellent'; scores must be numbers"):
        load_table(tmp_path / "table", cache_dir=tmp_path / "cache")
    rows[2] = "1.png,a,m1"
    (split / "metadata.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(TableValidationError, match=r"metadata\.csv' line 3: 3 fields, the header \(line 1\) has 4"):
        load_table(tmp_path / "table", cache_dir=tmp_path / "cache")
    rows[2] = "1.png,a,m1,4"
    (split / "metadata.csv").write_text("\n".join(rows) + "\n")
    assert list(load_table(tmp_path / "table", cache_dir=tmp_path / "cache")["train"]["mos"]) == [3.5, 4.0, None]


def test_a_bad_metadata_parquet_names_the_file_and_column(tmp_path):
    import pyarrow as pa

    split = tmp_path / "table" / "train"
    split.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(split / "0.png")
    pq.write_table(pa.table({"fused_file_name": ["0.png"], "pair_id": ["a"], "method": ["m"], "mos": ["good"]}),
                   split / "metadata.parquet")
    with pytest.raises(TableValidationError, match=r"metadata\.parquet': column mos holds string; scores must be numbers"):
        load_table(tmp_path / "table", cache_dir=tmp_path / "cache")


def test_a_file_name_column_named_like_a_single_image_folder_gets_a_hint(folder, tmp_path):
    _write(folder, [line.replace('"fused_file_name"', '"file_name"') for line in _lines(folder)])
    with pytest.raises(ValueError, match=r"no column\(s\) \['fused'\].*name the fused image's column `fused_file_name`"):
        load_table(folder, cache_dir=tmp_path / "cache")


def test_a_file_or_a_damaged_save_to_disk_folder_is_named(synthetic_table, folder, tmp_path):
    with pytest.raises(NotADirectoryError, match=r"metadata\.jsonl' is a file; .*the one holding this metadata file"):
        load_table(_metadata(folder))
    saved = save_arrow(synthetic_table, tmp_path / "arrow")
    damaged = {}
    for name, damage in {
        "missing": lambda d: next(d.glob("*.arrow")).unlink(),
        "cut": lambda d: next(d.glob("*.arrow")).write_bytes(next(d.glob("*.arrow")).read_bytes()[:1000]),
        "state": lambda d: (d / "state.json").write_text("{"),
    }.items():
        damaged[name] = Path(shutil.copytree(saved, tmp_path / name))
        damage(damaged[name])
        with pytest.raises(TableValidationError, match=rf"'{damaged[name]}' is a save_to_disk folder that cannot be read .*save the table again"):
            load_table(damaged[name])


def test_validation_names_rows_with_values_of_the_wrong_type(synthetic_table):
    fused = synthetic_table.select_columns(["fused"]).select(range(3))
    strings = fused.add_column("pair_id", ["a", "b", "c"]).add_column("method", ["m"] * 3).add_column("mos", ["3", "x", None])
    with pytest.raises(TableValidationError) as raised:
        validate_table(strings)
    assert raised.value.problems == ["row 0 (pair_id='a', method='m'): mos is '3' (a str); scores must be numbers",
                                     "row 1 (pair_id='b', method='m'): mos is 'x' (a str); scores must be numbers",
                                     "row 2 (pair_id='c', method='m'): mos is missing; a labelled table needs an overall score on every row"]
    numbers = fused.add_column("pair_id", [1, 2, 3]).add_column("method", ["m"] * 3).add_column("mos", [3.0] * 3)
    with pytest.raises(TableValidationError, match=r"row 0 \(pair_id=1, method='m'\): pair_id is 1 \(a int\), not a string"):
        validate_table(numbers)
    with pytest.raises(TypeError, match="datasets.Dataset or DatasetDict, not list"):
        validate_table([{"fused": None}])


@pytest.mark.parametrize("score_range", ["1,5", (1, 3, 5), ("low", "high"), (float("nan"), 5), (5, 1)])
def test_a_malformed_score_range_is_named(synthetic_table, score_range):
    for call in (validate_table, normalize_scores):
        with pytest.raises(ValueError, match=r"score_range must be two (finite )?numbers"):
            call(synthetic_table, score_range=score_range)


def test_split_by_pair_refuses_nan_sizes_and_rows_without_a_pair(synthetic_table):
    with pytest.raises(ValueError, match="test_size must be a fraction"):
        split_by_pair(synthetic_table, test_size=float("nan"))
    with pytest.raises(ValueError, match="validation_size must be a fraction"):
        split_by_pair(synthetic_table, validation_size=float("inf"))
    unnamed = synthetic_table.map(lambda row, i: {"pair_id": None if i == 4 else row["pair_id"]}, with_indices=True)
    with pytest.raises(TableValidationError, match="row 4: pair_id is None; every row needs its source pair"):
        split_by_pair(unnamed)


def test_a_vifb_manifest_with_a_byte_order_mark_or_a_short_line(tmp_path):
    for i, name in enumerate(("ir", "vi", "f1", "f2")):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / f"{name}.png")
    text = "pair,method,fused,ir,vis\na,M1,f1.png,ir.png,vi.png\na,M2,f2.png,ir.png,vi.png\n"
    (tmp_path / "manifest.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())  # as a spreadsheet saves it
    assert list(load_vifb(tmp_path)["method"]) == ["M1", "M2"]
    (tmp_path / "manifest.csv").write_text(text + "b,M1,f1.png\n")
    with pytest.raises(TableValidationError, match=r"manifest\.csv' line 4: no \['ir', 'vis'\]"):
        load_vifb(tmp_path)
