"""The shipped demo model's artifact maps (issue 29): map metrics on held-out synthetic scenes, the score correlation
on the held-out scenes it was selected on, and how its maps respond to artifacts planted into real VIFB fused images.

    python benchmarks/demo_maps.py --publish     # writes benchmarks/RESULTS_demo_maps.md, results_demo_maps.json and
                                                 # benchmarks/demo_maps_vifb.png (CPU, a few minutes)
    python benchmarks/demo_maps.py --tiny --output-dir outputs/demo_maps_tiny   # the same pipeline at toy size

* Held-out synthetic scenes (seed 1000003, never trained on, with `local_artifacts=True`): each image's predicted map
  (`model.score(..., return_maps=True)`, upsampled to the image) against its planted-artifact mask, with the project's
  `map_metrics` (NSS, CC, SIM, AUC-Judd, KL; MIT Saliency Benchmark definitions) at the image's resolution, as
  EVAFusion evaluates its maps; beside them the same metrics of a constant map (chance: NSS 0, CC 0) and the scores'
  PLCC / SRCC on the same scenes.
* The scores on the held-out scenes without planted artifacts (the set `fuscore_eval.json` reports).
* VIFB (21 source pairs, read at run time from `$FUSCORE_VIFB_DIR` or ../shared/data/vifb; the images are never
  written out, only a figure): into one fused image per pair, each of the five kinds is planted alone at a seeded
  position; per kind, the mean map inside the planted region before and after planting, and the AUC-Judd of the
  planted image's map against the planted mask. The figure shows four pairs: clean image and map, planted image
  (mask outlined) and map.

The demo model learned *synthetic* artifacts on synthetic scenes; the VIFB rows show how that transfers to real
fused images with the same kinds planted, not that it finds the artifacts fusion methods really leave.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

KINDS = ("blocking", "halo", "noise", "ghosting", "saturation")
METRICS = ("nss", "cc", "sim", "auc_judd", "kl")
FIGURE_PAIRS = ("carLight", "fight", "labMan", "manWalking")
VIFB_METHOD = "ADF"  # one of VIFB's 25 methods, present for all 21 pairs


def held_out_synthetic(model, scenes: int, images_per_scene: int, size: int, seed: int, batch_size: int) -> dict:
    """Map metrics and score correlations on held-out synthetic scenes with planted artifacts, and the score
    correlations on the same scenes without them."""
    from fuscore.training.trainer import correlation_metrics
    from fuscore_data.synthetic import SyntheticIVIF
    from fuscore_metrics.map_metrics import map_metrics_batch

    results = {}
    for planted in (True, False):
        table = SyntheticIVIF(image_size=size, seed=seed, local_artifacts=planted).table(scenes, images_per_scene)
        images = list(table["fused"])
        scored = model.score(images, batch_size=batch_size, return_maps=planted)
        scores = [row["overall"] for row in scored] if planted else list(scored)
        name = "with_artifacts" if planted else "without_artifacts"
        results[name] = {"scores": correlation_metrics(np.asarray(scores), np.asarray(table["mos"]),
                                                       np.asarray(table["pair_id"]))}
        if planted:
            targets = [np.asarray(heatmap, dtype=np.float64) / 255.0 for heatmap in table["artifact_heatmap"]]
            predictions = [row["artifact_map"] for row in scored]
            results[name]["maps"] = map_metrics_batch(predictions, targets)
            constant = [np.full_like(target, 0.5) for target in targets]
            results[name]["maps_constant"] = map_metrics_batch(constant, targets)
            results[name]["marked_share"] = float(np.mean([target.mean() for target in targets]))
    return results


def vifb_response(model, vifb_dir: Path, pairs_limit: int, batch_size: int, seed: int = 0) -> tuple:
    """Per kind: mean map inside the planted region before / after planting, and AUC-Judd against the planted mask;
    plus the figure's images."""
    import csv

    from PIL import Image

    from fuscore_data.synthetic import LocalArtifact, plant_artifacts
    from fuscore_metrics.map_metrics import auc_judd

    rows = [row for row in csv.DictReader((vifb_dir / "manifest.csv").open()) if row["method"] == VIFB_METHOD]
    rows = sorted(rows, key=lambda row: row["pair"])[:pairs_limit]
    rng = np.random.default_rng(seed)
    clean, planted, masks, labels = [], [], [], []
    for row in rows:
        fused = Image.open(vifb_dir / row["fused"]).convert("RGB")
        ir = Image.open(vifb_dir / row["ir"]).convert("L").resize(fused.size, Image.BICUBIC)
        clean.append(np.asarray(fused))
        for kind in KINDS:
            artifact = LocalArtifact(kind, round(float(rng.uniform(0.3, 0.7)), 3), round(float(rng.uniform(0.3, 0.7)), 3),
                                     0.15, 0.8, angle=round(float(rng.uniform(0, 2 * np.pi)), 3),
                                     seed=int(rng.integers(2**31)))
            image, mask = plant_artifacts(fused, [artifact], ir=ir)
            planted.append(image)
            masks.append(mask > 0)
            labels.append((row["pair"], kind))
    clean_maps = [row["artifact_map"] for row in model.score(clean, batch_size=batch_size, return_maps=True)]
    planted_maps = [row["artifact_map"] for row in model.score(planted, batch_size=batch_size, return_maps=True)]
    per_kind = {kind: {"inside_before": [], "inside_after": [], "outside_after": [], "auc_judd": []} for kind in KINDS}
    for index, ((pair, kind), mask, planted_map) in enumerate(zip(labels, masks, planted_maps)):
        if not mask.any():
            continue
        before = clean_maps[index // len(KINDS)]
        entry = per_kind[kind]
        entry["inside_before"].append(float(before[mask].mean()))
        entry["inside_after"].append(float(planted_map[mask].mean()))
        entry["outside_after"].append(float(planted_map[~mask].mean()))
        entry["auc_judd"].append(auc_judd(planted_map, mask))
    summary = {kind: {name: float(np.nanmean(values)) for name, values in entry.items()} | {"n": len(entry["auc_judd"])}
               for kind, entry in per_kind.items()}
    figure = {"rows": rows, "clean": clean, "planted": planted, "masks": masks, "labels": labels,
              "clean_maps": clean_maps, "planted_maps": planted_maps}
    return summary, figure


def figure_png(figure: dict, pairs: tuple, kinds_per_pair: tuple) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [(i, row["pair"]) for i, row in enumerate(figure["rows"]) if row["pair"] in pairs]
    fig, axes = plt.subplots(len(chosen), 4, figsize=(8.0, 1.75 * len(chosen)), squeeze=False)
    for line, ((index, pair), kind) in enumerate(zip(chosen, kinds_per_pair)):
        planted_index = index * len(KINDS) + KINDS.index(kind)
        panels = [(figure["clean"][index], None, f"{pair} ({VIFB_METHOD})"),
                  (figure["clean"][index], figure["clean_maps"][index], "map"),
                  (figure["planted"][planted_index], None, f"+ planted {kind}"),
                  (figure["planted"][planted_index], figure["planted_maps"][planted_index], "map")]
        for column, (image, artifact_map, title) in enumerate(panels):
            axis = axes[line, column]
            axis.imshow(image)
            if artifact_map is not None:
                axis.imshow(artifact_map, cmap="inferno", vmin=0, vmax=1, alpha=0.6)
            if column == 2:
                axis.contour(figure["masks"][planted_index], levels=[0.5], colors="cyan", linewidths=0.8)
            axis.set_title(title, fontsize=7)
            axis.set_xticks([])
            axis.set_yticks([])
    fig.suptitle("Demo model's artifact maps on VIFB fused images, before and after planting one artifact\n"
                 "(the demo learned synthetic artifacts on synthetic scenes: this shows transfer, not real-artifact "
                 "detection)", fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    plt.close(fig)
    from PIL import Image

    small = io.BytesIO()  # a 256-colour palette: a third of the bytes, for a figure kept in the repository
    Image.open(buffer).convert("RGB").quantize(256).save(small, format="PNG", optimize=True)
    return small.getvalue()


def format_markdown(results: dict) -> str:
    synthetic = results["synthetic"]
    lines = [
        "# The demo model's artifact maps",
        "",
        f"`{results['command']}`, {results['machine']}, {results['date']}, "
        f"{results['seconds']:.0f} s. Model: `{results['model']}`.",
        "",
        "The demo model learned **synthetic** artifacts on FuScore's synthetic scenes (labels and masks constructed, "
        "not human). The VIFB rows show how its maps respond to the same kinds planted into real fused images, not "
        "that it finds the artifacts fusion methods really leave.",
        "",
        f"The model reads an image at most {results['max_pixels']} pixels large (its image processor's max_pixels), "
        f"one map value per merged patch of {results['patch']} x {results['patch']} pixels: a 112 x 112 image is a "
        f"{112 // results['patch']} x {112 // results['patch']} grid, so its maps are that coarse.",
        "",
        f"## Held-out synthetic scenes (seed {results['settings']['seed']}, "
        f"{results['settings']['scenes']} scenes x {results['settings']['images_per_scene']} images, "
        f"{results['settings']['size']} px, planted artifacts)",
        "",
        "Maps at the image's resolution against the planted-artifact masks (saliency metrics over the "
        f"{synthetic['with_artifacts']['maps']['n_maps'] - synthetic['with_artifacts']['maps']['n_empty']} images "
        f"whose mask marks something, of {synthetic['with_artifacts']['maps']['n_maps']}; "
        f"{100 * synthetic['with_artifacts']['marked_share']:.1f} % of the pixels are marked):",
        "",
        "| map | NSS | CC | SIM | AUC-Judd | KL | MSE |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, key in (("demo model", "maps"), ("constant 0.5 (chance)", "maps_constant")):
        values = synthetic["with_artifacts"][key]
        lines.append(f"| {label} | " + " | ".join(f"{values[name]:.3f}" for name in (*METRICS, "mse")) + " |")
    lines += ["", "Scores (overall) against the synthetic MOS:", "",
              "| held-out scenes | PLCC | SRCC | KRCC | within-pair SRCC |", "|---|---:|---:|---:|---:|"]
    for label, key in (("with planted artifacts", "with_artifacts"),
                       ("without (the set the demo was evaluated on before maps)", "without_artifacts")):
        values = synthetic[key]["scores"]
        lines.append(f"| {label} | {values['plcc']:.4f} | {values['srcc']:.4f} | {values['krcc']:.4f} | "
                     f"{values['srcc_within']:.4f} |")
    if results.get("vifb"):
        lines += ["", f"## VIFB: one artifact planted into {VIFB_METHOD}'s fused image of each of "
                      f"{results['vifb_pairs']} pairs (radius 15 % of the side, strength 0.8, seeded positions)", "",
                  "| kind | map inside the region, clean | planted | map outside, planted | AUC-Judd vs mask |",
                  "|---|---:|---:|---:|---:|"]
        for kind, values in results["vifb"].items():
            lines.append(f"| {kind} | {values['inside_before']:.3f} | {values['inside_after']:.3f} | "
                         f"{values['outside_after']:.3f} | {values['auc_judd']:.3f} |")
        lines += ["", "![maps on VIFB](demo_maps_vifb.png)"]
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    import platform

    import torch

    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {torch.get_num_threads()} torch threads"


def main(argv=None) -> dict:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a FuScore model with a map head (default: the shipped demo)")
    parser.add_argument("--tiny", action="store_true", help="toy size: few scenes and pairs, a random tiny model")
    parser.add_argument("--publish", action="store_true", help="write the results into benchmarks/")
    parser.add_argument("--output-dir", default=None, help="write the results here instead")
    parser.add_argument("--vifb-dir", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    arguments = parser.parse_args(argv)
    from fuscore.hub import DEMO_MODEL, load_model
    from fuscore_data.importers import default_vifb_dir

    started = time.perf_counter()
    if arguments.tiny:
        from fuscore.tiny import build_tiny_model

        model = build_tiny_model("qwen2_vl", artifact_map=True, hidden_size=32, num_layers=1, vision_hidden_size=32,
                                 vision_depth=1, max_pixels=112 * 112)
        settings = dict(scenes=3, images_per_scene=2, size=112, seed=1_000_003)
        pairs_limit = 2
    else:
        model = load_model(arguments.model or DEMO_MODEL)
        settings = dict(scenes=64, images_per_scene=6, size=112, seed=1_000_003)
        pairs_limit = 21
    model.eval()
    image_processor = model.get_processor().image_processor
    max_pixels = getattr(image_processor, "max_pixels", None) or image_processor.size["longest_edge"]
    results = {"max_pixels": int(max_pixels),
               "patch": int(image_processor.patch_size * image_processor.merge_size),"model": "tiny random init" if arguments.tiny else str(arguments.model or "fuscore/demo_model"),
               "settings": settings, "date": time.strftime("%Y-%m-%d"),
               "command": " ".join(["python benchmarks/demo_maps.py", *(argv if argv is not None else sys.argv[1:])]),
               "machine": cpu_name() if not torch.cuda.is_available() else torch.cuda.get_device_name()}
    results["synthetic"] = held_out_synthetic(model, batch_size=arguments.batch_size, **settings)
    vifb_dir = Path(arguments.vifb_dir) if arguments.vifb_dir else default_vifb_dir()
    figure = None
    if (vifb_dir / "manifest.csv").is_file():
        results["vifb"], figure = vifb_response(model, vifb_dir, pairs_limit, arguments.batch_size)
        results["vifb_pairs"] = len(figure["rows"])
    else:
        print(f"VIFB is not at {vifb_dir} (set FUSCORE_VIFB_DIR): its rows are left out.")
    results["seconds"] = time.perf_counter() - started
    markdown = format_markdown(results)
    print(markdown)
    output = REPO_ROOT / "benchmarks" if arguments.publish else (Path(arguments.output_dir) if arguments.output_dir else None)
    if output is not None:
        from fuscore.atomic import write_bytes, write_text

        output.mkdir(parents=True, exist_ok=True)
        write_text(output / "RESULTS_demo_maps.md", markdown)
        write_text(output / "results_demo_maps.json", json.dumps(results, indent=2, default=float))
        if figure is not None:
            pairs = tuple(row["pair"] for row in figure["rows"] if row["pair"] in FIGURE_PAIRS) or \
                tuple(row["pair"] for row in figure["rows"][:2])
            write_bytes(output / "demo_maps_vifb.png", figure_png(figure, pairs, ("blocking", "noise", "halo",
                                                                                  "saturation")))
    return results


if __name__ == "__main__":
    main()
