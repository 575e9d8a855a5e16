"""The base families FuScore wraps besides Qwen2-VL, Qwen2.5-VL and Qwen3-VL: Qwen3.5 / Qwen3.6 (`qwen3_5`: Gated
DeltaNet and full-attention layers), Qwen3.5-MoE / Qwen3.6-MoE (`qwen3_5_moe`) and Qwen3-VL-MoE (`qwen3_vl_moe`).

The checks every family shares (from_base on a folder, scores, batch and order invariance, right padding without
the mask, save and clean reload with trust_remote_code, packed vision attention, precomputed positions, reward
gradients, FSDP auto-wrap, the prompt against the real chat template and tokenizer) are parametrized over
`fuscore.tiny.FAMILIES` in their own files; here are the checks that these families need beyond them: LoRA on their
layer kinds, padding that must not reach the Gated DeltaNet state from either side, and the Qwen3.5 recipes run end to
end at toy size."""

import copy
import json

import numpy as np
import pytest
import torch

import trainer_fuscore
from conftest import REPO_ROOT
from configuration_fuscore import BASE_FAMILIES, SUPPORTED_BASE_MODEL_TYPES
from fuscore.lora import add_language_model_lora
from fuscore.tiny import FAMILIES, build_tiny_model


NEW_FAMILIES = ("qwen3_5", "qwen3_5_moe", "qwen3_vl_moe")


def test_every_family_is_supported_and_has_a_tiny_model():
    assert set(NEW_FAMILIES) <= set(SUPPORTED_BASE_MODEL_TYPES) and set(FAMILIES) == set(SUPPORTED_BASE_MODEL_TYPES)
    assert set(BASE_FAMILIES) == set(SUPPORTED_BASE_MODEL_TYPES)


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_lora_adapts_each_layer_kind_trains_and_merges(tiny_models, family, random_images):
    model = copy.deepcopy(tiny_models[family])  # adapted and trained below
    peft_model = add_language_model_lora(model, r=4, alpha=8, dropout=0.0)
    adapted = {name.rsplit(".lora_A", 1)[0].split("language_model.layers.", 1)[1]
               for name, _ in peft_model.named_parameters() if ".lora_A" in name}
    expected = {"1.self_attn.q_proj", "1.self_attn.k_proj", "1.self_attn.v_proj", "1.self_attn.o_proj"}
    if family != "qwen3_vl_moe":  # layer 0 is a Gated DeltaNet layer, layer 1 a full-attention one
        expected = {"0.linear_attn.in_proj_qkv", "0.linear_attn.in_proj_z", "0.linear_attn.out_proj"} | expected
    else:
        expected |= {name.replace("1.", "0.", 1) for name in expected}
    mlp = {"qwen3_5": "mlp.", "qwen3_5_moe": "mlp.shared_expert.", "qwen3_vl_moe": None}[family]
    if mlp:
        expected |= {f"{layer}.{mlp}{proj}" for layer in (0, 1) for proj in ("gate_proj", "up_proj", "down_proj")}
    assert adapted == expected
    trainable = [name for name, parameter in peft_model.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert not any(key in name for name in trainable for key in ("experts.", "mlp.gate.", "in_proj_a", "in_proj_b"))

    torch.manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # LoRA starts as the identity; give it an effect so the checks below can fail
            torch.nn.init.normal_(parameter, std=0.2)
    batch = peft_model.get_processor()(random_images[:2])
    peft_model(**batch).score.sum().backward()
    grads = {name: parameter.grad for name, parameter in peft_model.named_parameters() if "lora_A" in name}
    assert all(grad is not None and grad.abs().sum() > 0 for grad in grads.values()), [
        name for name, grad in grads.items() if grad is None or not grad.abs().sum()]

    images = random_images[:3]
    adapted_scores = peft_model.score(images)
    merged = peft_model.merge_and_unload()
    assert merged.score(images) == pytest.approx(adapted_scores, abs=1e-5)
    assert merged.score(images) != pytest.approx(tiny_models[family].score(images), abs=1e-4)


@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_5_moe"])
def test_padding_never_reaches_the_recurrent_state(family):
    """A prompt scored alone, right-padded behind a longer one and left-padded before it gives one answer: the
    Gated DeltaNet layers carry a state along the sequence, and no pad may enter it from either side."""
    model = build_tiny_model(family, seed=3, num_layers=4).eval()
    processor = model.processor
    rng = np.random.default_rng(0)
    short, long = (processor.prepare_sample(rng.integers(0, 256, size, dtype=np.uint8)) for size in ((56, 56), (112, 112)))
    right = processor.collate([short, long])
    assert right["attention_mask"][0].eq(0).any(), "the short prompt must be padded"
    pad = int(right["attention_mask"][0].eq(0).sum())
    left = {key: value.clone() for key, value in right.items()}
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        left[key][0] = torch.roll(right[key][0], pad)
    with torch.no_grad():
        alone = model(**processor.collate([short])).level_logits[0]
        right_padded = model(**right).level_logits[0]
        left_padded = model(**left).level_logits[0]
        # The engine's GPU path: right padding, positions precomputed, no decoder mask at all.
        unmasked = model(**right, **model.position_inputs(right), right_padded=True).level_logits[0]
    for other in (right_padded, left_padded, unmasked):
        torch.testing.assert_close(other, alone, rtol=0, atol=2e-5)


def _recipe_run(tmp_path, recipe: str, model: str) -> dict:
    # The recipe at toy size on the CPU: its own settings, but a tiny model of its family, a synthetic table, two steps.
    return trainer_fuscore.main([
        "--config", str(REPO_ROOT / "configs" / recipe), "--model_name_or_path", model, "--dtype", "float32",
        "--use_cpu", "true", "--bf16", "false", "--tf32", "false", "--train_table", "synthetic",
        "--synthetic_image_size", "56", "--synthetic_train_scenes", "4", "--synthetic_eval_scenes", "2",
        "--synthetic_images_per_scene", "4", "--pairs_per_batch", "2", "--images_per_pair", "2",
        "--gradient_accumulation_steps", "1", "--max_steps", "2", "--per_device_eval_batch_size", "8",
        "--dataloader_num_workers", "0", "--report_to", "none", "--disable_tqdm", "true",
        "--output_dir", str(tmp_path / "run")])


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["qwen3_5_9b_lora.yaml", "qwen3_5_2b_lora.yaml"])
def test_qwen3_5_recipes_run_end_to_end_at_toy_size(recipe, tmp_path):
    model_args, _, training_args = trainer_fuscore.parse_arguments(
        ["--config", str(REPO_ROOT / "configs" / recipe), "--use_cpu", "true", "--tf32", "false"])
    assert model_args.model_name_or_path.startswith("Qwen/Qwen3.5-") and model_args.use_lora
    assert training_args.bf16 and training_args.gradient_checkpointing and training_args.objective == "fuscore"
    results = _recipe_run(tmp_path, recipe, "tiny:qwen3_5:32x2")
    from transformers import AutoModel

    reloaded = AutoModel.from_pretrained(results["final_dir"], trust_remote_code=True)
    assert reloaded.config.base_config.model_type == "qwen3_5"
    assert reloaded.get_processor().chat_format["assistant_prefix"] == "<think>\n\n</think>\n\n"
    score = reloaded.score(np.random.default_rng(1).integers(0, 256, (56, 56, 3), dtype=np.uint8))
    assert 1 <= score <= 5


@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_vl_moe"])
@pytest.mark.slow
def test_scoring_job_and_export_on_the_family(saved_tiny_models, family, tmp_path):
    """`fuscore score` (the scoring job: chunks, parquet) and `fuscore export` on a saved model of the family; the
    exported folder loads in a clean process with trust_remote_code and scores as the job did."""
    import pyarrow.parquet as pq
    from PIL import Image

    from conftest import run_clean_python
    from fuscore.cli import main

    folder = saved_tiny_models[family]
    rng = np.random.default_rng(2)
    images = tmp_path / "images"
    images.mkdir()
    for index in range(5):
        Image.fromarray(rng.integers(0, 256, (40 + 8 * (index % 2), 48, 3), dtype=np.uint8)).save(images / f"{index}.png")
    output = tmp_path / "scores.parquet"
    assert main(["score", str(images), "--model", str(folder), "--chunk-size", "2", "--output", str(output)]) == 0
    rows = pq.read_table(output).to_pylist()
    assert len(rows) == 5 and all(row["error"] is None and 1 <= row["overall"] <= 5 for row in rows)

    exported = tmp_path / "exported"
    assert main(["export", str(folder), "--output-dir", str(exported), "--cache-repo-id", f"org/{family}-test"]) == 0
    paths = [row["path"] for row in rows]
    script = ("import json\nfrom transformers import AutoModel\n"
              f"model = AutoModel.from_pretrained({str(exported)!r}, trust_remote_code=True)\n"
              f"print(json.dumps(model.score({paths!r})))\n")
    scores = run_clean_python(script, tmp_path)
    assert scores == pytest.approx([row["overall"] for row in rows], abs=1e-5)
