"""Shared test fixtures and helpers.

Shared fixtures (session-scoped: built once per test process and shared by every file; DO NOT MUTATE them: a test
that trains, compiles, casts, moves, patches or re-saves a model takes `copy.deepcopy(model)` first, which costs
milliseconds; a test that writes into a shared folder copies it with `shutil.copytree` first):
  tiny_models          {family: FuScoreForQuality}, one random-init tiny model per Qwen-VL family (seed 1, fused input).
  tiny_model           tiny_models["qwen2_vl"], the default tiny model.
  tiny_model_ir_vis    a tiny qwen2_vl model that reads the fused image with its infrared and visible sources.
  saved_tiny_models    {family: folder where tiny_models[family] was saved} (each saved the first time it is asked for).
  saved_tiny_model     a folder where tiny_model was saved with save_pretrained (config, weights, processor, Hub code).
  saved_tiny_model_ir_vis  the same for tiny_model_ir_vis.
  loaded_tiny_model    saved_tiny_model loaded back with `load_saved` (the reference for reloads: see load_saved).
  loaded_tiny_model_ir_vis  the same for saved_tiny_model_ir_vis.
Function-scoped: random_images (8 uint8 arrays of different sizes).

Helpers: run_clean_python (a fresh interpreter without the project, as for a Hub user: only where a fresh process is
what is tested), load_saved, MODEL_CODE_FILES, PROJECT_MODULES.

Under pytest-xdist (`-n auto`) the tests are distributed by work stealing (heaviest files first) and each worker runs
torch with its share of the cores (one thread per worker on a 2-core machine), since
tiny-model ops on oversubscribed cores spend most of their time waiting.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Set before torch is imported (test modules import it after this conftest), and inherited by subprocesses.
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, _cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """`-n N` without `--dist`: work stealing (each worker starts with a contiguous share, heaviest files first, see
    pytest_collection_modifyitems, and an idle worker takes tests from a busy one). The whole suite on the idle 2-core
    machine (fresh clone and venv, 2026-12-06): 7 min 28 s, against 8 min 50 s with whole files per worker, whose
    last long file ran alone while the other worker idled."""
    if config.getvalue("dist") == "load":
        from xdist.scheduler import WorkStealingScheduling

        return WorkStealingScheduling(config, log)
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Under xdist, the files with the most work first (a `slow` test takes a second or more, another a fraction
    of one), so that no long file starts last while the other workers have finished; a file's tests keep their order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    cost = {}
    for item in items:
        cost[item.nodeid.split("::")[0]] = cost.get(item.nodeid.split("::")[0], 0) + (
            10 if item.get_closest_marker("slow") else 0.2)
    items.sort(key=lambda item: -cost[item.nodeid.split("::")[0]])


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_VIFB = REPO_ROOT.parent / "shared" / "data" / "vifb"

# The Hub remote-code files: what `save_pretrained` writes into every model folder (the pipeline's file included, so
# every folder opens as a pipeline) and an export holds.
MODEL_CODE_FILES = ("configuration_fuscore.py", "modeling_fuscore.py", "acceleration_fuscore.py", "float8_fuscore.py",
                    "processing_fuscore.py",
                    "image_utils_fuscore.py", "scoring_fuscore.py", "comparison_fuscore.py", "attribution_fuscore.py",
                    "pipeline_fuscore.py")
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


# What `save_pretrained` adds to a model's config and processor (the same at every save): not a test's change.
_SAVE_KEYS = {"auto_map", "architectures", "custom_pipelines", "dtype"}


def _settings(obj):
    def without_save_keys(value):
        if isinstance(value, dict):
            return {key: without_save_keys(item) for key, item in value.items() if key not in _SAVE_KEYS}
        return [without_save_keys(item) for item in value] if isinstance(value, list) else value

    return None if obj is None else without_save_keys(json.loads(obj.to_json_string()))


def _fingerprint(model):
    """What a test must not change in a shared model: its weights, which of them train, its config and its
    processor's settings."""
    return ({name: tensor.detach().clone() for name, tensor in model.state_dict().items()}, _settings(model.config),
            _settings(model.processor), [name for name, parameter in model.named_parameters() if parameter.requires_grad])


def _unchanged(models: dict):
    """Yields `models`, then fails the session if a test changed one of them (tests must copy before mutating)."""
    import torch

    before = {name: _fingerprint(model) for name, model in models.items()}
    yield models
    for name, model in models.items():
        weights, *settings = _fingerprint(model)
        changed = [key for key in before[name][0] if not torch.equal(weights[key], before[name][0][key])]
        assert not changed and settings == list(before[name][1:]), (
            f"a test changed the shared tiny model {name!r} "
            f"({changed[:3] or 'its config, processor or trainable parameters'}): take copy.deepcopy(model) first")


@pytest.fixture(scope="session")
def tiny_models():
    """One tiny random-init FuScore model per Qwen-VL family (built once per test session). Do not mutate."""
    from fuscore.tiny import FAMILIES, build_tiny_model

    yield from _unchanged({family: build_tiny_model(family, seed=1) for family in FAMILIES})


@pytest.fixture(scope="session")
def tiny_model(tiny_models):
    """The default tiny model (qwen2_vl, fused input). Do not mutate."""
    return tiny_models["qwen2_vl"]


@pytest.fixture(scope="session")
def tiny_model_ir_vis():
    """A tiny qwen2_vl model that reads the fused image with its infrared and visible sources. Do not mutate."""
    from fuscore.tiny import build_tiny_model

    for models in _unchanged({"qwen2_vl ir_vis": build_tiny_model("qwen2_vl", input_mode="fused_ir_vis", seed=1)}):
        yield models["qwen2_vl ir_vis"]


class _SavedFolders(dict):
    """{family: folder} where each of `tiny_models` is saved the first time its family is asked for."""

    def __init__(self, models, root):
        super().__init__()
        self.models, self.root = models, root

    def __missing__(self, family):
        folder = self.root / family
        self.models[family].save_pretrained(folder)
        self[family] = folder
        return folder


@pytest.fixture(scope="session")
def saved_tiny_models(tiny_models, tmp_path_factory):
    """{family: folder where tiny_models[family] was saved} (saved on first use). Do not write into them."""
    return _SavedFolders(tiny_models, tmp_path_factory.mktemp("shared"))


@pytest.fixture(scope="session")
def saved_tiny_model(saved_tiny_models):
    """A folder where `tiny_model` was saved. Do not write into it (copy it first)."""
    return saved_tiny_models["qwen2_vl"]


@pytest.fixture(scope="session")
def saved_tiny_model_ir_vis(tiny_model_ir_vis, tmp_path_factory):
    """A folder where `tiny_model_ir_vis` was saved. Do not write into it (copy it first)."""
    folder = tmp_path_factory.mktemp("shared") / "tiny_model_ir_vis"
    tiny_model_ir_vis.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def loaded_tiny_model(saved_tiny_model):
    """`saved_tiny_model` loaded back in this process (`load_saved`). Do not mutate."""
    return load_saved(saved_tiny_model)


@pytest.fixture(scope="session")
def loaded_tiny_model_ir_vis(saved_tiny_model_ir_vis):
    """`saved_tiny_model_ir_vis` loaded back in this process (`load_saved`). Do not mutate."""
    return load_saved(saved_tiny_model_ir_vis)


@pytest.fixture
def random_images():
    rng = np.random.default_rng(0)
    # Different sizes, so batches mix visual-token counts and need padding.
    return [rng.integers(0, 256, (48 + 9 * i, 64 + 5 * (i % 3), 3), dtype=np.uint8) for i in range(8)]
