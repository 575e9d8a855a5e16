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


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.slow
def test_first_pass_in_a_second_process_reuses_the_compile_cache_of_the_first(tmp_path):
    """`--first-pass-only --compile-cache DIR` twice: the first process fills the empty DIR, the second finds every
    compiled frame there (FX graph and AOTAutograd cache hits) and takes the plain row from the first one's JSON."""
    cache, cold, warm = tmp_path / "cache", tmp_path / "cold.json", tmp_path / "warm.json"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_mixed_sizes.py"), "--tiny", "--modes", "fused",
               "--first-pass-only", "--compile-cache", str(cache)]
    runs = [subprocess.run(command + extra, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
            for extra in (["--output", str(cold)], ["--plain-images", "0", "--plain-from", str(cold), "--output", str(warm)])]
    for done in runs:
        assert done.returncode == 0, done.stderr[-3000:]
        assert "first pass / plain forward" in done.stdout and "(target 1.5x)" in done.stdout
    cold_results, warm_results = json.loads(cold.read_text()), json.loads(warm.read_text())
    assert cold_results["compile_cache_files_before"] == 0 and warm_results["compile_cache_files_before"] > 0
    for results in (cold_results, warm_results):
        # Only the first pass (and the plain row): no second pass, no uniform or static rows.
        assert results["fused_engine_first_pass_samples_s"] > 0 and "fused_engine_second_pass_samples_s" not in results
        assert "fused_engine_uniform_samples_s" not in results and "fused_engine_uniform_static_samples_s" not in results
    frames = lambda results: [entry for entry in results["fused_first_pass_compiles"] if entry["ops"]]  # noqa: E731
    assert frames(cold_results) and not any(entry["fx_graph_cache_hits"] for entry in frames(cold_results))
    assert len(frames(warm_results)) == len(frames(cold_results))
    assert all(entry["fx_graph_cache_hits"] >= 1 and entry["aot_autograd_cache_hits"] >= 1 for entry in frames(warm_results))
    assert warm_results["fused_plain_forward_samples_s"] == cold_results["fused_plain_forward_samples_s"]
    assert warm_results["fused_first_pass_over_plain"] == pytest.approx(
        warm_results["fused_engine_first_pass_samples_s"] / cold_results["fused_plain_forward_samples_s"])
