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
