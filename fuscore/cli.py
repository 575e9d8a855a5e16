"""The `fuscore` command: score images or whole datasets, rank fusion methods, export a model for the Hub.

    fuscore score fused.png other/ --ir ir/ --vis vis/ --output scores.csv
    torchrun --nproc_per_node 8 -m fuscore score images/ --output scores.parquet --on-error skip
    fuscore rank --vifb --classical --output-dir runs/vifb
    fuscore export outputs/demo/final --output-dir export/fuscore --cache-repo-id org/fuscore

Problems with the inputs (a missing or unreadable file, a folder that is not a FuScore model, a bad manifest row)
end with exit code 2 and one line naming the file or row, without a traceback. `score --on-error skip` exits with 1
when some items could not be scored; an interrupted command exits with 130. The job logic of `score` lives in
`fuscore.scoring_job`.
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from fuscore.scoring_job import DEFAULT_CHUNK_SIZE  # pyarrow, not torch: `--help` stays fast


DEFAULT_MODEL = str(Path(__file__).resolve().parent / "demo_model")  # fuscore.hub.DEMO_MODEL (hub imports torch-free but not instantly)
USAGE_ERROR_EXIT = 2
SOME_ITEMS_FAILED_EXIT = 1
INTERRUPTED_EXIT = 130


class CommandLineInputError(ValueError):
    """An argument that points at nothing usable; the message names it."""


# --------------------------------------------------------------------------------------------------- helpers
def resolve_device(requested: Optional[str]) -> str:
    import torch

    if requested:
        try:
            torch.device(requested)
        except RuntimeError:
            raise CommandLineInputError(f"--device {requested!r}: not a device; use cpu, cuda or cuda:N.") from None
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise CommandLineInputError(f"--device {requested}: this torch build sees no CUDA GPU; use --device cpu.")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_scoring_model(name_or_path: str, device: Optional[str] = None):
    """`--model` loaded by the library's one loader (`fuscore.hub.load_model`), on `device`."""
    from fuscore.hub import load_model

    return load_model(name_or_path, label=f"--model {name_or_path}").to(resolve_device(device)).eval()


def _dimensions(argument: str, model) -> list:
    """`--dimensions` ("all" or comma-separated names) resolved once by the model's processor (the one resolver,
    `configuration_fuscore.resolve_dimensions`)."""
    requested = argument if argument == "all" else [name.strip() for name in argument.split(",") if name.strip()]
    try:
        return model.get_processor().resolve_dimensions(requested, argument="--dimensions")
    except ValueError as error:
        raise CommandLineInputError(str(error)) from None


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
def _process_state(device: Optional[str]):
    """accelerate's view of this process (index, count, device) under `accelerate launch` / `torchrun`, or one process."""
    import torch
    from accelerate import PartialState

    # On a machine without CUDA accelerate recognises a multi-process launch only when told it is on the CPU.
    state = PartialState(cpu=(device or "").startswith("cpu") or not torch.cuda.is_available())
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if state.num_processes != launched:
        raise CommandLineInputError(f"{launched} processes were launched but accelerate sees {state.num_processes}; "
                                    "each would score everything. Launch with torchrun or accelerate launch.")
    return state


def _model_input_mode(name_or_path: str) -> str:
    """The model's input_mode (its processor's, an adapter's base's), read from the files before any weights load."""
    from processing_fuscore import FuScoreProcessor

    adapter = Path(name_or_path) / "adapter_config.json"
    if adapter.is_file():
        name_or_path = json.loads(adapter.read_text()).get("base_model_name_or_path") or name_or_path
    try:
        return FuScoreProcessor.get_processor_dict(name_or_path)[0].get("input_mode") or "fused"
    except (OSError, ValueError):
        return "fused"  # load_scoring_model reports the unreadable model


def _check_output(output: Optional[str]) -> Optional[Path]:
    from fuscore.scoring_job import check_output_name

    if output is None:
        return None
    path = Path(output)
    check_output_name(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise CommandLineInputError(f"--output {path}: {path.parent} is not a folder.")
    return path


def _score_setup(args, state) -> tuple:
    """What `score` checks and loads before the job: the output, the items, the model and the dimensions."""
    from fuscore import sources

    main_process = state.is_main_process
    output = _check_output(args.output)
    if output is None and state.num_processes > 1:
        raise CommandLineInputError(f"{state.num_processes} processes need --output (scores.parquet): each writes its chunks beside it.")
    reads_sources = _model_input_mode(args.model) == "fused_ir_vis"
    given = [option for option, value in (("--ir", args.ir), ("--vis", args.vis), ("--ir-column", args.ir_column),
                                          ("--vis-column", args.vis_column)) if value]
    if given and not reads_sources and main_process:
        print(f"fuscore score: warning: the model reads the fused image only (input_mode 'fused'); {'/'.join(given)} "
              "ignored.", file=sys.stderr)
    loading = state.main_process_first if state.num_processes > 1 else None
    source = sources.open_source(
        args.images, ir=args.ir, vis=args.vis, image_column=args.image_column, ir_column=args.ir_column,
        vis_column=args.vis_column, split=args.split, streaming=args.streaming, recursive=args.recursive,
        use_sources=reads_sources, loading=loading, missing_sources_ok=args.on_error == "skip")
    device = args.device or (str(state.device) if state.num_processes > 1 else None)
    model = load_scoring_model(args.model, device)
    dimensions = _dimensions(args.dimensions, model)
    if args.maps is not None:
        from scoring_fuscore import check_artifact_maps

        try:
            check_artifact_maps(model, f"--model {args.model}")
        except ValueError as error:
            raise CommandLineInputError(str(error)) from None
    if args.fp8:
        model.quantize_fp8()  # warns and keeps bf16 where float8 cannot run
    # `auto` reads the image sizes of a list of files; a dataset's are not read ahead, so it compiles.
    listed = [item.fused for item in source.items] if isinstance(source, sources.ListSource) else []
    _compile_if_asked(args, model, listed, len(dimensions))
    return output, source, model, dimensions


def _compile_if_asked(args, model, images, dimensions: int) -> None:
    """`--compile` (always) or `--compile auto` (where it pays for `images`: `scoring_fuscore.compile_for_job`)."""
    from scoring_fuscore import compile_for_job, image_tokens

    if args.compile is not None:
        processor = model.get_processor()
        tokens = image_tokens(processor, images) if args.compile == "auto" else []
        compile_for_job(model, processor, tokens, dimensions, True if args.compile == "always" else "auto")


def score_command(args) -> int:
    from fuscore import scoring_job
    from fuscore.model_identity import model_revision
    from fuscore.sources import SourceError
    from processing_fuscore import ImageInputError

    state = _process_state(args.device)
    try:
        output, source, model, dimensions = _score_setup(args, state)
    except (OSError, ImageInputError, SourceError, scoring_job.ScoringJobError, CommandLineInputError) as error:
        if state.is_main_process:
            raise
        raise scoring_job.StoppedByFirstProcess(str(error)) from None  # every process meets it: one report
    result = scoring_job.run_scoring_job(
        model, source, dimensions, output, model_name=args.model,
        model_revision=model_revision(args.model) if output else None, batch_size=args.batch_size,
        num_workers=_loader_workers(args, model), chunk_size=args.chunk_size, on_error=args.on_error,
        overwrite=args.overwrite, progress=True, state=state, maps_dir=args.maps)
    if not result.complete:  # another process merges the output
        return 0
    if output is not None:
        notes = [f"{result.n_reused} of them scored by an earlier run"] if result.n_reused else []
        if result.n_rescored:
            notes.append(f"{result.n_rescored} scored again: their images changed since an earlier run scored them")
        if result.n_remapped:
            notes.append(f"{result.n_remapped} scored again: their maps were missing from {args.maps}")
        note = f" ({'; '.join(notes)})" if notes else ""
        print(f"Wrote {result.n_items} scores to {output}{note}", file=sys.stderr)
        if args.maps is not None:
            print(f"Wrote their artifact maps to {args.maps} (one grey PNG per image, named in the "
                  "'artifact_map' column)", file=sys.stderr)
        if result.dropped:
            print(f"fuscore score: {result.dropped} scores of an earlier run were left out: their items are no longer "
                  "in the source.", file=sys.stderr)
    else:
        print(_score_table(result.table.to_pylist(), dimensions))
        if args.maps is not None:
            print(f"Wrote the artifact maps to {args.maps}: one grey PNG per image, named after it "
                  "(<name>-<first 12 hex digits of the SHA-256 of its key>.png)", file=sys.stderr)
    if result.failures:
        print(f"fuscore score: {result.n_failed} of {result.n_items} items could not be scored"
              + (" (their errors are in the 'error' column)" if output else "") + ":", file=sys.stderr)
        for _, error in result.failures[:20]:
            print(f"  {error}", file=sys.stderr)
        if result.n_failed > 20:
            print(f"  ... and {result.n_failed - 20} more", file=sys.stderr)
        return SOME_ITEMS_FAILED_EXIT
    return 0


def _score_table(records: Sequence[dict], dimensions: Sequence[str]) -> str:
    names = [Path(record["path"]).name if record.get("path") else record["key"] for record in records]
    width = max(len("image"), *(len(name) for name in names))
    header = "image".ljust(width) + "".join(f"  {dim:>20}" for dim in dimensions)
    lines = [header, "-" * len(header)]
    for name, record in zip(names, records):
        if record["error"] is not None:
            lines.append(name.ljust(width) + "  not scored: " + record["error"])
            continue
        cells = "".join(f"  {record[dim]:.3f} ± {record[dim + '_std']:.3f}".rjust(22) for dim in dimensions)
        lines.append(name.ljust(width) + cells)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- rank
def rank_command(args) -> int:
    from fuscore import ranking, sources

    ranking.check_output_folder(args.output_dir, args.overwrite)  # before any of the long work
    if args.manifest:
        items = sources.read_manifest(args.manifest)
        source = str(args.manifest)
    elif args.vifb is not None:
        manifest = sources.vifb_manifest_path(args.vifb or None)
        items = sources.read_manifest(manifest)
        source = f"VIFB ({manifest.parent})"
    else:
        items = sources.read_method_folders(args.folder, args.ir_dir, args.vis_dir)
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

    if args.fp8:
        model.quantize_fp8()
    _compile_if_asked(args, model, [item.fused for item in items], len(dimensions))
    scores = ranking.score_benchmark(model, items, dimensions, batch_size=args.batch_size,
                                     num_workers=_loader_workers(args, model))
    note = f"Benchmark: {source}."
    if args.model == DEFAULT_MODEL:
        note += (" The model is FuScore's demo checkpoint, trained on synthetic truth only (not human ratings): "
                 "this ranking illustrates the tool, it does not judge the methods.")
    report = ranking.write_ranking_report(
        args.output_dir, items, scores, list(model.config.level_words), model_name=args.model, classical=classical,
        labels=labels, n_resamples=args.bootstrap_resamples, seed=args.seed, higher_is_better=higher_is_better, note=note,
        overwrite=args.overwrite, tie_band=args.tie_band,
    )
    fitted = report.pairwise.fit is not None
    print(f"rank  {'method':<20} {'mean':>5}  {f'{report.ranking.confidence:.0%} interval':<16}"
          + ("  BT rank  BT strength" if fitted else ""))
    for row in report.table[: min(5, len(report.table))]:
        pairwise = f"  {row['bt_rank']:>7}  {row['bt_strength']:>+11.3f}" if fitted else ""
        print(f"{row['rank']:>4}  {row['method']:<20} {row['mean_score']:.3f}  [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
              f"{pairwise}")
    if not fitted:
        print(f"fuscore rank: no pairwise (Bradley-Terry) ranking: {report.pairwise.problem}", file=sys.stderr)
    print(f"Wrote {', '.join(str(path) for path in report.files.values())}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------------- export
def _check_repo_id(option: str, value: Optional[str], namespaced: bool = False) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if value is None:
        return
    try:
        validate_repo_id(value)
    except HFValidationError as error:
        raise CommandLineInputError(f"{option} {value!r} is not a Hub repo id: {error}") from None
    if namespaced and value.count("/") != 1:
        raise CommandLineInputError(f"{option} {value!r}: give the repo id as org/name.")


def export_command(args) -> int:
    from fuscore.export import export_model

    # Checked before anything is written: a bad id must not leave a finished export behind an error.
    _check_repo_id("--cache-repo-id", args.cache_repo_id, namespaced=True)
    _check_repo_id("--push-to-hub", args.push_to_hub)
    _check_repo_id("--repo-id", args.repo_id)
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
def version_text() -> str:
    """`fuscore --version`: FuScore's version and those of the libraries that decide its numbers, read from the
    installed packages' metadata (nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {installed(name)}" for name in ("torch", "transformers", "peft"))
    return f"fuscore {installed('fuscore')} ({libraries})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fuscore", description="Quality assessment of infrared-visible fused images.")
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", required=True)

    def add_model_arguments(sub):
        sub.add_argument("--model", default=DEFAULT_MODEL, help="FuScore model folder, Hub repo id or LoRA adapter folder "
                                                                "(default: the shipped demo model, trained on synthetic truth)")
        sub.add_argument("--dimensions", default="all", help="'all' or a comma-separated list, e.g. overall,sharpness")
        sub.add_argument("--batch-size", type=int, default=8)
        sub.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available; for "
                                                         "score under torchrun or accelerate launch, each process's GPU)")
        sub.add_argument("--loader-workers", type=int, default=None,
                         help="workers that decode images while the model runs: threads on a GPU, processes on the CPU "
                              "(default: 0 on the CPU, up to 4 on a GPU)")
        sub.add_argument("--compile", nargs="?", const="always", default=None, choices=("always", "auto"),
                         help="torch.compile the model's blocks first (about 16 s once for an 8B model on an H200; then "
                              "1.3x the eager engine on mixed sizes); '--compile auto': only where that pays for this "
                              "job on a GPU (from about 1.4 million visual tokens at 8B, 3,000 mixed IVIF images)")
        sub.add_argument("--fp8", action="store_true",
                         help="float8 decoder on a GPU of compute capability 8.9+ (H100, H200; needs torchao and a bf16 "
                              "model); use with --compile for the speed-up; elsewhere a warning and the bf16 path")

    score = commands.add_parser("score", help="score fused images or a whole dataset", description=(
        "Score fused images: image files and folders, a manifest CSV (pair,method,fused[,ir,vis]), a rating table, or "
        "a `datasets` dataset (a save_to_disk folder, a data file, a Hub id) with --image-column. With --output the "
        "job is resumable (chunks in OUTPUT.parts/, a relaunch scores only what is missing) and runs sharded over the "
        "processes of `torchrun` or `accelerate launch`."))
    score.add_argument("images", nargs="+", metavar="SOURCE", help="image files and folders, a manifest .csv, or one dataset")
    score.add_argument("--ir", help="infrared source: a file (one image) or a folder matched by file name")
    score.add_argument("--vis", help="visible source: a file (one image) or a folder matched by file name")
    score.add_argument("--recursive", action="store_true", help="read the images in every sub-folder of a folder too")
    score.add_argument("--image-column", help="the dataset column of fused images (paths or images); makes SOURCE a dataset")
    score.add_argument("--ir-column", help="the dataset column of infrared sources (models that read them)")
    score.add_argument("--vis-column", help="the dataset column of visible sources (models that read them)")
    score.add_argument("--split", help="the dataset split to score (default: every split)")
    score.add_argument("--streaming", action="store_true", help="stream the dataset (load_dataset(..., streaming=True))")
    score.add_argument("--output", help="write .parquet (with the job's metadata), .csv, .json (one document) or .jsonl (JSON Lines: one row a line) instead of printing a table")
    score.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                       help="stop at the first bad image (default), or skip it: its error goes to the 'error' column and "
                            "the exit status is 1")
    score.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                       help=f"consecutive items scored and written together, the unit of the split over processes "
                            f"(default: {DEFAULT_CHUNK_SIZE})")
    score.add_argument("--maps", metavar="DIR", help="also write each image's artifact map to DIR as a grey PNG at "
                       "the image's size (255 = artifact), named in the output's 'artifact_map' column; models "
                       "trained with maps only. DIR must be new or empty, unless the job resumes into it or "
                       "--overwrite is given")
    score.add_argument("--overwrite", action="store_true", help="discard an earlier or partial output (and write "
                       "over the files of --maps) and score everything again")
    add_model_arguments(score)
    score.set_defaults(run=score_command)

    rank = commands.add_parser("rank", help="rank fusion methods", description=(
        "Rank fusion methods by mean score with bootstrap intervals over source pairs, and by a tie-aware "
        "Bradley-Terry (Davidson) fit to all comparisons of two methods' images of one source pair. Give a manifest "
        "CSV (pair,method,fused[,ir,vis]), --vifb, or a FOLDER laid out as FOLDER/<method>/<pair>.png."))
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
    rank.add_argument("--output-dir", required=True, help="a new or empty folder (the report is written there whole)")
    rank.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    rank.add_argument("--bootstrap-resamples", type=int, default=2000)
    rank.add_argument("--seed", type=int, default=0)
    rank.add_argument("--tie-band", type=float, default=None, metavar="T",
                      help="overall-score differences within T count as ties in the pairwise (Bradley-Terry) ranking "
                           "(default: 0.1, a tenth of a level step; 0: no ties)")
    add_model_arguments(rank)
    rank.set_defaults(run=rank_command)

    commands.add_parser("reward-finetune", add_help=False, help=(
        "worked example: fine-tune a small fusion network on VIFB with the FuScore reward "
        "(`fuscore reward-finetune --help`)"))
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["reward-finetune"]:
        # Its own parser (fuscore.reward_finetune), so `fuscore --help` needs no torch import.
        from fuscore.reward_finetune import main as reward_finetune

        return reward_finetune(argv[1:], prog="fuscore reward-finetune")
    parser = build_parser()
    args = parser.parse_args(argv)  # --help and --version end here, before torch and transformers are imported
    from fuscore.export import ExportInputError
    from fuscore.scoring_job import ScoringJobError, StoppedByFirstProcess, parts_folder, scored_rows
    from fuscore.sources import SourceError
    from processing_fuscore import ImageInputError

    if args.command == "rank" and not args.folder and (args.ir_dir or args.vis_dir):
        parser.error("--ir-dir/--vis-dir go with a FOLDER input; a manifest names its sources itself.")
    for name in ("batch_size", "bootstrap_resamples", "workers", "chunk_size"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1.")
    if args.command == "rank":
        from fuscore.ranking import DEFAULT_TIE_BAND  # not at the top: `--help` stays free of torch

        if args.tie_band is None:
            args.tie_band = DEFAULT_TIE_BAND
        elif not 0 <= args.tie_band < float("inf"):
            parser.error(f"--tie-band must be a number of at least 0, got {args.tie_band}.")
    try:
        return args.run(args)
    except StoppedByFirstProcess:
        return USAGE_ERROR_EXIT  # the first process prints why
    except (OSError, ImageInputError, ExportInputError, SourceError, ScoringJobError, CommandLineInputError) as error:
        print(f"fuscore {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR_EXIT
    except KeyboardInterrupt:
        saved = ""
        if args.command == "score" and args.output and parts_folder(args.output).is_dir():
            kept = scored_rows(parts_folder(args.output))
            saved = (f"; the {kept} items scored so far are kept in {parts_folder(args.output)}: run the same command "
                     "to go on" if kept else "; nothing was scored yet")
        print(f"\nfuscore {args.command}: interrupted{saved}.", file=sys.stderr)
        return INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main())
