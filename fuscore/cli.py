"""The `fuscore` command: score images, rank fusion methods, export a model for the Hub.

    fuscore score fused.png other/ --ir ir/ --vis vis/ --output scores.csv
    fuscore rank --vifb --classical --output-dir runs/vifb
    fuscore export outputs/demo/final --output-dir export/fuscore --cache-repo-id org/fuscore

Problems with the inputs (a missing or unreadable file, a folder that is not a FuScore model, a bad manifest row)
end with exit code 2 and one line naming the file or row, without a traceback.
"""

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from fuscore.ranking import IMAGE_EXTENSIONS, RankingInputError, atomic_write_bytes, list_images


DEFAULT_MODEL = str(Path(__file__).resolve().parent / "demo_model")
USAGE_ERROR_EXIT = 2


class CommandLineInputError(ValueError):
    """An argument that points at nothing usable; the message names it."""


# --------------------------------------------------------------------------------------------------- helpers
def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def resolve_device(requested: Optional[str]) -> str:
    import torch

    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise CommandLineInputError(f"--device {requested}: this torch build sees no CUDA GPU; use --device cpu.")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_scoring_model(name_or_path: str, device: Optional[str] = None):
    """A FuScore model (folder, Hub id or LoRA adapter folder) with its processor, on `device`.

    The checkout's classes are used and no code from the model folder runs: a folder that is not a FuScore model is
    refused from its config alone, and errors such as `ImageInputError` are the project's own.
    """
    from fuscore.export import check_fuscore_config, load_fuscore_processor
    from modeling_fuscore import FuScoreForQuality

    local = Path(name_or_path)
    if not local.exists() and (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1):
        raise FileNotFoundError(f"{name_or_path}: no such model folder (and not a Hub repo id of the form org/name).")
    adapter_config = local / "adapter_config.json"
    if adapter_config.is_file():
        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path") or ""
        check_fuscore_config(base, f"--model {name_or_path} (the adapter's base model)")
    else:
        check_fuscore_config(name_or_path, f"--model {name_or_path}")
    model = FuScoreForQuality.from_pretrained(name_or_path, dtype="auto")
    # An adapter folder has no processor files; its base (where the weights came from) has them.
    model.processor = load_fuscore_processor(model.config._name_or_path if adapter_config.is_file() else name_or_path)
    return model.to(resolve_device(device)).eval()


def _dimensions(argument: str, model) -> list:
    known = list(model.get_processor().prompts)
    from modeling_fuscore import DIMENSIONS

    ordered_known = [dim for dim in DIMENSIONS if dim in known] + [dim for dim in known if dim not in DIMENSIONS]
    if argument == "all":
        return ordered_known
    requested = [name.strip() for name in argument.split(",") if name.strip()]
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise CommandLineInputError(f"--dimensions: unknown {unknown}; this model knows: {', '.join(ordered_known)} (or 'all').")
    return list(dict.fromkeys(requested))


def _expand_images(arguments: Sequence[str]) -> list:
    """Files as given, folders replaced by the images directly inside them."""
    images = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise CommandLineInputError(f"{path}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
            images.extend(found)
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image file or folder.")
    return images


def _match_sources(fused: Sequence[Path], argument: Optional[str], role: str) -> list:
    """Sources for each fused image: one file (for one image), or a folder matched by file name (or stem)."""
    if argument is None:
        return [None] * len(fused)
    path = Path(argument)
    if path.is_file():
        if len(fused) != 1:
            raise CommandLineInputError(f"--{role} {path} is one file but there are {len(fused)} fused images; pass a folder.")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such {role} file or folder (--{role}).")
    matched = []
    for image in fused:
        candidates = [path / image.name] + [path / (image.stem + ext) for ext in IMAGE_EXTENSIONS]
        found = next((candidate for candidate in candidates if candidate.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{image}: no {role} source named {image.name} (or {image.stem}.<ext>) in {path}.")
        matched.append(found)
    return matched


def _loader_workers(args, model) -> int:
    if args.loader_workers is not None:
        if args.loader_workers < 0:
            raise CommandLineInputError(f"--loader-workers must be 0 or more, got {args.loader_workers}.")
        return args.loader_workers
    # On the CPU the workers would compete with the model for the same cores. On an H100, 2, 4 and 8 decoding threads
    # scored 448-px JPEGs at 126, 124 and 123 img/s (more threads contend for the GIL with the GPU thread); 4 keeps
    # spare decoders for larger images, which were not measured (benchmarks/RESULTS_speed.md).
    return min(4, os.cpu_count() or 1) if model.device.type == "cuda" else 0


# --------------------------------------------------------------------------------------------------- score
def score_command(args) -> int:
    fused = _expand_images(args.images)
    ir = _match_sources(fused, args.ir, "ir")
    vis = _match_sources(fused, args.vis, "vis")
    model = load_scoring_model(args.model, args.device)
    dimensions = _dimensions(args.dimensions, model)
    details = model.score([str(p) for p in fused], ir=[p and str(p) for p in ir], vis=[p and str(p) for p in vis],
                          dimensions=dimensions, batch_size=args.batch_size, return_details=True,
                          progress=len(fused) * len(dimensions) > args.batch_size,
                          num_workers=_loader_workers(args, model), compile=args.compile)
    level_words = list(model.config.level_words)
    records = []
    for image, ir_path, vis_path, detail in zip(fused, ir, vis, details):
        record = {"fused": str(image)}
        if args.ir:
            record["ir"] = str(ir_path)
        if args.vis:
            record["vis"] = str(vis_path)
        for dim in dimensions:
            record[dim] = detail[dim]["score"]
            record[f"{dim}_std"] = detail[dim]["std"]
        record["probs"] = {dim: dict(zip(level_words, detail[dim]["probs"])) for dim in dimensions}
        records.append(record)

    if args.output:
        output = Path(args.output)
        if output.suffix.lower() == ".json":
            _atomic_write_text(output, json.dumps({"model": args.model, "dimensions": dimensions, "images": records}, indent=2))
        else:
            buffer = io.StringIO()
            columns = [key for key in records[0] if key != "probs"]
            writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)
            _atomic_write_text(output, buffer.getvalue())
        print(f"Wrote {len(records)} scores to {output}", file=sys.stderr)
    else:
        print(_score_table(records, dimensions))
    return 0


def _score_table(records: Sequence[dict], dimensions: Sequence[str]) -> str:
    names = [Path(record["fused"]).name for record in records]
    width = max(len("image"), *(len(name) for name in names))
    header = "image".ljust(width) + "".join(f"  {dim:>20}" for dim in dimensions)
    lines = [header, "-" * len(header)]
    for name, record in zip(names, records):
        cells = "".join(f"  {record[dim]:.3f} ± {record[dim + '_std']:.3f}".rjust(22) for dim in dimensions)
        lines.append(name.ljust(width) + cells)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- rank
def rank_command(args) -> int:
    from fuscore import ranking

    if args.manifest:
        items = ranking.read_manifest(args.manifest)
        source = str(args.manifest)
    elif args.vifb is not None:
        manifest = ranking.vifb_manifest_path(args.vifb or None)
        items = ranking.read_manifest(manifest)
        source = f"VIFB ({manifest.parent})"
    else:
        items = ranking.read_method_folders(args.folder, args.ir_dir, args.vis_dir)
        source = str(args.folder)

    labels = ranking.read_labels(args.labels, items) if args.labels else None
    # The model is loaded before the (long) classical metrics, so a wrong --model fails at once.
    model = load_scoring_model(args.model, args.device)
    dimensions = _dimensions(args.dimensions, model)
    if "overall" not in dimensions:
        dimensions = ["overall"] + dimensions
    classical, higher_is_better = None, None
    if args.classical:
        from fuscore_metrics.ivif_metrics import HIGHER_IS_BETTER, METRIC_NAMES

        metrics = [name.strip() for name in args.classical_metrics.split(",")] if args.classical_metrics else None
        unknown = [name for name in metrics or () if name not in METRIC_NAMES]
        if unknown:
            raise CommandLineInputError(f"--classical-metrics: unknown {unknown}; available: {', '.join(METRIC_NAMES)}.")
        classical = ranking.classical_metrics(items, metrics=metrics, workers=args.workers)
        higher_is_better = HIGHER_IS_BETTER

    if args.compile:
        model.compile_blocks()
    scores = ranking.score_benchmark(model, items, dimensions, batch_size=args.batch_size,
                                     num_workers=_loader_workers(args, model))
    note = f"Benchmark: {source}."
    if args.model == DEFAULT_MODEL:
        note += (" The model is FuScore's demo checkpoint, trained on synthetic truth only (not human ratings): "
                 "this ranking illustrates the tool, it does not judge the methods.")
    report = ranking.write_ranking_report(
        args.output_dir, items, scores, list(model.config.level_words), model_name=args.model, classical=classical,
        labels=labels, n_resamples=args.bootstrap_resamples, seed=args.seed, higher_is_better=higher_is_better, note=note,
    )
    for row in report.table[: min(5, len(report.table))]:
        print(f"{row['rank']:>3}. {row['method']:<20} {row['mean_score']:.3f}  [{row['ci_low']:.3f}, {row['ci_high']:.3f}]")
    print(f"Wrote {', '.join(str(path) for path in report.files.values())}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------------- export
def export_command(args) -> int:
    from fuscore.export import export_model

    result = export_model(
        args.source, args.output_dir, adapter_only=args.adapter_only, repo_id=args.repo_id, base_model=args.base_model,
        hub_base_model=args.hub_base_model, overwrite=args.overwrite, cache_repo_id=args.cache_repo_id,
        push_to_hub=args.push_to_hub, private=args.private,
    )
    print(f"Exported {'adapter' if result.kind == 'adapter' else 'merged model'} to {result.folder}")
    if result.cache_snapshot:
        print(f"Added to the local Hub cache as {args.cache_repo_id}: {result.cache_snapshot}")
    if result.hub_url:
        print(f"Pushed to {result.hub_url}")
    return 0


# --------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fuscore", description="Quality assessment of infrared-visible fused images.")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_model_arguments(sub):
        sub.add_argument("--model", default=DEFAULT_MODEL, help="FuScore model folder, Hub repo id or LoRA adapter folder "
                                                                "(default: the shipped demo model, trained on synthetic truth)")
        sub.add_argument("--dimensions", default="all", help="'all' or a comma-separated list, e.g. overall,sharpness")
        sub.add_argument("--batch-size", type=int, default=8)
        sub.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
        sub.add_argument("--loader-workers", type=int, default=None,
                         help="workers that decode images while the model runs: threads on a GPU, processes on the CPU "
                              "(default: 0 on the CPU, up to 4 on a GPU)")
        sub.add_argument("--compile", action="store_true",
                         help="torch.compile the model's blocks first: faster for large jobs on a GPU (compiling takes seconds)")

    score = commands.add_parser("score", help="score fused images", description="Score fused images (files or folders).")
    score.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDER")
    score.add_argument("--ir", help="infrared source: a file (one image) or a folder matched by file name")
    score.add_argument("--vis", help="visible source: a file (one image) or a folder matched by file name")
    score.add_argument("--output", help="write .csv or .json instead of printing a table")
    add_model_arguments(score)
    score.set_defaults(run=score_command)

    rank = commands.add_parser("rank", help="rank fusion methods", description=(
        "Rank fusion methods by mean score with bootstrap intervals over source pairs. Give a manifest CSV "
        "(pair,method,fused[,ir,vis]), --vifb, or a FOLDER laid out as FOLDER/<method>/<pair>.png."))
    inputs = rank.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--manifest", help="CSV with pair, method, fused[, ir, vis] (paths relative to the CSV)")
    inputs.add_argument("--vifb", nargs="?", const="", metavar="DIR", help="the VIFB benchmark (default: $FUSCORE_VIFB_DIR or ../shared/data/vifb)")
    inputs.add_argument("folder", nargs="?", help="FOLDER/<method>/<pair>.<ext>")
    rank.add_argument("--ir-dir", help="with FOLDER: infrared sources named <pair>.<ext>")
    rank.add_argument("--vis-dir", help="with FOLDER: visible sources named <pair>.<ext>")
    rank.add_argument("--classical", action="store_true", help="also compute the classical VIFB metrics per method")
    rank.add_argument("--classical-metrics", help="comma-separated subset of the classical metrics (default: all)")
    rank.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes for the classical metrics")
    rank.add_argument("--labels", help="a rating table (fuscore_data.tables layout) with mos per pair_id and method")
    rank.add_argument("--output-dir", required=True)
    rank.add_argument("--bootstrap-resamples", type=int, default=2000)
    rank.add_argument("--seed", type=int, default=0)
    add_model_arguments(rank)
    rank.set_defaults(run=rank_command)

    export = commands.add_parser("export", help="write a Hub-ready model folder", description=(
        "Write a folder ready to push as org/fuscore: merged weights, processor, remote code, custom pipeline, "
        "handler.py and a model card from fuscore_eval.json."))
    export.add_argument("source", help="a saved FuScore folder or a LoRA adapter folder")
    export.add_argument("--output-dir", required=True)
    export.add_argument("--adapter-only", action="store_true", help="write the LoRA adapter alone (for org/fuscore-lora)")
    export.add_argument("--base-model", help="for an adapter: load this base instead of the one in adapter_config.json")
    export.add_argument("--hub-base-model", help="with --adapter-only: the base repo id to write into adapter_config.json")
    export.add_argument("--repo-id", help="repo id named in the model card (default: --push-to-hub, else org/fuscore)")
    export.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hub repo (needs the network)")
    export.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    export.add_argument("--cache-repo-id", metavar="ORG/NAME", help="add the folder to the local HF cache under this id")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    export.set_defaults(run=export_command)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from fuscore.export import ExportInputError
    from processing_fuscore import ImageInputError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "rank" and not args.folder and (args.ir_dir or args.vis_dir):
        parser.error("--ir-dir/--vis-dir go with a FOLDER input; a manifest names its sources itself.")
    for name in ("batch_size", "bootstrap_resamples", "workers"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1.")
    try:
        return args.run(args)
    except (OSError, ImageInputError, ExportInputError, RankingInputError, CommandLineInputError) as error:
        print(f"fuscore {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
