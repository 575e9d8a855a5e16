"""Export a FuScore model as a folder ready to push to the Hub (`fuscore export`).

A full export (for `org/fuscore`) holds the weights (a LoRA adapter merged in), the processor, the remote-code files
(`configuration_fuscore.py`, `modeling_fuscore.py`, `acceleration_fuscore.py`, `float8_fuscore.py`,
`processing_fuscore.py`, `image_utils_fuscore.py`, `scoring_fuscore.py`, `comparison_fuscore.py`,
`attribution_fuscore.py` and `pipeline_fuscore.py`) and `custom_pipelines` in `config.json` (so `pipeline(model="org/fuscore",
trust_remote_code=True)` needs no task), all of which `FuScoreForQuality.save_pretrained` writes into any model
folder; beside them `handler.py` for Inference Endpoints, the
trainer's `fuscore_eval.json` and a model card whose numbers come from that file. An adapter-only export (for
`org/fuscore-lora`) holds the peft adapter and a card naming its base model.

The folder is written whole or not at all (`fuscore.hub.writing_model_folder`): a failure never leaves a
half-written export, and every repo id is checked before anything is written.
"""

import inspect
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from huggingface_hub import ModelCardData
from transformers import PreTrainedConfig

import modeling_fuscore
import pipeline_fuscore
from configuration_fuscore import FuScoreConfig
from fuscore.atomic import write_text
from fuscore.hub import check_repo_id, writing_model_folder
from fuscore.model_card import is_hub_repo_id, write_model_card
from modeling_fuscore import FuScoreForQuality
from processing_fuscore import FuScoreProcessor


PIPELINE_TASK = pipeline_fuscore.TASK_NAME
CUSTOM_PIPELINES = pipeline_fuscore.CUSTOM_PIPELINES  # written into config.json by FuScoreForQuality.save_pretrained
# `save_pretrained` writes the remote-code files, the pipeline's among them, with the processor and `custom_pipelines`.
PIPELINE_FILE = Path(inspect.getsourcefile(pipeline_fuscore))
EVALUATION_FILE = "fuscore_eval.json"
# The Inference Endpoints handler lives at the repository root beside the remote-code files. It is read as a file,
# never imported: "handler" is too generic a name to install as a top-level module.
HANDLER_FILE = Path(inspect.getsourcefile(modeling_fuscore)).with_name("handler.py")


class ExportInputError(ValueError):
    """A model folder or file that cannot be used as it is; the message names it."""


class NotAFuScoreModelError(ExportInputError):
    """A folder, repo or object that is not a saved FuScore model, a LoRA adapter on one, or such a model object."""


@dataclass
class ExportResult:
    folder: Path
    kind: str  # "merged" or "adapter"
    cache_snapshot: Optional[Path] = None
    hub_url: Optional[str] = None


# ---------------------------------------------------------------------------------------------------- reading
def check_fuscore_config(name_or_path: str, where: str) -> None:
    """Raises NotAFuScoreModelError unless the config at `name_or_path` is a FuScore one (read as JSON, no code run)."""
    try:
        config_dict, _ = PreTrainedConfig.get_config_dict(str(name_or_path))
    except OSError as error:
        raise NotAFuScoreModelError(f"{where}: cannot read a config from {name_or_path} ({error}).") from None
    if config_dict.get("model_type") != "fuscore":
        raise NotAFuScoreModelError(
            f"{where}: {name_or_path} is a {config_dict.get('model_type')!r} model, not a FuScore model "
            "(model_type 'fuscore'). Use a folder written by FuScoreForQuality.save_pretrained, the trainer or fuscore export."
        )


def _read_evaluation(folder: Path) -> dict:
    path = folder / EVALUATION_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ExportInputError(f"{path}: not valid JSON ({error}).") from None


def load_fuscore_processor(name_or_path: str) -> FuScoreProcessor:
    """The processor saved in a FuScore folder or repo, built with the checkout's class; no code from the folder runs.

    A model object already has it: `model.get_processor()` loads it the same way.
    """
    config = FuScoreConfig.from_pretrained(name_or_path)  # JSON read into the checkout's class
    return FuScoreProcessor.from_pretrained(name_or_path, trust_remote_code=False, config=config)


def load_export_source(source: Union[str, os.PathLike], base_model: Optional[str] = None):
    """Loads what `source` holds: returns `(model, processor, evaluation, base_name)`.

    `model` is a `FuScoreForQuality`, or a peft `PeftModel` around one when `source` is a LoRA adapter folder (whose
    base comes from `adapter_config.json`, or from `base_model` when given): export needs the adapter as peft's object
    to merge it or to save it alone. The FuScore model itself comes from `fuscore.hub.load_model`, with its checks.
    """
    from fuscore.hub import load_model

    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder. Pass a saved FuScore model or LoRA adapter folder.")
    evaluation = _read_evaluation(folder)
    adapter_config_path = folder / "adapter_config.json"
    if adapter_config_path.is_file():
        from peft import PeftModel

        adapter_config = json.loads(adapter_config_path.read_text())
        base_name = base_model or adapter_config.get("base_model_name_or_path")
        if not base_name:
            raise NotAFuScoreModelError(f"{adapter_config_path} names no base model; pass --base-model.")
        base = load_model(base_name, label=f"{adapter_config_path} (base model)")
        model = PeftModel.from_pretrained(base, str(folder))
        return model, base.processor, evaluation, str(base_name)
    if not (folder / "config.json").is_file():
        raise NotAFuScoreModelError(
            f"{folder} has neither config.json nor adapter_config.json: it is not a saved FuScore model or adapter."
        )
    model = load_model(folder, label=f"{folder / 'config.json'}")
    return model, model.processor, evaluation, evaluation.get("base_model")


def _unwrap(model):
    """The FuScore model inside a peft wrapper, and whether there was one."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model.get_base_model(), True
    return model, False


# ---------------------------------------------------------------------------------------------------- writing
def _copy_handler(folder: Path) -> None:
    if not HANDLER_FILE.is_file():
        raise FileNotFoundError(f"{HANDLER_FILE}: the Inference Endpoints handler is missing; export from a FuScore checkout.")
    shutil.copyfile(HANDLER_FILE, folder / "handler.py")


def _usage_section(repo_id: str) -> str:
    return f"""
## Pipeline and Inference Endpoints

```python
from transformers import pipeline

scorer = pipeline(model="{repo_id}", trust_remote_code=True)   # task "{PIPELINE_TASK}" comes from config.json
scorer({{"fused": "fused.png", "ir": "ir.png", "vis": "vis.png"}})
# {{'score': ..., 'std': ..., 'probs': {{'excellent': ..., ...}}, 'dimensions': {{'thermal_retention': {{...}}, ...}}}}
```

`handler.py` serves the same pipeline on Inference Endpoints: send `{{"inputs": "<base64 image>"}}` or
`{{"inputs": {{"fused": "<base64>", "ir": "<base64>", "vis": "<base64>"}}}}`.
"""


def _write_merged(model, processor, evaluation: dict, folder: Path, repo_id: str, base_name: Optional[str]) -> None:
    model.processor = processor
    model.save_pretrained(folder)  # weights, config with custom_pipelines, processor, code files (the pipeline's too)
    _copy_handler(folder)
    if evaluation:
        write_text(folder / EVALUATION_FILE, json.dumps(evaluation, indent=2))
    card = write_model_card(folder, evaluation, repo_id=repo_id, base_model=base_name)
    write_text(card, card.read_text() + _usage_section(repo_id))

    config = json.loads((folder / "config.json").read_text())
    missing = [name for name in (PIPELINE_FILE.name, "handler.py") if not (folder / name).is_file()]
    if missing or config.get("custom_pipelines") != CUSTOM_PIPELINES or "AutoModel" not in config.get("auto_map", {}):
        raise RuntimeError(f"The export in {folder} is incomplete (missing {missing or 'config entries'}); nothing was written.")


def _adapter_card(repo_id: str, base_name: Optional[str], evaluation: dict) -> str:
    header = ModelCardData(library_name="peft", tags=["image-quality-assessment", "infrared-visible-fusion", "fuscore", "lora"],
                           base_model=base_name if base_name and is_hub_repo_id(base_name) else None)
    metrics = evaluation.get("metrics", {})
    rows = "\n".join(f"| {name} | {float(value):.4f} |" for name, value in metrics.items()
                     if isinstance(value, (int, float)) and not name.endswith(("runtime", "per_second")))
    evaluation_text = (f"## Evaluation ({evaluation.get('dataset', 'held-out split')})\n\n| metric | value |\n|---|---|\n{rows}\n"
                       if rows else "No evaluation file (fuscore_eval.json) came with this adapter.\n")
    synthetic = (f"\n**Trained on synthetic labels ({evaluation.get('dataset', 'its table')}): constructed scores, not "
                 "human ratings.**\n" if evaluation.get("synthetic") else "")
    return f"""---
{header.to_yaml()}
---

# FuScore LoRA adapter

A LoRA adapter (language model only) for the FuScore model `{base_name}`: quality assessment of infrared-visible
fused images by level-token scoring.
{synthetic}
```python
from transformers import AutoModel

model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)   # loads the base and applies the adapter
model.score("fused.png")
```

{evaluation_text}"""


def _write_adapter(model, evaluation: dict, folder: Path, repo_id: str, base_name: Optional[str], hub_base_model: Optional[str]) -> None:
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise NotAFuScoreModelError("--adapter-only needs a LoRA adapter folder or a PeftModel; the source holds merged weights.")
    model.save_pretrained(folder)
    if not (folder / "adapter_config.json").is_file():
        raise RuntimeError(f"peft wrote no adapter_config.json into {folder}; nothing was written.")
    if hub_base_model:
        # On the Hub the adapter must point at the pushed base repo, not at a local folder. It is rewritten after
        # saving, so peft never looks that repo up (it may not exist yet) and the model object stays as it was.
        config_path = folder / "adapter_config.json"
        adapter_config = json.loads(config_path.read_text())
        adapter_config["base_model_name_or_path"] = hub_base_model
        write_text(config_path, json.dumps(adapter_config, indent=2, sort_keys=True))
        base_name = hub_base_model
    if evaluation:
        write_text(folder / EVALUATION_FILE, json.dumps(evaluation, indent=2))
    write_text(folder / "README.md", _adapter_card(repo_id, base_name, evaluation))


# Model files a repo may hold from earlier pushes (the Trainer pushes each checkpoint, LoRA adapters among them): a push
# of a complete folder deletes those it does not bring, so the repo never mixes an old adapter or shard with new weights.
STALE_MODEL_FILES = ("*.safetensors", "*.safetensors.index.json", "adapter_config.json", "*.bin", "*_fuscore.py",
                     "handler.py", "processor_config.json", "preprocessor_config.json", "tokenizer*.json")


def push_folder_to_hub(folder: Path, repo_id: str, private: bool = False, token: Optional[str] = None) -> str:
    """Uploads `folder` to the model repo `repo_id` (created if needed) in one commit that also deletes the repo's model
    files the folder does not hold (`STALE_MODEL_FILES`); returns the commit URL."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise ExportInputError(f"HF_HUB_OFFLINE is set: cannot push {folder} to {repo_id}. Unset it and log in "
                               "(`hf auth login`); the exported folder is complete and can be pushed later.")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                               commit_message="Upload FuScore export", delete_patterns=list(STALE_MODEL_FILES))
    return str(getattr(commit, "commit_url", commit))


def export_model(
    source,
    output_dir: Union[str, os.PathLike],
    *,
    adapter_only: bool = False,
    repo_id: Optional[str] = None,
    base_model: Optional[str] = None,
    hub_base_model: Optional[str] = None,
    evaluation: Optional[dict] = None,
    overwrite: bool = False,
    cache_repo_id: Optional[str] = None,
    cache_dir: Optional[str] = None,
    push_to_hub: Optional[str] = None,
    private: bool = False,
    token: Optional[str] = None,
) -> ExportResult:
    """Writes a Hub-ready FuScore folder to `output_dir`.

    Args:
        source: a saved FuScore folder, a LoRA adapter folder on one, a `FuScoreForQuality` or a `PeftModel`
            (a `PeftModel` object is merged in place unless `adapter_only`).
        adapter_only: write the adapter alone (for `org/fuscore-lora`) instead of merged weights.
        repo_id: the repo the card's snippets name (default: `push_to_hub`, else `org/fuscore` / `org/fuscore-lora`).
        base_model: for an adapter folder, load this base instead of the one in `adapter_config.json`.
        hub_base_model: for `adapter_only`, the base repo id written into the exported `adapter_config.json`.
        evaluation: the trainer's evaluation dict, for model objects (folders bring their `fuscore_eval.json`).
        overwrite: replace an existing `output_dir`.
        cache_repo_id: also put the export into the local Hub cache as this repo id (loads offline by that id).
        cache_dir: that cache (default: $HF_HUB_CACHE, else the Hugging Face default).
        push_to_hub: also upload the export to this Hub repo (needs the network and a token).
        private, token: for that push, a private repo and the token (default: the logged-in user's).
    """
    output = Path(output_dir)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; pass overwrite=True (--overwrite) to replace it.")
    # Every repo id is checked before anything is loaded or written.
    for argument, value in (("--cache-repo-id", cache_repo_id), ("--push-to-hub", push_to_hub), ("--repo-id", repo_id),
                            ("--hub-base-model", hub_base_model)):
        if value is not None:
            try:
                check_repo_id(value, argument)
            except ValueError as error:
                raise ExportInputError(str(error)) from None

    if isinstance(source, (str, os.PathLike)):
        model, processor, source_evaluation, base_name = load_export_source(source, base_model)
        evaluation = evaluation if evaluation is not None else source_evaluation
    else:
        inner, _ = _unwrap(source)
        if not isinstance(inner, FuScoreForQuality) and getattr(inner.config, "model_type", None) != "fuscore":
            raise NotAFuScoreModelError(f"Cannot export a {type(source).__name__}: expected a FuScore model or a PeftModel around one.")
        model, processor = source, inner.get_processor()
        evaluation = evaluation or {}
        base_name = evaluation.get("base_model") or getattr(inner.config, "_name_or_path", None)

    kind = "adapter" if adapter_only else "merged"
    repo_id = repo_id or push_to_hub or ("org/fuscore-lora" if adapter_only else "org/fuscore")

    with writing_model_folder(output, overwrite=overwrite) as staging:
        if adapter_only:
            _write_adapter(model, evaluation, staging, repo_id, base_name, hub_base_model)
        else:
            inner, wrapped = _unwrap(model)
            merged = model.merge_and_unload() if wrapped else inner
            _write_merged(merged, processor, evaluation, staging, repo_id, base_name)

    result = ExportResult(folder=output, kind=kind)
    if cache_repo_id:
        from fuscore.hub import add_folder_to_hub_cache

        result.cache_snapshot = add_folder_to_hub_cache(output, cache_repo_id, cache_dir=cache_dir)
    if push_to_hub:
        result.hub_url = push_folder_to_hub(output, push_to_hub, private=private, token=token)
    return result
