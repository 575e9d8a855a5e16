# Copyright 2025 The FuScore authors. Licensed under the Apache License, Version 2.0.
"""Baseline report: how well classical fusion metrics and quality models agree with MOS.

For a labelled rating table (a `datasets.Dataset` with image columns `fused`, `ir`, `vis`, a
float `mos` column and optionally `pair_id`; DESIGN.md section 2) and named model predictions,
`baseline_report` computes every classical IVIF metric per image, correlates each metric and
each model with the MOS, and writes one table as Markdown and CSV.

Sign convention: every score is correlated in its "better" direction. Lower-is-better metrics
(CE, RMSE, Qcv) are negated first, so in every row a positive correlation means "agrees with
the raters" and rows can be compared directly; the `better` column says which metrics were
negated. Model predictions are taken as higher-is-better.

Images where a metric is NaN or infinite (e.g. PSNR of a fused image equal to both sources,
Qcb of a constant image) are left out of that metric's row; `n` gives the count used.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm

from fuscore.atomic import write_text

from .ivif_metrics.ivif_metrics import HIGHER_IS_BETTER, METRIC_NAMES, compute_ivif_metrics_batch
from .plcc_srcc.plcc_srcc import MIN_ITEMS, correlation_metrics

NO_REFERENCE_METRICS: tuple[str, ...] = ("EN", "AG", "EI", "SD", "SF")
"""Metrics that use the fused image only; the only ones computed when the table has no sources."""

REPORT_COLUMNS: tuple[str, ...] = (
    "name", "kind", "better", "n", "plcc", "plcc_logistic", "srcc", "krcc", "rmse",
    "srcc_within", "pairwise_accuracy_within",
)
"""Columns of the written table. `rmse` is after the logistic fit, in the table's MOS units;
the two `_within` columns are empty when the table has no `pair_id`."""


@dataclass
class BaselineReport:
    """What `baseline_report` computed and where it wrote it."""

    rows: list[dict]
    per_image_metrics: dict[str, np.ndarray]
    markdown_path: Path
    csv_path: Path


def compute_table_metrics(
    table: datasets.Dataset,
    metrics: Iterable[str] | None = None,
    chunk_size: int = 32,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Classical metrics for every row of a rating table, read `chunk_size` rows at a time.

    Without `ir`/`vis` columns only `NO_REFERENCE_METRICS` can be computed; asking for others
    then raises ValueError.
    """
    if "fused" not in table.column_names:
        raise ValueError(f"The rating table has no 'fused' column (columns: {table.column_names}).")
    has_sources = "ir" in table.column_names and "vis" in table.column_names
    if metrics is None:
        names = list(METRIC_NAMES) if has_sources else list(NO_REFERENCE_METRICS)
    else:
        names = list(metrics)
        needing_sources = [name for name in names if name not in NO_REFERENCE_METRICS]
        if needing_sources and not has_sources:
            raise ValueError(f"Metrics {needing_sources} need 'ir' and 'vis' columns, which the table lacks.")

    count = len(table)
    values = {name: np.full(count, np.nan) for name in names}
    with tqdm(total=count, desc="Classical IVIF metrics", unit="image", disable=not progress) as bar:
        for start in range(0, count, chunk_size):
            rows = table[start:start + chunk_size]
            fused = rows["fused"]
            # No-reference metrics ignore the sources, so the fused image can stand in for them.
            ir = rows["ir"] if has_sources else fused
            vis = rows["vis"] if has_sources else fused
            for column, images in (("fused", fused), ("ir", ir), ("vis", vis)):
                missing = [start + k for k, image in enumerate(images) if image is None]
                if missing:
                    raise ValueError(f"Column '{column}' is empty in rows {missing[:10]}.")
            chunk_values = compute_ivif_metrics_batch(fused, ir, vis, metrics=names)
            for name in names:
                values[name][start:start + len(fused)] = chunk_values[name]
            bar.update(len(fused))
    return values


def _correlation_row(name: str, kind: str, higher_is_better: bool, scores, mos, groups) -> dict:
    scores = np.asarray(scores, dtype=np.float64)
    oriented = scores if higher_is_better else -scores
    usable = np.isfinite(oriented)
    row = {name_: None for name_ in REPORT_COLUMNS}
    row.update(name=name, kind=kind, better="higher" if higher_is_better else "lower (negated)", n=int(usable.sum()))
    if usable.sum() < MIN_ITEMS:
        return row
    group_subset = None if groups is None else [groups[i] for i in np.flatnonzero(usable)]
    stats = correlation_metrics(oriented[usable], mos[usable], groups=group_subset)
    for key in ("plcc", "plcc_logistic", "srcc", "krcc", "rmse", "srcc_within", "pairwise_accuracy_within"):
        if key in stats:
            row[key] = float(stats[key])
    return row


def correlation_rows(
    metric_values: Mapping[str, np.ndarray],
    predictions: Mapping[str, Iterable[float]],
    mos,
    groups=None,
) -> list[dict]:
    """One row of correlations with `mos` per classical metric, then per model."""
    mos = np.asarray(mos, dtype=np.float64)
    if not np.all(np.isfinite(mos)):
        raise ValueError("The MOS column contains NaN or infinite values.")
    rows = [
        _correlation_row(name, "classical", HIGHER_IS_BETTER[name], values, mos, groups)
        for name, values in metric_values.items()
    ]
    for name, scores in predictions.items():
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != mos.shape:
            raise ValueError(f"Predictions '{name}' have shape {scores.shape}, the table has {mos.shape[0]} rows.")
        rows.append(_correlation_row(name, "model", True, scores, mos, groups))
    return rows


def _format_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def render_markdown(rows: list[dict], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        "Correlations with MOS. Lower-is-better metrics are negated, so a positive value always",
        "means agreement with the raters. `rmse` is after the 4-parameter logistic fit (MOS units).",
        "",
        "| " + " | ".join(REPORT_COLUMNS) + " |",
        "|" + "|".join("---" for _ in REPORT_COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_format_cell(row[column]) for column in REPORT_COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(REPORT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: "" if row[column] is None else row[column] for column in REPORT_COLUMNS})
    return buffer.getvalue()


def baseline_report(
    table: datasets.Dataset,
    predictions: Mapping[str, Iterable[float]] | None = None,
    output_dir: str | os.PathLike = ".",
    stem: str = "baseline_report",
    metrics: Iterable[str] | None = None,
    mos_column: str = "mos",
    group_column: str = "pair_id",
    chunk_size: int = 32,
    progress: bool = True,
) -> BaselineReport:
    """Correlate every classical metric and every model with MOS; write `<stem>.md` and `<stem>.csv`.

    Args:
        table: rating table with `fused` (and `ir`, `vis`) image columns and a float `mos_column`.
        predictions: {model name: one score per row}, higher is better.
        output_dir: folder for the two files (created if needed).
        stem: file name without extension.
        metrics: classical metric names; all that the table's columns allow by default.
        group_column: when present in the table, adds within-group SRCC and pairwise accuracy.
    """
    predictions = dict(predictions or {})
    if mos_column not in table.column_names:
        raise ValueError(f"The rating table has no '{mos_column}' column (columns: {table.column_names}).")
    clashes = sorted(set(predictions) & set(METRIC_NAMES))
    if clashes:
        raise ValueError(f"Model names {clashes} clash with classical metric names; rename them.")
    mos = np.asarray(table[mos_column], dtype=np.float64)
    groups = list(table[group_column]) if group_column in table.column_names else None

    metric_values = compute_table_metrics(table, metrics=metrics, chunk_size=chunk_size, progress=progress)
    rows = correlation_rows(metric_values, predictions, mos, groups)

    output_dir = Path(output_dir)
    markdown_path = output_dir / f"{stem}.md"
    csv_path = output_dir / f"{stem}.csv"
    write_text(markdown_path, render_markdown(rows, title=f"Baseline report ({len(table)} fused images)"))
    write_text(csv_path, render_csv(rows))
    return BaselineReport(rows=rows, per_image_metrics=metric_values, markdown_path=markdown_path, csv_path=csv_path)
