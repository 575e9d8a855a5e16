# Copyright 2026 The FuScore authors. Apache-2.0.
"""FuScore's float8 scoring blocks: row-wise float8 (e4m3) matrix products whose activation quantization is fused into
the kernel before each of them.

This file is Hub remote code, imported by `acceleration_fuscore.py` (`quantize_fp8`) and written into every saved
folder beside it; it imports only the standard library, torch and transformers at the top, and Triton where it is
installed (it ships with torch's CUDA builds), on first use.

Row-wise dynamic float8 computes `x @ W.T` as `(q_x * s_x) @ (q_W * s_W).T`: every row of the activations and of the
weight gets its own scale (its largest |value| / 448, e4m3's largest finite value), and `torch._scaled_mm` multiplies
the float8 operands on the tensor cores at twice the bf16 rate and applies both scales in its epilogue. The weights are
quantized once. The activations must be quantized before every product, which costs a pass over them: done as separate
kernels it ate the savings in the vision tower (`benchmarks/RESULTS_speed.md`, "FP8 scoring"). Here the quantization is
part of the kernel that produces each product's input anyway:

- a decoder layer (Qwen3's: RMSNorm, q/k/v with per-head RMSNorm, o, SwiGLU MLP): the input RMSNorm writes the float8
  rows and their scales for the fused q/k/v product; the residual add and the post-attention RMSNorm are one kernel
  that writes the new residual stream and the float8 input of the fused gate/up product; SiLU(gate) * up writes the
  float8 input of the down product;
- a vision block (Qwen3-VL's and Qwen3.5's: LayerNorm, fused qkv, proj, GELU MLP): the same with LayerNorm and GELU.

Only the attention output (the input of the o and proj products) is quantized by a kernel of its own: flash attention's
kernel is not ours to extend; it is one read of a row of heads x head size and one write of a third of the bytes.

Kernels are written by hand in Triton because no maintained library fuses a normalisation or an activation with
row-wise float8 quantization for `torch._scaled_mm` on this stack (torchao quantizes in separate compiled kernels,
Transformer Engine and vLLM need source builds for a given torch). Each kernel has a plain-torch twin
(`*_reference`) with the same arithmetic: CPUs and GPUs without Triton run it, and the tests and
`benchmarks/fp8_variants.py` compare the kernels against it.

A block is converted only if its parts are the ones above, checked on a random input at conversion time (a norm that
computes `(1 + weight) * x` or another activation is left alone). The bf16 weights stay, so that training, caches and
gradients (`model.explain`) run the block's own bf16 forward; a converted block uses the float8 path only without
gradients and without a cache, which is how scoring runs.
"""

import functools
import re
import sys
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.generic import get_max_seqlen, is_flash_attention_requested

triton = tl = None  # imported on first use by `triton_available`
_store_quantized = None  # the kernels' shared Triton helper, made with them (`_triton_kernels`)


def triton_available() -> bool:
    """Whether Triton can be imported (it ships with torch's CUDA builds; elsewhere the plain-torch kernels run). The
    import waits for the first float8 launch on a GPU, so that loading this file never needs it."""
    global triton, tl
    if triton is None:
        try:
            import triton as triton_module
            import triton.language as language
        except ImportError:
            return False
        triton, tl = triton_module, language
    return True


FLOAT8 = torch.float8_e4m3fn
FLOAT8_MAX = 448.0  # e4m3's largest finite value
# A row's scale is its largest |value| / 448; the floor keeps an all-zero row (a padding token's embedding) at scale
# 1e-12 / 448 and values 0 instead of 0 / 0 = NaN, which would reach every real token through attention.
AMAX_FLOOR = 1e-12

ACTIVATIONS = {"identity": 0, "gelu_tanh": 1, "silu_mul": 2}


# ---------------------------------------------------------------------------------------------------- plain torch
def quantize_rows(values: torch.Tensor) -> tuple:
    """Row-wise float8 of `values` (float32, `[rows, columns]`): `(float8 values, float32 scales [rows, 1])`."""
    scale = values.abs().amax(-1, keepdim=True).clamp_min(AMAX_FLOOR) / FLOAT8_MAX
    return (values / scale).clamp(-FLOAT8_MAX, FLOAT8_MAX).to(FLOAT8), scale


def norm_quant_reference(x: torch.Tensor, residual: Optional[torch.Tensor], weight: torch.Tensor,
                         bias: Optional[torch.Tensor], eps: float, rms: bool) -> tuple:
    """`norm_quant` in plain torch: `(float8 rows, scales, x + residual)` (the sum in x's dtype, as the blocks add)."""
    if residual is not None:
        x = x + residual
    values = x.float()
    if rms:
        normed = values * torch.rsqrt(values.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    else:
        normed = F.layer_norm(values, values.shape[-1:], weight.float(), None if bias is None else bias.float(), eps)
    return (*quantize_rows(normed), x)


def act_quant_reference(x: torch.Tensor, activation: str) -> tuple:
    """`act_quant` in plain torch: `(float8 rows, scales)` of `activation(x)`; `silu_mul` reads `[gate | up]`."""
    values = x.float()
    if activation == "gelu_tanh":
        values = F.gelu(values, approximate="tanh")
    elif activation == "silu_mul":
        gate, up = values.chunk(2, dim=-1)
        values = F.silu(gate) * up
    return quantize_rows(values)


# ---------------------------------------------------------------------------------------------------- Triton
@functools.cache
def _triton_kernels():
    """The two Triton kernels, built on first use (Triton is imported only where it is installed). Each program
    takes `ROWS` whole rows, which stay in registers between the reductions and the stores. A row is two tiles, since
    Triton's tiles are powers of two: `MAIN` columns (the largest power of two in the row) and a `TAIL` of the next
    power of two above the rest (0: none), so a row of 4,304 columns runs on 4,352 lanes rather than 8,192. Where there
    is no tail, the kernels pass the main tile in its place to code that reads it only when `TAIL > 0`."""
    global _store_quantized  # a module global, where the kernels' Triton calls look their helpers up

    @triton.jit
    def _store_quantized(q_ptr, s_ptr, row, rows, columns, column, inside, x, tail_column, tail_inside, tail,
                         TAIL: tl.constexpr):
        """The rows' scales (largest |value| / 448 over both tiles) and their float8 values."""
        x = tl.where(inside, x, 0.0)
        amax = tl.max(tl.abs(x), axis=1)
        if TAIL > 0:
            tail = tl.where(tail_inside, tail, 0.0)
            amax = tl.maximum(amax, tl.max(tl.abs(tail), axis=1))
        scale = tl.maximum(amax, 1e-12)[:, None] / 448.0
        tl.store(q_ptr + row * columns + column,
                 tl.minimum(tl.maximum(x / scale, -448.0), 448.0).to(q_ptr.dtype.element_ty), mask=inside)
        if TAIL > 0:
            tl.store(q_ptr + row * columns + tail_column,
                     tl.minimum(tl.maximum(tail / scale, -448.0), 448.0).to(q_ptr.dtype.element_ty), mask=tail_inside)
        tl.store(s_ptr + row, scale, mask=row < rows)

    @triton.jit
    def norm_quant_kernel(x_ptr, r_ptr, w_ptr, b_ptr, h_ptr, q_ptr, s_ptr, rows, columns, eps,
                          RMS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ROWS: tl.constexpr,
                          MAIN: tl.constexpr, TAIL: tl.constexpr):
        row = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]
        column = tl.arange(0, MAIN)[None, :]
        inside = (row < rows) & (column < columns)
        x = tl.load(x_ptr + row * columns + column, mask=inside, other=0.0)
        tail_column, tail_inside, tail = column, inside, x
        if TAIL > 0:
            tail_column = MAIN + tl.arange(0, TAIL)[None, :]
            tail_inside = (row < rows) & (tail_column < columns)
            tail = tl.load(x_ptr + row * columns + tail_column, mask=tail_inside, other=0.0)
        if HAS_RESIDUAL:  # the residual stream keeps the model's dtype, as the block's add does
            x = (x.to(tl.float32) + tl.load(r_ptr + row * columns + column, mask=inside, other=0.0).to(tl.float32)
                 ).to(h_ptr.dtype.element_ty)
            tl.store(h_ptr + row * columns + column, x, mask=inside)
            if TAIL > 0:
                tail = (tail.to(tl.float32) + tl.load(r_ptr + row * columns + tail_column, mask=tail_inside,
                                                      other=0.0).to(tl.float32)).to(h_ptr.dtype.element_ty)
                tl.store(h_ptr + row * columns + tail_column, tail, mask=tail_inside)
        x, tail = x.to(tl.float32), tail.to(tl.float32)
        if not RMS:  # LayerNorm: centre first (the masked lanes stay 0)
            total = tl.sum(x, axis=1)
            if TAIL > 0:
                total += tl.sum(tail, axis=1)
                tail = tl.where(tail_inside, tail - (total / columns)[:, None], 0.0)
            x = tl.where(inside, x - (total / columns)[:, None], 0.0)
        squares = tl.sum(x * x, axis=1)
        if TAIL > 0:
            squares += tl.sum(tail * tail, axis=1)
        inverse = tl.rsqrt(squares / columns + eps)[:, None]
        x = x * inverse * tl.load(w_ptr + column, mask=column < columns, other=0.0).to(tl.float32)
        if HAS_BIAS:
            x = x + tl.load(b_ptr + column, mask=column < columns, other=0.0).to(tl.float32)
        if TAIL > 0:
            tail = tail * inverse * tl.load(w_ptr + tail_column, mask=tail_column < columns, other=0.0).to(tl.float32)
            if HAS_BIAS:
                tail = tail + tl.load(b_ptr + tail_column, mask=tail_column < columns, other=0.0).to(tl.float32)
        _store_quantized(q_ptr, s_ptr, row, rows, columns, column, inside, x, tail_column, tail_inside, tail, TAIL)

    @triton.jit
    def act_quant_kernel(x_ptr, q_ptr, s_ptr, rows, columns, ACTIVATION: tl.constexpr, ROWS: tl.constexpr,
                         MAIN: tl.constexpr, TAIL: tl.constexpr):
        row = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]
        width = columns * 2 if ACTIVATION == 2 else columns  # silu_mul reads [gate | up]
        column = tl.arange(0, MAIN)[None, :]
        inside = (row < rows) & (column < columns)
        x = tl.load(x_ptr + row * width + column, mask=inside, other=0.0).to(tl.float32)
        tail_column, tail_inside, tail = column, inside, x
        if TAIL > 0:
            tail_column = MAIN + tl.arange(0, TAIL)[None, :]
            tail_inside = (row < rows) & (tail_column < columns)
            tail = tl.load(x_ptr + row * width + tail_column, mask=tail_inside, other=0.0).to(tl.float32)
        if ACTIVATION == 1:  # GELU, tanh approximation: 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u))
            x = x / (1.0 + tl.exp(-1.5957691216057308 * (x + 0.044715 * x * x * x)))
            if TAIL > 0:
                tail = tail / (1.0 + tl.exp(-1.5957691216057308 * (tail + 0.044715 * tail * tail * tail)))
        elif ACTIVATION == 2:  # SiLU(gate) * up
            x = x / (1.0 + tl.exp(-x)) * tl.load(x_ptr + row * width + columns + column, mask=inside,
                                                 other=0.0).to(tl.float32)
            if TAIL > 0:
                tail = tail / (1.0 + tl.exp(-tail)) * tl.load(x_ptr + row * width + columns + tail_column,
                                                              mask=tail_inside, other=0.0).to(tl.float32)
        _store_quantized(q_ptr, s_ptr, row, rows, columns, column, inside, x, tail_column, tail_inside, tail, TAIL)

    return norm_quant_kernel, act_quant_kernel


# Launch shapes, (rows per program, warps) by the row's width rounded up to a power of two: the fastest of 1-8 rows x
# 2-16 warps, weighted by how often a forward runs each kernel, at the shapes of a 64-image batch of 448 px at 8B, on
# one H100 (torch 2.11, Triton 3.6, two-tile rows, 2026-12-06; `benchmarks/fp8_variants.py --parts kernels`,
# `results_fp8_kernels_h100.json`).
LAUNCH_SHAPES = {2048: (2, 2), 4096: (1, 4), 8192: (1, 4), 16384: (1, 8)}


def _launch_shape(columns: int, shapes: Optional[dict] = None) -> tuple:
    """`(main, tail, rows per program, warps)` for rows of `columns`: the row's two tiles (`_triton_kernels`), the
    largest power of two in it and the next power of two above the rest (0 when the row is a power of two)."""
    main = 1 << (columns.bit_length() - 1)
    tail = triton.next_power_of_2(columns - main) if columns > main else 0
    block = triton.next_power_of_2(columns)
    rows, warps = (shapes or LAUNCH_SHAPES).get(block, (max(1, 2048 // block), max(4, min(16, block // 512))))
    return main, tail, rows, warps


def _use_triton(x: torch.Tensor) -> bool:
    return x.is_cuda and triton_available()


# ---------------------------------------------------------------------------------------------------- operators
def _norm_quant(x: torch.Tensor, residual: Optional[torch.Tensor], weight: torch.Tensor, bias: Optional[torch.Tensor],
                eps: float, rms: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    columns = x.shape[-1]
    if not _use_triton(x):
        quantized, scale, summed = norm_quant_reference(x.reshape(-1, columns), None if residual is None
                                                        else residual.reshape(-1, columns), weight, bias, eps, rms)
        return quantized, scale, x.new_empty((0, columns)) if residual is None else summed
    x = x.reshape(-1, columns).contiguous()
    rows = x.shape[0]
    quantized = torch.empty((rows, columns), dtype=FLOAT8, device=x.device)
    scale = torch.empty((rows, 1), dtype=torch.float32, device=x.device)
    summed = torch.empty_like(x) if residual is not None else x.new_empty((0, columns))
    if rows:
        main, tail, per_program, warps = _launch_shape(columns)
        _triton_kernels()[0][(triton.cdiv(rows, per_program),)](
            x, x if residual is None else residual.reshape(-1, columns).contiguous(), weight,
            weight if bias is None else bias, summed, quantized, scale, rows, columns, eps, RMS=rms,
            HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None, ROWS=per_program, MAIN=main, TAIL=tail,
            num_warps=warps)
    return quantized, scale, summed


def _act_quant(x: torch.Tensor, activation: int) -> tuple[torch.Tensor, torch.Tensor]:
    name = next(key for key, value in ACTIVATIONS.items() if value == activation)
    columns = x.shape[-1] // 2 if name == "silu_mul" else x.shape[-1]
    if not _use_triton(x):
        return act_quant_reference(x.reshape(-1, x.shape[-1]), name)
    x = x.reshape(-1, x.shape[-1]).contiguous()
    rows = x.shape[0]
    quantized = torch.empty((rows, columns), dtype=FLOAT8, device=x.device)
    scale = torch.empty((rows, 1), dtype=torch.float32, device=x.device)
    if rows:
        main, tail, per_program, warps = _launch_shape(columns)
        _triton_kernels()[1][(triton.cdiv(rows, per_program),)](x, quantized, scale, rows, columns, ACTIVATION=activation,
                                                                ROWS=per_program, MAIN=main, TAIL=tail, num_warps=warps)
    return quantized, scale


def _norm_quant_shape(x, residual, weight, bias, eps, rms):
    columns = x.shape[-1]
    rows = x.numel() // columns
    summed = x.new_empty((rows, columns)) if residual is not None else x.new_empty((0, columns))
    return (x.new_empty((rows, columns), dtype=FLOAT8), x.new_empty((rows, 1), dtype=torch.float32), summed)


def _act_quant_shape(x, activation):
    columns = x.shape[-1] // 2 if activation == ACTIVATIONS["silu_mul"] else x.shape[-1]
    rows = x.numel() // x.shape[-1]
    return x.new_empty((rows, columns), dtype=FLOAT8), x.new_empty((rows, 1), dtype=torch.float32)


# Opaque operators for torch.compile (one pair per copy of this file: `trust_remote_code` imports it again under
# another module name, and a reload would register the same names twice). A compiled block keeps one graph whatever
# the number of rows; the Triton launch or the plain-torch twin is chosen inside, on the concrete tensors.
_SUFFIX = re.sub(r"\W", "_", __name__)
_NORM_QUANT, _ACT_QUANT = f"norm_quant_{_SUFFIX}", f"act_quant_{_SUFFIX}"
if not hasattr(torch.ops.fuscore, _NORM_QUANT):
    torch.library.custom_op(f"fuscore::{_NORM_QUANT}", _norm_quant, mutates_args=()).register_fake(_norm_quant_shape)
    torch.library.custom_op(f"fuscore::{_ACT_QUANT}", _act_quant, mutates_args=()).register_fake(_act_quant_shape)


def norm_quant(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], eps: float, rms: bool,
               residual: Optional[torch.Tensor] = None) -> tuple:
    """Normalises the rows of `x` (plus `residual`, when given) and quantizes them to row-wise float8, in one kernel.

    Args:
        x, residual (`torch.Tensor` of shape `(..., columns)`): the rows (and what the block adds to them first).
        weight, bias: the norm's; `rms` selects RMSNorm (`weight * x / rms(x)`, no bias) over LayerNorm.
    Returns:
        `(float8 [rows, columns], float32 scales [rows, 1], x + residual [rows, columns] or None)`.
    """
    quantized, scale, summed = getattr(torch.ops.fuscore, _NORM_QUANT)(x, residual, weight, bias, float(eps), rms)
    return quantized, scale, summed if residual is not None else None


def act_quant(x: torch.Tensor, activation: str) -> tuple:
    """`activation` (`identity`, `gelu_tanh`, or `silu_mul` of `[gate | up]`) of the rows of `x`, quantized to
    row-wise float8 in one kernel: `(float8 [rows, columns], float32 scales [rows, 1])`."""
    return getattr(torch.ops.fuscore, _ACT_QUANT)(x, ACTIVATIONS[activation])


class Float8Weight(nn.Module):
    """The row-wise float8 copy of one or more linear layers that read the same input, concatenated along their
    outputs (q/k/v, gate/up): float8 rows `weight [out, in]`, their `scale [1, out]` and the bf16 `bias`. Buffers
    that are not saved: the checkpoint keeps the layers' own weights."""

    def __init__(self, *linears: nn.Linear):
        super().__init__()
        weight = torch.cat([linear.weight.detach() for linear in linears])
        quantized, scale = quantize_rows(weight.float())
        self.register_buffer("weight", quantized, persistent=False)
        self.register_buffer("scale", scale.view(1, -1), persistent=False)
        biases = [linear.bias for linear in linears]
        bias = None if all(b is None for b in biases) else torch.cat(
            [torch.zeros(linear.out_features, dtype=weight.dtype, device=weight.device) if b is None else b.detach()
             for linear, b in zip(linears, biases)])
        self.register_buffer("bias", bias, persistent=False)
        self.sizes = [linear.out_features for linear in linears]

    def forward(self, quantized: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`[rows, out]` in `dtype` from the float8 rows and scales of `norm_quant` or `act_quant`."""
        if quantized.is_cuda:
            return torch._scaled_mm(quantized, self.weight.t(), scale_a=scale, scale_b=self.scale, bias=self.bias,
                                    out_dtype=dtype, use_fast_accum=True)
        # Elsewhere the same product on the dequantized operands (float8 matmuls need a GPU's tensor cores).
        output = (quantized.float() * scale) @ (self.weight.float() * self.scale.t()).t()
        return (output if self.bias is None else output + self.bias.float()).to(dtype)


# ---------------------------------------------------------------------------------------------------- blocks
def _module_function(module: nn.Module, name: str):
    """A function of the module's own modeling file (`apply_rotary_pos_emb`, ...), or `None`."""
    return getattr(sys.modules.get(type(module).__module__), name, None)


@torch.no_grad()
def _same_function(module_call, reference_call, width: int, weight: nn.Parameter) -> bool:
    """Whether a norm or an activation computes `reference_call`, on a random input in float32 (the check that lets a
    variant, such as a zero-centred norm `(1 + weight) * x`, keep its own bf16 path)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, width, generator=generator).to(weight.device)
    try:
        expected, actual = reference_call(x), module_call(x.to(weight.dtype)).float()
    except Exception:  # a module that cannot run on this input is no match
        return False
    return torch.allclose(actual, expected, rtol=2e-2, atol=2e-2)


def _is_rms_norm(norm) -> bool:
    weight = getattr(norm, "weight", None)
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if not isinstance(weight, torch.Tensor) or eps is None or getattr(norm, "bias", None) is not None:
        return False
    return _same_function(norm, lambda x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float(),
                          weight.shape[-1], weight)


def _is_layer_norm(norm) -> bool:
    return isinstance(norm, nn.LayerNorm) and norm.weight is not None and len(norm.normalized_shape) == 1


def _is_activation(act_fn, name: str, width: int, weight) -> bool:
    reference = {"silu": F.silu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}[name]
    return _same_function(act_fn, reference, width, weight)


def _linears(*modules) -> bool:
    return all(isinstance(module, nn.Linear) and type(module) is nn.Linear for module in modules)


def _norm_eps(norm) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def decoder_layer_matches(layer: nn.Module) -> bool:
    """Whether `layer` is a Qwen3-style decoder layer that `Float8DecoderLayer` computes: RMSNorms, q/k/v/o without
    gated attention output, per-head q/k RMSNorm, a SiLU-gated MLP, and its file's rotary and eager attention."""
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    if attn is None or mlp is None or any(getattr(layer, name, None) is None
                                           for name in ("input_layernorm", "post_attention_layernorm")):
        return False
    if not all(hasattr(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm",
                                                 "head_dim", "scaling", "config")):
        return False
    if not all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn")):
        return False
    heads, kv_heads = attn.config.num_attention_heads, attn.config.num_key_value_heads
    if (not _linears(attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
            or attn.q_proj.out_features != heads * attn.head_dim or attn.k_proj.out_features != kv_heads * attn.head_dim
            or attn.o_proj.bias is not None or mlp.down_proj.bias is not None):
        return False
    if any(_module_function(layer, name) is None for name in ("apply_rotary_pos_emb", "eager_attention_forward")):
        return False
    weight = attn.q_proj.weight
    return (all(_is_rms_norm(norm) for norm in (layer.input_layernorm, layer.post_attention_layernorm,
                                                 attn.q_norm, attn.k_norm))
            and _is_activation(mlp.act_fn, "silu", 64, weight))


def vision_block_matches(block: nn.Module) -> bool:
    """Whether `block` is a Qwen3-VL-style vision block that `Float8VisionBlock` computes: LayerNorms, a fused qkv
    and proj, a tanh-GELU MLP (`linear_fc1`, `linear_fc2`), and its file's vision rotary embedding."""
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    if attn is None or mlp is None or not all(hasattr(attn, name) for name in ("qkv", "proj", "num_heads", "scaling")):
        return False
    if not all(hasattr(mlp, name) for name in ("linear_fc1", "linear_fc2", "act_fn")):
        return False
    if not (_linears(attn.qkv, attn.proj, mlp.linear_fc1, mlp.linear_fc2)
            and all(_is_layer_norm(getattr(block, name, None)) for name in ("norm1", "norm2"))):
        return False
    if _module_function(attn, "apply_rotary_pos_emb_vision") is None:
        return False
    return _is_activation(mlp.act_fn, "gelu_tanh", 64, attn.qkv.weight)


def _attention_interface(attn, eager_attention):
    return ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention)


def _float8_forward(self, hidden_states, *args, **kwargs):
    """The float8 path where it applies (no gradients, no cache), the block's own bf16 forward elsewhere."""
    if torch.is_grad_enabled() or args or any(kwargs.get(name) is not None for name in ("cache", "past_key_values")):
        return self.bf16_class.forward(self, hidden_states, *args, **kwargs)
    kwargs = {name: value for name, value in kwargs.items() if name not in ("cache", "past_key_values")}
    return self.float8_forward(hidden_states, **kwargs)


class Float8DecoderLayer:
    """Mixed into a matching decoder layer's class by `convert_decoder_layer` (the layer keeps its modules, weights and
    state-dict keys); `float8_weights` holds the float8 copies."""

    forward = _float8_forward

    def float8_forward(self, hidden_states, position_embeddings=None, attention_mask=None, position_ids=None,
                       use_cache=False, **kwargs):
        attn, weights = self.self_attn, self.float8_weights
        input_shape, dtype = hidden_states.shape[:-1], hidden_states.dtype
        quantized, scale, _ = norm_quant(hidden_states, self.input_layernorm.weight, None,
                                         _norm_eps(self.input_layernorm), rms=True)
        query, key, value = weights.qkv(quantized, scale, dtype).view(*input_shape, -1).split(weights.qkv.sizes, -1)
        hidden_shape = (*input_shape, -1, attn.head_dim)
        query = attn.q_norm(query.reshape(hidden_shape)).transpose(1, 2)
        key = attn.k_norm(key.reshape(hidden_shape)).transpose(1, 2)
        value = value.reshape(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query, key = self.rotary(query, key, cos, sin)
        output, _ = _attention_interface(attn, self.eager_attention)(attn, query, key, value, attention_mask, dropout=0.0,
                                                scaling=attn.scaling, position_ids=position_ids, **kwargs)
        quantized, scale = act_quant(output.reshape(*input_shape, -1), "identity")
        attention_output = weights.o(quantized, scale, dtype)
        quantized, scale, hidden_states = norm_quant(
            hidden_states, self.post_attention_layernorm.weight, None, _norm_eps(self.post_attention_layernorm),
            rms=True, residual=attention_output.view_as(hidden_states))
        quantized, scale = act_quant(weights.gate_up(quantized, scale, dtype), "silu_mul")
        return hidden_states.view(*input_shape, -1) + weights.down(quantized, scale, dtype).view(*input_shape, -1)


class Float8VisionBlock:
    """Mixed into a matching vision block's class by `convert_vision_block`; `float8_weights` holds the copies."""

    forward = _float8_forward

    def float8_forward(self, hidden_states, cu_seqlens=None, position_embeddings=None, max_seqlen=None, **kwargs):
        attn, weights, dtype = self.attn, self.float8_weights, hidden_states.dtype
        if not is_flash_attention_requested(attn.config):  # the per-image attention loop: the block's own path
            return self.bf16_class.forward(self, hidden_states, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen,
                                                   position_embeddings=position_embeddings, **kwargs)
        length = hidden_states.shape[0]
        quantized, scale, _ = norm_quant(hidden_states, self.norm1.weight, self.norm1.bias, self.norm1.eps, rms=False)
        query, key, value = weights.qkv(quantized, scale, dtype).reshape(length, 3, attn.num_heads, -1).permute(
            1, 0, 2, 3).unbind(0)
        cos, sin = position_embeddings
        query, key = self.rotary(query, key, cos, sin)
        query, key, value = (state.transpose(0, 1).unsqueeze(0) for state in (query, key, value))
        max_seqlen = get_max_seqlen(cu_seqlens, attn.config, kwargs={"max_seqlen": max_seqlen})
        output, _ = _attention_interface(attn, self.eager_attention)(
            attn, query, key, value, attention_mask=None, scaling=attn.scaling, dropout=0.0, cu_seq_lens_q=cu_seqlens,
            cu_seq_lens_k=cu_seqlens, max_length_q=max_seqlen, max_length_k=max_seqlen, is_causal=False, **kwargs)
        quantized, scale = act_quant(output.reshape(length, -1), "identity")
        quantized, scale, hidden_states = norm_quant(hidden_states, self.norm2.weight, self.norm2.bias,
                                                     self.norm2.eps, rms=False, residual=weights.proj(quantized, scale, dtype))
        quantized, scale = act_quant(weights.fc1(quantized, scale, dtype), "gelu_tanh")
        return hidden_states + weights.fc2(quantized, scale, dtype)


@functools.cache
def _float8_class(block_class: type, mixin: type, rotary_name: str) -> type:
    """The block's class with the float8 forward mixed in (one class per block class; `isinstance` still holds), with
    the rotary embedding and eager attention of the block's own modeling file."""
    module = sys.modules[block_class.__module__]
    return type(f"Float8{block_class.__name__}", (mixin, block_class), {
        "__module__": block_class.__module__, "bf16_class": block_class,
        "rotary": staticmethod(getattr(module, rotary_name)),
        "eager_attention": staticmethod(getattr(module, "eager_attention_forward", None))})


def _convert(block: nn.Module, mixin: type, matches, linears: dict, rotary_name: str) -> bool:
    """Gives `block` its float8 path (`mixin`) if `matches(block)`, with float8 copies of `linears` (name -> the
    linear layers that read one input, concatenated); `False` if it does not match."""
    if isinstance(block, mixin):
        return True
    if not matches(block):
        return False
    block.float8_weights = nn.ModuleDict({name: Float8Weight(*layers(block)) for name, layers in linears.items()})
    block.__class__ = _float8_class(type(block), mixin, rotary_name)
    return True


def convert_decoder_layer(layer: nn.Module) -> bool:
    """Gives a matching decoder layer (`decoder_layer_matches`) its float8 path; `False` if it does not match."""
    return _convert(layer, Float8DecoderLayer, decoder_layer_matches, {
        "qkv": lambda b: (b.self_attn.q_proj, b.self_attn.k_proj, b.self_attn.v_proj), "o": lambda b: (b.self_attn.o_proj,),
        "gate_up": lambda b: (b.mlp.gate_proj, b.mlp.up_proj), "down": lambda b: (b.mlp.down_proj,)}, "apply_rotary_pos_emb")


def convert_vision_block(block: nn.Module) -> bool:
    """Gives a matching vision block (`vision_block_matches`) its float8 path; `False` if it does not match."""
    return _convert(block, Float8VisionBlock, vision_block_matches, {
        "qkv": lambda b: (b.attn.qkv,), "proj": lambda b: (b.attn.proj,), "fc1": lambda b: (b.mlp.linear_fc1,),
        "fc2": lambda b: (b.mlp.linear_fc2,)}, "apply_rotary_pos_emb_vision")
