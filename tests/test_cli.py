"""The `fuscore` command on tiny inputs: score, rank (folder, manifest, VIFB layout, classical metrics, labels),
export, the exit code 2 errors, and the bootstrap behind the ranking."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fuscore.cli import main
from fuscore.ranking import bootstrap_ranking


METHODS = ("alpha", "beta", "gamma")
PAIRS = ("scene1", "scene2", "scene3")
ALL_DIMENSIONS = ("overall", "thermal_retention", "texture_preservation", "artifacts", "sharpness")


@pytest.fixture(scope="module")
def saved_model(saved_tiny_model, loaded_tiny_model):
    return saved_tiny_model, loaded_tiny_model


@pytest.fixture(scope="module")
def sources_model(saved_tiny_model_ir_vis, loaded_tiny_model_ir_vis):
    """A tiny model that reads the fused image with its infrared and visible sources."""
    return saved_tiny_model_ir_vis, loaded_tiny_model_ir_vis


@pytest.fixture(scope="module")
def fusion_benchmark(tmp_path_factory):
    """FOLDER/<method>/<pair>.png plus ir/ and vis/ folders, random 32x40 images (sources grey)."""
    root = tmp_path_factory.mktemp("fusion_benchmark")
    rng = np.random.default_rng(21)
    for folder in ("ir", "vis"):
        (root / folder).mkdir()
        for pair in PAIRS:
            Image.fromarray(rng.integers(0, 256, (32, 40), dtype=np.uint8)).save(root / folder / f"{pair}.png")
    fused = root / "fused"
    for index, method in enumerate(METHODS):
        (fused / method).mkdir(parents=True)
        for pair in PAIRS:
            # Smoother images for later methods, so the methods differ in content.
            noise = rng.integers(0, 256, (32, 40, 3)).astype(float)
            image = (noise * (1 - 0.3 * index) + 128 * 0.3 * index).astype(np.uint8)
            Image.fromarray(image).save(fused / method / f"{pair}.png")
    return root


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------------- score
def test_score_folder_with_sources_to_csv_and_json(sources_model, fusion_benchmark, tmp_path):
    folder, model = sources_model
    images = sorted((fusion_benchmark / "fused" / "alpha").iterdir())
    ir = [str(fusion_benchmark / "ir" / p.name) for p in images]
    vis = [str(fusion_benchmark / "vis" / p.name) for p in images]
    common = ["--ir", str(fusion_benchmark / "ir"), "--vis", str(fusion_benchmark / "vis"), "--model", str(folder),
              "--device", "cpu"]  # where the reference scores
    assert main(["score", str(fusion_benchmark / "fused" / "alpha"), *common, "--output", str(tmp_path / "s.csv")]) == 0
    assert main(["score", str(fusion_benchmark / "fused" / "alpha"), *common, "--output", str(tmp_path / "s.json"),
                 "--dimensions", "overall,sharpness", "--batch-size", "2"]) == 0

    expected = model.score([str(p) for p in images], ir=ir, vis=vis, dimensions=ALL_DIMENSIONS, return_details=True)
    rows = _read_csv(tmp_path / "s.csv")
    assert [row["path"] for row in rows] == [str(p) for p in images]
    assert [row["key"] for row in rows] == [str(p.absolute()) for p in images]
    assert [row["ir"] for row in rows] == ir and [row["vis"] for row in rows] == vis
    assert all(row["error"] == "" for row in rows)
    for row, detail in zip(rows, expected):
        for dim in ALL_DIMENSIONS:
            assert float(row[dim]) == pytest.approx(detail[dim]["score"], abs=1e-5)
            assert float(row[f"{dim}_std"]) == pytest.approx(detail[dim]["std"], abs=1e-5)

    written = json.loads((tmp_path / "s.json").read_text())
    assert written["dimensions"] == ["overall", "sharpness"]
    first = written["images"][0]
    assert set(first["probs"]) == {"overall", "sharpness"}
    assert list(first["probs"]["overall"]) == list(model.config.level_words)
    assert first["sharpness"] == pytest.approx(expected[0]["sharpness"]["score"], abs=1e-5)
    assert written["metadata"]["source"]["ir"] == str(fusion_benchmark / "ir")


def test_score_output_jsonl_and_json_load_row_by_row_with_datasets(saved_model, fusion_benchmark, tmp_path):
    """`--output x.jsonl` is JSON Lines: `load_dataset("json")` gives one row per image; the `.json` document's
    rows load the same way with `field="images"`."""
    import datasets

    folder, model = saved_model
    images = sorted((fusion_benchmark / "fused" / "alpha").iterdir())
    common = ["--model", str(folder), "--device", "cpu", "--dimensions", "overall,sharpness"]
    assert main(["score", str(fusion_benchmark / "fused" / "alpha"), *common, "--output", str(tmp_path / "s.jsonl")]) == 0
    assert main(["score", str(fusion_benchmark / "fused" / "alpha"), *common, "--output", str(tmp_path / "s.json")]) == 0
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert len(lines) == len(images) and all(json.loads(line)["error"] is None for line in lines)
    rows = datasets.load_dataset("json", data_files=str(tmp_path / "s.jsonl"), split="train",
                                 cache_dir=str(tmp_path / "cache"))
    document_rows = datasets.load_dataset("json", data_files=str(tmp_path / "s.json"), field="images", split="train",
                                          cache_dir=str(tmp_path / "cache2"))
    expected = model.score([str(p) for p in images], dimensions=("overall", "sharpness"))
    for loaded in (rows, document_rows):
        assert loaded.num_rows == len(images)
        assert loaded["path"] == [str(p) for p in images]
        assert loaded["overall"] == pytest.approx(expected["overall"], abs=1e-5)
        assert loaded["sharpness"] == pytest.approx(expected["sharpness"], abs=1e-5)
        assert list(loaded[0]["probs"]["overall"]) == list(model.config.level_words)


def test_sources_given_to_a_fused_only_model_warn_and_are_ignored(saved_model, fusion_benchmark, tmp_path, capsys):
    folder, model = saved_model
    images = sorted((fusion_benchmark / "fused" / "alpha").iterdir())
    empty = tmp_path / "no_sources_here"
    empty.mkdir()
    # The sources are not even matched (the folder has none): the model would not read them.
    assert main(["score", str(fusion_benchmark / "fused" / "alpha"), "--ir", str(empty), "--vis", str(empty),
                 "--model", str(folder), "--dimensions", "overall", "--output", str(tmp_path / "s.csv")]) == 0
    error = capsys.readouterr().err
    assert "reads the fused image only" in error and "--ir/--vis ignored" in error
    rows = _read_csv(tmp_path / "s.csv")
    assert "ir" not in rows[0] and [row["path"] for row in rows] == [str(p) for p in images]
    np.testing.assert_array_equal([float(row["overall"]) for row in rows], model.score([str(p) for p in images]))


@pytest.mark.slow
def test_score_with_loader_workers_and_compile(saved_model, fusion_benchmark, tmp_path, capsys):
    """Decoding in worker processes and compiled blocks change the speed, not the scores or their order."""
    folder, model = saved_model
    images = sorted((fusion_benchmark / "fused" / "gamma").iterdir())
    expected = model.score([str(p) for p in images])
    options = [["--loader-workers", "2"]]
    if shutil.which("g++") or shutil.which("c++"):  # torch.compile on the CPU needs a C++ compiler
        options.append(["--compile"])
    for extra in options:
        output = tmp_path / f"{extra[0].strip('-')}.csv"
        assert main(["score", str(fusion_benchmark / "fused" / "gamma"), "--model", str(folder), "--dimensions", "overall",
                     "--batch-size", "2", "--device", "cpu", "--output", str(output), *extra]) == 0
        rows = _read_csv(output)
        assert [row["path"] for row in rows] == [str(p) for p in images]
        np.testing.assert_allclose([float(row["overall"]) for row in rows], expected, atol=1e-5, rtol=0)
    assert main(["score", str(images[0]), "--model", str(folder), "--loader-workers", "-1"]) == 2
    assert "--loader-workers must be 0 or more" in capsys.readouterr().err


def test_score_prints_a_table(saved_model, fusion_benchmark, capsys):
    folder, model = saved_model
    image = fusion_benchmark / "fused" / "beta" / "scene2.png"
    assert main(["score", str(image), "--model", str(folder), "--dimensions", "overall"]) == 0
    printed = capsys.readouterr().out
    assert "scene2.png" in printed
    assert f"{model.score(str(image)):.3f}" in printed


def test_missing_file_exits_2_naming_it_without_traceback(saved_model, tmp_path, capsys):
    """In this process (`python -m fuscore` as a command: tests/test_scoring_job.py)."""
    missing = tmp_path / "no_such_fused.png"
    assert main(["score", str(missing), "--model", str(saved_model[0])]) == 2
    error = capsys.readouterr().err
    assert str(missing) in error
    assert "Traceback" not in error


def test_unmatched_source_and_corrupt_image_exit_2(saved_model, sources_model, fusion_benchmark, tmp_path, capsys):
    lonely = tmp_path / "lonely.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(lonely)
    assert main(["score", str(lonely), "--ir", str(fusion_benchmark / "ir"), "--model", str(sources_model[0])]) == 2
    assert "lonely.png" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    assert main(["score", str(corrupt), "--model", str(saved_model[0])]) == 2
    assert "corrupt.png" in capsys.readouterr().err


def test_score_runs_no_code_from_the_model_folder(saved_model, fusion_benchmark, tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    planted = tmp_path / "model"
    shutil.copytree(saved_model[0], planted)
    marker = tmp_path / "remote_code_ran"
    for name in ("modeling_fuscore.py", "processing_fuscore.py"):
        source = planted / name
        source.write_text(f"open({str(marker)!r}, 'w').write({name!r})\n" + source.read_text())
    image = fusion_benchmark / "fused" / "alpha" / "scene1.png"
    assert main(["score", str(image), "--model", str(planted), "--dimensions", "overall"]) == 0
    assert not marker.exists(), "the CLI must use the project's classes, not the folder's remote code"

    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llava", "auto_map": {"AutoConfig": "evil.Config"}}))
    capsys.readouterr()
    assert main(["score", str(image), "--model", str(other)]) == 2
    assert "'llava' model, not a FuScore model" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- rank
@pytest.fixture(scope="module")
def label_table(fusion_benchmark, tmp_path_factory):
    import datasets

    from fuscore_data.schema import conform_to_schema
    from fuscore_data.tables import save_arrow

    rows = {"fused": [], "ir": [], "vis": [], "pair_id": [], "method": [], "mos": []}
    for index, method in enumerate(METHODS):
        for pair_index, pair in enumerate(PAIRS):
            rows["fused"].append(str(fusion_benchmark / "fused" / method / f"{pair}.png"))
            rows["ir"].append(str(fusion_benchmark / "ir" / f"{pair}.png"))
            rows["vis"].append(str(fusion_benchmark / "vis" / f"{pair}.png"))
            rows["pair_id"].append(pair)
            rows["method"].append(method)
            rows["mos"].append(1.5 + index + 0.2 * pair_index)
    table = conform_to_schema(datasets.Dataset.from_dict(rows))
    return save_arrow(table, tmp_path_factory.mktemp("labels") / "table")


@pytest.mark.slow
def test_rank_folder_with_classical_metrics_and_labels(saved_model, fusion_benchmark, label_table, tmp_path):
    folder, model = saved_model
    import warnings

    output = tmp_path / "ranking"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["rank", str(fusion_benchmark / "fused"), "--ir-dir", str(fusion_benchmark / "ir"), "--vis-dir",
                     str(fusion_benchmark / "vis"), "--classical", "--classical-metrics", "EN,SF", "--workers", "1",
                     "--labels", str(label_table), "--model", str(folder), "--device", "cpu", "--dimensions",
                     "overall,sharpness", "--bootstrap-resamples", "50", "--output-dir", str(output)])
    assert code == 0
    # The sources are there for the classical metrics; this model does not read them, so they are not handed to it.
    assert not [w for w in caught if "sources given with it are ignored" in str(w.message)]
    for name in ("ranking.md", "ranking.csv", "scores.csv", "ranking.png", "levels.png", "scatter.png"):
        assert (output / name).stat().st_size > 0, name
    for name in ("ranking.png", "levels.png", "scatter.png"):
        with Image.open(output / name) as plot:
            assert plot.format == "PNG" and plot.width > 200
    assert not [path for path in output.iterdir() if path.name.startswith(".")], "temporary files left behind"

    table = _read_csv(output / "ranking.csv")
    assert sorted(row["method"] for row in table) == sorted(METHODS)
    means = [float(row["mean_score"]) for row in table]
    assert means == sorted(means, reverse=True)
    for row in table:
        fused = [str(fusion_benchmark / "fused" / row["method"] / f"{pair}.png") for pair in PAIRS]
        expected = model.score(fused, dimensions=("overall", "sharpness"))  # this model reads the fused image only
        assert float(row["mean_score"]) == pytest.approx(np.mean(expected["overall"]), abs=1e-5)
        assert float(row["mean_sharpness"]) == pytest.approx(np.mean(expected["sharpness"]), abs=1e-5)
        assert float(row["ci_low"]) <= float(row["mean_score"]) <= float(row["ci_high"])
        assert float(row["mean_label"]) == pytest.approx(1.5 + METHODS.index(row["method"]) + 0.2, abs=1e-5)

    from fuscore_metrics.ivif_metrics import compute_ivif_metrics

    alpha = next(row for row in table if row["method"] == "alpha")
    entropy = [compute_ivif_metrics(*(np.asarray(Image.open(path)) for path in (
        fusion_benchmark / "fused" / "alpha" / f"{pair}.png", fusion_benchmark / "ir" / f"{pair}.png", fusion_benchmark / "vis" / f"{pair}.png")),
        metrics=["EN"])["EN"] for pair in PAIRS]
    assert float(alpha["EN"]) == pytest.approx(np.mean(entropy), rel=1e-5)

    report = (output / "ranking.md").read_text()
    assert "Agreement with the classical metrics" in report and "Agreement with the labels" in report
    assert table[0]["method"] in report


@pytest.mark.slow
def test_rank_manifest_and_vifb_layout(saved_model, fusion_benchmark, tmp_path):
    folder = saved_model[0]
    manifest_dir = tmp_path / "vifb"
    manifest_dir.mkdir()
    lines = ["pair,method,fused,ir,vis"]
    for method in METHODS[:2]:
        for pair in PAIRS:
            # Relative paths, as in VIFB's manifest.
            lines.append(f"{pair},{method},{os.path.relpath(fusion_benchmark / 'fused' / method / f'{pair}.png', manifest_dir)},"
                         f"{os.path.relpath(fusion_benchmark / 'ir' / f'{pair}.png', manifest_dir)},"
                         f"{os.path.relpath(fusion_benchmark / 'vis' / f'{pair}.png', manifest_dir)}")
    (manifest_dir / "manifest.csv").write_text("\n".join(lines) + "\n")
    common = ["--model", str(folder), "--dimensions", "overall", "--bootstrap-resamples", "20"]
    assert main(["rank", "--manifest", str(manifest_dir / "manifest.csv"), *common, "--output-dir", str(tmp_path / "a")]) == 0
    assert main(["rank", "--vifb", str(manifest_dir), *common, "--output-dir", str(tmp_path / "b")]) == 0
    first, second = _read_csv(tmp_path / "a" / "ranking.csv"), _read_csv(tmp_path / "b" / "ranking.csv")
    assert [row["method"] for row in first] == [row["method"] for row in second]
    assert len(first) == 2 and all(row["n_images"] == "3" for row in first)


def test_rank_manifest_errors_name_the_row(saved_model, fusion_benchmark, tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"pair,method,fused\nscene1,alpha,{fusion_benchmark / 'fused' / 'alpha' / 'scene1.png'}\n"
                        "scene2,alpha,missing/scene2.png\n")
    assert main(["rank", "--manifest", str(manifest), "--model", str(saved_model[0]), "--output-dir", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert "line 3" in error and "scene2.png" in error
    assert not (tmp_path / "o").exists()

    manifest.write_text(f"pair,method,fused\nscene1,alpha,{fusion_benchmark / 'fused' / 'alpha' / 'scene1.png'}\n"
                        f"scene1,alpha,{fusion_benchmark / 'fused' / 'beta' / 'scene1.png'}\n")
    assert main(["rank", "--manifest", str(manifest), "--model", str(saved_model[0]), "--output-dir", str(tmp_path / "o")]) == 2
    assert "already appear" in capsys.readouterr().err


@pytest.mark.slow
def test_rank_into_a_used_folder_needs_overwrite_and_writes_the_set_whole(saved_model, fusion_benchmark, label_table,
                                                                          tmp_path, monkeypatch, capsys):
    from fuscore import ranking

    output = tmp_path / "ranking"
    common = [str(fusion_benchmark / "fused"), "--model", str(saved_model[0]), "--dimensions", "overall",
              "--bootstrap-resamples", "20", "--output-dir", str(output)]
    assert main(["rank", *common, "--labels", str(label_table)]) == 0
    first = {path.name: path.read_bytes() for path in output.iterdir()}
    assert "scatter.png" in first

    # A second run without labels would leave the first run's scatter plot beside its own files: refused, untouched.
    capsys.readouterr()
    assert main(["rank", *common]) == 2
    error = capsys.readouterr().err
    assert str(output) in error and "not empty" in error and "--overwrite" in error
    assert {path.name: path.read_bytes() for path in output.iterdir()} == first

    # A run that dies while the files are written leaves the earlier set as it was, and nothing beside it.
    def fail(*args, **kwargs):
        raise RuntimeError("killed while plotting")

    monkeypatch.setattr(ranking, "plot_levels", fail)
    with pytest.raises(RuntimeError):
        main(["rank", *common, "--overwrite"])
    assert {path.name: path.read_bytes() for path in output.iterdir()} == first
    with pytest.raises(RuntimeError):
        main(["rank", *common[:-1], str(tmp_path / "fresh")])
    assert not (tmp_path / "fresh").exists(), "no lone ranking.csv under the final name"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ranking"], "no temporary folder left behind"
    monkeypatch.undo()

    assert main(["rank", *common, "--overwrite"]) == 0
    assert sorted(path.name for path in output.iterdir()) == ["levels.png", "ranking.csv", "ranking.md", "ranking.png", "scores.csv"]
    (tmp_path / "empty").mkdir()
    assert main(["rank", *common[:-1], str(tmp_path / "empty")]) == 0  # an empty folder needs no --overwrite
    (tmp_path / "a_file").write_text("x")
    assert main(["rank", *common[:-1], str(tmp_path / "a_file")]) == 2
    assert "is not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- export
def test_export_checks_repo_ids_before_writing_anything(saved_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    for option, value in (("--cache-repo-id", "../../x"), ("--cache-repo-id", "../x"), ("--cache-repo-id", "fuscore"),
                          ("--push-to-hub", "org/bad--name"), ("--repo-id", "a/b/c")):
        assert main(["export", str(saved_model[0]), "--output-dir", str(tmp_path / "out"), option, value]) == 2, value
        error = capsys.readouterr().err
        assert option in error and repr(value) in error
        assert not (tmp_path / "out").exists(), f"{option} {value}: refused only after the export was written"
    assert not (tmp_path / "cache").exists()


def test_export_command(saved_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert main(["export", str(saved_model[0]), "--output-dir", str(tmp_path / "out"), "--cache-repo-id", "org/cli-test"]) == 0
    assert (tmp_path / "out" / "pipeline_fuscore.py").is_file()
    assert (tmp_path / "cache" / "models--org--cli-test" / "refs" / "main").is_file()
    capsys.readouterr()
    not_a_model = tmp_path / "plain"
    not_a_model.mkdir()
    assert main(["export", str(not_a_model), "--output-dir", str(tmp_path / "out2")]) == 2
    assert str(not_a_model) in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


# ------------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_intervals_and_ranks():
    rng = np.random.default_rng(0)
    pairs = [f"p{i}" for i in range(12) for _ in range(3)]
    methods = [name for _ in range(12) for name in ("best", "mid", "low")]
    # "best" is far ahead; "mid" and "low" differ little relative to the scene-to-scene noise.
    offsets = {"best": 2.0, "mid": 0.1, "low": 0.0}
    scene = {f"p{i}": rng.normal(0, 1) for i in range(12)}
    scores = [offsets[m] + scene[p] + rng.normal(0, 0.5) for p, m in zip(pairs, methods)]

    ranking = bootstrap_ranking(scores, pairs, methods, n_resamples=500, seed=1)
    assert ranking.methods[0] == "best"
    assert (ranking.rank_low[0], ranking.rank_high[0]) == (1, 1)
    assert ranking.rank_low[1] <= 2 <= ranking.rank_high[1] and ranking.rank_high[1] == 3  # mid/low overlap
    for i, name in enumerate(ranking.methods):
        own = np.mean([s for s, m in zip(scores, methods) if m == name])
        assert ranking.mean[i] == pytest.approx(own)
        assert ranking.ci_low[i] < own < ranking.ci_high[i]
    again = bootstrap_ranking(scores, pairs, methods, n_resamples=500, seed=1)
    np.testing.assert_array_equal(again.ci_low, ranking.ci_low)  # a seed gives the same intervals

    # More source pairs of the same kind give narrower intervals.
    wide = bootstrap_ranking(scores[:12], pairs[:12], methods[:12], n_resamples=500, seed=1)
    assert np.mean(wide.ci_high - wide.ci_low) > np.mean(ranking.ci_high - ranking.ci_low)


# ------------------------------------------------------------------------------------------------- help and version
_IMPORTS_AFTER = """
import runpy, sys
sys.argv = ["fuscore", *{args!r}]
try:
    runpy.run_module("fuscore", run_name="__main__")
except SystemExit as done:
    heavy = sorted(name for name in ("torch", "transformers", "torchao", "datasets") if name in sys.modules)
    print("HEAVY=" + ",".join(heavy), "EXIT=" + str(done.code))
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["score", "--help"], ["rank", "--help"],
                                  ["reward-finetune", "--help"]])
def test_help_and_version_answer_without_torch_and_without_warnings(args):
    """`fuscore --help` / `--version` import neither torch nor transformers (so they answer at once) and print
    nothing on stderr."""
    result = subprocess.run([sys.executable, "-c", _IMPORTS_AFTER.format(args=args)], capture_output=True, text=True,
                            timeout=120)
    assert result.stderr == ""
    assert "HEAVY= EXIT=0" in result.stdout.splitlines()[-1]
    if args == ["--version"]:
        from importlib.metadata import version

        assert result.stdout.startswith(f"fuscore {version('fuscore')} (torch {version('torch')}, "
                                        f"transformers {version('transformers')}")
    else:
        assert result.stdout.startswith("usage: fuscore")


def test_reward_finetune_help_names_its_command_and_groups_its_settings():
    result = subprocess.run([sys.executable, "-m", "fuscore", "reward-finetune", "--help"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: fuscore reward-finetune")
    assert "DESIGN" not in result.stdout
    options = result.stdout[result.stdout.index("\noptions:"):]
    sections = [line for line in options.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert sections[:3] == ["options:", "output:", "scorer and data:"]
