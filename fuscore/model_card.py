"""Model cards for saved FuScore models, with the evaluation numbers of the run that produced them.

The card is huggingface_hub's `ModelCard`: its metadata is a `ModelCardData` whose `eval_results` (`EvalResult`, the
Hub's `model-index`) are filled from `fuscore_eval.json`, which the trainer writes after its final evaluation; no
number in a card is typed in by hand.
"""

import json
from pathlib import Path
from typing import Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from fuscore.atomic import write_text
from fuscore.eval_results import hub_dataset_id, write_eval_results


# The Hub has no task for image quality scores: `other` is its category for such models. The custom pipeline
# (`fused-image-quality`, declared in config.json's `custom_pipelines`) is what `pipeline(model=...)` loads.
PIPELINE_TAG = "other"
TASK_NAME = "Fused image quality assessment"
TAGS = ["image-quality-assessment", "infrared-visible-fusion", "custom_code", "fuscore"]
# FuScore's metric names -> (the metric id the Hub and `evaluate` know it by, its display name).
CARD_METRICS = {
    "plcc": ("pearsonr", "PLCC"),
    "srcc": ("spearmanr", "SRCC"),
    "krcc": ("kendalltau", "KRCC"),
    "srcc_within": ("srcc_within", "Mean within-pair SRCC"),
    "pairwise_accuracy_within": ("pairwise_accuracy_within", "Within-pair ranking accuracy"),
}
# What the dataset of an evaluation on FuScore's generated benchmark is called (it is not a Hub dataset).
SYNTHETIC_DATASET_TYPE = "fuscore_data.synthetic"


def is_hub_repo_id(name: str) -> bool:
    """Whether `name` reads as a Hub repo id (`org/name`), not a local folder such as `outputs/run/final`."""
    from fuscore.hub import check_repo_id

    try:
        check_repo_id(name)
    except ValueError:
        return False
    return not Path(name).exists()


def card_eval_results(evaluation: dict, model_name: str) -> list:
    """The card's `EvalResult`s (its `model-index`) for a run's evaluation (`fuscore_eval.json`): one per metric of
    `CARD_METRICS` the evaluation has, on the Hub dataset it names, else on the synthetic benchmark or local table."""
    metrics = evaluation.get("metrics", {})
    hub_dataset = hub_dataset_id(evaluation)
    dataset_name = str(evaluation.get("dataset") or "held-out split")
    if hub_dataset:
        dataset_type = hub_dataset
    elif evaluation.get("synthetic"):
        dataset_type = SYNTHETIC_DATASET_TYPE
    else:
        dataset_type = Path(dataset_name.split(" (")[0]).name or "local"
    return [
        EvalResult(task_type=PIPELINE_TAG, task_name=TASK_NAME, dataset_type=dataset_type, dataset_name=dataset_name,
                   dataset_split=evaluation.get("split", "test"), dataset_revision=evaluation.get("dataset_revision"),
                   metric_type=metric_id, metric_name=label, metric_value=round(float(metrics[name]), 4))
        for name, (metric_id, label) in CARD_METRICS.items() if name in metrics
    ]


def write_model_card(folder, evaluation: Optional[dict] = None, repo_id: str = "org/fuscore", base_model: Optional[str] = None) -> Path:
    """Writes `README.md` (a `ModelCard`: metadata + text) into a saved FuScore folder and returns its path.

    `evaluation` is the trainer's `fuscore_eval.json` content (read from the folder when omitted).
    """
    folder = Path(folder)
    if evaluation is None:
        evaluation_file = folder / "fuscore_eval.json"
        evaluation = json.loads(evaluation_file.read_text()) if evaluation_file.is_file() else {}
    config = json.loads((folder / "config.json").read_text())
    base = base_model or evaluation.get("base_model") or config.get("base_config", {}).get("_name_or_path") or None
    synthetic = bool(evaluation.get("synthetic"))
    metrics = evaluation.get("metrics", {})
    hub_dataset = hub_dataset_id(evaluation)
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        license="apache-2.0",
        tags=list(TAGS),
        base_model=str(base) if base and is_hub_repo_id(str(base)) else None,
        datasets=[hub_dataset] if hub_dataset else None,
        model_name=model_name,
        eval_results=card_eval_results(evaluation, model_name) or None,
    )

    benchmark = str(evaluation.get("dataset", "")).startswith("synthetic")  # FuScore's own synthetic benchmark
    warning = (
        "**This model was trained and evaluated on FuScore's synthetic benchmark only.** Its labels are constructed "
        "truth plus simulated rater noise, not human ratings; its numbers say how well it learned that synthetic truth, "
        "not how well it agrees with people. Fine-tune it on a human-rated table before using it to judge fusion methods."
        if synthetic and benchmark else
        f"**This model was trained on synthetic labels** ({evaluation.get('dataset', 'its table')}): constructed scores, "
        "not human ratings, whatever images they were given to. Its numbers say how well it learned those labels, not "
        "how well it agrees with people. Fine-tune it on a human-rated table before using it to judge fusion methods."
        if synthetic else
        "Evaluated on the held-out split named above; see the training configuration for the data it learned from."
    )
    table = "\n".join(f"| {name} | {float(value):.4f} |" for name, value in metrics.items()
                      if isinstance(value, (int, float)) and not name.endswith(("runtime", "per_second")))
    body = f"""# FuScore

Quality assessment of infrared-visible fused images with a Qwen-VL model (level-token scoring): the model's
probabilities over the words excellent/good/fair/poor/bad at the answer position give a score in [1, 5] and its
uncertainty, for the overall quality and four sub-dimensions (thermal retention, texture preservation, artifacts,
sharpness).

{warning}

## Use

```python
from transformers import AutoModel

model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)
model.score("fused.png")
model.score("fused.png", dimensions=("overall", "thermal_retention", "texture_preservation", "artifacts", "sharpness"))
```

## Evaluation ({evaluation.get('dataset', 'not evaluated')})

Objective: `{evaluation.get('objective', 'unknown')}`, dimension: `{evaluation.get('dimension', 'overall')}`.

| metric | value |
|---|---|
{table}
"""
    written = []
    if evaluation:
        # The Hub's current evaluation-results files beside model-index (only for an evaluation on a Hub dataset).
        written = write_eval_results(folder, evaluation)
    if written:
        body += ("\nThe same numbers in the Hub's evaluation-results format (shown on the model page and in the "
                 "dataset's leaderboard): " + ", ".join(f"`.eval_results/{p.name}`" for p in written) + ".\n")
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")
    path = folder / "README.md"
    write_text(path, str(card))
    return path
