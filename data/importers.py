"""Importers for public IVIF layouts: VIFB (unlabelled) and EVAFusion (rated by a VLM, reviewed by experts).

Both return validated rating tables whose image cells stay as the source stores them: VIFB's
are *paths* to the original files and EVAFusion's the cells of its own dataset (bytes or
paths), nothing is copied or re-encoded (VIFB images must never be committed into the
project; save a table with `fuscore_data.tables` only where you may store the images).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import datasets

from .evafusion import EVAFUSION_REQUIRED, EVAFUSION_SCALE, evafusion_to_rating_table, is_evafusion_layout
from .schema import RATING_FEATURES, SUB_DIMENSIONS
from .tables import normalize_scores
from .validation import TableValidationError, validate_table


# --------------------------------------------------------------------------------------
# VIFB
# --------------------------------------------------------------------------------------

VIFB_ENV_VAR = "FUSCORE_VIFB_DIR"
VIFB_MANIFEST = "manifest.csv"
VIFB_CITATION = (
    "@inproceedings{zhang2020vifb,\n"
    "  title={VIFB: A Visible and Infrared Image Fusion Benchmark},\n"
    "  author={Zhang, Xingchen and Ye, Ping and Xiao, Gang},\n"
    "  booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition Workshops},\n"
    "  year={2020}\n"
    "}"
)
# The card names it with its link (`fuscore_data.cards.OTHER_LICENSES`): the VIFB authors' research-use terms.
VIFB_LICENSE = "vifb-research-use"
VIFB_DESCRIPTION = (
    "VIFB (Zhang, Ye and Xiao, CVPR Workshops 2020): registered infrared/visible source pairs "
    "and the fused results of classic and learned fusion methods. It carries NO human "
    "ratings: `mos` and the sub-scores are empty; use it to score and rank fusion methods. "
    "Research-use images gathered by the VIFB authors from public IVIF datasets; cite VIFB."
)


def default_vifb_dir() -> Path:
    """Where VIFB is looked for: `$FUSCORE_VIFB_DIR`, else `<repo>/../shared/data/vifb`.

    `<repo>` is the folder that holds this package's `data/` directory (an editable
    install, the normal setup); set the environment variable for any other layout.
    """
    if os.environ.get(VIFB_ENV_VAR):
        return Path(os.environ[VIFB_ENV_VAR])
    repo = Path(__file__).resolve().parent.parent
    return (repo.parent / "shared" / "data" / "vifb").resolve()


def load_vifb(vifb_dir: str | os.PathLike | None = None, *, check_images: bool = False) -> datasets.Dataset:
    """Read VIFB's `manifest.csv` into an unlabelled rating table (all scores None).

    The manifest has the columns `pair, method, fused, ir, vis`, paths relative to the
    VIFB folder; `pair` becomes `pair_id`. Every file's existence is checked (and, with
    `check_images`, that it decodes); problems are raised together as a
    `TableValidationError`.
    """
    vifb_dir = Path(vifb_dir) if vifb_dir is not None else default_vifb_dir()
    manifest = vifb_dir / VIFB_MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(
            f"No VIFB manifest at '{manifest}'. Pass vifb_dir= or set ${VIFB_ENV_VAR} to the folder "
            f"holding {VIFB_MANIFEST} (columns pair, method, fused, ir, vis)."
        )
    with open(manifest, newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
        reader = csv.DictReader(handle)
        expected = ("pair", "method", "fused", "ir", "vis")
        if not set(expected) <= set(reader.fieldnames or ()):
            raise ValueError(f"'{manifest}' needs the columns {list(expected)}, found {reader.fieldnames}.")
        rows, short = [], []
        for row in reader:
            if any(not row.get(name) for name in expected):
                short.append(f"'{manifest}' line {reader.line_num}: no {[n for n in expected if not row.get(n)]}")
            rows.append(row)
    if short:
        raise TableValidationError(short)
    columns = {name: [] for name in RATING_FEATURES}
    for row in rows:
        for image_column in ("fused", "ir", "vis"):
            columns[image_column].append(str(vifb_dir / row[image_column]))
        columns["pair_id"].append(row["pair"])
        columns["method"].append(row["method"])
        for score_column in ("mos", "mos_std", *SUB_DIMENSIONS):
            columns[score_column].append(None)
    info = datasets.DatasetInfo(
        description=VIFB_DESCRIPTION, citation=VIFB_CITATION, license=VIFB_LICENSE, features=RATING_FEATURES
    )
    table = datasets.Dataset.from_dict(columns, info=info)
    validate_table(table, require_mos=False, check_images=check_images)
    return table


# --------------------------------------------------------------------------------------
# EVAFusion
# --------------------------------------------------------------------------------------


def load_evafusion(
    source: str | os.PathLike | datasets.Dataset | datasets.DatasetDict,
    *,
    score_range: tuple[float, float] | None = EVAFUSION_SCALE,
    split: str | None = None,
    merge_splits: bool = False,
    check_images: bool = True,
    progress: bool = True,
    **load_dataset_kwargs,
) -> datasets.Dataset | datasets.DatasetDict:
    """EVAFusion, as it is published, as a validated rating table with scores on [1, 5].

    EVAFusion's labels are scores given by a vision-language model and reviewed by experts (not a crowd's mean
    opinion score); see `fuscore_data.evafusion` for the layout and how `pair_id` and `method` are derived.

    Args:
        source: a `save_to_disk` folder (what EVAFusion's own training code reads with `load_from_disk`), anything
            `datasets.load_dataset` takes (the Hub id `fuscore_data.evafusion.EVAFUSION_HUB_ID` where the network
            allows it, a local data folder), or a `datasets.Dataset` / `DatasetDict` in that layout.
        score_range: the scale the scores are on (published: out of 5, taken as [1, 5]); they are mapped from it
            to [1, 5]. A value outside it is an error naming the row. None: the table's own min and max.
        split: return only this split (for `load_dataset`, passed on to it).
        merge_splits: return one `Dataset` holding every split's rows, in split order (then make scene-disjoint
            splits with `fuscore_data.tables.split_by_pair`); by default a `DatasetDict` stays one, and splits
            that share a source pair are an error.
        check_images: decode every image once to check it (otherwise files are only checked to exist).
        progress: show progress bars.
        **load_dataset_kwargs: passed to `datasets.load_dataset` (e.g. `cache_dir`, `revision`).

    Returns:
        A `Dataset` (a `Dataset` source, `split`, or `merge_splits`) or a `DatasetDict` with the rating schema plus
        `artifact_heatmap` where the source has it; `mos` is the overall score, images stay `datasets.Image`
        cells (never decoded or re-encoded here except to check them).

    Raises:
        TableValidationError: every problem found (scores outside `score_range`, missing or broken images,
            duplicates, splits sharing a scene), each naming its row.
    """
    table = _evafusion_source(source, split, load_dataset_kwargs)
    if not is_evafusion_layout(table):
        splits = dict(table) if isinstance(table, datasets.DatasetDict) else {"": table}
        name, split = next((n, t) for n, t in splits.items() if not is_evafusion_layout(t))
        missing = [column for column in EVAFUSION_REQUIRED if column not in split.column_names]
        raise ValueError(
            f"{_describe_source(source)}{f' (split {name!r})' if name else ''} is not in EVAFusion's layout: it needs "
            f"the columns {list(EVAFUSION_REQUIRED)}; missing {missing} (found {split.column_names})."
        )
    table = evafusion_to_rating_table(table, progress=progress)
    if merge_splits and isinstance(table, datasets.DatasetDict):
        info = next(iter(table.values())).info
        table = datasets.concatenate_datasets(list(table.values()), info=info)
    try:
        validate_table(table, score_range=score_range, check_images=check_images)
    except TableValidationError as error:
        hint = None
        if score_range is not None and any("outside the declared score range" in p for p in error.problems):
            low, high = score_range
            hint = (
                f"EVAFusion's scores are out of 5 and were read as [{low:g}, {high:g}]; if this copy's scale starts "
                "at 0, pass score_range=(0, 5)."
            )
        elif isinstance(table, datasets.DatasetDict) and any("splits must not share a scene" in p for p in error.problems):
            hint = "To use this copy anyway, pass merge_splits=True and re-split it with fuscore_data.tables.split_by_pair."
        if hint is None:
            raise
        raise TableValidationError(error.problems, hint=hint) from None
    return normalize_scores(table, score_range)


def _evafusion_source(source, split, load_dataset_kwargs):
    if isinstance(source, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise TypeError("load_evafusion needs a map-style Dataset or DatasetDict (pairs are found over all rows), "
                        "not a streaming one; load it without streaming=True.")
    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        if load_dataset_kwargs:
            raise TypeError(f"{sorted(load_dataset_kwargs)} are datasets.load_dataset arguments; source is already a dataset.")
        table = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            if load_dataset_kwargs:
                raise TypeError(f"{sorted(load_dataset_kwargs)} are datasets.load_dataset arguments; '{path}' is a "
                                "save_to_disk folder, read with datasets.load_from_disk.")
            table = datasets.load_from_disk(str(path))
        else:
            return datasets.load_dataset(str(source), split=split, **load_dataset_kwargs)
    else:
        raise TypeError(f"source must be a folder, a dataset id or a datasets.Dataset/DatasetDict, not {type(source).__name__}.")
    if split is None:
        return table
    if not isinstance(table, datasets.DatasetDict):
        raise ValueError(f"{_describe_source(source)} holds a single table without splits; call without split=.")
    if split not in table:
        raise KeyError(f"{_describe_source(source)} has no split {split!r}; it has {list(table)}.")
    return table[split]


def _describe_source(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"'{source}'"
    return f"the given {type(source).__name__}"
