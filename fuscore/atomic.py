# Copyright 2026 The FuScore authors. Apache-2.0.
"""Whole-or-absent writes: the one place where FuScore writes files and folders atomically.

Every file and folder the project produces (tables, rankings, reports, checkpoints, final and exported model
folders, scoring chunks) is written under a temporary name in the same parent folder and renamed into place only when
it is complete, so a reader, a resume or a crash never meets half of it under the final name. The temporary names
start with a dot and carry `.tmp-`, so they are easy to recognise and to clean up (`remove_stale_temporaries`).

Files and folders get the ordinary permissions of the process umask (``mkstemp``/``mkdtemp`` would make them
private). A failure (disk full, permission, an exception in the writer) removes the temporary, leaves what was under
the final name untouched, and raises :class:`AtomicWriteError` naming the target.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Iterator, Union

PathLike = Union[str, os.PathLike]
TEMPORARY_MARK = ".tmp-"


class AtomicWriteError(OSError):
    """A file or folder could not be written; nothing was left under its final name. The message names it."""


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary_prefix(target: Path) -> str:
    return f".{target.name}{TEMPORARY_MARK}"


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file beside it, then rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path))
    except OSError as error:
        raise AtomicWriteError(f"Could not write {path}: {error.strerror or error}.") from error
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        if isinstance(error, OSError):
            raise AtomicWriteError(f"Could not write {path}: {error.strerror or error}; nothing was written there.") from error
        raise
    return path


def write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (see `write_bytes`)."""
    return write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def atomic_folder(target: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name beside `target`; on success rename it to `target`.

        with atomic_folder("outputs/final", overwrite=True) as staging:
            model.save_pretrained(staging)

    With `overwrite`, an existing `target` is replaced only once the new folder is complete (and put back if the
    swap fails); without it an existing `target` is an error raised before anything is written. On any exception the
    temporary folder is removed and `target` is left as it was.
    """
    target = Path(target).absolute()
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True (or --overwrite) to replace it.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=_temporary_prefix(target)))
        os.chmod(staging, 0o777 & ~current_umask())
    except OSError as error:
        raise AtomicWriteError(f"Could not create a folder beside {target}: {error.strerror or error}.") from error
    try:
        yield staging
        _swap_into_place(staging, target, overwrite)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError) and not isinstance(error, (AtomicWriteError, FileExistsError)):
            raise AtomicWriteError(
                f"Could not write the folder {target}: {error.strerror or error}. Nothing was left under that name."
            ) from error
        raise


def _swap_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    if not overwrite:
        raise FileExistsError(f"{target} appeared while it was being written; nothing was replaced.")
    retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    os.replace(target, retired / target.name)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(retired / target.name, target)  # put the previous folder back
        shutil.rmtree(retired, ignore_errors=True)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def remove_stale_temporaries(folder: PathLike, target: Optional[PathLike] = None) -> list[Path]:
    """Remove temporaries that an interrupted write left in `folder` (names made by this module); returns them.
    With `target`, only those of writes to `target` (a file or folder in `folder`)."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    prefixes = (_temporary_prefix(Path(target)), f".{Path(target).name}.old-") if target is not None else (".",)
    for entry in folder.iterdir():
        if entry.name.startswith(prefixes) and (TEMPORARY_MARK in entry.name or ".old-" in entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed.append(entry)
    return removed
