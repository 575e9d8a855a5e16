# Copyright 2026 The FuScore authors. Apache-2.0.
"""Evaluation results in the Hub's `.eval_results/` format, beside the model card's `model-index`.

The Hub reads YAML files in a model repo's `.eval_results/` folder, shows them on the model page and aggregates them
into the leaderboards of benchmark datasets. Each file is a list of results; a result names a Hub dataset
registered as a benchmark (`dataset.id`, the `task_id` of its `eval.yaml`, optionally a `revision`) and one `value`,
with an optional `date`, `source` and `notes`. A task has one value per model, so FuScore writes one file per metric
and says in `notes` which metric it is. The entries are huggingface_hub's `EvalResultEntry`, written with its
`eval_result_entries_to_yaml`.

A result can only name a dataset on the Hub: an evaluation on the synthetic benchmark or on a local table gets no
`.eval_results/` file (its numbers stay in `model-index` and the card's table).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import yaml


__all__ = ["METRIC_NOTES", "hub_dataset_id", "eval_results_entries", "write_eval_results"]

METRIC_NOTES = {
    "srcc": "SRCC (Spearman) of the predicted overall score with the MOS",
    "plcc": "PLCC (Pearson) of the predicted overall score with the MOS",
    "krcc": "KRCC (Kendall) of the predicted overall score with the MOS",
    "srcc_within": "mean SRCC within each source pair (ordering of fusion methods)",
    "pairwise_accuracy_within": "within-pair ranking accuracy (ordering of fusion methods)",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_dataset_id(evaluation: dict) -> Optional[str]:
    """The Hub dataset id the evaluation was made on (`evaluation["hub_dataset"]`, or a `dataset` of the form
    `owner/name` that is not a local path), or None for the synthetic benchmark and local tables."""
    if evaluation.get("hub_dataset"):
        return str(evaluation["hub_dataset"])
    dataset = str(evaluation.get("dataset") or "")
    if evaluation.get("synthetic") or not _HUB_ID.match(dataset) or Path(dataset).exists():
        return None
    return dataset


def eval_results_entries(metrics: dict, dataset_id: str, task_id: str = "default", *,
                         revision: Optional[str] = None, date: Optional[str] = None,
                         source_url: Optional[str] = None, source_name: Optional[str] = None,
                         notes: Optional[str] = None) -> dict[str, list]:
    """`{file name: [EvalResultEntry]}`, one `.eval_results/` file per metric of `METRIC_NOTES` present in `metrics`.

    Args:
        metrics (`dict`): metric name -> value (the trainer's evaluation, without its `eval_` prefix).
        dataset_id (`str`), task_id (`str`), revision (`str`, *optional*): the benchmark dataset on the Hub.
        date (`str`, *optional*): ISO-8601 date of the evaluation.
        source_url, source_name (*optional*): where the evaluation can be checked.
        notes (*optional*): appended to each result's notes (the metric's description), e.g. the objective.
    """
    if not dataset_id:
        raise ValueError("A `.eval_results` entry must name the Hub dataset it was evaluated on (`dataset_id`).")
    # Imported here: huggingface_hub has it from 1.4, and a run evaluated on no Hub dataset never needs it.
    from huggingface_hub import EvalResultEntry

    return {
        f"fuscore_{name}.yaml": [EvalResultEntry(
            dataset_id=dataset_id, task_id=task_id, value=round(float(metrics[name]), 4), dataset_revision=revision,
            date=date, source_url=source_url, source_name=source_name,
            notes=description if not notes else f"{description}; {notes}")]
        for name, description in METRIC_NOTES.items() if name in metrics
    }


def write_eval_results(folder, evaluation: dict, task_id: str = "default") -> list[Path]:
    """Writes `.eval_results/fuscore_<metric>.yaml` into a saved model folder for an evaluation on a Hub dataset
    (`evaluation` as the trainer's `fuscore_eval.json` holds it); returns the files written (none when the
    evaluation names no Hub dataset)."""
    from fuscore.atomic import write_text

    dataset_id = hub_dataset_id(evaluation)
    if dataset_id is None or not evaluation.get("metrics"):
        return []
    from huggingface_hub import eval_result_entries_to_yaml
    objective = evaluation.get("objective")
    entries = eval_results_entries(evaluation["metrics"], dataset_id, evaluation.get("task_id", task_id),
                                   revision=evaluation.get("dataset_revision"), date=evaluation.get("date"),
                                   notes=f"objective {objective}" if objective else None)
    written = []
    for name, results in entries.items():
        path = Path(folder) / ".eval_results" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, yaml.safe_dump(eval_result_entries_to_yaml(results), sort_keys=False))
        written.append(path)
    return written
