"""Fine-tune a small fusion network with FuScore as its reward, on VIFB's source pairs.

    fuscore reward-finetune --output-dir outputs/reward_finetune
    python examples/reward_finetune.py --output-dir outputs/reward_finetune   # the same

Three networks are compared on held-out scenes (a scene-disjoint split by `pair_id`):
  * before: `FusionNet` trained on the fidelity-to-sources loss alone (`fusion_net.fidelity_loss`);
  * direct: that network fine-tuned with `-reward_weight * FuScore + fidelity`, the reward's gradient flowing through
    the scorer to the pixels;
  * group: the same start fine-tuned group-relatively: a Gaussian policy on the fused luminance logits draws
    `group_size` candidates per source pair, `group_advantages` of their FuScores weight a clipped policy-gradient
    step (GRPO's surrogate per pixel), plus the same fidelity loss.
For each, the held-out outputs are scored by the ordinary scoring path (8-bit images, `FuScoreForQuality.score`) and
measured with classical IVIF metrics beside it, so a reward that is gamed shows; a figure holds the images.

With the shipped demo scorer, trained on FuScore's synthetic benchmark only, this shows the machinery working, not
fusion that people would judge better.
"""

# torch, transformers and the networks are imported inside the functions that use them, so `--help` answers at once.
from __future__ import annotations

import copy
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

from fuscore.hub import DEMO_MODEL

if TYPE_CHECKING:
    import torch

    from fuscore.fusion_net import FusionNet


DEFAULT_MODEL = str(DEMO_MODEL)
CLASSICAL_METRICS = ("EN", "SD", "SF", "AG", "MI", "SSIM", "Qabf")
MODES = ("direct", "group")
WEIGHTINGS = ("overall", "evafusion", "evafusion_map")


@dataclass
class FinetuneSettings:
    """Settings of `run_reward_finetune`; the defaults are the CPU example (a few minutes on two cores)."""

    model: str = DEFAULT_MODEL
    vifb_dir: Optional[str] = None  # default: `fuscore_data.importers.default_vifb_dir()`
    # "overall" (the demo scorer's trained dimension), "evafusion" (EVAFUSION_WEIGHTS' weighted mean, no map) or
    # "evafusion_map" (EVAFusion's reward exactly, its artifacts weight scaled by the predicted map: a map head needed)
    weights: str = "overall"
    held_out_pairs: int = 5
    seed: int = 0
    crop: int = 112
    batch_pairs: int = 4
    pretrain_steps: int = 300
    pretrain_lr: float = 2e-3
    steps: int = 150
    lr: float = 5e-4
    gradient_weight: float = 10.0
    reward_weight: float = 1.0
    group_size: int = 4
    sigma: float = 0.2
    clip: float = 0.2
    policy_steps: int = 2
    policy_weight: float = 20.0
    eval_max_side: Optional[int] = None  # downscale held-out images to this long side (None: full size)
    probe_every: int = 25  # steps between rewards of the policy mean on a fixed batch of training crops
    figure_pairs: int = 4
    threads: int = 2  # CPU threads torch computes with: float sums split by thread count, so results depend on it
    modes: tuple = field(default=MODES)


def load_scorer(name_or_path: str):
    """A FuScore model with its processor (`fuscore.hub.load_model`: no code from the folder runs), float32 on the CPU."""
    import torch

    from fuscore.hub import load_model

    return load_model(name_or_path, dtype=torch.float32)


def _to_tensor(image, grey: bool) -> torch.Tensor:
    import torch

    from fuscore.fusion_net import luminance

    array = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255
    return luminance(array[None])[0] if grey else array


def load_source_pairs(vifb_dir=None, held_out_pairs: int = 5, seed: int = 0, max_side: Optional[int] = None) -> dict:
    """VIFB's source pairs split by scene: `{"train": [...], "test": [...]}`, each item `(pair_id, ir, vis)` with
    `ir` a `[1, H, W]` luminance and `vis` a `[3, H, W]` RGB tensor in [0, 1] (`max_side` downscales the long side)."""
    from PIL import Image

    from fuscore_data.importers import load_vifb
    from fuscore_data.tables import split_by_pair
    from processing_fuscore import load_image

    table = load_vifb(vifb_dir)
    first = {}
    for index, pair_id in enumerate(table["pair_id"]):
        first.setdefault(pair_id, index)
    pairs = table.select(sorted(first.values()))
    splits = split_by_pair(pairs, test_size=held_out_pairs, seed=seed)
    result = {}
    for name in ("train", "test"):
        items = []
        for row in splits[name]:
            ir, vis = load_image(row["ir"]), load_image(row["vis"])
            if vis.size != ir.size:
                vis = vis.resize(ir.size, Image.BICUBIC)
            if max_side and max(ir.size) > max_side:
                scale = max_side / max(ir.size)
                size = (max(16, round(ir.width * scale)), max(16, round(ir.height * scale)))
                ir, vis = ir.resize(size, Image.BICUBIC), vis.resize(size, Image.BICUBIC)
            items.append((row["pair_id"], _to_tensor(ir, grey=True), _to_tensor(vis, grey=False)))
        result[name] = items
    return result


def random_crops(pairs: list, count: int, crop: int, generator: torch.Generator) -> tuple:
    """`count` random `crop` x `crop` windows from randomly chosen pairs: `(ir [count, 1, c, c], vis [count, 3, c, c])`."""
    import torch

    irs, viss = [], []
    for _ in range(count):
        _, ir, vis = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
        side = min(crop, ir.shape[-2], ir.shape[-1])
        top = int(torch.randint(ir.shape[-2] - side + 1, (1,), generator=generator))
        left = int(torch.randint(ir.shape[-1] - side + 1, (1,), generator=generator))
        irs.append(ir[:, top : top + side, left : left + side])
        viss.append(vis[:, top : top + side, left : left + side])
    return torch.stack(irs), torch.stack(viss)


def _fidelity(fused_y, ir, vis, settings) -> torch.Tensor:
    from fuscore.fusion_net import fidelity_loss, luminance

    return fidelity_loss(fused_y, ir, luminance(vis), gradient_weight=settings.gradient_weight)


def pretrain(net: FusionNet, pairs: list, settings: FinetuneSettings, generator, progress=None) -> list:
    """Fidelity-only training: the "before" network. Returns the loss per step."""
    import torch

    optimizer = torch.optim.Adam(net.parameters(), lr=settings.pretrain_lr)
    losses = []
    for _ in range(settings.pretrain_steps):
        ir, vis = random_crops(pairs, settings.batch_pairs, settings.crop, generator)
        loss = _fidelity(torch.sigmoid(net.logits(ir, vis)), ir, vis, settings)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress.update(1)
    return losses


def _probed(step: int, settings, probe, curve: list) -> None:
    if probe is not None and (step % settings.probe_every == 0 or step == settings.steps):
        curve.append([step, probe()])


def _fine_tune(net, settings, pairs, generator, step, progress, probe, probe_curve) -> list:
    """The loop both methods share: `settings.steps` times a batch of random crops and `step(optimizer, ir, vis)`,
    which updates `net` and returns the batch's mean reward; probes every `settings.probe_every` steps and at the
    end, and ticks `progress`."""
    import torch

    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    rewards = []
    for index in range(settings.steps):
        _probed(index, settings, probe, probe_curve)
        ir, vis = random_crops(pairs, settings.batch_pairs, settings.crop, generator)
        rewards.append(step(optimizer, ir, vis))
        if progress is not None:
            progress.update(1)
    _probed(settings.steps, settings, probe, probe_curve)
    return rewards


def finetune_direct(net, reward, pairs, settings, generator, progress=None, probe=None, probe_curve=None) -> list:
    """`loss = -reward_weight * mean FuScore reward + fidelity`; returns the mean reward per step (and appends
    `[step, probe()]` to `probe_curve` every `settings.probe_every` steps)."""
    import torch

    from fuscore.fusion_net import compose_rgb

    def step(optimizer, ir, vis):
        fused_y = torch.sigmoid(net.logits(ir, vis))
        r = reward(compose_rgb(fused_y, vis))
        loss = -settings.reward_weight * r.mean() + _fidelity(fused_y, ir, vis, settings)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return r.mean().item()

    return _fine_tune(net, settings, pairs, generator, step, progress, probe, probe_curve)


def finetune_group(net, reward, pairs, settings, generator, progress=None, probe=None, probe_curve=None) -> list:
    """Group-relative fine-tuning; returns the mean candidate reward per step (and probes as `finetune_direct`).

    The policy is `z ~ N(logits(ir, vis), sigma^2)` per pixel on the fused luminance logits (a fused luminance
    `sigmoid(z)`); `group_size` candidates per crop are scored, their group advantages computed, and
    `policy_steps` clipped policy-gradient updates made on that group (with the fidelity loss on the policy mean).
    """
    import torch

    from fuscore.fusion_net import compose_rgb
    from fuscore.reward import clipped_policy_loss, group_advantages

    size = settings.group_size

    def step(optimizer, ir, vis):
        with torch.no_grad():
            mean = net.logits(ir, vis)
            noise = torch.randn((mean.shape[0], size) + mean.shape[1:], generator=generator)
            actions = mean[:, None] + settings.sigma * noise  # [P, G, 1, H, W]
            candidates = compose_rgb(torch.sigmoid(actions).flatten(0, 1), vis.repeat_interleave(size, dim=0))
            r = reward(candidates).view(-1, size)
            advantages = group_advantages(r)
            old_log_prob = -0.5 * noise**2  # the Gaussian log-density up to a constant, which cancels in the ratio
        for _ in range(settings.policy_steps):
            mean = net.logits(ir, vis)
            log_prob = -0.5 * ((actions - mean[:, None]) / settings.sigma) ** 2
            loss = (settings.policy_weight * clipped_policy_loss(log_prob, old_log_prob, advantages, clip=settings.clip)
                    + _fidelity(torch.sigmoid(mean), ir, vis, settings))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return r.mean().item()

    return _fine_tune(net, settings, pairs, generator, step, progress, probe, probe_curve)


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """`[C, H, W]` in [0, 1] -> `H x W x C` (or `H x W` for one channel) uint8, rounded."""
    import torch

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def evaluate(net, model, pairs, dimensions, weights, reward=None) -> dict:
    """Held-out outputs (8-bit RGB) with their FuScore (the scoring path on the 8-bit images), the reward as
    trained (weighted dimensions; with `reward`, a map-weighted `FuScoreReward`, that reward of the 8-bit images)
    and the classical metrics; means over the pairs and per-pair values."""
    import torch

    from fuscore_metrics.ivif_metrics import compute_ivif_metrics_batch

    with torch.no_grad():
        outputs = [_to_uint8(net(ir[None], vis[None])[0]) for _, ir, vis in pairs]
    irs = [_to_uint8(ir) for _, ir, _ in pairs]
    viss = [_to_uint8(vis) for _, _, vis in pairs]
    scores = model.score(outputs, dimensions=list(dict.fromkeys(["overall", *dimensions])), batch_size=8)
    per_pair = {"FuScore": np.asarray(scores["overall"]) if isinstance(scores, dict) else np.asarray(scores)}
    if reward is not None:
        with torch.no_grad():
            per_pair["reward"] = np.array([reward(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255).item()
                                           for image in outputs])
    elif isinstance(scores, dict):
        per_pair["reward"] = sum(w * np.asarray(scores[d]) for d, w in zip(dimensions, weights)) / sum(weights)
    else:
        per_pair["reward"] = per_pair["FuScore"]
    per_pair.update(compute_ivif_metrics_batch(outputs, irs, viss, metrics=CLASSICAL_METRICS))
    return {"mean": {name: float(np.nanmean(values)) for name, values in per_pair.items()},
            "per_pair": {name: [float(v) for v in values] for name, values in per_pair.items()},
            "pairs": [pair_id for pair_id, _, _ in pairs], "images": outputs}


def _figure_png(pairs, evaluations: dict, count: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = pairs[:count]
    columns = ["infrared", "visible"] + list(evaluations)
    figure, axes = plt.subplots(len(rows), len(columns), figsize=(2.6 * len(columns), 2.2 * len(rows)), squeeze=False)
    for row, (pair_id, ir, vis) in enumerate(rows):
        images = [_to_uint8(ir), _to_uint8(vis)] + [evaluation["images"][row] for evaluation in evaluations.values()]
        for column, (name, image) in enumerate(zip(columns, images)):
            axis = axes[row, column]
            axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
            axis.set_xticks([])
            axis.set_yticks([])
            title = name if row == 0 else ""
            if name in evaluations:
                title = f"{title}\nFuScore {evaluations[name]['per_pair']['FuScore'][row]:.2f}".strip()
            axis.set_title(title, fontsize=8)
            if column == 0:
                axis.set_ylabel(pair_id, fontsize=8)
    figure.suptitle("Held-out VIFB pairs: fused by FusionNet before and after FuScore-reward fine-tuning\n"
                    "(demo scorer trained on synthetic truth only: the machinery, not better fusion for people)",
                    fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def format_table(evaluations: dict) -> str:
    """A Markdown table: one row per network, FuScore (and the reward, where it is not FuScore itself) then the
    classical metrics (all higher-better)."""
    rewarded = any(evaluation["mean"]["reward"] != evaluation["mean"]["FuScore"] for evaluation in evaluations.values())
    names = ["FuScore"] + (["reward"] if rewarded else []) + list(CLASSICAL_METRICS)
    lines = ["| network | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for network, evaluation in evaluations.items():
        lines.append(f"| {network} | " + " | ".join(f"{evaluation['mean'][name]:.4g}" for name in names) + " |")
    return "\n".join(lines)


def run_reward_finetune(settings: FinetuneSettings, output_dir=None, progress: bool = True, model=None) -> dict:
    """Runs the example: pretrain, fine-tune in each of `settings.modes`, evaluate on the held-out pairs.

    Writes `results.json`, `table.md` and `before_after.png` into `output_dir` (whole or absent) when it is given.
    Returns the results (means, per-pair values, training curves, seconds per stage).
    """
    import torch

    for mode in settings.modes:
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; choose from {MODES}.")
    if settings.weights not in WEIGHTINGS:
        raise ValueError(f"weights must be one of {', '.join(map(repr, WEIGHTINGS))}, got {settings.weights!r}.")
    if settings.threads < 1:
        raise ValueError(f"threads must be 1 or more, got {settings.threads}.")
    threads = torch.get_num_threads()
    # The same settings give the same numbers on any machine with the same kernels: torch splits float sums by its
    # thread count (measured here: 1 and 2 threads differ by 2e-4 in FuScore after 20 steps, and the difference
    # grows over the run), so the count is a setting, not the machine's core count.
    torch.set_num_threads(settings.threads)
    try:
        return _run(settings, output_dir, progress, model)
    finally:
        torch.set_num_threads(threads)


def _run(settings: FinetuneSettings, output_dir, progress: bool, model) -> dict:
    import torch

    from fuscore.fusion_net import FusionNet
    from fuscore.reward import EVAFUSION, EVAFUSION_WEIGHTS, FuScoreReward

    started = time.perf_counter()
    seconds = {}
    generator = torch.Generator().manual_seed(settings.seed)
    model = model if model is not None else load_scorer(settings.model)
    weights = EVAFUSION_WEIGHTS if settings.weights in ("evafusion", "evafusion_map") else {"overall": 1.0}
    # "evafusion_map": FuScoreReward's EVAFusion reward (a model without a map head is refused here, before any work).
    reward = FuScoreReward(model, weights=EVAFUSION if settings.weights == "evafusion_map" else weights)
    data = load_source_pairs(settings.vifb_dir, settings.held_out_pairs, settings.seed, settings.eval_max_side)
    seconds["load"] = time.perf_counter() - started

    total = settings.pretrain_steps + settings.steps * len(settings.modes)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="Reward fine-tuning", unit="step")
    try:
        start = time.perf_counter()
        torch.manual_seed(settings.seed)  # the network's initial weights, whatever loading the scorer drew before
        before = FusionNet()
        curves = {"pretrain_fidelity": pretrain(before, data["train"], settings, generator, bar)}
        seconds["pretrain"] = time.perf_counter() - start
        networks = {"before": before}
        # A fixed batch of training crops, drawn apart from the training stream, on which the reward is followed.
        probe_ir, probe_vis = random_crops(data["train"], 8, settings.crop,
                                           torch.Generator().manual_seed(settings.seed + 1))
        for mode in settings.modes:
            start = time.perf_counter()
            net = copy.deepcopy(before)
            step = finetune_direct if mode == "direct" else finetune_group

            def probe(net=net):
                with torch.no_grad():
                    return reward(net(probe_ir, probe_vis)).mean().item()

            curves[f"{mode}_probe_reward"] = []
            # Each mode draws its crops and noise from its own stream, so its result does not depend on which
            # other modes ran before it (`--modes group` gives the group row of the full run).
            mode_generator = torch.Generator().manual_seed(settings.seed + 2 + MODES.index(mode))
            curves[f"{mode}_reward"] = step(net, reward, data["train"], settings, mode_generator, bar, probe,
                                            curves[f"{mode}_probe_reward"])
            networks[f"after ({mode})"] = net
            seconds[mode] = time.perf_counter() - start
    finally:
        if bar is not None:
            bar.close()

    start = time.perf_counter()
    dimensions, values = list(weights), list(weights.values())
    held_out_reward = reward if reward.map_weighted else None
    evaluations = {name: evaluate(net, model, data["test"], dimensions, values, held_out_reward)
                   for name, net in networks.items()}
    seconds["evaluate"] = time.perf_counter() - start
    seconds["total"] = time.perf_counter() - started
    results = {
        "settings": asdict(settings) | {"modes": list(settings.modes)},
        "parameters": sum(p.numel() for p in before.parameters()),
        "train_pairs": [pair_id for pair_id, _, _ in data["train"]],
        "held_out_pairs": [pair_id for pair_id, _, _ in data["test"]],
        "held_out": {name: {k: v for k, v in evaluation.items() if k != "images"} for name, evaluation in evaluations.items()},
        "curves": curves,
        "seconds": seconds,
        "table": format_table(evaluations),
        "note": "The scorer was trained on FuScore's synthetic benchmark only: these numbers show the reward machinery "
                "working, not fusion that people judge better.",
    }
    if output_dir is not None:
        from fuscore.atomic import atomic_folder

        figure = _figure_png(data["test"], evaluations, settings.figure_pairs)
        with atomic_folder(output_dir, overwrite=True) as folder:
            (folder / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
            (folder / "table.md").write_text(results["table"] + "\n")
            (folder / "before_after.png").write_bytes(figure)
    return results


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# How `--help` groups the settings (every `FinetuneSettings` field is in one group).
_ARGUMENT_GROUPS = {
    "scorer and data": ("model", "weights", "vifb_dir", "held_out_pairs", "seed", "threads", "crop", "batch_pairs",
                        "eval_max_side"),
    "the 'before' network and the fidelity loss": ("pretrain_steps", "pretrain_lr", "gradient_weight"),
    "fine-tuning": ("modes", "steps", "lr", "reward_weight", "group_size", "sigma", "clip", "policy_steps",
                    "policy_weight"),
    "monitoring": ("probe_every", "figure_pairs"),
}


def add_arguments(parser) -> None:
    """The example's command-line options (every `FinetuneSettings` field), for a script or a CLI subcommand."""
    defaults = FinetuneSettings()
    run = parser.add_argument_group("output")
    run.add_argument("--output-dir", default=None, help="write results.json, table.md and before_after.png here")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    groups = {}
    for title, names in _ARGUMENT_GROUPS.items():
        group = parser.add_argument_group(title)
        groups.update(dict.fromkeys(names, group))
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        parser = groups[name]
        if name == "modes":
            parser.add_argument(flag, nargs="+", choices=MODES, default=list(MODES), help="fine-tuning modes to run")
        elif name == "weights":
            parser.add_argument(flag, choices=WEIGHTINGS, default=value,
                                help="reward: the overall score; the four sub-dimensions' mean with EVAFusion's "
                                     "weights (evafusion); or EVAFusion's reward exactly, 0.5 (1 + white_ratio) "
                                     "Artifacts + 2 Texture + 1 Thermal + 2 Sharpness on scores / 5, white_ratio the "
                                     "share of the scorer's predicted artifact map >= 0.5 (evafusion_map: a scorer "
                                     "with a map head)")
        elif name == "threads":
            parser.add_argument(flag, type=int, default=value,
                                help="CPU threads torch computes with; the numbers depend on it (float sums split by "
                                     f"thread count), so it is fixed rather than the machine's core count (default: {value})")
        else:
            kind = type(value) if value is not None else (str if name in ("vifb_dir",) else int)
            parser.add_argument(flag, type=kind, default=value, help=f"default: {value}")


def settings_from_arguments(arguments) -> FinetuneSettings:
    values = {name: getattr(arguments, name) for name in asdict(FinetuneSettings())}
    values["modes"] = tuple(values["modes"])
    return FinetuneSettings(**values)


def main(argv=None, prog=None) -> int:
    """`python examples/reward_finetune.py [options]`, and `fuscore reward-finetune` (with `prog` naming it)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    arguments = parser.parse_args(argv)
    results = run_reward_finetune(settings_from_arguments(arguments), output_dir=arguments.output_dir,
                                  progress=not arguments.no_progress)
    print(results["table"])
    for mode in settings_from_arguments(arguments).modes:
        curve = results["curves"][f"{mode}_probe_reward"]
        print(f"{mode}: reward of the network on fixed training crops, by step: "
              + ", ".join(f"{step} {value:.3f}" for step, value in curve))
    print("seconds: " + ", ".join(f"{name} {value:.1f}" for name, value in results["seconds"].items()))
    print(results["note"])
    return 0
