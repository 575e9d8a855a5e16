"""EVAFusion's published layout, and its conversion to a rating table on the dataset's own scale.

EVAFusion (Liu et al., "Bridging Human Evaluation to Infrared and Visible Image Fusion", CVPR 2026) rates fused
infrared-visible images on five dimensions out of 5. Its public training code reads the data with
`datasets.load_from_disk` (a `DatasetDict` per folder: split "train" in one, "dev" in another); the Hub copy is
`HHOODD/EVAFusion_dataset`. Each row has the image columns `fused`, `infrared`, `visible` and `artifact_heatmap`
(a grey map) and a struct `scores` with the keys in `EVAFUSION_SCORE_KEYS`. Its labels are scores given by a
vision-language model and reviewed by experts, not a crowd's mean opinion score.

No pair or method column appears there, so `evafusion_to_rating_table` derives them: rows whose infrared and
visible images have the same bytes are one source pair, `pair_id` being a digest of those bytes (the same in every
split, process and row order), and `method` is the row's index among its pair's rows in table order.

This module only converts (no validation, no score mapping): `fuscore_data.importers.load_evafusion` is the entry
point for users, and `fuscore_data.tables.load_table` uses `is_evafusion_layout` to read a saved EVAFusion folder.
"""

from __future__ import annotations

import hashlib
import os
import re

import datasets
from datasets.utils import tqdm

from .schema import EXTRA_IMAGE_COLUMNS, RATING_FEATURES, SUB_DIMENSIONS, conform_to_schema
from .validation import TableValidationError


EVAFUSION_HUB_ID = "HHOODD/EVAFusion_dataset"
# Rating-table column <- key of EVAFusion's `scores` struct.
EVAFUSION_SCORE_KEYS = {
    "thermal_retention": "Thermal Retention",
    "texture_preservation": "Texture Preservation",
    "artifacts": "Artifacts",
    "sharpness": "Sharpness",
    "mos": "Overall Score",
}
# Rating-table column <- EVAFusion column.
EVAFUSION_IMAGE_COLUMNS = {"fused": "fused", "ir": "infrared", "vis": "visible"}
EVAFUSION_REQUIRED = ("fused", "infrared", "visible", "scores")
EVAFUSION_SCALE = (1.0, 5.0)
EVAFUSION_DESCRIPTION = (
    "EVAFusion (Liu et al., CVPR 2026): fused infrared-visible images rated out of 5 for thermal retention, texture "
    "preservation, artifacts (their absence), sharpness and overall quality. The labels are scores given by a "
    "vision-language model and reviewed by experts, not a crowd's mean opinion score: `mos` holds the reviewed "
    "overall score. `pair_id` is derived from the bytes of the infrared and visible images (EVAFusion has no pair "
    "column) and `method` is an index within the pair (it has no method column either)."
)
EVAFUSION_CITATION = (
    "@inproceedings{liu2026evafusion,\n"
    "  title={Bridging Human Evaluation to Infrared and Visible Image Fusion},\n"
    "  author={Liu, Jinyuan and Li, Xingyuan and Mei, Qingyun and Xu, Haoyuan and Jiang, Zhiying and Ma, Long and\n"
    "          Liu, Risheng and Fan, Xin},\n"
    "  booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition},\n"
    "  year={2026}\n"
    "}"
)
PAIR_ID_HEX_DIGITS = 16  # 64 bits: a collision among a million pairs has a probability of about 3e-8
_DIGEST_BATCH = 64


def is_evafusion_layout(table: datasets.Dataset | datasets.DatasetDict) -> bool:
    """Whether `table` (or every split of it) has EVAFusion's columns: `fused`, `infrared`, `visible`, `scores`."""
    splits = table.values() if isinstance(table, datasets.DatasetDict) else [table]
    splits = list(splits)
    return bool(splits) and all(set(EVAFUSION_REQUIRED) <= set(split.column_names) for split in splits)


def evafusion_to_rating_table(
    table: datasets.Dataset | datasets.DatasetDict, *, progress: bool = True
) -> datasets.Dataset | datasets.DatasetDict:
    """A table in EVAFusion's layout as a rating table (same type, same splits, scores as stored, not validated).

    `fused` stays, `infrared` and `visible` become `ir` and `vis`, `artifact_heatmap` is kept when present, and the
    `scores` struct becomes `mos` ("Overall Score") and the four sub-dimensions. Image cells are not decoded or
    rewritten (only renamed); their bytes are read once to derive `pair_id`. A `pair_id` or `method` column already
    in the table is used as it is. Pair ids and method indices are computed over all splits together, so one scene
    has one id in every split.

    Raises:
        ValueError: a column is missing, or `scores` is not a struct with "Overall Score".
        TableValidationError: rows whose pair cannot be derived (no source image, a missing file) or whose scores
            are not numbers, each named.
    """
    splits = dict(table) if isinstance(table, datasets.DatasetDict) else {"": table}
    for name, split in splits.items():
        _check_columns(split, name)
    problems: list[str] = []
    pair_ids = {name: _pair_ids(split, name, problems, progress) for name, split in splits.items()}
    scores = {name: _scores(split, name, problems) for name, split in splits.items()}
    if problems:
        raise TableValidationError(problems)
    methods = _methods(splits, pair_ids)
    converted = {}
    for name, split in splits.items():
        out = split.remove_columns([c for c in split.column_names if c not in (*EVAFUSION_IMAGE_COLUMNS.values(), *EXTRA_IMAGE_COLUMNS, "pair_id", "method")])
        out = out.rename_columns({"infrared": "ir", "visible": "vis"})
        for column, values in (("pair_id", pair_ids[name]), ("method", methods[name])):
            if column not in out.column_names:
                out = out.add_column(column, values, feature=RATING_FEATURES[column])
        for column, values in scores[name].items():
            out = out.add_column(column, values, feature=RATING_FEATURES[column])
        out = conform_to_schema(out)
        out.info.description = EVAFUSION_DESCRIPTION
        out.info.citation = EVAFUSION_CITATION
        converted[name] = out
    if isinstance(table, datasets.DatasetDict):
        return datasets.DatasetDict(converted)
    return converted[""]


def _where(split_name: str) -> str:
    return f"[{split_name}] " if split_name else ""


def _check_columns(split: datasets.Dataset, split_name: str) -> None:
    missing = [c for c in EVAFUSION_REQUIRED if c not in split.column_names]
    if missing:
        raise ValueError(
            f"{_where(split_name)}EVAFusion's layout needs the columns {list(EVAFUSION_REQUIRED)}; "
            f"missing {missing} (found {split.column_names})."
        )
    scores = split.features["scores"]
    if not isinstance(scores, dict) or EVAFUSION_SCORE_KEYS["mos"] not in _score_keys(scores):
        raise ValueError(
            f"{_where(split_name)}EVAFusion's `scores` column must be a struct with the keys "
            f"{list(EVAFUSION_SCORE_KEYS.values())} (at least {EVAFUSION_SCORE_KEYS['mos']!r}); it is {scores}."
        )


def _canonical(key: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(key).strip().lower())


def _score_keys(scores_feature: dict) -> dict[str, str]:
    """{published key: the key as this copy spells it}, matching case, spaces, dashes and underscores loosely."""
    spelled = {_canonical(key): key for key in scores_feature}
    return {key: spelled[_canonical(key)] for key in EVAFUSION_SCORE_KEYS.values() if _canonical(key) in spelled}


def _scores(split: datasets.Dataset, split_name: str, problems: list[str]) -> dict[str, list[float | None]]:
    keys = _score_keys(split.features["scores"])
    flat = split.select_columns(["scores"]).flatten()
    out = {}
    for column, published in EVAFUSION_SCORE_KEYS.items():
        if published not in keys:
            out[column] = [None] * len(split)
            continue
        values = []
        for i, value in enumerate(flat[f"scores.{keys[published]}"]):
            if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                values.append(None if value is None else float(value))
            else:
                problems.append(f"{_where(split_name)}row {i}: scores[{published!r}] is {value!r}, not a number")
                values.append(None)
        out[column] = values
    return out


def _pair_ids(split: datasets.Dataset, split_name: str, problems: list[str], progress: bool) -> list[str | None]:
    if "pair_id" in split.column_names:
        return list(split["pair_id"])
    sources = split.select_columns(["infrared", "visible"])
    for column in ("infrared", "visible"):
        if isinstance(sources.features[column], datasets.Image):
            sources = sources.cast_column(column, datasets.Image(decode=False))
    pair_ids: list[str | None] = []
    bar = tqdm(total=len(split), desc=f"Identifying source pairs{' of ' + split_name if split_name else ''}",
               unit="row", disable=not progress)
    for batch in sources.iter(batch_size=_DIGEST_BATCH):
        for infrared, visible in zip(batch["infrared"], batch["visible"]):
            i = len(pair_ids)
            digest, problem = _pair_digest(infrared, visible)
            if problem:
                problems.append(f"{_where(split_name)}row {i}: {problem}")
            pair_ids.append(digest)
        bar.update(len(batch["infrared"]))
    bar.close()
    return pair_ids


def _pair_digest(infrared, visible) -> tuple[str | None, str | None]:
    """sha256 over both sources' encoded bytes, each length-prefixed (so no two pairs share a byte stream)."""
    hasher = hashlib.sha256()
    present = False
    for name, cell in (("infrared", infrared), ("visible", visible)):
        data, problem = _encoded_bytes(cell)
        if problem:
            return None, f"{name} image: {problem}"
        if data is None:
            hasher.update(b"-")
            continue
        present = True
        hasher.update(len(data).to_bytes(8, "big"))
        hasher.update(data)
    if not present:
        return None, "no infrared or visible image, so its source pair cannot be told"
    return hasher.hexdigest()[:PAIR_ID_HEX_DIGITS], None


def _encoded_bytes(cell) -> tuple[bytes | None, str | None]:
    if cell is None:
        return None, None
    if isinstance(cell, (str, os.PathLike)):
        cell = {"path": str(cell), "bytes": None}
    if not isinstance(cell, dict):
        return None, f"a {type(cell).__name__}, not an encoded image"
    if cell.get("bytes") is not None:
        return cell["bytes"], None
    path = cell.get("path")
    if not path or not os.path.isfile(path):
        return None, f"'{path}' does not exist"
    with open(path, "rb") as handle:
        return handle.read(), None


def _methods(splits: dict[str, datasets.Dataset], pair_ids: dict[str, list]) -> dict[str, list[str]]:
    counts: dict[str, int] = {}
    methods = {}
    for name, split in splits.items():
        if "method" in split.column_names:
            methods[name] = list(split["method"])
            continue
        methods[name] = []
        for pair_id in pair_ids[name]:
            index = counts.get(pair_id, 0)
            counts[pair_id] = index + 1
            methods[name].append(f"fused-{index}")
    return methods
