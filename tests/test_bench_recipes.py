"""benchmarks/bench_recipes.py: the Qwen3.5 recipes run end to end through `trainer_fuscore.py` (toy size here; the
real-size run is the GPU benchmark)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import trainer_fuscore
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import bench_recipes  # noqa: E402
from bench_backbones import ARCHITECTURES  # noqa: E402


@pytest.mark.parametrize("recipe", bench_recipes.DEFAULT_RECIPES)
def test_each_recipe_names_a_built_architecture_and_accepts_the_smoke_overrides(recipe, tmp_path):
    name = bench_recipes.architecture_of(REPO_ROOT / recipe)
    assert name in ARCHITECTURES and ARCHITECTURES[name][0] == "qwen3_5"
    args = type("Args", (), {"max_steps": 3, "workers": None, "tiny": False})
    argv = bench_recipes.trainer_arguments(str(REPO_ROOT / recipe), tmp_path / "base", tmp_path / "table",
                                           tmp_path / "run", args)
    # The real-size command line, parsed here on a CPU (the last two flags only let the GPU settings parse).
    model_args, data_args, training_args = trainer_fuscore.parse_arguments(argv + ["--use_cpu", "true", "--tf32", "false"])
    assert model_args.model_name_or_path == str(tmp_path / "base") and data_args.train_table == str(tmp_path / "table")
    assert training_args.max_steps == 3 and training_args.logging_steps == 1
    assert training_args.eval_strategy == "no" and training_args.save_strategy == "no"
    # Everything else stays the recipe's.
    settings = bench_recipes.recipe_settings(REPO_ROOT / recipe)
    assert model_args.use_lora and model_args.lora_r == settings["lora_r"] and model_args.dtype == "bfloat16"
    assert training_args.gradient_checkpointing and training_args.bf16
    assert training_args.dataloader_num_workers == settings["dataloader_num_workers"]
    assert bench_recipes.batch_layout(settings) == {key: settings[key] for key in
                                                    ("pairs_per_batch", "images_per_pair", "gradient_accumulation_steps")}


def test_a_recipe_on_an_unknown_base_is_refused_naming_the_file(tmp_path):
    recipe = tmp_path / "other.yaml"
    recipe.write_text("model_name_or_path: Qwen/Qwen3-VL-8B-Instruct\nuse_lora: true\n")
    with pytest.raises(ValueError, match=r"other\.yaml.*Qwen3-VL-8B-Instruct"):
        bench_recipes.architecture_of(recipe)


@pytest.mark.slow
def test_tiny_run_trains_the_recipe_and_records_every_step(tmp_path):
    output, scratch = tmp_path / "recipes.json", tmp_path / "scratch"
    scratch.mkdir()
    finished = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_recipes.py"), "--tiny", "--recipes",
         "configs/qwen3_5_2b_lora.yaml", "--max-steps", "2", "--scratch", str(scratch), "--output", str(output)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    (row,) = json.loads(output.read_text())["recipes"]
    assert row["finished"] and row["exit_code"] == 0 and row["final_saved"] and "error" not in row
    assert row["architecture"] == "qwen3_5_2b" and row["steps_done"] == 2 and len(row["step_seconds"]) == 2
    assert row["seconds_per_step"] == row["step_seconds"][1] > 0  # the first step is not timed
    assert len(row["loss"]) == 2 and all(math.isfinite(loss) for loss in row["loss"])
    assert 0 < row["trainable_parameters"] < row["parameters"]
    assert row["command"].startswith("python trainer_fuscore.py --config configs/qwen3_5_2b_lora.yaml ")
    assert "step 2/2" in finished.stdout
    assert list(scratch.iterdir()) == []  # base folder, table and run removed
