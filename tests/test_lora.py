"""LoRA with peft on the language model only; merged and adapter-only folders load as remote code."""

import numpy as np
import pytest
import torch
from transformers import AutoModel

from conftest import run_clean_python
from fuscore.lora import add_language_model_lora


@pytest.fixture(scope="module")
def saved_base(saved_tiny_models):
    return saved_tiny_models["qwen3_vl"]


def _lora_model(folder):
    peft_model = add_language_model_lora(AutoModel.from_pretrained(folder, trust_remote_code=True), r=4, alpha=8)
    torch.manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # LoRA starts as the identity; give it an effect so the checks below can fail
            torch.nn.init.normal_(parameter, std=0.2)
    return peft_model


def test_lora_targets_only_the_language_model_and_gets_gradients(saved_base, random_images):
    peft_model = _lora_model(saved_base)
    trainable = [name for name, parameter in peft_model.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert all(".language_model.layers." in name for name in trainable)
    assert not any("visual" in name or "lm_head" in name for name in trainable)
    batch = peft_model.get_processor()(random_images[:2])
    peft_model(**batch).score.sum().backward()
    grads = [parameter.grad for name, parameter in peft_model.named_parameters() if "lora_A" in name]
    assert all(grad is not None for grad in grads) and any(grad.abs().sum() > 0 for grad in grads)


# Each folder loaded and scored with remote code, in one clean process for all of them.
_SCORE_EACH = """
import json, numpy as np
from transformers import AutoModel
images = list(np.load({images!r}))
print(json.dumps({{source: AutoModel.from_pretrained(source, trust_remote_code=True).score(images) for source in {sources!r}}}))
"""


@pytest.mark.slow
def test_merged_and_adapter_folders_load_in_a_clean_process(saved_base, tmp_path):
    peft_model = _lora_model(saved_base)
    images = np.random.default_rng(5).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    base_scores = np.array(AutoModel.from_pretrained(saved_base, trust_remote_code=True).score(list(images)))
    lora_scores = np.array(peft_model.score(list(images)))
    assert np.abs(lora_scores - base_scores).max() > 1e-4, "the adapter must change the scores for this test to mean anything"

    adapter_folder = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_folder)
    assert (adapter_folder / "adapter_model.safetensors").is_file()
    merged_folder = tmp_path / "merged"
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(merged_folder)

    sources = [str(merged_folder), str(adapter_folder)]
    loaded = run_clean_python(_SCORE_EACH.format(sources=sources, images=str(tmp_path / "images.npy")), tmp_path)
    for source in sources:
        np.testing.assert_allclose(loaded[source], lora_scores, atol=1e-5, err_msg=source)
