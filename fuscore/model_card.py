"""Model cards for saved FuScore models, with the evaluation numbers of the run that produced them.

The `model-index` is filled from `fuscore_eval.json`, which the trainer writes after its final evaluation; no number
in a card is typed in by hand.
"""

import json
from pathlib import Path
from typing import Optional

import yaml

from fuscore.atomic import write_text


def _is_hub_repo_id(name: str) -> bool:
    """Whether `name` reads as a Hub repo id (`org/name`), not a local folder such as `outputs/run/final`."""
    from fuscore.hub import check_repo_id

    try:
        check_repo_id(name)
    except ValueError:
        return False
    return not Path(name).exists()


def write_model_card(folder, evaluation: Optional[dict] = None, repo_id: str = "org/fuscore", base_model: Optional[str] = None) -> Path:
    """Writes `README.md` (YAML header + text) into a saved FuScore folder and returns its path.

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

    header = {
        "library_name": "transformers",
        "pipeline_tag": "image-text-to-text",
        "license": "apache-2.0",
        "tags": ["image-quality-assessment", "infrared-visible-fusion", "custom_code", "fuscore"],
    }
    if base and _is_hub_repo_id(str(base)):
        header["base_model"] = str(base)
    if metrics:
        header["model-index"] = [{
            "name": repo_id.split("/")[-1],
            "results": [{
                "task": {"type": "image-quality-assessment", "name": "Fused image quality assessment"},
                "dataset": {"name": evaluation.get("dataset", "held-out split"), "type": "synthetic" if synthetic else "custom"},
                "metrics": [
                    {"type": name, "value": round(float(metrics[name]), 4), "name": label}
                    for name, label in (("plcc", "PLCC"), ("srcc", "SRCC"), ("krcc", "KRCC"),
                                        ("srcc_within", "Mean within-pair SRCC"), ("pairwise_accuracy_within", "Within-pair ranking accuracy"))
                    if name in metrics
                ],
            }],
        }]

    warning = (
        "**This model was trained and evaluated on FuScore's synthetic benchmark only.** Its labels are constructed "
        "truth plus simulated rater noise, not human ratings; its numbers say how well it learned that synthetic truth, "
        "not how well it agrees with people. Fine-tune it on a human-rated table before using it to judge fusion methods."
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
        from fuscore.eval_results import write_eval_results

        written = write_eval_results(folder, evaluation)
    if written:
        body += ("\nThe same numbers in the Hub's evaluation-results format (shown on the model page and in the "
                 "dataset's leaderboard): " + ", ".join(f"`.eval_results/{p.name}`" for p in written) + ".\n")
    path = folder / "README.md"
    write_text(path, "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + body)
    return path
