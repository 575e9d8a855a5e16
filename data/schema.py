"""The rating-table schema: one row per fused image (DESIGN.md section 2).

Every table the project reads or writes has these columns, in this order:

| column | feature | notes |
|---|---|---|
| `fused`, `ir`, `vis` | `datasets.Image()` | `ir` / `vis` may be None (sources are optional for scoring) |
| `pair_id` | string | the source pair (scene); splits never share a `pair_id` |
| `method` | string | the fusion method; unique within a `pair_id` |
| `mos` | float32 | overall mean opinion score; None in unlabelled tables (e.g. VIFB) |
| `mos_std` | float32 | spread of the raters' overall scores, may be None |
| `thermal_retention`, `texture_preservation`, `artifacts`, `sharpness` | float32 | sub-scores, may be None |

Higher is better for every score ("artifacts" rates their *absence*).

Optional extra columns (`EXTRA_FEATURES`) follow those, kept where a table has them and never added:

| column | feature | notes |
|---|---|---|
| `artifact_heatmap` | `datasets.Image()` | grey map of where the fused image shows artifacts (255 / white: artifact), as EVAFusion ships and the synthetic benchmark makes with `local_artifacts=True`; may be None (no map known; an all-black map says "no artifact") |
"""

from __future__ import annotations

import datasets
from configuration_fuscore import SUB_DIMENSIONS  # the one definition, shared with the model


IMAGE_COLUMNS = ("fused", "ir", "vis")
SOURCE_COLUMNS = ("ir", "vis")
# Columns on the table's score scale: normalisation maps all of them with one range.
SCORE_COLUMNS = ("mos", *SUB_DIMENSIONS)
# `mos_std` is a spread, not a score: it is scaled, never shifted.
SPREAD_COLUMNS = ("mos_std",)
OPTIONAL_COLUMNS = ("ir", "vis", "mos_std", *SUB_DIMENSIONS)
REQUIRED_COLUMNS = ("fused", "pair_id", "method", "mos")

RATING_FEATURES = datasets.Features(
    {
        "fused": datasets.Image(),
        "ir": datasets.Image(),
        "vis": datasets.Image(),
        "pair_id": datasets.Value("string"),
        "method": datasets.Value("string"),
        "mos": datasets.Value("float32"),
        "mos_std": datasets.Value("float32"),
        "thermal_retention": datasets.Value("float32"),
        "texture_preservation": datasets.Value("float32"),
        "artifacts": datasets.Value("float32"),
        "sharpness": datasets.Value("float32"),
    }
)
COLUMN_NAMES = tuple(RATING_FEATURES)
# Kept, after the schema's columns, by `conform_to_schema` when a table has them; never added to one that does not.
EXTRA_FEATURES = datasets.Features({"artifact_heatmap": datasets.Image()})
EXTRA_IMAGE_COLUMNS = tuple(name for name, feature in EXTRA_FEATURES.items() if isinstance(feature, datasets.Image))


def table_features(dataset: datasets.Dataset) -> datasets.Features:
    """The features `conform_to_schema` gives `dataset`: `RATING_FEATURES` plus the extra columns it has."""
    return datasets.Features(
        {**RATING_FEATURES, **{name: feature for name, feature in EXTRA_FEATURES.items() if name in dataset.column_names}}
    )


def conform_to_schema(dataset: datasets.Dataset) -> datasets.Dataset:
    """Return `dataset` with exactly the schema's columns, order and features.

    Absent optional columns (and an absent `mos`, for unlabelled tables) are added as
    None; the extra columns of `EXTRA_FEATURES` are kept after them where present; other
    columns are dropped, since the trainer and the writer rely on the fixed set. Image
    columns keep their storage (paths stay paths, bytes stay bytes) and are never decoded.

    Raises:
        ValueError: `fused`, `pair_id` or `method` is missing, or an extra column is not an image column.
    """
    missing = [name for name in ("fused", "pair_id", "method") if name not in dataset.column_names]
    if missing:
        hint = ""
        if "fused" in missing and "image" in dataset.column_names:
            hint = (" An image folder's `file_name` column is read as `image`: name the fused image's column "
                    "`fused_file_name` (and the sources' `ir_file_name`, `vis_file_name`).")
        raise ValueError(
            f"The table has no column(s) {missing}; a rating table needs {list(REQUIRED_COLUMNS)} "
            f"(found {dataset.column_names}).{hint}"
        )
    for name in EXTRA_IMAGE_COLUMNS:
        if name in dataset.column_names and not isinstance(dataset.features[name], datasets.Image):
            raise ValueError(f"The table's {name} column holds {dataset.features[name]}, not images.")
    features = table_features(dataset)
    extra = [name for name in dataset.column_names if name not in features]
    if extra:
        dataset = dataset.remove_columns(extra)
    for name in COLUMN_NAMES:
        if name not in dataset.column_names:
            dataset = dataset.add_column(name, [None] * len(dataset), feature=RATING_FEATURES[name])
    dataset = dataset.select_columns(list(features))
    for name, feature in features.items():
        # An image column cast to another image feature (e.g. `Image(mode="L")` to `Image()`) is a cheap schema
        # change; `cast` would rewrite every row, images included.
        if isinstance(feature, datasets.Image) and isinstance(dataset.features[name], datasets.Image):
            if dataset.features[name] != feature:
                dataset = dataset.cast_column(name, feature)
    if dataset.features != features:
        dataset = dataset.cast(features)
    return dataset


def conform_dict_to_schema(table: datasets.Dataset | datasets.DatasetDict):
    """`conform_to_schema` for a `Dataset` or every split of a `DatasetDict`."""
    if isinstance(table, datasets.DatasetDict):
        return datasets.DatasetDict({split: conform_to_schema(ds) for split, ds in table.items()})
    return conform_to_schema(table)
