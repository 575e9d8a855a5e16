import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_VIFB = REPO_ROOT.parent / "shared" / "data" / "vifb"

# The Hub remote-code files: what `save_pretrained` writes into every model folder (the pipeline's file included, so
# every folder opens as a pipeline) and an export holds.
MODEL_CODE_FILES = ("configuration_fuscore.py", "modeling_fuscore.py", "acceleration_fuscore.py", "processing_fuscore.py",
                    "image_utils_fuscore.py", "scoring_fuscore.py", "pipeline_fuscore.py")
REMOTE_CODE_FILES = MODEL_CODE_FILES

# Everything the project installs or has in its checkout: a "clean" process may import none of it.
PROJECT_MODULES = tuple(name[:-3] for name in REMOTE_CODE_FILES) + (
    "trainer_fuscore", "fuscore", "fuscore_data", "fuscore_metrics", "app", "handler")

_BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, sys
    class _ProjectBlocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {PROJECT_MODULES!r}:
                raise ImportError("FuScore project module " + name + " is not importable in this clean process")
    sys.meta_path.insert(0, _ProjectBlocker())
    """
)


def run_clean_python(code: str, tmp_path: Path, env: dict = None, timeout: int = 300):
    """Runs `code` in a fresh interpreter where no FuScore project module can be imported (as for a Hub user),
    from an empty working folder, with its own modules cache; returns the JSON printed on the last stdout line."""
    workdir = tmp_path / "clean_cwd"
    workdir.mkdir(exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full_env["HF_MODULES_CACHE"] = str(tmp_path / "hf_modules")
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKER + textwrap.dedent(code)],
        cwd=workdir, env=full_env, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, f"clean process failed:\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-6000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def load_saved(folder):
    """A saved FuScore folder loaded in this process, on the CPU, the way any load on this machine gets it.

    The reference for tests that compare a reload (another process, the CLI, the pipeline) with the saved model:
    where torchvision is installed, transformers loads the image processor's torchvision backend, whose resizing
    differs from the PIL backend the tiny models are built with (up to 3.4e-5 in score on the GPU machine), so the
    in-memory model is the reference only where both backends are the same.
    """
    from transformers import AutoModel

    return AutoModel.from_pretrained(folder, trust_remote_code=True)


@pytest.fixture(scope="session")
def tiny_models():
    """One tiny random-init FuScore model per Qwen-VL family (built once per test session)."""
    from fuscore.tiny import FAMILIES, build_tiny_model

    return {family: build_tiny_model(family, seed=1) for family in FAMILIES}


@pytest.fixture
def random_images():
    rng = np.random.default_rng(0)
    # Different sizes, so batches mix visual-token counts and need padding.
    return [rng.integers(0, 256, (48 + 9 * i, 64 + 5 * (i % 3), 3), dtype=np.uint8) for i in range(8)]


# Tests that took 5 s or more each on the project's 2-core machine (full suite with `-n 2`, 2026-12-01): clean-process
# reloads, subprocess runs of the CLI, trainer or app servers, 50-request and 4-thread concurrency runs. They get the
# `slow` marker here (beside the ones marked in their files), so `pytest -m "not slow"` is the quick subset and
# `pytest` still runs everything. Names are test functions; parametrised cases share their function's name.
SLOW_TESTS = {
    "test_lora.py": {"test_merged_and_adapter_folders_load_in_a_clean_process"},
    "test_app.py": {"test_started_from_another_folder_serves_the_shipped_model", "test_fifty_concurrent_requests_get_the_direct_scores"},
    "test_bench_mixed_sizes.py": {"test_tiny_mixed_sizes_run_scores_like_the_plain_forward_without_padding"},
    "test_modeling.py": {"test_save_and_load_in_a_clean_process_from_folder_and_offline_cache",
                         "test_compiled_blocks_do_not_recompile_for_new_image_sizes"},
    "test_cli.py": {"test_score_with_loader_workers_and_compile", "test_missing_file_exits_2_naming_it_without_traceback"},
    "test_export.py": {"test_export_loads_in_a_clean_process_from_folder_and_offline_cache",
                       "test_the_shipped_demo_model_holds_no_code_and_its_export_loads_in_a_clean_process"},
    "test_handler.py": {"test_fifty_concurrent_requests_get_the_direct_scores"},
    "test_data_evafusion.py": {"test_trainer_trains_a_step_on_a_saved_evafusion_folder"},
    "test_metrics_ivif.py": {"test_vifb_per_image_values_match_published"},
    "test_metrics_plcc_srcc.py": {"test_evaluate_modules_load_offline"},
    "test_reliability_inputs.py": {"test_animated_and_multi_page_images_are_refused_with_the_fix"},
    "test_security.py": {"test_trainer_does_not_run_the_remote_code_of_a_base_checkpoint",
                         "test_remote_code_imports_offline_as_a_hub_package", "test_remote_code_imports_offline_from_the_checkout",
                         "test_a_saved_checkpoint_loads_and_scores_with_the_network_blocked",
                         "test_the_projects_classes_never_run_a_model_folders_code"},
    "test_trainer.py": {"test_compiled_blocks_train_like_eager_with_lora_and_checkpointing"},
    "test_fp8.py": {"test_bench_fp8_tiny_quantizes_scores_and_compares", "test_fp8_variants_tiny_quantizes_each_variant_and_profiles_it"},
    "test_concurrency.py": {"test_four_threads_with_mixed_shapes_and_batch_sizes_get_the_serial_scores_exactly"},
    "test_demo_scores_pinned.py": {"test_demo_scores_on_vifb_are_bit_identical_to_the_pinned_values"},
    "test_qwen_tokenizer.py": {"test_from_base_on_a_folder_with_the_real_tokenizer"},
    "test_app_browser.py": {"*"},
    "test_checkpointing.py": {"test_the_trainer_hands_the_policy_to_the_model",
                              "test_compiled_selective_checkpointing_and_memory_budgets_keep_the_gradients",
                              "test_bench_speed_tiny_runs_the_new_training_rows"},
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = SLOW_TESTS.get(item.path.name, ())
        if "*" in names or getattr(item, "originalname", item.name) in names:
            item.add_marker(pytest.mark.slow)
