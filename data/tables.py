"""Reading, writing, normalising and splitting rating tables.

Two on-disk layouts, both loadable with plain `datasets`:

* **image folder** (`save_imagefolder`): one folder per split with the images and a
  `metadata.jsonl` whose `fused_file_name`, `ir_file_name` and `vis_file_name` columns
  name the files (the `datasets` imagefolder convention for several image columns per
  row), plus a dataset card. It loads with
  `load_dataset("imagefolder", data_dir=...)`, with `load_dataset(<folder>)` and with
  `load_table`, and can be pushed to the Hub as it is.
* **arrow** (`save_arrow`): `Dataset.save_to_disk` (images embedded) plus a dataset card.

Both writers validate first and write through `fuscore.atomic.atomic_folder`: a temporary
folder next to the target, renamed into place only when everything succeeded, so a
failure never leaves a half-written table (and an existing table is replaced only with
`overwrite=True`, once the new one is complete).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
from pathlib import Path

import datasets
import numpy as np

from fuscore.atomic import atomic_folder

from .cards import features_to_card_yaml, write_dataset_card
from .evafusion import evafusion_to_rating_table, is_evafusion_layout
from .schema import EXTRA_IMAGE_COLUMNS, IMAGE_COLUMNS, RATING_FEATURES, SCORE_COLUMNS, SPREAD_COLUMNS, conform_dict_to_schema, conform_to_schema, table_features
from .validation import (
    METADATA_FILENAMES,
    TableValidationError,
    _iter_raw_images,
    checked_score_range,
    find_metadata_problems,
    validate_table,
)


METADATA_FILENAME = "metadata.jsonl"
_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")  # the `datasets` rule for split names


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_table(
    path: str | os.PathLike,
    *,
    split: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """Load a rating table saved by `save_imagefolder` / `save_arrow` (or any folder in those layouts).

    The layout is recognised from the files: `save_to_disk` output (`dataset_dict.json` or
    `state.json`), else image-folder split directories holding `metadata.jsonl` or
    `metadata.csv`, else a single image folder (taken as split "train"). A `save_to_disk`
    folder in EVAFusion's published layout (`fused`, `infrared`, `visible`, a `scores`
    struct; see `fuscore_data.evafusion`) is converted, with `pair_id` and `method`
    derived and its scores as stored (out of 5: declare that range when normalising;
    `fuscore_data.importers.load_evafusion` also validates and normalises). The result is
    conformed to the rating schema; scores stay on the table's own scale.

    Args:
        path: the folder.
        split: return only this split as a `Dataset`.
        cache_dir: `datasets` cache for the image-folder build (default: the HF cache).

    Returns:
        A `DatasetDict`, or a `Dataset` when `split` is given or the folder holds a single
        `save_to_disk` dataset.
    """
    path = Path(path)
    if path.is_file():
        raise NotADirectoryError(
            f"'{path}' is a file; a rating table is a folder: pass the folder that holds it"
            f"{' (the one holding this metadata file, or its parent)' if path.name in METADATA_FILENAMES else ''}."
        )
    if not path.is_dir():
        raise FileNotFoundError(f"No rating table at '{path}': the folder does not exist.")
    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            table = _load_from_disk(path)
            if is_evafusion_layout(table):
                table = evafusion_to_rating_table(table)
        else:
            table = load_imagefolder(path, cache_dir=cache_dir)
    except IndexError as error:  # `datasets` cannot build a table from zero data files or an empty metadata file
        raise TableValidationError(
            [f"'{path}' holds an empty table (0 rows): add rated fused images, or point to the right folder"]
        ) from error
    table = conform_dict_to_schema(table)
    if split is None:
        return table
    if isinstance(table, datasets.Dataset):
        raise ValueError(f"'{path}' holds a single table without splits; call load_table without split=.")
    if split not in table:
        raise KeyError(f"'{path}' has no split {split!r}; it has {list(table)}.")
    return table[split]


def _load_from_disk(path: Path) -> datasets.Dataset | datasets.DatasetDict:
    """`datasets.load_from_disk`, whose errors for a damaged folder (a missing or cut-short Arrow file, a broken
    JSON file) name no folder, or no file at all."""
    import pyarrow as pa

    try:
        return datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError, pa.ArrowException) as error:
        raise TableValidationError(
            [f"'{path}' is a save_to_disk folder that cannot be read ({type(error).__name__}: {error}); a file in it "
             "is missing or damaged: save the table again"]
        ) from error


def load_imagefolder(data_dir: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> datasets.DatasetDict:
    """Load an image-folder rating table with `load_dataset("imagefolder")`, one split per sub-folder.

    Split folders are the sub-folders that hold a metadata file; their names are the split
    names (so any valid split name works, not only train/validation/test). A folder with
    the metadata file at its top is one split, "train".
    """
    data_dir = Path(data_dir)
    metadata_names = METADATA_FILENAMES
    split_dirs = [p for p in data_dir.iterdir() if p.is_dir() and any((p / m).is_file() for m in metadata_names)]
    usual_order = {"train": 0, "validation": 1, "test": 2}
    split_dirs.sort(key=lambda p: (usual_order.get(p.name, 3), p.name))
    if split_dirs:
        data_files = {p.name: [str(p / "**")] for p in split_dirs}
    elif any((data_dir / m).is_file() for m in metadata_names):
        data_files = {"train": [str(data_dir / "**")]}
    else:
        raise FileNotFoundError(
            f"'{data_dir}' is not an image-folder rating table: no {' / '.join(metadata_names)} in it "
            "or in its sub-folders."
        )
    # `datasets` reads every metadata file under each split folder; its errors for a bad cell name neither the
    # file nor the line ("changed from number to string in row 5"), so the files are checked first.
    roots = split_dirs or [data_dir]
    problems = [problem for root in roots for name in metadata_names for metadata in sorted(root.rglob(name))
                for problem in find_metadata_problems(metadata)]
    if problems:
        raise TableValidationError(problems)
    loaded = datasets.load_dataset(
        "imagefolder",
        data_files=data_files,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    return conform_dict_to_schema(loaded)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def save_imagefolder(
    table: datasets.Dataset | datasets.DatasetDict,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    validate: bool = True,
    **card_kwargs,
) -> Path:
    """Write `table` as an image folder with a dataset card; return the folder.

    Layout::

        out_dir/README.md                     dataset card (YAML header + description)
        out_dir/<split>/metadata.jsonl        one row per fused image
        out_dir/<split>/fused/<row>_<pair>_<method>.<ext>
        out_dir/<split>/sources/<n>_<pair>_ir.<ext>, ..._vis.<ext>  (once per pair)
        out_dir/<split>/artifact_heatmap/<row>_<pair>_<method>.<ext>  (where the table has that column)

    A `Dataset` is written as the single split "train". Image bytes are copied as stored
    (a JPEG stays the same JPEG; images made in memory are PNG), never re-encoded.

    Args:
        table: the rating table.
        out_dir: the folder to create.
        overwrite: replace an existing `out_dir` (only after the new one is complete).
        validate: run `validate_table(require_mos=False)` first and write nothing on failure.
        **card_kwargs: passed to `write_dataset_card` (pretty_name, license, synthetic, ...).
    """
    splits = _as_splits(table)
    if validate:
        validate_table(datasets.DatasetDict(splits), require_mos=False)

    # The features go in the card's `configs` entry, where `load_dataset(<folder>)` reads them: without them the
    # JSON metadata would load as float64 scores and all-empty columns as null.
    configs = [{"config_name": "default", "data_files": [{"split": name, "path": f"{name}/**"} for name in splits],
                "features": features_to_card_yaml(table_features(next(iter(splits.values()))) if splits else RATING_FEATURES)}]
    with atomic_folder(out_dir, overwrite=overwrite) as staging:
        for split_name, split in splits.items():
            _write_imagefolder_split(split, staging / split_name)
        write_dataset_card(datasets.DatasetDict(splits), staging, configs=configs, **card_kwargs)
    return Path(out_dir).absolute()


def save_arrow(
    table: datasets.Dataset | datasets.DatasetDict,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    validate: bool = True,
    **card_kwargs,
) -> Path:
    """`save_to_disk` (images embedded) plus a dataset card, written atomically; return the folder.

    Arguments as in `save_imagefolder`. Load it back with `load_table` or `datasets.load_from_disk`.
    """
    if validate:
        validate_table(table, require_mos=False)

    with atomic_folder(out_dir, overwrite=overwrite) as staging:
        table.save_to_disk(str(staging))
        write_dataset_card(table, staging, **card_kwargs)
    return Path(out_dir).absolute()


def _as_splits(table: datasets.Dataset | datasets.DatasetDict) -> dict[str, datasets.Dataset]:
    splits = dict(table) if isinstance(table, datasets.DatasetDict) else {"train": table}
    for name in splits:
        if not _SPLIT_NAME.match(name):
            raise ValueError(f"Split name {name!r} is not a valid `datasets` split name (letters, digits, _ and .).")
    return {name: conform_to_schema(split) for name, split in splits.items()}


def _write_imagefolder_split(split: datasets.Dataset, split_dir: Path) -> None:
    (split_dir / "fused").mkdir(parents=True)
    (split_dir / "sources").mkdir()
    extras = [column for column in EXTRA_IMAGE_COLUMNS if column in split.column_names]
    for column in extras:
        (split_dir / column).mkdir()
    # One row's images at a time: a table of embedded images is never held in memory whole.
    references = zip(*(_iter_raw_images(split, column) for column in (*IMAGE_COLUMNS, *extras)))
    pair_ids, methods = list(split["pair_id"]), list(split["method"])
    scores = {column: list(split[column]) for column in (*SCORE_COLUMNS, *SPREAD_COLUMNS)}
    written_sources: dict[tuple[str, str], str] = {}
    pair_numbers: dict[str, int] = {}
    with open(split_dir / METADATA_FILENAME, "w", encoding="utf-8") as metadata:
        for i, (pair_id, method, images) in enumerate(zip(pair_ids, methods, references)):
            images = dict(zip((*IMAGE_COLUMNS, *extras), images))
            pair_number = pair_numbers.setdefault(pair_id, len(pair_numbers))
            stem = f"{i:06d}_{_slug(pair_id)}_{_slug(method)}"
            row = {"fused_file_name": _copy_image(images["fused"], split_dir, f"fused/{stem}")}
            for column in ("ir", "vis"):
                reference = images[column]
                if reference is None:
                    row[f"{column}_file_name"] = None
                elif (pair_id, column) in written_sources:  # validation made sure they are the same image
                    row[f"{column}_file_name"] = written_sources[(pair_id, column)]
                else:
                    source_stem = f"sources/{pair_number:05d}_{_slug(pair_id)}_{column}"
                    written_sources[(pair_id, column)] = row[f"{column}_file_name"] = _copy_image(reference, split_dir, source_stem)
            for column in extras:
                reference = images[column]
                row[f"{column}_file_name"] = None if reference is None else _copy_image(reference, split_dir, f"{column}/{stem}")
            row.update({"pair_id": pair_id, "method": method})
            row.update({column: values[i] for column, values in scores.items()})
            metadata.write(json.dumps(row) + "\n")


def _copy_image(reference: dict, split_dir: Path, stem: str) -> str:
    """Write one stored image under `split_dir/stem.<ext>`; return the relative file name."""
    data, path = reference.get("bytes"), reference.get("path")
    if data is not None:
        extension = _extension_of_bytes(data) or (Path(path).suffix.lower() if path else ".png")
        relative = stem + extension
        (split_dir / relative).write_bytes(data)
    else:
        relative = stem + Path(path).suffix.lower()
        shutil.copyfile(path, split_dir / relative)
    return relative


def _extension_of_bytes(data: bytes) -> str | None:
    import PIL.Image

    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            image_format = image.format
    except Exception:  # validation already reported unreadable images; keep the stored name
        return None
    return {"JPEG": ".jpg", "MPO": ".jpg", "TIFF": ".tif"}.get(image_format, f".{image_format.lower()}") if image_format else None


def _slug(text: str, limit: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))[:limit].strip("._") or "x"


# --------------------------------------------------------------------------------------
# Normalisation and splits
# --------------------------------------------------------------------------------------


def normalize_scores(
    table: datasets.Dataset | datasets.DatasetDict,
    score_range: tuple[float, float] | None = None,
):
    """Map every score to [1, 5]: `x' = 1 + 4 (x - lo) / (hi - lo)`, spreads `* 4 / (hi - lo)`.

    One range serves `mos` and the four sub-scores, since a table has one rating scale
    (DESIGN.md section 2); `mos_std` is scaled, not shifted. Without `score_range` the
    range is the table's observed min and max over those columns, across all splits of a
    `DatasetDict` so that every split is mapped the same way. None stays None. A declared
    range that the data exceed is an error (the declaration is wrong), not clipped.

    Returns the same type as `table`.
    """
    splits = dict(table) if isinstance(table, datasets.DatasetDict) else {"": table}
    if score_range is None:
        low, high = _observed_range(splits.values())
    else:
        low, high = checked_score_range(score_range)
        _check_inside(splits, low, high)
    factor = 4.0 / (high - low)

    mapped = {}
    for name, split in splits.items():
        columns = [c for c in (*SCORE_COLUMNS, *SPREAD_COLUMNS) if c in split.column_names]
        if not columns:
            mapped[name] = split
            continue

        def rescale(*values, columns=columns) -> dict:
            out = {}
            for column, column_values in zip(columns, values):
                shift = 0.0 if column in SPREAD_COLUMNS else 1.0 - low * factor
                out[column] = [None if v is None else shift + float(v) * factor for v in column_values]
            return out

        features = split.features.copy()
        for column in columns:
            features[column] = RATING_FEATURES[column]
        # input_columns: only the scores are read, so images are never decoded.
        mapped[name] = split.map(
            rescale, batched=True, input_columns=columns, features=features, desc="Normalising scores to [1, 5]"
        )
    if isinstance(table, datasets.DatasetDict):
        return datasets.DatasetDict(mapped)
    return mapped[""]


def _observed_range(splits) -> tuple[float, float]:
    values = []
    for split in splits:
        for column in SCORE_COLUMNS:
            if column in split.column_names:
                values += [float(v) for v in split[column] if v is not None and math.isfinite(float(v))]
    if not values:
        raise ValueError("The table has no scores to normalise; declare score_range or add scores.")
    low, high = min(values), max(values)
    if not high > low:
        raise ValueError(
            f"All scores equal {low:g}, so the table's own range is empty; pass score_range=(lo, hi) "
            "with the rating scale's real bounds."
        )
    return low, high


def _check_inside(splits: dict, low: float, high: float) -> None:
    problems = []
    for name, split in splits.items():
        for column in SCORE_COLUMNS:
            if column not in split.column_names:
                continue
            for i, value in enumerate(split[column]):
                if value is not None and not low - 1e-6 <= float(value) <= high + 1e-6:
                    where = f"[{name}] " if name else ""
                    problems.append(f"{where}row {i}: {column}={float(value):g} is outside the declared range [{low:g}, {high:g}]")
    if problems:
        raise TableValidationError(problems)


def split_by_pair(
    table: datasets.Dataset,
    *,
    test_size: float | int = 0.2,
    validation_size: float | int = 0.0,
    seed: int = 0,
) -> datasets.DatasetDict:
    """Split rows by `pair_id` into "train", "validation" (if asked) and "test"; no scene is in two splits.

    Sizes count *source pairs*, not rows: a float in [0, 1) is a fraction of the pairs
    (rounded, at least one pair when > 0), an int is a number of pairs. The pairs are
    shuffled with `numpy.random.default_rng(seed)` after sorting, so the split depends
    only on the set of pair ids and the seed, not on the row order. Rows keep their
    order within each split.
    """
    if "pair_id" not in table.column_names:
        raise ValueError(f"split_by_pair needs a pair_id column (found {table.column_names}).")
    pair_ids = list(table["pair_id"])
    unnamed = [i for i, pair_id in enumerate(pair_ids) if not isinstance(pair_id, str) or not pair_id.strip()]
    if unnamed:
        raise TableValidationError(
            [f"row {i}: pair_id is {pair_ids[i]!r}; every row needs its source pair to be split by" for i in unnamed]
        )
    pairs = sorted(set(pair_ids))
    num_pairs = len(pairs)
    num_test = _count(test_size, num_pairs, "test_size")
    num_validation = _count(validation_size, num_pairs, "validation_size")
    if num_test + num_validation >= num_pairs:
        raise ValueError(
            f"test ({num_test}) + validation ({num_validation}) pairs leave no training pair out of {num_pairs}; "
            "use smaller sizes or a table with more source pairs."
        )
    order = np.random.default_rng(seed).permutation(num_pairs)
    assignment = {}
    for rank, index in enumerate(order):
        if rank < num_test:
            assignment[pairs[index]] = "test"
        elif rank < num_test + num_validation:
            assignment[pairs[index]] = "validation"
        else:
            assignment[pairs[index]] = "train"
    names = ["train"] + (["validation"] if num_validation else []) + (["test"] if num_test else [])
    return datasets.DatasetDict(
        {name: table.select([i for i, p in enumerate(pair_ids) if assignment[p] == name]) for name in names}
    )


def _count(size: float | int, num_pairs: int, name: str) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not math.isfinite(size) or size < 0:
        raise ValueError(f"{name} must be a fraction in [0, 1) or a count of pairs >= 0, got {size!r}.")
    if isinstance(size, int):
        return size
    if size >= 1:
        raise ValueError(f"{name}={size} is a float >= 1; pass an int to give a number of pairs.")
    return max(1, round(size * num_pairs)) if size > 0 else 0
