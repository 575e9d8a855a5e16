"""Offline Hub helpers: put a saved FuScore folder into the Hugging Face cache under a repo id.

With no network, `from_pretrained("org/fuscore")` can only resolve a repo id from the local cache. This writes the
cache's documented layout (`models--org--name/refs/main` and `snapshots/<commit>/`), so an exported folder loads
by repo id with `HF_HUB_OFFLINE=1` exactly as it will once pushed.
"""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from huggingface_hub.constants import HF_HUB_CACHE


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def add_folder_to_hub_cache(folder, repo_id: str, cache_dir: Optional[str] = None, revision: str = "main") -> Path:
    """Copies `folder` into the Hub cache as `repo_id` at `revision`; returns the snapshot folder.

    The snapshot name is a digest of the folder's contents (it stands in for the commit hash a push would give).
    The copy is made in a temporary folder and renamed into place, so a failure leaves no half-written snapshot.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json or adapter_config.json: it is not a saved model folder.")
    if repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}.")
    repo_folder = Path(cache_dir or os.environ.get("HF_HUB_CACHE", HF_HUB_CACHE)) / ("models--" + repo_id.replace("/", "--"))
    commit = _folder_digest(folder)
    snapshot = repo_folder / "snapshots" / commit
    if not snapshot.exists():
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=snapshot.parent, prefix=".staging-"))
        try:
            shutil.copytree(folder, staging, dirs_exist_ok=True)
            os.replace(staging, snapshot)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs" / revision).write_text(commit)
    return snapshot
