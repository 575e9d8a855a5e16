"""Importers for public IVIF layouts: VIFB (unlabelled) and EVAFusion (rated).

Both return a `datasets.Dataset` with the rating schema whose image cells are *paths* to
the original files: nothing is copied (VIFB images must never be committed into the
project; save a table with `fuscore_data.tables` only where you may store the images).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import datasets

from .schema import RATING_FEATURES, SUB_DIMENSIONS
from .tables import normalize_scores
from .validation import validate_table


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
    with open(manifest, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        expected = {"pair", "method", "fused", "ir", "vis"}
        if not expected <= set(reader.fieldnames or ()):
            raise ValueError(f"'{manifest}' needs the columns {sorted(expected)}, found {reader.fieldnames}.")
        rows = list(reader)
    columns = {name: [] for name in RATING_FEATURES}
    for row in rows:
        for image_column in ("fused", "ir", "vis"):
            columns[image_column].append(str(vifb_dir / row[image_column]))
        columns["pair_id"].append(row["pair"])
        columns["method"].append(row["method"])
        for score_column in ("mos", "mos_std", *SUB_DIMENSIONS):
            columns[score_column].append(None)
    info = datasets.DatasetInfo(
        description=VIFB_DESCRIPTION, citation=VIFB_CITATION, license="other", features=RATING_FEATURES
    )
    table = datasets.Dataset.from_dict(columns, info=info)
    validate_table(table, require_mos=False, check_images=check_images)
    return table


# --------------------------------------------------------------------------------------
# EVAFusion
# --------------------------------------------------------------------------------------

# Accepted spellings of each column, after lower-casing and turning runs of spaces,
# dashes and underscores into "_" (so "Thermal Retention" matches "thermal_retention").
EVAFUSION_ALIASES = {
    "fused": ("fused", "fused_image", "fused_file_name", "image", "file_name"),
    "ir": ("ir", "infrared", "ir_image", "ir_file_name"),
    "vis": ("vis", "vi", "visible", "vis_image", "vis_file_name"),
    "pair_id": ("pair_id", "pair", "scene", "source", "source_pair"),
    "method": ("method", "fusion_method", "model"),
    "mos": ("overall_score", "overall", "mos", "score"),
    "mos_std": ("overall_std", "overall_score_std", "mos_std", "std"),
    "thermal_retention": ("thermal_retention",),
    "texture_preservation": ("texture_preservation",),
    "artifacts": ("artifacts", "artifact"),
    "sharpness": ("sharpness",),
}
EVAFUSION_FOLDERS = {"fused": ("fused",), "ir": ("ir", "infrared"), "vis": ("vi", "vis", "visible")}


def load_evafusion(
    root: str | os.PathLike,
    csv_path: str | os.PathLike | None = None,
    *,
    score_range: tuple[float, float] = (1.0, 5.0),
    check_images: bool = True,
) -> datasets.Dataset:
    """Read an EVAFusion-style rated folder into a rating table with scores on [1, 5].

    No copy of EVAFusion is available here, so this is the layout we accept (the one of
    the EVAFusion code: `fused/`, `ir/`, `vi/` folders with matching file names, and
    scores out of 5 for "Thermal Retention", "Texture Preservation", "Artifacts",
    "Sharpness" and "Overall Score")::

        root/fused/<name>.png   root/ir/<name>.png   root/vi/<name>.png
        root/<scores>.csv       (`csv_path`, default: the only .csv file in `root`)

    CSV columns, matched case-insensitively with spaces, dashes and underscores alike
    (see `EVAFUSION_ALIASES` for the accepted spellings):

    * `fused` (required): the fused file, relative to `root` or to `root/fused/`;
    * `ir`, `vis` (optional): the sources, relative to `root` or their folder (`ir/` or
      `infrared/`; `vi/`, `vis/` or `visible/`); default: the fused file's name in them;
    * `pair_id` (optional): default the infrared file's stem;
    * `method` (optional): default the fused file's stem;
    * `overall_score` (required, -> `mos`), `overall_std` (optional, -> `mos_std`);
    * `thermal_retention`, `texture_preservation`, `artifacts`, `sharpness` (optional;
      higher is better, "artifacts" rating their absence as in EVAFusion).

    Scores are mapped from `score_range` (the scale's bounds) to [1, 5]; a value outside
    it is an error naming the row. The table is validated (files exist and, with
    `check_images`, decode; no duplicates; consistent sources per pair).
    """
    root = Path(root)
    csv_path = Path(csv_path) if csv_path is not None else _only_csv(root)
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = {_canonical(name): name for name in reader.fieldnames or ()}
        rows = list(reader)
    found = {}
    for column, aliases in EVAFUSION_ALIASES.items():
        match = next((header[a] for a in aliases if a in header), None)
        if match is not None:
            found[column] = match
    for required in ("fused", "mos"):
        if required not in found:
            raise ValueError(
                f"'{csv_path}' has no {required} column; accepted names: {list(EVAFUSION_ALIASES[required])} "
                f"(found {list(header.values())})."
            )

    columns = {name: [] for name in RATING_FEATURES}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        fused = _resolve(root, row[found["fused"]], EVAFUSION_FOLDERS["fused"])
        columns["fused"].append(str(fused))
        sources = {}
        for column in ("ir", "vis"):
            given = row[found[column]] if column in found and row[found[column]] else fused.name
            sources[column] = _resolve(root, given, EVAFUSION_FOLDERS[column])
            columns[column].append(str(sources[column]))
        columns["pair_id"].append(row[found["pair_id"]] if "pair_id" in found else sources["ir"].stem)
        columns["method"].append(row[found["method"]] if "method" in found else fused.stem)
        for column in ("mos", "mos_std", *SUB_DIMENSIONS):
            columns[column].append(_number(row[found[column]], csv_path, line, column) if column in found else None)
    info = datasets.DatasetInfo(
        description=f"Rated IVIF table imported from EVAFusion-style folder '{root.name}'.", features=RATING_FEATURES
    )
    table = datasets.Dataset.from_dict(columns, info=info)
    validate_table(table, score_range=score_range, check_images=check_images)
    return normalize_scores(table, score_range)


def from_evafusion_records(dataset: datasets.Dataset, *, score_range: tuple[float, float] = (1.0, 5.0)) -> datasets.Dataset:
    """Convert a `datasets` table in the EVAFusion code's own format to the rating schema.

    That format has image columns `fused`, `infrared`, `visible` and a `scores` struct with
    "Thermal Retention", "Texture Preservation", "Artifacts", "Sharpness" and
    "Overall Score" (out of 5). It has no pair or method: `pair_id` is the row index as a
    string (each row its own pair, since nothing says which rows share sources) and
    `method` is "unknown". Scores are mapped from `score_range` to [1, 5].
    """
    needed = {"fused", "infrared", "visible", "scores"}
    if not needed <= set(dataset.column_names):
        raise ValueError(f"An EVAFusion record table needs the columns {sorted(needed)}, found {dataset.column_names}.")
    names = {_canonical(k): k for k in dataset.features["scores"]}

    def convert(batch, indices):
        out = {"ir": batch["infrared"], "vis": batch["visible"], "pair_id": [str(i) for i in indices]}
        out["method"] = ["unknown"] * len(indices)
        for column, aliases in (("mos", ("overall_score",)), *((s, (s,)) for s in SUB_DIMENSIONS)):
            key = next((names[a] for a in aliases if a in names), None)
            out[column] = [None if key is None or s is None else s.get(key) for s in batch["scores"]]
        out["mos_std"] = [None] * len(indices)
        return out

    converted = dataset.map(
        convert,
        batched=True,
        with_indices=True,
        remove_columns=[c for c in dataset.column_names if c != "fused"],
        features=datasets.Features({"fused": dataset.features["fused"], **{k: v for k, v in RATING_FEATURES.items() if k != "fused"}}),
        desc="Converting EVAFusion records",
    )
    converted = converted.cast(RATING_FEATURES).select_columns(list(RATING_FEATURES))
    return normalize_scores(converted, score_range)


def _canonical(name: str) -> str:
    return re.sub(r"[\s_\-]+", "_", name.strip().lower()).strip("_")


def _only_csv(root: Path) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"No EVAFusion folder at '{root}'.")
    candidates = sorted(root.glob("*.csv"))
    if len(candidates) != 1:
        raise ValueError(
            f"Expected exactly one .csv score file in '{root}', found {[c.name for c in candidates]}; pass csv_path=."
        )
    return candidates[0]


def _resolve(root: Path, name: str, folders: tuple[str, ...]) -> Path:
    """`root/name` if it exists, else `root/<folder>/name` for the first folder holding it."""
    direct = root / name
    if direct.is_file():
        return direct
    for folder in folders:
        candidate = root / folder / name
        if candidate.is_file():
            return candidate
    # Missing: report the most likely place; validation names the row.
    return root / folders[0] / name


def _number(text: str, csv_path: Path, line: int, column: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"'{csv_path}' line {line}: {column} value {text!r} is not a number.") from None
