import os
import stat
from pathlib import Path

import pytest

from fuscore import atomic


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_text_replaces_whole_file_with_umask_mode(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic.write_text(target, "first")
    atomic.write_text(target, "second")
    assert target.read_text() == "second"
    assert _mode(target) == 0o666 & ~atomic.current_umask()
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failed_file_write_leaves_previous_content(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("kept")

    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(atomic.AtomicWriteError, match="out.txt.*No space left"):
        atomic.write_text(target, "lost")
    assert target.read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_folder_is_whole_or_absent(tmp_path):
    target = tmp_path / "final"
    with pytest.raises(RuntimeError):
        with atomic.atomic_folder(target) as staging:
            (staging / "config.json").write_text("{}")
            raise RuntimeError("killed half-way")
    assert list(tmp_path.iterdir()) == []

    with atomic.atomic_folder(target) as staging:
        (staging / "config.json").write_text("{}")
    assert (target / "config.json").read_text() == "{}"
    assert _mode(target) == 0o777 & ~atomic.current_umask()


def test_atomic_folder_refuses_or_replaces_existing(tmp_path):
    target = tmp_path / "final"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite"):
        with atomic.atomic_folder(target):
            pass
    with atomic.atomic_folder(target, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_os_error_inside_folder_names_the_target(tmp_path):
    target = tmp_path / "export"
    with pytest.raises(atomic.AtomicWriteError, match="export"):
        with atomic.atomic_folder(target):
            raise OSError(28, "No space left on device")
    assert not target.exists()


def test_remove_stale_temporaries(tmp_path):
    (tmp_path / ".final.tmp-abc").mkdir()
    (tmp_path / ".out.txt.tmp-1").write_text("x")
    (tmp_path / "keep").mkdir()
    removed = atomic.remove_stale_temporaries(tmp_path)
    assert len(removed) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]


def test_a_rank_killed_mid_write_leaves_no_hidden_folder_behind(tmp_path):
    """`fuscore rank --overwrite` killed while it wrote left `.out.tmp-*` beside the report; the next run removes
    it (and only the temporaries of its own output)."""
    import tempfile

    from fuscore.atomic import _temporary_prefix
    from fuscore.ranking import check_output_folder

    output = tmp_path / "out"
    output.mkdir()
    left = Path(tempfile.mkdtemp(dir=tmp_path, prefix=_temporary_prefix(output.absolute())))
    (left / "ranking.csv").write_text("half")
    other = Path(tempfile.mkdtemp(dir=tmp_path, prefix=_temporary_prefix(tmp_path / "other")))
    check_output_folder(output, overwrite=True)
    assert not left.exists() and other.exists()
