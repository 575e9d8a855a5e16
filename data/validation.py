"""Validation of rating tables: every problem found, each naming its row and file.

`validate_table` gathers all problems before raising one `TableValidationError`, so a
table with many bad rows is fixed in one pass instead of one error at a time. Images are
decoded with `processing_fuscore.load_image`, the project's single image loader.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Iterator

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
    if score_range is not None:
        low, high = (float(x) for x in score_range)
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"score_range must be two finite numbers (lo, hi) with hi > lo, got {score_range}.")
        score_range = (low, high)
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
            if not isinstance(value, str) or not value.strip():
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
