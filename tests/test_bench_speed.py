"""benchmarks/bench_speed.py --tiny --parts scoring: the scoring rows' code paths on the CPU (not a speed result)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.slow
def test_tiny_scoring_part_agrees_with_the_plain_forward_and_times_the_engines_vision_tower(tmp_path):
    output = tmp_path / "speed.json"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_speed.py"), "--tiny", "--parts", "scoring",
                           "--output", str(output)], capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    for row in ("generate_1by1", "batched_forward_e2e", "batched_forward_model", "engine_e2e", "engine_model", "engine_model_eager"):
        assert results[f"{row}_img_s"] > 0, row
    for name in ("engine_vs_plain", "eager_forward_vs_plain", "engine_vs_generate", "engine_vs_fp32"):
        assert results[f"{name}_max_abs_diff"] < 1e-4, name
    # The vision line times the engine's own tower on one engine batch (on the CPU too), against that batch's share
    # of the compiled model-only forward.
    assert results["vision_tower_batch_images"] == results["batch_size"]
    assert results["vision_tower_ms_per_batch"] > 0 and results["vision_tower_tflops"] > 0
    share = results["vision_tower_ms_per_batch"] / 1e3 / (results["batch_size"] / results["engine_model_img_s"])
    assert results["vision_tower_fraction_of_forward"] == pytest.approx(share)
    assert "vision tower, the engine's path" in done.stdout
