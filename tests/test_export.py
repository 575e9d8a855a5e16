"""`fuscore export`: the folder loads as remote code in a clean process (from the folder and, offline, by repo id),
its custom pipeline and Inference Endpoints handler work there, LoRA adapters are merged or exported alone, and a
failed export leaves nothing behind."""

import base64
import importlib.util
import io
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from PIL import Image
from transformers import AutoModel

import fuscore.export as export_module
from conftest import REMOTE_CODE_FILES, REPO_ROOT, run_clean_python
from fuscore.export import CUSTOM_PIPELINES, NotAFuScoreModelError, export_model
from fuscore.lora import add_language_model_lora


EVALUATION = {"metrics": {"plcc": 0.7311, "srcc": 0.6902, "runtime": 1.5}, "dataset": "toy held-out split",
              "synthetic": True, "objective": "fuscore", "dimension": "overall"}


@pytest.fixture(scope="module")
def saved_model(saved_tiny_model, loaded_tiny_model, tmp_path_factory):
    """The shared tiny model's folder, copied to hold an evaluation file as a trained model's does."""
    folder = tmp_path_factory.mktemp("export") / "trained"
    shutil.copytree(saved_tiny_model, folder)
    (folder / "fuscore_eval.json").write_text(json.dumps(EVALUATION))
    return folder, loaded_tiny_model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)


def _png_base64(array) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


_CLEAN_LOAD = """
import base64, importlib.util, json, sys
import numpy as np
from transformers import AutoModel, pipeline

images = list(np.load({images!r}))
result = {{}}
result["folder_scores"] = AutoModel.from_pretrained({folder!r}, trust_remote_code=True).score(images)
result["cache_scores"] = AutoModel.from_pretrained({repo_id!r}, trust_remote_code=True).score(images)

scorer = pipeline(model={folder!r}, trust_remote_code=True)      # no task: it comes from custom_pipelines
result["pipeline_task"] = scorer.task
result["pipeline_results"] = scorer(images, batch_size=2)
result["cache_pipeline_scores"] = [r["score"] for r in pipeline(model={repo_id!r}, trust_remote_code=True)(images)]

# As the Inference Toolkit does: import handler.py from the repository folder by path.
spec = importlib.util.spec_from_file_location("handler", {folder!r} + "/handler.py")
handler = importlib.util.module_from_spec(spec)
spec.loader.exec_module(handler)
endpoint = handler.EndpointHandler({folder!r})
result["handler_single"] = endpoint({{"inputs": {b64!r}}})
result["handler_list"] = endpoint({{"inputs": [{{"fused": {b64!r}}}, "data:image/png;base64," + {b64!r}],
                                    "parameters": {{"dimensions": ["sharpness"]}}}})
print(json.dumps(result))
"""


@pytest.mark.slow
def test_export_loads_in_a_clean_process_from_folder_and_offline_cache(saved_model, images, tmp_path, monkeypatch):
    source, model = saved_model
    cache = tmp_path / "hub_cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    result = export_model(source, tmp_path / "fuscore", cache_repo_id="org/fuscore-test")
    folder = result.folder

    expected_files = {"config.json", "model.safetensors", *REMOTE_CODE_FILES, "handler.py", "processor_config.json",
                      "README.md", "fuscore_eval.json"}
    assert expected_files <= {path.name for path in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"] == CUSTOM_PIPELINES
    assert config["auto_map"] == {"AutoConfig": "configuration_fuscore.FuScoreConfig",
                                  "AutoModel": "modeling_fuscore.FuScoreForQuality"}
    assert result.cache_snapshot.is_relative_to(cache)

    model_card = ModelCard.load(folder / "README.md")
    card = model_card.text
    assert "custom_code" in model_card.data.tags and model_card.data.pipeline_tag == "other"
    card_metrics = {result.metric_type: result.metric_value for result in model_card.data.eval_results}
    assert card_metrics == {"pearsonr": 0.7311, "spearmanr": 0.6902}  # from fuscore_eval.json, not typed in
    assert "synthetic" in card and "pipeline(model=\"org/fuscore\"" in card

    np.save(tmp_path / "images.npy", images)
    b64 = _png_base64(images[0])
    loaded = run_clean_python(
        _CLEAN_LOAD.format(images=str(tmp_path / "images.npy"), folder=str(folder), repo_id="org/fuscore-test", b64=b64),
        tmp_path, env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)},
    )
    expected = model.score(list(images))
    details = model.score(images[0], dimensions="sharpness", return_details=True)
    np.testing.assert_allclose(loaded["folder_scores"], expected, atol=1e-5)
    np.testing.assert_allclose(loaded["cache_scores"], expected, atol=1e-5)
    assert loaded["pipeline_task"] == "fused-image-quality"
    np.testing.assert_allclose([r["score"] for r in loaded["pipeline_results"]], expected, atol=1e-5)
    np.testing.assert_allclose(loaded["cache_pipeline_scores"], expected, atol=1e-5)
    assert set(loaded["pipeline_results"][0]["dimensions"]) == {"thermal_retention", "texture_preservation", "artifacts", "sharpness"}
    assert loaded["handler_single"]["score"] == pytest.approx(expected[0], abs=1e-5)
    assert [r["score"] for r in loaded["handler_list"]] == pytest.approx([expected[0]] * 2, abs=1e-5)
    assert loaded["handler_list"][0]["dimensions"]["sharpness"]["score"] == pytest.approx(details["sharpness"]["score"], abs=1e-5)


def _load_handler_module():
    spec = importlib.util.spec_from_file_location("fuscore_endpoint_handler", export_module.HANDLER_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_handler_rejects_bad_requests(saved_model, tmp_path):
    folder = export_model(saved_model[0], tmp_path / "fuscore").folder
    endpoint = _load_handler_module().EndpointHandler(str(folder))
    with pytest.raises(ValueError, match='"inputs"'):
        endpoint({"image": "abc"})
    with pytest.raises(ValueError, match=r"inputs\.fused: not valid base64"):
        endpoint({"inputs": {"fused": "not base64!"}})
    with pytest.raises(ValueError, match="Unknown parameter"):
        endpoint({"inputs": _png_base64(np.zeros((32, 32, 3), np.uint8)), "parameters": {"top_k": 3}})


@pytest.fixture(scope="module")
def adapter_folder(saved_model, tmp_path_factory):
    source, _ = saved_model
    peft_model = add_language_model_lora(AutoModel.from_pretrained(source, trust_remote_code=True), r=4, alpha=8)
    torch.manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # LoRA starts as the identity; give it an effect so merging matters
            torch.nn.init.normal_(parameter, std=0.2)
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    peft_model.save_pretrained(folder)
    return folder, peft_model


def test_adapter_is_merged_or_exported_alone(saved_model, adapter_folder, images, tmp_path):
    _, base_model = saved_model
    folder, peft_model = adapter_folder
    lora_scores = np.array(peft_model.score(list(images)))
    assert np.abs(lora_scores - np.array(base_model.score(list(images)))).max() > 1e-4

    merged = export_model(folder, tmp_path / "merged")
    assert merged.kind == "merged" and not (merged.folder / "adapter_config.json").exists()
    np.testing.assert_allclose(AutoModel.from_pretrained(merged.folder, trust_remote_code=True).score(list(images)),
                               lora_scores, atol=1e-5)

    alone = export_model(folder, tmp_path / "lora", adapter_only=True)
    assert (alone.folder / "adapter_model.safetensors").is_file()
    np.testing.assert_allclose(AutoModel.from_pretrained(alone.folder, trust_remote_code=True).score(list(images)),
                               lora_scores, atol=1e-5)
    assert "library_name: peft" in (alone.folder / "README.md").read_text()

    renamed = export_model(folder, tmp_path / "lora_hub", adapter_only=True, hub_base_model="org/fuscore-base")
    assert json.loads((renamed.folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "org/fuscore-base"


def test_not_a_fuscore_folder_and_existing_output(saved_model, tmp_path):
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(NotAFuScoreModelError, match="'bert' model"):
        export_model(other, tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotAFuScoreModelError, match="neither config.json nor adapter_config.json"):
        export_model(empty, tmp_path / "out")
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(FileExistsError, match="existing"):
        export_model(saved_model[0], existing)
    with pytest.raises(NotAFuScoreModelError, match="merged weights"):
        export_model(saved_model[0], tmp_path / "out", adapter_only=True)


def test_a_failed_export_leaves_nothing_behind(saved_model, tmp_path, monkeypatch):
    target = tmp_path / "exports" / "fuscore"
    previous = export_model(saved_model[0], target).folder
    before = sorted(path.name for path in previous.iterdir())

    def broken_card(*args, **kwargs):
        raise RuntimeError("card writer failed")

    monkeypatch.setattr(export_module, "write_model_card", broken_card)
    with pytest.raises(RuntimeError, match="card writer failed"):
        export_model(saved_model[0], target, overwrite=True)
    assert sorted(path.name for path in target.iterdir()) == before  # the previous export is untouched
    assert [path.name for path in target.parent.iterdir()] == ["fuscore"]  # no staging folder left


@pytest.mark.slow
def test_the_shipped_demo_model_holds_no_code_and_its_export_loads_in_a_clean_process(images, tmp_path):
    """The demo folder is config, weights, tokenizer and processor files (plus card and evaluation): the checkout's
    classes load it in-process, and `fuscore export` writes the code that a clean environment runs."""
    from fuscore.hub import check_model_folder
    from modeling_fuscore import FuScoreForQuality

    demo = REPO_ROOT / "fuscore" / "demo_model"
    assert not list(demo.glob("*.py"))
    assert "auto_map" not in json.loads((demo / "config.json").read_text())
    check_model_folder(demo)
    expected = FuScoreForQuality.from_pretrained(demo).score(list(images))

    folder = export_model(demo, tmp_path / "demo_export").folder
    np.save(tmp_path / "images.npy", images)
    loaded = run_clean_python(f"""
        import json, numpy as np
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        print(json.dumps({{"scores": model.score(list(np.load({str(tmp_path / "images.npy")!r}))),
                           "module": type(model).__module__}}))
        """, tmp_path)
    assert loaded["module"].startswith("transformers_modules.")
    np.testing.assert_allclose(loaded["scores"], expected, atol=1e-6)


def test_a_bad_repo_id_is_refused_before_anything_is_written(saved_model, tmp_path):
    for arguments in ({"cache_repo_id": "../../x"}, {"push_to_hub": "not a repo"}, {"repo_id": "a/b/c"}):
        with pytest.raises(export_module.ExportInputError, match="repo"):
            export_model(saved_model[0], tmp_path / "out", **arguments)
        assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_the_card_names_a_hub_base_model_never_a_local_folder(saved_model, tmp_path):
    from fuscore.model_card import write_model_card

    folder = tmp_path / "card"
    folder.mkdir()
    (folder / "config.json").write_text((saved_model[0] / "config.json").read_text())
    for base, expected in (("outputs/demo_pretrain/final", None), (str(tmp_path), None), ("tiny:qwen2_vl", None),
                           ("Qwen/Qwen3-VL-8B-Instruct", "Qwen/Qwen3-VL-8B-Instruct")):
        header = yaml.safe_load(write_model_card(folder, {}, base_model=base).read_text().split("---")[1])
        assert header.get("base_model") == expected, base
