# Copyright 2026 The FuScore authors. Apache-2.0.
"""FuScore: quality assessment of infrared-visible fused images with a Qwen-VL model.

This file is Hub remote code (`AutoModel.from_pretrained(..., trust_remote_code=True)`): it imports only the
standard library, torch, transformers and its siblings `configuration_fuscore.py` (the configuration and the shared
facts), `processing_fuscore.py` (the processor), `scoring_fuscore.py` (the scoring engine behind `score`) and
`acceleration_fuscore.py` (the speed machinery: packed vision attention, patch matmul, regional compilation, float8,
activation checkpointing policies and budgets), `comparison_fuscore.py` (pairwise comparison, behind `compare`) and
`attribution_fuscore.py` (saliency, behind `explain`).

A Qwen vision-language model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE, Qwen3.5/3.6 or Qwen3.5/3.6-MoE:
`configuration_fuscore.BASE_FAMILIES`) reads a fused image and a rating prompt that ends in an answer
prefix ("The overall quality of the fused image is"). At that answer position the LM head rows of the five level
words (" excellent", " good", " fair", " poor", " bad" -> 5..1) give five logits; their softmax `p` is the level
distribution, the score is `s = sum_l p_l v_l` in [1, 5] and the uncertainty is `sqrt(sum_l p_l (v_l - s)^2)`.

In a checkout (or an installed FuScore), `FuScoreForQuality.from_pretrained(folder)` loads a saved folder with these
classes and never runs code from the folder; importing this module also registers them with the auto classes, so
`AutoModel.from_pretrained(folder)` does the same. `AutoModel.from_pretrained(folder, trust_remote_code=True)` runs
the folder's own copy of these files instead.
"""

import functools
import inspect
import threading
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


try:  # Hub remote code: the sibling files are part of the same dynamic module package.
    from .configuration_fuscore import (
        DEFAULT_LEVEL_VALUES, DEFAULT_LEVEL_WORDS, DEFAULT_PROMPTS, DIMENSIONS, SUB_DIMENSIONS,
        SUPPORTED_BASE_MODEL_TYPES, FuScoreConfig, chat_format, default_prompts, resolve_dimensions,
        resolve_level_token_ids, check_level_token_ids,
    )
except ImportError:  # A checkout or an installed FuScore: the siblings are top-level modules.
    from configuration_fuscore import (
        DEFAULT_LEVEL_VALUES, DEFAULT_LEVEL_WORDS, DEFAULT_PROMPTS, DIMENSIONS, SUB_DIMENSIONS,
        SUPPORTED_BASE_MODEL_TYPES, FuScoreConfig, chat_format, default_prompts, resolve_dimensions,
        resolve_level_token_ids, check_level_token_ids,
    )
try:
    from .acceleration_fuscore import (
        CHECKPOINTING_POLICIES, DECODER_ATTENTION, PACKED_VISION_ATTENTION, PatchConv3d, check_block_checkpointing,
        check_checkpointing_settings, compile_blocks, decoder_attention_mask, full_weight, memory_budget_backend,
        packed_vision_attention, prepare_base_model, prepare_decoder_attention, prepare_vision_tower, quantize_fp8,
        set_block_checkpointing, vision_tower_inputs, check_image_tokens,
        image_tokens_checked as image_tokens_checked_context,
    )
except ImportError:
    from acceleration_fuscore import (
        CHECKPOINTING_POLICIES, DECODER_ATTENTION, PACKED_VISION_ATTENTION, PatchConv3d, check_block_checkpointing,
        check_checkpointing_settings, compile_blocks, decoder_attention_mask, full_weight, memory_budget_backend,
        packed_vision_attention, prepare_base_model, prepare_decoder_attention, prepare_vision_tower, quantize_fp8,
        set_block_checkpointing, vision_tower_inputs, check_image_tokens,
        image_tokens_checked as image_tokens_checked_context,
    )
try:
    from .processing_fuscore import FuScoreProcessor
except ImportError:
    from processing_fuscore import FuScoreProcessor
try:
    from .scoring_fuscore import ARTIFACT_MAP, score_images, upsample_artifact_map
except ImportError:
    from scoring_fuscore import ARTIFACT_MAP, score_images, upsample_artifact_map
try:
    from .comparison_fuscore import PairwiseOutcome, compare_images
except ImportError:
    from comparison_fuscore import PairwiseOutcome, compare_images
try:
    from .attribution_fuscore import saliency_maps
except ImportError:
    from attribution_fuscore import saliency_maps


def takes_encoder_outputs(base_model) -> bool:
    """Whether the Qwen-VL base model's `forward` takes precomputed vision features as `mm_encoder_outputs`
    (transformers 5.18 and later). Read from the signature, not from a version number."""
    return _forward_takes_encoder_outputs(type(base_model))


@functools.lru_cache(maxsize=None)
def _forward_takes_encoder_outputs(base_model_class) -> bool:
    return "mm_encoder_outputs" in inspect.signature(base_model_class.forward).parameters


def _answer_hidden_state(hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The last hidden state at each row's answer position, its last real token (left or right padding)."""
    batch_size, sequence_length = hidden_states.shape[:2]
    if attention_mask is None:
        answer_positions = torch.full((batch_size,), sequence_length - 1, device=hidden_states.device)
    else:
        answer_positions = sequence_length - 1 - attention_mask.flip(-1).argmax(-1)
    rows = torch.arange(batch_size, device=hidden_states.device)
    return hidden_states[rows, answer_positions.to(hidden_states.device)]


def fused_image_tokens(input_ids: torch.LongTensor, image_grid_thw: torch.LongTensor, image_token_id: int,
                       merge_size: int) -> tuple:
    """Where each row's fused image is among a batch's tokens, and its merged-patch grid.

    Every FuScore prompt writes the fused image first (`FuScoreProcessor.build_prompt`: the images in model order,
    fused, infrared, visible, as `prepare_images` returns them), each image a contiguous run of image tokens between
    its vision start and end tokens; so the fused image of a row is its first run of image tokens, and its grid the
    row's first entry of `image_grid_thw` (one entry per image, rows in batch order). Pads are never image tokens.

    Returns:
        `(mask, grids)`: bool `(batch_size, sequence_length)`, true at the fused image's visual tokens (in a row,
        left to right: the merged patches in row-major grid order, as the vision tower's merger emits them), and long
        `(batch_size, 2)`, the `(h, w)` merged-patch grid of each row's fused image (`image_grid_thw`'s h and w
        divided by the spatial merge size).
    """
    is_image = input_ids == image_token_id
    run_starts = is_image & ~torch.cat([is_image.new_zeros(is_image.shape[0], 1), is_image[:, :-1]], dim=1)
    mask = is_image & (run_starts.cumsum(-1) == 1)
    images_per_row = run_starts.sum(-1)
    first_image = images_per_row.cumsum(0) - images_per_row
    grids = image_grid_thw.to(first_image.device)[first_image][:, 1:] // merge_size
    return mask, grids


class FuScoreArtifactHead(nn.Module):
    """The artifact map head: one artifact logit per visual token of the fused image (DESIGN.md section 10).

    A two-layer MLP (`dense`: hidden -> min(hidden, 512), GELU, `out`: -> 1) applied to each token alone: about
    2.1 M parameters for a 4096-wide decoder. It reads the language model's final hidden states (after the final
    norm) at the fused image's visual tokens. Those states come from the whole vision tower (full attention within
    the image, so every patch has seen the whole fused image) and from every decoder layer, attending causally to the
    prompt's opening (system turn and user tag) and to the image's earlier tokens; they are the model's own reading
    of the image, shaped by the rating it was trained for, one per merged patch, on the fused image's grid. Causal
    attention means they have not read the question nor, in `fused_ir_vis` mode, the sources (both come after the
    fused image): the map is the same whichever dimension is asked (up to rounding) and depends on the fused image
    alone. The fused image's tokens are still the ones to read: they are the only ones on the fused image's grid
    that describe the fused image, and the rating path is untouched (no extra forward, no change to the prompt).
    """

    def __init__(self, hidden_size: int, device=None, dtype=None):
        super().__init__()
        width = min(hidden_size, 512)
        self.dense = nn.Linear(hidden_size, width, device=device, dtype=dtype)
        self.out = nn.Linear(width, 1, device=device, dtype=dtype)
        self.dense._fuscore_head = self.out._fuscore_head = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(..., hidden_size)` -> `(...)` logits."""
        return self.out(F.gelu(self.dense(hidden_states))).squeeze(-1)


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
        artifact_probs (`torch.FloatTensor` of shape `(num_patches,)`, *optional*):
            Artifact probability (float32 sigmoid of the artifact map head) of each merged patch of each row's fused
            image: the rows concatenated in batch order, each row's patches in row-major order of its grid, the
            order `fuscore.objectives.maps.map_targets` flattens the pooled target maps in. Only when the model has
            the head (`config.artifact_map`) and images are given.
        artifact_grids (`torch.LongTensor` of shape `(batch_size, 2)`, *optional*):
            `(h, w)` merged-patch grid of each row's fused image (`image_grid_thw`'s h and w divided by the spatial
            merge size); row `b` owns `h_b * w_b` consecutive entries of `artifact_probs`. With `artifact_probs`.
    """

    level_logits: Optional[torch.FloatTensor] = None
    level_probs: Optional[torch.FloatTensor] = None
    score: Optional[torch.FloatTensor] = None
    score_std: Optional[torch.FloatTensor] = None
    vocab_logits: Optional[torch.FloatTensor] = None
    regression: Optional[torch.FloatTensor] = None
    answer_hidden_state: Optional[torch.FloatTensor] = None
    artifact_probs: Optional[torch.FloatTensor] = None
    artifact_grids: Optional[torch.LongTensor] = None


class FuScorePreTrainedModel(PreTrainedModel):
    config_class = FuScoreConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    # No `_no_split_modules` of our own: `post_init` collects the wrapped Qwen-VL model's (its decoder layer and vision
    # block). Listing every family's here would name classes absent from the model, and FSDP's transformer
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
        # A live model's vision config may hold the packed attention (`prepare_vision_tower` sets it on first use);
        # a model built again from that config (a weightless copy, FSDP's plain copy) starts from sdpa, which its own
        # first use packs again. transformers would take the registered name, which contains "flash", for a
        # flash-attention kernel to import and fail.
        vision_config = getattr(config.base_config, "vision_config", None)
        if getattr(vision_config, "_attn_implementation", None) == PACKED_VISION_ATTENTION:
            vision_config._attn_implementation = "sdpa"
        if getattr(text_config, "_attn_implementation", None) == DECODER_ATTENTION:  # `prepare_decoder_attention`
            text_config._attn_implementation = "sdpa"
        self.model = AutoModel.from_config(config.base_config)
        self.lm_head = nn.Linear(text_config.hidden_size, text_config.vocab_size, bias=False)
        self.regression_head = None
        if config.regression_head:
            self.regression_head = nn.Linear(text_config.hidden_size, 1)
            self.regression_head._fuscore_head = True
        self.artifact_head = FuScoreArtifactHead(text_config.hidden_size) if config.artifact_map else None
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
        position_ids: Optional[torch.LongTensor] = None,
        vision_inputs: Optional[dict] = None,
        right_padded: bool = False,
        image_tokens_checked: bool = False,
        return_vocab_logits: bool = False,
        return_answer_hidden_state: bool = False,
        return_artifact_map: bool = True,
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
            position_ids (`torch.LongTensor` of shape `(3, batch_size, sequence_length)`, *optional*): the language
                model's multimodal RoPE ids, precomputed by `rope_position_ids`; computed by the base model otherwise.
            vision_inputs (`dict`, *optional*): the vision tower's position and segment inputs, precomputed by
                `vision_tower_inputs`; the tower computes them itself when they are not given.
            image_tokens_checked (`bool`): the batch's image tokens were counted against `image_grid_thw` on the host
                (`position_inputs` does, and says so): the base model's own count, which waits for the GPU, is left
                out. With `vision_inputs` given, `image_grid_thw` may stay on the CPU (the scoring engine keeps it
                there), where the base model reads it without waiting for the GPU.
            right_padded (`bool`): the batch is right-padded (as `FuScoreProcessor.collate` pads) and `position_ids`
                are given: the decoder then runs without the padding mask, plain causal attention. A real token never
                attends to the pads after it, and only the answer position is read, so the outputs are the masked
                ones up to rounding; every batch takes one attention path (one compiled variant of the decoder
                layers, and flash attention where a mask would rule it out). The scoring engine sets it on a GPU.
            return_vocab_logits (`bool`): also return full-vocabulary logits at the answer position (DeQA-style loss).
            return_answer_hidden_state (`bool`): also return the answer-position hidden state.

            return_artifact_map (`bool`): with the artifact map head (`config.artifact_map`), also return
                `artifact_probs` and `artifact_grids` (see `FuScoreOutput`), read from the same forward pass's final
                hidden states. Selecting the fused image's tokens waits for the GPU (their count is data), so the
                scoring engine passes `False` unless maps are asked for, keeping its batches overlapped.
        """
        self._prepare_attention()
        base_inputs = dict(input_ids=input_ids, attention_mask=decoder_attention_mask(attention_mask, right_padded, position_ids),
                           image_grid_thw=image_grid_thw, position_ids=position_ids)
        if mm_token_type_ids is not None:
            base_inputs["mm_token_type_ids"] = mm_token_type_ids
        if pixel_values is not None:
            base_inputs.update(self._image_inputs(pixel_values, image_grid_thw, vision_inputs, **kwargs))
        with image_tokens_checked_context(image_tokens_checked):
            hidden_states = self.model(**base_inputs, use_cache=False, **kwargs).last_hidden_state
        answer_hidden = _answer_hidden_state(hidden_states, attention_mask)  # [batch, hidden]

        head_weight = full_weight(self.lm_head.weight)  # gathered under FSDP2
        level_token_ids, values = self.level_tensors(head_weight.device)
        # Under mixed-precision sharding the gathered weight can be float32 while activations are bf16.
        level_logits = F.linear(answer_hidden, head_weight[level_token_ids].to(answer_hidden.dtype)).float()
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
            **(self._artifact_outputs(hidden_states, input_ids, image_grid_thw) if return_artifact_map else {}),
        )

    def _artifact_outputs(self, hidden_states, input_ids, image_grid_thw) -> dict:
        """`artifact_probs` and `artifact_grids` from the final hidden states (empty without the head or images)."""
        if self.artifact_head is None or image_grid_thw is None:
            return {}
        base_config = self.config.base_config
        mask, grids = fused_image_tokens(input_ids, image_grid_thw, base_config.image_token_id,
                                         base_config.vision_config.spatial_merge_size)
        logits = self.artifact_head(hidden_states[mask.to(hidden_states.device)])
        with torch.autocast(logits.device.type, enabled=False):
            probs = logits.float().sigmoid()
        return {"artifact_probs": probs, "artifact_grids": grids}

    def _image_inputs(self, pixel_values, image_grid_thw, vision_inputs: Optional[dict], **kwargs) -> dict:
        """The base model's image inputs, with the vision tower's precomputed `vision_inputs` handed over as call
        arguments only: nothing per call is left on a shared module, and concurrent calls cannot see each other's."""
        if takes_encoder_outputs(self.model):
            # The vision tower runs here, as the base model would run it, so that its precomputed inputs reach the
            # tower alone (the language model's `position_ids` are another tensor).
            return {"mm_encoder_outputs": {"image": self.model.get_image_features(
                pixel_values, image_grid_thw, return_dict=True, **(vision_inputs or {}), **kwargs)}}
        # A base model without `mm_encoder_outputs` (transformers < 5.18) runs the tower itself. Its
        # `get_image_features` takes precomputed inputs under an `image_` prefix and strips it
        # (`accepts_precomputed_kwargs`); the language model gets them too and ignores them. Its scores are
        # bit-identical to the other path's (tested).
        return {"pixel_values": pixel_values, **{f"image_{key}": value for key, value in (vision_inputs or {}).items()}}

    def trains_vision_tower(self) -> bool:
        """Whether any vision-tower parameter requires a gradient (LoRA on the language model freezes the tower)."""
        return any(parameter.requires_grad for parameter in self.model.visual.parameters())

    # Activation-checkpointing settings, set with `configure_checkpointing` and read when checkpointing is switched on.
    uncheckpointed_layers: int = 0
    checkpointing_policy: Optional[str] = None
    activation_memory_budget: Optional[float] = None

    def configure_checkpointing(self, uncheckpointed_layers: int = 0, policy: Optional[str] = None,
                                memory_budget: Optional[float] = None) -> "FuScoreForQuality":
        """How activation checkpointing treats the decoder layers once it is switched on (by the Trainer's
        `gradient_checkpointing=True`, or `gradient_checkpointing_enable`): checked now, applied then. Call it before
        checkpointing is switched on.

        Args:
            uncheckpointed_layers: how many of the last decoder layers keep their activations instead of recomputing
                them in the backward pass: memory for speed (see `_set_gradient_checkpointing`).
            policy: `None` recomputes everything in the backward pass; a name in `CHECKPOINTING_POLICIES` saves the
                matmul outputs it names (selective activation checkpointing).
            memory_budget: b in [0, 1] (compiled decoder layers only, `compile_blocks` first) leaves the choice to
                the compiler: no torch.utils.checkpoint, AOT autograd's min-cut partitioner keeps a fraction b of
                what it would save by default (0: recompute all it can).

        Raises:
            ValueError: a count above the number of decoder layers, an unknown policy, a budget outside [0, 1], a
                budget without compiled decoder layers, or checkpointing already on.
        """
        # (transformers renames `is_gradient_checkpointing` after 5.17; the layers' own flag is the same in both.)
        if any(getattr(module, "gradient_checkpointing", False) is True for module in self.modules()):
            raise ValueError("configure_checkpointing: gradient checkpointing is already on; call it before "
                             "switching checkpointing on (it is applied then).")
        check_block_checkpointing(self.model.language_model.layers, uncheckpointed_layers, policy, memory_budget,
                                  enable=True)
        self.uncheckpointed_layers, self.checkpointing_policy = uncheckpointed_layers, policy
        self.activation_memory_budget = memory_budget
        return self

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
        policy, budget = self.checkpointing_policy, self.activation_memory_budget
        check_block_checkpointing(self.model.language_model.layers, self.uncheckpointed_layers, policy, budget, enable)
        super()._set_gradient_checkpointing(enable, *args, **kwargs)
        set_block_checkpointing(self.model, enable, self.trains_vision_tower(), self.uncheckpointed_layers, policy, budget)

    def compile_blocks(self, vision_tower: bool = True, dynamic: Optional[bool] = True, **compile_kwargs) -> "FuScoreForQuality":
        """Compiles every decoder layer and vision block with `torch.compile` (regional compilation).

        Identical blocks share one compiled graph, so this costs one compilation per block type (4 to 14 s for
        Qwen3-VL-8B on an H100) rather than one of the whole model, and the Python around the blocks (image grids,
        position ids) stays eager. It fuses each block's normalisations, rotary embeddings and activations into a
        few kernels; `benchmarks/RESULTS_speed.md` has the measured effect. Calling it again is a no-op.

        Args:
            vision_tower: compile the vision blocks too.
            dynamic: compile with symbolic sequence lengths (`torch.compile(dynamic=True)`), so that images of any
                size and batches of any length run one compiled graph per block type and variant (in scoring, one
                vision block whatever the images' lengths, and the decoder layer without a padding mask, as the
                engine runs it on a GPU, or with one): compile time is bounded and does not grow with the number of
                distinct image sizes (Qwen3-VL-8B architecture on one H200, compiled from nothing: 16.1 s for the
                vision block and the unmasked decoder layer, `benchmarks/RESULTS_speed.md`). With `dynamic=None`
                (torch's default) every new
                shape compiles again until torch marks it dynamic, and a folder of real images of many sizes reaches
                dynamo's recompile limit (the decoder layers and the vision blocks share one compiled function,
                `GradientCheckpointingLayer`'s), after which the blocks run eager; `dynamic=False` compiles each
                shape. `benchmarks/bench_mixed_sizes.py` measures the shape-stable and the one-static-shape cases.
            compile_kwargs: passed to `torch.compile` (`mode`, `fullgraph`, ...).
        """
        compile_blocks(self.model, vision_tower, dynamic=dynamic, **compile_kwargs)
        return self

    def quantize_fp8(self, vision_tower: bool = True) -> bool:
        """Opt-in float8 scoring on GPUs of compute capability 8.9 or later (Hopper: H100, H200; Ada).

        Row-wise dynamic float8 (e4m3): every weight row and every activation row gets its own scale, and the matrix
        products run as `torch._scaled_mm` at twice the bf16 rate. Qwen3-VL's and Qwen3.5's vision blocks (with
        `vision_tower`) and Qwen3-style decoder layers (Qwen3-VL) take the fused path of `float8_fuscore.py`: the
        activation quantization is done by the normalisation or activation kernel before each product, not by a pass of
        its own. Other decoder layers (Qwen2-VL, Qwen2.5-VL, Qwen3.5) get torchao's row-wise dynamic float8
        (`Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())`). The patch embedding, the mergers, the
        embeddings and the LM head stay bf16 (`forward` reads the five level rows of the LM head directly). The float8
        weights are kept beside the bf16 ones (one byte per weight more): training, gradients (`explain`) and
        generation with a cache run the bf16 blocks. The speed comes with `compile_blocks` (call either first).
        `benchmarks/bench_fp8.py` measures speed and fidelity; scores differ from the bf16 ones by more than bf16
        rounding, so compare rankings, not digits.

        On the CPU, on an older GPU, with weights that are not bfloat16, or for layers torchao would take without
        torchao installed (tested with 0.17), the model keeps its bf16 path and a warning says why. Calling it again
        is a no-op (or adds the vision blocks).

        To load a checkpoint directly in float8, transformers' own route quantizes the decoder's linear layers with
        torchao (unfused): `from_pretrained(folder, dtype=torch.bfloat16, device_map="cuda",
        quantization_config=TorchAoConfig(Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
        modules_to_not_convert=["lm_head", "model.visual"]))`. This method is for a model already in memory.

        Args:
            vision_tower: quantize the vision blocks too.
        Returns:
            `True` when the decoder computes in float8 (from this call or an earlier one), `False` when it keeps bf16.
        """
        return quantize_fp8(self.model, vision_tower=vision_tower)

    def _prepare_attention(self) -> None:
        """The packed vision attention and the patch matmul on the vision tower (`prepare_vision_tower`), the
        decoder's scoring attention (`prepare_decoder_attention`), and a base model whose forward pass does not wait
        for the GPU (`prepare_base_model`)."""
        prepare_vision_tower(self.model.visual, self.config.packed_vision_attention)
        prepare_decoder_attention(self.model.language_model)
        prepare_base_model(self.model)

    def vision_tower_inputs(self, image_grid_thw: torch.LongTensor) -> dict:
        """The vision tower's rotary position ids, attention segments and position-embedding interpolation for a
        batch's `image_grid_thw`, computed where the grid is; pass them to `forward` as `vision_inputs`.

        The tower would compute them inside `forward` from the grid on the GPU: a Python loop over the images and
        several synchronisations, during which the GPU waits. The scoring engine calls this on the CPU copy of the
        grid while the GPU is still busy with the previous batch. The tower's own helpers
        (`transformers.vision_utils`) do the work with the tower's own settings, so the values are exactly the ones
        it would compute (tested for every supported family).
        """
        self._prepare_attention()  # the segment lengths it needs depend on the attention implementation
        return vision_tower_inputs(self.model.visual, image_grid_thw)

    def position_inputs(self, batch) -> dict:
        """`position_ids` (`rope_position_ids`) and `vision_inputs` (`vision_tower_inputs`) of a collated batch, to be
        passed to `forward` with it. They need the model's configuration only, so a weightless copy of the model on
        the meta device computes them too (the trainer's collator does, in its data-loading workers).

        Where the batch's token ids and grid are on the CPU, its image tokens are counted against the grid here
        (`check_image_tokens`, the base model's ValueError) and `image_tokens_checked` is returned too: `forward` then
        leaves out the base model's own count, which waits for the GPU."""
        inputs = {}
        input_ids, grid = batch.get("input_ids"), batch["image_grid_thw"]
        if torch.is_tensor(input_ids) and input_ids.device.type == "cpu" and grid.device.type == "cpu":
            base_config = self.config.base_config
            check_image_tokens(input_ids, grid, base_config.image_token_id, base_config.vision_config.spatial_merge_size)
            inputs["image_tokens_checked"] = True
        inputs["vision_inputs"] = self.vision_tower_inputs(grid)
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
        """The processor this model was built or saved with.

        A loaded model reads it, on first use, from the folder or repo it came from, with this file's own
        `FuScoreProcessor` class: no code from that folder runs. (A model that was itself loaded with
        `trust_remote_code=True` is the folder's code already, and so is its `FuScoreProcessor`.)
        """
        if self.processor is None:
            with _PROCESSOR_LOCK:  # concurrent first calls load it once
                if self.processor is None:
                    source = getattr(self.config, "_name_or_path", None)
                    if not source:
                        raise ValueError("This model has no processor attached; pass processor= or load the model "
                                         "with from_pretrained from a folder that holds one.")
                    # With the config at hand the tokenizer loader needs not read config.json (whose FuScore type
                    # the generic config class would warn about).
                    processor = FuScoreProcessor.from_pretrained(source, trust_remote_code=False, config=self.config)
                    check_level_token_ids(self.config, getattr(processor, "tokenizer", None))  # config.json edited alone
                    self.processor = processor
        return self.processor

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
        compile: Union[bool, str] = False,
        fp8: bool = False,
        return_maps: bool = False,
    ):
        """Scores fused images (with `scoring_fuscore.score_images`, the scoring engine).

        Args:
            fused: one image or a list (paths, encoded bytes, PIL images or HxW[xC] arrays).
            ir, vis: the matching infrared and visible sources (needed when the processor's `input_mode` is
                `"fused_ir_vis"`; a fused-only model ignores them, with a warning).
            dimensions: `"overall"`, a sub-dimension name, several names, or `"all"`.
            batch_size: items (image x dimension) per forward pass; scores do not depend on it beyond rounding.
            num_workers: workers that decode images while the model runs: threads on a GPU (the patches are then
                made on the GPU), DataLoader processes on the CPU.
            return_details: return, per image, a dict `{dimension: {"score", "std", "probs"}}` instead of floats.
            progress: show a progress bar.
            compile: `True`: first compile the decoder layers and vision blocks (`compile_blocks`, shape-stable:
                one compilation per block type whatever the image sizes, about 16 s once per process for Qwen3-VL-8B
                on an H200); scores then differ from the eager ones at bf16 rounding level. `"auto"`: compile only
                where it pays for this job (`scoring_fuscore.compile_pays`: on a GPU, from about 1.4 million visual
                tokens for an 8B decoder, 3,000 images of the VIFB/MSRS/M3FD/LLVIP mix; measured in
                `benchmarks/RESULTS_speed.md`), else score eagerly.
            fp8: first quantize the decoder's linear layers to float8 (`quantize_fp8`; GPUs of compute capability
                8.9 or later, with torchao; elsewhere a warning and the bf16 path). Pays with `compile=True`.
            return_maps: also return each image's artifact map (models with the artifact map head only,
                `config.artifact_map`; any other raises a ValueError that points at `explain`): float32 numpy
                `(height, width)` at the image's own size, in [0, 1], the probability that a pixel belongs to an
                artifact (the head's per-patch probabilities, upsampled bilinearly: `upsample_artifact_map`). The
                map is the same for every dimension (the fused image's tokens precede the question).

        Several threads may score with one model at once: each call keeps its state to itself, and the scores are
        the ones a serial call gives.

        Returns:
            For one image and one dimension a float; for a list of images and one dimension a list of floats; for
            several dimensions a dict mapping each dimension to that. With `return_details`, a list of dicts.
            With `return_maps`, per image (a dict for one image, a list of dicts for a list) the dict
            `{dimension: score, ..., "artifact_map": map}`, or `{dimension: {"score", "std", "probs"}, ...,
            "artifact_map": map}` with `return_details` too.
        """
        single = not isinstance(fused, (list, tuple))
        fused_list = [fused] if single else list(fused)
        processor = processor or self.get_processor()
        dimension_list = processor.resolve_dimensions(dimensions)
        if fp8:
            self.quantize_fp8()
        results = score_images(self, processor, fused_list, ir, vis, dimension_list, batch_size=batch_size,
                               num_workers=num_workers, progress=progress, compile=compile, return_maps=return_maps)
        if return_maps:
            per_image = [
                {**{dim: ({"score": results[dim]["score"][i], "std": results[dim]["std"][i],
                           "probs": results[dim]["probs"][i]} if return_details else results[dim]["score"][i])
                    for dim in dimension_list},
                 ARTIFACT_MAP: upsample_artifact_map(**results[ARTIFACT_MAP][i])}
                for i in range(len(fused_list))
            ]
            return per_image[0] if single else per_image
        if return_details:
            details = [
                {dim: {"score": results[dim]["score"][i], "std": results[dim]["std"][i], "probs": results[dim]["probs"][i]}
                 for dim in dimension_list}
                for i in range(len(fused_list))
            ]
            return details[0] if single else details
        by_dimension = {dim: (results[dim]["score"][0] if single else results[dim]["score"]) for dim in dimension_list}
        if len(dimension_list) == 1 and not (isinstance(dimensions, str) and dimensions == "all"):
            return by_dimension[dimension_list[0]]
        return by_dimension

    def compare(
        self,
        a,
        b,
        ir=None,
        vis=None,
        dimension: str = "overall",
        tie_band: float = 0.0,
        batch_size: int = 8,
        processor: Optional[FuScoreProcessor] = None,
        ir_b=None,
        vis_b=None,
        num_workers: int = 0,
        progress: bool = False,
    ) -> PairwiseOutcome:
        """Probability that fused image `a` is better than `b`, from the two predicted level distributions under
        FuScore's Thurstone model (DESIGN.md section 11; `comparison_fuscore.compare_images`):

            P(a better than b) = Phi((s_a - s_b) / sqrt(sd_a^2 + sd_b^2)),

        `s` and `sd` being each image's predicted score and spread. An image against itself gives 0.5, and
        `P(a, b) + P(b, a) = 1`. With `tie_band = t > 0`, a difference of quality within `t` is a tie: the three
        outcomes' probabilities sum to 1. Every distinct image is scored once (`score`'s engine).

        Args:
            a, b: one fused image each, or two lists of the same length (pair `i` is `a[i]` against `b[i]`).
            ir, vis: the sources (for `input_mode="fused_ir_vis"`): of both images, as for two fusion methods' results
                on one scene; one image for every pair or one per pair. `ir_b`, `vis_b`: `b`'s own, where it comes
                from other sources.
            dimension: the rating dimension compared.
            tie_band: half-width of the band of score differences called a tie, on the score scale (0: no ties).
            batch_size, processor, num_workers, progress: as in `score`.

        Returns:
            `PairwiseOutcome(a_better, tie, b_better)`, a named tuple: floats for one pair, lists of floats for lists.
            `model.compare(a, b).a_better` is P(a better than b); `tie` is 0 without a tie band.
        """
        return compare_images(self, processor or self.get_processor(), a, b, ir=ir, vis=vis, ir_b=ir_b, vis_b=vis_b,
                              dimension=dimension, tie_band=tie_band, batch_size=batch_size, num_workers=num_workers,
                              progress=progress)

    def explain(
        self,
        image,
        ir=None,
        vis=None,
        dimension: str = "overall",
        samples: int = 16,
        noise: float = 0.1,
        blur: Optional[float] = None,
        seed: int = 0,
        batch_size: int = 8,
        processor: Optional[FuScoreProcessor] = None,
    ):
        """A saliency map of the expected score with respect to the fused image's pixels: where the score comes
        from. **Attribution, not artifact detection**: bright pixels are those the score is most sensitive to, for
        better or worse; artifact maps come from a model trained with them. Works for any model, with or without an
        artifact map head.

        SmoothGrad (`attribution_fuscore`, whose docstring gives every step): the gradient of the score through the
        differentiable tensor path (`FuScoreProcessor.tensor_inputs`, as `fuscore.reward`), absolute value summed
        over the colour channels, averaged over `samples` copies with Gaussian noise of standard deviation `noise`,
        blurred by a Gaussian of standard deviation `blur` pixels (None: half a model patch), divided by its 99th
        percentile and capped at 1. Each image is explained on its own (its map does not depend on the others in a
        list), with noise seeded by `seed`. The model's train/eval mode, `requires_grad` flags and `.grad` are left
        as they were.

        Args:
            image: one fused image or a list (paths, encoded bytes, PIL images or HxW[xC] arrays).
            ir, vis: the matching sources (for `input_mode="fused_ir_vis"`): one each for one image, lists for lists.
            dimension: the rating dimension whose score is explained.
            samples, noise, blur, seed: the smoothing (see above); `samples=1, noise=0, blur=0` is the raw gradient.
            batch_size: noisy copies per forward and backward pass.

        Returns:
            A float32 numpy array `(H, W)` in [0, 1] of the image's own size (EXIF orientation applied, as `score`
            reads it); a list of them for a list of images.
        """
        single = not isinstance(image, (list, tuple))
        images = [image] if single else list(image)
        maps = saliency_maps(self, processor or self.get_processor(), images,
                             None if ir is None else ([ir] if single else ir),
                             None if vis is None else ([vis] if single else vis), dimension=dimension,
                             samples=samples, noise=noise, blur=blur, seed=seed, batch_size=batch_size)
        maps = [saliency.numpy() for saliency in maps]
        return maps[0] if single else maps

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
        artifact_map: bool = False,
        min_pixels: Optional[int] = None,
        max_pixels: Optional[int] = None,
        **from_pretrained_kwargs,
    ) -> "FuScoreForQuality":
        """Builds a FuScore model from a Qwen-VL base checkpoint (a Hub id such as `Qwen/Qwen3-VL-8B-Instruct` or a
        local folder), with its weights, tokenizer and image processor. `artifact_map=True` adds a freshly
        initialised artifact map head (`add_artifact_head`). `from_pretrained_kwargs` (dtype, attn_implementation,
        device_map, ...) go to the base model's `from_pretrained`."""
        from transformers import AutoModelForImageTextToText, AutoTokenizer
        # From its own module: transformers 5.17 exports a placeholder that demands torchvision at the top level,
        # although the PIL backend it falls back to needs none.
        from transformers.models.auto.image_processing_auto import AutoImageProcessor

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
            regression_head=regression_head,
            artifact_map=artifact_map,
        )
        return cls.from_base_model(base, config, tokenizer, image_processor, prompts=prompts, input_mode=input_mode)

    @classmethod
    def from_base_model(cls, base_model, config: FuScoreConfig, tokenizer, image_processor, prompts: Optional[dict] = None,
                        input_mode: str = "fused") -> "FuScoreForQuality":
        """Wraps an instantiated Qwen-VL `...ForConditionalGeneration` (weights shared, not copied), with a processor
        of `prompts` (default: the built-in ones for `input_mode`), `input_mode` and the base family's chat format."""
        config.level_token_ids = resolve_level_token_ids(tokenizer, config.level_words)
        with torch.device("meta"):
            model = cls(config)
        model.model = base_model.model
        model.lm_head = base_model.lm_head
        if model.regression_head is not None:
            model.add_regression_head()
        if model.artifact_head is not None:
            model.add_artifact_head()
        model.processor = FuScoreProcessor(image_processor, tokenizer, prompts=prompts, input_mode=input_mode,
                                           chat_format=chat_format(config.base_config.model_type))
        model.config._name_or_path = getattr(base_model.config, "_name_or_path", "")
        return model

    def add_regression_head(self):
        """A fresh linear regression head on the answer-position hidden state (the `scalar` baseline objective)."""
        hidden_size = self.config.base_config.get_text_config().hidden_size
        self.regression_head = nn.Linear(hidden_size, 1, device=self.lm_head.weight.device, dtype=self.lm_head.weight.dtype)
        self.regression_head._fuscore_head = True
        self._init_weights(self.regression_head)
        self.config.regression_head = True

    def add_artifact_head(self):
        """A freshly initialised artifact map head (`FuScoreArtifactHead`), replacing any there is, and
        `config.artifact_map = True`, so that `save_pretrained` saves it and `from_pretrained` builds it again.

        The trainer calls it to train maps on a model that has none; the head is on the LM head's device and dtype.
        From then on `forward` returns `artifact_probs` and `artifact_grids`, and `score(..., return_maps=True)`
        serves the maps. The contract for a map loss: `artifact_probs` (float32 `(N,)`) splits into rows by
        `artifact_grids.prod(-1)`, each row's entries in row-major order of its `(h, w)` grid, exactly as
        `fuscore.objectives.maps.map_targets(maps, artifact_grids.tolist())` lays out its targets. Under LoRA the
        head is an ordinary module: list it in peft's `modules_to_save` (`["artifact_head"]`) so the adapter trains
        and saves it.
        """
        hidden_size = self.config.base_config.get_text_config().hidden_size
        self.artifact_head = FuScoreArtifactHead(hidden_size, device=self.lm_head.weight.device,
                                                 dtype=self.lm_head.weight.dtype)
        for module in self.artifact_head.modules():
            if isinstance(module, nn.Linear):
                self._init_weights(module)
        self.config.artifact_map = True

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves everything a load needs: the weights (safetensors), the config with the pipeline's registration
        (`custom_pipelines`), the processor (its input mode and prompts) and the remote-code files.

        The code files (this file and the siblings it imports, `pipeline_fuscore.py` included) and the config's
        `auto_map` are written by transformers, because the classes are registered for their auto classes
        (`register_for_auto_class`): any folder saved this way loads with `AutoModel.from_pretrained(folder,
        trust_remote_code=True)` and opens with `pipeline(model=folder, trust_remote_code=True)` anywhere. A loaded
        model saves the processor it was loaded with (`get_processor`). To write a folder whole or not at all, save
        into a temporary folder and rename it (`fuscore.hub`).
        """
        try:  # the import also makes the pipeline's file a sibling that transformers copies with this one
            from .pipeline_fuscore import CUSTOM_PIPELINES
        except ImportError:
            from pipeline_fuscore import CUSTOM_PIPELINES
        self.config.custom_pipelines = {task: dict(entry) for task, entry in CUSTOM_PIPELINES.items()}
        processor = self.processor
        if processor is None:
            try:
                processor = self.get_processor()
            except (OSError, ValueError) as error:
                warnings.warn(f"{save_directory}: this model has no processor attached and none could be loaded "
                              f"({error}); the folder holds no processor and cannot score until one is saved into it "
                              "(set model.processor before saving).", stacklevel=2)
        super().save_pretrained(save_directory, *args, **kwargs)
        if processor is not None and kwargs.get("is_main_process", True):
            processor.save_pretrained(save_directory)


_PROCESSOR_LOCK = threading.Lock()

FuScoreForQuality.register_for_auto_class("AutoModel")


def register_auto_classes() -> None:
    """Makes `AutoConfig`, `AutoModel` and `AutoProcessor` resolve `model_type: fuscore` to these classes in this
    process, so `AutoModel.from_pretrained(folder)` loads any FuScore folder (the shipped demo model, which holds no
    code, included) without running code from it. `trust_remote_code=True` still runs a folder's own code files."""
    from transformers import AutoConfig, AutoProcessor

    AutoConfig.register(FuScoreConfig.model_type, FuScoreConfig, exist_ok=True)
    AutoModel.register(FuScoreConfig, FuScoreForQuality, exist_ok=True)
    AutoProcessor.register(FuScoreConfig, FuScoreProcessor, exist_ok=True)


if not __package__:
    # Imported from a checkout or an installed FuScore (a top-level module); a folder's remote code is imported as a
    # `transformers_modules` package and registers nothing.
    register_auto_classes()

# The acceleration names stay importable from here (`acceleration_fuscore` is where they live).
__all__ = [
    "CHECKPOINTING_POLICIES", "DEFAULT_LEVEL_VALUES", "DEFAULT_LEVEL_WORDS", "DEFAULT_PROMPTS", "DIMENSIONS",
    "PACKED_VISION_ATTENTION", "SUB_DIMENSIONS", "SUPPORTED_BASE_MODEL_TYPES", "FuScoreConfig", "FuScoreForQuality",
    "FuScoreArtifactHead", "FuScoreOutput", "FuScorePreTrainedModel", "FuScoreProcessor", "PatchConv3d", "check_checkpointing_settings",
    "default_prompts", "fused_image_tokens", "memory_budget_backend", "packed_vision_attention", "register_auto_classes",
    "resolve_dimensions", "resolve_level_token_ids", "score_images", "takes_encoder_outputs",
]
