"""Validation of rating tables: every problem found, each naming its row and file.

`validate_table` gathers all problems before raising one `TableValidationError`, so a
table with many bad rows is fixed in one pass instead of one error at a time. Images are
decoded with `processing_fuscore.load_image`, the project's single image loader.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import numbers
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import datasets
from datasets.utils import tqdm

from .schema import EXTRA_IMAGE_COLUMNS, IMAGE_COLUMNS, SCORE_COLUMNS, SOURCE_COLUMNS, SPREAD_COLUMNS


_PROGRESS_FROM_ROWS = 1000  # smaller tables are checked in moments: no bar


class TableValidationError(ValueError):
    """A rating table failed validation; `problems` holds every problem found."""

    def __init__(self, problems: Iterable[str], *, max_listed: int = 20, hint: str | None = None):
        self.problems = list(problems)
        self.hint = hint
        listed = "\n".join(f"  - {problem}" for problem in self.problems[:max_listed])
        more = len(self.problems) - max_listed
        tail = f"\n  ... and {more} more (see the error's `problems`)" if more > 0 else ""
        advice = f"\n{hint}" if hint else ""
        super().__init__(f"The rating table has {len(self.problems)} problem(s):\n{listed}{tail}{advice}")


def validate_table(
    table: datasets.Dataset | datasets.DatasetDict,
    *,
    score_range: tuple[float, float] | None = None,
    require_mos: bool = True,
    check_images: bool = True,
    max_listed: int = 20,
) -> None:
    """Raise `TableValidationError` listing every problem of `table`; return None if it is clean.

    Checked, per split:

    * the table (or split) is not empty and has the columns `fused`, `pair_id`, `method`
      (and `mos` when `require_mos`);
    * `pair_id` and `method` are non-empty strings;
    * scores are finite; with `score_range` they lie in it, and `mos_std` is in
      [0, hi - lo]; without it, `mos_std` is >= 0; `mos` is present on every row when
      `require_mos` (pass False for unlabelled tables such as VIFB);
    * every image file exists (always) and decodes (when `check_images`), the optional
      `artifact_heatmap` included;
    * no duplicate rows: the same (`pair_id`, `method`) twice, or the same fused image
      (same bytes) twice;
    * all rows of a `pair_id` have the same `ir` and `vis` images (same bytes);
    * across the splits of a `DatasetDict`, no `pair_id` is in two splits.
    """
    problems = find_problems(table, score_range=score_range, require_mos=require_mos, check_images=check_images)
    if problems:
        raise TableValidationError(problems, max_listed=max_listed)


def find_problems(
    table: datasets.Dataset | datasets.DatasetDict,
    *,
    score_range: tuple[float, float] | None = None,
    require_mos: bool = True,
    check_images: bool = True,
) -> list[str]:
    """The list of problems `validate_table` would raise (empty for a clean table)."""
    score_range = checked_score_range(score_range)
    if not isinstance(table, (datasets.Dataset, datasets.DatasetDict)):
        raise TypeError(f"A rating table is a datasets.Dataset or DatasetDict, not {type(table).__name__}.")
    if isinstance(table, datasets.DatasetDict):
        if len(table) == 0:
            return ["the DatasetDict has no splits"]
        problems, seen_in = [], {}
        for split_name, split in table.items():
            problems += [
                f"[{split_name}] {problem}"
                for problem in _split_problems(split, score_range, require_mos, check_images, empty_name=f"split {split_name!r}")
            ]
            if "pair_id" in split.column_names:
                for pair_id in sorted(set(split["pair_id"]) - {None}):
                    if pair_id in seen_in:
                        problems.append(
                            f"pair_id {pair_id!r} is in split {seen_in[pair_id]!r} and in split {split_name!r}: "
                            "splits must not share a scene (use fuscore_data.tables.split_by_pair)"
                        )
                    else:
                        seen_in[pair_id] = split_name
        return problems
    return _split_problems(table, score_range, require_mos, check_images, empty_name="the table")


def checked_score_range(score_range) -> tuple[float, float] | None:
    """`score_range` as two floats (lo, hi); None stays None.

    Raises:
        ValueError: not two finite numbers with hi > lo (a string such as "1,5" included).
    """
    if score_range is None:
        return None
    try:
        if isinstance(score_range, (str, bytes)):
            raise TypeError
        low, high = (float(x) for x in score_range)
    except (TypeError, ValueError):
        raise ValueError(f"score_range must be two numbers (lo, hi), got {score_range!r}.") from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"score_range must be two finite numbers (lo, hi) with hi > lo, got {score_range}.")
    return low, high


def _split_problems(
    table: datasets.Dataset,
    score_range: tuple[float, float] | None,
    require_mos: bool,
    check_images: bool,
    empty_name: str,
) -> list[str]:
    required = ["fused", "pair_id", "method"] + (["mos"] if require_mos else [])
    missing = [name for name in required if name not in table.column_names]
    if missing:
        return [f"{empty_name} has no column(s) {missing} (columns: {table.column_names})"]
    if len(table) == 0:
        return [f"{empty_name} is empty (0 rows)"]

    problems: list[str] = []
    pair_ids, methods = list(table["pair_id"]), list(table["method"])
    labels = [f"row {i} (pair_id={pair!r}, method={method!r})" for i, (pair, method) in enumerate(zip(pair_ids, methods))]

    for i, (pair_id, method) in enumerate(zip(pair_ids, methods)):
        for name, value in (("pair_id", pair_id), ("method", method)):
            if value is not None and not isinstance(value, str):
                problems.append(f"{labels[i]}: {name} is {value!r} (a {type(value).__name__}), not a string")
            elif value is None or not value.strip():
                problems.append(f"{labels[i]}: {name} is empty; every row needs a source pair and a method name")
    problems += _score_problems(table, labels, score_range, require_mos)

    # Images: existence and decoding, then content digests for the duplicate checks. Read a batch at a time, so a
    # table of embedded images is never held in memory whole.
    checker = _ImageChecker(check_images)
    digests: dict[str, list[str | None]] = {}
    for column in (*IMAGE_COLUMNS, *EXTRA_IMAGE_COLUMNS):
        if column not in table.column_names:
            continue
        digests[column], descriptions = [], []
        references = _iter_raw_images(table, column)
        bar = tqdm(references, total=len(table), desc=f"Checking the {column} images", unit="image",
                   disable=len(table) < _PROGRESS_FROM_ROWS)
        for i, reference in enumerate(bar):
            if reference is None:
                if column == "fused":
                    problems.append(f"{labels[i]}: the fused image is missing")
                digests[column].append(None)
                descriptions.append(None)
                continue
            digest, problem = checker.check(reference, f"{labels[i]}: {column} image")
            if problem:
                problems.append(problem)
            digests[column].append(digest)
            descriptions.append(_describe(reference))
        if column in SOURCE_COLUMNS:
            problems += _source_consistency_problems(column, pair_ids, descriptions, digests[column])

    first_row: dict[tuple, int] = {}
    for i, key in enumerate(zip(pair_ids, methods)):
        if key in first_row:
            problems.append(f"{labels[i]} duplicates row {first_row[key]}: the same pair_id and method")
        else:
            first_row[key] = i
    first_fused: dict[str, int] = {}
    for i, digest in enumerate(digests.get("fused", [])):
        if digest is None:
            continue
        if digest in first_fused:
            problems.append(f"{labels[i]}: its fused image is the same file as row {first_fused[digest]}'s (identical bytes)")
        else:
            first_fused[digest] = i
    return problems


def _score_problems(table, labels, score_range, require_mos) -> list[str]:
    problems = []
    for column in (*SCORE_COLUMNS, *SPREAD_COLUMNS):
        if column not in table.column_names:
            continue
        for i, value in enumerate(table[column]):
            if value is None:
                if column == "mos" and require_mos:
                    problems.append(f"{labels[i]}: mos is missing; a labelled table needs an overall score on every row")
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                problems.append(f"{labels[i]}: {column} is {value!r} (a {type(value).__name__}); scores must be numbers")
                continue
            value = float(value)
            if math.isnan(value) or math.isinf(value):
                problems.append(f"{labels[i]}: {column} is {value}; scores must be finite numbers")
                continue
            if column in SPREAD_COLUMNS:
                width = None if score_range is None else score_range[1] - score_range[0]
                if value < 0:
                    problems.append(f"{labels[i]}: {column}={value:g} is negative; a spread must be >= 0")
                elif width is not None and value > width * (1 + 1e-4):
                    problems.append(
                        f"{labels[i]}: {column}={value:g} exceeds the width {width:g} of the declared score range; "
                        "ratings inside the range cannot spread that much"
                    )
            elif score_range is not None:
                low, high = score_range
                tolerance = 1e-4 * (high - low)  # float32 storage rounds normalised scores
                if not low - tolerance <= value <= high + tolerance:
                    problems.append(
                        f"{labels[i]}: {column}={value:g} is outside the declared score range [{low:g}, {high:g}]; "
                        "fix the value or declare the table's real range"
                    )
    return problems


def _source_consistency_problems(column, pair_ids, descriptions, digests) -> list[str]:
    problems, first = [], {}
    for i, (pair_id, digest) in enumerate(zip(pair_ids, digests)):
        if digest is None:
            continue
        if pair_id not in first:
            first[pair_id] = i
        elif digests[first[pair_id]] != digest:
            j = first[pair_id]
            problems.append(
                f"pair_id {pair_id!r}: the {column} image differs between row {j} ({descriptions[j]}) "
                f"and row {i} ({descriptions[i]}); a pair_id must name one source pair"
            )
    return problems


class _ImageChecker:
    """Checks each distinct image once (sources repeat on every row of their pair)."""

    def __init__(self, decode: bool):
        self.decode = decode
        self.cache: dict[str, tuple[str | None, str | None]] = {}

    def check(self, reference: dict, label: str) -> tuple[str | None, str | None]:
        """Return (sha1 of the image bytes or None, problem text or None) for one stored image."""
        path, data = reference.get("path"), reference.get("bytes")
        key = path if data is None else hashlib.sha1(data).hexdigest()
        if key not in self.cache:
            if data is not None:
                self.cache[key] = (key, self._decode_problem(data, f"<{len(data)} embedded bytes>"))
            elif not path or not os.path.isfile(path):
                self.cache[key] = (None, f"'{path}' does not exist; fix the path or remove the row")
            else:
                with open(path, "rb") as handle:
                    digest = hashlib.sha1(handle.read()).hexdigest()
                self.cache[key] = (digest, self._decode_problem(path, path))
        digest, problem = self.cache[key]
        return digest, (f"{label}: {problem}" if problem else None)

    def _decode_problem(self, image: str | bytes, name: str) -> str | None:
        if not self.decode:
            return None
        from processing_fuscore import ImageInputError, load_image  # the project's one image loader

        try:
            load_image(image, source=name)
        except ImageInputError as error:
            return str(error)
        return None


def _iter_raw_images(table: datasets.Dataset, column: str, batch_size: int = 64) -> Iterator[dict | None]:
    """The column's stored `{"path", "bytes"}` references, row by row, without decoding the images."""
    if not isinstance(table.features[column], datasets.Image):
        # e.g. a column of plain path strings before casting
        for value in table[column]:
            yield None if value is None else {"path": str(value), "bytes": None}
        return
    raw = table.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    for batch in raw.iter(batch_size=batch_size):
        yield from batch[column]


def _describe(reference: dict | None) -> str:
    if reference is None:
        return "<none>"
    if reference.get("path"):
        return f"'{reference['path']}'"
    return f"<{len(reference.get('bytes') or b'')} embedded bytes>"


# --------------------------------------------------------------------------------------
# Image-folder metadata files, checked before `datasets` reads them (its errors name no file)
# --------------------------------------------------------------------------------------

METADATA_FILENAMES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
_TEXT_COLUMNS = ("pair_id", "method")


def find_metadata_problems(path: str | os.PathLike) -> list[str]:
    """The problems of one image-folder metadata file, each naming the file and its line (or column).

    Checked: the file is UTF-8 text (JSON Lines, CSV) or readable Parquet; every JSON line is a whole JSON object
    (a line cut short is named); scores are numbers or empty, `pair_id` and `method` text; every `*_file_name`
    names an existing file inside the metadata file's folder; any other column keeps one JSON type throughout.
    Row-level checks (finite scores, duplicates, images that decode) are `validate_table`'s, after loading.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        return _jsonl_problems(path)
    if path.suffix == ".csv":
        return _csv_problems(path)
    if path.suffix == ".parquet":
        return _parquet_problems(path)
    raise ValueError(f"'{path}' is not a metadata file ({', '.join(METADATA_FILENAMES)}).")


def _text_lines(path: Path, problems: list[str]) -> list[tuple[int, str]]:
    """(line number, text) of each line that is UTF-8; a line that is not is a problem."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            lines.append((number, line.decode("utf-8").rstrip("\r")))
        except UnicodeDecodeError as error:
            problems.append(f"'{path}' line {number}: not UTF-8 text (byte {error.start + 1} of the line); save the file as UTF-8")
    return lines


def _json_kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def _jsonl_problems(path: Path) -> list[str]:
    problems: list[str] = []
    kinds: dict[str, tuple[str, int]] = {}
    for number, text in _text_lines(path, problems):
        if not text.strip():
            continue
        where = f"'{path}' line {number}"
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            problems.append(f"{where}: not valid JSON ({error.msg}, column {error.colno}); is the line cut short?")
            continue
        if not isinstance(row, dict):
            problems.append(f"{where}: a JSON {_json_kind(row)}, not an object with one key per column")
            continue
        for key, value in row.items():
            problem = _cell_problem(key, value, path.parent)
            if problem:
                problems.append(f"{where}: {problem}")
            elif value is not None:
                kind = _json_kind(value)
                first = kinds.setdefault(key, (kind, number))
                if first[0] != kind:
                    problems.append(
                        f"{where}: {key} is a {kind} here but a {first[0]} on line {first[1]}; a column holds one type"
                    )
    return problems


def _cell_problem(column: str, value, folder: Path) -> str | None:
    if value is None:
        return None
    if column in SCORE_COLUMNS or column in SPREAD_COLUMNS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            advice = f" (write {value}, not \"{value}\")" if isinstance(value, str) and _is_number(value) else ""
            return f"{column} is {value!r}, a {_json_kind(value)}; scores must be numbers or null{advice}"
        return None
    if column in _TEXT_COLUMNS:
        if not isinstance(value, str):
            return f"{column} is {value!r}, a {_json_kind(value)}; write it as a string (\"{value}\")"
        return None
    if column == "file_name" or column.endswith("_file_name"):
        if not isinstance(value, str):
            return f"{column} is {value!r}, a {_json_kind(value)}; it must be a file name"
        return _file_name_problem(column, value, folder)
    return None


def _file_name_problem(column: str, name: str, folder: Path) -> str | None:
    if not name:
        return None
    target = (folder / name).resolve()
    if not target.is_relative_to(folder.resolve()):
        return f"{column} {name!r} points outside '{folder}'; image files must be inside the metadata file's folder"
    if not target.is_file():
        return f"{column} {name!r}: there is no such file in '{folder}'"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# What pyarrow's CSV reader takes for a missing value.
_CSV_NULLS = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "N/A", "NA",
              "NULL", "NaN", "n/a", "nan", "null"}


def _csv_problems(path: Path) -> list[str]:
    problems: list[str] = []
    lines = _text_lines(path, problems)
    if problems:
        return problems
    reader = csv.reader(io.StringIO("\n".join(text for _, text in lines)))
    header, header_number = None, 0
    for row in reader:
        if not row:
            continue
        if header is None:
            header, header_number = row, reader.line_num
            continue
        where = f"'{path}' line {reader.line_num}"
        if len(row) != len(header):
            problems.append(f"{where}: {len(row)} fields, the header (line {header_number}) has {len(header)}")
            continue
        for column, value in zip(header, row):
            if (column in SCORE_COLUMNS or column in SPREAD_COLUMNS) and value not in _CSV_NULLS and not _is_number(value):
                problems.append(f"{where}: {column} is {value!r}; scores must be numbers or empty")
            elif column == "file_name" or column.endswith("_file_name"):
                problem = _file_name_problem(column, value, path.parent)
                if problem:
                    problems.append(f"{where}: {problem}")
    return problems


def _parquet_problems(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        return [f"'{path}': not a readable Parquet file ({error})"]
    problems = []
    for field in schema:
        if field.name in SCORE_COLUMNS or field.name in SPREAD_COLUMNS:
            if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type) or pa.types.is_null(field.type)):
                problems.append(f"'{path}': column {field.name} holds {field.type}; scores must be numbers")
        elif field.name in _TEXT_COLUMNS or field.name == "file_name" or field.name.endswith("_file_name"):
            if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type) or pa.types.is_null(field.type)):
                problems.append(f"'{path}': column {field.name} holds {field.type}; it must hold strings")
    return problems
