"""Model folders are whole or absent: `fuscore.hub.writing_model_folder` (behind export, the demo copy and the
trainer's final save) renames a folder into place only once it is complete, turns a failed write (a full disk
included) into one error naming the folder, and leaves what was there before untouched."""

import json

import numpy as np
import pytest

from conftest import MODEL_CODE_FILES
from fuscore.atomic import AtomicWriteError
from fuscore.hub import (IncompleteModelFolderError, check_model_folder, copy_model_folder, save_model_folder,
                         writing_model_folder)


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def _entries(folder):
    return sorted(path.name for path in folder.iterdir())


def test_a_saved_folder_is_complete_and_loads(model, tmp_path):
    from modeling_fuscore import FuScoreForQuality

    folder = save_model_folder(model, tmp_path / "model")
    check_model_folder(folder)
    assert set(MODEL_CODE_FILES) <= set(_entries(folder))
    assert _entries(tmp_path) == ["model"], "no temporary folder is left beside it"
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    assert FuScoreForQuality.from_pretrained(folder).score(image) == model.score(image)


@pytest.mark.parametrize("missing", ["processor_config.json", "model.safetensors", "scoring_fuscore.py", "tokenizer.json"])
def test_check_names_what_an_incomplete_folder_lacks(model, tmp_path, missing):
    folder = save_model_folder(model, tmp_path / "model")
    (folder / missing).unlink()
    with pytest.raises(IncompleteModelFolderError, match=f"{folder} is not a complete model folder: {missing} missing"):
        check_model_folder(folder)


def test_a_save_that_stops_halfway_leaves_nothing_under_the_name(model, tmp_path, monkeypatch):
    processor = model.processor

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a Ctrl-C (or a kill the process survives long enough to unwind) would

    monkeypatch.setattr(type(processor), "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        save_model_folder(model, tmp_path / "final")
    assert _entries(tmp_path) == []


def test_a_full_disk_is_one_error_naming_the_folder_and_keeps_the_previous_one(model, tmp_path, monkeypatch):
    from safetensors import SafetensorError
    import transformers.modeling_utils

    target = save_model_folder(model, tmp_path / "final")
    before = {name: (target / name).read_bytes() for name in _entries(target)}

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", disk_full)
    with pytest.raises(AtomicWriteError, match=f"Could not write the model folder {target}: .*No space left on device"):
        save_model_folder(model, target, overwrite=True)
    assert {name: (target / name).read_bytes() for name in _entries(target)} == before
    assert _entries(tmp_path) == ["final"]


def test_an_incomplete_save_is_refused_before_the_rename(model, tmp_path):
    with pytest.raises(IncompleteModelFolderError, match="came out incomplete .*processor_config.json"):
        with writing_model_folder(tmp_path / "final") as staging:
            model.save_pretrained(staging)
            (staging / "processor_config.json").unlink()
    assert _entries(tmp_path) == []


def test_an_existing_folder_needs_overwrite(model, tmp_path):
    target = save_model_folder(model, tmp_path / "final")
    with pytest.raises(FileExistsError, match="already exists"):
        save_model_folder(model, target)


def test_the_demo_copy_drops_the_code_and_its_auto_map(model, tmp_path):
    from modeling_fuscore import FuScoreForQuality

    source = save_model_folder(model, tmp_path / "final")
    demo = copy_model_folder(source, tmp_path / "demo", code=False)
    assert not list(demo.glob("*.py"))
    for name in ("config.json", "processor_config.json", "tokenizer_config.json"):
        assert "auto_map" not in json.dumps(json.loads((demo / name).read_text())), name
    check_model_folder(demo)
    image = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    assert FuScoreForQuality.from_pretrained(demo).score(image) == FuScoreForQuality.from_pretrained(source).score(image)
