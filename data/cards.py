"""Dataset cards (README.md with a Hub YAML header) for every rating table FuScore writes.

`write_dataset_card` is called by the writers in `fuscore_data.tables`; call it yourself
only for a table you save some other way.
"""

from __future__ import annotations

import math
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard, DatasetCardData


# Tables made by `SyntheticIVIF.table` carry this sentence in `info.description`; a card
# written for such a table (or with `synthetic=True`) opens with it.
SYNTHETIC_STATEMENT = (
    "**This dataset is synthetic.** Its images were generated procedurally by FuScore's "
    "`fuscore_data.synthetic` module, and its scores (`mos`, `mos_std` and the four "
    "sub-scores) are constructed by the generator: truth by construction plus simulated "
    "rater noise, NOT ratings given by human observers."
)
# Licenses that are not Hub license ids: the card says `license: other` with this name and link (the Hub asks for
# both). A table's `info.license` holds the name.
OTHER_LICENSES = {
    "vifb-research-use": "https://github.com/xingchenzhang/VIFB",
}
# A card written with `synthetic=True` for a table whose images FuScore did not generate (real images, such as VIFB's,
# with constructed scores) opens with this instead: it says what is synthetic (the labels), and where the images come
# from only as far as the caller or the table's description says.
SYNTHETIC_LABELS_STATEMENT = (
    "**The labels of this dataset are synthetic.** Its scores (`mos`, `mos_std` and the four sub-scores) were "
    "constructed, NOT given by human observers."
)
UNKNOWN_IMAGE_SOURCE = "This table does not record where its images come from."
BASE_TAGS = ("image-quality-assessment", "image-fusion", "infrared", "visible", "fuscore")

COLUMN_MEANINGS = {
    "fused": "the fused image",
    "ir": "its infrared source",
    "vis": "its visible source",
    "pair_id": "the source pair (scene) the fused image was made from; splits never share one",
    "method": "the fusion method (and, in synthetic tables, its degradations)",
    "mos": "overall quality score (higher is better): a mean opinion score, or what the description says it is",
    "mos_std": "spread of the raters' overall scores",
    "thermal_retention": "sub-score: are the warm targets of the infrared source kept?",
    "texture_preservation": "sub-score: is the visible source's texture kept?",
    "artifacts": "sub-score: absence of artifacts (noise, blocking, halos); higher is cleaner",
    "sharpness": "sub-score: how sharp the fused image is",
    "artifact_heatmap": "grey map of where the fused image shows artifacts (EVAFusion's layout)",
}


def size_category(num_rows: int) -> str:
    """The Hub's `size_categories` bucket for `num_rows` rows."""
    if num_rows < 1000:
        return "n<1K"
    buckets = ["1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T"]
    exponent = min(int(math.log10(num_rows)) - 3, len(buckets) - 2)
    return f"{buckets[exponent]}<n<{buckets[exponent + 1]}"


def write_dataset_card(
    dataset: datasets.Dataset | datasets.DatasetDict,
    path: str | Path,
    *,
    pretty_name: str | None = None,
    license: str | None = None,
    license_link: str | None = None,
    synthetic: bool | None = None,
    description: str | None = None,
    citation: str | None = None,
    tags: tuple[str, ...] = (),
    configs: list[dict] | None = None,
    image_source: str | None = None,
) -> Path:
    """Write a dataset card for a rating table and return its path.

    Args:
        dataset: the table (a `Dataset`, or a `DatasetDict` of splits).
        path: a directory (the card goes to `README.md` inside) or a `.md` file path.
        pretty_name: the card's title; default "FuScore rating table".
        license: a Hub license id, or the name of another license (one of `OTHER_LICENSES`, or with
            `license_link`); default the table's `info.license`. A card never says `other` without the license's
            name and link: a table with no known license gets no license field.
        license_link: where the terms of a license that is not a Hub id are (default from `OTHER_LICENSES`).
        synthetic: whether to state that the labels are synthetic, not human ratings;
            default: the table's description contains `SYNTHETIC_STATEMENT`. For a table made
            by `fuscore_data.synthetic` (its description holds that statement) the card says
            images and labels were generated; for any other table it says the labels are
            synthetic and where the images come from as far as `image_source` or the
            description says, never that FuScore generated them.
        image_source: where the images come from (e.g. "VIFB's source pairs and fused
            results"), stated beside a synthetic-labels statement.
        description: free text under the title; default the table's `info.description`.
        citation: BibTeX or text; default the table's `info.citation`.
        tags: extra Hub tags ("synthetic" is added for synthetic tables).
        configs: the Hub `configs` entry telling `load_dataset(dir)` where each split's
            files are (the imagefolder writer passes it).
    """
    splits = dict(dataset) if isinstance(dataset, datasets.DatasetDict) else {"train": dataset}
    first = next(iter(splits.values()), None)
    info = first.info if first is not None else datasets.DatasetInfo()
    description = description if description is not None else (info.description or "")
    license_fields = _license_fields(license or info.license, license_link)
    citation = citation if citation is not None else (info.citation or "")
    if synthetic is None:
        synthetic = SYNTHETIC_STATEMENT in description
    pretty_name = pretty_name or "FuScore rating table"
    all_tags = [*BASE_TAGS, *(["synthetic"] if synthetic else []), *tags]

    card_data = DatasetCardData(
        **license_fields,
        pretty_name=pretty_name,
        task_categories=["visual-question-answering"],
        tags=list(dict.fromkeys(all_tags)),
        size_categories=[size_category(sum(len(split) for split in splits.values()))],
        **({"configs": configs} if configs else {}),
    )
    lines = [f"# {pretty_name}", ""]
    if synthetic and SYNTHETIC_STATEMENT in description:
        lines += [f"> {SYNTHETIC_STATEMENT}", ""]
    elif synthetic:
        images = (f"Its images: {image_source.strip().rstrip('.')}." if image_source else
                  "Where its images come from: see the description below." if description.strip() else
                  UNKNOWN_IMAGE_SOURCE)
        lines += [f"> {SYNTHETIC_LABELS_STATEMENT} {images}", ""]
    if description:
        # The statement is already quoted above; keep the rest of the description.
        lines += [description.replace(SYNTHETIC_STATEMENT, "").strip(), ""]
    lines += _contents_section(splits) + _columns_section(splits)
    lines += [
        "## Loading",
        "",
        "```python",
        "from fuscore_data.tables import load_table",
        "",
        'table = load_table("path/to/this/folder")  # a DatasetDict, or a Dataset for a single table',
        "```",
        "",
        "An image-folder copy also loads with `datasets.load_dataset(\"imagefolder\", data_dir=...)`.",
        "",
    ]
    if citation:
        lines += ["## Citation", "", "```", citation.strip(), "```", ""]

    card = DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines))
    path = Path(path)
    if path.suffix.lower() != ".md":
        path = path / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path


def _license_fields(license: str | None, license_link: str | None) -> dict:
    """The card's `license` fields: a Hub id as it is; another license as `other` with its name and link."""
    link = license_link or OTHER_LICENSES.get(license or "")
    if link:
        if not license or license == "other":
            raise ValueError("A license_link needs the license's name: pass license='<name>' with it.")
        return {"license": "other", "license_name": license, "license_link": link}
    if not license or license == "other":
        return {}  # no license known: the card claims none rather than an unnamed "other"
    return {"license": license}


def features_to_card_yaml(features: datasets.Features) -> list:
    """`features` as a card's YAML lists them (the `dataset_info.features` form `datasets` writes and reads)."""
    card_data = DatasetCardData()
    datasets.info.DatasetInfosDict({"default": datasets.DatasetInfo(features=features)}).to_dataset_card_data(card_data)
    return card_data["dataset_info"]["features"]


def _contents_section(splits: dict[str, datasets.Dataset]) -> list[str]:
    lines = ["## Contents", "", "| split | rows | source pairs | rows with `mos` | `mos` range |", "|---|---|---|---|---|"]
    for name, split in splits.items():
        pairs = len(set(split["pair_id"])) if "pair_id" in split.column_names else 0
        scores = [x for x in split["mos"] if x is not None] if "mos" in split.column_names else []
        score_range = f"{min(scores):.2f} - {max(scores):.2f}" if scores else "unlabelled"
        lines.append(f"| {name} | {len(split)} | {pairs} | {len(scores)} | {score_range} |")
    return lines + [""]


def _columns_section(splits: dict[str, datasets.Dataset]) -> list[str]:
    lines = ["## Columns", "", "| column | type | meaning |", "|---|---|---|"]
    first = next(iter(splits.values()), None)
    if first is None:
        return []
    for name, feature in first.features.items():
        kind = "image" if isinstance(feature, datasets.Image) else getattr(feature, "dtype", type(feature).__name__)
        lines.append(f"| `{name}` | {kind} | {COLUMN_MEANINGS.get(name, '')} |")
    return lines + ["", "Higher is better for every score. Scores are on the table's own scale (see the `mos` range above); "
        "`fuscore_data.tables.normalize_scores` maps them to [1, 5].", ""]


def has_synthetic_labels(folder: str | Path) -> bool:
    """Whether a saved rating table (a `save_imagefolder` or `save_arrow` folder) says its labels are synthetic: its
    card carries the `synthetic` tag, or its stored description one of the synthetic statements. A name that is no
    folder (a Hub dataset id) is read as not saying so."""
    import json

    import yaml

    folder = Path(folder)
    card = folder / "README.md"
    if card.is_file():
        try:
            tags = DatasetCard.load(card).data.to_dict().get("tags") or []
        except (ValueError, OSError, yaml.YAMLError):  # an unreadable card says nothing; the descriptions may
            tags = []
        if "synthetic" in tags:
            return True
    for info in [folder / "dataset_info.json", *folder.glob("*/dataset_info.json")]:
        try:
            description = json.loads(info.read_text()).get("description") or ""
        except (OSError, ValueError):
            continue
        if SYNTHETIC_STATEMENT in description or SYNTHETIC_LABELS_STATEMENT in description:
            return True
    return False

