"""benchmarks/bench_backbones.py at toy size: the rows it promises, per kernel variant, in its JSON and its table."""

import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


@pytest.mark.slow
def test_backbone_benchmark_runs_at_toy_size(tmp_path):
    output = tmp_path / "backbones.json"
    finished = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_backbones.py"), "--tiny", "--no-compile",
         "--architectures", "qwen3_5_2b,qwen3_5_35b_a3b", "--kernels", "torch", "--output", str(output)],
        capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results["tiny"] and [variant["kernels"] for variant in results["variants"]] == ["torch"]
    variant = results["variants"][0]
    assert not variant["fla_imported"]
    for name in ("qwen3_5_2b", "qwen3_5_35b_a3b"):
        row = variant["architectures"][name]
        for key in ("engine-448", "plain-448", "engine-mix", "plain-mix"):
            assert row[key]["samples_per_s"] > 0, (name, key)
        assert row["speedup_448"] > 0 and row["speedup_mix"] > 0
    assert variant["architectures"]["qwen3_5_35b_a3b"]["experts_implementation"] is not None
    table = finished.stdout.strip().splitlines()
    assert table[-3].startswith("kernels") and table[-1].startswith("torch    qwen3_5_35b_a3b")
