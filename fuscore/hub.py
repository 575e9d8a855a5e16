"""Model folders on disk: written whole or not at all, checked complete, and put into the offline Hub cache.

Every model folder FuScore writes (the trainer's `final/`, `fuscore export`, the shipped demo model) is built in a
temporary folder beside its target and renamed into place only once `check_model_folder` finds it complete
(`writing_model_folder`, on top of `fuscore.atomic`). A write that fails (disk full, permission) ends with one
`AtomicWriteError` naming the folder and leaves nothing under the final name.

With no network, `from_pretrained("org/fuscore")` can only resolve a repo id from the local cache.
`add_folder_to_hub_cache` writes the cache's documented layout (`models--org--name/refs/main` and
`snapshots/<commit>/`), so an exported folder loads by repo id with `HF_HUB_OFFLINE=1` exactly as it will once pushed.
"""

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Optional, Union

from huggingface_hub.constants import HF_HUB_CACHE

from fuscore.atomic import AtomicWriteError, atomic_folder, write_text

PathLike = Union[str, os.PathLike]
DEMO_MODEL = Path(__file__).resolve().parent / "demo_model"
"""The shipped synthetic-trained demo checkpoint (installed with the package): the one definition of its path."""
# What `save_pretrained` writes into a model folder that the code files do not cover.
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
PROCESSOR_FILE = "processor_config.json"
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# The remote-code files, by what they hold; a folder's config names the ones it needs in `auto_map`.
CODE_FILE_SUFFIX = "_fuscore.py"


class IncompleteModelFolderError(ValueError):
    """A model folder lacks files a complete one has; the message names the folder and the files."""


def check_model_folder(folder: PathLike) -> Path:
    """Raises IncompleteModelFolderError unless `folder` is a complete FuScore model folder or LoRA adapter folder.

    A model folder needs `config.json`, its safetensors weights (every shard an index names), the processor and
    tokenizer files, and every code file that `config.json`'s and `processor_config.json`'s `auto_map` names, with
    the siblings those import (a folder without `auto_map` holds no code). An adapter folder needs its
    `adapter_config.json` and `adapter_model.safetensors`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise IncompleteModelFolderError(f"{folder}: no such folder.")
    if (folder / ADAPTER_FILES[0]).is_file():
        missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    else:
        missing = [name for name in ("config.json", PROCESSOR_FILE, *TOKENIZER_FILES) if not (folder / name).is_file()]
        if (folder / WEIGHTS_INDEX_FILE).is_file():
            shards = set(_read_json(folder / WEIGHTS_INDEX_FILE).get("weight_map", {}).values())
            missing += sorted(name for name in shards if not (folder / name).is_file())
        elif not (folder / WEIGHTS_FILE).is_file():
            missing.append(WEIGHTS_FILE)
        missing += _missing_code_files(folder)
    missing = list(dict.fromkeys(missing))
    if missing:
        raise IncompleteModelFolderError(f"{folder} is not a complete model folder: {', '.join(missing)} missing.")
    return folder


def _missing_code_files(folder: Path) -> list:
    """The code files that the configs' `auto_map` names, and the siblings they import, that `folder` lacks."""
    from transformers.dynamic_module_utils import get_relative_imports

    needed = []
    for config_name in ("config.json", PROCESSOR_FILE):
        if (folder / config_name).is_file():
            auto_map = _read_json(folder / config_name).get("auto_map", {})
            needed += [f"{reference.split('.')[0]}.py" for reference in auto_map.values() if isinstance(reference, str)]
    missing, seen = [], set()
    while needed:
        name = needed.pop(0)
        if name in seen:
            continue
        seen.add(name)
        if (folder / name).is_file():
            needed += [f"{module}.py" for module in sorted(get_relative_imports(folder / name))]
        else:
            missing.append(name)
    return missing


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise IncompleteModelFolderError(f"{path}: not readable JSON ({error}).") from None


@contextlib.contextmanager
def writing_model_folder(target: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary folder beside `target` to save a model into; renames it to `target` once it is complete.

        with writing_model_folder("outputs/final", overwrite=True) as folder:
            model.save_pretrained(folder)
            write_model_card(folder, evaluation)

    `check_model_folder` runs before the rename, so an incomplete save never appears under `target`. Write failures
    (disk full, permission, a safetensors write error) raise `AtomicWriteError` naming `target`; any failure leaves
    `target` as it was (absent, or the previous folder with `overwrite`).
    """
    from safetensors import SafetensorError

    target = Path(target)
    try:
        with atomic_folder(target, overwrite=overwrite) as staging:
            yield staging
            try:
                check_model_folder(staging)
            except IncompleteModelFolderError as error:
                raise IncompleteModelFolderError(
                    f"The model folder {target} came out incomplete ({str(error).split(': ', 1)[-1]}); nothing was "
                    "written under that name.") from None
    except SafetensorError as error:
        raise AtomicWriteError(f"Could not write the model folder {target}: {error}. Nothing was left under that name.") from error


def save_model_folder(model, target: PathLike, *, overwrite: bool = False, **save_kwargs) -> Path:
    """`model.save_pretrained` (weights, config, processor, code files) into `target`, whole or not at all."""
    with writing_model_folder(target, overwrite=overwrite) as staging:
        model.save_pretrained(staging, **save_kwargs)
    return Path(target)


def copy_model_folder(source: PathLike, target: PathLike, *, overwrite: bool = False, code: bool = True) -> Path:
    """Copies a complete model folder to `target`, whole or not at all; without `code`, leaves out the remote-code
    files and the `auto_map` that points at them (the shipped demo model is loaded with the checkout's classes, and
    `fuscore export` writes the code into the folder it makes: one code path).

    bash: python -c "from fuscore.hub import copy_model_folder; copy_model_folder('outputs/x/final', 'fuscore/demo_model', overwrite=True, code=False)"
    """
    source = check_model_folder(source)
    with writing_model_folder(target, overwrite=overwrite) as staging:
        for path in sorted(source.iterdir()):
            if path.is_file() and not (not code and path.name.endswith(CODE_FILE_SUFFIX)):
                shutil.copy2(path, staging / path.name)
        if not code:
            for name in ("config.json", PROCESSOR_FILE, TOKENIZER_FILES[0]):
                config = _read_json(staging / name)
                if _drop_auto_maps(config):
                    write_text(staging / name, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return Path(target)


def _drop_auto_maps(config: dict) -> bool:
    """Removes `auto_map` from a config and from the configs nested in it; whether there was one."""
    found = config.pop("auto_map", None) is not None
    for value in config.values():
        if isinstance(value, dict):
            found = _drop_auto_maps(value) or found
    return found


# ---------------------------------------------------------------------------------------------- the Hub cache
def check_repo_id(repo_id: str, argument: str = "repo_id") -> str:
    """Raises ValueError unless `repo_id` is a Hub model id of the form `org/name` (checked before anything is written)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"{argument} must look like 'org/name', got {repo_id!r}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"{argument} {repo_id!r} is not a valid Hub repo id: {error}") from None
    return repo_id


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def add_folder_to_hub_cache(folder, repo_id: str, cache_dir: Optional[str] = None, revision: str = "main") -> Path:
    """Copies `folder` into the Hub cache as `repo_id` at `revision`; returns the snapshot folder.

    The snapshot name is a digest of the folder's contents (it stands in for the commit hash a push would give).
    The snapshot and the ref are written whole or not at all (`fuscore.atomic`).
    """
    folder = Path(folder)
    check_repo_id(repo_id)
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json or adapter_config.json: it is not a saved model folder.")
    repo_folder = Path(cache_dir or os.environ.get("HF_HUB_CACHE", HF_HUB_CACHE)) / ("models--" + repo_id.replace("/", "--"))
    commit = _folder_digest(folder)
    snapshot = repo_folder / "snapshots" / commit
    if not snapshot.exists():
        with atomic_folder(snapshot) as staging:
            shutil.copytree(folder, staging, dirs_exist_ok=True)
    write_text(repo_folder / "refs" / revision, commit)
    return snapshot


def load_model(name_or_path: PathLike = DEMO_MODEL, *, label: Optional[str] = None, **from_pretrained_kwargs):
    """The one loader of a FuScore model to score with: a saved folder, a Hub repo id, a LoRA adapter folder (its base
    from `adapter_config.json`) or, by default, the shipped demo (`DEMO_MODEL`), with its processor, in eval mode.

    The checkout's classes are used and no code from the model folder runs: a folder that is not a FuScore model is
    refused from its config alone, a weight file that lacks the model's tensors is refused, and the level words are
    checked against the tokenizer before any scoring. `label` names the model in error messages (the CLI passes
    `--model <name>`); `from_pretrained_kwargs` (default `dtype="auto"`) go to `from_pretrained`.

    Raises:
        FileNotFoundError: no such folder, and not a Hub repo id.
        fuscore.export.NotAFuScoreModelError: not a FuScore model, or a damaged one (one line naming it).
    """
    from fuscore.export import NotAFuScoreModelError, check_fuscore_config, load_fuscore_processor
    from fuscore.scoring_job import check_level_words
    from modeling_fuscore import FuScoreForQuality

    name_or_path = os.fspath(name_or_path)
    label = label or name_or_path
    from_pretrained_kwargs.setdefault("dtype", "auto")
    local = Path(name_or_path)
    if not local.exists() and (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1):
        raise FileNotFoundError(f"{name_or_path}: no such model folder (and not a Hub repo id of the form org/name).")
    adapter_config = local / "adapter_config.json"
    if adapter_config.is_file():
        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path") or ""
        check_fuscore_config(base, f"{label} (the adapter's base model)")
    else:
        check_fuscore_config(name_or_path, label)
    try:
        if adapter_config.is_file():
            model = FuScoreForQuality.from_pretrained(name_or_path, **from_pretrained_kwargs)
        else:
            model, info = FuScoreForQuality.from_pretrained(name_or_path, output_loading_info=True, **from_pretrained_kwargs)
            missing = list(info.get("missing_keys") or [])
            if missing:  # a weight file of another model, or none: its tensors would be random, its scores too
                raise NotAFuScoreModelError(
                    f"{label}: its weights lack {len(missing)} of the model's tensors (e.g. {missing[0]}); the folder's "
                    "weight file is not this model's. Use a folder written by FuScoreForQuality.save_pretrained, the "
                    "trainer or fuscore export.")
        # An adapter folder has no processor files; its base (where the weights came from) has them.
        model.processor = load_fuscore_processor(model.config._name_or_path if adapter_config.is_file() else name_or_path)
    except NotAFuScoreModelError:
        raise
    except Exception as error:  # noqa: BLE001 - a damaged or foreign model folder: one line naming it
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise NotAFuScoreModelError(f"{label}: cannot load the model ({type(error).__name__}: {first_line}). The folder "
                                    "is damaged or incomplete (a truncated weight file?); write it again or use "
                                    "another.") from None
    check_level_words(model)  # before any scoring: words and token ids must agree
    return model.eval()
