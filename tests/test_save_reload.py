"""Issue 25: every `save_pretrained` of a FuScore model or pipeline writes everything a load needs (the Hub code files,
the processor with its input mode and prompts, the pipeline registration), so the folder scores identically in an
environment without the project and opens as a pipeline: the project's class loaded from a folder, a clean
environment's AutoModel (trust_remote_code), the pipeline, and the README's LoRA snippet."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel

from conftest import MODEL_CODE_FILES, REMOTE_CODE_FILES, run_clean_python
from fuscore.hub import check_model_folder
from fuscore.lora import add_language_model_lora
from fuscore.tiny import build_tiny_model
from modeling_fuscore import FuScoreForQuality
from pipeline_fuscore import CUSTOM_PIPELINES


PROMPT = "Rate the fused image, reading the infrared and visible sources too."


@pytest.fixture(scope="module")
def triple_folder(tmp_path_factory):
    """A fused+IR+VIS model with a changed overall prompt, saved: what a load must keep."""
    folder = tmp_path_factory.mktemp("save_reload") / "triple"
    model = build_tiny_model("qwen2_vl", input_mode="fused_ir_vis", seed=3)
    model.processor.prompts["overall"] = {**model.processor.prompts["overall"], "question": PROMPT}
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def triples(tmp_path_factory):
    rng = np.random.default_rng(11)
    arrays = rng.integers(0, 256, (3, 3, 40, 48, 3), dtype=np.uint8)  # (image, fused/ir/vis, H, W, C)
    path = tmp_path_factory.mktemp("save_reload_images") / "triples.npy"
    np.save(path, arrays)
    return arrays, path


def _scores(model, arrays) -> list:
    return model.score(list(arrays[:, 0]), ir=list(arrays[:, 1]), vis=list(arrays[:, 2]))


def _assert_complete(folder):
    check_model_folder(folder)
    names = {path.name for path in folder.iterdir()}
    assert set(REMOTE_CODE_FILES) <= names, sorted(set(REMOTE_CODE_FILES) - names)
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"] == CUSTOM_PIPELINES
    processor = json.loads((folder / "processor_config.json").read_text())
    assert processor["input_mode"] == "fused_ir_vis" and processor["prompts"]["overall"]["question"] == PROMPT


# Loads each folder where the project cannot be imported (one clean process for all): scores, the pipeline's scores,
# and (with `save_to`) saves it again from there.
_CLEAN = """
import json, numpy as np
from transformers import AutoModel, pipeline
arrays = np.load({images!r})
results = {{}}
for folder in {folders!r}:
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    scores = model.score(list(arrays[:, 0]), ir=list(arrays[:, 1]), vis=list(arrays[:, 2]))
    scorer = pipeline(model=folder, trust_remote_code=True)
    piped = [r["score"] for r in scorer([{{"fused": a[0], "ir": a[1], "vis": a[2]}} for a in arrays])]
    save_to = {save_to!r}
    if save_to:
        AutoModel.from_pretrained(folder, trust_remote_code=True).save_pretrained(save_to)
    results[folder] = {{"scores": scores, "pipeline": piped, "task": scorer.task,
                       "input_mode": scorer.processor.input_mode}}
print(json.dumps(results))
"""


def _clean_loads(folders, images_path, tmp_path, save_to=None) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    folders = [str(folder) for folder in folders]
    code = _CLEAN.format(folders=folders, images=str(images_path), save_to=str(save_to or ""))
    return run_clean_python(code, tmp_path)


def _clean_load(folder, images_path, tmp_path, save_to=None) -> dict:
    return _clean_loads([folder], images_path, tmp_path, save_to)[str(folder)]


@pytest.mark.slow
def test_a_loaded_model_saved_again_scores_identically_in_a_clean_environment(triple_folder, triples, tmp_path):
    """The user's case: `FuScoreForQuality.from_pretrained(folder).save_pretrained(out)` wrote no processor and no
    pipeline registration, so `score()` and `pipeline(model=out)` failed in a clean environment."""
    arrays, images_path = triples
    reference = _scores(FuScoreForQuality.from_pretrained(triple_folder), arrays)
    out = tmp_path / "resaved"
    FuScoreForQuality.from_pretrained(triple_folder).save_pretrained(out)
    _assert_complete(out)
    loaded = _clean_load(out, images_path, tmp_path, save_to=tmp_path / "clean_resaved")
    np.testing.assert_allclose(loaded["scores"], reference, atol=1e-6)
    np.testing.assert_allclose(loaded["pipeline"], reference, atol=1e-6)
    assert loaded["task"] == "fused-image-quality" and loaded["input_mode"] == "fused_ir_vis"

    # A clean environment's AutoModel (the folder's own code) saved again: complete, and it scores the same.
    again = tmp_path / "clean_resaved"
    _assert_complete(again)
    second = _clean_load(again, images_path, tmp_path / "second")
    np.testing.assert_allclose(second["scores"], reference, atol=1e-6)
    np.testing.assert_allclose(second["pipeline"], reference, atol=1e-6)


@pytest.mark.slow
def test_a_saved_pipeline_keeps_the_model_fused_ir_vis(triple_folder, triples, tmp_path):
    """The user's case: saving a loaded pipeline turned a fused+IR+VIS model into a fused-only one."""
    from transformers import pipeline

    arrays, images_path = triples
    scorer = pipeline(model=str(triple_folder), trust_remote_code=True)
    reference = [r["score"] for r in scorer([{"fused": a[0], "ir": a[1], "vis": a[2]} for a in arrays])]
    out = tmp_path / "pipeline"
    scorer.save_pretrained(out)
    _assert_complete(out)
    loaded = _clean_load(out, images_path, tmp_path)
    assert loaded["input_mode"] == "fused_ir_vis"
    np.testing.assert_allclose(loaded["scores"], reference, atol=1e-6)
    np.testing.assert_allclose(loaded["pipeline"], reference, atol=1e-6)


@pytest.mark.slow
def test_the_readme_lora_snippet_saves_a_folder_that_scores(triple_folder, triples, tmp_path):
    """README: `add_language_model_lora(model)` then `merge_and_unload().save_pretrained(...)` gives a folder with
    the processor and code files that scores as the LoRA model did, for a model built in memory or loaded."""
    arrays, images_path = triples
    expected = {}
    for name, model in (("loaded", FuScoreForQuality.from_pretrained(triple_folder)),
                        ("auto", AutoModel.from_pretrained(triple_folder, trust_remote_code=True))):
        peft_model = add_language_model_lora(model, r=4, alpha=8)
        torch.manual_seed(0)
        for parameter_name, parameter in peft_model.named_parameters():
            if "lora_B" in parameter_name:  # LoRA starts as the identity; give it an effect
                torch.nn.init.normal_(parameter, std=0.2)
        out = tmp_path / name
        expected[str(out)] = _scores(peft_model, arrays)
        peft_model.merge_and_unload().save_pretrained(out)
        _assert_complete(out)
    loaded = _clean_loads(list(expected), images_path, tmp_path / "clean")
    for out, scores in expected.items():
        np.testing.assert_allclose(loaded[out]["scores"], scores, atol=1e-5, err_msg=out)
        np.testing.assert_allclose(loaded[out]["pipeline"], scores, atol=1e-5, err_msg=out)


def test_a_model_without_any_processor_says_so_when_saved(tmp_path):
    """A model built from a config alone has no processor to save: the save says what the folder lacks."""
    model = build_tiny_model("qwen2_vl")
    bare = FuScoreForQuality(model.config)
    bare.config._name_or_path = ""
    with pytest.warns(UserWarning, match="no processor"):
        bare.save_pretrained(tmp_path / "bare")
    assert set(MODEL_CODE_FILES) <= {path.name for path in (tmp_path / "bare").iterdir()}
