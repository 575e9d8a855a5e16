# Copyright 2026 The FuScore authors. Apache-2.0.
"""What FuScore scores: item sources and input readers, shared by the scoring job and the ranking.

    open_source(["images/"], ir="ir/", vis="vis/")   # image files and folders, a manifest CSV, a dataset
    read_manifest("manifest.csv")                    # the benchmark of `fuscore rank`
    read_method_folders("fused/")                    # FOLDER/<method>/<pair>.<ext>

An `ItemSource` lists a job's items (`JobItem`: a stable key, the fused image and its infrared and visible sources,
what an error names, the output columns) in input order, with the identity a resumed job must match:
`files_source` (files and folders, sources matched by file name, `--recursive` by relative path), `manifest_source`
(a manifest CSV) and `dataset_source` (a `datasets` dataset, a rating table, a data file); `open_source` picks one.
`content_stat` and `content_sha256` say which bytes an item's images hold (what the job keys done items by). The
ranking reads its benchmark (`BenchmarkItem`s) with `read_manifest` and `read_method_folders`.

Errors name the file, folder, row or column at fault: `SourceError` for an input that cannot be used,
`FileNotFoundError` for a missing file.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import pyarrow as pa


# What Pillow reads as still images (an animated GIF is refused with its name when scored, not skipped here).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".avif", ".jp2",
                    ".pgm", ".ppm", ".pnm")
MANIFEST_COLUMNS = ("pair", "method", "fused")
DATA_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
                      ".arrow": "arrow", ".txt": "text"}


class SourceError(ValueError):
    """An input that cannot be used (a folder without images, a manifest row, a dataset column, a source that does
    not match); names the culprit."""


@dataclass
class JobItem:
    """One item of a job: its key, the images the model reads, what an error names, and the output columns."""

    key: str
    fused: Any
    ir: Any = None
    vis: Any = None
    name: str = ""
    columns: dict = field(default_factory=dict)
    position: int = 0  # in input order



# =================================================================================================== sources
class ItemSource:
    """Items in input order, with the identity a resumed job must match and the columns they add to the output."""

    identity: dict
    columns: list  # [(name, pyarrow type)] after "key"
    total: Optional[int]  # number of items, None when a stream does not say

    def iter_items(self, keep: Callable[[int, str], bool]) -> Iterator[JobItem]:
        """The items for which `keep(position, key)` holds, in input order (images are not decoded here)."""
        raise NotImplementedError

    def keys(self) -> list:
        """Every key in input order (for a stream: those seen by the last full `iter_items` pass)."""
        raise NotImplementedError


class ListSource(ItemSource):
    """Items known up front: image files, folders, a manifest."""

    def __init__(self, items: Sequence[JobItem], identity: dict, columns: list):
        keys = {}
        for position, item in enumerate(items):
            item.position = position
            if item.key in keys:
                raise SourceError(f"{item.name}: the same image is listed twice (also as {keys[item.key]}); "
                                      "each item is scored once, so list it once.")
            keys[item.key] = item.name
        self.items, self.identity, self.columns, self.total = list(items), identity, columns, len(items)

    def iter_items(self, keep):
        return (item for item in self.items if keep(item.position, item.key))

    def keys(self):
        return [item.key for item in self.items]


def _image_value(value, base: Optional[Path] = None):
    """What `model.score` takes from a dataset cell: bytes or a path for an undecoded Image, a path for a string."""
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if isinstance(value, str) and base is not None and not os.path.isabs(value) and (base / value).exists():
        return str(base / value)
    return value


class DatasetSource(ItemSource):
    """Rows of `datasets` splits (map-style or streaming); the key of a row is ``<split>/<row>``."""

    FETCH_ROWS = 256

    def __init__(self, splits: dict, image_column: str, ir_column: Optional[str], vis_column: Optional[str],
                 identity: dict, description: str, base: Optional[Path] = None):
        import datasets

        self.description, self.base = description, base
        self.image_columns = [image_column, ir_column, vis_column]
        self.splits = {}
        for name, split in splits.items():
            present = list(split.column_names or []) if split.column_names is not None else None
            for option, column in (("--image-column", image_column), ("--ir-column", ir_column), ("--vis-column", vis_column)):
                if column is not None and present is not None and column not in present:
                    raise SourceError(f"{description}: {option} {column!r} is not a column of split {name!r}; "
                                          f"its columns are {', '.join(present)}.")
            wanted = [column for column in self.image_columns if column is not None]
            split = split.select_columns(wanted)
            features = split.features or {}
            for column in wanted:
                if isinstance(features.get(column), datasets.Image):
                    split = split.cast_column(column, datasets.Image(decode=False))
            self.splits[name] = split
        self.streaming = any(isinstance(split, datasets.IterableDataset) for split in self.splits.values())
        self.identity = identity
        self.columns = [("split", pa.string()), ("row", pa.int64())]
        self.total = None
        if not self.streaming:
            self.total = sum(len(split) for split in self.splits.values())
        else:
            counts = [_stream_rows(split) for split in self.splits.values()]
            self.total = sum(counts) if all(count is not None for count in counts) else None
        self._seen = None

    @staticmethod
    def key(split: str, row: int) -> str:
        return f"{split}/{row}" if split else str(row)

    def _item(self, split: str, row: int, values: dict, position: int) -> JobItem:
        fused, ir, vis = (None if column is None else _image_value(values[column], self.base) for column in self.image_columns)
        name = f"{self.description} row {row}" + (f" of split {split!r}" if split else "")
        return JobItem(self.key(split, row), fused, ir, vis, name, {"split": split, "row": row}, position)

    def iter_items(self, keep):
        seen, offset = [], 0
        for split_name, split in self.splits.items():
            if self.streaming:
                for row, values in enumerate(split):
                    key = self.key(split_name, row)
                    seen.append(key)
                    if keep(offset + row, key):
                        yield self._item(split_name, row, values, offset + row)
                offset = len(seen)
                continue
            wanted = [row for row in range(len(split)) if keep(offset + row, self.key(split_name, row))]
            seen.extend(self.key(split_name, row) for row in range(len(split)))
            for start in range(0, len(wanted), self.FETCH_ROWS):
                block = wanted[start : start + self.FETCH_ROWS]
                columns = split[block]
                for index, row in enumerate(block):
                    yield self._item(split_name, row, {name: values[index] for name, values in columns.items()}, offset + row)
            offset += len(split)
        self._seen = seen

    def keys(self):
        if not self.streaming:
            return [self.key(name, row) for name, split in self.splits.items() for row in range(len(split))]
        if self._seen is None:
            for _ in self.iter_items(lambda position, key: False):
                pass
        return list(self._seen)


def _stream_rows(split) -> Optional[int]:
    info = getattr(split, "info", None)
    splits = getattr(info, "splits", None) or {}
    name = str(getattr(split, "split", "") or "")
    if name in splits and getattr(splits[name], "num_examples", None):
        return int(splits[name].num_examples)
    return None


# --------------------------------------------------------------------------------------------------- file sources
def list_images(folder: Path) -> list:
    """Image files directly inside `folder`, sorted by name. Hidden files (such as the `._name.png` resource forks
    macOS leaves on shared drives) are not images to score and are left out. A broken link with an image's
    name is listed (it fails with its name when read) rather than skipped without a word."""
    return sorted(path for path in folder.iterdir()
                  if (path.is_file() or (path.is_symlink() and not path.exists()))
                  and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."))


def expand_images(arguments: Sequence[str], recursive: bool = False) -> list:
    """Files as given, folders replaced by the images inside them (directly, or in every sub-folder)."""
    images = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = _images_below(path) if recursive else list_images(path)
            if not found:
                hint = ""
                if not recursive and _images_below(path):
                    hint = " directly inside it; its sub-folders hold some: add --recursive"
                raise SourceError(f"{path}: the folder holds no images{hint} ({', '.join(IMAGE_EXTENSIONS)}).")
            images.extend(found)
        elif path.is_file() or path.is_symlink():  # a broken link fails with its name when scored
            images.append(path)
        elif path.exists():
            raise SourceError(f"{path}: not a regular file or folder.")
        else:
            raise FileNotFoundError(f"{path}: no such image file or folder.")
    return images


def _images_below(folder: Path) -> list:
    found = []
    for root, folders, _ in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found.extend(list_images(Path(root)))
    return sorted(found, key=lambda path: path.relative_to(folder).as_posix())


def _relative_paths(arguments: Sequence[str], fused: Sequence[Path]) -> list:
    """Each fused image's path under the folder argument that holds it (its name for a file argument)."""
    folders = [Path(argument) for argument in arguments if Path(argument).is_dir()]
    relative = []
    for image in fused:
        holder = next((folder for folder in folders if folder in image.parents), None)
        relative.append(image.relative_to(holder) if holder is not None else Path(image.name))
    return relative


def _image_names(folder: Path, stem: str) -> list:
    """The paths an image named `stem` may have in `folder`: each image extension, in lower then upper case."""
    return [folder / (stem + ext) for ext in IMAGE_EXTENSIONS] + [folder / (stem + ext.upper()) for ext in IMAGE_EXTENSIONS]


def match_sources(fused: Sequence[Path], argument: Optional[str], role: str, missing_ok: bool = False,
                  relative: Optional[Sequence[Path]] = None) -> list:
    """Sources for each fused image: one file (for one image), or a folder matched by file name (or stem). With
    `relative` (each fused image's path under the folder given, for --recursive), the source at the same relative
    path comes first; a name that two fused images share is matched only that way (else refused: both would get one
    source). A fused image without a source raises FileNotFoundError, or with `missing_ok` gets the path its source
    would have."""
    if argument is None:
        return [None] * len(fused)
    path = Path(argument)
    if path.is_file():
        if len(fused) != 1:
            raise SourceError(f"--{role} {path} is one file but there are {len(fused)} fused images; pass a folder.")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such {role} file or folder (--{role}).")
    matched = []
    names = {}
    for image in fused:
        names.setdefault(image.name, []).append(image)
    for index, image in enumerate(fused):
        def named(folder: Path) -> list:
            return [folder / image.name] + _image_names(folder, image.stem)

        subfolder = relative[index].parent if relative is not None else Path()
        candidates = named(path / subfolder) if subfolder != Path() else []
        shared = len(names[image.name]) > 1
        if not shared or subfolder == Path():
            candidates += named(path)
        found = next((candidate for candidate in candidates if candidate.is_file()), None)
        if found is None and shared and not missing_ok:
            others = ", ".join(str(other) for other in names[image.name] if other != image)
            raise SourceError(f"{image} and {others} share the name {image.name}: with --recursive their {role} "
                                  f"sources are matched by relative path; put this one at {path / subfolder / image.name}.")
        if found is None and missing_ok:
            found = path / subfolder / image.name
        if found is None:
            raise FileNotFoundError(f"{image}: no {role} source named {image.name} (or {image.stem}.<ext>) in {path}.")
        matched.append(found)
    return matched


def files_source(arguments: Sequence[str], ir: Optional[str] = None, vis: Optional[str] = None,
                 recursive: bool = False, missing_sources_ok: bool = False) -> ListSource:
    """Image files and folders, with sources matched by file name in the `ir` and `vis` folders (or one file each)."""
    fused = expand_images(arguments, recursive=recursive)
    relative = _relative_paths(arguments, fused) if recursive else None
    ir_paths = match_sources(fused, ir, "ir", missing_ok=missing_sources_ok, relative=relative)
    vis_paths = match_sources(fused, vis, "vis", missing_ok=missing_sources_ok, relative=relative)
    items = []
    for image, ir_path, vis_path in zip(fused, ir_paths, vis_paths):
        columns = {"path": str(image)}
        if ir is not None:
            columns["ir"] = str(ir_path)
        if vis is not None:
            columns["vis"] = str(vis_path)
        items.append(JobItem(os.path.abspath(image), str(image), ir_path and str(ir_path), vis_path and str(vis_path),
                             str(image), columns))
    identity = {"kind": "files", "inputs": [os.path.abspath(a) for a in arguments], "recursive": bool(recursive),
                "ir": ir and os.path.abspath(ir), "vis": vis and os.path.abspath(vis)}
    columns = [("path", pa.string())] + [(role, pa.string()) for role, given in (("ir", ir), ("vis", vis)) if given is not None]
    return ListSource(items, identity, columns)


def manifest_source(path, use_sources: bool = True) -> ListSource:
    """A manifest CSV (`pair, method, fused[, ir, vis]`, paths relative to it), as `fuscore rank` reads it."""
    try:
        entries = read_manifest(path)
    except SourceError as error:
        if "missing column" not in str(error):
            raise
        raise SourceError(f"{error} To read another CSV as a dataset, name its image column with --image-column.") from None
    with_sources = use_sources
    if use_sources:
        lacking = next((entry for entry in entries if not (entry.ir and entry.vis)), None)
        if lacking is not None:
            raise SourceError(f"{lacking.origin}: the model reads the fused image with its infrared and visible "
                                  "sources (input_mode 'fused_ir_vis'); this row has no ir or no vis.")
    items = []
    for entry in entries:
        columns = {"path": entry.fused, "pair": entry.pair, "method": entry.method}
        if with_sources:
            columns.update(ir=entry.ir, vis=entry.vis)
        items.append(JobItem(os.path.abspath(entry.fused), entry.fused, entry.ir if with_sources else None,
                             entry.vis if with_sources else None, entry.origin, columns))
    columns = [("path", pa.string()), ("pair", pa.string()), ("method", pa.string())]
    if with_sources:
        columns += [("ir", pa.string()), ("vis", pa.string())]
    return ListSource(items, {"kind": "manifest", "manifest": os.path.abspath(path), "sources": with_sources}, columns)


# --------------------------------------------------------------------------------------------------- dataset sources
def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def _is_rating_table(path: Path) -> bool:
    names = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
    return path.is_dir() and (any((path / name).is_file() for name in names)
                              or any(child.is_dir() and any((child / name).is_file() for name in names)
                                     for child in path.iterdir()))


def dataset_source(source: str, image_column: Optional[str] = None, ir_column: Optional[str] = None,
                   vis_column: Optional[str] = None, split: Optional[str] = None, streaming: bool = False,
                   use_sources: bool = True, loading=None) -> DatasetSource:
    """A `datasets` dataset: a `save_to_disk` folder, a FuScore rating table, a local data file or folder, or any
    name `datasets.load_dataset` takes (streamed with `streaming`). Without `image_column` the rating tables'
    `fused` column is used (and `ir`/`vis` where the model reads sources); `loading` wraps the (first) load, e.g.
    accelerate's `main_process_first`."""
    import contextlib

    import datasets

    path = Path(source)
    base = None
    loading = loading or contextlib.nullcontext
    identity = {"kind": "dataset", "source": os.path.abspath(source) if path.exists() else source, "split": split,
                "streaming": bool(streaming)}
    try:
        if _is_saved_dataset(path):
            loaded = datasets.load_from_disk(str(path))
        elif _is_rating_table(path) and image_column is None:
            from fuscore_data.tables import load_table

            loaded = load_table(path)
        else:
            if path.is_file():
                builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
                if builder is None:
                    raise SourceError(f"{source}: not a data file `datasets` reads ({', '.join(DATA_FILE_BUILDERS)}).")
                arguments, base = dict(path=builder, data_files=str(path)), path.parent
            else:
                arguments = dict(path=str(path) if path.exists() else source)
                base = path if path.is_dir() else None
            with loading():
                loaded = datasets.load_dataset(**arguments, split=split, streaming=streaming)
    except SourceError:
        raise
    except IndexError:  # `datasets` cannot load a saved table of 0 rows
        raise SourceError(f"{source}: the dataset has no rows to score.") from None
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as error:
        raise SourceError(f"{source}: cannot load it as a dataset ({type(error).__name__}: {error}).") from None
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split is not None:
            if split not in loaded:
                raise SourceError(f"{source}: no split {split!r}; it has {', '.join(loaded)}.")
            splits = {split: loaded[split]}
        else:
            splits = dict(loaded)
    else:
        splits = {split or str(getattr(loaded, "split", "") or ""): loaded}
    if not splits:
        raise SourceError(f"{source}: the dataset has no splits.")
    first = next(iter(splits.values()))
    columns = list(first.column_names or [])
    if image_column is None:
        if "fused" not in columns:
            image_columns = [name for name, feature in (first.features or {}).items() if isinstance(feature, datasets.Image)]
            raise SourceError(f"{source}: name the column of fused images with --image-column (its columns: "
                                  f"{', '.join(columns)}" + (f"; image columns: {', '.join(image_columns)}" if image_columns else "") + ").")
        image_column = "fused"
        if use_sources:
            ir_column = ir_column or ("ir" if "ir" in columns else None)
            vis_column = vis_column or ("vis" if "vis" in columns else None)
    if not use_sources:
        ir_column = vis_column = None
    elif ir_column is None or vis_column is None:
        raise SourceError(f"{source}: the model reads the fused image with its infrared and visible sources "
                              "(input_mode 'fused_ir_vis'): name their columns with --ir-column and --vis-column.")
    identity.update(columns=[image_column, ir_column, vis_column],
                    rows={name: (None if isinstance(s, datasets.IterableDataset) else len(s)) for name, s in splits.items()})
    loaded = DatasetSource(splits, image_column, ir_column, vis_column, identity, description=str(source), base=base)
    if loaded.total == 0:
        raise SourceError(f"{source}: the dataset has no rows to score.")
    return loaded


def open_source(inputs: Sequence[str], *, ir: Optional[str] = None, vis: Optional[str] = None,
                image_column: Optional[str] = None, ir_column: Optional[str] = None, vis_column: Optional[str] = None,
                split: Optional[str] = None, streaming: bool = False, recursive: bool = False, use_sources: bool = True,
                loading=None, missing_sources_ok: bool = False) -> ItemSource:
    """The items of SOURCE: image files and folders, a manifest CSV, a rating table or a `datasets` dataset.

    A dataset is taken from a `save_to_disk` folder or a rating table (by their files), or from anything else when
    `image_column` is given (a data file, a folder of data files, a Hub dataset id); a `.csv` without
    `image_column` is a manifest (`pair, method, fused[, ir, vis]`). Files and folders may be several.
    `use_sources`: the model reads the infrared and visible sources (they are then required). `missing_sources_ok`:
    a fused image without its source in the `ir`/`vis` folder becomes an item that fails when scored (for
    `on_error="skip"`) instead of an error before the job.
    """
    inputs = list(inputs)
    first = Path(inputs[0])
    if not use_sources:  # the model reads the fused image only
        ir = vis = ir_column = vis_column = None
    dataset_like = (image_column is not None or _is_saved_dataset(first) or _is_rating_table(first))
    manifest_like = first.suffix.lower() == ".csv" and first.is_file() and image_column is None
    if dataset_like or manifest_like:
        if len(inputs) > 1:
            raise SourceError(f"{inputs[0]} is a {'dataset' if dataset_like else 'manifest'}: give it alone, "
                                  f"without {' '.join(inputs[1:])}.")
        for option, value in (("--ir", ir), ("--vis", vis), ("--recursive", recursive)):
            if value:
                raise SourceError(f"{option} goes with image files and folders; {inputs[0]} names its sources "
                                      "itself (--ir-column/--vis-column for a dataset).")
        if manifest_like:
            return manifest_source(first, use_sources=use_sources)
        if not first.exists() and (inputs[0].startswith((".", "/", "~")) or inputs[0].count("/") > 1):
            raise FileNotFoundError(f"{inputs[0]}: no such file or folder (and not a dataset name of the form org/name).")
        return dataset_source(inputs[0], image_column, ir_column, vis_column, split, streaming, use_sources, loading)
    for option, value in (("--ir-column", ir_column), ("--vis-column", vis_column), ("--split", split),
                          ("--streaming", streaming)):
        if value:
            raise SourceError(f"{option} goes with a dataset SOURCE (and --image-column); {inputs[0]} is an image file or folder.")
    if use_sources and (ir is None or vis is None):
        raise SourceError(f"{inputs[0]}: the model reads the fused image with its infrared and visible sources "
                              "(input_mode 'fused_ir_vis'): give --ir and --vis (folders matched by file name).")
    return files_source(inputs, ir=ir, vis=vis, recursive=recursive, missing_sources_ok=missing_sources_ok)


# =================================================================================================== content
def _stat_text(image) -> Optional[str]:
    """Size and modification time of an image file (cheap to compare), None when `image` is not a file."""
    if isinstance(image, (str, os.PathLike)):
        try:
            info = os.stat(image)
        except OSError:
            return "missing"
        return f"{info.st_size}:{info.st_mtime_ns}"
    return None


def _image_digest(image, digest) -> None:
    if isinstance(image, (bytes, bytearray, memoryview)):
        digest.update(b"bytes:")
        digest.update(image)
    elif isinstance(image, (str, os.PathLike)):
        try:
            with open(image, "rb") as handle:
                digest.update(b"file:")
                for piece in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(piece)
        except OSError:
            digest.update(b"missing")
    else:
        digest.update(b"none")


def content_stat(item: JobItem) -> Optional[str]:
    """The sizes and modification times of the item's image files, or None when one of its images is not a file
    (bytes of a dataset row: only their hash tells whether they changed)."""
    stats = []
    for image in (item.fused, item.ir, item.vis):
        if image is None:
            stats.append("-")
            continue
        stat = _stat_text(image)
        if stat is None:
            return None
        stats.append(stat)
    return "|".join(stats)


def content_sha256(item: JobItem) -> Optional[str]:
    """SHA-256 of the bytes of the item's images (fused, infrared, visible): what a done item is keyed by, so an
    image re-written under the same name is scored again. None for images given as decoded values (no bytes)."""
    digest = hashlib.sha256()
    for image in (item.fused, item.ir, item.vis):
        if image is not None and not isinstance(image, (bytes, bytearray, memoryview, str, os.PathLike)):
            return None
        _image_digest(image, digest)
        digest.update(b"\0")
    return digest.hexdigest()


# =================================================================================================== benchmarks
@dataclass
class BenchmarkItem:
    """One fused image of the benchmark and where it came from."""

    pair: str
    method: str
    fused: str
    ir: Optional[str] = None
    vis: Optional[str] = None
    origin: str = ""  # "manifest.csv row 7" or the file path: what an error message should name


def read_manifest(path) -> list:
    """Reads a manifest CSV with columns `pair, method, fused` and optional `ir, vis` (paths relative to its folder).

    Raises SourceError naming the row for a missing column value, a missing file or a repeated
    (pair, method).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest file.")
    root = path.parent
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in MANIFEST_COLUMNS if name not in (reader.fieldnames or ())]
        if missing:
            raise SourceError(f"{path}: missing column(s) {missing}; a manifest needs pair, method, fused (and optionally ir, vis).")
        rows = list(reader)
    items = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        origin = f"{path} line {line}"
        for name in MANIFEST_COLUMNS:
            if not (row.get(name) or "").strip():
                raise SourceError(f"{origin}: empty {name!r}.")
        files = {}
        for name in ("fused", "ir", "vis"):
            value = (row.get(name) or "").strip()
            if not value:
                files[name] = None
                continue
            file = root / value
            if not file.is_file():
                raise FileNotFoundError(f"{origin}: {name} image {file} does not exist.")
            files[name] = str(file)
        items.append(BenchmarkItem(row["pair"].strip(), row["method"].strip(), files["fused"], files["ir"], files["vis"], origin))
    if not items:
        raise SourceError(f"{path}: the manifest has no rows.")
    check_unique(items)
    return items


def vifb_manifest_path(vifb_dir=None) -> Path:
    """VIFB's manifest: in `vifb_dir`, else where `fuscore_data` finds VIFB ($FUSCORE_VIFB_DIR or ../shared/data/vifb)."""
    from fuscore_data.importers import VIFB_MANIFEST, default_vifb_dir

    return Path(vifb_dir or default_vifb_dir()) / VIFB_MANIFEST


def _match_source(folder: Optional[Path], stem: str, role: str, fused: Path) -> Optional[str]:
    if folder is None:
        return None
    for candidate in _image_names(folder, stem):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"{fused}: no {role} source named {stem}.<ext> in {folder}.")


def read_method_folders(folder, ir_dir=None, vis_dir=None) -> list:
    """Items from `folder/<method>/<pair>.<ext>`; sources are `ir_dir/<pair>.<ext>` and `vis_dir/<pair>.<ext>`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder.")
    ir_folder, vis_folder = (Path(d) if d else None for d in (ir_dir, vis_dir))
    for name, source_folder in (("--ir-dir", ir_folder), ("--vis-dir", vis_folder)):
        if source_folder is not None and not source_folder.is_dir():
            raise FileNotFoundError(f"{source_folder}: no such folder ({name}).")
    excluded = {p.resolve() for p in (ir_folder, vis_folder) if p is not None}
    items = []
    for method_folder in sorted(p for p in folder.iterdir() if p.is_dir() and p.resolve() not in excluded):
        for image in list_images(method_folder):
            items.append(BenchmarkItem(
                pair=image.stem, method=method_folder.name, fused=str(image),
                ir=_match_source(ir_folder, image.stem, "infrared", image),
                vis=_match_source(vis_folder, image.stem, "visible", image),
                origin=str(image),
            ))
    if not items:
        raise SourceError(f"{folder}: no images found in <method>/ subfolders (expected {folder}/<method>/<pair>.png).")
    check_unique(items)
    return items


def check_unique(items: Sequence[BenchmarkItem]) -> None:
    seen = {}
    for item in items:
        key = (item.pair, item.method)
        if key in seen:
            raise SourceError(f"{item.origin}: pair {item.pair!r} and method {item.method!r} already appear at {seen[key]}.")
        seen[key] = item.origin
