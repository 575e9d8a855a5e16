"""Rank fusion methods by their mean FuScore, with bootstrap confidence intervals over source pairs.

A benchmark is a set of fused images, each made by one fusion `method` from one source `pair`. Every method is
scored on the same pairs, so the uncertainty of a method's mean score comes from which scenes happened to be in the
benchmark: the bootstrap resamples *source pairs* with replacement (the same resample for every method, which keeps
the comparison paired) and recomputes each method's mean and rank. The 95% intervals are percentiles of those
resampled means and ranks.

Beside it, a pairwise ranking (DESIGN.md section 11): every two images of one source pair are compared under FuScore's
Thurstone model (the probabilities of a win, a tie within `tie_band` and a loss, from their predicted overall scores
and spreads), and Davidson's tie-aware Bradley-Terry model is fitted to those expected wins and ties over all pairs
(`fuscore.pairwise.rank_methods_pairwise`). It uses each image's spread as well as its score, and counts comparisons
within a scene rather than averaging scores: one scene where a method fails badly costs it one lost comparison per
rival, not a large share of its mean, and methods that lack some scenes are compared on the scenes they share.

Inputs come from a manifest CSV (`pair, method, fused[, ir, vis]`, paths relative to the manifest), VIFB (whose
manifest has that layout) or a folder laid out as `FOLDER/<method>/<pair>.<ext>`, read by `fuscore.sources`. Classical VIFB metrics
(`fuscore_metrics.ivif_metrics`) and labels from a rating table can be put beside the scores.

Outputs (`write_ranking_report`): `ranking.md`, `ranking.csv`, `scores.csv` (per image) and PNG plots, written as one
set: into a temporary folder renamed into place once complete (`fuscore.atomic.atomic_folder`), so an output folder
never mixes two runs and a crash leaves either the previous set or nothing.
"""

import csv
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from fuscore import atomic
from fuscore.pairwise import DavidsonFit, rank_methods_pairwise
from fuscore.sources import BenchmarkItem, SourceError


OVERALL = "overall"
# Overall-score differences within this band count as ties in the pairwise ranking: a tenth of the step between two
# level words. A judgement call, stated in every report; 0 gives plain Bradley-Terry (no ties).
DEFAULT_TIE_BAND = 0.1


# ----------------------------------------------------------------------------------------------------- labels
def read_labels(table_path, items: Sequence[BenchmarkItem]) -> list:
    """The `mos` of each item from a rating table (matched on pair_id and method); None where the table has none."""
    import datasets
    from fuscore_data.tables import load_table

    table = load_table(table_path)
    if isinstance(table, datasets.DatasetDict):
        table = datasets.concatenate_datasets([split for split in table.values()])
    columns = table.select_columns(["pair_id", "method", "mos"]).to_dict()
    labels = {}
    for pair, method, mos in zip(columns["pair_id"], columns["method"], columns["mos"]):
        if mos is not None and not math.isnan(mos):
            labels[(str(pair), str(method))] = float(mos)
    matched = [labels.get((item.pair, item.method)) for item in items]
    if not any(value is not None for value in matched):
        raise SourceError(
            f"{table_path}: no row matches the benchmark's (pair, method) pairs; e.g. the benchmark has "
            f"({items[0].pair!r}, {items[0].method!r}) and the table ({columns['pair_id'][0]!r}, {columns['method'][0]!r})."
        )
    return matched


# ----------------------------------------------------------------------------------------------------- scoring
def score_benchmark(model, items: Sequence[BenchmarkItem], dimensions: Sequence[str], batch_size: int = 8,
                    processor=None, progress: bool = True, num_workers: int = 0) -> dict:
    """`{dimension: {"score": array, "std": array, "probs": array [n, levels]}}` for every item, on `dimensions` as
    resolved by the caller (`FuScoreProcessor.resolve_dimensions`). The sources go to the model only when it reads
    them (they may be there for the classical metrics alone)."""
    from scoring_fuscore import score_images

    processor = processor or model.get_processor()
    reads_sources = processor.input_mode == "fused_ir_vis"
    ir = [item.ir for item in items] if reads_sources else None
    vis = [item.vis for item in items] if reads_sources else None
    results = score_images(model, processor, [item.fused for item in items], ir, vis, dimensions,
                           batch_size=batch_size, num_workers=num_workers, progress=progress)
    return {dim: {key: np.asarray(results[dim][key], dtype=np.float64) for key in ("score", "std", "probs")}
            for dim in dimensions}


def _classical_for_item(item: BenchmarkItem, metrics):
    from PIL import Image

    from fuscore_metrics.ivif_metrics import compute_ivif_metrics

    try:
        images = [np.asarray(Image.open(path)) for path in (item.fused, item.ir, item.vis)]
        return compute_ivif_metrics(*images, metrics=metrics)
    except (ValueError, OSError) as error:
        raise SourceError(f"{item.origin}: classical metrics failed: {error}") from None


def classical_metrics(items: Sequence[BenchmarkItem], metrics: Optional[Sequence[str]] = None, workers: int = 1,
                      progress: bool = True) -> dict:
    """VIFB metrics per item (`{metric: array}`), in `workers` processes. Every item needs both sources."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    from tqdm.auto import tqdm

    from fuscore_metrics.ivif_metrics import METRIC_NAMES

    without_sources = [item.origin for item in items if not (item.ir and item.vis)]
    if without_sources:
        raise SourceError(f"Classical metrics need the infrared and visible sources; {without_sources[0]} has none "
                                f"({len(without_sources)} items lack them). Give ir/vis columns or --ir-dir/--vis-dir.")
    names = list(metrics) if metrics else list(METRIC_NAMES)
    compute = partial(_classical_for_item, metrics=names)
    bar = tqdm(total=len(items), desc="Classical metrics", unit="image", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as executor:
            values = []
            for value in executor.map(compute, items, chunksize=4):
                values.append(value)
                bar.update()
    else:
        values = []
        for item in items:
            values.append(compute(item))
            bar.update()
    bar.close()
    return {name: np.array([value[name] for value in values], dtype=np.float64) for name in names}


# ----------------------------------------------------------------------------------------------------- statistics
@dataclass
class MethodRanking:
    """Per-method means, bootstrap intervals and ranks (methods sorted best first)."""

    methods: list
    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    rank_low: np.ndarray
    rank_high: np.ndarray
    n_images: np.ndarray
    n_pairs: int
    n_resamples: int
    confidence: float
    seed: int


def _method_pair_matrix(values, pairs, methods) -> tuple:
    """values per item -> [method, pair] matrix (NaN where a method has no image for a pair)."""
    method_names = sorted(set(methods))
    pair_names = sorted(set(pairs))
    method_index = {name: i for i, name in enumerate(method_names)}
    pair_index = {name: i for i, name in enumerate(pair_names)}
    matrix = np.full((len(method_names), len(pair_names)), np.nan)
    for value, pair, method in zip(values, pairs, methods):
        matrix[method_index[method], pair_index[pair]] = value
    return matrix, method_names, pair_names


def _ranks_descending(means: np.ndarray) -> np.ndarray:
    """Rank 1 = highest mean, along the last axis (ties broken by order, NaN last)."""
    order = np.argsort(-np.nan_to_num(means, nan=-np.inf), axis=-1, kind="stable")
    return np.argsort(order, axis=-1, kind="stable") + 1


def bootstrap_ranking(scores, pairs, methods, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> MethodRanking:
    """Mean score per method with percentile-bootstrap intervals, resampling source pairs (paired across methods)."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}.")
    matrix, method_names, pair_names = _method_pair_matrix(scores, pairs, methods)
    n_methods, n_pairs = matrix.shape
    means = np.nanmean(matrix, axis=1)
    rng = np.random.default_rng(seed)
    resampled_pairs = rng.integers(0, n_pairs, size=(n_resamples, n_pairs))
    tail = (1 - confidence) / 2 * 100
    with warnings.catch_warnings():
        # A method absent from every drawn pair gets a NaN mean ("Mean of empty slice"), which nanpercentile skips.
        warnings.simplefilter("ignore", RuntimeWarning)
        boot_means = np.nanmean(matrix[:, resampled_pairs], axis=2)  # [methods, resamples]
        ci_low, ci_high = np.nanpercentile(boot_means, [tail, 100 - tail], axis=1)
    boot_ranks = _ranks_descending(boot_means.T).T
    rank_low = np.percentile(boot_ranks, tail, axis=1, method="lower")
    rank_high = np.percentile(boot_ranks, 100 - tail, axis=1, method="higher")
    counts = np.sum(~np.isnan(matrix), axis=1)
    order = np.argsort(-means, kind="stable")
    return MethodRanking(
        methods=[method_names[i] for i in order], mean=means[order], ci_low=ci_low[order], ci_high=ci_high[order],
        rank_low=rank_low[order].astype(int), rank_high=rank_high[order].astype(int), n_images=counts[order],
        n_pairs=n_pairs, n_resamples=n_resamples, confidence=confidence, seed=seed,
    )


@dataclass
class PairwiseRanking:
    """Davidson's tie-aware Bradley-Terry fit over all within-pair comparisons (`fit`), or why there is none
    (`problem`: fewer than two methods, or methods never compared on a common source pair)."""

    tie_band: float
    fit: Optional[DavidsonFit] = None
    problem: str = ""

    def rank_of(self) -> dict:
        """method -> its rank by strength (1 = strongest); empty without a fit."""
        return {name: rank for rank, (name, _) in enumerate(self.fit.ranking(), start=1)} if self.fit else {}


def pairwise_ranking(scores, stds, pairs, methods, tie_band: float = DEFAULT_TIE_BAND) -> PairwiseRanking:
    """`fuscore.pairwise.rank_methods_pairwise` on the overall scores and spreads (expected counts), or the reason it
    cannot be fitted."""
    if len(set(methods)) < 2:
        return PairwiseRanking(tie_band, problem="only one method: nothing to compare.")
    try:
        fit = rank_methods_pairwise(pairs, methods, scores, stds, tie_band=tie_band)
    except ValueError as error:
        return PairwiseRanking(tie_band, problem=str(error))
    return PairwiseRanking(tie_band, fit=fit)


def method_means(values, methods, method_order) -> np.ndarray:
    """Mean of `values` per method (NaN-aware), in `method_order`."""
    values = np.asarray(values, dtype=np.float64)
    methods = np.asarray(methods)
    means = []
    for name in method_order:
        selected = values[methods == name]
        selected = selected[np.isfinite(selected)]
        means.append(selected.mean() if selected.size else np.nan)
    return np.array(means)


def spearman(a, b) -> float:
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return float("nan")
    return float(stats.spearmanr(a[keep], b[keep]).statistic)


# ----------------------------------------------------------------------------------------------------- report
@dataclass
class RankingReport:
    ranking: MethodRanking
    table: list  # one dict per method, best first (the rows of ranking.csv)
    files: dict = field(default_factory=dict)  # name -> path
    pairwise: Optional[PairwiseRanking] = None


def _csv_text(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_cell(value) for key, value in row.items()})
    return buffer.getvalue()


def _csv_cell(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _figure_png(draw: Callable) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = draw(plt)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def plot_ranking(ranking: MethodRanking, title: str) -> bytes:
    def draw(plt):
        count = len(ranking.methods)
        figure, axes = plt.subplots(figsize=(7, 1.2 + 0.28 * count))
        positions = np.arange(count)[::-1]  # best at the top
        errors = np.vstack([ranking.mean - ranking.ci_low, ranking.ci_high - ranking.mean])
        axes.errorbar(ranking.mean, positions, xerr=errors, fmt="o", color="#1f4e79", ecolor="#7f9fbf", capsize=3)
        axes.set_yticks(positions, [f"{i + 1}. {name}" for i, name in enumerate(ranking.methods)])
        axes.set_xlabel(f"mean FuScore (1-5), {ranking.confidence:.0%} bootstrap interval over {ranking.n_pairs} source pairs")
        axes.set_title(title)
        axes.grid(axis="x", alpha=0.3)
        return figure

    return _figure_png(draw)


def plot_levels(methods: Sequence[str], mean_probs: np.ndarray, level_words: Sequence[str], title: str) -> bytes:
    def draw(plt):
        count = len(methods)
        figure, axes = plt.subplots(figsize=(7, 1.4 + 0.28 * count))
        positions = np.arange(count)[::-1]
        colors = plt.get_cmap("RdYlGn")(np.linspace(0.9, 0.1, len(level_words)))  # best level green, worst red
        left = np.zeros(count)
        for level, word in enumerate(level_words):
            axes.barh(positions, mean_probs[:, level], left=left, color=colors[level], label=word, height=0.7)
            left += mean_probs[:, level]
        axes.set_yticks(positions, list(methods))
        axes.set_xlim(0, 1)
        axes.set_xlabel("mean level probability (overall)")
        axes.set_title(title)
        axes.legend(ncol=len(level_words), loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.5 / count), frameon=False)
        return figure

    return _figure_png(draw)


def plot_scatter(predicted, labelled, title: str) -> bytes:
    def draw(plt):
        figure, axes = plt.subplots(figsize=(5, 5))
        axes.scatter(labelled, predicted, s=14, alpha=0.7, color="#1f4e79")
        axes.set_xlabel("label (MOS)")
        axes.set_ylabel("predicted FuScore")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        return figure

    return _figure_png(draw)


def write_ranking_report(
    output_dir,
    items: Sequence[BenchmarkItem],
    scores: dict,
    level_words: Sequence[str],
    model_name: str,
    classical: Optional[dict] = None,
    labels: Optional[Sequence] = None,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    higher_is_better: Optional[dict] = None,
    note: str = "",
    overwrite: bool = False,
    tie_band: float = DEFAULT_TIE_BAND,
) -> RankingReport:
    """Ranks methods by mean overall score and writes ranking.md, ranking.csv, scores.csv and the plots.

    Beside the mean-score ranking, the pairwise one (`pairwise_ranking` with `tie_band`): ranking.csv gains
    `bt_rank` and `bt_strength` (Davidson log-strength, mean 0; empty where no fit), ranking.md a section.

    The files are written as one set (a temporary folder renamed to `output_dir` once complete). `output_dir` may be
    new or empty; a non-empty one is replaced only with `overwrite` (FileExistsError otherwise, before any work).
    """
    from fuscore_metrics.plcc_srcc import MIN_ITEMS, correlation_metrics

    output = Path(output_dir)
    check_output_folder(output, overwrite)
    pairs = [item.pair for item in items]
    methods = [item.method for item in items]
    overall = scores[OVERALL]["score"]
    ranking = bootstrap_ranking(overall, pairs, methods, n_resamples=n_resamples, confidence=confidence, seed=seed)
    pairwise = pairwise_ranking(overall, scores[OVERALL]["std"], pairs, methods, tie_band=tie_band)
    bt_rank = pairwise.rank_of()
    bt_strength = dict(zip(pairwise.fit.methods, pairwise.fit.strength)) if pairwise.fit else {}
    order = ranking.methods
    dimensions = list(scores)
    classical = classical or {}
    higher_is_better = higher_is_better or {}

    label_values = None
    if labels is not None:
        label_values = np.array([np.nan if value is None else value for value in labels], dtype=np.float64)

    table = []
    per_method = {dim: method_means(scores[dim]["score"], methods, order) for dim in dimensions}
    std_means = method_means(scores[OVERALL]["std"], methods, order)
    classical_means = {name: method_means(values, methods, order) for name, values in classical.items()}
    label_means = method_means(label_values, methods, order) if label_values is not None else None
    for i, method in enumerate(order):
        row = {
            "rank": i + 1, "method": method, "n_images": int(ranking.n_images[i]),
            "mean_score": float(ranking.mean[i]), "ci_low": float(ranking.ci_low[i]), "ci_high": float(ranking.ci_high[i]),
            "rank_ci_low": int(ranking.rank_low[i]), "rank_ci_high": int(ranking.rank_high[i]),
            "mean_std": float(std_means[i]),
            "bt_rank": bt_rank.get(method, ""), "bt_strength": float(bt_strength.get(method, np.nan)),
        }
        row.update({f"mean_{dim}": float(per_method[dim][i]) for dim in dimensions if dim != OVERALL})
        if label_means is not None:
            row["mean_label"] = float(label_means[i])
        row.update({name: float(means[i]) for name, means in classical_means.items()})
        table.append(row)

    contents = {"ranking.csv": _csv_text(table).encode()}

    per_image = []
    for index, item in enumerate(items):
        row = {"pair": item.pair, "method": item.method, "fused": item.fused}
        for dim in dimensions:
            row[dim] = float(scores[dim]["score"][index])
            row[f"{dim}_std"] = float(scores[dim]["std"][index])
        if label_values is not None:
            row["label"] = float(label_values[index])
        row.update({name: float(values[index]) for name, values in classical.items()})
        per_image.append(row)
    contents["scores.csv"] = _csv_text(per_image).encode()

    title = f"FuScore ranking of {len(order)} methods"
    contents["ranking.png"] = plot_ranking(ranking, title)

    probs_by_method = np.array([scores[OVERALL]["probs"][np.asarray(methods) == name].mean(axis=0) for name in order])
    contents["levels.png"] = plot_levels(order, probs_by_method, level_words, "Level distributions per method")

    label_summary = None
    if label_values is not None:
        labelled = np.isfinite(label_values)
        if labelled.sum() >= MIN_ITEMS:
            label_summary = correlation_metrics(overall[labelled], label_values[labelled],
                                                groups=[pair for pair, keep in zip(pairs, labelled) if keep])
            label_summary["srcc_method_means"] = spearman(ranking.mean, label_means)
        stats_text = (f"PLCC {label_summary['plcc']:.3f}, SRCC {label_summary['srcc']:.3f}" if label_summary else "too few labels")
        contents["scatter.png"] = plot_scatter(overall[labelled], label_values[labelled],
                                               f"Predicted vs labelled ({int(labelled.sum())} images; {stats_text})")

    markdown = _ranking_markdown(ranking, table, dimensions, classical_means, higher_is_better, label_summary,
                                 model_name, len(items), note, pairwise)
    contents["ranking.md"] = markdown.encode()
    # An empty folder holds no earlier run to protect: it is replaced like a missing one.
    with atomic.atomic_folder(output, overwrite=overwrite or output.is_dir()) as staging:
        for name, data in contents.items():
            (staging / name).write_bytes(data)
    return RankingReport(ranking=ranking, table=table, files={name: output / name for name in contents}, pairwise=pairwise)


def check_output_folder(output, overwrite: bool) -> None:
    """Refuses an output folder that is a file, or that holds files unless `overwrite` (FileExistsError naming it)."""
    from fuscore.atomic import remove_stale_temporaries

    output = Path(output)
    remove_stale_temporaries(output.absolute().parent, output)  # left by an earlier run killed while it wrote
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{output} exists and is not a folder; give a new or empty folder for the report.")
    if output.is_dir() and not overwrite and any(output.iterdir()):
        names = sorted(path.name for path in output.iterdir())
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise FileExistsError(f"{output} is not empty ({shown}); pass --overwrite (overwrite=True) to replace it, "
                              "or give a new folder.")




def _ranking_markdown(ranking, table, dimensions, classical_means, higher_is_better, label_summary, model_name,
                      n_items, note, pairwise: Optional[PairwiseRanking] = None) -> str:
    sub_dimensions = [dim for dim in dimensions if dim != OVERALL]
    header = ["rank", "method", "mean score", f"{ranking.confidence:.0%} CI", "rank range", "mean std"]
    header += [dim.replace("_", " ") for dim in sub_dimensions]
    if "mean_label" in table[0]:
        header.append("mean label")
    lines = [
        "# FuScore ranking of fusion methods",
        "",
        f"Model: `{model_name}`. {n_items} fused images, {len(table)} methods, {ranking.n_pairs} source pairs. "
        f"Methods are ranked by their mean overall score; intervals are percentile bootstrap intervals from "
        f"{ranking.n_resamples} resamples of the source pairs (seed {ranking.seed}), the rank range is the "
        f"{ranking.confidence:.0%} interval of each method's rank over the same resamples.",
    ]
    if note:
        lines += ["", note]
    if ranking.n_pairs < 2:
        lines += ["", "**Only one source pair: the intervals are degenerate and say nothing about uncertainty.**"]
    lines += ["", _markdown_row(header), "|" + "---|" * len(header)]
    for row in table:
        cells = [str(row["rank"]), row["method"], _fmt(row["mean_score"]), f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]",
                 f"{row['rank_ci_low']}–{row['rank_ci_high']}", _fmt(row["mean_std"])]
        cells += [_fmt(row[f"mean_{dim}"]) for dim in sub_dimensions]
        if "mean_label" in row:
            cells.append(_fmt(row["mean_label"]))
        lines.append(_markdown_row(cells))
    if pairwise is not None:
        lines += _pairwise_markdown(pairwise, table)
    if classical_means:
        names = list(classical_means)
        lines += ["", "## Classical metrics per method (mean over images, FuScore rank order)", "",
                  _markdown_row(["rank", "method", *names]), "|" + "---|" * (len(names) + 2)]
        for row in table:
            lines.append(_markdown_row([str(row["rank"]), row["method"], *(_fmt(row[name]) for name in names)]))
        lines += ["", "## Agreement with the classical metrics",
                  "",
                  "Spearman correlation, over the methods, between the mean FuScore and the mean of each metric "
                  "(metrics where lower is better are negated first, so positive means agreement).",
                  "", "| metric | better | Spearman with FuScore |", "|---|---|---|"]
        for name, means in classical_means.items():
            better = higher_is_better.get(name, True)
            value = spearman(ranking.mean, means if better else -means)
            lines.append(f"| {name} | {'higher' if better else 'lower'} | {_fmt(value)} |")
    if label_summary is not None:
        lines += ["", "## Agreement with the labels", "", "| statistic | value |", "|---|---|"]
        for name in ("n", "plcc", "srcc", "krcc", "srcc_within", "pairwise_accuracy_within", "srcc_method_means"):
            if name in label_summary:
                value = label_summary[name]
                lines.append(f"| {name} | {int(value) if name == 'n' else _fmt(float(value))} |")
    plots = ["ranking.png", "levels.png"] + (["scatter.png"] if "mean_label" in table[0] else [])
    lines += ["", "Files: `ranking.csv` (this table), `scores.csv` (per image), " + ", ".join(f"`{p}`" for p in plots) + ".", ""]
    return "\n".join(lines)


def _pairwise_markdown(pairwise: PairwiseRanking, table) -> list:
    lines = ["", "## Pairwise ranking (tie-aware Bradley-Terry)", ""]
    if pairwise.fit is None:
        return lines + [f"Not fitted: {pairwise.problem}"]
    fit = pairwise.fit
    lines.append(
        f"Every two images of one source pair are compared ({fit.n_comparisons:g} comparisons) under FuScore's "
        "Thurstone model: the probabilities that one is better, that they tie and that the other is better, from "
        f"their predicted overall scores and spreads, differences within ±{pairwise.tie_band:g} counting as ties. "
        "Davidson's tie-aware Bradley-Terry model is fitted by maximum likelihood to these expected wins and ties: "
        "P(i beats j) / P(j beats i) = exp(strength_i - strength_j), and the probability of a tie grows with the "
        f"tie parameter ν = {fit.tie:.3f}.")
    if not fit.finite:
        lines += ["", "**Some methods won (or tied) every comparison against the others: their strengths have no finite "
                      "estimate; the order holds, the sizes mean nothing.**"]
    if not fit.converged:
        lines += ["", "**The optimiser reported no convergence; read the strengths with care.**"]
    mean_rank = {row["method"]: row["rank"] for row in table}
    lines += ["", "| BT rank | method | strength | rank by mean score |", "|---|---|---|---|"]
    for rank, (method, strength) in enumerate(fit.ranking(), start=1):
        lines.append(_markdown_row([str(rank), str(method), f"{strength:+.3f}", str(mean_rank[method])]))
    strengths = [row["bt_strength"] for row in table]
    lines += ["", f"Spearman correlation of the strengths with the mean scores, over the methods: "
                  f"{_fmt(spearman(strengths, [row['mean_score'] for row in table]))}."]
    return lines


def _markdown_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"
