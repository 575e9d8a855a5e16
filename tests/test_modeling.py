"""FuScoreForQuality and FuScoreProcessor at tiny size, for the three Qwen-VL families."""

import copy
import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import MODEL_CODE_FILES, load_saved, run_clean_python
from fuscore.hub import add_folder_to_hub_cache
from fuscore.tiny import FAMILIES, build_tiny_model, build_tiny_tokenizer
from modeling_fuscore import FuScoreConfig, FuScoreForQuality, resolve_level_token_ids
from processing_fuscore import ImageInputError


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_shapes_probabilities_and_score_range(tiny_models, random_images, family):
    model = tiny_models[family]
    batch = model.processor(random_images[:3])
    output = model(**batch)
    assert output.level_logits.shape == (3, 5)
    assert output.level_probs.shape == (3, 5)
    assert output.score.shape == (3,) and output.score_std.shape == (3,)
    torch.testing.assert_close(output.level_probs.sum(-1), torch.ones(3))
    assert ((output.score >= 1) & (output.score <= 5)).all()
    assert (output.score_std >= 0).all()
    values = torch.tensor(model.config.level_values)
    torch.testing.assert_close(output.score, output.level_probs @ values)


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_do_not_depend_on_batch_size_or_order(tiny_models, random_images, family):
    model = tiny_models[family]
    one_at_a_time = np.array(model.score(random_images, batch_size=1))
    batched = np.array(model.score(random_images, batch_size=8))
    reversed_order = np.array(model.score(random_images[::-1], batch_size=3))[::-1]
    np.testing.assert_allclose(batched, one_at_a_time, atol=1e-5, rtol=0)
    np.testing.assert_allclose(reversed_order, one_at_a_time, atol=1e-5, rtol=0)
    # Random weights still give image-dependent scores: a constant output would make the check above vacuous.
    assert np.ptp(one_at_a_time) > 1e-4


def test_level_logits_use_only_the_level_rows_of_the_lm_head(tiny_models, random_images):
    model = tiny_models["qwen2_vl"]
    calls = []
    handle = model.lm_head.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    try:
        batch = model.processor(random_images[:2])
        output = model(**batch)
        assert calls == [], "the full-vocabulary LM head must not run unless asked for"
        full = model(**batch, return_vocab_logits=True)
    finally:
        handle.remove()
    assert calls == [(2, model.config.base_config.get_text_config().vocab_size)]
    level_ids = torch.tensor(model.config.level_token_ids)
    torch.testing.assert_close(full.vocab_logits[:, level_ids], output.level_logits)


def test_score_api_shapes(tiny_models, random_images):
    model = tiny_models["qwen3_vl"]
    single = model.score(random_images[0])
    assert isinstance(single, float)
    several = model.score(random_images[:2], dimensions=("overall", "sharpness", "thermal_retention"))
    assert set(several) == {"overall", "sharpness", "thermal_retention"}
    assert all(len(values) == 2 for values in several.values())
    assert several["overall"][0] == pytest.approx(single, abs=1e-6)
    details = model.score(random_images[:2], dimensions="artifacts", return_details=True)
    assert len(details) == 2 and sum(details[0]["artifacts"]["probs"]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="Unknown rating dimension 'beauty'"):
        model.score(random_images[0], dimensions="beauty")


def _encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_odd_image_modes_are_accepted(tiny_models, tmp_path):
    model = tiny_models["qwen2_5_vl"]
    rng = np.random.default_rng(3)
    gray16 = Image.fromarray(rng.integers(1000, 30000, (40, 50), dtype=np.uint16))
    palette = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).convert("P")
    rgba = Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8), mode="RGBA")
    cmyk = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).convert("CMYK")
    path16 = tmp_path / "thermal16.png"
    gray16.save(path16)
    inputs = [gray16, palette, rgba, cmyk, str(path16), rng.random((40, 50)), rng.integers(0, 65535, (40, 50), dtype=np.uint16),
              _encoded(palette)]
    scores = model.score(inputs)
    assert all(1.0 <= score <= 5.0 for score in scores)
    # A 16-bit frame read from disk and in memory is the same image.
    assert scores[0] == pytest.approx(scores[4], abs=1e-6)


def test_bad_images_fail_with_the_file_name(tiny_models, tmp_path):
    model = tiny_models["qwen2_vl"]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(_encoded(Image.new("RGB", (64, 64), (10, 20, 30)))[:60])
    with pytest.raises(ImageInputError, match="truncated.png"):
        model.score(str(truncated))
    with pytest.raises(ImageInputError, match="missing.png: no such image file"):
        model.score(str(tmp_path / "missing.png"))
    with pytest.raises(ImageInputError, match="too small"):
        model.score(np.zeros((4, 64, 3), dtype=np.uint8))
    with pytest.raises(ImageInputError, match=r"must be in \[0, 1\]"):
        model.score(np.full((32, 32), 7.5))


def test_fused_with_sources_mode(tiny_model_ir_vis, random_images):
    model = tiny_model_ir_vis
    fused, ir, vis = random_images[0], random_images[0][..., 0], random_images[0][:, :, ::-1]
    batch = model.processor([fused], [ir], [vis])
    assert batch["image_grid_thw"].shape == (3, 3)
    assert (batch["input_ids"] == model.processor.image_token_id).sum() == batch["image_grid_thw"].prod(-1).sum() // 4
    assert 1 <= model.score(fused, ir=ir, vis=vis) <= 5
    # Sources at another resolution but the same aspect ratio are resized to the fused image.
    upscaled_ir = np.kron(ir, np.ones((2, 2), dtype=np.uint8))
    assert model.score(fused, ir=upscaled_ir, vis=vis) == pytest.approx(model.score(fused, ir=ir, vis=vis), abs=0.05)
    with pytest.raises(ImageInputError, match="pass ir= and vis="):
        model.score(fused)
    with pytest.raises(ImageInputError, match="registered"):
        model.score(fused, ir=ir[:, : ir.shape[1] // 2], vis=vis)


def test_multi_token_level_words_are_rejected():
    tokenizer = build_tiny_tokenizer()
    with pytest.raises(ValueError, match=r"Level word 'abysmal' is \d+ tokens"):
        resolve_level_token_ids(tokenizer, ["excellent", "good", "fair", "poor", "abysmal"])
    with pytest.raises(ValueError, match="abysmal"):
        build_tiny_model("qwen2_vl", level_words=["excellent", "good", "fair", "poor", "abysmal"])


def test_unsupported_base_model_type_is_a_clear_error():
    with pytest.raises(ValueError, match="wraps a Qwen-VL model.*'llama'"):
        FuScoreConfig(base_config={"model_type": "llama"})


def test_model_without_level_ids_says_how_to_fix(tiny_models, random_images):
    model = tiny_models["qwen2_vl"]
    config = FuScoreConfig(base_config=model.config.base_config.to_dict())
    bare = FuScoreForQuality(config)
    with pytest.raises(ValueError, match="set_level_words"):
        bare(**model.processor(random_images[:1]))


def test_a_reload_scores_like_the_saved_model(tiny_models, tmp_path, random_images):
    """The same weights come back; the image processor is the backend transformers picks on this machine."""
    model = tiny_models["qwen3_vl"]
    model.save_pretrained(tmp_path / "saved")
    reloaded = load_saved(tmp_path / "saved")
    same_backend = type(reloaded.get_processor().image_processor) is type(model.get_processor().image_processor)
    # Where torchvision is installed the reload gets its backend, which resizes a little differently from PIL's
    # (up to 3.4e-5 in score on the GPU machine); with the same backend the scores are the same.
    np.testing.assert_allclose(reloaded.score(random_images[:4]), model.score(random_images[:4]),
                               atol=1e-6 if same_backend else 1e-4)


def test_level_words_edited_in_config_json_alone_are_refused_when_the_model_loads_its_processor(tiny_model, tmp_path,
                                                                                               random_images):
    """The scores come from level_token_ids: words edited in config.json alone would be reported but not read."""
    from configuration_fuscore import LevelWordsError

    model = copy.deepcopy(tiny_model)  # its level words are changed below
    model.save_pretrained(tmp_path / "saved")
    words = list(model.config.level_words)
    for edited in (list(reversed(words)), [*words[:4], "abysmal"]):  # other ids; a word of several tokens
        folder = tmp_path / "-".join(edited)
        shutil.copytree(tmp_path / "saved", folder)
        config = json.loads((folder / "config.json").read_text())
        config["level_words"] = edited
        (folder / "config.json").write_text(json.dumps(config))
        loaded = FuScoreForQuality.from_pretrained(folder)
        for _ in range(2):  # the refused processor is not kept: a second call is refused again
            with pytest.raises(LevelWordsError) as error:
                loaded.score(random_images[:2])
            message = str(error.value)
            assert f"{folder}/config.json" in message and f"level_words {edited}" in message
            assert "model.set_level_words(tokenizer, words)" in message and "save_pretrained" in message
    # The supported way: words and ids changed together, then saved; the reload reads the words it names.
    model.set_level_words(model.get_processor().tokenizer, list(reversed(words)))
    model.save_pretrained(tmp_path / "renamed")
    reloaded = FuScoreForQuality.from_pretrained(tmp_path / "renamed")
    assert reloaded.config.level_words == list(reversed(words))
    assert all(1 <= score <= 5 for score in reloaded.score(random_images[:2]))


_LOAD_AND_SCORE_EACH = """
import json, numpy as np
from transformers import AutoModel, AutoProcessor
images = list(np.load({images!r}))
results = {{}}
for source in {sources!r}:
    model = AutoModel.from_pretrained(source, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
    results[source] = {{"scores": model.score(images, processor=processor, batch_size=3),
                        "module": type(model).__module__, "processor": type(processor).__name__}}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def clean_loads(tiny_models, tmp_path_factory):
    """Each family's tiny model saved (a folder named for its family, and that folder put in an offline Hub cache as
    org/fuscore-tiny-<family>), then loaded and scored with remote code in one clean process (a fresh interpreter
    without the project; one for all twelve loads, not one per load: 8-10 s of imports each)."""
    root = tmp_path_factory.mktemp("clean_loads")
    images = np.random.default_rng(7).integers(0, 256, (4, 56, 72, 3), dtype=np.uint8)
    np.save(root / "images.npy", images)
    cache = root / "hub_cache"
    folders, sources = {}, []
    for family in FAMILIES:
        folders[family] = root / f"fuscore-tiny-{family}"
        tiny_models[family].save_pretrained(folders[family])
        add_folder_to_hub_cache(folders[family], f"org/fuscore-tiny-{family}", cache_dir=str(cache))
        sources += [str(folders[family]), f"org/fuscore-tiny-{family}"]
    loaded = run_clean_python(_LOAD_AND_SCORE_EACH.format(sources=sources, images=str(root / "images.npy")), root,
                              env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(root / "hf_home")})
    return {"images": images, "folders": folders, "loaded": loaded}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.slow
def test_save_and_load_in_a_clean_process_from_folder_and_offline_cache(clean_loads, family):
    folder = clean_loads["folders"][family]
    expected = load_saved(folder).score(list(clean_loads["images"]))
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    assert set(MODEL_CODE_FILES) | {"processor_config.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_fuscore.FuScoreConfig", "AutoModel": "modeling_fuscore.FuScoreForQuality"}

    from_folder = clean_loads["loaded"][str(folder)]
    assert from_folder["module"].startswith("transformers_modules."), "must load as remote code, not the project"
    assert from_folder["processor"] == "FuScoreProcessor"
    np.testing.assert_allclose(from_folder["scores"], expected, atol=1e-6)

    from_cache = clean_loads["loaded"][f"org/fuscore-tiny-{family}"]
    assert from_cache["module"].startswith("transformers_modules.")
    np.testing.assert_allclose(from_cache["scores"], expected, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_vision_attention_matches_the_per_image_loop(tiny_models, family, random_images):
    model = copy.deepcopy(tiny_models[family])  # its settings are changed below
    same_size = [random_images[0][:48, :64]] * 2 + [random_images[1][:48, :64]]
    for images in (same_size, random_images[:5]):  # equal segments (one call) and unequal ones (fallback loop)
        model.config.packed_vision_attention = True
        packed = np.array(model.score(images, batch_size=5))
        assert model.model.visual.config._attn_implementation == "fuscore_packed_flash_sdpa"
        model.config.packed_vision_attention = False
        model.model.visual.config._attn_implementation = "sdpa"
        looped = np.array(model.score(images, batch_size=5))
        np.testing.assert_allclose(packed, looped, atol=1e-5, rtol=0)


def test_batch_plan_keeps_sizes_apart_and_pads_under_the_limit(tiny_models):
    """Sorted by visual tokens and cut at `batch_size`, a mix of sizes straddles them; the plan ends a batch early
    instead, so that no batch pads by more than `MAX_BATCH_PADDING`, and same-size items still fill whole batches."""
    from PIL import Image

    from scoring_fuscore import MAX_BATCH_PADDING, image_tokens, plan_batches

    processor = tiny_models["qwen2_vl"].processor
    sizes = [(56, 56)] * 7 + [(112, 112)] * 5 + [(112, 84)] * 6 + [(84, 84)] * 3
    images = [Image.new("RGB", size) for size in sizes]
    items, batches = plan_batches(image_tokens(processor, images), ["overall", "sharpness"], batch_size=4)
    tokens = [processor.num_visual_tokens(*sizes[index]) for index, _ in items]
    assert sorted(position for batch in batches for position in batch) == list(range(len(items)))
    assert all(len(batch) <= 4 for batch in batches)
    for batch in batches:
        counts = [tokens[position] for position in batch]
        assert max(counts) * len(counts) - sum(counts) <= MAX_BATCH_PADDING * max(counts) * len(counts)
    # Items of one size, 14 of the 56x56 (7 images x 2 dimensions), fill batches of 4: 4, 4, 4, 2.
    small = [batch for batch in batches if tokens[batch[0]] == tokens[0]]
    assert [len(batch) for batch in small] == [4, 4, 4, 2]
    # Without the limit the same plan straddles sizes.
    _, straddling = plan_batches(image_tokens(processor, images), ["overall", "sharpness"], batch_size=4, max_padding=1.0)
    assert any(len({tokens[position] for position in batch}) > 1 for batch in straddling)


@pytest.mark.parametrize("family", FAMILIES)
def test_right_padded_batches_score_alike_without_the_decoder_mask(tiny_models, random_images, family):
    """`right_padded=True` (the engine's setting on a GPU) drops the decoder's padding mask: causal attention keeps
    the pads after each row's answer out of its computation, so the outputs equal the masked ones."""
    model = tiny_models[family]
    images = [random_images[0][:40, :40], random_images[1], random_images[2][:36, :120]]
    batch = model.processor.collate([model.processor.prepare_sample(image) for image in images])
    assert (batch["attention_mask"] == 0).any()  # the batch is padded
    batch = {**batch, **model.position_inputs(batch)}
    with torch.no_grad():
        masked = model(**batch)
        unmasked = model(**batch, right_padded=True)
    torch.testing.assert_close(unmasked.level_logits, masked.level_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unmasked.score, masked.score, atol=1e-6, rtol=0)


def test_deferred_pixels_give_the_same_batch(tiny_models, random_images):
    """Workers may ship uint8 images and leave patching to `collate` (on the GPU there): same inputs either way."""
    processor = tiny_models["qwen3_vl"].processor
    eager = processor.collate([processor.prepare_sample(image) for image in random_images[:4]])
    deferred_samples = [processor.prepare_sample(image, defer_pixels=True) for image in random_images[:4]]
    assert deferred_samples[0]["images"][0].dtype == torch.uint8 and "pixel_values" not in deferred_samples[0]
    deferred = processor.collate(deferred_samples)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw"):
        assert torch.equal(eager[key], deferred[key]), key
    torch.testing.assert_close(eager["pixel_values"], deferred["pixel_values"], rtol=0, atol=1e-6)


def test_from_base_builds_from_a_local_qwen_vl_checkpoint(tmp_path, random_images):
    """The recipe users run with Qwen/Qwen3-VL-8B-Instruct, on a local tiny base checkpoint (weights, tokenizer and
    image processor saved the way the Hub serves them)."""
    from transformers import AutoModelForImageTextToText

    from fuscore.tiny import tiny_base_config, tiny_image_processor

    tokenizer = build_tiny_tokenizer()
    base = AutoModelForImageTextToText.from_config(tiny_base_config("qwen3_vl", tokenizer))
    folder = tmp_path / "qwen3-vl-tiny"
    base.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    tiny_image_processor("qwen3_vl").save_pretrained(folder)

    model = FuScoreForQuality.from_base(str(folder), input_mode="fused", max_pixels=112 * 112)
    assert model.config.base_config.model_type == "qwen3_vl"
    assert model.config.level_token_ids == resolve_level_token_ids(tokenizer, model.config.level_words)
    torch.testing.assert_close(model.lm_head.weight, base.lm_head.weight)
    assert 1 <= model.score(random_images[0]) <= 5

    not_qwen = tmp_path / "not-qwen"
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64).save_pretrained(not_qwen)
    with pytest.raises(ValueError, match="'llama' model; FuScore wraps Qwen-VL models"):
        FuScoreForQuality.from_base(str(not_qwen))


@pytest.mark.parametrize("family", FAMILIES)
def test_rope_position_ids_computed_beforehand_equal_the_forward_pass_own(tiny_models, random_images, family):
    """The engine computes the multimodal RoPE ids on the CPU before the forward pass; with right padding (images of
    different sizes) and several images per sample they must be the ids the base model computes itself."""
    model = tiny_models[family]
    batch = model.processor.collate([model.processor.prepare_sample(image) for image in random_images[:5]])
    assert not batch["attention_mask"].all(), "the batch should contain padding"
    position_ids = model.rope_position_ids(batch)
    assert position_ids.shape == (3, *batch["input_ids"].shape)
    with torch.no_grad():
        inside = model(**batch)
        beforehand = model(**batch, position_ids=position_ids)
    torch.testing.assert_close(beforehand.level_logits, inside.level_logits, rtol=0, atol=0)
    # The ids matter: sequential positions (what a text-only model would use) change the scores.
    with torch.no_grad():
        sequential = model(**batch, position_ids=torch.arange(batch["input_ids"].shape[1]).expand_as(position_ids))
    assert not torch.allclose(sequential.level_logits, inside.level_logits, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_tower_inputs_computed_beforehand_equal_the_tower_own(tiny_models, random_images, family):
    """The engine computes the vision tower's positions and segments on the CPU before the forward pass; for images
    of different sizes they must be exactly the ones the tower computes itself, and the tower must use them."""
    model = tiny_models[family]
    batch = model.processor.collate([model.processor.prepare_sample(image) for image in random_images[:5]])
    assert len(set(batch["image_grid_thw"].prod(-1).tolist())) > 1, "the images should differ in size"
    vision_inputs = model.vision_tower_inputs(batch["image_grid_thw"])
    expected_keys = {"position_ids", "cu_seqlens"} | {
        "qwen2_5_vl": {"window_index", "cu_window_seqlens"}}.get(family, {"interp_indices", "interp_weights"} if family.startswith(
            "qwen3") else set())
    assert expected_keys <= set(vision_inputs)
    with torch.no_grad():
        inside = model(**batch)
        beforehand = model(**batch, vision_inputs=vision_inputs)
        altered = model(**batch, vision_inputs={**vision_inputs, "position_ids": vision_inputs["position_ids"].flip(0)})
    torch.testing.assert_close(beforehand.level_logits, inside.level_logits, rtol=0, atol=0)
    # Bit for bit, as above: a tower that ignored the inputs would give exactly the same logits (the tiny Qwen2.5-VL
    # tower moves them by about 1e-6 only).
    assert not torch.equal(altered.level_logits, inside.level_logits), "the tower ignored the inputs"
    assert not model.model.visual._forward_pre_hooks, "the hook that hands the inputs to the tower must be removed"


@pytest.mark.parametrize("family", FAMILIES)
def test_each_vision_feature_route_gives_the_base_model_own_logits_bit_for_bit(tiny_models, random_images, family,
                                                                               monkeypatch):
    """From transformers 5.18 the forward pass hands the vision features to the base model as `mm_encoder_outputs`;
    before, the base model runs the tower itself with the precomputed inputs under an `image_` prefix. Every route
    this transformers has must give exactly the level logits of the base model's own forward pass from the pixels
    (no precomputed inputs), and the pixels must matter (a base model that never saw the features fails this)."""
    import modeling_fuscore

    model = tiny_models[family]
    batch = model.processor.collate([model.processor.prepare_sample(image) for image in random_images[:5]])
    precomputed = model.position_inputs(batch)
    level_rows = model.lm_head.weight[model.config.level_token_ids]
    answer = batch["attention_mask"].shape[1] - 1 - batch["attention_mask"].flip(-1).argmax(-1)
    with torch.no_grad():
        hidden = model.model(**batch, use_cache=False).last_hidden_state
        reference = torch.nn.functional.linear(hidden[torch.arange(len(answer)), answer], level_rows).float()
        blank = model(**{**batch, "pixel_values": torch.zeros_like(batch["pixel_values"])}).level_logits
    assert not torch.allclose(blank, reference, atol=1e-6), "the pixels must change the logits"
    routes = [False] + ([True] if modeling_fuscore.takes_encoder_outputs(model.model) else [])
    for takes in routes:
        monkeypatch.setattr(modeling_fuscore, "takes_encoder_outputs", lambda base_model, takes=takes: takes)
        with torch.no_grad():
            for inputs in ({}, precomputed):
                output = model(**batch, **inputs)
                assert torch.equal(output.level_logits, reference), f"mm_encoder_outputs={takes}, inputs={list(inputs)}"


def test_tiny_image_processors_leave_the_class_defaults_alone():
    """transformers 5.17 wrote `min_pixels`/`max_pixels` constructor arguments into the image processor class's own
    default `size`: after one tiny model, every later default-built processor in the process had its bounds."""
    from transformers import Qwen2VLImageProcessorPil

    from fuscore.tiny import tiny_image_processor

    defaults = dict(Qwen2VLImageProcessorPil.size)
    processor = tiny_image_processor("qwen2_vl", min_pixels=40 * 40, max_pixels=77 * 77)
    assert (processor.size["shortest_edge"], processor.size["longest_edge"]) == (40 * 40, 77 * 77)
    assert dict(Qwen2VLImageProcessorPil.size) == defaults


def test_frozen_vision_tower_is_not_checkpointed(tiny_models):
    """Nothing back-propagates through a frozen tower: only the decoder layers are checkpointed, so the vision blocks
    can be compiled for training. A tower that trains keeps its checkpointing."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from fuscore.lora import add_language_model_lora

    def checkpointed(modules):
        return [module.gradient_checkpointing for module in modules if isinstance(module, GradientCheckpointingLayer)]

    def enable_checkpointing(model):  # as the Trainer does: transformers 5.17 has only the older name
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    model = copy.deepcopy(tiny_models["qwen3_vl"])
    enable_checkpointing(model)
    assert model.trains_vision_tower()
    assert all(checkpointed(model.model.visual.modules())) and all(checkpointed(model.model.language_model.modules()))

    peft_model = add_language_model_lora(copy.deepcopy(tiny_models["qwen3_vl"]), r=4, alpha=8, dropout=0.0)
    enable_checkpointing(peft_model)
    fuscore_model = peft_model.get_base_model()
    assert not fuscore_model.trains_vision_tower()
    assert not any(checkpointed(fuscore_model.model.visual.modules()))
    assert checkpointed(fuscore_model.model.language_model.modules()) and all(checkpointed(fuscore_model.model.language_model.modules()))


def test_uncheckpointed_layers_skip_their_recomputation_with_the_same_gradients(random_images):
    """Under activation checkpointing, the last `uncheckpointed_layers` decoder layers run their forward once (no
    recomputation in the backward pass) and training computes the same gradients."""
    from fuscore.lora import add_language_model_lora

    def gradients_and_forward_calls(uncheckpointed_layers):
        peft_model = add_language_model_lora(build_tiny_model("qwen3_vl", seed=5, num_layers=3), r=4, alpha=8, dropout=0.0)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():  # non-zero B matrices, so that every adapter matrix gets a gradient
            for name, parameter in peft_model.named_parameters():
                if "lora_B" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
        fuscore_model = peft_model.get_base_model().configure_checkpointing(uncheckpointed_layers)
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.train()
        layers = fuscore_model.model.language_model.layers
        calls = [0] * len(layers)
        for index, layer in enumerate(layers):  # the layer's own hooks run once either way in later 5.x
            layer.mlp.register_forward_pre_hook(lambda *_, index=index: calls.__setitem__(index, calls[index] + 1))
        output = peft_model(**fuscore_model.processor(random_images[:3]))
        output.score.sum().backward()
        gradients = {name: p.grad.clone() for name, p in peft_model.named_parameters() if p.requires_grad}
        return gradients, calls, [layer.gradient_checkpointing for layer in layers]

    all_checkpointed, calls_all, flags_all = gradients_and_forward_calls(0)
    last_kept, calls_kept, flags_kept = gradients_and_forward_calls(1)
    assert flags_all == [True, True, True] and calls_all == [2, 2, 2]
    assert flags_kept == [True, True, False] and calls_kept == [2, 2, 1]
    assert all(gradient.abs().max() > 0 for gradient in all_checkpointed.values())
    for name, gradient in all_checkpointed.items():
        torch.testing.assert_close(last_kept[name], gradient, rtol=1e-5, atol=1e-7, msg=name)

    model = build_tiny_model("qwen3_vl", seed=5, num_layers=3)
    with pytest.raises(ValueError, match="uncheckpointed_layers=4: the language model has 3 decoder layers"):
        model.configure_checkpointing(4)
    with pytest.raises(ValueError, match="needs compiled decoder layers"):
        model.configure_checkpointing(memory_budget=0.5)
    assert model.uncheckpointed_layers == 0 and model.activation_memory_budget is None  # a refused call changes nothing
    model.configure_checkpointing(1).gradient_checkpointing_enable()
    assert [layer.gradient_checkpointing for layer in model.model.language_model.layers] == [True, True, False]
    with pytest.raises(ValueError, match="already on"):
        model.configure_checkpointing(2)


def test_a_model_that_has_scored_can_still_train(tiny_model, random_images):
    """`score` runs under inference mode; what it caches on the model must not break a later training forward."""
    model = copy.deepcopy(tiny_model)
    model.score(random_images[:2])
    model.train()
    output = model(**model.processor(random_images[:2]))
    output.score.sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


def test_batches_move_to_the_device_whole():
    """The engine's and the benchmarks' device move takes a processor's `BatchFeature` and nested vision inputs."""
    from transformers import BatchFeature

    from scoring_fuscore import to_device

    batch = BatchFeature({"input_ids": torch.ones(2, 3, dtype=torch.long), "vision_inputs": {"position_ids": torch.zeros(4, 2)},
                          "dimension": "overall"})
    moved = to_device(batch, torch.device("meta"))
    assert moved["input_ids"].is_meta and moved["vision_inputs"]["position_ids"].is_meta
    assert moved["dimension"] == "overall"


def test_level_tensors_follow_the_configured_levels(tiny_model, random_images):
    """The level ids and values are cached per device; a change of the configured levels must not hit a stale copy."""
    model = copy.deepcopy(tiny_model)
    batch = model.processor(random_images[:2])
    with torch.no_grad():
        before = model(**batch)
        model.config.level_values = [value * 2 for value in model.config.level_values]
        after = model(**batch)
    torch.testing.assert_close(after.level_probs, before.level_probs)
    torch.testing.assert_close(after.score, 2 * before.score)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.slow
def test_compiled_blocks_score_like_eager_and_compile_once_per_block_type(random_images):
    from torch._dynamo.utils import counters

    model = build_tiny_model("qwen3_vl", seed=4, num_layers=3, vision_depth=3)
    images = [image[:48, :64] for image in random_images[:4]]  # one input shape: no recompilation for new shapes
    eager = np.array(model.score(images, batch_size=2))
    torch._dynamo.reset()
    counters.clear()
    compiled = np.array(model.score(images, batch_size=2, compile=True))
    np.testing.assert_allclose(compiled, eager, atol=1e-5, rtol=0)
    assert np.ptp(eager) > 1e-4
    layers, blocks = model.model.language_model.layers, model.model.visual.blocks
    assert len(layers) == len(blocks) == 3
    assert all(getattr(block, "_compiled_call_impl", None) is not None for block in [*layers, *blocks])
    # Regional compilation: the three decoder layers share one graph and the three vision blocks another.
    assert counters["stats"]["unique_graphs"] == 2
    model.compile_blocks()  # a second call is a no-op
    torch._dynamo.reset()


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_5_moe", "qwen3_vl_moe"])
def test_compiled_blocks_of_the_newer_families_score_like_eager(family, random_images):
    """Regional compilation of the Gated DeltaNet and MoE decoder layers and of their vision blocks keeps the scores."""
    model = build_tiny_model(family, seed=4)
    images = [image[:48, :64] for image in random_images[:4]]
    eager = np.array(model.score(images, batch_size=2))
    torch._dynamo.reset()
    compiled = np.array(model.score(images, batch_size=2, compile=True))
    np.testing.assert_allclose(compiled, eager, atol=1e-5, rtol=0)
    assert np.ptp(eager) > 1e-5
    blocks = [*model.model.language_model.layers, *model.model.visual.blocks]
    assert all(getattr(block, "_compiled_call_impl", None) is not None for block in blocks)
    torch._dynamo.reset()


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.slow
def test_compiled_blocks_do_not_recompile_for_new_image_sizes(random_images):
    """A folder of real images comes in many sizes: after the first sizes, new ones (batches of one size and batches
    that mix sizes) run the graphs already compiled, and score as the eager model does."""
    from torch._dynamo.utils import counters

    model = build_tiny_model("qwen3_vl", seed=4, min_pixels=16 * 16, max_pixels=160 * 160)
    crop = lambda sizes: [random_images[index % len(random_images)][:h, :w] for index, (w, h) in enumerate(sizes)]  # noqa: E731
    # Batches of 3 over 7 sizes each time: batches of one size and batches that mix sizes, with and without padding.
    first = crop([(64, 48), (64, 48), (96, 64), (112, 48), (96, 64), (64, 48), (32, 32), (48, 80)])
    later = crop([(160, 128), (160, 128), (80, 80), (128, 32), (48, 48), (144, 96), (32, 96), (160, 64)])
    torch._dynamo.reset()
    counters.clear()
    model.score(first, batch_size=3, compile=True)
    graphs = counters["stats"]["unique_graphs"]
    compiled = np.array(model.score(later, batch_size=3))
    assert counters["stats"]["unique_graphs"] == graphs
    torch._dynamo.reset()
    for block in [*model.model.language_model.layers, *model.model.visual.blocks]:
        block._compiled_call_impl, block._fuscore_compiled = None, False
    np.testing.assert_allclose(compiled, model.score(later, batch_size=3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_patch_embedding_runs_as_a_matmul_with_the_convolutions_outputs_and_keys(family, random_images):
    """The vision tower's patch embedding (a Conv3d of one patch per input) is one matrix product, computed as such
    on a GPU: the same embeddings as the convolution, the same parameters and state-dict keys; the CPU and other
    shapes keep the convolution itself."""
    from modeling_fuscore import PatchConv3d

    model = build_tiny_model(family, seed=2).eval()  # a model that never ran: the first forward prepares it
    keys = list(model.state_dict())
    batch = model.processor([image[:48, :64] for image in random_images[:2]])
    proj = model.model.visual.patch_embed.proj
    assert type(proj) is torch.nn.Conv3d
    with torch.no_grad():
        before = model(**batch)
        after = model(**batch)
    assert type(proj) is PatchConv3d and isinstance(proj, torch.nn.Conv3d)
    assert list(model.state_dict()) == keys
    assert torch.equal(after.level_logits, before.level_logits)  # the CPU: the convolution, bit for bit
    patches = batch["pixel_values"].view(-1, proj.in_channels, *proj.kernel_size)
    larger = torch.randn(1, proj.in_channels, proj.kernel_size[0], 2 * proj.kernel_size[1], 2 * proj.kernel_size[2])
    assert proj.one_patch_each(patches) and not proj.one_patch_each(larger)
    with torch.no_grad():
        convolved = torch.nn.Conv3d.forward(proj, patches)
        torch.testing.assert_close(proj.patch_matmul(patches), convolved, atol=1e-5, rtol=1e-5)
        assert torch.equal(proj(patches), convolved)
        if torch.cuda.is_available():
            proj.cuda()
            torch.testing.assert_close(proj(patches.cuda()).cpu(), convolved, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.slow  # a CPU compile: 5 s on the idle 2-core machine
def test_compiled_vision_blocks_keep_one_graph_for_equal_and_unequal_image_lengths():
    """Scoring's vision attention is one operator whatever the images' lengths (its kernel is chosen inside): a
    compiled vision block traces one graph, without breaks, for batches of one size and batches that mix sizes,
    and computes what the eager block does."""
    from torch._dynamo.utils import counters

    model = build_tiny_model("qwen3_vl", seed=4).eval()
    model._prepare_attention()
    visual = model.model.visual
    config = visual.config
    per_patch = config.in_channels * config.temporal_patch_size * config.patch_size**2

    def run(grids):
        grid = torch.tensor(grids)
        pixels = torch.randn(int(grid.prod(-1).sum()), per_patch, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            return visual(pixels, grid_thw=grid).pooler_output

    # Equal lengths, unequal lengths, equal again, unequal again (totals chosen apart from the tower's widths, which
    # dynamo's duck sizing would otherwise tie a length to).
    batches = [[[1, 4, 6], [1, 4, 6]], [[1, 4, 6], [1, 8, 4]], [[1, 6, 6]] * 3, [[1, 2, 4], [1, 6, 8], [1, 4, 4]]]
    eager = [run(grids) for grids in batches]
    torch._dynamo.reset()
    counters.clear()
    for block in visual.blocks:
        block.compile(dynamic=True)
    try:
        compiled = [run(grids) for grids in batches]
        assert counters["stats"]["unique_graphs"] == 1
        assert not counters["graph_break"]
    finally:
        for block in visual.blocks:
            block._compiled_call_impl = None
        torch._dynamo.reset()
    for expected, actual in zip(eager, compiled):
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_compile_auto_compiles_only_jobs_where_it_pays(tiny_model, tiny_models, monkeypatch):
    """`compile="auto"`: on a GPU, from `COMPILE_PAYS_FROM_VISUAL_TOKENS` scaled by the decoder's size; never on the
    CPU; a model already compiled counts as paid. Checked on the rule's arithmetic with the device faked as CUDA."""
    from PIL import Image

    import scoring_fuscore
    from fuscore.cli import build_parser

    model = copy.deepcopy(tiny_model)  # its layers are marked compiled below
    processor = model.processor
    image = Image.new("RGB", (112, 112))
    per_image = processor.num_visual_tokens(112, 112)
    assert scoring_fuscore.image_tokens(processor, [image, image]) == [per_image, per_image]
    assert not scoring_fuscore.compile_pays(model, processor, [per_image] * 10_000)  # the CPU: never
    monkeypatch.setattr(type(model), "device", property(lambda self: torch.device("cuda")))
    # The 8B threshold, scaled to this tiny decoder, would need billions of images: lower it so that 100 images of
    # this size are exactly enough at this decoder size, and check the rule at that edge.
    decoder = sum(parameter.numel() for parameter in model.model.language_model.layers.parameters())
    monkeypatch.setattr(scoring_fuscore, "COMPILE_PAYS_FROM_VISUAL_TOKENS",
                        100 * per_image * decoder / scoring_fuscore.REFERENCE_DECODER_PARAMETERS)
    needed = 100
    assert scoring_fuscore.compile_pays(model, processor, [per_image] * needed)
    assert not scoring_fuscore.compile_pays(model, processor, [per_image] * (needed - 1))
    # Each dimension is one more pass over the images; an image whose size is unknown counts as the mean of the rest.
    assert scoring_fuscore.compile_pays(model, processor, [per_image] * int(np.ceil(needed / 5)), dimensions=5)
    assert scoring_fuscore.compile_pays(model, processor, [per_image] * (needed - 1) + [0])
    assert scoring_fuscore.compile_pays(model, processor, [])  # sizes unknown: taken to be a large job
    # A family whose compiled blocks were measured not to pay (Qwen3.5's) stays eager under "auto", however large.
    qwen3_5 = tiny_models["qwen3_5"]  # the same class: its device reads as CUDA too
    assert not scoring_fuscore.compile_pays(qwen3_5, qwen3_5.processor, [per_image * 10**6] * 1000)
    for layer in model.model.language_model.layers:
        layer._fuscore_compiled = True
    assert scoring_fuscore.compile_pays(model, processor, [per_image])
    with pytest.raises(ValueError, match="compile must be True, False or 'auto'"):
        model.score([image], compile="yes")
    parse = lambda *extra: build_parser().parse_args(["score", "a.png", *extra]).compile  # noqa: E731
    assert (parse(), parse("--compile"), parse("--compile", "auto")) == (None, "always", "auto")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="variable-length flash attention runs on a GPU")
def test_packed_vision_attention_on_segments_of_different_lengths_matches_the_loop():
    """On a GPU, images of different sizes in one batch go to `varlen_attn`: the same output as one call each."""
    import acceleration_fuscore

    torch.manual_seed(0)
    lengths = [64, 196, 4, 300]
    heads, dim = 4, 72
    query, key, value = (torch.randn(1, heads, sum(lengths), dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    cu = torch.tensor([0, *np.cumsum(lengths)], device="cuda", dtype=torch.int32)
    assert acceleration_fuscore._takes_varlen(query, dim**-0.5)
    packed, _ = acceleration_fuscore.packed_vision_attention(None, query, key, value, scaling=dim**-0.5,
                                                             cu_seq_lens_q=cu, max_length_q=max(lengths))
    loop = torch.cat([torch.nn.functional.scaled_dot_product_attention(q, k, v) for q, k, v in
                      zip(*(torch.split(t, lengths, dim=2) for t in (query, key, value)))], dim=2).transpose(1, 2)
    torch.testing.assert_close(packed, loop, atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.slow  # a CPU compile
def test_compiled_decoder_layers_keep_one_graph_with_the_scoring_attention(random_images):
    """The decoder's scoring attention is one operator (its kernel chosen inside on the concrete shape): compiled
    decoder layers run right-padded batches of different lengths on one graph without breaks, and score what the eager
    layers score."""
    from torch._dynamo.utils import counters

    model = build_tiny_model("qwen3_vl", seed=4).eval()
    processor = model.get_processor()
    batches = []
    for images in (random_images[:2], random_images[1:4], random_images[:3]):
        batch = dict(processor(images))
        batch.update(model.position_inputs(batch))
        batches.append(batch)

    def run():
        with torch.inference_mode():
            return [model(**batch, right_padded=True).level_logits for batch in batches]

    import acceleration_fuscore
    from torch._inductor.compile_fx import compile_fx

    eager = run()
    assert model.model.language_model.config._attn_implementation == "fuscore_sdpa"
    called = []

    def inductor_recording_calls(graph_module, example_inputs):
        called.extend(str(node.target) for node in graph_module.graph.nodes if node.op == "call_function")
        return compile_fx(graph_module, example_inputs)

    torch._dynamo.reset()
    counters.clear()
    layers = model.model.language_model.layers
    for layer in layers:
        layer.compile(dynamic=True, backend=inductor_recording_calls)
    try:
        compiled = run()
        assert counters["stats"]["unique_graphs"] == 1
        assert not counters["graph_break"]
        # The attention is the operator in the graph, so its kernel is chosen when it runs, not when it is traced.
        assert any(acceleration_fuscore._ATTENTION_OP in target for target in called)
        assert not any("scaled_dot_product" in target for target in called)
    finally:
        for layer in layers:
            layer._compiled_call_impl = None
        torch._dynamo.reset()
    for expected, actual in zip(eager, compiled):
        torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_decoder_scoring_attention_is_sdpa_causal_without_a_mask_and_sdpa_itself_otherwise():
    """`decoder_attention` (the decoder's attention once a model has run) computes what transformers' sdpa computes:
    through FuScore's operator for a causal batch without a mask (grouped key/value heads included), through sdpa
    itself with a mask or gradients; a saved model's config keeps no trace of it."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    import acceleration_fuscore as acceleration

    model = build_tiny_model("qwen3_vl", seed=4).eval()
    module = model.model.language_model.layers[0].self_attn
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(3, 4, 9, 16, generator=generator)
    key, value = (torch.randn(3, 2, 9, 16, generator=generator) for _ in range(2))
    mask = torch.ones(3, 1, 9, 9, dtype=torch.bool).tril()
    mask[0, :, :, 7:] = False
    calls = []
    original = acceleration.scaled_dot_product_attention
    try:
        acceleration.scaled_dot_product_attention = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
        with torch.no_grad():
            for attention_mask in (None, mask):
                ours, _ = acceleration.decoder_attention(module, query, key, value, attention_mask, scaling=0.25)
                theirs, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=0.25)
                torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
                assert len(calls) == 1  # the unmasked call only
        trained = query.clone().requires_grad_()
        acceleration.decoder_attention(module, trained, key, value, None, scaling=0.25)
        assert len(calls) == 1
    finally:
        acceleration.scaled_dot_product_attention = original
    model.score([np.zeros((32, 32, 3), np.uint8)])
    assert model.model.language_model.config._attn_implementation == acceleration.DECODER_ATTENTION
    assert FuScoreForQuality(model.config).model.language_model.config._attn_implementation == "sdpa"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN's attention runs on a GPU")
def test_attention_leaves_cudnn_to_shapes_met_often_and_restores_the_backends():
    """A shape's first calls run without cuDNN (whose first call at a shape builds a plan); from
    `CUDNN_ATTENTION_AFTER_CALLS` on, torch's own choice. The result is the same, and torch's backend switches are
    as they were."""
    import acceleration_fuscore as acceleration

    def kernels(fn):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
            output = fn()
            torch.cuda.synchronize()
        return output, {event.key for event in profile.key_averages() if event.device_type.name == "CUDA"}

    torch.manual_seed(0)
    query = torch.randn(3, 8, 77, 64, device="cuda", dtype=torch.bfloat16)
    key, value = (torch.randn(3, 2, 77, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    attend = lambda: acceleration.scaled_dot_product_attention(query, key, value, True, None, True)  # noqa: E731
    expected, default = kernels(lambda: torch.nn.functional.scaled_dot_product_attention(
        query, key, value, is_causal=True, enable_gqa=True))
    first, early = kernels(attend)
    assert not any("cudnn" in name.lower() for name in early)
    for _ in range(acceleration.CUDNN_ATTENTION_AFTER_CALLS):
        attend()
    later, late = kernels(attend)
    assert late == default
    torch.testing.assert_close(first, expected, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(later, expected, atol=2e-2, rtol=2e-2)
    assert (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()) == (True, True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the engine's GPU path (threads, positions by layout)")
def test_gpu_engine_scores_as_one_image_at_a_time_with_positions_reused():
    """On a GPU the engine ramps up, decodes in threads and reuses position inputs per batch layout; the scores are
    the ones each image gets alone, and the ones the engine gets without the reuse."""
    import scoring_fuscore

    model = build_tiny_model("qwen3_vl", seed=3, num_layers=2).to("cuda")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (56 + 28 * (i % 2), 84, 3), dtype=np.uint8) for i in range(20)]
    engine = model.score(images, batch_size=4, num_workers=2)
    alone = [model.score([image], batch_size=1)[0] for image in images]
    saved = scoring_fuscore.REUSE_POSITIONS
    try:
        scoring_fuscore.REUSE_POSITIONS = False
        unreused = model.score(images, batch_size=4, num_workers=2)
    finally:
        scoring_fuscore.REUSE_POSITIONS = saved
    np.testing.assert_allclose(engine, unreused, atol=1e-5)
    np.testing.assert_allclose(engine, alone, atol=2e-2)


def test_background_preparation_keeps_order_reraises_and_stops_early():
    """The GPU engine prepares batches in a thread: same items in the same order, the worker's own exception
    (e.g. a bad image's, naming the file) re-raised unchanged, and no thread left running after an early exit."""
    import threading

    from scoring_fuscore import _in_background_thread

    assert list(_in_background_thread(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ImageInputError("/data/broken.png: cannot identify image file")

    consumed = []
    with pytest.raises(ImageInputError, match="broken.png"):
        for item in _in_background_thread(failing()):
            consumed.append(item)
    assert consumed == [1]

    produced = []

    def endless():
        count = 0
        while True:
            produced.append(count)
            yield count
            count += 1

    generator = _in_background_thread(endless(), depth=2)
    assert [next(generator) for _ in range(3)] == [0, 1, 2]
    generator.close()
    assert not any(thread.name == "fuscore-prepare" and thread.is_alive() for thread in threading.enumerate())
    assert len(produced) <= 3 + 2 + 1, "the thread runs at most `depth` items ahead"


def test_threaded_decoding_keeps_batches_and_names_a_bad_file(tiny_models, random_images, tmp_path):
    """On a GPU the engine decodes in threads: the batches hold the same samples in the same order as a serial
    pass, and a corrupt file fails with its own name."""
    from scoring_fuscore import _decoded_in_threads, _ScoringDataset

    processor = tiny_models["qwen3_vl"].processor
    paths = []
    for index, image in enumerate(random_images[:5]):
        path = tmp_path / f"image_{index}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    items = [(index, "overall") for index in range(len(paths))]
    dataset = _ScoringDataset(processor, paths, [None] * 5, [None] * 5, items, defer_pixels=True)
    batches = [[4, 0], [2], [1, 3]]
    threaded = list(_decoded_in_threads(dataset, batches, num_workers=3, prefetch_batches=1))
    assert [positions for _, positions in threaded] == batches
    for (samples, positions), batch in zip(threaded, batches):
        for sample, position in zip(samples, batch):
            serial = dataset[position]
            assert sample["input_ids"] == serial["input_ids"]
            assert all(torch.equal(a, b) for a, b in zip(sample["images"], serial["images"]))

    (tmp_path / "image_2.png").write_bytes(b"not an image")
    with pytest.raises(ImageInputError, match="image_2.png"):
        list(_decoded_in_threads(dataset, batches, num_workers=3))


@pytest.mark.parametrize("family", FAMILIES)
def test_visual_token_counts_come_from_the_image_processor(tiny_models, family):
    """The prompt's image placeholders match what the image processor makes, for sizes around every rounding edge."""
    processor = tiny_models[family].processor
    for height, width in [(16, 16), (27, 300), (56, 56), (57, 111), (100, 33), (129, 130), (480, 640), (1000, 17)]:
        image = np.zeros((height, width, 3), np.uint8)
        grid = processor.image_processor(images=[Image.fromarray(image)], return_tensors="pt")["image_grid_thw"]
        assert processor.num_visual_tokens(width, height) == int(grid.prod()) // processor.merge_size ** 2
        sample = processor.prepare_sample(image)
        assert sample["input_ids"].count(processor.image_token_id) == int(grid.prod()) // processor.merge_size ** 2


def test_one_dimension_check_for_every_caller():
    from configuration_fuscore import DIMENSIONS, resolve_dimensions

    known = ["sharpness", "overall", "beauty", "artifacts"]
    assert resolve_dimensions("all", known) == ["overall", "artifacts", "sharpness", "beauty"]
    assert resolve_dimensions(None, known) == resolve_dimensions("all", known)
    assert resolve_dimensions("sharpness", known) == ["sharpness"]
    assert resolve_dimensions(("beauty", "overall", "beauty"), known) == ["beauty", "overall"]
    assert resolve_dimensions(iter(["overall"]), DIMENSIONS) == ["overall"]
    with pytest.raises(ValueError, match="dimensions is empty"):
        resolve_dimensions([], known)
    with pytest.raises(ValueError, match=r"Unknown rating dimension 'colour' in --dimensions; this model knows: overall"):
        resolve_dimensions(["overall", "colour"], known, argument="--dimensions")
    with pytest.raises(ValueError, match="must hold dimension names"):
        resolve_dimensions(["overall", 3], known)
    with pytest.raises(ValueError, match="a dimension name or a list"):
        resolve_dimensions(5, known)


def test_the_auto_classes_load_the_code_free_demo_in_process():
    """With the project's classes registered (importing modeling_fuscore does it), AutoModel and AutoProcessor load
    the shipped demo folder, which has no code files, with those classes, with or without trust_remote_code."""
    from conftest import REPO_ROOT
    from transformers import AutoModel, AutoProcessor

    from processing_fuscore import FuScoreProcessor

    demo = REPO_ROOT / "fuscore" / "demo_model"
    image = np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    expected = FuScoreForQuality.from_pretrained(demo).score(image)
    for kwargs in ({}, {"trust_remote_code": True}):
        model = AutoModel.from_pretrained(demo, **kwargs)
        assert type(model) is FuScoreForQuality and model.score(image) == expected
        assert type(AutoProcessor.from_pretrained(demo, **kwargs)) is FuScoreProcessor


def test_ramp_up_cuts_the_first_batch_into_growing_pieces_and_keeps_every_item_once():
    from scoring_fuscore import ramp_up

    batches = [list(range(64)), list(range(64, 128)), list(range(128, 130))]
    ramped = ramp_up(batches, first=8)
    assert [len(batch) for batch in ramped] == [8, 8, 16, 32, 64, 2]
    assert sum(ramped, []) == sum(batches, [])
    assert [len(b) for b in ramp_up([list(range(100))], first=8)] == [8, 8, 16, 32, 36]
    assert ramp_up([list(range(31)), [31]], first=8) == [list(range(31)), [31]]  # too small to cut
    assert ramp_up([], first=8) == []


def test_ramp_up_first_piece_is_set_by_the_module_and_zero_keeps_the_batches():
    import scoring_fuscore
    from scoring_fuscore import ramp_up

    batches = [list(range(64)), list(range(64, 70))]
    assert [len(b) for b in ramp_up(batches, first=16)] == [16, 16, 32, 6]
    assert ramp_up(batches, first=0) == batches
    saved = scoring_fuscore.RAMP_UP_FIRST
    try:
        scoring_fuscore.RAMP_UP_FIRST = 16
        assert [len(b) for b in ramp_up(batches)] == [16, 16, 32, 6]
    finally:
        scoring_fuscore.RAMP_UP_FIRST = saved


def test_positions_are_computed_once_per_batch_layout_and_model_across_calls():
    """The engine's GPU path reuses the position inputs of a batch layout the model has met, in this call or an
    earlier one: equal token ids, types, padding and grids give the very tensors computed the first time; any
    difference computes them anew; another model has its own; the kept layouts are bounded in number and bytes, and
    go with their model."""
    import gc
    import weakref

    from scoring_fuscore import _PositionsByLayout

    class Counting:
        def __init__(self):
            self.calls = 0

        def position_inputs(self, batch):
            self.calls += 1
            return {"position_ids": batch["input_ids"] * 2, "vision_inputs": {"grid": batch["image_grid_thw"].clone()}}

    def batch(ids, grid=((1, 4, 4),)):
        ids = torch.tensor(ids)
        return {"input_ids": ids, "mm_token_type_ids": (ids == 7).int(), "attention_mask": torch.ones_like(ids),
                "image_grid_thw": torch.tensor(grid)}

    model, other = Counting(), Counting()
    positions = _PositionsByLayout.of(model)
    first = positions(model, batch([[1, 7, 7, 2]]))
    assert _PositionsByLayout.of(model) is positions, "a later call finds the layouts of the earlier ones"
    assert positions(model, batch([[1, 7, 7, 2]])) is first and model.calls == 1
    assert torch.equal(positions(model, batch([[1, 7, 7, 3]]))["position_ids"], torch.tensor([[2, 14, 14, 6]]))
    positions(model, batch([[1, 7, 7, 2]], grid=((1, 2, 8),)))  # same tokens, other grid
    positions(model, batch([[1, 7, 7, 2, 0]]))  # other length
    assert model.calls == 4
    assert _PositionsByLayout.of(other) is not positions
    _PositionsByLayout.of(other)(other, batch([[1, 7, 7, 2]]))
    assert other.calls == 1 and model.calls == 4

    positions.LAYOUTS = 2  # over the limit the least recently used layout goes
    positions(model, batch([[1, 7, 7, 2]]))  # used again: kept
    positions(model, batch([[5]]))
    assert len(positions.layouts) == 2 and model.calls == 5
    assert positions(model, batch([[1, 7, 7, 2]])) is first and model.calls == 5
    positions(model, batch([[1, 7, 7, 3]]))
    assert model.calls == 6, "a forgotten layout is computed again"
    positions.LAYOUTS, positions.BYTES = 64, 1  # over the byte budget only the newest stays
    positions(model, batch([[9, 9]]))
    assert len(positions.layouts) == 1 and positions.bytes > 0

    kept = weakref.ref(positions)
    del model, positions, first
    gc.collect()
    assert kept() is None, "the layouts go with their model"


def test_positions_can_be_left_to_each_call(monkeypatch):
    """`KEEP_POSITIONS_ACROSS_CALLS` off (a benchmark's comparison): each call starts with no layouts."""
    import scoring_fuscore

    class Model:
        pass

    model = Model()
    assert scoring_fuscore._PositionsByLayout.of(model) is scoring_fuscore._PositionsByLayout.of(model)
    monkeypatch.setattr(scoring_fuscore, "KEEP_POSITIONS_ACROSS_CALLS", False)
    assert scoring_fuscore._PositionsByLayout.of(model) is not scoring_fuscore._PositionsByLayout.of(model)


def test_threaded_decoding_runs_ahead_by_images_not_batches():
    """After `ramp_up`'s small first batches the decoders still hold `prefetch_batches` of the largest batch's images
    in flight, and no more."""
    import threading
    import time

    from scoring_fuscore import _decoded_in_threads

    class Recording:
        def __init__(self):
            self.calls, self.lock = [], threading.Lock()

        def __getitem__(self, position):
            with self.lock:
                self.calls.append(position)
            return {"position": position}

    dataset = Recording()
    batches = [[0], [1], [2, 3, 4, 5], [6, 7, 8, 9]]
    decoded = _decoded_in_threads(dataset, batches, num_workers=2, prefetch_batches=1)
    assert next(decoded)[1] == [0]
    deadline = time.monotonic() + 10
    while len(dataset.calls) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(dataset.calls) == [0, 1, 2, 3, 4, 5]  # 4 images ahead: batches 2 and 3 yes, batch 4 not yet
    assert [positions for _, positions in decoded] == batches[1:]
    assert sorted(dataset.calls) == list(range(10))
