# Copyright 2026 The FuScore authors. Apache-2.0.
"""Score a whole dataset: sharded over processes, resumable, every item exactly once (DESIGN.md section 8).

    fuscore score images/ --output scores.parquet
    torchrun --nproc_per_node 8 -m fuscore score images/ --output scores.parquet
    accelerate launch -m fuscore.cli score org/dataset --image-column fused --output scores.parquet

A job is a list of items in input order (an `ItemSource` of `fuscore.sources`) with stable keys: the absolute path of each fused image for files (folders,
image files, a manifest CSV), ``<split>/<row>`` for a `datasets` dataset. The input is cut into chunks of
``chunk_size`` consecutive items; chunk i belongs to process i mod N of an `accelerate launch` or `torchrun` (accelerate's
``PartialState`` gives the index and N), so the split is deterministic and needs no scheduler. Each chunk is scored by
one call of the scoring engine (``scoring_fuscore.score_images``, what ``model.score`` runs) and appended to
``<output>.parts/`` as a Parquet file written whole under a temporary name and renamed into place (`fuscore.atomic`).
The progress bar moves with each batch; an interrupt (Ctrl-C) writes the batches of the current chunk scored so far.
A relaunch, with any process count, reads the rows already there and scores only the rest. Once every item has a row,
the first process merges the chunks in input order into the output (a key's newest row wins) and removes the parts
folder; a process whose job folder was removed while it ran stops with an error.

Done items are keyed by content: each row holds ``content_stat`` (size and modification time of each image file) and
``content_sha256`` (SHA-256 of the images' bytes). A relaunch, or a second run into the same output, keeps an earlier
row when the files' sizes and times are unchanged or, when they differ, their bytes' hash is; an image re-written under
the same name (a fusion network's outputs each epoch) is scored again, and the job says how many were.

The engine's scores change in their last bit with the other images of a batch (on the CPU), so chunks, not processes,
fix the batches: a job gives the same scores bit for bit with 1 or N processes. Under ``on_error="skip"`` a bad image
gets its error in the ``error`` column (its scores empty) and the job goes on; a relaunch tries the failed items again.

The output (Parquet, loadable with ``datasets.load_dataset("parquet", data_files=...)``) has one row per item:
``key``, then ``path`` (files, with ``ir``/``vis`` where sources are read, ``pair``/``method`` for a manifest) or
``split`` and ``row`` (datasets), then for each dimension ``<dimension>``, ``<dimension>_std`` and
``<dimension>_probs`` (the level probabilities, in the order of the level words), and ``error``. The Parquet schema metadata key
``fuscore`` holds the job as JSON: model name and revision, dimensions, level words, source, software versions.

With ``maps_dir`` (``fuscore score ... --maps DIR``, models with the artifact map head only) each scored item's
artifact map is also written to ``DIR`` as an 8-bit grey PNG at the fused image's size (0 = no artifact, 255 = sure
artifact; `map_file_name` names it from the item's key), and the output gains the column ``artifact_map``: that
file's name, so rows and maps match whatever the order. A chunk's maps are written, each whole, before its rows: an
item with a row has its map, and an interrupted or failed chunk leaves only maps that its relaunch writes again (an
item whose map was deleted since is scored again). The maps folder is part of the job's identity: a resumed job
must name the same one, and a folder that already holds files is written into only by a resumed job or with
``overwrite``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from fuscore import atomic
from fuscore.model_identity import software_versions
from fuscore.sources import ItemSource, JobItem, content_sha256, content_stat


FORMAT_VERSION = 2  # 2: rows carry their images' content (content_stat, content_sha256)
METADATA_KEY = b"fuscore"
PARTS_SUFFIX = ".parts"
JOB_FILE = "job.json"
LOCK_FILE = "job.lock"
PART_PATTERN = re.compile(r"^part-(?P<launch>[0-9a-f]+)-r(?P<rank>\d+)-(?P<seq>\d+)-n(?P<rows>\d+)\.parquet$")
FAILED_PREFIX = "failed-"
FINISHED_PREFIX = "finished-"
OUTPUT_FORMATS = (".parquet", ".csv", ".json", ".jsonl")
DEFAULT_CHUNK_SIZE = 2048
ON_ERROR_CHOICES = ("stop", "skip")
# The job settings that must agree between the command and the partial output it resumes.
IDENTITY_FIELDS = ("model_revision", "dimensions", "level_words", "source", "artifact_maps")
MAP_COLUMN = "artifact_map"  # the scores table's column naming each item's map file in the maps folder


class ScoringJobError(ValueError):
    """A job that cannot start or finish as asked (a mismatch with a partial output, its settings); names it. A source
    that cannot be read raises `fuscore.sources.SourceError`."""


class StoppedByFirstProcess(ScoringJobError):
    """Raised on the other processes when the first one refused to start the job (it reports the reason)."""


# =================================================================================================== model checks
def check_level_words(model) -> list:
    """The model's level words, checked against the token ids it reads (`configuration_fuscore.check_level_token_ids`,
    also for a processor attached by hand): a config.json whose words were edited without their ids would score with
    the old words while the output named the new ones."""
    from configuration_fuscore import LevelWordsError, check_level_token_ids

    try:
        check_level_token_ids(model.config, getattr(model.get_processor(), "tokenizer", None))
    except LevelWordsError as error:
        raise ScoringJobError(str(error)) from None
    return list(model.config.level_words)


# =================================================================================================== scoring
def _scores_schema(source_columns: Sequence, dimensions: Sequence[str], maps: bool = False) -> pa.Schema:
    fields = [pa.field("key", pa.string())] + [pa.field(name, kind) for name, kind in source_columns]
    for dim in dimensions:
        fields += [pa.field(dim, pa.float64()), pa.field(f"{dim}_std", pa.float64()),
                   pa.field(f"{dim}_probs", pa.list_(pa.float64()))]
    if maps:
        fields.append(pa.field(MAP_COLUMN, pa.string()))
    fields += [pa.field("content_stat", pa.string()), pa.field("content_sha256", pa.string())]
    return pa.schema(fields + [pa.field("error", pa.string())])


# =================================================================================================== maps
def map_file_name(key: str) -> str:
    """The PNG an item's artifact map is written to: its key's file stem (characters other than letters, digits,
    `.`, `_` and `-` replaced by `_`, at most 80) and the first 12 hex digits of the key's SHA-256, so two images of
    one name in different folders get different files and a relaunch finds the same one."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(key).stem or "item")[:80]
    return f"{stem}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:12]}.png"


def write_map_png(path: Path, artifact_map) -> Path:
    """Writes an artifact map (float `(H, W)` in [0, 1]) as an 8-bit grey PNG, whole or not at all."""
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.rint(np.clip(artifact_map, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return atomic.write_bytes(path, buffer.getvalue())


def _write_maps(maps_dir: Optional[Path], items: Sequence[JobItem], details: Sequence) -> None:
    """The maps of the scored items among `items` (`details[i]` None for one that failed)."""
    if maps_dir is None:
        return
    from scoring_fuscore import ARTIFACT_MAP, upsample_artifact_map

    for item, detail in zip(items, details):
        if detail is not None:
            write_map_png(maps_dir / map_file_name(item.key), upsample_artifact_map(**detail[ARTIFACT_MAP]))


def _check_maps_dir(maps_dir: Path, may_hold_files: bool) -> None:
    """The maps folder can be written: not a file, and empty unless the job resumes into it or overwrites."""
    if maps_dir.exists() and not maps_dir.is_dir():
        raise ScoringJobError(f"--maps {maps_dir} is a file; give a folder for the artifact maps.")
    if not may_hold_files and maps_dir.is_dir() and any(maps_dir.iterdir()):
        raise ScoringJobError(f"--maps {maps_dir} already holds files; give another folder, or pass --overwrite to "
                              "write the maps over them.")
    maps_dir.mkdir(parents=True, exist_ok=True)


def _unchanged(item: JobItem, row: dict) -> bool:
    """Whether `item`'s images are those an earlier row scored: the same sizes and modification times, or, when
    these differ (a copy, a `touch`) or cannot be compared (bytes), the same SHA-256 of the bytes."""
    if row.get("content_sha256") is None:
        return True  # a row of images without bytes (decoded values): nothing to compare
    stat = content_stat(item)
    if stat is not None and stat == row.get("content_stat"):
        return True
    return content_sha256(item) == row["content_sha256"]


def _error_text(item: JobItem, error: Exception) -> str:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return message if item.name and item.name in message else f"{item.name}: {message}"


def _first_image_error(model, item: JobItem) -> Optional[str]:
    """The error that stops `item` from being scored, found by loading its images (cheap next to the model)."""
    from processing_fuscore import ImageInputError, load_image

    for image in (item.fused, item.ir, item.vis):
        if image is None:
            continue
        try:
            load_image(image, source=item.name if image is item.fused else None)
        except ImageInputError as error:
            return _error_text(item, error)
    return None


def score_chunk(model, items: Sequence[JobItem], dimensions: Sequence[str], *, batch_size: int = 8,
                num_workers: int = 0, on_error: str = "stop", on_batch: Optional[Callable] = None,
                return_maps: bool = False) -> list:
    """`(detail or None, error or None)` per item, in order. Scores come from one `model.score` call; when an image
    is bad, the bad items are found (their images loaded one by one) and the others scored again without them, so
    one bad image never costs the rest of the chunk. Under `on_error="stop"` the first bad item raises
    `ImageInputError` naming it. `on_batch([(position in items, detail), ...])` is called after each batch with the
    items it completed. With `return_maps` a detail also holds the item's map (`scoring_fuscore.ARTIFACT_MAP`: its
    patch grid and image size)."""
    from processing_fuscore import ImageInputError
    from scoring_fuscore import ARTIFACT_MAP, score_images

    def score(positions, workers):
        selected = [items[position] for position in positions]
        report = None
        if on_batch is not None:
            def report(completed):
                on_batch([(positions[index], detail) for index, detail in completed])
        results = score_images(model, model.get_processor(), [item.fused for item in selected],
                               [item.ir for item in selected], [item.vis for item in selected], list(dimensions),
                               batch_size=batch_size, num_workers=workers, on_batch=report, return_maps=return_maps)
        details = [{dim: {name: results[dim][name][index] for name in ("score", "std", "probs")} for dim in dimensions}
                   for index in range(len(selected))]
        if return_maps:
            for index, detail in enumerate(details):
                detail[ARTIFACT_MAP] = results[ARTIFACT_MAP][index]
        return details

    if not items:
        return []
    try:
        return [(detail, None) for detail in score(range(len(items)), num_workers)]
    except ImageInputError:
        pass
    results = [None] * len(items)
    for index, item in enumerate(items):
        error = _first_image_error(model, item)
        if error is not None:
            if on_error == "stop":
                raise ImageInputError(error)
            results[index] = (None, error)
    good = [index for index in range(len(items)) if results[index] is None]
    try:
        for index, detail in zip(good, score(good, num_workers) if good else []):
            results[index] = (detail, None)
    except ImageInputError:  # a failure the images alone do not show (e.g. sources not registered): one by one
        for index in good:
            try:
                results[index] = (score([index], 0)[0], None)
            except ImageInputError as error:
                if on_error == "stop":
                    raise ImageInputError(_error_text(items[index], error)) from None
                results[index] = (None, _error_text(items[index], error))
    return results


def _chunk_table(items: Sequence[JobItem], results: Sequence, schema: pa.Schema, dimensions: Sequence[str],
                 contents: Optional[Sequence] = None) -> pa.Table:
    """The rows of a scored chunk; `contents` holds each item's `(content_stat, content_sha256)` taken before it was
    scored (a re-write during the scoring then makes the next run score it again)."""
    data = {name: [] for name in schema.names}
    source_names = [name for name in schema.names[1:] if name not in ("error", "content_stat", "content_sha256", MAP_COLUMN)
                    and not _is_score_column(name, dimensions)]
    contents = contents or [(None, None)] * len(items)
    for item, (detail, error), (stat, sha) in zip(items, results, contents):
        data["key"].append(item.key)
        data["content_stat"].append(stat)
        data["content_sha256"].append(sha)
        for name in source_names:
            data[name].append(item.columns.get(name))
        for dim in dimensions:
            entry = detail[dim] if detail is not None else None
            data[dim].append(None if entry is None else float(entry["score"]))
            data[f"{dim}_std"].append(None if entry is None else float(entry["std"]))
            data[f"{dim}_probs"].append(None if entry is None else [float(p) for p in entry["probs"]])
        if MAP_COLUMN in data:
            data[MAP_COLUMN].append(None if detail is None else map_file_name(item.key))
        data["error"].append(error)
    return pa.table(data, schema=schema)


def _is_score_column(name: str, dimensions: Sequence[str]) -> bool:
    return any(name in (dim, f"{dim}_std", f"{dim}_probs") for dim in dimensions)


def _chunks(items: Iterable[JobItem], size: int) -> Iterator[tuple]:
    """`(chunk index, items)`: the items of each run of `size` consecutive input positions."""
    chunk, index = [], None
    for item in items:
        if chunk and item.position // size != index:
            yield index, chunk
            chunk = []
        chunk.append(item)
        index = item.position // size
    if chunk:
        yield index, chunk


def owner_of(chunk_index: int, num_processes: int) -> int:
    """The process that scores a chunk: chunk i (input positions i*size .. (i+1)*size - 1) goes to process
    i mod num_processes. Each chunk is one `model.score` call whatever the process count, so the batches and hence
    the scores are the same bit for bit with 1 or N processes (on the CPU a batch of other images changes a score
    in its last bit)."""
    return chunk_index % num_processes


# =================================================================================================== the job
@dataclass
class JobResult:
    """What a job did. `table` is the merged output (on the first process, once complete)."""

    output: Optional[Path]
    complete: bool
    n_items: int = 0
    n_failed: int = 0
    n_scored: int = 0  # by this process in this run
    n_reused: int = 0  # items an earlier run had scored (not scored again)
    n_rescored: int = 0  # items an earlier run had scored whose images changed since: scored again by this run
    n_remapped: int = 0  # items an earlier run had scored whose map file was gone: scored again by this run
    failures: list = field(default_factory=list)  # (name or key, error), input order
    table: Optional[pa.Table] = None
    dropped: int = 0  # rows of an earlier run whose items are no longer in the source


def parts_folder(output) -> Path:
    output = Path(output)
    return output.with_name(output.name + PARTS_SUFFIX)


def job_description(model_name: str, model_revision: Optional[str], dimensions: Sequence[str], level_words: Sequence[str],
                    source: ItemSource, input_mode: Optional[str] = None, maps_dir=None) -> dict:
    path = Path(model_name)
    maps = {"artifact_maps": os.path.abspath(maps_dir)} if maps_dir is not None else {}  # absent: older jobs match
    return {
        "format": FORMAT_VERSION,
        "model": os.path.abspath(model_name) if path.exists() else model_name,
        "model_revision": model_revision,
        "dimensions": list(dimensions),
        "level_words": list(level_words),
        "input_mode": input_mode,
        "source": source.identity,
        "versions": software_versions(),
        **maps,
    }


def _mismatch(existing: dict, wanted: dict, where: str) -> Optional[str]:
    if existing.get("format") != FORMAT_VERSION:
        return f"{where} was written by another version of this format ({existing.get('format')!r})"
    different = []
    for name in IDENTITY_FIELDS:
        old, new = existing.get(name), wanted.get(name)
        if name == "model_revision" and (old is None or new is None):
            name, old, new = "model", existing.get("model"), wanted.get("model")
        if old != new:
            different.append(f"{name.replace('_', ' ')} {json.dumps(old)} there, {json.dumps(new)} now")
    if different:
        return f"{where} was scored with other settings ({'; '.join(different)})"
    return None


def _read_metadata(path: Path) -> Optional[dict]:
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as error:
        raise ScoringJobError(f"{path}: exists but is not a readable Parquet file ({error}); pass --overwrite to replace it.") from None
    raw = metadata.get(METADATA_KEY)
    return json.loads(raw) if raw else None


def _read_json_metadata(path: Path) -> Optional[dict]:
    """The job metadata of a JSON scores file (`write_scores`), None when it is not one."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ScoringJobError(f"{path}: exists but is not a readable JSON file ({error}); pass --overwrite to replace "
                              "it.") from None
    metadata = document.get("metadata") if isinstance(document, dict) else None
    return metadata if isinstance(metadata, dict) else None


def _part_files(parts: Path) -> list:
    if not parts.is_dir():
        return []
    return sorted(path for path in parts.iterdir() if PART_PATTERN.match(path.name))


def scored_rows(parts: Path) -> int:
    """How many rows the chunk files of a job folder hold (what an interrupted job keeps)."""
    return sum(int(PART_PATTERN.match(path.name)["rows"]) for path in _part_files(parts))


def _write_table(path: Path, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    atomic.write_bytes(path, buffer.getvalue())


def _read_rows(path: Path, columns: Optional[list] = None) -> pa.Table:
    """A chunk (or an earlier output) of this job; a damaged one is an error that says what to do."""
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise ScoringJobError(f"{path}: cannot read these scores ({error}). Delete the file (its items are scored "
                              "again) and run the command again.") from None


def _read_keys(path: Path) -> pa.Table:
    return _read_rows(path, columns=["key", "error", "content_stat", "content_sha256"])


def _lock(parts: Path):
    """An exclusive lock on the job for the first process of one launch (released when it exits, even when killed):
    a second launch on the same output is refused instead of mixing its chunks with this one's. The lock file lives in
    the parts folder, so the lock goes with the folder."""
    from filelock import FileLock, Timeout

    lock = FileLock(parts / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ScoringJobError(f"{parts} is in use by another `fuscore score` job that is still running; wait for it to "
                              "end (or stop it), then run the command again.") from None
    return lock


def check_output_name(output: Path) -> None:
    """The one check of a scores file's name: a file (not a folder) whose name ends in one of `OUTPUT_FORMATS`."""
    if output.is_dir():
        raise ScoringJobError(f"--output {output} is a folder; give a file name ending in {', '.join(OUTPUT_FORMATS)}.")
    if output.suffix.lower() not in OUTPUT_FORMATS:
        raise ScoringJobError(f"--output {output}: the name must end in {', '.join(OUTPUT_FORMATS)}.")


def _prepare(output: Path, parts: Path, description: dict, overwrite: bool) -> dict:
    """On the first process: lock the job, check (or start) the parts folder and an earlier output against the
    command. Returns what the other processes need: the launch id and whether the earlier output is reused."""
    check_output_name(output)
    if parts.exists() and not parts.is_dir():
        raise ScoringJobError(f"{parts} exists and is not a folder; remove it (FuScore keeps a job's chunks there).")
    locks = []  # closed on any error; the one of the parts folder in use is returned
    try:
        if parts.is_dir():
            locks.append(_lock(parts))
            if overwrite:
                shutil.rmtree(parts, ignore_errors=True)
        resuming = parts.is_dir()
        if resuming:
            job_file = parts / JOB_FILE
            if not job_file.is_file():
                raise ScoringJobError(f"{parts} has no {JOB_FILE}: it is not a FuScore job folder; remove it or pass --overwrite.")
            try:
                started = json.loads(job_file.read_text())
            except ValueError as error:
                raise ScoringJobError(f"{job_file} is damaged ({error}); pass --overwrite to start the job again.") from None
            problem = _mismatch(started, description, f"The partial output {parts}")
            if problem:
                count = scored_rows(parts)
                raise ScoringJobError(f"{problem}. Resume it with the same model, dimensions and source, or pass "
                                      f"--overwrite to discard its {count} scores and start again.")
            atomic.remove_stale_temporaries(parts)
            for stale in [*parts.glob(FAILED_PREFIX + "*"), *parts.glob(FINISHED_PREFIX + "*")]:
                stale.unlink()
        else:
            with atomic.atomic_folder(parts) as staging:
                atomic.write_text(staging / JOB_FILE, json.dumps(description, indent=2))
            locks.append(_lock(parts))
        reuse = earlier_matches = False
        if output.suffix.lower() == ".parquet" and output.is_file() and not overwrite:
            existing = _read_metadata(output)
            if existing is None:
                raise ScoringJobError(f"{output} exists and is not a FuScore scores file; pass --overwrite to replace it.")
            problem = _mismatch(existing, description, f"The existing output {output}")
            if problem and not resuming:
                raise ScoringJobError(f"{problem}. Give another --output, or pass --overwrite to replace it.")
            # A matching partial output was started for this file (by an --overwrite run): it replaces the file.
            reuse = earlier_matches = problem is None
        elif output.suffix.lower() == ".json" and output.is_file() and not overwrite and not resuming:
            existing = _read_json_metadata(output)
            if existing is None:
                raise ScoringJobError(f"{output} exists and is not a FuScore scores file; pass --overwrite to replace it.")
            problem = _mismatch(existing, description, f"The existing output {output}")
            if problem:
                raise ScoringJobError(f"{problem}. Give another --output, or pass --overwrite to replace it.")
            earlier_matches = True
        elif output.suffix.lower() in (".csv", ".jsonl") and output.is_file() and not overwrite and not resuming:
            kind = "a CSV file" if output.suffix.lower() == ".csv" else "a JSON Lines file"
            raise ScoringJobError(f"{output} exists, and {kind} does not record the model and settings that wrote "
                                  "it (Parquet and JSON outputs do): give another --output, or pass --overwrite to "
                                  "replace it.")
        if description.get("artifact_maps"):
            # The maps of a job resumed, or of the earlier run of the same job, are this job's own.
            _check_maps_dir(Path(description["artifact_maps"]), may_hold_files=overwrite or resuming or earlier_matches)
    except BaseException:
        for lock in locks:
            lock.release()
        raise
    for lock in locks[:-1]:
        lock.release()
    return {"launch": new_launch_id(), "reuse": reuse, "error": None, "lock": locks[-1]}


def new_launch_id() -> str:
    """A launch's id: the time in nanoseconds (16 hex digits) and 4 random ones, so chunk files sort by launch in
    the order the launches started, and a newer row of an item replaces an older one."""
    return f"{time.time_ns():016x}{uuid.uuid4().hex[:4]}"


def _broadcast(state, value):
    if state is None or state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    holder = [value]
    broadcast_object_list(holder, from_process=0)
    return holder[0]


def _done_rows(parts: Path, output: Path, reuse: bool) -> dict:
    """key -> the content columns of the item's newest row, for the items whose newest row has scores."""
    tables = ([_read_keys(output)] if reuse else []) + [_read_keys(path) for path in _part_files(parts)]
    newest = {}
    for table in tables:  # oldest first: the earlier output, then the chunks in launch order
        for row in table.to_pylist():
            newest[row["key"]] = row
    return {key: row for key, row in newest.items() if row["error"] is None}


class _Progress:
    """The job's one progress bar, on the first process: items with a row, all processes together (counted from the
    chunk files' names every half second when there are several processes)."""

    def __init__(self, enabled: bool, total: Optional[int], initial: int, parts: Optional[Path], launch: str, poll: bool):
        self.bar = None
        self.parts, self.launch, self.initial, self.own, self.pending = parts, launch, initial, 0, 0
        self._stop = threading.Event()
        self._thread = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="Scoring", unit="image", dynamic_ncols=True)
            if poll and parts is not None:
                self._thread = threading.Thread(target=self._poll, daemon=True)
                self._thread.start()

    def _count(self) -> int:
        rows = 0
        for path in _part_files(self.parts):
            match = PART_PATTERN.match(path.name)
            if match["launch"] == self.launch:
                rows += int(match["rows"])
        return rows

    def _poll(self):
        while not self._stop.wait(0.5):
            try:
                count = self._count()
            except OSError:
                continue
            self.bar.n = self.initial + count + self.pending
            self.bar.refresh()

    def advance(self, rows: int, pending: bool = False):
        """`rows` more items scored by this process; `pending`: not yet in a chunk file (scored batch by batch)."""
        self.own += rows
        if pending:
            self.pending += rows
        if self.bar is not None and self._thread is None:
            self.bar.update(rows)

    def written(self, rows: int):
        """`rows` of the pending items are now in a chunk file (the bar counts them there)."""
        self.pending -= rows

    def rescore(self):
        """An item counted as done by an earlier run is scored again (its image changed)."""
        self.initial -= 1
        if self.bar is not None and self._thread is None:
            self.bar.update(-1)

    def close(self):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.bar.n = self.initial + self._count()
        if self.bar is not None:
            self.bar.close()


def run_scoring_job(model, source: ItemSource, dimensions: Sequence[str], output=None, *, model_name: str = "",
                    model_revision: Optional[str] = None, batch_size: int = 8, num_workers: int = 0,
                    chunk_size: int = DEFAULT_CHUNK_SIZE, on_error: str = "stop", overwrite: bool = False,
                    progress: bool = True, state=None, poll_seconds: float = 0.5, maps_dir=None) -> JobResult:
    """Scores every item of `source` on `dimensions` into `output` (.parquet, .csv or .json), resumably.

    With `state` (accelerate's `PartialState`) of several processes, each scores its shard and the first one merges
    the output once every item has a row. Without `output` the job runs in one process and in memory
    (`JobResult.table`). Raises `ScoringJobError` on a mismatch with an earlier run, `ImageInputError` for a bad
    image under `on_error="stop"` (what was scored before it is kept for the relaunch). With `maps_dir`, the
    artifact maps are written there too (see the module's notes); a model without the artifact map head is refused.
    """
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    rank = state.process_index if state is not None else 0
    world = state.num_processes if state is not None else 1
    main = rank == 0
    level_words = check_level_words(model)
    if maps_dir is not None:
        from scoring_fuscore import check_artifact_maps

        maps_dir = Path(maps_dir)
        try:
            check_artifact_maps(model, f"The model {model_name}" if model_name else "This model")
        except ValueError as error:
            raise ScoringJobError(str(error)) from None
    description = job_description(model_name, model_revision, dimensions, level_words, source,
                                  getattr(model.get_processor(), "input_mode", None), maps_dir=maps_dir)
    schema = _scores_schema(source.columns, dimensions, maps=maps_dir is not None)

    if output is None:
        if world > 1:
            raise ScoringJobError("Several processes need --output: each writes its chunks beside it.")
        if maps_dir is not None:
            _check_maps_dir(maps_dir, may_hold_files=overwrite)
        tables = []
        bar = _Progress(progress, source.total, 0, None, "", poll=False)
        try:
            for _, chunk in _chunks(source.iter_items(lambda position, key: True), chunk_size):
                counted = set()

                def on_batch(completed):
                    fresh = {index for index, _ in completed} - counted
                    counted.update(fresh)
                    bar.advance(len(fresh))

                results = score_chunk(model, chunk, dimensions, batch_size=batch_size, num_workers=num_workers,
                                      on_error=on_error, on_batch=on_batch, return_maps=maps_dir is not None)
                _write_maps(maps_dir, chunk, [detail for detail, _ in results])
                tables.append(_chunk_table(chunk, results, schema, dimensions))
                bar.advance(len(chunk) - len(counted))
        finally:
            bar.close()
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(description)})
        failures = _failures(table)
        return JobResult(None, True, table.num_rows, len(failures), n_scored=table.num_rows, failures=failures, table=table)

    output = Path(output)
    parts = parts_folder(output)
    plan, lock = {"launch": None, "reuse": False, "error": None}, None
    if main:
        try:
            plan = _prepare(output, parts, description, overwrite)
        except (ScoringJobError, OSError) as error:
            _broadcast(state, {"error": str(error)})
            raise
        lock = plan.pop("lock")
    plan = _broadcast(state, plan)
    if plan.get("error"):
        raise StoppedByFirstProcess(plan["error"])
    try:
        return _run_shard(model, source, dimensions, output=output, parts=parts, plan=plan, description=description,
                          schema=schema, rank=rank, world=world, batch_size=batch_size, num_workers=num_workers,
                          chunk_size=chunk_size, on_error=on_error, progress=progress, poll_seconds=poll_seconds,
                          maps_dir=maps_dir)
    finally:
        if lock is not None:
            lock.release()


def _run_shard(model, source: ItemSource, dimensions: Sequence[str], *, output: Path, parts: Path, plan: dict,
               description: dict, schema: pa.Schema, rank: int, world: int, batch_size: int, num_workers: int,
               chunk_size: int, on_error: str, progress: bool, poll_seconds: float,
               maps_dir: Optional[Path] = None) -> JobResult:
    """This process's chunks; then, on the first process, the wait for the others' and the merge."""
    from processing_fuscore import ImageInputError

    main = rank == 0
    launch = plan["launch"]

    done = _done_rows(parts, output, plan["reuse"])

    def own(position: int, key: str) -> bool:
        return owner_of(position // chunk_size, world) == rank

    remapped = set()  # items scored before whose map file is gone

    def needed(item: JobItem) -> bool:
        row = done.get(item.key)
        if row is None:
            return True
        if _unchanged(item, row):
            if maps_dir is None or (maps_dir / map_file_name(item.key)).is_file():
                return False
            remapped.add(item.key)
        bar.rescore()  # its image changed since it was scored (or its map is gone): it is scored again
        return True

    if getattr(source, "streaming", False):  # counting the stream's keys would read it once more
        initial = len(done) if source.total is None else min(len(done), source.total)
    else:
        initial = len(set(done).intersection(source.keys()))
    bar = _Progress(progress and main, source.total, initial, parts, launch, poll=world > 1)
    scored = 0
    try:
        items = (item for item in source.iter_items(own) if needed(item))
        for sequence, (_, chunk) in enumerate(_chunks(items, chunk_size)):
            contents = [(content_stat(item), content_sha256(item)) for item in chunk]
            finished = {}  # position in the chunk -> scores, batch by batch: what an interrupt keeps

            def on_batch(completed):
                for index, detail in completed:
                    if index not in finished:
                        finished[index] = detail
                        bar.advance(1, pending=True)

            name = f"part-{launch}-r{rank:05d}-{sequence:06d}-n{{rows}}.parquet"
            try:
                results = score_chunk(model, chunk, dimensions, batch_size=batch_size, num_workers=num_workers,
                                      on_error=on_error, on_batch=on_batch, return_maps=maps_dir is not None)
            except BaseException as error:  # Ctrl-C, a bad image under "stop": the batches scored so far are kept
                if finished and (parts / JOB_FILE).is_file():
                    kept = sorted(finished)
                    _write_maps(maps_dir, [chunk[i] for i in kept], [finished[i] for i in kept])  # before their rows
                    table = _chunk_table([chunk[i] for i in kept], [(finished[i], None) for i in kept], schema,
                                         dimensions, [contents[i] for i in kept])
                    _write_table(parts / name.format(rows=len(kept)), table)
                    bar.written(len(kept))
                if isinstance(error, ImageInputError) and world > 1:
                    atomic.write_text(parts / f"{FAILED_PREFIX}{launch}-r{rank:05d}.txt", str(error))
                raise
            table = _chunk_table(chunk, results, schema, dimensions, contents)
            _check_parts(parts)
            _write_maps(maps_dir, chunk, [detail for detail, _ in results])  # before the rows that name them
            _write_table(parts / name.format(rows=len(chunk)), table)
            scored += len(chunk)
            bar.advance(len(chunk) - len(finished))
            bar.written(len(finished))
        if not main:
            _check_parts(parts)
            atomic.write_text(parts / f"{FINISHED_PREFIX}{launch}-r{rank:05d}", "")
            return JobResult(output, False, n_scored=scored)
        all_keys = source.keys()
        _wait_for_processes(parts, launch, world, poll_seconds)
    finally:
        bar.close()
    result = _merge(output, parts, all_keys, plan["reuse"], description, schema, launch, remapped)
    result.n_scored = scored
    return result


def _check_parts(parts: Path) -> None:
    """The job folder is still there (a job whose folder was removed while it ran stops instead of writing chunks
    that no relaunch would trust; its lock went with the folder)."""
    if not (parts / JOB_FILE).is_file():
        raise ScoringJobError(f"{parts} was removed while the job ran, with the chunks scored so far; run the command "
                              "again to score them again.")


def _wait_for_processes(parts: Path, launch: str, world: int, poll_seconds: float) -> None:
    """On the first process: until every other process of this launch says it wrote its last chunk, or one of them
    reports that it stopped. One process waits for nothing (the merge then names any item without a row)."""
    while world > 1:
        _check_parts(parts)
        finished = list(parts.glob(f"{FINISHED_PREFIX}{launch}-*"))
        if len(finished) >= world - 1:
            return
        failed = sorted(parts.glob(f"{FAILED_PREFIX}{launch}-*"))
        if failed:
            rank = int(failed[0].stem.rsplit("-r", 1)[1])
            raise ScoringJobError(f"process {rank} stopped: {failed[0].read_text().strip()}")
        time.sleep(poll_seconds)


def _failures(table: pa.Table) -> list:
    keys, errors = table.column("key").to_pylist(), table.column("error").to_pylist()
    return [(key, error) for key, error in zip(keys, errors) if error is not None]


def _merge(output: Path, parts: Path, keys: Sequence[str], reuse: bool, description: dict, schema: pa.Schema,
           this_launch: str, remapped: frozenset = frozenset()) -> JobResult:
    """Every key's newest row (the earlier output's rows first, then the chunks in launch order), in input order,
    written to `output`; the parts go. Counts the items this launch scored again after an earlier run had scored
    them (their images changed) and those it took from earlier runs."""
    files = [path for path in _part_files(parts)]
    launches = ([None] if reuse else []) + [PART_PATTERN.match(path.name)["launch"] for path in files]
    tables = ([_read_rows(output)] if reuse else []) + [_read_rows(path) for path in files]
    tables = [table.replace_schema_metadata(None).select(schema.names).cast(schema) for table in tables]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    row_keys, errors = table.column("key").to_pylist(), table.column("error").to_pylist()
    row_launches = [launch for launch, part in zip(launches, tables) for _ in range(part.num_rows)]
    best, rescored = {}, set()
    for row, (key, error) in enumerate(zip(row_keys, errors)):
        if key in best and errors[best[key]] is None and row_launches[row] == this_launch and row_launches[best[key]] != this_launch:
            rescored.add(key)
        best[key] = row
    missing = [key for key in keys if key not in best]
    if missing:
        raise ScoringJobError(f"{parts}: no result for {len(missing)} items (e.g. {missing[0]}); run the same command again.")
    merged = table.take(pa.array([best[key] for key in keys], type=pa.int64()))
    wanted = set(keys)
    dropped = sum(1 for key in best if key not in wanted)
    reused = sum(1 for key in keys if row_launches[best[key]] != this_launch)
    n_remapped = len(rescored & wanted & set(remapped))
    rescored = len((rescored - set(remapped)) & wanted)
    failures = _failures(merged)
    description = {**description, "n_items": merged.num_rows, "n_failed": len(failures)}
    merged = merged.replace_schema_metadata({METADATA_KEY: json.dumps(description)})
    write_scores(output, merged)
    shutil.rmtree(parts, ignore_errors=True)
    return JobResult(output, True, merged.num_rows, len(failures), failures=failures, table=merged, dropped=dropped,
                     n_reused=reused, n_rescored=rescored, n_remapped=n_remapped)


# =================================================================================================== writing
def _score_columns(table: pa.Table) -> list:
    return [name for name in table.column_names if not name.endswith("_probs")]


def write_scores(output, table: pa.Table) -> Path:
    """Writes a scores table as Parquet (with its metadata), CSV (no level probabilities), JSON (one document with
    the metadata, its rows under "images") or JSON Lines (one row per line), whole or not at all."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix == ".parquet":
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        return atomic.write_bytes(output, buffer.getvalue())
    rows = table.to_pylist()
    if suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_score_columns(table), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: ("" if value is None else value) for key, value in row.items()} for row in rows)
        return atomic.write_text(output, buffer.getvalue())
    if suffix in (".json", ".jsonl"):
        metadata = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
        words, dimensions = metadata.get("level_words", []), metadata.get("dimensions", [])
        for row in rows:
            probs = {dim: row.pop(f"{dim}_probs") for dim in dimensions}
            row["probs"] = {dim: None if values is None else dict(zip(words, values)) for dim, values in probs.items()}
        if suffix == ".jsonl":  # JSON Lines: one row per line, as `load_dataset("json")` and pandas read it
            return atomic.write_text(output, "".join(json.dumps(row) + "\n" for row in rows))
        document = {"model": metadata.get("model"), "dimensions": dimensions, "metadata": metadata, "images": rows}
        return atomic.write_text(output, json.dumps(document, indent=2))
    raise ScoringJobError(f"--output {output}: the name must end in {', '.join(OUTPUT_FORMATS)}.")
