"""`fuscore score ... --output scores.parquet`: sharded, resumable, dataset-native scoring (fuscore.scoring_job).

One process in this process (fast), two under torchrun with gloo on the CPU (marked slow): the two-process output
equals the one-process output bit for bit, a SIGKILLed run relaunched yields every item once, a relaunch with
another model or other dimensions refuses, `--on-error skip` lists the bad items.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import REPO_ROOT
from fuscore.cli import main
from fuscore.scoring_job import PARTS_SUFFIX, parts_folder
from fuscore.tiny import build_tiny_model


@pytest.fixture(scope="module")
def models(saved_tiny_model, tmp_path_factory):
    """Two tiny saved models with different weights (the same architecture): the shared one and another seed's."""
    other = tmp_path_factory.mktemp("job_models") / "model4"
    build_tiny_model("qwen2_vl", seed=4).save_pretrained(other)
    return [saved_tiny_model, other]


def _write_images(folder: Path, count: int, seed: int = 0, prefix: str = "img") -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        # Two sizes, so batches mix visual-token counts.
        shape = (32, 40, 3) if index % 3 else (44, 36, 3)
        path = folder / f"{prefix}{index:03d}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _rows(path) -> list:
    return pq.read_table(path).to_pylist()


def _metadata(path) -> dict:
    return json.loads(pq.read_schema(path).metadata[b"fuscore"])


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _kill_launch(process) -> None:
    """SIGKILL a launcher and every process under it (torchrun starts its workers in sessions of their own), as an
    out-of-memory kill or a lost node would."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, pending = [], [process.pid]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    # The workers are not this process's children: wait until each has exited, as a relaunch after a real kill would
    # find them. A process's files and locks are released when its last thread exits; its main thread can be a zombie
    # ("Z") while other threads still tear down, so every thread must be gone or a zombie. On a loaded machine that
    # takes a moment.
    deadline = time.monotonic() + 60
    for pid in tree:
        while time.monotonic() < deadline and not _exited(pid):
            time.sleep(0.01)


def _exited(pid: int) -> bool:
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return False
        except OSError:
            continue  # this thread is gone
    return True


def _torchrun(processes: int) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", "fuscore"]


# ------------------------------------------------------------------------------------------------ one process
def test_folder_to_parquet_loads_with_datasets_and_equals_model_score(models, loaded_tiny_model, tmp_path, capsys):
    import datasets

    paths = _write_images(tmp_path / "images", 10)
    output = tmp_path / "out" / "scores.parquet"
    assert main(["score", str(tmp_path / "images"), "--model", str(models[0]), "--dimensions", "overall,sharpness",
                 "--chunk-size", "4", "--output", str(output)]) == 0
    assert "Wrote 10 scores" in capsys.readouterr().err
    assert not parts_folder(output).exists(), "the parts folder is removed once the output is written"
    assert sorted(p.name for p in output.parent.iterdir()) == ["scores.parquet"]

    loaded = datasets.load_dataset("parquet", data_files=str(output), split="train")
    assert loaded.column_names == ["key", "path", "overall", "overall_std", "overall_probs", "sharpness",
                                   "sharpness_std", "sharpness_probs", "content_stat", "content_sha256", "error"]
    assert loaded["path"] == [str(p) for p in paths]
    assert loaded["key"] == [os.path.abspath(p) for p in paths]
    assert loaded["error"] == [None] * 10

    # Each chunk of 4 consecutive images is one call of the public API: the scores are those, bit for bit.
    model = loaded_tiny_model
    expected = []
    for start in range(0, 10, 4):
        expected += model.score([str(p) for p in paths[start : start + 4]], dimensions=["overall", "sharpness"],
                                return_details=True)
    for row, detail in zip(loaded, expected):
        for dim in ("overall", "sharpness"):
            assert row[dim] == detail[dim]["score"] and row[f"{dim}_std"] == detail[dim]["std"]
            assert row[f"{dim}_probs"] == pytest.approx(detail[dim]["probs"], abs=0, rel=0)

    metadata = _metadata(output)
    assert metadata["model"] == str(models[0].absolute())
    assert metadata["model_revision"].startswith("sha256:")
    assert metadata["dimensions"] == ["overall", "sharpness"]
    assert metadata["level_words"] == list(model.config.level_words)
    assert metadata["n_items"] == 10 and metadata["n_failed"] == 0
    assert {"torch", "transformers", "datasets", "pyarrow", "python"} <= set(metadata["versions"])


@pytest.mark.slow
def test_stopped_run_resumes_with_the_same_settings_and_refuses_others(models, tmp_path, capsys):
    paths = _write_images(tmp_path / "images", 10)
    bad = tmp_path / "images" / "zz_truncated.png"
    bad.write_bytes(paths[0].read_bytes()[:60])
    output = tmp_path / "scores.parquet"
    command = ["score", str(tmp_path / "images"), "--chunk-size", "3", "--output", str(output)]
    same = ["--model", str(models[0]), "--dimensions", "overall"]

    assert main([*command, *same]) == 2  # stops at the bad image, the 11th item
    assert "zz_truncated.png" in capsys.readouterr().err
    parts = parts_folder(output)
    written = sorted(p.name for p in parts.glob("part-*.parquet"))
    assert len(written) == 3 and not output.exists()  # 9 items in 3 whole chunks; the 4th chunk holds the bad one

    from filelock import FileLock

    with FileLock(parts / "job.lock"):  # as a launch that is still running holds it
        assert main([*command, *same]) == 2
        assert "in use by another `fuscore score` job that is still running" in capsys.readouterr().err

    for other in (["--model", str(models[1]), "--dimensions", "overall"],
                  ["--model", str(models[0]), "--dimensions", "overall,sharpness"]):
        assert main([*command, *other]) == 2
        error = capsys.readouterr().err
        assert "scored with other settings" in error and "--overwrite" in error
        assert ("model revision" in error) if other[1] == str(models[1]) else ("dimensions" in error)
        assert sorted(p.name for p in parts.glob("part-*.parquet")) == written, "a refused run writes nothing"

    Image.open(paths[1]).save(bad)  # the user fixes the file
    assert main([*command, *same]) == 0
    assert "Wrote 11 scores to" in capsys.readouterr().err.split("(9 of them scored by an earlier run)")[0]
    rows = _rows(output)
    assert [row["key"] for row in rows] == sorted(os.path.abspath(p) for p in [*paths, bad])
    fresh = tmp_path / "fresh.parquet"
    assert main([*command[:-1], str(fresh), *same]) == 0
    assert rows == _rows(fresh), "a resumed job equals an uninterrupted one bit for bit"

    # A finished output is part of the job too: the same command scores nothing again, another model refuses.
    capsys.readouterr()
    assert main([*command, *same]) == 0
    assert "(11 of them scored by an earlier run)" in capsys.readouterr().err
    assert main([*command, "--model", str(models[1]), "--dimensions", "overall"]) == 2
    assert f"The existing output {output} was scored with other settings" in capsys.readouterr().err
    assert main([*command, "--model", str(models[1]), "--dimensions", "overall", "--overwrite"]) == 0
    assert _metadata(output)["model"] == str(models[1].absolute())


def test_a_damaged_parts_folder_is_an_error_that_says_what_to_do(models, tmp_path, capsys):
    _write_images(tmp_path / "images", 5)
    (tmp_path / "images" / "img004.png").write_bytes(b"broken")
    output = tmp_path / "scores.parquet"
    command = ["score", str(tmp_path / "images"), "--model", str(models[0]), "--dimensions", "overall",
               "--chunk-size", "2", "--output", str(output)]
    assert main(command) == 2
    parts = parts_folder(output)
    damaged = sorted(parts.glob("part-*.parquet"))[0]
    damaged.write_bytes(damaged.read_bytes()[:40])  # damaged behind FuScore's back (a disk fault, a hand edit)
    command[command.index("--output"):command.index("--output")] = ["--on-error", "skip"]
    capsys.readouterr()
    assert main(command) == 2
    error = capsys.readouterr().err
    assert str(damaged) in error and "Delete the file" in error and "Traceback" not in error
    damaged.unlink()
    (parts / "job.json").write_text("{")
    assert main(command) == 2
    error = capsys.readouterr().err
    assert "job.json is damaged" in error and "--overwrite" in error
    assert main([*command, "--overwrite"]) == 1  # the broken image is recorded, the rest scored
    assert len(_rows(output)) == 5


def test_on_error_skip_lists_the_bad_items_and_a_relaunch_retries_them(models, loaded_tiny_model, tmp_path, capsys):
    paths = _write_images(tmp_path / "images", 8)
    images = tmp_path / "images"
    (images / "b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "c_tiny.png")
    (images / "d_notes.png").write_text("meeting notes, not an image")
    output = tmp_path / "scores.parquet"
    command = ["score", str(images), "--model", str(models[0]), "--dimensions", "overall", "--chunk-size", "4",
               "--on-error", "skip", "--output", str(output)]
    assert main(command) == 1
    error = capsys.readouterr().err
    assert "3 of 11 items could not be scored" in error
    for name in ("b_corrupt.png", "c_tiny.png", "d_notes.png"):
        assert name in error

    rows = {Path(row["path"]).name: row for row in _rows(output)}
    assert len(rows) == 11
    for name in ("b_corrupt.png", "c_tiny.png", "d_notes.png"):
        assert rows[name]["overall"] is None and name in rows[name]["error"]
    assert "too small" in rows["c_tiny.png"]["error"]
    assert _metadata(output)["n_failed"] == 3
    # The good images of a chunk with bad ones are scored all the same (to the engine's last-bit batch effects).
    model = loaded_tiny_model
    for path, expected in zip(paths, model.score([str(p) for p in paths])):
        assert rows[path.name]["overall"] == pytest.approx(expected, abs=1e-6)
        assert rows[path.name]["error"] is None

    Image.open(paths[0]).save(images / "b_corrupt.png")
    assert main(command) == 1  # the two other bad files are still bad
    error = capsys.readouterr().err
    assert "2 of 11 items could not be scored" in error and "(8 of them scored by an earlier run)" in error
    rows = {Path(row["path"]).name: row for row in _rows(output)}
    assert rows["b_corrupt.png"]["error"] is None and rows["b_corrupt.png"]["overall"] is not None

    # Printed as a table, the bad items say why.
    assert main(["score", str(images / "c_tiny.png"), str(paths[0]), "--model", str(models[0]), "--dimensions",
                 "overall", "--on-error", "skip"]) == 1
    printed = capsys.readouterr().out
    assert "c_tiny.png  not scored:" in printed and f"{model.score(str(paths[0])):.3f}" in printed


def test_datasets_sources_save_to_disk_rating_table_and_streamed_parquet(models, tmp_path, monkeypatch, capsys):
    import datasets

    from fuscore_data.schema import conform_to_schema
    from fuscore_data.tables import save_arrow

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    paths = _write_images(tmp_path / "images", 9)
    reference = tmp_path / "files.parquet"
    common = ["--model", str(models[0]), "--dimensions", "overall", "--chunk-size", "4"]
    assert main(["score", str(tmp_path / "images"), *common, "--output", str(reference)]) == 0
    expected = [row["overall"] for row in _rows(reference)]

    # A save_to_disk folder with two splits and an Image column named "picture".
    table = datasets.Dataset.from_dict({"picture": [str(p) for p in paths], "note": list("abcdefghi")})
    table = table.cast_column("picture", datasets.Image())
    splits = datasets.DatasetDict({"first": table.select(range(4)), "second": table.select(range(4, 9))})
    splits.save_to_disk(str(tmp_path / "saved"))
    output = tmp_path / "saved.parquet"
    assert main(["score", str(tmp_path / "saved"), "--image-column", "picture", *common, "--output", str(output)]) == 0
    rows = _rows(output)
    assert [row["key"] for row in rows] == [f"first/{i}" for i in range(4)] + [f"second/{i}" for i in range(5)]
    assert [(row["split"], row["row"]) for row in rows] == [("first", i) for i in range(4)] + [("second", i) for i in range(5)]
    # The chunks of 4 cover the same images (4 in "first", then 4 + 1), so the scores are the files' scores.
    assert [row["overall"] for row in rows] == expected
    assert main(["score", str(tmp_path / "saved"), "--image-column", "picture", "--split", "second", *common,
                 "--output", str(tmp_path / "second.parquet")]) == 0
    assert [row["key"] for row in _rows(tmp_path / "second.parquet")] == [f"second/{i}" for i in range(5)]

    # A FuScore rating table (save_arrow): its `fused` column is read without --image-column.
    rating = conform_to_schema(datasets.Dataset.from_dict({
        "fused": [str(p) for p in paths], "pair_id": [f"p{i}" for i in range(9)], "method": ["m"] * 9}))
    save_arrow(rating, tmp_path / "table", validate=False)
    assert main(["score", str(tmp_path / "table"), *common, "--output", str(tmp_path / "table.parquet")]) == 0
    assert [row["overall"] for row in _rows(tmp_path / "table.parquet")] == expected

    # A Parquet data file with embedded images, through load_dataset, streamed and not.
    table.to_parquet(str(tmp_path / "data.parquet"))
    for extra in ([], ["--streaming"]):
        output = tmp_path / f"parquet{len(extra)}.parquet"
        assert main(["score", str(tmp_path / "data.parquet"), "--image-column", "picture", *extra, *common,
                     "--output", str(output)]) == 0
        rows = _rows(output)
        assert [row["key"] for row in rows] == [f"train/{i}" for i in range(9)]
        assert [row["overall"] for row in rows] == expected
        assert _metadata(output)["source"]["streaming"] == bool(extra)

    capsys.readouterr()
    assert main(["score", str(tmp_path / "saved"), "--image-column", "nope", *common, "--output", str(tmp_path / "x.parquet")]) == 2
    assert "--image-column 'nope' is not a column" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "saved"), *common, "--output", str(tmp_path / "x.parquet")]) == 2
    assert "name the column of fused images with --image-column" in capsys.readouterr().err


def test_manifest_source_keeps_pair_and_method(models, tmp_path):
    paths = _write_images(tmp_path / "images", 4)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("pair,method,fused\n" + "".join(f"s{i},m{i % 2},images/{p.name}\n" for i, p in enumerate(paths)))
    output = tmp_path / "scores.csv"
    assert main(["score", str(manifest), "--model", str(models[0]), "--dimensions", "overall", "--output", str(output)]) == 0
    import csv

    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["pair"], row["method"]) for row in rows] == [(f"s{i}", f"m{i % 2}") for i in range(4)]
    assert [row["path"] for row in rows] == [str(tmp_path / "images" / p.name) for p in paths]


def test_bad_arguments_are_refused_before_any_scoring(models, tmp_path, capsys):
    paths = _write_images(tmp_path / "images", 3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "nested" / "inner").mkdir(parents=True)
    Image.open(paths[0]).save(tmp_path / "nested" / "inner" / "deep.png")
    (tmp_path / "a_folder.parquet").mkdir()
    model = ["--model", str(models[0]), "--dimensions", "overall"]
    cases = [
        (["score", str(paths[0]), "--output", str(tmp_path / "a_folder.parquet")], "is a folder"),
        (["score", str(paths[0]), "--output", str(tmp_path / "scores.txt")], "must end in .parquet, .csv, .json, .jsonl"),
        (["score", str(paths[0]), str(paths[0])], "listed twice"),
        (["score", str(paths[0]), str(tmp_path / "images")], "listed twice"),
        (["score", str(tmp_path / "empty")], "holds no images"),
        (["score", str(tmp_path / "nested")], "add --recursive"),
        (["score", str(tmp_path / "no_such_folder")], "no such image file or folder"),
        (["score", "./no_such_dataset", "--image-column", "fused"], "no such file or folder"),
        (["score", str(tmp_path / "images"), "--split", "train"], "--split goes with a dataset"),
        (["score", str(tmp_path / "images"), "--streaming"], "--streaming goes with a dataset"),
        (["score", str(paths[0]), "--dimensions", ","], "--dimensions is empty; name at least one of"),
        (["score", str(paths[0]), "--device", "nonsense"], "--device 'nonsense': not a device"),
        (["score", str(tmp_path / "table.csv")], "name its image column with --image-column"),
        (["score", str(tmp_path / "no_rows")], "the dataset has no rows to score"),
        (["score", str(paths[0]), "--chunk-size", "0"], None),
    ]
    (tmp_path / "table.csv").write_text(f"image\n{paths[0]}\n")  # not a manifest: a table of image paths
    import datasets

    datasets.Dataset.from_dict({"fused": []}, features=datasets.Features({"fused": datasets.Image()})).save_to_disk(
        str(tmp_path / "no_rows"))
    for arguments, message in cases:
        arguments = [arguments[0], *model, *arguments[1:]]  # a case's own --dimensions comes last and counts
        if message is None:
            with pytest.raises(SystemExit) as stopped:
                main(arguments)
            assert stopped.value.code == 2
            assert "--chunk-size must be at least 1" in capsys.readouterr().err
            continue
        assert main(arguments) == 2, arguments
        assert message in capsys.readouterr().err, arguments
    assert not (tmp_path / "scores.txt").exists()
    assert main(["score", str(tmp_path / "nested"), "--recursive", *model, "--output", str(tmp_path / "deep.csv")]) == 0
    assert "deep.png" in (tmp_path / "deep.csv").read_text()


def test_a_changed_folder_keeps_earlier_scores_and_leaves_out_removed_items(models, tmp_path, capsys):
    paths = _write_images(tmp_path / "images", 4)
    output = tmp_path / "scores.parquet"
    command = ["score", str(tmp_path / "images"), "--model", str(models[0]), "--dimensions", "overall", "--output", str(output)]
    assert main(command) == 0
    paths[1].unlink()
    added = _write_images(tmp_path / "images", 1, seed=5, prefix="new")
    capsys.readouterr()
    assert main(command) == 0
    error = capsys.readouterr().err
    assert "(3 of them scored by an earlier run)" in error and "1 scores of an earlier run were left out" in error
    assert [row["path"] for row in _rows(output)] == [str(p) for p in (paths[0], paths[2], paths[3], *added)]


def test_a_model_that_reads_sources_needs_them_and_skip_records_a_missing_one(saved_tiny_model_ir_vis, tmp_path, capsys):
    model = saved_tiny_model_ir_vis
    fused = _write_images(tmp_path / "fused", 3)
    _write_images(tmp_path / "ir", 3, seed=1)
    _write_images(tmp_path / "vis", 3, seed=2)
    (tmp_path / "ir" / fused[1].name).unlink()
    common = ["score", str(tmp_path / "fused"), "--model", str(model), "--dimensions", "overall"]
    assert main([*common, "--ir", str(tmp_path / "ir")]) == 2
    assert "give --ir and --vis" in capsys.readouterr().err
    sources = ["--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis")]
    assert main([*common, *sources]) == 2  # stop: the missing source is an error before any scoring
    assert f"no ir source named {fused[1].name}" in capsys.readouterr().err
    output = tmp_path / "scores.csv"
    assert main([*common, *sources, "--on-error", "skip", "--output", str(output)]) == 1
    import csv

    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [bool(row["error"]) for row in rows] == [False, True, False]
    assert str(tmp_path / "ir" / fused[1].name) in rows[1]["error"] and "no such image file" in rows[1]["error"]


def test_an_error_every_process_meets_is_reported_once(models, tmp_path, monkeypatch, capsys):
    import fuscore.cli as cli

    import contextlib

    class SecondProcess:  # what accelerate's PartialState says on process 1 of 2
        process_index, num_processes, is_main_process = 1, 2, False
        main_process_first = staticmethod(contextlib.nullcontext)

    monkeypatch.setattr(cli, "_process_state", lambda device: SecondProcess())
    assert main(["score", str(tmp_path / "missing.png"), "--model", str(models[0]), "--output", str(tmp_path / "s.parquet")]) == 2
    assert main(["score", str(tmp_path / "missing.png"), "--model", str(models[0])]) == 2
    assert capsys.readouterr().err == "", "only the first process reports it"


def test_model_revision_names_the_weights_not_the_path(models, tmp_path):
    import shutil

    from fuscore.hub import add_folder_to_hub_cache
    from fuscore.model_identity import model_revision

    copy = tmp_path / "elsewhere"
    shutil.copytree(models[0], copy)
    assert model_revision(str(copy)) == model_revision(str(models[0])) != model_revision(str(models[1]))
    snapshot = add_folder_to_hub_cache(models[0], "org/revision-test", cache_dir=str(tmp_path / "hub"))
    assert model_revision("org/revision-test", cache_dir=str(tmp_path / "hub")) == snapshot.name


def test_hidden_resource_fork_files_are_not_images(models, tmp_path):
    """macOS leaves `._name.png` (AppleDouble metadata) beside each image on shared drives."""
    paths = _write_images(tmp_path / "images", 2)
    (tmp_path / "images" / "._img000.png").write_bytes(b"\x00\x05\x16\x07 Mac OS X metadata")
    output = tmp_path / "scores.csv"
    assert main(["score", str(tmp_path / "images"), "--model", str(models[0]), "--dimensions", "overall",
                 "--output", str(output)]) == 0
    assert "._img000" not in output.read_text() and paths[1].name in output.read_text()


@pytest.mark.slow
def test_python_dash_m_fuscore_is_the_command(tmp_path):
    missing = tmp_path / "missing.png"
    result = subprocess.run([sys.executable, "-m", "fuscore", "score", str(missing)], capture_output=True, text=True,
                            timeout=300, env=_env(), cwd=tmp_path)
    assert result.returncode == 2 and str(missing) in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------------ several processes
@pytest.mark.slow
def test_two_processes_equal_one_process_bit_for_bit(models, tmp_path):
    paths = _write_images(tmp_path / "images", 13)
    bad = tmp_path / "images" / "img004.png"
    bad.write_bytes(b"broken")
    common = ["score", str(tmp_path / "images"), "--model", str(models[0]), "--dimensions", "overall,artifacts",
              "--chunk-size", "2", "--on-error", "skip"]
    one = tmp_path / "one.parquet"
    assert main([*common, "--output", str(one)]) == 1
    two = tmp_path / "two.parquet"
    result = subprocess.run([*_torchrun(2), *common, "--output", str(two)], capture_output=True, text=True,
                            timeout=600, env=_env(), cwd=tmp_path)
    assert result.returncode != 0, "an item failed: the launch's exit status says so"
    assert "1 of 13 items could not be scored" in result.stderr and "img004.png" in result.stderr
    assert _rows(two) == _rows(one)
    assert len(_rows(two)) == len(paths)
    # One progress bar for the job, on the first process: it counts all 13 items, no bar counts a shard alone.
    bars = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("Scoring:")]
    assert bars and all("/13 " in line for line in bars) and any("13/13" in line for line in bars)

    # The same under `accelerate launch` (whose --cpu launcher starts one process only: its torchrun launcher, named
    # --multi_gpu, starts two on the CPU too).
    launched = tmp_path / "accelerate.parquet"
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "fuscore.cli",
                             *common, "--output", str(launched)], capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path)
    assert "1 of 13 items could not be scored" in result.stderr, result.stderr[-3000:]
    assert _rows(launched) == _rows(one)


@pytest.mark.slow
def test_sigkill_mid_way_then_relaunch_gives_every_item_exactly_once(models, tmp_path, capsys):
    paths = _write_images(tmp_path / "images", 90)
    output = tmp_path / "scores.parquet"
    common = ["score", str(tmp_path / "images"), "--model", str(models[0]), "--dimensions", "overall", "--chunk-size", "2"]
    process = subprocess.Popen([*_torchrun(2), *common, "--output", str(output)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=_env(), cwd=tmp_path)
    parts = parts_folder(output)
    deadline = time.monotonic() + 300
    try:
        while len(list(parts.glob("part-*.parquet"))) < 6 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        _kill_launch(process)
    done = len(list(parts.glob("part-*.parquet")))
    assert not output.exists() and 6 <= done < 45, f"the kill must land mid-way ({done} of 45 chunks written)"

    assert main([*common, "--model", str(models[1]), "--output", str(output)]) == 2  # another model refuses
    assert "model revision" in capsys.readouterr().err
    # Relaunched with one process (any process count resumes the same job).
    assert main([*common, "--output", str(output)]) == 0
    assert f"of them scored by an earlier run" in capsys.readouterr().err
    rows = _rows(output)
    keys = [row["key"] for row in rows]
    assert keys == [os.path.abspath(p) for p in paths] and len(set(keys)) == 90
    uninterrupted = tmp_path / "uninterrupted.parquet"
    assert main([*common, "--output", str(uninterrupted)]) == 0
    assert rows == _rows(uninterrupted)
    assert not list(tmp_path.glob(f"*{PARTS_SUFFIX}"))


@pytest.mark.slow
def test_ctrl_c_keeps_the_chunks_and_says_how_to_go_on(models, tmp_path):
    _write_images(tmp_path / "images", 90)
    output = tmp_path / "scores.parquet"
    command = [sys.executable, "-m", "fuscore", "score", str(tmp_path / "images"), "--model", str(models[0]),
               "--dimensions", "overall", "--chunk-size", "1", "--output", str(output)]
    # Ctrl-C as a terminal delivers it: a pytest-xdist worker ignores SIGINT, and a child would inherit that.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    parts = parts_folder(output)
    deadline = time.monotonic() + 300
    while len(list(parts.glob("part-*.parquet"))) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "items scored so far are kept" in stderr and "run the same command to go on" in stderr and "Traceback" not in stderr
    assert len(list(parts.glob("part-*.parquet"))) >= 3
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_env(), cwd=tmp_path)
    assert result.returncode == 0 and len(_rows(output)) == 90


# ------------------------------------------------------------------------------------------- reliability (issue 26)
def test_an_image_rewritten_under_its_name_is_scored_again_and_equals_a_fresh_job(models, tmp_path, capsys):
    """Items are keyed by content: a fusion network's outputs re-written under the same names are scored again (a
    relaunch into the same output equals a fresh job, bit for bit), a copy or `touch` that keeps the bytes is not."""
    paths = _write_images(tmp_path / "images", 4)
    output = tmp_path / "scores.parquet"
    command = ["score", str(tmp_path / "images"), "--model", str(models[0]), "--dimensions", "overall",
               "--chunk-size", "4", "--output", str(output)]
    assert main(command) == 0
    before = _rows(output)
    _write_images(tmp_path / "images", 4, seed=9)  # new content, same names
    capsys.readouterr()
    assert main(command) == 0
    assert "4 scored again: their images changed" in capsys.readouterr().err
    fresh = tmp_path / "fresh.parquet"
    assert main(command[:-1] + [str(fresh)]) == 0
    after = _rows(output)
    assert [row["overall"] for row in after] == [row["overall"] for row in _rows(fresh)]
    assert all(a["overall"] != b["overall"] for a, b in zip(after, before))

    os.utime(paths[2], ns=(1, 1))  # same bytes, another modification time: the hash confirms nothing changed
    capsys.readouterr()
    assert main(command) == 0
    error = capsys.readouterr().err
    assert "(4 of them scored by an earlier run)" in error and "scored again" not in error
    assert _rows(output) == after


def test_a_rewritten_image_in_a_partial_output_is_scored_again(models, loaded_tiny_model, tmp_path):
    from fuscore.scoring_job import run_scoring_job
    from fuscore.sources import files_source

    paths = _write_images(tmp_path / "images", 3)
    model = loaded_tiny_model
    output = tmp_path / "scores.parquet"
    source = files_source([str(tmp_path / "images")])

    def score_two_chunks_then_stop(*args, **kwargs):
        if len(list(parts_folder(output).glob("part-*"))) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    import fuscore.scoring_job as scoring_job

    original = scoring_job.score_chunk
    scoring_job.score_chunk = score_two_chunks_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            run_scoring_job(model, source, ["overall"], output, chunk_size=1, progress=False)
    finally:
        scoring_job.score_chunk = original
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(paths[0])  # changed after it was scored
    result = run_scoring_job(model, files_source([str(tmp_path / "images")]), ["overall"], output, chunk_size=1,
                             progress=False)
    assert (result.n_rescored, result.n_reused, result.n_scored) == (1, 1, 2)
    fresh = run_scoring_job(model, files_source([str(tmp_path / "images")]), ["overall"], tmp_path / "fresh.parquet",
                            chunk_size=1, progress=False)
    assert result.table.column("overall").to_pylist() == fresh.table.column("overall").to_pylist()


def test_progress_is_per_batch_and_an_interrupt_keeps_the_batches_scored(models, loaded_tiny_model, tmp_path, monkeypatch):
    """One chunk of 6 images in batches of 2: the bar moves after each batch, and Ctrl-C during the third batch
    keeps the four images scored (a relaunch scores the other two and equals an uninterrupted job's rows)."""
    import fuscore.scoring_job as scoring_job
    from fuscore.scoring_job import run_scoring_job
    from fuscore.sources import files_source

    _write_images(tmp_path / "images", 6)
    model = loaded_tiny_model
    output = tmp_path / "scores.parquet"
    steps = []
    original_advance = scoring_job._Progress.advance
    monkeypatch.setattr(scoring_job._Progress, "advance",
                        lambda self, rows, pending=False: (steps.append(rows), original_advance(self, rows, pending)))
    calls = []

    def interrupt_third_batch(module, args, kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    handle = model.register_forward_pre_hook(interrupt_third_batch, with_kwargs=True)
    with pytest.raises(KeyboardInterrupt):
        run_scoring_job(model, files_source([str(tmp_path / "images")]), ["overall"], output, batch_size=2, progress=True)
    handle.remove()
    assert steps == [1, 1, 1, 1], "the bar moves with each batch of the chunk"
    kept = [pq.read_table(path).num_rows for path in parts_folder(output).glob("part-*.parquet")]
    assert kept == [4]
    result = run_scoring_job(model, files_source([str(tmp_path / "images")]), ["overall"], output, batch_size=2,
                             progress=False)
    assert (result.n_reused, result.n_scored, result.n_items) == (4, 2, 6)


def test_a_removed_job_folder_or_chunk_file_stops_the_job_instead_of_waiting(models, loaded_tiny_model, tmp_path):
    import shutil

    import fuscore.scoring_job as scoring_job
    from fuscore.scoring_job import ScoringJobError, run_scoring_job
    from fuscore.sources import files_source

    _write_images(tmp_path / "images", 3)
    model = loaded_tiny_model
    original = scoring_job.score_chunk
    for case in ("folder", "chunk"):
        output = tmp_path / f"{case}.parquet"
        parts = parts_folder(output)

        removed = []

        def remove_midway(*args, **kwargs):
            written = sorted(parts.glob("part-*"))
            if len(written) == 1 and not removed:
                removed.append(written[0])
                shutil.rmtree(parts) if case == "folder" else written[0].unlink()
            return original(*args, **kwargs)

        scoring_job.score_chunk = remove_midway
        try:
            with pytest.raises(ScoringJobError) as error:
                run_scoring_job(model, files_source([str(tmp_path / "images")]), ["overall"], output, chunk_size=1,
                                progress=False)
        finally:
            scoring_job.score_chunk = original
        message = str(error.value)
        assert ("was removed while the job ran" in message) if case == "folder" else ("no result for 1 items" in message), message
        # The relaunch scores what was lost.
        assert run_scoring_job(model, files_source([str(tmp_path / "images")]), ["overall"], output, chunk_size=1,
                               progress=False).n_items == 3


def test_extreme_aspect_ratios_get_fuscores_named_error_everywhere(models, loaded_tiny_model, tmp_path, capsys):
    """Images over 200 times longer than wide (or under 16 px a side) are FuScore's named error before Qwen-VL's
    token count runs: from model.score, and in a job under --on-error skip (the others scored, again on relaunch)."""
    from processing_fuscore import ImageInputError

    folder = tmp_path / "images"
    _write_images(folder, 2)
    for width, height in ((5000, 20), (3300, 16), (5000, 10)):
        Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(folder / f"long_{width}x{height}.png")
    model = loaded_tiny_model
    for width, height in ((5000, 20), (3300, 16), (5000, 10)):
        path = folder / f"long_{width}x{height}.png"
        with pytest.raises(ImageInputError, match=f"long_{width}x{height}.png: {width}x{height} pixels is"):
            model.score([str(folder / "img000.png"), str(path)])
    output = tmp_path / "scores.parquet"
    command = ["score", str(folder), "--model", str(models[0]), "--output", str(output), "--on-error", "skip"]
    for _ in range(2):
        assert main(command) == 1
        error = capsys.readouterr().err
        assert "3 of 5 items could not be scored" in error and "Traceback" not in error
        assert "long_5000x20.png: 5000x20 pixels is more than 200 times longer than wide" in error
    rows = {Path(row["path"]).name: row for row in _rows(output)}
    assert rows["img000.png"]["overall"] is not None and rows["long_3300x16.png"]["overall"] is None
    assert main(["score", str(folder / "long_5000x20.png"), "--model", str(models[0])]) == 2
    assert "long_5000x20.png: 5000x20 pixels is more than 200 times" in capsys.readouterr().err


def test_csv_json_and_jsonl_outputs_are_not_overwritten_by_another_job(models, tmp_path, capsys):
    _write_images(tmp_path / "images", 2)
    for suffix in (".json", ".csv", ".jsonl"):
        output = tmp_path / f"scores{suffix}"
        command = ["score", str(tmp_path / "images"), "--dimensions", "overall", "--output", str(output)]
        assert main(command + ["--model", str(models[0])]) == 0
        written = output.read_bytes()
        capsys.readouterr()
        assert main(command + ["--model", str(models[1])]) == 2
        error = capsys.readouterr().err
        assert str(output) in error and "--overwrite" in error
        assert ("scored with other settings" in error) if suffix == ".json" else ("does not record the model" in error)
        assert output.read_bytes() == written
        assert main(command + ["--model", str(models[1]), "--overwrite"]) == 0
        assert output.read_bytes() != written
    json_output = tmp_path / "scores.json"
    assert main(["score", str(tmp_path / "images"), "--dimensions", "overall", "--output", str(json_output),
                 "--model", str(models[1])]) == 0, "the same job again into its JSON file is fine"


def test_folders_list_gif_avif_and_broken_links_instead_of_skipping_them(models, tmp_path, capsys):
    folder = tmp_path / "images"
    _write_images(folder, 1)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "still.gif")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "photo.avif")
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    output = tmp_path / "scores.parquet"
    assert main(["score", str(folder), "--model", str(models[0]), "--output", str(output), "--on-error", "skip"]) == 1
    assert "gone.png: no such image file" in capsys.readouterr().err
    rows = {Path(row["path"]).name: row for row in _rows(output)}
    assert set(rows) == {"img000.png", "still.gif", "photo.avif", "gone.png"}
    assert rows["still.gif"]["overall"] is not None and rows["photo.avif"]["overall"] is not None


def test_recursive_sources_are_matched_by_relative_path_and_shared_names_are_refused(tmp_path):
    from fuscore.sources import SourceError, files_source

    for sub in ("a", "b"):
        _write_images(tmp_path / "fused" / sub, 1, prefix="x")
    _write_images(tmp_path / "ir", 1, prefix="x")
    _write_images(tmp_path / "vis", 1, prefix="x")
    with pytest.raises(SourceError, match="share the name x000.png: with --recursive their ir sources are "
                                              "matched by relative path"):
        files_source([str(tmp_path / "fused")], ir=str(tmp_path / "ir"), vis=str(tmp_path / "vis"), recursive=True)
    for sub in ("a", "b"):
        _write_images(tmp_path / "ir" / sub, 1, prefix="x")
        _write_images(tmp_path / "vis" / sub, 1, prefix="x")
    source = files_source([str(tmp_path / "fused")], ir=str(tmp_path / "ir"), vis=str(tmp_path / "vis"), recursive=True)
    assert [(Path(item.ir).parent.name, Path(item.fused).parent.name) for item in source.items] == [("a", "a"), ("b", "b")]


def test_a_damaged_or_foreign_model_folder_is_one_named_line(models, tmp_path, capsys):
    import shutil

    import torch

    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    truncated = tmp_path / "truncated"
    shutil.copytree(models[0], truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    foreign = tmp_path / "foreign_bin"
    shutil.copytree(models[0], foreign)
    (foreign / "model.safetensors").unlink()
    torch.save({"other.weight": torch.zeros(1)}, foreign / "pytorch_model.bin")
    for folder, message in ((truncated, "cannot load the model"), (foreign, "its weights lack")):
        assert main(["score", str(image), "--model", str(folder)]) == 2
        error = capsys.readouterr().err
        assert f"--model {folder}: {message}" in error and "Traceback" not in error
        assert len([line for line in error.splitlines() if "error" in line.lower()]) == 1


def test_level_words_edited_in_config_json_alone_are_refused(models, tmp_path, capsys):
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(models[0], folder)
    config = json.loads((folder / "config.json").read_text())
    config["level_words"] = list(reversed(config["level_words"]))
    (folder / "config.json").write_text(json.dumps(config))
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert main(["score", str(image), "--model", str(folder), "--output", str(tmp_path / "s.parquet")]) == 2
    error = capsys.readouterr().err
    assert f"{folder}/config.json lists level_words" in error and "model.set_level_words(tokenizer, words)" in error
    assert not (tmp_path / "s.parquet").exists()
