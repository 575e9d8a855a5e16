"""Tests of the baseline report (fuscore_metrics.report)."""

from __future__ import annotations

import csv
import os

import datasets
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from fuscore_metrics.ivif_metrics import METRIC_NAMES, compute_ivif_metrics
from fuscore_metrics.plcc_srcc import correlation_metrics
from fuscore import atomic
from fuscore_metrics import report as report_module
from fuscore_metrics.report import NO_REFERENCE_METRICS, REPORT_COLUMNS, baseline_report

SIZE = (44, 52)  # large enough for VIF's four scales


def make_table(count: int = 8, with_sources: bool = True) -> datasets.Dataset:
    """Fused images that get noisier row by row, with MOS falling accordingly."""
    rng = np.random.default_rng(0)
    visible = rng.integers(40, 200, size=(*SIZE, 3)).astype(float)
    infrared = rng.integers(0, 256, size=SIZE).astype(float)
    columns = {"fused": [], "ir": [], "vis": [], "mos": [], "pair_id": []}
    for index in range(count):
        blend = 0.6 * visible + 0.4 * infrared[:, :, None] + rng.normal(0, 4 + 6 * index, (*SIZE, 3))
        columns["fused"].append(Image.fromarray(np.clip(blend, 0, 255).astype(np.uint8)))
        columns["ir"].append(Image.fromarray(infrared.astype(np.uint8)))
        columns["vis"].append(Image.fromarray(visible.astype(np.uint8)))
        columns["mos"].append(5.0 - 0.5 * index + 0.1 * rng.normal())
        columns["pair_id"].append(f"pair{index % 2}")
    if not with_sources:
        del columns["ir"], columns["vis"]
    table = datasets.Dataset.from_dict(columns)
    for column in ("fused", "ir", "vis"):
        if column in table.column_names:
            table = table.cast_column(column, datasets.Image())
    return table


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_report_writes_markdown_and_csv_with_every_row(tmp_path, capsys):
    table = make_table()
    mos = np.asarray(table["mos"])
    model = mos + np.random.default_rng(1).normal(0, 0.2, len(mos))
    report = baseline_report(table, {"FuScore": model}, output_dir=tmp_path, stem="vifb_baseline", progress=True)

    assert "Classical IVIF metrics" in capsys.readouterr().err  # the tqdm bar
    assert sorted(os.listdir(tmp_path)) == ["vifb_baseline.csv", "vifb_baseline.md"]  # no temp files left
    rows = read_csv(report.csv_path)
    assert list(rows[0]) == list(REPORT_COLUMNS)
    assert [row["name"] for row in rows] == [*METRIC_NAMES, "FuScore"]
    assert [row["name"] for row in rows if row["better"] == "lower (negated)"] == ["CE", "RMSE", "Qcv"]
    assert {row["kind"] for row in rows} == {"classical", "model"}

    markdown = report.markdown_path.read_text()
    assert "| name | kind | better |" in markdown
    assert markdown.count("\n| ") == 1 + len(METRIC_NAMES) + 1  # header + rows

    model_row = rows[-1]
    expected = correlation_metrics(model, mos, groups=list(table["pair_id"]))
    for key in ("plcc", "srcc", "krcc", "srcc_within", "pairwise_accuracy_within"):
        assert float(model_row[key]) == pytest.approx(expected[key], abs=1e-12), key

    # Lower-is-better metrics are correlated after negation.
    rmse_row = next(row for row in rows if row["name"] == "RMSE")
    rmse_values = report.per_image_metrics["RMSE"]
    assert float(rmse_row["srcc"]) == pytest.approx(stats.spearmanr(-rmse_values, mos).statistic, abs=1e-12)
    assert float(rmse_row["srcc"]) > 0.9  # noisier images are further from the sources

    # Per-image values are the plain function's.
    first = compute_ivif_metrics(table[0]["fused"], table[0]["ir"], table[0]["vis"], metrics=["Qabf"])
    assert report.per_image_metrics["Qabf"][0] == pytest.approx(first["Qabf"], rel=1e-12)


def test_report_without_sources_or_groups_uses_no_reference_metrics(tmp_path):
    table = make_table(count=6, with_sources=False).remove_columns("pair_id")
    report = baseline_report(table, output_dir=tmp_path, progress=False, chunk_size=4)
    rows = read_csv(report.csv_path)
    assert [row["name"] for row in rows] == list(NO_REFERENCE_METRICS)
    assert all(row["srcc_within"] == "" for row in rows)
    assert all(int(row["n"]) == 6 for row in rows)


def test_report_errors(tmp_path):
    table = make_table(count=4)
    with pytest.raises(ValueError, match="have shape"):
        baseline_report(table, {"FuScore": [1.0, 2.0]}, output_dir=tmp_path, progress=False, metrics=["EN"])
    with pytest.raises(ValueError, match="clash"):
        baseline_report(table, {"SSIM": [1.0] * 4}, output_dir=tmp_path, progress=False, metrics=["EN"])
    with pytest.raises(ValueError, match="no 'score' column"):
        baseline_report(table, output_dir=tmp_path, progress=False, mos_column="score")
    no_sources = make_table(count=4, with_sources=False)
    with pytest.raises(ValueError, match="need 'ir' and 'vis'"):
        baseline_report(no_sources, output_dir=tmp_path, progress=False, metrics=["EN", "Qabf"])


def test_a_failed_report_write_keeps_the_previous_report(tmp_path, monkeypatch):
    """The report is written through fuscore.atomic: a failing write names the file and keeps the old one."""
    assert report_module.write_text is atomic.write_text  # one writer for the project
    table = make_table(count=4)
    baseline_report(table, output_dir=tmp_path, progress=False, metrics=["EN"])
    before = {name: (tmp_path / name).read_text() for name in os.listdir(tmp_path)}

    def failing_replace(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(atomic.AtomicWriteError, match=r"baseline_report\.md.*No space left"):
        baseline_report(table, output_dir=tmp_path, progress=False, metrics=["EN", "SD"])
    assert {name: (tmp_path / name).read_text() for name in os.listdir(tmp_path)} == before  # no temporaries left
