"""Artifacts planted into real fused images (`fuscore_data.synthetic.plant_artifacts`) and the demo-maps benchmark at
toy size (`benchmarks/demo_maps.py --tiny`)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from fuscore_data.synthetic import LocalArtifact, plant_artifacts


def _image(height=60, width=90):
    yy, xx = np.mgrid[0:height, 0:width]
    grey = (0.3 + 0.4 * (xx / width) + 0.2 * ((yy // 10 + xx // 10) % 2)) * 255
    return np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)


@pytest.mark.parametrize("kind", ["blocking", "halo", "noise", "ghosting", "saturation"])
def test_a_planted_artifact_changes_the_image_only_near_its_region_and_marks_it(kind):
    image = _image()
    ir = np.clip(_image()[..., 0].astype(np.float32) / 255 + 0.3 * (np.arange(90) > 45), 0, 1)
    artifact = LocalArtifact(kind, center_y=0.5, center_x=0.5, radius=0.2, strength=0.9, angle=0.3, seed=1)
    planted, artifact_map = plant_artifacts(image, [artifact], ir=ir)
    assert planted.shape == image.shape and planted.dtype == np.uint8
    assert artifact_map.shape == (60, 90) and set(np.unique(artifact_map)) <= {0, 255}
    marked = artifact_map > 0
    assert marked.any(), kind
    # Nothing changes or is marked far from the region (blocking: the 8-px-aligned square around it, whose corners
    # reach radius x sqrt(2) + 8 px from the centre).
    yy, xx = np.mgrid[0:60, 0:90]
    far = ((yy + 0.5) / 60 - 0.5) ** 2 + ((xx + 0.5) / 90 - 0.5) ** 2 > 0.45**2
    assert not marked[far].any() and np.array_equal(planted[far], image[far]), kind
    assert not np.array_equal(planted, image)


def test_planting_checks_its_inputs():
    ghost = LocalArtifact("ghosting", 0.5, 0.5, 0.2, 0.5)
    with pytest.raises(ValueError, match="ghosting blends in a shifted infrared source: pass ir="):
        plant_artifacts(_image(), [ghost])
    with pytest.raises(ValueError, match="ir must be registered to the image"):
        plant_artifacts(_image(), [ghost], ir=np.zeros((10, 10)))
    with pytest.raises(ValueError, match="image must be RGB uint8"):
        plant_artifacts(_image()[..., 0], [])


@pytest.mark.slow
def test_the_demo_maps_benchmark_runs_at_toy_size(tmp_path):
    vifb = REPO_ROOT.parent / "shared" / "data" / "vifb"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FUSCORE_VIFB_DIR": os.environ.get("FUSCORE_VIFB_DIR", str(vifb))}
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "demo_maps.py"), "--tiny", "--output-dir",
                             str(tmp_path)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results_demo_maps.json").read_text())
    maps = results["synthetic"]["with_artifacts"]["maps"]
    assert maps["n_maps"] == 6 and all(np.isfinite(maps[name]) for name in ("nss", "cc", "sim", "auc_judd", "kl"))
    assert results["synthetic"]["with_artifacts"]["maps_constant"]["nss"] == 0.0
    assert "without_artifacts" in results["synthetic"]
    assert "learned **synthetic** artifacts" in (tmp_path / "RESULTS_demo_maps.md").read_text()
    if (vifb / "manifest.csv").is_file() or "FUSCORE_VIFB_DIR" in os.environ:
        assert set(results["vifb"]) == {"blocking", "halo", "noise", "ghosting", "saturation"}
        assert (tmp_path / "demo_maps_vifb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
