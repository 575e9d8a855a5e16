"""Tiny random-init FuScore models of each Qwen-VL family, with a byte-level BPE tokenizer trained locally.

No weights can be downloaded here, so tests, the demo and the CPU benchmarks build models from a config. The
tokenizer is trained in milliseconds on FuScore's own prompt vocabulary, with the Qwen special tokens, so the level
words are single tokens exactly as they are for the real Qwen tokenizers. Nothing in the remote-code files depends
on this module.
"""

from typing import Optional

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AddedToken,
    AutoConfig,
    AutoModelForImageTextToText,
    PreTrainedTokenizerFast,
    Qwen2VLImageProcessorPil,
)

from configuration_fuscore import DEFAULT_LEVEL_WORDS, FuScoreConfig, chat_format, default_prompts
from modeling_fuscore import FuScoreForQuality


QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
# Families whose vision tower has Qwen3-VL's layout (patch 16, a learned position grid, mean/std 0.5).
QWEN3_VISION_FAMILIES = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
# Tokens the real tokenizers of these families have beyond the Qwen2-VL ones and their chat templates use with
# thinking off (`<think>\n\n</think>\n\n`); added after training, so the other families' tiny tokenizers stay as
# they were.
THINK_TOKENS = ("<think>", "</think>")


def build_tiny_tokenizer(vocab_size: int = 512, family: Optional[str] = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the Qwen special tokens, trained on FuScore's prompts in milliseconds; for a
    family whose chat template writes a think block (`chat_format`), with `<think>` and `</think>` as single tokens."""
    corpus = []
    for input_mode in ("fused", "fused_ir_vis"):
        for prompt in default_prompts(input_mode).values():
            corpus += [prompt["question"], prompt["answer"]]
    corpus += [f"{prompt} {word}." for prompt in corpus[:] for word in DEFAULT_LEVEL_WORDS]
    corpus += ["user", "assistant", "system", "\n"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeating the corpus makes the whole level words win merges even at a small vocabulary.
    tokenizer.train_from_iterator(corpus * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=32768,
    )
    if family is not None and chat_format(family).assistant_prefix:
        fast.add_tokens([AddedToken(token, special=False, normalized=False) for token in THINK_TOKENS])
    return fast


def tiny_base_config(family: str, tokenizer, hidden_size: int = 64, num_layers: int = 2, vision_hidden_size: int = 32,
                     vision_depth: int = 2):
    """A Qwen-VL config of the given family at toy size, with the tokenizer's special-token ids."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    heads = 4
    head_dim = hidden_size // heads
    # The multimodal RoPE splits half the head dimension into temporal/height/width sections.
    half = head_dim // 2
    mrope_section = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    if family == "qwen2_vl":
        vision = dict(depth=vision_depth, embed_dim=vision_hidden_size, hidden_size=hidden_size, num_heads=2,
                      mlp_ratio=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    elif family == "qwen2_5_vl":
        vision = dict(depth=vision_depth, hidden_size=vision_hidden_size, out_hidden_size=hidden_size, num_heads=2,
                      intermediate_size=vision_hidden_size * 2, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=56, fullatt_block_indexes=[vision_depth - 1])
    else:
        text["head_dim"] = head_dim
        text["rope_parameters"]["mrope_interleaved"] = True
        vision = dict(depth=vision_depth, hidden_size=vision_hidden_size, out_hidden_size=hidden_size, num_heads=2,
                      intermediate_size=vision_hidden_size * 2, patch_size=16, spatial_merge_size=2,
                      temporal_patch_size=2, num_position_embeddings=64)
        if family in ("qwen3_vl", "qwen3_vl_moe"):
            vision["deepstack_visual_indexes"] = [0]
    if family in ("qwen3_vl_moe", "qwen3_5_moe"):
        # Four experts, two per token (the real ones route 8 of 256 or 4 of 60 experts): every expert is reached.
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden_size)
        text.pop("intermediate_size")
        if family == "qwen3_5_moe":
            text["shared_expert_intermediate_size"] = hidden_size
    if family in ("qwen3_5", "qwen3_5_moe"):
        # Gated DeltaNet (linear attention) layers with a full-attention layer last, as the real 3:1 pattern ends;
        # the rotary embedding covers a quarter of the head (partial_rotary_factor 0.25, the real value).
        # Heads twice as wide as the others' (the real ones are 256 wide) so the rotary quarter splits in three.
        text["head_dim"] = 2 * head_dim
        half = 2 * head_dim // 4 // 2
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                                   "mrope_section": [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8],
                                   "mrope_interleaved": True}
        text.update(layer_types=["linear_attention"] * (num_layers - 1) + ["full_attention"], linear_conv_kernel_dim=4,
                    linear_key_head_dim=head_dim, linear_value_head_dim=head_dim, linear_num_key_heads=2,
                    linear_num_value_heads=4)
    return AutoConfig.for_model(family, text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)


def tiny_image_processor(family: str, min_pixels: int = 56 * 56, max_pixels: int = 112 * 112):
    """The PIL (torchvision-free) Qwen-VL image processor with the family's patch size, at small pixel bounds."""
    patch_size = 16 if family in QWEN3_VISION_FAMILIES else 14
    mean_std = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]} if family in QWEN3_VISION_FAMILIES else {}
    # The bounds as `size`: transformers 5.17 writes `min_pixels`/`max_pixels` arguments into the class's own default
    # `size`, so every image processor built after this one without bounds would get these.
    return Qwen2VLImageProcessorPil(patch_size=patch_size, merge_size=2, temporal_patch_size=2,
                                    size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, **mean_std)


def build_tiny_model(
    family: str = "qwen2_vl",
    input_mode: str = "fused",
    seed: int = 0,
    regression_head: bool = False,
    artifact_map: bool = False,
    min_pixels: int = 56 * 56,
    max_pixels: int = 112 * 112,
    level_words: Optional[list] = None,
    **size_kwargs,
) -> FuScoreForQuality:
    """A random-init FuScore model of `family` with its processor attached, built entirely offline (with the artifact
    map head when `artifact_map`)."""
    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer(family=family)
    base_config = tiny_base_config(family, tokenizer, **size_kwargs)
    base = AutoModelForImageTextToText.from_config(base_config)
    config = FuScoreConfig(base_config=base.config, regression_head=regression_head, level_words=level_words,
                           artifact_map=artifact_map)
    image_processor = tiny_image_processor(family, min_pixels=min_pixels, max_pixels=max_pixels)
    return FuScoreForQuality.from_base_model(base, config, tokenizer, image_processor, input_mode=input_mode)
