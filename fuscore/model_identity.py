# Copyright 2026 The FuScore authors. Apache-2.0.
"""What a scoring job records about the model and the software that scored: the model's revision (the Hub commit of a
repo id, a content fingerprint of a folder) and the package versions. A resumed job must match the revision of the
run it continues (`fuscore.scoring_job`)."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Optional


def _file_fingerprint(path: Path, digest, sample_above: int = 256 << 20, blocks: int = 64, block: int = 1 << 16) -> None:
    size = path.stat().st_size
    digest.update(f"{path.name}:{size}:".encode())
    with open(path, "rb") as handle:
        if size <= sample_above:
            for piece in iter(lambda: handle.read(1 << 20), b""):
                digest.update(piece)
            return
        # Large weight files: the header and 64 blocks spread over the file (any retraining changes them).
        digest.update(handle.read(1 << 20))
        for index in range(blocks):
            handle.seek((size - block) * index // (blocks - 1))
            digest.update(handle.read(block))


def model_revision(name_or_path: str, cache_dir: Optional[str] = None) -> Optional[str]:
    """What identifies the model's weights: the Hub commit of a repo id (its snapshot in the Hub cache), or for a
    folder a SHA-256 fingerprint of its config, processor and weight files (the base's too for a LoRA adapter), so a
    copy of the folder elsewhere is the same model and a retrained one is not."""
    path = Path(name_or_path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin", ".model", ".txt")):
            _file_fingerprint(file, digest)
        adapter = path / "adapter_config.json"
        if adapter.is_file():
            base = json.loads(adapter.read_text()).get("base_model_name_or_path") or ""
            digest.update(f"base:{model_revision(base) if base else ''}".encode())
        return "sha256:" + digest.hexdigest()
    try:
        from transformers.utils import cached_file

        config = cached_file(name_or_path, "config.json", cache_dir=cache_dir, _raise_exceptions_for_missing_entries=False)
    except Exception:  # no cache entry and no network: the name alone identifies the model then
        return None
    if config is None:
        return None
    snapshot = Path(config).parent
    return snapshot.name if snapshot.parent.name == "snapshots" else None


def software_versions() -> dict:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("fuscore", "torch", "transformers", "datasets", "accelerate", "pyarrow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions
