"""benchmarks/bench_mixed_sizes.py --tiny: the mixed-size workload's code paths on the CPU (not a speed result)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.slow
def test_tiny_mixed_sizes_run_scores_like_the_plain_forward_without_padding(tmp_path):
    output = tmp_path / "mixed.json"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_mixed_sizes.py"), "--tiny",
                           "--output", str(output)], capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results["mix_counts"] == {"VIFB": 8, "MSRS": 6, "M3FD": 4, "LLVIP": 2}
    for mode in ("fused", "fused_ir_vis"):
        assert results[f"{mode}_distinct_sizes"] >= 4
        # The engine's batches pad under its limit; the plain forward (left-padded) reads every row's answer.
        assert results[f"{mode}_decoder_padding_fraction"] <= 0.03
        assert results[f"{mode}_engine_vs_plain_max_abs_diff"] < 1e-4
        assert results[f"{mode}_first_vs_second_pass_max_abs_diff"] < 1e-5
        for row in ("engine_first_pass", "engine_second_pass", "engine_uniform", "plain_forward"):
            assert results[f"{mode}_{row}_samples_s"] > 0
    assert results["fused_engine_eager_samples_s"] > 0 and results["fused_engine_uniform_static_samples_s"] > 0
    # `--compile auto` on the CPU scores eagerly; the forced first pass compiled the blocks, and dynamo's metrics
    # name each compiled frame.
    assert results["fused_auto_compiles"] is False and results["fused_engine_auto_first_pass_samples_s"] > 0
    compiles = [entry for entry in results["fused_first_pass_compiles"] if entry["ops"]]
    assert compiles and all(entry["seconds"] > 0 for entry in compiles)
    assert "first pass / plain forward" in done.stdout
