"""Validation of rating tables: each problem is found, and its message names the row and the file."""

import datasets
import numpy as np
import pytest
from PIL import Image

from fuscore_data.schema import RATING_FEATURES
from fuscore_data.validation import TableValidationError, find_problems, validate_table


datasets.disable_progress_bars()


def _image(seed, size=20):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def _table(rows):
    return datasets.Dataset.from_list([{name: row.get(name) for name in RATING_FEATURES} for row in rows], features=RATING_FEATURES)


def _good_rows():
    ir, vis = _image(100), _image(101)
    return [
        {"fused": _image(1), "ir": ir, "vis": vis, "pair_id": "road", "method": "avg", "mos": 3.0, "mos_std": 0.5},
        {"fused": _image(2), "ir": ir, "vis": vis, "pair_id": "road", "method": "max", "mos": 4.0, "sharpness": 2.0},
        {"fused": _image(3), "ir": _image(102), "vis": _image(103), "pair_id": "yard", "method": "avg", "mos": 1.5},
    ]


def _only_problem(rows, **kwargs):
    with pytest.raises(TableValidationError) as raised:
        validate_table(_table(rows), **kwargs)
    assert len(raised.value.problems) == 1, raised.value.problems
    message = str(raised.value)
    assert raised.value.problems[0] in message
    return raised.value.problems[0]


def test_a_clean_table_passes():
    validate_table(_table(_good_rows()), score_range=(1, 5))
    assert find_problems(_table(_good_rows())) == []


def test_missing_image_file_names_row_and_file(tmp_path):
    rows = _good_rows()
    rows[1]["fused"] = str(tmp_path / "gone.png")
    problem = _only_problem(rows)
    assert "row 1 (pair_id='road', method='max')" in problem and "gone.png" in problem and "does not exist" in problem


def test_truncated_image_file_names_row_and_file(tmp_path):
    path = tmp_path / "cut.png"
    _image(7, size=64).save(path)
    path.write_bytes(path.read_bytes()[:200])
    rows = _good_rows()
    rows[2]["fused"] = str(path)
    problem = _only_problem(rows)
    assert "row 2 (pair_id='yard', method='avg')" in problem and "cut.png" in problem and "cannot decode" in problem
    # Only existence is checked without decoding.
    assert find_problems(_table(rows), check_images=False) == []


def test_corrupt_embedded_bytes_are_reported():
    rows = _good_rows()
    rows[0]["fused"] = {"bytes": b"not an image at all", "path": None}
    problem = _only_problem(rows)
    assert "row 0 (pair_id='road', method='avg'): fused image" in problem and "embedded bytes" in problem


def test_missing_fused_image_is_reported():
    rows = _good_rows()
    rows[1]["fused"] = None
    assert "row 1 (pair_id='road', method='max'): the fused image is missing" == _only_problem(rows)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_are_reported(bad):
    rows = _good_rows()
    rows[2]["sharpness"] = bad
    problem = _only_problem(rows)
    assert problem.startswith("row 2 (pair_id='yard', method='avg'): sharpness is") and "finite" in problem


def test_out_of_range_scores_are_reported_only_against_a_declared_range():
    rows = _good_rows()
    rows[1]["mos"] = 7.5
    problem = _only_problem(rows, score_range=(1, 5))
    assert "row 1 (pair_id='road', method='max'): mos=7.5 is outside the declared score range [1, 5]" in problem
    assert find_problems(_table(rows)) == []  # no declared range: the table's own scale


def test_bad_spreads_are_reported():
    rows = _good_rows()
    rows[0]["mos_std"] = -0.1
    assert "row 0 (pair_id='road', method='avg'): mos_std=-0.1 is negative" in _only_problem(rows)
    rows[0]["mos_std"] = 6.0
    assert "mos_std=6 exceeds the width 4" in _only_problem(rows, score_range=(1, 5))


def test_missing_mos_is_reported_unless_unlabelled_tables_are_allowed():
    rows = _good_rows()
    rows[2]["mos"] = None
    assert "row 2 (pair_id='yard', method='avg'): mos is missing" in _only_problem(rows)
    validate_table(_table(rows), require_mos=False)


def test_duplicate_pair_and_method_is_reported():
    rows = _good_rows()
    rows[1]["method"] = "avg"
    assert _only_problem(rows) == "row 1 (pair_id='road', method='avg') duplicates row 0: the same pair_id and method"


def test_duplicate_fused_file_is_reported(tmp_path):
    path = tmp_path / "same.png"
    _image(9).save(path)
    rows = _good_rows()
    rows[0]["fused"] = str(path)
    rows[2]["fused"] = str(path)
    problem = _only_problem(rows)
    assert "row 2 (pair_id='yard', method='avg')" in problem and "same file as row 0" in problem


def test_sources_that_differ_within_a_pair_are_reported(tmp_path):
    first, second = tmp_path / "ir_a.png", tmp_path / "ir_b.png"
    _image(50).save(first)
    _image(51).save(second)
    rows = _good_rows()
    rows[0]["ir"], rows[1]["ir"] = str(first), str(second)
    problem = _only_problem(rows)
    assert problem.startswith("pair_id 'road': the ir image differs between row 0")
    assert "ir_a.png" in problem and "row 1" in problem and "ir_b.png" in problem


def test_empty_pair_or_method_is_reported():
    rows = _good_rows()
    rows[2]["pair_id"] = ""
    assert "row 2 (pair_id='', method='avg'): pair_id is empty" in _only_problem(rows)


def test_empty_table_and_empty_split_are_reported():
    empty = datasets.Dataset.from_dict({name: [] for name in RATING_FEATURES}, features=RATING_FEATURES)
    with pytest.raises(TableValidationError, match=r"the table is empty \(0 rows\)"):
        validate_table(empty)
    splits = datasets.DatasetDict({"train": _table(_good_rows()), "test": empty})
    with pytest.raises(TableValidationError, match=r"\[test\] split 'test' is empty"):
        validate_table(splits)


def test_missing_columns_are_reported():
    table = _table(_good_rows()).remove_columns(["method"])
    with pytest.raises(TableValidationError, match=r"no column\(s\) \['method'\]"):
        validate_table(table)


def test_a_scene_in_two_splits_is_reported():
    rows = _good_rows()
    splits = datasets.DatasetDict({"train": _table(rows[:1]), "test": _table(rows[1:])})
    with pytest.raises(TableValidationError, match="pair_id 'road' is in split 'train' and in split 'test'"):
        validate_table(splits)


def test_all_problems_are_gathered_and_the_message_lists_the_first_n():
    rows = _good_rows()
    for row in rows:
        row["mos"] = float("nan")
        row["sharpness"] = float("nan")
    with pytest.raises(TableValidationError) as raised:
        validate_table(_table(rows), max_listed=2)
    assert len(raised.value.problems) == 6
    assert "has 6 problem(s)" in str(raised.value) and "... and 4 more" in str(raised.value)
    assert isinstance(raised.value, ValueError)
