"""benchmarks/ablation.py: presets, resume, parallel workers with one writer, the deadline, rendering.

The runs here use a stand-in runner (no training), so the tests check the bookkeeping, not the numbers."""

import json
import multiprocessing
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import ablation  # noqa: E402  (importable by name, so spawned workers can unpickle its functions)

TINY = ["--image-size", "32", "--train-scenes", "2", "--eval-scenes", "1", "--images-per-scene", "2", "--steps", "3"]


def fake_runner(args, objective, extra, seed, train, evaluation):
    """Stands in for `run_one`: a number that depends on the row and seed, and a check that the tables arrived."""
    assert len(train) == args.train_scenes * args.images_per_scene
    assert len(evaluation) == args.eval_scenes * args.images_per_scene
    assert "ir" not in train.column_names  # the models read the fused image only
    value = 0.5 + 0.1 * seed + 0.01 * len(extra) + (0.05 if objective == "deqa" else 0.0)
    return {"srcc": value, "plcc": value, "srcc_within": value / 2, "pairwise_accuracy_within": 0.6,
            "train_seconds": 1.0, "train_cpu_seconds": 1.0, "eval_seconds": 0.5, "train_loss": 1.0,
            "device": "cpu", "start_method": multiprocessing.get_start_method()}


def failing_runner(args, objective, extra, seed, train, evaluation):
    if objective == "scalar":
        raise RuntimeError("scalar broke")
    return fake_runner(args, objective, extra, seed, train, evaluation)


def _args(tmp_path, *extra):
    return ablation.parse_args([*TINY, "--results", str(tmp_path / "r.json"), "--output", str(tmp_path / "R.md"),
                                "--output-dir", str(tmp_path / "out"), *extra])


def test_presets_and_overrides():
    cpu = ablation.parse_args([])
    gpu = ablation.parse_args(["--preset", "gpu", "--steps", "7"])
    assert (cpu.hidden_size, cpu.jobs, cpu.steps) == (64, 1, 300)
    assert (gpu.hidden_size, gpu.image_size, gpu.jobs, gpu.steps) == (128, 112, 8, 7)
    assert ablation.setup_of(gpu)["steps"] == 7
    with pytest.raises(SystemExit):
        ablation.parse_args(["--jobs", "0"])


def test_pending_runs_are_seed_major_and_skip_kept_runs(tmp_path):
    args = _args(tmp_path, "--seeds", "0", "1", "--rows", "fuscore", "qalign")
    kept = [{"setting": "standard", "row": "fuscore", "seed": 0}]
    todo = ablation.pending_runs(args, kept)
    assert todo[:3] == [("standard", "qalign", 0), ("close", "fuscore", 0), ("close", "qalign", 0)]
    assert all(seed == 1 for *_, seed in todo[3:]) and len(todo) == 7


@pytest.mark.slow  # two spawned worker processes import transformers: about 15 s on 2 cores
def test_parallel_jobs_merge_into_one_file_and_resume(tmp_path):
    rows = ["fuscore", "fuscore_no_within", "deqa"]
    args = _args(tmp_path, "--jobs", "2", "--seeds", "0", "--rows", *rows)
    results = ablation.run_all(args, runner=fake_runner)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved == json.loads((tmp_path / "out" / "results_ablation.json").read_text())
    keys = sorted((run["setting"], run["row"], run["seed"]) for run in saved["runs"])
    assert keys == sorted((s, r, 0) for s in ("standard", "close") for r in rows)  # each run once
    assert len(results["runs"]) == 6 and saved["jobs"] == 2
    # In the spawned workers, DataLoader workers fork (spawned ones would re-import torch for every run).
    assert {run["start_method"] for run in saved["runs"]} == {"fork"}
    deqa = next(run for run in saved["runs"] if run["row"] == "deqa")
    assert deqa["srcc"] == pytest.approx(0.55) and deqa["setup"] == ablation.setup_of(args)
    assert "| deqa (DeQA-Score) |" in (tmp_path / "out" / "RESULTS_ablation.md").read_text()

    # --resume keeps those six and adds only seed 1; another setup (other steps) would keep nothing.
    resumed = ablation.run_all(_args(tmp_path, "--seeds", "0", "1", "--rows", *rows, "--resume"),
                               runner=fake_runner)
    assert len(resumed["runs"]) == 12 and resumed["runs"][:6] == saved["runs"]
    other = ablation.run_all(_args(tmp_path, "--seeds", "0", "--rows", "fuscore", "--resume", "--steps", "4"),
                             runner=fake_runner)
    assert [run["setup"]["steps"] for run in other["runs"]] == [4, 4]


def test_deadline_starts_nothing_that_would_end_late(tmp_path, capsys):
    results = ablation.run_all(_args(tmp_path, "--seeds", "0", "--rows", "fuscore", "--deadline", "0"),
                               runner=fake_runner)
    assert results["runs"] == []
    assert "not started before --deadline" in capsys.readouterr().out


def test_a_failing_run_is_named_and_the_others_are_saved(tmp_path):
    with pytest.raises(SystemExit, match="scalar"):
        ablation.run_all(_args(tmp_path, "--seeds", "0", "--settings", "close", "--rows", "fuscore", "scalar"),
                         runner=failing_runner)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [run["row"] for run in saved["runs"]] == ["fuscore"]


def _runs(device="NVIDIA H200"):
    setup = ablation.setup_of(ablation.parse_args(["--preset", "gpu"]))
    runs = []
    for seed, (with_term, without) in enumerate(((0.40, 0.30), (0.42, 0.31), (0.45, 0.33))):
        for row, value in (("fuscore", with_term), ("fuscore_no_within", without), ("fuscore_no_cross", with_term)):
            runs.append({"setting": "close", "row": row, "seed": seed, "setup": setup, "srcc": value, "plcc": value,
                         "srcc_within": value, "pairwise_accuracy_within": 0.5 + value / 2, "train_seconds": 40.0,
                         "device": device})
    return {"runs": runs, "jobs": 8, "wall_seconds": 400.0}


def test_render_states_the_machine_and_the_verdicts():
    text = ablation.render(_runs())
    assert "on one NVIDIA H200 GPU, 8 trainings at once" in text and "no GPU" not in text
    assert "6.7 min for the whole command" in text
    assert "| fuscore (KL + within + cross) | 0.423 ± 0.025 |" in text
    assert "| close | within-pair | 0.110 ± 0.010 | 0.110 ± 0.010 |" in text
    lines = [line for line in text.splitlines() if line.startswith("| close | within-pair")]
    assert lines[0].endswith("| helps |")
    assert next(line for line in text.splitlines() if line.startswith("| close | cross-pair")).endswith(
        "| no measurable difference |")
    assert "still to be run" not in text
    cpu = ablation.render(_runs(device="cpu"))
    assert "no GPU" in cpu and "still to be run" in cpu


def test_render_only_reads_a_results_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_runs()))
    ablation.main(["--render-only", "--results", str(path), "--output", str(tmp_path / "R.md"),
                   "--output-dir", str(tmp_path / "out")])
    assert (tmp_path / "R.md").read_text() == (tmp_path / "out" / "RESULTS_ablation.md").read_text()
    path.write_text("{")
    with pytest.raises(SystemExit, match="not valid JSON"):
        ablation.main(["--render-only", "--results", str(path), "--output", str(tmp_path / "R.md")])
