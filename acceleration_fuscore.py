# Copyright 2026 The FuScore authors. Apache-2.0.
"""FuScore's acceleration machinery: what makes `FuScoreForQuality` fast, kept apart from what it computes.

This file is Hub remote code, imported by `modeling_fuscore.py` and written into every saved folder beside it; it
imports only the standard library, torch, transformers and its sibling `float8_fuscore.py` (the float8 blocks). It
holds:

- the packed vision attention (`packed_vision_attention`, one custom operator per copy of this file) and the patch
  embedding computed as the matrix product it is (`PatchConv3d`), installed on a model's vision tower by
  `prepare_vision_tower`, and the tower's inputs precomputed where the image grid is (`vision_tower_inputs`);
- attention that takes cuDNN's kernels only for shapes it meets often (`scaled_dot_product_attention`), under the
  packed vision attention and the decoder's scoring attention (`decoder_attention`, installed by
  `prepare_decoder_attention`);
- the decoder's attention mask for right-padded batches (`decoder_attention_mask`) and the FSDP gather of the LM
  head (`full_weight`);
- a base model whose forward pass does not wait for the GPU (`prepare_base_model`, `image_tokens_checked`): the
  image-token count made on the host instead, and Qwen3-VL's deepstack additions without boolean indexing;
- regional compilation (`compile_blocks`), float8 scoring (`quantize_fp8`: the fused float8 blocks of
  `float8_fuscore.py`, torchao for other decoder layers) and activation checkpointing with
  selective policies or a compiler memory budget (`CHECKPOINTING_POLICIES`, `check_checkpointing_settings`,
  `set_block_checkpointing`).

None of it changes what the model computes beyond rounding; `FuScoreForQuality` exposes each through a thin method.
"""

import contextlib
import contextvars
import copyreg
import functools
import re
import threading
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_layers import GradientCheckpointingLayer

try:
    from .float8_fuscore import convert_decoder_layer, convert_vision_block
except ImportError:  # a checkout or an installed FuScore: the siblings are top-level modules
    from float8_fuscore import convert_decoder_layer, convert_vision_block


# ---------------------------------------------------------------------------------------------------- attention
# On Hopper, torch's `scaled_dot_product_attention` picks cuDNN's kernels, the fastest there once running (one H100,
# torch 2.11: 0.13 ms for the 8B decoder's 64 x 228 tokens against flash attention's 0.33 ms; 0.72 against 0.99 ms
# for 64 vision segments of 784), but cuDNN builds an execution plan the first time it meets a shape: 35-75 ms, once
# 495 ms (`RESULTS_speed.md`, "Speed III"). A job of mixed image sizes meets a new shape almost every batch, and every
# job meets the ramp-up's pieces once. So a shape runs on the other kernels until it has been met
# `CUDNN_ATTENTION_AFTER_CALLS` times in this process (about two batches of a model's blocks), and on torch's own
# choice after that.
CUDNN_ATTENTION_AFTER_CALLS = 64
_WITHOUT_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
_shape_calls: dict = {}
# The backend switches are process-wide flags: the lock keeps one thread's switch from reaching another's call.
_shape_lock = threading.Lock()


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, is_causal: bool = False,
                                 scale: Optional[float] = None, enable_gqa: bool = False) -> torch.Tensor:
    """`F.scaled_dot_product_attention` (no mask, no dropout) that leaves cuDNN's kernels to shapes met often (see
    `CUDNN_ATTENTION_AFTER_CALLS`); the same result up to rounding. Off CUDA, the plain call."""
    def attend():
        return F.scaled_dot_product_attention(query, key, value, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)

    if not query.is_cuda:
        return attend()
    shape = (tuple(query.shape), tuple(key.shape), query.dtype, query.device.index, is_causal)
    with _shape_lock:
        if len(_shape_calls) > 4096:  # a long-lived server meeting ever new shapes: forget, do not grow
            _shape_calls.clear()
        calls = _shape_calls[shape] = _shape_calls.get(shape, 0) + 1
        if calls > CUDNN_ATTENTION_AFTER_CALLS:
            return attend()
        with sdpa_kernel(_WITHOUT_CUDNN):
            return attend()


def _attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, is_causal: bool, scale: Optional[float],
                  enable_gqa: bool) -> torch.Tensor:
    return scaled_dot_product_attention(query, key, value, is_causal, scale, enable_gqa).contiguous()


def _attention_shape(query, key, value, is_causal, scale, enable_gqa):
    return query.new_empty((*query.shape[:-1], value.shape[-1]))


# One operator per copy of this file (as `_PACKED_OP` below): under `torch.compile` the choice of kernel is made on the
# concrete shapes at run time, not fixed in the compiled graph when it is traced.
_ATTENTION_OP = "attention_" + re.sub(r"\W", "_", __name__)
if not hasattr(torch.ops.fuscore, _ATTENTION_OP):
    torch.library.custom_op(f"fuscore::{_ATTENTION_OP}", _attention_op, mutates_args=()).register_fake(_attention_shape)


DECODER_ATTENTION = "fuscore_sdpa"


def decoder_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """The decoder's attention where the scoring engine runs it: causal attention over a right-padded batch without a
    mask and without gradients goes to `scaled_dot_product_attention` as one operator; everything else (a mask, a
    cache, training) to transformers' sdpa, unchanged. Registered as `DECODER_ATTENTION`, with sdpa's masks."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if (attention_mask is None and dropout == 0.0 and causal and query.shape[2] > 1 and query.shape[2] == key.shape[2]
            and not (query.requires_grad or key.requires_grad or value.requires_grad)
            and kwargs.get("position_bias") is None and kwargs.get("softcap") is None
            and not kwargs.get("output_attentions", False)):
        output = getattr(torch.ops.fuscore, _ATTENTION_OP)(query, key, value, True, scaling,
                                                           query.shape[1] != key.shape[1])
        return output.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


AttentionInterface.register(DECODER_ATTENTION, decoder_attention)
AttentionMaskInterface.register(DECODER_ATTENTION, sdpa_mask)


def prepare_decoder_attention(language_model) -> None:
    """Once per model: `decoder_attention` in place of sdpa on the decoder (the same computation and masks)."""
    if language_model.config._attn_implementation == "sdpa":
        language_model.config._attn_implementation = DECODER_ATTENTION


# ---------------------------------------------------------------------------------------------------- vision tower
PACKED_VISION_ATTENTION = "fuscore_packed_flash_sdpa"


def packed_vision_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                            cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """Vision-tower attention over a packed batch of images in one `scaled_dot_product_attention` call.

    Under plain sdpa the Qwen-VL vision towers loop over the images of a batch in Python, one small attention call per
    image and block. Registered under a name containing "flash", this function receives the packed sequence with its
    `cu_seq_lens_q` instead (as flash-attention's varlen kernels do). When all segments have the same length, which
    the scoring engine arranges by batching images of equal visual-token count, the batch is reshaped to
    `[images, heads, length, dim]` and attended in one call. Segments of different lengths (a batch that spans two
    image sizes) go on a GPU to torch's variable-length flash attention (`torch.nn.attention.varlen.varlen_attn`, one
    kernel over the packed sequence, no padding, and no shape-dependent Python under `torch.compile`); elsewhere, or
    where that kernel is missing or does not take the inputs, to one call per segment. Without gradients and
    dropout (scoring) the three are one custom operator (`torch.library.custom_op`) that picks its kernel on the
    concrete lengths, so a compiled vision block has one graph for batches of equal and of unequal lengths instead
    of one each; training takes the same kernels as traced code.

    Args:
        query, key, value (`torch.Tensor` of shape `(1, heads, total_length, head_dim)`): the packed sequence.
        cu_seq_lens_q (`torch.IntTensor` of shape `(segments + 1,)`): segment boundaries.
        max_length_q (`int`): the longest segment.
    Returns:
        `(attn_output, None)` with `attn_output` of shape `(1, total_length, heads, head_dim)`.
    """
    if dropout == 0.0 and not (query.requires_grad or key.requires_grad or value.requires_grad):
        # Scoring: one opaque operator whatever the segment lengths, so that a compiled vision block keeps one graph
        # for batches of equal and of unequal lengths (the choice of kernel is made inside, on concrete values).
        length = -1 if max_length_q is None else max_length_q
        return getattr(torch.ops.fuscore, _PACKED_OP)(query, key, value, cu_seq_lens_q, length, scaling), None
    return _packed_attention(query, key, value, cu_seq_lens_q, max_length_q, dropout, scaling), None


def _packed_attention(query, key, value, cu_seq_lens_q, max_length_q, dropout, scaling):
    """`packed_vision_attention`'s kernels: batched sdpa for equal segments, `varlen_attn` for unequal ones on a GPU,
    one call per segment elsewhere; `[1, total_length, heads, head_dim]`."""
    _, heads, total, head_dim = query.shape
    segments = cu_seq_lens_q.numel() - 1
    if max_length_q is not None and max_length_q * segments == total:
        # Equal segments: sum == total and max * count == total imply every segment has length max.
        q, k, v = (t[0].view(heads, segments, max_length_q, head_dim).transpose(0, 1) for t in (query, key, value))
        if dropout == 0.0 and not (query.requires_grad or torch.compiler.is_compiling()):  # scoring's operator
            output = scaled_dot_product_attention(q, k, v, scale=scaling)
        else:  # training, traced into the compiled block
            output = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling)
        return output.transpose(1, 2).reshape(1, total, heads, head_dim)
    if max_length_q is not None and _takes_varlen(query, scaling):
        # Batched sdpa stays for equal lengths: on one H200 the varlen kernel for every batch cost 11% of the engine's
        # rate on uniform 448 px images (18% with the sources) (RESULTS_speed.md).
        q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # [total, heads, dim]
        return _varlen_attn(q, k, v, cu_seq_lens_q, cu_seq_lens_q, max_length_q, max_length_q).unsqueeze(0)
    return _attention_per_segment(query, key, value, cu_seq_lens_q, dropout, scaling)


def _packed_vision_attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seq_lens: torch.Tensor,
                                max_length: int, scale: Optional[float]) -> torch.Tensor:
    """`_packed_attention` without dropout, as one operator for `torch.compile` (`max_length` -1: not known)."""
    return _packed_attention(query, key, value, cu_seq_lens, None if max_length < 0 else max_length, 0.0, scale).contiguous()


def _packed_vision_attention_shape(query, key, value, cu_seq_lens, max_length, scale):
    _, heads, total, head_dim = query.shape
    return query.new_empty((1, total, heads, head_dim))


# One operator per copy of this file: `trust_remote_code` imports it again under another module name, and a reload
# would register the same name twice.
_PACKED_OP = "packed_vision_attention_" + re.sub(r"\W", "_", __name__)
if not hasattr(torch.ops.fuscore, _PACKED_OP):
    torch.library.custom_op(f"fuscore::{_PACKED_OP}", _packed_vision_attention_op, mutates_args=()).register_fake(
        _packed_vision_attention_shape)


@torch.compiler.disable
def _attention_per_segment(query, key, value, cu_seq_lens_q, dropout, scaling):
    """One `scaled_dot_product_attention` call per segment. Left to eager under `torch.compile` (a loop over a
    batch's images would otherwise compile once for every number of images)."""
    lengths = (cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).tolist()
    outputs = [
        F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling)
        for q, k, v in zip(*(torch.split(t, lengths, dim=2) for t in (query, key, value)))
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2)


try:  # torch >= 2.10: flash attention over packed variable-length segments, a custom op that torch.compile traces.
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn
except ImportError:
    _varlen_attn = None


def _takes_varlen(query: torch.Tensor, scaling) -> bool:
    """Whether `varlen_attn` runs these inputs: a CUDA tensor in half precision (flash attention's), head size up to
    256, and the default 1/sqrt(head_dim) scaling (the argument for another one is not in every torch version)."""
    head_dim = query.shape[-1]
    return (_varlen_attn is not None and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16)
            and head_dim <= 256 and (scaling is None or abs(scaling - head_dim**-0.5) < 1e-6))


AttentionInterface.register(PACKED_VISION_ATTENTION, packed_vision_attention)


class PatchConv3d(nn.Conv3d):
    """The Qwen-VL vision towers' patch embedding (`patch_embed.proj`): a `Conv3d` whose kernel and stride are one
    whole patch, applied to inputs of exactly one patch each, which is one matrix product `[patches, C*T*P*P] x
    [C*T*P*P, hidden]`. On a GPU it is computed as that product (`patch_matmul`): on one H200 (torch 2.11, bf16) cuDNN
    ran the convolution as an implicit-GEMM kernel at about 9 TFLOP/s, 10-12 ms of a 64-image batch of 448 px (2-4%
    of the scoring forward, `benchmarks/RESULTS_speed.md`). The CPU keeps the convolution (its results bit for bit,
    which `tests/test_demo_scores_pinned.py` pins). Same parameters and state-dict keys; other shapes convolve."""

    def one_patch_each(self, input: torch.Tensor) -> bool:
        return (input.dim() == 5 and tuple(input.shape[2:]) == tuple(self.kernel_size)
                and tuple(self.stride) == tuple(self.kernel_size) and self.groups == 1 and not any(self.padding)
                and tuple(self.dilation) == (1, 1, 1))

    def patch_matmul(self, input: torch.Tensor) -> torch.Tensor:
        output = F.linear(input.flatten(1), self.weight.flatten(1), self.bias)
        return output.view(*output.shape, 1, 1, 1)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.is_cuda and self.one_patch_each(input):
            return self.patch_matmul(input)
        return super().forward(input)


def prepare_vision_tower(visual, packed_attention: bool) -> None:
    """Once per model (cheap checks after that): the packed vision attention in place of sdpa's per-image loop (with
    `packed_attention`, the config's `packed_vision_attention`), and the patch embedding as a `PatchConv3d`."""
    if packed_attention and visual.config._attn_implementation == "sdpa":
        visual.config._attn_implementation = PACKED_VISION_ATTENTION
    proj = getattr(getattr(visual, "patch_embed", None), "proj", None)
    if type(proj) is nn.Conv3d:  # same parameters and state-dict keys, computed as the matmul it is
        proj.__class__ = PatchConv3d


def vision_tower_inputs(visual, image_grid_thw: torch.LongTensor) -> dict:
    """The vision tower's rotary position ids, attention segments and position-embedding interpolation for a batch's
    `image_grid_thw` (`FuScoreForQuality.vision_tower_inputs`), with the tower's own helpers and settings."""
    from transformers import vision_utils
    from transformers.utils.generic import get_max_seqlen

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


# ---------------------------------------------------------------------------------------------------- waits for the GPU
# A forward pass that reads a GPU value on the host stops the thread launching its kernels until the GPU has caught
# up: the GPU then idles while the next kernels are launched, and the scoring engine's other threads cannot use the
# time the launches would otherwise leave free. With the scoring engine's precomputed inputs (positions, vision
# inputs, the image grid on the CPU), transformers' Qwen-VL models wait in two places, both made waitless here:
# `get_placeholder_mask`'s count of image tokens against image features (it formats and reads a GPU tensor), counted
# on the host instead (`check_image_tokens`), and Qwen3-VL's deepstack additions (`_deepstack_process`: boolean
# indexing, which reads the mask's size on the host).
_IMAGE_TOKENS_CHECKED = contextvars.ContextVar("fuscore_image_tokens_checked", default=False)


@contextlib.contextmanager
def image_tokens_checked(checked: bool):
    """While `checked`, the base model's count of image tokens against image features is left out: the caller counted
    them on the host (`check_image_tokens`). Per thread and task (a context variable): concurrent calls do not mix."""
    token = _IMAGE_TOKENS_CHECKED.set(bool(checked))
    try:
        yield
    finally:
        _IMAGE_TOKENS_CHECKED.reset(token)


def check_image_tokens(input_ids: torch.Tensor, image_grid_thw: torch.Tensor, image_token_id: int,
                       merge_size: int) -> None:
    """Raises the base model's ValueError where a batch's image tokens do not match its images' grids (the count
    `get_placeholder_mask` makes on the GPU), counted on the host tensors of a collated batch."""
    tokens = int((input_ids == image_token_id).sum())
    features = int((image_grid_thw.prod(-1) // merge_size**2).sum())
    if tokens != features:
        raise ValueError(f"Image features and image tokens do not match, tokens: {tokens}, features: {features}")


class _Mixin:
    """A mixin `prepare_base_model` puts in front of a model's own class (`_mixed_class`). Pickled or deep-copied, the
    model is its own class again (a class made at run time cannot be pickled by name); it takes the mixin back when
    it next prepares for a forward pass."""

    def __reduce_ex__(self, protocol):
        constructor, arguments, *rest = super().__reduce_ex__(protocol)
        if arguments and arguments[0] is type(self):
            if constructor is copyreg.__newobj__:  # pickle insists that its class be the object's
                constructor = _new_object
            arguments = (type(self).__bases__[1], *arguments[1:])
        return (constructor, arguments, *rest)


def _new_object(cls, *arguments):
    """`copyreg.__newobj__` under a name of this file: an object of `cls` (before its state is set)."""
    return cls.__new__(cls, *arguments)


class _HostCountedPlaceholders(_Mixin):
    """Mixed into a base model's class by `prepare_base_model`: `get_placeholder_mask` without its own count of image
    tokens against features where `image_tokens_checked` says the host counted them; the same masks."""

    def get_placeholder_mask(self, input_ids, inputs_embeds, image_features=None, video_features=None):
        if _IMAGE_TOKENS_CHECKED.get():
            image_features = video_features = None  # what makes the base model count; the masks do not need it
        return super().get_placeholder_mask(input_ids, inputs_embeds, image_features=image_features,
                                            video_features=video_features)


class _WaitlessDeepstack(_Mixin):
    """Mixed into a Qwen3-VL language model's class by `prepare_base_model`: without gradients, the deepstack visual
    features added to the hidden states at the visual positions by a masked scatter instead of boolean indexing
    (which waits for the GPU to count the mask); the same sums, bit for bit (tested), the other states copied."""

    def _deepstack_process(self, hidden_states, visual_pos_masks, visual_embeds):
        if torch.is_grad_enabled():
            return super()._deepstack_process(hidden_states, visual_pos_masks, visual_embeds)
        mask = visual_pos_masks.to(hidden_states.device)[..., None]
        visual_embeds = visual_embeds.to(hidden_states.device, hidden_states.dtype)
        added = torch.zeros_like(hidden_states).masked_scatter(mask, visual_embeds)
        return torch.where(mask, hidden_states + added, hidden_states)


@functools.cache
def _mixed_class(model_class: type, mixin: type) -> type:
    """`model_class` with `mixin` first (one class per pair; same name, `isinstance` still holds)."""
    return type(model_class.__name__, (mixin, model_class), {"__module__": model_class.__module__})


def prepare_base_model(model) -> None:
    """Once per model: a Qwen-VL base `model` whose scoring forward pass does not wait for the GPU (see above)."""
    language_model = model.language_model
    if hasattr(type(model), "get_placeholder_mask") and not isinstance(model, _HostCountedPlaceholders):
        model.__class__ = _mixed_class(type(model), _HostCountedPlaceholders)
    if hasattr(type(language_model), "_deepstack_process") and not isinstance(language_model, _WaitlessDeepstack):
        language_model.__class__ = _mixed_class(type(language_model), _WaitlessDeepstack)


# ---------------------------------------------------------------------------------------------------- decoder and head
def decoder_attention_mask(attention_mask: Optional[torch.Tensor], right_padded: bool,
                           position_ids: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The mask the decoder runs with: none for a right-padded batch with precomputed `position_ids` (plain causal
    attention, one attention path and one compiled decoder-layer variant for every batch; see `forward`'s
    `right_padded`), else `attention_mask`."""
    return None if right_padded and position_ids is not None else attention_mask


def full_weight(weight: torch.Tensor) -> torch.Tensor:
    """`weight` whole: under FSDP2 the LM head stays a sharded DTensor where `forward` reads its level rows (its own
    forward, which would gather it, never runs), so it is gathered here; the gather is differentiable."""
    return weight.full_tensor() if hasattr(weight, "full_tensor") else weight


# ---------------------------------------------------------------------------------------------------- compilation
def compile_blocks(model, vision_tower: bool = True, **compile_kwargs) -> None:
    """Compiles every decoder layer (and vision block, with `vision_tower`) of a Qwen-VL base `model` in place;
    `FuScoreForQuality.compile_blocks` documents it. A block compiled before is left as it is."""
    block_lists = [model.language_model.layers] + ([model.visual.blocks] if vision_tower else [])
    for blocks in block_lists:
        for block in blocks:
            if not getattr(block, "_fuscore_compiled", False):
                block.compile(**compile_kwargs)
                block._fuscore_compiled = True


# ---------------------------------------------------------------------------------------------------- float8
def _fp8_unsupported_reason(weight: torch.Tensor) -> Optional[str]:
    """Why float8 scoring cannot run on the device and dtype of `weight` (a decoder weight), or `None` if it can."""
    if weight.device.type != "cuda":
        return (f"the model is on {weight.device.type}; float8 matmuls need an NVIDIA GPU of compute capability 8.9 or "
                "later (Hopper such as H100/H200, or Ada): move the model there first")
    capability = torch.cuda.get_device_capability(weight.device)
    if capability < (8, 9):
        return (f"{torch.cuda.get_device_name(weight.device)} has compute capability {capability[0]}.{capability[1]}; "
                "float8 matmuls need 8.9 or later (Hopper such as H100/H200, or Ada)")
    if weight.dtype != torch.bfloat16:
        return (f"the decoder weights are {weight.dtype}; row-wise float8 quantizes bfloat16 weights (use a "
                "bfloat16 checkpoint, or load the model with dtype=torch.bfloat16)")
    return None


def quantize_fp8(model: nn.Module, vision_tower: bool = True) -> bool:
    """Row-wise float8 scoring for a Qwen-VL base `model` in place (`FuScoreForQuality.quantize_fp8` documents it):
    the decoder layers, and with `vision_tower` the vision blocks, that `float8_fuscore` knows get its fused float8
    path; other decoder layers get torchao's row-wise dynamic float8 on their linear layers. `False`, with a warning
    saying why, where float8 cannot run."""
    layers = model.language_model.layers
    reason = _fp8_unsupported_reason(next(layers.parameters()))
    if reason is not None:
        warnings.warn(f"FP8 scoring is not available: {reason}. The model keeps its bf16 path.", stacklevel=3)
        return False
    others = [layer for layer in layers if not convert_decoder_layer(layer)]
    if vision_tower:
        for block in model.visual.blocks:
            convert_vision_block(block)  # a block of another kind keeps bf16
    if others and not _quantize_with_torchao(others):
        return False
    return True


def _quantize_with_torchao(layers: list) -> bool:
    """torchao's row-wise dynamic float8 on the linear layers of decoder `layers` that `float8_fuscore` does not know
    (Qwen2-VL and Qwen2.5-VL's, Qwen3.5's); `False`, with a warning, without torchao."""
    layers = [layer for layer in layers if not getattr(layer, "_fuscore_fp8", False)]
    if not layers:
        return True
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
    except Exception as error:  # not installed, or built for another torch
        warnings.warn(f"FP8 scoring is not available for {type(layers[0]).__name__}: torchao could not be imported "
                      f"({type(error).__name__}: {error}); install it with `pip install torchao` (0.17 tested). "
                      "Those layers keep their bf16 path.", stacklevel=4)
        return False
    # A row's scale is its largest |value| / 448, so an all-zero row would quantize as 0/0 = NaN: the lower bound
    # keeps padding tokens (a zero embedding) finite, which would otherwise reach every real token of their row
    # through the masked attention values; a linear layer with an all-zero weight row stays in bf16.
    # `set_inductor_config=False`: torchao would otherwise change torch's global compiler settings for every model
    # in the process (and lengthen compilation with coordinate-descent tuning).
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), activation_value_lb=1e-12,
                                                       set_inductor_config=False)
    for layer in layers:
        quantize_(layer, config, filter_fn=lambda module, name: isinstance(module, nn.Linear)
                  and not bool(module.weight.detach().abs().amax(-1).eq(0).any()))
        layer._fuscore_fp8 = True
    return True


# ---------------------------------------------------------------------------------------------------- checkpointing
def _keep_mlp_gate_up(text_config):
    """Selective-checkpointing policy: save the outputs of the MLP's gate and up projections (the frozen weights'
    matmuls, recognised by their shape: hidden size in, intermediate size out; LoRA's rank-r matmuls differ), so the
    recomputed forward skips two of the layer's largest matmuls; everything else is recomputed."""
    from torch.utils.checkpoint import CheckpointPolicy

    # A MoE language model (Qwen3.5-MoE) has no dense MLP: its shared expert's projections are the ones saved.
    intermediate = getattr(text_config, "intermediate_size", None) or getattr(text_config, "shared_expert_intermediate_size", None)
    if intermediate is None:
        raise ValueError("checkpointing_policy 'mlp' saves the outputs of a dense MLP or a shared expert; this language "
                         f"model ({text_config.model_type}) has neither.")
    hidden = text_config.hidden_size
    aten = torch.ops.aten

    def policy(ctx, op, *args, **kwargs):
        if op in (aten.mm.default, aten.addmm.default):
            left, right = args[-2], args[-1]
            if left.shape[-1] == hidden and right.shape[-1] == intermediate:
                return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return policy


CHECKPOINTING_POLICIES = {"mlp": _keep_mlp_gate_up}
"""Selective activation checkpointing policies by name (`FuScoreForQuality.checkpointing_policy`): each maps the
language model's config to a policy of `torch.utils.checkpoint.create_selective_checkpoint_contexts`."""


def check_checkpointing_settings(policy: Optional[str], budget: Optional[float],
                                 names: tuple = ("checkpointing_policy", "activation_memory_budget")) -> None:
    """Raises `ValueError` for a `checkpointing_policy` not in `CHECKPOINTING_POLICIES`, an `activation_memory_budget`
    outside [0, 1], or both set; `names` are the two settings as the caller's user knows them (the trainer's flags)."""
    if policy is not None and policy not in CHECKPOINTING_POLICIES:
        raise ValueError(f"{names[0]}={policy!r}: known policies are {', '.join(CHECKPOINTING_POLICIES)}.")
    if budget is None:
        return
    if policy is not None:
        raise ValueError(f"{names[0]} and {names[1]} exclude each other: the budget leaves every choice of what to "
                         "save to the compiler.")
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"{names[1]}={budget}: must lie in [0, 1].")


def memory_budget_backend(budget: float):
    """A `torch.compile` backend: inductor, with AOT autograd's partitioner under `activation_memory_budget=budget`
    (torch._functorch.config) while it compiles, so that compiled functions with different budgets coexist in one
    process (the global setting would be read by whichever compiles next)."""
    from torch._functorch import config as functorch_config
    from torch._inductor.compile_fx import compile_fx

    def backend(graph_module, example_inputs):
        with functorch_config.patch(activation_memory_budget=budget):
            return compile_fx(graph_module, example_inputs)

    backend.__name__ = f"inductor_activation_memory_budget_{budget:g}"
    return backend


def _call_block(block, *args, **kwargs):
    return block._call_impl(*args, **kwargs)


def _call_block_checkpointed(block, *args, context_fn, **kwargs):
    if not (block.training and torch.is_grad_enabled()):  # as transformers' own wrapper: no backward, no checkpoint
        return block._call_impl(*args, **kwargs)
    return torch.utils.checkpoint.checkpoint(functools.partial(block._call_impl, **kwargs), *args, use_reentrant=False,
                                             context_fn=context_fn)


def _install_block_call(block, compiled_call) -> None:
    """Runs `block` through `compiled_call(block, ...)` in place of the code `compile_blocks` gave it."""
    if not getattr(block, "_fuscore_training_call", False):
        block._fuscore_block_call = block._compiled_call_impl
    block._compiled_call_impl = functools.partial(compiled_call, block)
    block._fuscore_training_call = True


def _restore_block_call(block) -> None:
    if getattr(block, "_fuscore_training_call", False):
        block._compiled_call_impl = block._fuscore_block_call
        block._fuscore_training_call = False


def check_block_checkpointing(layers, uncheckpointed_layers: int, policy: Optional[str], budget: Optional[float],
                              enable: bool) -> None:
    """Raises `ValueError` for checkpointing settings that the decoder `layers` cannot take (before anything changes)."""
    if not 0 <= uncheckpointed_layers <= len(layers):
        raise ValueError(f"uncheckpointed_layers={uncheckpointed_layers}: the language model has "
                         f"{len(layers)} decoder layers.")
    check_checkpointing_settings(policy, budget)
    if budget is not None and enable and not all(getattr(layer, "_fuscore_compiled", False) for layer in layers):
        raise ValueError("activation_memory_budget needs compiled decoder layers (call compile_blocks first): "
                         "the budget is the compiler's.")


def set_block_checkpointing(model, enable: bool, trains_vision_tower: bool, uncheckpointed_layers: int,
                            policy: Optional[str], budget: Optional[float]) -> None:
    """After transformers' own `_set_gradient_checkpointing`: leaves the vision blocks of a frozen tower and the last
    `uncheckpointed_layers` decoder layers of the Qwen-VL base `model` unchecked, and checkpoints the other decoder
    layers with `policy` or under the compiler's `budget` (`FuScoreForQuality._set_gradient_checkpointing`)."""
    layers = model.language_model.layers
    for layer in layers:  # back to the blocks' own compiled code (compile_blocks) before a new setting
        _restore_block_call(layer)
    if not enable:
        return
    if not trains_vision_tower:
        for module in model.visual.modules():
            if isinstance(module, GradientCheckpointingLayer):
                module.gradient_checkpointing = False
    for layer in list(layers)[len(layers) - uncheckpointed_layers :]:
        layer.gradient_checkpointing = False
    if policy is None and budget is None:
        return
    for layer in list(layers)[: len(layers) - uncheckpointed_layers]:
        if budget is not None:
            mode = ("budget", float(budget))
        elif getattr(layer, "_fuscore_compiled", False) and layer._compiled_call_impl is not None:
            mode = ("policy", policy)
        else:  # an eager layer: transformers' own checkpointing, with the policy's context
            layer._gradient_checkpointing_func = functools.partial(
                torch.utils.checkpoint.checkpoint, use_reentrant=False,
                context_fn=_policy_context(policy, model.language_model.config))
            continue
        # A compiled layer: the checkpoint goes inside the compiled region, where the policy sees the operations
        # and the partitioner recomputes only what the backward pass needs; transformers' own wrapper, which
        # would checkpoint the compiled code from outside, is switched off for it.
        layer.gradient_checkpointing = False
        _install_block_call(layer, _training_call(model, mode))


def _policy_context(policy: str, text_config):
    """The `context_fn` of torch.utils.checkpoint for a policy in `CHECKPOINTING_POLICIES`."""
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    return functools.partial(create_selective_checkpoint_contexts, CHECKPOINTING_POLICIES[policy](text_config))


def _training_call(model, mode: tuple):
    """One compiled function per training mode, shared by every decoder layer of `model` (one graph per mode)."""
    calls = model.__dict__.setdefault("_fuscore_training_calls", {})
    if mode not in calls:
        kind, value = mode
        if kind == "budget":
            calls[mode] = torch.compile(_call_block, backend=memory_budget_backend(value))
        else:
            context_fn = _policy_context(value, model.language_model.config)
            calls[mode] = torch.compile(functools.partial(_call_block_checkpointed, context_fn=context_fn))
    return calls[mode]
