# Copyright 2026 The FuScore authors. Apache-2.0.
"""FuScore: quality assessment of infrared-visible fused images with a Qwen-VL model.

This file is Hub remote code (`AutoModel.from_pretrained(..., trust_remote_code=True)`): it imports only the
standard library, torch, transformers and its sibling `processing_fuscore.py`.

A Qwen-VL model (Qwen2-VL, Qwen2.5-VL or Qwen3-VL) reads a fused image and a rating prompt that ends in an answer
prefix ("The overall quality of the fused image is"). At that answer position the LM head rows of the five level
words (" excellent", " good", " fair", " poor", " bad" -> 5..1) give five logits; their softmax `p` is the level
distribution, the score is `s = sum_l p_l v_l` in [1, 5] and the uncertainty is `sqrt(sum_l p_l (v_l - s)^2)`.
"""

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import ModelOutput


try:  # Hub remote code: the sibling file is part of the same dynamic module package.
    from .processing_fuscore import FuScoreProcessor
except ImportError:  # A checkout or an installed FuScore: the sibling is a top-level module.
    from processing_fuscore import FuScoreProcessor


SUPPORTED_BASE_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

DEFAULT_LEVEL_WORDS = ("excellent", "good", "fair", "poor", "bad")
DEFAULT_LEVEL_VALUES = (5.0, 4.0, 3.0, 2.0, 1.0)

SUB_DIMENSIONS = ("thermal_retention", "texture_preservation", "artifacts", "sharpness")
DIMENSIONS = ("overall",) + SUB_DIMENSIONS

_SOURCES_NOTE = "The first image is the fused result, the second its infrared source and the third its visible source. "
DEFAULT_PROMPTS = {
    "overall": {
        "question": "How would you rate the overall quality of this infrared-visible fused image?",
        "answer": "The overall quality of the fused image is",
    },
    "thermal_retention": {
        "question": "How well does this fused image keep the thermal targets and intensities of the infrared image?",
        "answer": "The thermal retention of the fused image is",
    },
    "texture_preservation": {
        "question": "How well does this fused image preserve the textures and details of the visible image?",
        "answer": "The texture preservation of the fused image is",
    },
    "artifacts": {
        "question": "How free is this fused image of artifacts such as noise, halos, ringing and blocking?",
        "answer": "The freedom from artifacts of the fused image is",
    },
    "sharpness": {
        "question": "How sharp are the edges and structures of this fused image?",
        "answer": "The sharpness of the fused image is",
    },
}


def default_prompts(input_mode: str = "fused") -> dict:
    """The built-in prompt templates; with the sources, the question says which image is which."""
    prefix = _SOURCES_NOTE if input_mode == "fused_ir_vis" else ""
    return {dim: {"question": prefix + p["question"], "answer": p["answer"]} for dim, p in DEFAULT_PROMPTS.items()}


def resolve_level_token_ids(tokenizer, level_words: Sequence[str]) -> list:
    """Token id of each level word in its leading-space form (" excellent"), as it follows the answer prefix.

    Raises:
        ValueError: a word is not a single token for this tokenizer, or two words share a token.
    """
    token_ids = []
    for word in level_words:
        pieces = tokenizer.encode(" " + word, add_special_tokens=False)
        if len(pieces) != 1:
            shown = [tokenizer.convert_ids_to_tokens(piece) for piece in pieces]
            raise ValueError(
                f"Level word {word!r} is {len(pieces)} tokens {shown} for this tokenizer in its leading-space form "
                f"{' ' + word!r}. FuScore reads one logit per level, so each level word must be a single token: "
                "choose words the tokenizer keeps whole (the defaults excellent/good/fair/poor/bad are single "
                "tokens for every Qwen-VL tokenizer)."
            )
        token_ids.append(pieces[0])
    if len(set(token_ids)) != len(token_ids):
        raise ValueError(f"Level words {list(level_words)} map to repeated token ids {token_ids}.")
    return token_ids


PACKED_VISION_ATTENTION = "fuscore_packed_flash_sdpa"


def packed_vision_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                            cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """Vision-tower attention over a packed batch of images in one `scaled_dot_product_attention` call.

    Under plain sdpa the Qwen-VL vision towers loop over the images of a batch in Python, one small attention call per
    image and block. Registered under a name containing "flash", this function receives the packed sequence with its
    `cu_seq_lens_q` instead (as flash-attention's varlen kernels do). When all segments have the same length, which
    the scoring engine arranges by batching images of equal visual-token count, the batch is reshaped to
    `[images, heads, length, dim]` and attended in one call; otherwise it falls back to one call per segment.

    Args:
        query, key, value (`torch.Tensor` of shape `(1, heads, total_length, head_dim)`): the packed sequence.
        cu_seq_lens_q (`torch.IntTensor` of shape `(segments + 1,)`): segment boundaries.
        max_length_q (`int`): the longest segment.
    Returns:
        `(attn_output, None)` with `attn_output` of shape `(1, total_length, heads, head_dim)`.
    """
    _, heads, total, head_dim = query.shape
    segments = cu_seq_lens_q.numel() - 1
    if max_length_q is not None and max_length_q * segments == total:
        # Equal segments: sum == total and max * count == total imply every segment has length max.
        q, k, v = (t[0].view(heads, segments, max_length_q, head_dim).transpose(0, 1) for t in (query, key, value))
        output = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling)
        return output.transpose(1, 2).reshape(1, total, heads, head_dim), None
    lengths = (cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).tolist()
    outputs = [
        F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling)
        for q, k, v in zip(*(torch.split(t, lengths, dim=2) for t in (query, key, value)))
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2), None


AttentionInterface.register(PACKED_VISION_ATTENTION, packed_vision_attention)


class FuScoreConfig(PreTrainedConfig):
    r"""
    Configuration of [`FuScoreForQuality`].

    Args:
        base_config (`dict` or `PreTrainedConfig`):
            The Qwen-VL base model's configuration (`model_type` `qwen2_vl`, `qwen2_5_vl` or `qwen3_vl`).
        level_words (`list[str]`, defaults to `["excellent", "good", "fair", "poor", "bad"]`):
            The rating words read at the answer position, each a single token in its leading-space form.
        level_values (`list[float]`, defaults to `[5, 4, 3, 2, 1]`):
            The value of each level word; the score is the expectation of these under the level distribution.
        level_token_ids (`list[int]`, *optional*):
            Token ids of the level words, resolved from the tokenizer when the model is built.
        prompts (`dict[str, dict[str, str]]`, *optional*):
            Per rating dimension (`overall` and the four IVIF sub-dimensions), the `question` and the `answer`
            prefix that the level word completes.
        input_mode (`str`, defaults to `"fused"`):
            `"fused"`: the fused image alone; `"fused_ir_vis"`: the fused image, its infrared and visible sources.
        regression_head (`bool`, defaults to `False`):
            Adds a linear regression head on the answer-position hidden state (the `scalar` training baseline).
        packed_vision_attention (`bool`, defaults to `True`):
            Where the vision tower runs under sdpa, attend all images of a batch in one call instead of a Python
            loop over images (see `packed_vision_attention`). Scores are unchanged up to floating-point rounding.
    """

    model_type = "fuscore"

    base_config: Union[dict, PreTrainedConfig, None] = None
    level_words: Optional[list] = None
    level_values: Optional[list] = None
    level_token_ids: Optional[list] = None
    prompts: Optional[dict] = None
    input_mode: str = "fused"
    regression_head: bool = False
    packed_vision_attention: bool = True

    def __post_init__(self, **kwargs):
        if isinstance(self.base_config, dict):
            model_type = self.base_config.get("model_type")
            if model_type not in SUPPORTED_BASE_MODEL_TYPES:
                raise ValueError(
                    f"FuScore wraps a Qwen-VL model ({', '.join(SUPPORTED_BASE_MODEL_TYPES)}); the base config has "
                    f"model_type={model_type!r}."
                )
            self.base_config = CONFIG_MAPPING[model_type](**{k: v for k, v in self.base_config.items() if k != "model_type"})
        if self.base_config is not None and self.base_config.model_type not in SUPPORTED_BASE_MODEL_TYPES:
            raise ValueError(
                f"FuScore wraps a Qwen-VL model ({', '.join(SUPPORTED_BASE_MODEL_TYPES)}); got a "
                f"{self.base_config.model_type!r} model. Use e.g. Qwen/Qwen3-VL-8B-Instruct."
            )
        self.level_words = list(self.level_words or DEFAULT_LEVEL_WORDS)
        self.level_values = [float(value) for value in (self.level_values or DEFAULT_LEVEL_VALUES)]
        if len(self.level_words) != len(self.level_values):
            raise ValueError(f"{len(self.level_words)} level words but {len(self.level_values)} level values.")
        if self.level_token_ids is not None and len(self.level_token_ids) != len(self.level_words):
            raise ValueError(f"{len(self.level_words)} level words but {len(self.level_token_ids)} level token ids.")
        if self.input_mode not in ("fused", "fused_ir_vis"):
            raise ValueError(f"input_mode must be 'fused' or 'fused_ir_vis', got {self.input_mode!r}.")
        self.prompts = dict(self.prompts or default_prompts(self.input_mode))
        if self.base_config is not None:
            # The LM head is tied to the input embeddings exactly when the base model ties them.
            kwargs.setdefault("tie_word_embeddings", bool(getattr(self.base_config, "tie_word_embeddings", False)))
        super().__post_init__(**kwargs)

    def get_text_config(self, *args, **kwargs):
        return self.base_config.get_text_config(*args, **kwargs)


@dataclass
class FuScoreOutput(ModelOutput):
    r"""
    Output of [`FuScoreForQuality`].

    Args:
        level_logits (`torch.FloatTensor` of shape `(batch_size, num_levels)`):
            LM-head logits of the level words at the answer position, in `config.level_words` order.
        level_probs (`torch.FloatTensor` of shape `(batch_size, num_levels)`):
            Softmax of `level_logits` among the levels (float32).
        score (`torch.FloatTensor` of shape `(batch_size,)`):
            Expected level value, in [min(level_values), max(level_values)].
        score_std (`torch.FloatTensor` of shape `(batch_size,)`):
            Standard deviation of the level value under `level_probs`.
        vocab_logits (`torch.FloatTensor` of shape `(batch_size, vocab_size)`, *optional*):
            Full-vocabulary logits at the answer position (only with `return_vocab_logits=True`).
        regression (`torch.FloatTensor` of shape `(batch_size,)`, *optional*):
            Output of the regression head (only when `config.regression_head`).
        answer_hidden_state (`torch.FloatTensor` of shape `(batch_size, hidden_size)`, *optional*):
            Last hidden state at the answer position (only with `return_answer_hidden_state=True`).
    """

    level_logits: Optional[torch.FloatTensor] = None
    level_probs: Optional[torch.FloatTensor] = None
    score: Optional[torch.FloatTensor] = None
    score_std: Optional[torch.FloatTensor] = None
    vocab_logits: Optional[torch.FloatTensor] = None
    regression: Optional[torch.FloatTensor] = None
    answer_hidden_state: Optional[torch.FloatTensor] = None


class FuScorePreTrainedModel(PreTrainedModel):
    config_class = FuScoreConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    # No `_no_split_modules` of our own: `post_init` collects the wrapped Qwen-VL model's (its decoder layer and vision
    # block). Listing all three families here would name classes absent from the model, and FSDP's transformer
    # auto-wrap, which falls back to this list, refuses names it cannot find.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    input_modalities = ("image", "text")

    def _init_weights(self, module):
        # The wrapped Qwen-VL model knows how to initialise its own modules; only our heads are ours.
        if isinstance(module, nn.Linear) and getattr(module, "_fuscore_head", False):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif hasattr(self, "model"):
            self.model._init_weights(module)


def _add_keyword_arguments(extra: dict, module, args, kwargs):
    """A `register_forward_pre_hook(..., with_kwargs=True)` hook that calls the module with `extra` kwargs added."""
    return args, {**kwargs, **extra}


class FuScoreForQuality(FuScorePreTrainedModel):
    """A Qwen-VL model that rates infrared-visible fused images with level-token scoring.

    `model` is the base Qwen-VL model (vision tower + language model, no LM head) and `lm_head` the base LM head,
    so a base checkpoint's weights load under the same names. The forward pass never computes full-vocabulary logits
    over the sequence: it takes the hidden state at the answer position (each row's last real token) and multiplies
    it with the five level rows of `lm_head` only.
    """

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: FuScoreConfig):
        super().__init__(config)
        if config.base_config is None:
            raise ValueError("FuScoreConfig.base_config is required (the Qwen-VL base model's configuration).")
        text_config = config.base_config.get_text_config()
        self.model = AutoModel.from_config(config.base_config)
        self.lm_head = nn.Linear(text_config.hidden_size, text_config.vocab_size, bias=False)
        self.regression_head = None
        if config.regression_head:
            self.regression_head = nn.Linear(text_config.hidden_size, 1)
            self.regression_head._fuscore_head = True
        self.processor = None  # attached by `from_base`, `from_pretrained` loads it lazily in `score`
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    # ------------------------------------------------------------------ forward
    def level_tensors(self, device) -> tuple:
        """`(level_token_ids, level_values)` as tensors on `device`, built once per device and level set.

        Building them in every forward pass would copy two small lists to the GPU each time, and such a copy waits
        for all queued GPU work: the CPU could then never prepare the next batch while the GPU runs this one.
        """
        if self.config.level_token_ids is None:
            raise ValueError(
                "config.level_token_ids is not set: build the model with FuScoreForQuality.from_base(...) or call "
                "model.set_level_words(tokenizer) so the level words are resolved to token ids."
            )
        key = (str(device), tuple(self.config.level_token_ids), tuple(self.config.level_values))
        cache = self.__dict__.setdefault("_level_tensors_cache", {})
        if key not in cache:
            # Never inference tensors, even when first built under `score`'s inference mode: a later training forward
            # of the same model could not use them.
            with torch.inference_mode(False):
                cache[key] = (torch.tensor(self.config.level_token_ids, dtype=torch.long, device=device),
                              torch.tensor(self.config.level_values, dtype=torch.float32, device=device))
        return cache[key]

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: Optional[torch.LongTensor] = None,
        pixel_values: Optional[torch.FloatTensor] = None,
        image_grid_thw: Optional[torch.LongTensor] = None,
        mm_token_type_ids: Optional[torch.IntTensor] = None,
        vision_inputs: Optional[dict] = None,
        return_vocab_logits: bool = False,
        return_answer_hidden_state: bool = False,
        **kwargs,
    ) -> FuScoreOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): prompt tokens from
                `FuScoreProcessor`, ending at the answer prefix.
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`): 1 on real tokens. Left or
                right padding both work: the answer position is each row's last real token.
            pixel_values (`torch.FloatTensor` of shape `(num_patches, patch_dim)`): image patches of the batch.
            image_grid_thw (`torch.LongTensor` of shape `(num_images, 3)`): patch grid of each image.
            mm_token_type_ids (`torch.IntTensor` of shape `(batch_size, sequence_length)`): 1 on image tokens.
            vision_inputs (`dict`, *optional*): the vision tower's position and segment inputs, precomputed by
                `vision_tower_inputs`; the tower computes them itself when they are not given.
            return_vocab_logits (`bool`): also return full-vocabulary logits at the answer position (DeQA-style loss).
            return_answer_hidden_state (`bool`): also return the answer-position hidden state.
        """
        self._select_vision_attention()
        base_inputs = dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                           image_grid_thw=image_grid_thw)
        if mm_token_type_ids is not None:
            base_inputs["mm_token_type_ids"] = mm_token_type_ids
        hook = None
        if vision_inputs:
            # The tower's `transformers.vision_utils` helpers take precomputed values from its keyword arguments.
            # They cannot travel through the base model's own kwargs: those also reach the language model, whose
            # `position_ids` are a different tensor.
            hook = self.model.visual.register_forward_pre_hook(
                functools.partial(_add_keyword_arguments, vision_inputs), with_kwargs=True)
        try:
            hidden_states = self.model(**base_inputs, use_cache=False, **kwargs).last_hidden_state
        finally:
            if hook is not None:
                hook.remove()

        batch_size, sequence_length = input_ids.shape
        if attention_mask is None:
            answer_positions = torch.full((batch_size,), sequence_length - 1, device=input_ids.device)
        else:
            answer_positions = sequence_length - 1 - attention_mask.flip(-1).argmax(-1)
        rows = torch.arange(batch_size, device=hidden_states.device)
        answer_hidden = hidden_states[rows, answer_positions.to(hidden_states.device)]  # [batch, hidden]

        head_weight = self.lm_head.weight
        if hasattr(head_weight, "full_tensor"):
            # Under FSDP2 the LM head stays a sharded DTensor here (its own forward, which would gather it, never
            # runs): gather it to pick the level rows; the gather is differentiable.
            head_weight = head_weight.full_tensor()
        level_token_ids, values = self.level_tensors(head_weight.device)
        level_weight = head_weight[level_token_ids]  # [levels, hidden]
        # Under mixed-precision sharding the gathered weight can be float32 while activations are bf16.
        level_logits = F.linear(answer_hidden, level_weight.to(answer_hidden.dtype)).float()
        with torch.autocast(level_logits.device.type, enabled=False):  # under bf16 autocast the score moved in 1/64 steps
            level_probs = level_logits.softmax(dim=-1)
            score = level_probs @ values
            score_std = (level_probs * (values - score[:, None]) ** 2).sum(-1).clamp_min(0).sqrt()

        return FuScoreOutput(
            level_logits=level_logits,
            level_probs=level_probs,
            score=score,
            score_std=score_std,
            vocab_logits=self.lm_head(answer_hidden).float() if return_vocab_logits else None,
            regression=self.regression_head(answer_hidden).squeeze(-1).float() if self.regression_head is not None else None,
            answer_hidden_state=answer_hidden if return_answer_hidden_state else None,
        )

    def trains_vision_tower(self) -> bool:
        """Whether any vision-tower parameter requires a gradient (LoRA on the language model freezes the tower)."""
        return any(parameter.requires_grad for parameter in self.model.visual.parameters())

    # How many of the last decoder layers keep their activations when activation checkpointing is on, instead of
    # recomputing them in the backward pass: memory for speed (see `_set_gradient_checkpointing`).
    uncheckpointed_layers: int = 0

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs):
        """Checkpoints the decoder layers but the last `uncheckpointed_layers`, and the vision blocks only if the
        vision tower trains.

        Nothing back-propagates through a frozen tower, so checkpointing it would save no memory and recompute
        nothing; leaving it off lets `compile_blocks` compile its blocks for training too (torch does not compile
        inside checkpointing's recompute regions). A decoder layer left unchecked skips its recomputed forward (a
        third of its training FLOPs under LoRA, whose frozen weights need no gradient) and holds its activations
        until the backward pass: for Qwen3-VL-8B and 16 images of 448 px, about 0.44 GiB per layer
        (`benchmarks/RESULTS_speed.md`). Which layers are left does not change the peak, which comes at the end of
        the forward pass. This is the one method that both `gradient_checkpointing_enable` (transformers 5.17) and
        `activation_checkpointing_enable` (later 5.x) call.
        """
        layers = self.model.language_model.layers
        if not 0 <= self.uncheckpointed_layers <= len(layers):
            raise ValueError(f"uncheckpointed_layers={self.uncheckpointed_layers}: the language model has "
                             f"{len(layers)} decoder layers.")
        super()._set_gradient_checkpointing(enable, *args, **kwargs)
        if not enable:
            return
        if not self.trains_vision_tower():
            for module in self.model.visual.modules():
                if isinstance(module, GradientCheckpointingLayer):
                    module.gradient_checkpointing = False
        for layer in list(layers)[len(layers) - self.uncheckpointed_layers :]:
            layer.gradient_checkpointing = False

    def compile_blocks(self, vision_tower: bool = True, **compile_kwargs) -> "FuScoreForQuality":
        """Compiles every decoder layer and vision block with `torch.compile` (regional compilation).

        Identical blocks share one compiled graph, so this costs one compilation per block type (4 to 14 s for
        Qwen3-VL-8B on an H100) rather than one of the whole model, and the Python around the blocks (image grids,
        position ids) stays eager. It fuses each block's normalisations, rotary embeddings and activations into a
        few kernels; `benchmarks/RESULTS_speed.md` has the measured effect. Calling it again is a no-op.
        """
        block_lists = [self.model.language_model.layers] + ([self.model.visual.blocks] if vision_tower else [])
        for blocks in block_lists:
            for block in blocks:
                if not getattr(block, "_fuscore_compiled", False):
                    block.compile(**compile_kwargs)
                    block._fuscore_compiled = True
        return self

    def _select_vision_attention(self) -> None:
        if self.config.packed_vision_attention and self.model.visual.config._attn_implementation == "sdpa":
            self.model.visual.config._attn_implementation = PACKED_VISION_ATTENTION

    def vision_tower_inputs(self, image_grid_thw: torch.LongTensor) -> dict:
        """The vision tower's rotary position ids, attention segments and position-embedding interpolation for a
        batch's `image_grid_thw`, computed where the grid is; pass them to `forward` as `vision_inputs`.

        The tower would compute them inside `forward` from the grid on the GPU: a Python loop over the images and
        several synchronisations, during which the GPU waits. The scoring engine calls this on the CPU copy of the
        grid while the GPU is still busy with the previous batch. The tower's own helpers
        (`transformers.vision_utils`) do the work with the tower's own settings, so the values are exactly the ones
        it would compute (tested for all three families).
        """
        from transformers import vision_utils
        from transformers.utils.generic import get_max_seqlen

        self._select_vision_attention()  # the segment lengths it needs depend on the attention implementation
        visual = self.model.visual
        merge_size = visual.spatial_merge_size
        inputs = {"position_ids": vision_utils.get_vision_position_ids(image_grid_thw, merge_size)}
        inputs["cu_seqlens"], inputs["max_seqlen"] = vision_utils.get_vision_attention_seqlens(image_grid_thw, visual.config)
        if hasattr(visual, "num_grid_per_side"):  # Qwen3-VL resamples a learned position grid to each image
            inputs["interp_indices"], inputs["interp_weights"] = vision_utils.get_vision_interpolation_indices_and_weights(
                image_grid_thw, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
                align_corners=visual.interpolation_align_corners, spatial_merge_size=visual.config.spatial_merge_size)
        if hasattr(visual, "window_size"):  # Qwen2.5-VL attends within windows in most blocks
            inputs["window_index"], inputs["cu_window_seqlens"] = vision_utils.get_vision_window_index(
                image_grid_thw, spatial_merge_size=merge_size, window_size=visual.window_size, patch_size=visual.patch_size)
            inputs["max_window_seqlen"] = get_max_seqlen(inputs["cu_window_seqlens"], visual.config, kwarg_name="max_window_seqlen")
        return {key: value for key, value in inputs.items() if value is not None}

    def position_inputs(self, batch) -> dict:
        """`position_ids` (`rope_position_ids`) and `vision_inputs` (`vision_tower_inputs`) of a collated batch, to be
        passed to `forward` with it. They need the model's configuration only, so a weightless copy of the model on
        the meta device computes them too (the trainer's collator does, in its data-loading workers)."""
        inputs = {"vision_inputs": self.vision_tower_inputs(batch["image_grid_thw"])}
        position_ids = self.rope_position_ids(batch)
        if position_ids is not None:
            inputs["position_ids"] = position_ids
        return inputs

    def rope_position_ids(self, batch) -> Optional[torch.LongTensor]:
        """The multimodal RoPE position ids of a collated batch, computed where its token ids are.

        The base model would compute them inside `forward` with a Python loop over the batch that synchronises with
        the GPU several times per row; the scoring engine calls this on the CPU copy of the batch instead, while the
        GPU is still busy with the previous one. The base model's own `get_rope_index` does the work, so the ids are
        exactly the ones `forward` would compute.
        """
        get_rope_index = getattr(self.model, "get_rope_index", None)
        if get_rope_index is None or batch.get("mm_token_type_ids") is None:
            return None
        position_ids, _ = get_rope_index(input_ids=batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
                                         image_grid_thw=batch["image_grid_thw"], attention_mask=batch["attention_mask"])
        return position_ids

    # ------------------------------------------------------------------ scoring
    def get_processor(self) -> FuScoreProcessor:
        """The processor this model was built or saved with (loaded from the model's folder or repo if needed)."""
        if self.processor is None:
            from transformers import AutoProcessor

            source = getattr(self.config, "_name_or_path", None)
            if not source:
                raise ValueError("This model has no processor attached; pass processor= or load it with from_pretrained.")
            self.processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
        return self.processor

    @torch.inference_mode()
    def score(
        self,
        fused,
        ir=None,
        vis=None,
        dimensions: Union[str, Sequence[str]] = ("overall",),
        batch_size: int = 8,
        processor: Optional[FuScoreProcessor] = None,
        num_workers: int = 0,
        return_details: bool = False,
        progress: bool = False,
        compile: bool = False,
    ):
        """Scores fused images.

        Args:
            fused: one image or a list (paths, PIL images or HxW[xC] arrays).
            ir, vis: the matching infrared and visible sources (needed when `config.input_mode == "fused_ir_vis"`,
                ignored otherwise).
            dimensions: `"overall"`, a sub-dimension name, or several names.
            batch_size: images per forward pass; scores do not depend on it.
            num_workers: workers that decode images while the model runs: threads on a GPU (the patches are then
                made on the GPU), DataLoader processes on the CPU.
            return_details: return, per image, a dict `{dimension: {"score", "std", "probs"}}` instead of floats.
            progress: show a progress bar.
            compile: first compile the decoder layers and vision blocks (`compile_blocks`). Worth it for large jobs
                on a GPU (1.4x the eager model-only forward for Qwen3-VL-8B on an H100, `benchmarks/RESULTS_speed.md`); each new input
                shape compiles once (seconds), and scores then differ from the eager ones at bf16 rounding level.

        Returns:
            For one image and one dimension a float; for a list of images and one dimension a list of floats; for
            several dimensions a dict mapping each dimension to that. With `return_details`, a list of dicts.
        """
        single = not isinstance(fused, (list, tuple))
        fused_list = [fused] if single else list(fused)
        ir_list = _as_list(ir, len(fused_list), "ir")
        vis_list = _as_list(vis, len(fused_list), "vis")
        dimension_list = [dimensions] if isinstance(dimensions, str) else list(dimensions)
        processor = processor or self.get_processor()
        for dimension in dimension_list:
            if dimension not in processor.prompts:
                raise ValueError(f"Unknown rating dimension {dimension!r}; this model knows: {', '.join(processor.prompts)}.")

        if compile:
            self.compile_blocks()
        results = score_images(self, processor, fused_list, ir_list, vis_list, dimension_list,
                               batch_size=batch_size, num_workers=num_workers, progress=progress)
        if return_details:
            details = [
                {dim: {"score": results[dim]["score"][i], "std": results[dim]["std"][i], "probs": results[dim]["probs"][i]}
                 for dim in dimension_list}
                for i in range(len(fused_list))
            ]
            return details[0] if single else details
        by_dimension = {dim: (results[dim]["score"][0] if single else results[dim]["score"]) for dim in dimension_list}
        if isinstance(dimensions, str) or len(dimension_list) == 1:
            return by_dimension[dimension_list[0]]
        return by_dimension

    # ------------------------------------------------------------------ building
    def set_level_words(self, tokenizer, level_words: Optional[Sequence[str]] = None):
        """Resolves (and optionally changes) the level words to token ids with `tokenizer`."""
        words = list(level_words or self.config.level_words)
        self.config.level_token_ids = resolve_level_token_ids(tokenizer, words)
        self.config.level_words = words

    @classmethod
    def from_base(
        cls,
        base_model_name_or_path: str,
        input_mode: str = "fused",
        level_words: Optional[Sequence[str]] = None,
        level_values: Optional[Sequence[float]] = None,
        prompts: Optional[dict] = None,
        regression_head: bool = False,
        min_pixels: Optional[int] = None,
        max_pixels: Optional[int] = None,
        **from_pretrained_kwargs,
    ) -> "FuScoreForQuality":
        """Builds a FuScore model from a Qwen-VL base checkpoint (a Hub id such as `Qwen/Qwen3-VL-8B-Instruct` or a
        local folder), with its weights, tokenizer and image processor. `from_pretrained_kwargs` (dtype,
        attn_implementation, device_map, ...) go to the base model's `from_pretrained`."""
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        # Read the model type from config.json without instantiating a config class: never runs a folder's code.
        model_type = PreTrainedConfig.get_config_dict(base_model_name_or_path)[0].get("model_type")
        if model_type not in SUPPORTED_BASE_MODEL_TYPES:
            raise ValueError(
                f"{base_model_name_or_path} is a {model_type!r} model; FuScore wraps Qwen-VL models "
                f"({', '.join(SUPPORTED_BASE_MODEL_TYPES)}), e.g. Qwen/Qwen3-VL-8B-Instruct."
            )
        tokenizer = AutoTokenizer.from_pretrained(base_model_name_or_path)
        image_processor_kwargs = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v}
        image_processor = AutoImageProcessor.from_pretrained(base_model_name_or_path, **image_processor_kwargs)
        base = AutoModelForImageTextToText.from_pretrained(base_model_name_or_path, **from_pretrained_kwargs)
        config = FuScoreConfig(
            base_config=base.config,
            level_words=list(level_words) if level_words else None,
            level_values=list(level_values) if level_values else None,
            prompts=prompts,
            input_mode=input_mode,
            regression_head=regression_head,
        )
        return cls.from_base_model(base, config, tokenizer, image_processor)

    @classmethod
    def from_base_model(cls, base_model, config: FuScoreConfig, tokenizer, image_processor) -> "FuScoreForQuality":
        """Wraps an instantiated Qwen-VL `...ForConditionalGeneration` (weights shared, not copied)."""
        config.level_token_ids = resolve_level_token_ids(tokenizer, config.level_words)
        with torch.device("meta"):
            model = cls(config)
        model.model = base_model.model
        model.lm_head = base_model.lm_head
        if model.regression_head is not None:
            model.add_regression_head()
        model.processor = FuScoreProcessor(image_processor, tokenizer, prompts=config.prompts, input_mode=config.input_mode)
        model.config._name_or_path = getattr(base_model.config, "_name_or_path", "")
        return model

    def add_regression_head(self):
        """A fresh linear regression head on the answer-position hidden state (the `scalar` baseline objective)."""
        hidden_size = self.config.base_config.get_text_config().hidden_size
        self.regression_head = nn.Linear(hidden_size, 1, device=self.lm_head.weight.device, dtype=self.lm_head.weight.dtype)
        self.regression_head._fuscore_head = True
        self._init_weights(self.regression_head)
        self.config.regression_head = True

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves weights (safetensors), config with `auto_map`, the processor and the remote-code files."""
        self.config.auto_map = {
            "AutoConfig": "modeling_fuscore.FuScoreConfig",
            "AutoModel": "modeling_fuscore.FuScoreForQuality",
            "AutoProcessor": "processing_fuscore.FuScoreProcessor",
        }
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.processor is not None:
            self.processor.save_pretrained(save_directory)


def _as_list(images, count: int, name: str) -> list:
    if images is None:
        return [None] * count
    if not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) != count:
        raise ValueError(f"Got {count} fused images but {len(images)} {name} images.")
    return list(images)


class _ScoringDataset(torch.utils.data.Dataset):
    """One item per (image, dimension), prepared by the engine's workers (threads or DataLoader processes)."""

    def __init__(self, processor, fused, ir, vis, items, defer_pixels=False):
        self.processor, self.fused, self.ir, self.vis, self.items = processor, fused, ir, vis, items
        self.defer_pixels = defer_pixels

    def __len__(self):
        return len(self.items)

    def __getitem__(self, position):
        index, dimension = self.items[position]
        sample = self.processor.prepare_sample(self.fused[index], self.ir[index], self.vis[index], dimension,
                                               defer_pixels=self.defer_pixels)
        sample["position"] = position
        return sample


def _image_size(image):
    """(width, height) without decoding pixels where possible; None when unknown (then no bucketing)."""
    from PIL import Image

    try:
        if isinstance(image, Image.Image):
            return image.size
        if isinstance(image, (str,)) or hasattr(image, "__fspath__"):
            with Image.open(image) as handle:
                return handle.size
        shape = getattr(image, "shape", None)
        if shape is not None and len(shape) >= 2:
            return int(shape[1]), int(shape[0])
    except Exception:  # unreadable files fail later with their name, in the processor
        return None
    return None


def _single_threaded_worker(worker_id: int) -> None:
    # Many preprocessing workers each running a multi-threaded torch would oversubscribe the CPU cores.
    torch.set_num_threads(1)


def score_images(model, processor, fused, ir, vis, dimensions, batch_size=8, num_workers=0, progress=False) -> dict:
    """The scoring engine behind `FuScoreForQuality.score`, the pipeline and the CLI.

    Items (image x dimension) are sorted by visual-token count so each batch pads little, decoded by `num_workers`
    workers while the model runs, and scored with logits at the answer position only. On a GPU the workers are
    threads, the patches and the copies are made by a background thread, and batch k's results are read once batch
    k+1 is queued; `benchmarks/RESULTS_speed.md` measures each of these.
    Results come back in input order: `{dimension: {"score": [...], "std": [...], "probs": [[...], ...]}}`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    items = [(index, dimension) for dimension in dimensions for index in range(len(fused))]
    sizes = [_image_size(image) for image in fused]
    tokens = [processor.num_visual_tokens(*size) if size else 0 for size in sizes]
    order = sorted(range(len(items)), key=lambda position: (tokens[items[position][0]], position))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    # On a GPU with a torchvision image processor, workers only decode (uint8) and the patches are made on the GPU.
    defer_pixels = model.device.type == "cuda" and processor.supports_device_preprocessing
    if defer_pixels:
        collate_in_worker = lambda samples: (samples, [sample["position"] for sample in samples])  # noqa: E731
    else:
        collate_in_worker = lambda samples: (processor.collate(samples), [sample["position"] for sample in samples])  # noqa: E731
    dataset = _ScoringDataset(processor, fused, ir, vis, items, defer_pixels=defer_pixels)
    if defer_pixels and num_workers > 0:
        loader = _decoded_in_threads(dataset, batches, num_workers)
    else:
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=num_workers,
            collate_fn=collate_in_worker,
            pin_memory=model.device.type == "cuda",
            worker_init_fn=_single_threaded_worker,
        )

    results = {dim: {"score": [None] * len(fused), "std": [None] * len(fused), "probs": [None] * len(fused)} for dim in dimensions}
    was_training = model.training
    model.eval()
    on_gpu = model.device.type == "cuda"

    def start_copy(output):
        # One asynchronous device-to-host copy per batch (into pinned memory), and an event that marks its end:
        # reading the values then waits for this batch alone, not for the batches queued after it.
        values = [output.score.to("cpu", non_blocking=True), output.score_std.to("cpu", non_blocking=True),
                  output.level_probs.to("cpu", non_blocking=True)]
        copied = None
        if on_gpu:
            copied = torch.cuda.Event()
            copied.record()
        return values, copied

    def store(copy, positions):
        values, copied = copy
        if copied is not None:
            copied.synchronize()
        scores, stds, probs = (value.tolist() for value in values)
        for row, position in enumerate(positions):
            index, dimension = items[position]
            results[dimension]["score"][index] = scores[row]
            results[dimension]["std"][index] = stds[row]
            results[dimension]["probs"][index] = probs[row]

    def prepare(item):
        batch, positions = item
        if defer_pixels:
            batch = processor.collate(batch, device=model.device)
        # The positions are computed here, on the CPU, rather than inside the forward pass on the GPU.
        batch = {**batch, **model.position_inputs(batch)}
        batch = _to_device(batch, model.device)
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        return batch, positions

    # On a GPU the batches are prepared in a background thread: the forward pass blocks its thread at the base
    # model's synchronisation points, and the next batch's collation, positions and copies fill that time.
    prepared = _in_background_thread(map(prepare, loader)) if on_gpu else map(prepare, loader)
    batches_in_order = prepared
    if progress:
        from tqdm.auto import tqdm

        batches_in_order = tqdm(prepared, total=len(batches), desc="Scoring", unit="batch")
    pending = None
    try:
        for batch, positions in batches_in_order:
            copy = start_copy(model(**batch))
            # Read the previous batch's results only now, so the CPU is not waiting while the GPU runs this one.
            if pending is not None:
                store(*pending)
            pending = (copy, positions)
        if pending is not None:
            store(*pending)
    finally:
        if hasattr(prepared, "close"):
            prepared.close()
        model.train(was_training)
    return results


def _to_device(value, device):
    """Moves the tensors of a batch (nested mappings included, a `BatchFeature` too) to `device`; to a GPU from pinned
    memory, asynchronously."""
    if isinstance(value, Mapping):
        return {key: _to_device(item, device) for key, item in value.items()}
    if not torch.is_tensor(value):
        return value
    if device.type == "cuda" and value.device.type == "cpu":
        value = value.pin_memory()
    return value.to(device, non_blocking=True)


def _decoded_in_threads(dataset, batches, num_workers: int, prefetch_batches: int = 2):
    """`(samples, positions)` per batch, the samples decoded by a pool of `num_workers` threads, in order.

    PIL decodes and torch copies without holding the GIL, so threads decode in parallel; unlike DataLoader worker
    processes they start instantly (forking a process that holds a CUDA context is slow) and share memory with the
    GPU thread (no shared-memory copies). Up to `prefetch_batches` batches are in flight.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="fuscore-decode")
    upcoming = iter(batches)
    in_flight = deque()
    try:
        for batch in itertools.islice(upcoming, prefetch_batches):
            in_flight.append([pool.submit(dataset.__getitem__, position) for position in batch])
        while in_flight:
            samples = [future.result() for future in in_flight.popleft()]
            batch = next(upcoming, None)
            if batch is not None:
                in_flight.append([pool.submit(dataset.__getitem__, position) for position in batch])
            yield samples, [sample["position"] for sample in samples]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _in_background_thread(iterable, depth: int = 2):
    """Iterates `iterable` in a daemon thread, up to `depth` items ahead; its exceptions re-raise here, unchanged.

    Closing the generator (or leaving a loop over it early) stops the thread at its next item.
    """
    import queue
    import threading

    items = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for entry in iterable:
                if not put((entry, None)):
                    return
            put((done, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consuming thread, which re-raises it
            put((None, error))

    thread = threading.Thread(target=produce, name="fuscore-prepare", daemon=True)
    thread.start()
    try:
        while True:
            entry, error = items.get()
            if error is not None:
                raise error
            if entry is done:
                return
            yield entry
    finally:
        stop.set()
        thread.join(timeout=5)


FuScoreConfig.register_for_auto_class()
FuScoreForQuality.register_for_auto_class("AutoModel")
FuScoreProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["FuScoreConfig", "FuScoreForQuality", "FuScoreOutput", "FuScorePreTrainedModel", "resolve_level_token_ids"]
