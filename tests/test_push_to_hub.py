"""Issue 25: `trainer_fuscore.py --push_to_hub` pushes what a clean environment loads by repo id with
`trust_remote_code` and scores like the local final folder (code files, processor, pipeline registration, the card
with the evaluation results, the merged model when LoRA was used), against a local fake Hub on 127.0.0.1."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REMOTE_CODE_FILES, REPO_ROOT, load_saved, run_clean_python
from fake_hub import serve_fake_hub


REPO_ID = "user/fuscore-pushed"


def test_fake_hub_round_trip(tmp_path):
    """The fake Hub itself: what `upload_folder` pushes, `hf_hub_download` gets back; a missing file is a 404."""
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.json").write_text('{"a": 1}')
    code = """
import json, os
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
api = HfApi()
api.create_repo("user/round-trip", exist_ok=True)
api.upload_folder(folder_path={folder!r}, repo_id="user/round-trip")
try:
    hf_hub_download("user/round-trip", "missing.json")
    missing = False
except EntryNotFoundError:
    missing = True
print(json.dumps({{"a": open(hf_hub_download("user/round-trip", "a.json")).read(), "missing": missing,
                  "files": api.list_repo_files("user/round-trip")}}))
""".format(folder=str(folder))
    with serve_fake_hub() as hub:
        result = run_clean_python(code, tmp_path, env={"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_fake",
                                                       "HF_HOME": str(tmp_path / "hf_home")})
        assert hub.files("user/round-trip") == {"a.json": b'{"a": 1}'}
    assert result == {"a": '{"a": 1}', "missing": True, "files": ["a.json"]}


_CLEAN_LOAD = """
import json, numpy as np
from transformers import AutoModel, pipeline
images = list(np.load({images!r}))
model = AutoModel.from_pretrained({repo_id!r}, trust_remote_code=True)
scorer = pipeline(model={repo_id!r}, trust_remote_code=True)
print(json.dumps({{"scores": model.score(images), "pipeline": [r["score"] for r in scorer(images)], "task": scorer.task}}))
"""

_CLEAN_SCORE = """
import json, numpy as np
from transformers import AutoModel
model = AutoModel.from_pretrained({repo_id!r}, trust_remote_code=True)   # the base by repo id, then the adapter
print(json.dumps({{"scores": model.score(list(np.load({images!r})))}}))
"""


@pytest.mark.slow
def test_training_with_push_to_hub_pushes_a_repo_that_loads_and_scores_like_the_final_folder(tmp_path):
    """The user's case: a LoRA run with --push_to_hub gave a repo without the code files or a card that did not
    load, and the merged final folder was never pushed."""
    output = tmp_path / "run"
    command = [sys.executable, str(REPO_ROOT / "trainer_fuscore.py"), "--model_name_or_path", "tiny:qwen2_vl:32x1",
               "--dtype", "float32", "--train_table", "synthetic", "--synthetic_image_size", "40",
               "--synthetic_train_scenes", "4", "--synthetic_eval_scenes", "3", "--synthetic_images_per_scene", "3",
               "--pairs_per_batch", "2", "--images_per_pair", "2", "--max_steps", "2", "--learning_rate", "0.01",
               "--use_lora", "true", "--lora_r", "4", "--lora_alpha", "8", "--save_strategy", "steps",
               "--save_steps", "1", "--use_cpu", "true", "--disable_tqdm", "true", "--report_to", "none",
               "--dataloader_num_workers", "0", "--output_dir", str(output),
               "--push_to_hub", "true", "--hub_model_id", REPO_ID]
    images = np.random.default_rng(2).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    with serve_fake_hub() as hub:
        # An adapter left in the repo by an earlier push (the Trainer pushes checkpoints, LoRA's among them).
        hub.repos[REPO_ID] = {"adapter_config.json": b"{}", "adapter_model.safetensors": b"stale"}
        hub.commits[REPO_ID] = ["an earlier push"]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_ENDPOINT": hub.url,
               "HF_TOKEN": "hf_fake", "HF_HOME": str(tmp_path / "trainer_hf_home")}
        completed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert completed.returncode == 0, completed.stderr[-4000:]
        pushed = hub.files(REPO_ID)
        loaded = run_clean_python(_CLEAN_LOAD.format(images=str(tmp_path / "images.npy"), repo_id=REPO_ID), tmp_path,
                                  env={"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_fake", "HF_HOME": str(tmp_path / "hf_home")})

        # The adapter alone, as an option: LoRA on the pushed model (by repo id), pushed without merging.
        adapter_output = tmp_path / "adapter_run"
        adapter_command = [*command[:command.index("--model_name_or_path") + 1], REPO_ID,
                           *command[command.index("--model_name_or_path") + 2:command.index("--output_dir")],
                           "--output_dir", str(adapter_output), "--push_to_hub", "true",
                           "--hub_model_id", "user/fuscore-lora", "--hub_adapter_only", "true"]
        completed = subprocess.run(adapter_command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert completed.returncode == 0, completed.stderr[-4000:]
        adapter_pushed = hub.files("user/fuscore-lora")
        adapter_loaded = run_clean_python(
            _CLEAN_SCORE.format(images=str(tmp_path / "images.npy"), repo_id="user/fuscore-lora"), tmp_path / "adapter_run",
            env={"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_fake", "HF_HOME": str(tmp_path / "hf_home_adapter")})
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "fuscore_eval.json"} <= set(adapter_pushed)
    assert "model.safetensors" not in adapter_pushed
    assert json.loads(adapter_pushed["adapter_config.json"])["base_model_name_or_path"] == REPO_ID
    np.testing.assert_allclose(adapter_loaded["scores"], load_saved(adapter_output / "final").score(list(images)), atol=1e-5)

    final = output / "final"
    # The merged model, never the checkpoints' adapter, with everything a load needs and the card with the numbers.
    assert {*REMOTE_CODE_FILES, "config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
            "handler.py", "README.md", "fuscore_eval.json"} <= set(pushed), sorted(pushed)
    assert not {"adapter_config.json", "adapter_model.safetensors"} & set(pushed)
    assert pushed["model.safetensors"] == (output / "hub" / "model.safetensors").read_bytes()
    evaluation = json.loads(pushed["fuscore_eval.json"])
    assert evaluation == json.loads((final / "fuscore_eval.json").read_text())
    from huggingface_hub import ModelCard

    card_metrics = {result.metric_type: result.metric_value
                    for result in ModelCard(pushed["README.md"].decode()).data.eval_results}
    assert card_metrics["spearmanr"] == pytest.approx(evaluation["metrics"]["srcc"], abs=1e-4)
    assert f'"{REPO_ID}"' in pushed["README.md"].decode(), "the card's snippets name the pushed repo"

    expected = load_saved(final).score(list(images))
    np.testing.assert_allclose(loaded["scores"], expected, atol=1e-5)
    np.testing.assert_allclose(loaded["pipeline"], expected, atol=1e-5)
    assert np.abs(np.array(adapter_loaded["scores"]) - expected).max() > 1e-6, "the adapter changed the model"
    assert loaded["task"] == "fused-image-quality"
    results = json.loads((output / "results.json").read_text())
    assert results["hub"]["repo_id"] == REPO_ID


def test_an_adapter_push_that_cannot_load_fails_before_any_work(tmp_path):
    import trainer_fuscore
    from fuscore.training.config import ModelArguments

    with pytest.raises(ValueError, match="--hub_adapter_only needs --push_to_hub"):
        trainer_fuscore.parse_arguments(["--config", str(trainer_fuscore.DEMO_CONFIG), "--hub_adapter_only", "true"])
    with pytest.raises(ValueError, match="needs --use_lora"):
        trainer_fuscore.check_adapter_push(ModelArguments(model_name_or_path="user/fuscore"))
    with pytest.raises(ValueError, match="names its base by Hub repo id"):
        trainer_fuscore.check_adapter_push(ModelArguments(model_name_or_path=str(tmp_path / "local"), use_lora=True))
