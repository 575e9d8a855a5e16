"""The reward fine-tuning example: the fusion network, its fidelity loss, and the whole example at toy size."""

import json
import runpy
import sys

import pytest
import torch

from conftest import REPO_ROOT
from fuscore.fusion_net import FusionNet, compose_rgb, fidelity_loss, luminance, sobel_magnitude
from fuscore.reward_finetune import FinetuneSettings, load_source_pairs, run_reward_finetune
from fuscore_data.importers import default_vifb_dir


VIFB_DIR = default_vifb_dir()
needs_vifb = pytest.mark.skipif(not (VIFB_DIR / "manifest.csv").is_file(),
                                reason=f"VIFB is not at {VIFB_DIR} (set FUSCORE_VIFB_DIR)")


def test_fusion_net_is_compact_and_starts_as_the_average_fusion():
    net = FusionNet()
    assert sum(parameter.numel() for parameter in net.parameters()) < 300_000
    generator = torch.Generator().manual_seed(0)
    ir, vis = torch.rand(2, 1, 37, 51, generator=generator), torch.rand(2, 3, 37, 51, generator=generator)
    fused = net(ir, vis)
    assert fused.shape == (2, 3, 37, 51) and 0 <= fused.min() and fused.max() <= 1
    average = ((ir + luminance(vis)) / 2).clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(fused, compose_rgb(average, vis), atol=1e-6, rtol=0)
    # The chroma is the visible image's: fused minus its luminance is vis minus its luminance (where not clamped).
    inside = ((fused > 0.01) & (fused < 0.99)).all(dim=1, keepdim=True).expand_as(fused)
    torch.testing.assert_close((fused - luminance(fused))[inside], (vis - luminance(vis))[inside], atol=1e-5, rtol=0)


def test_fidelity_loss_is_zero_only_at_the_brighter_sharper_source():
    generator = torch.Generator().manual_seed(1)
    ir = torch.rand(1, 1, 32, 32, generator=generator)
    dark = ir * 0.5
    assert fidelity_loss(ir, ir, dark).item() == pytest.approx(0.0, abs=1e-7)  # ir is brighter with stronger edges
    assert fidelity_loss(dark, ir, dark).item() > 0
    blurred = torch.nn.functional.avg_pool2d(ir, 3, stride=1, padding=1, count_include_pad=False)
    gradient_only = fidelity_loss(blurred, ir, dark, gradient_weight=1.0) - fidelity_loss(blurred, ir, dark, gradient_weight=0.0)
    assert gradient_only.item() > 0  # a blurred copy loses the gradient term
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8)
    assert sobel_magnitude(ramp)[0, 0, 4, 4].item() == pytest.approx(8.0)  # |G_x| = 4 * slope 1 * 2, |G_y| = 0


@needs_vifb
def test_source_pairs_are_split_by_scene():
    data = load_source_pairs(held_out_pairs=5, seed=0, max_side=64)
    train, test = ({pair_id for pair_id, _, _ in data[name]} for name in ("train", "test"))
    assert len(test) == 5 and len(train) == 16 and not train & test
    for _, ir, vis in data["train"] + data["test"]:
        assert ir.shape[0] == 1 and vis.shape[0] == 3 and ir.shape[1:] == vis.shape[1:] and max(ir.shape) == 64


@pytest.mark.slow
@needs_vifb
def test_example_runs_end_to_end_at_toy_size(tmp_path, monkeypatch):
    """The example script, a few steps of each stage on small crops: results, table and figure are written, the
    held-out scenes are not trained on, and fine-tuning changed the network's outputs."""
    output = tmp_path / "reward_finetune"
    argv = ["reward_finetune.py", "--output-dir", str(output), "--no-progress", "--pretrain-steps", "2", "--steps", "2",
            "--crop", "56", "--batch-pairs", "2", "--group-size", "2", "--policy-steps", "1", "--eval-max-side", "96",
            "--held-out-pairs", "2", "--figure-pairs", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO_ROOT / "examples" / "reward_finetune.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert sorted(path.name for path in output.iterdir()) == ["before_after.png", "results.json", "table.md"]
    assert (output / "before_after.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((output / "results.json").read_text())
    assert list(results["held_out"]) == ["before", "after (direct)", "after (group)"]
    assert len(results["held_out_pairs"]) == 2 and not set(results["held_out_pairs"]) & set(results["train_pairs"])
    for evaluation in results["held_out"].values():
        assert 1 <= evaluation["mean"]["FuScore"] <= 5
        assert set(evaluation["mean"]) == {"FuScore", "reward", "EN", "SD", "SF", "AG", "MI", "SSIM", "Qabf"}
    before = results["held_out"]["before"]["per_pair"]["FuScore"]
    for mode in ("direct", "group"):
        assert results["held_out"][f"after ({mode})"]["per_pair"]["FuScore"] != before
        assert len(results["curves"][f"{mode}_reward"]) == 2
        assert [step for step, _ in results["curves"][f"{mode}_probe_reward"]] == [0, 2]
    assert (output / "table.md").read_text().count("\n") == 5  # header, rule, three networks


@pytest.mark.slow
@needs_vifb
def test_the_example_is_deterministic_whatever_ran_before_and_whatever_the_core_count(tmp_path):
    """Issue 25: the README's table was not reproduced. The same settings give the same numbers (the thread count is a
    setting, not the machine's), and a mode's row does not depend on which other modes ran before it."""
    settings = dict(pretrain_steps=3, steps=2, crop=56, batch_pairs=2, group_size=2, policy_steps=1, eval_max_side=96,
                    held_out_pairs=2, probe_every=1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        both = run_reward_finetune(FinetuneSettings(**settings), progress=False)
        assert torch.get_num_threads() == 1, "the caller's thread count is restored"
        torch.set_num_threads(2)
        group = run_reward_finetune(FinetuneSettings(**settings, modes=("group",)), progress=False)
    finally:
        torch.set_num_threads(threads)  # this test process's own count (one per xdist worker on 2 cores)
    for name in ("before", "after (group)"):
        assert group["held_out"][name]["per_pair"] == both["held_out"][name]["per_pair"], name
    assert group["curves"]["group_reward"] == both["curves"]["group_reward"]
    with pytest.raises(ValueError, match="threads must be 1 or more"):
        run_reward_finetune(FinetuneSettings(threads=0))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="Unknown mode 'ppo'"):
        run_reward_finetune(FinetuneSettings(modes=("ppo",)))
    with pytest.raises(ValueError, match="weights must be one of 'overall', 'evafusion', 'evafusion_map'"):
        run_reward_finetune(FinetuneSettings(weights="mine"))
