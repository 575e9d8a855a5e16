"""The fused float8 blocks (`float8_fuscore.py`, behind `quantize_fp8`).

On the CPU the blocks run their plain-torch kernels (the twins of the Triton kernels) and the float8 products on
dequantized operands: what they compute is tested here; the Triton kernels themselves are compared with the twins
where a CUDA GPU is present (and by `benchmarks/fp8_variants.py --parts kernels`, which also times them).
"""

import copy

import numpy as np
import pytest
import torch

import acceleration_fuscore
import float8_fuscore
from fuscore.tiny import build_tiny_model


@pytest.fixture
def images():
    rng = np.random.default_rng(4)
    return [rng.integers(0, 256, (32 + 16 * (i % 2), 48, 3), dtype=np.uint8) for i in range(4)]


def convert(model) -> tuple:
    base = model.model
    return ([float8_fuscore.convert_decoder_layer(layer) for layer in base.language_model.layers],
            [float8_fuscore.convert_vision_block(block) for block in base.visual.blocks])


def batch_outputs(model, images):
    batch = dict(model.get_processor()(images))
    batch.update(model.position_inputs(batch))
    with torch.no_grad():
        output = model(**batch)
    return output.level_logits, output.score


@pytest.mark.parametrize("family, decoder, vision", [("qwen3_vl", True, True), ("qwen3_5", False, True),
                                                     ("qwen2_5_vl", False, False)])
def test_blocks_compute_what_the_model_computes_when_nothing_is_rounded(family, decoder, vision, images, monkeypatch):
    """With float32 in place of float8 the fused path is the blocks' own computation: any mistake in the rewritten
    forwards (an input split in the wrong order, a bias, a norm or the rotary embedding left out) shows here."""
    model = build_tiny_model(family, seed=5).eval()
    expected = batch_outputs(model, images)
    monkeypatch.setattr(float8_fuscore, "FLOAT8", torch.float32)
    converted = copy.deepcopy(model)
    layers, blocks = convert(converted)
    assert set(layers) == {decoder} and set(blocks) == {vision}
    logits, scores = batch_outputs(converted, images)
    torch.testing.assert_close(logits, expected[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scores, expected[1], rtol=1e-5, atol=1e-5)


def test_float8_scores_stay_close_and_keep_the_ranking(images):
    model = build_tiny_model("qwen3_vl", seed=5).eval()
    rng = np.random.default_rng(5)
    many = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(8)]
    expected = np.array(model.score(many))
    convert(model)
    assert isinstance(model.model.language_model.layers[0], float8_fuscore.Float8DecoderLayer)
    scores = np.array(model.score(many))
    assert not np.array_equal(scores, expected)  # float8 ran
    np.testing.assert_allclose(scores, expected, atol=0.03, rtol=0)


def test_gradients_and_caches_take_the_bf16_path_and_the_checkpoint_is_unchanged(images, tmp_path):
    model = build_tiny_model("qwen3_vl", seed=6)
    keys = set(model.state_dict())
    batch = dict(model.get_processor()(images[:2]))
    batch.update(model.position_inputs(batch))
    expected = model(**batch).score
    convert(model)
    assert set(model.state_dict()) == keys  # the float8 copies are not saved
    with torch.enable_grad():
        output = model(**batch).score
    torch.testing.assert_close(output, expected, rtol=0, atol=0)  # the blocks' own forward, exactly
    output.sum().backward()
    assert model.model.language_model.layers[0].mlp.down_proj.weight.grad is not None
    model.save_pretrained(tmp_path / "saved")
    reloaded = type(model).from_pretrained(tmp_path / "saved").eval()
    assert not isinstance(reloaded.model.language_model.layers[0], float8_fuscore.Float8DecoderLayer)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).score, expected.detach(), rtol=1e-6, atol=1e-6)


def test_a_variant_norm_or_activation_is_left_alone():
    """A zero-centred RMSNorm (`(1 + weight) * x`, Qwen3.5's and Qwen3-Next's) or another activation computes
    something else than the fused kernels: such a block keeps its own path."""
    model = build_tiny_model("qwen3_vl", seed=7)
    layer, block = model.model.language_model.layers[0], model.model.visual.blocks[0]
    plain_norm = type(layer.input_layernorm).forward

    class ZeroCentred(type(layer.input_layernorm)):
        def forward(self, hidden_states):
            return plain_norm(self, hidden_states) * (1 + self.weight) / self.weight

    layer.input_layernorm.__class__ = ZeroCentred
    block.mlp.act_fn = torch.nn.SiLU()
    assert not float8_fuscore.convert_decoder_layer(layer) and not float8_fuscore.convert_vision_block(block)
    assert float8_fuscore.convert_decoder_layer(model.model.language_model.layers[1])


def test_quantize_fp8_fuses_what_it_knows_and_gives_the_rest_to_torchao(monkeypatch, images):
    pytest.importorskip("torchao")
    import torchao.quantization.quant_api as quant_api

    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)
    monkeypatch.setattr(acceleration_fuscore, "_fp8_unsupported_reason", lambda weight: None)
    model = build_tiny_model("qwen3_vl", seed=3).to(torch.bfloat16).eval()
    assert model.quantize_fp8(vision_tower=False) is True
    assert all(isinstance(layer, float8_fuscore.Float8DecoderLayer) for layer in model.model.language_model.layers)
    assert not any(isinstance(block, float8_fuscore.Float8VisionBlock) for block in model.model.visual.blocks)
    assert model.quantize_fp8() is True  # adds the vision blocks
    assert all(isinstance(block, float8_fuscore.Float8VisionBlock) for block in model.model.visual.blocks)
    assert all(type(p) is torch.nn.Parameter for p in model.parameters())  # bf16 weights kept, none replaced

    other = build_tiny_model("qwen2_5_vl", seed=3).to(torch.bfloat16).eval()
    expected = np.array(other.score(images))
    assert other.quantize_fp8() is True
    kinds = {type(m.weight).__name__ for m in other.model.language_model.layers.modules() if isinstance(m, torch.nn.Linear)}
    assert kinds == {"Float8Tensor"} and all(type(p) is torch.nn.Parameter for p in other.model.visual.parameters())
    np.testing.assert_allclose(np.array(other.score(images)), expected, atol=0.05, rtol=0)


def test_padding_rows_and_zero_weight_rows_stay_finite(images):
    """A row's scale has a floor: an all-zero row (a padding token's zero embedding, a zero weight row) quantizes to
    zeros instead of 0/0 = NaN, which would reach every real token of its sequence through attention."""
    quantized, scale = float8_fuscore.quantize_rows(torch.zeros(2, 8))
    assert torch.isfinite(scale).all() and (quantized.float() == 0).all()
    model = build_tiny_model("qwen3_vl", seed=3).eval()
    pad = model.get_processor().tokenizer.pad_token_id
    with torch.no_grad():
        model.model.language_model.embed_tokens.weight[pad] = 0
        model.model.language_model.layers[0].mlp.down_proj.weight[3] = 0
    expected = np.array(model.score(images, batch_size=4))
    convert(model)
    scores = np.array(model.score(images, batch_size=4))
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores, expected, atol=0.03, rtol=0)


@pytest.mark.slow
def test_compiled_float8_blocks_score_as_the_eager_ones(images):
    """The fused operators are opaque to torch.compile: one graph per block type, the same scores."""
    model = build_tiny_model("qwen3_vl", seed=8).eval()
    convert(model)
    eager = np.array(model.score(images, batch_size=2))
    compiled = np.array(model.score(images, batch_size=2, compile=True))
    np.testing.assert_allclose(compiled, eager, atol=1e-4, rtol=0)


@pytest.mark.skipif(not (torch.cuda.is_available() and float8_fuscore.triton_available()), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["layer_norm", "add_layer_norm", "rms_norm", "add_rms_norm", "gelu_tanh", "silu_mul",
                                  "identity"])
@pytest.mark.parametrize("columns", [1152, 4304, 4096, 100])  # rows of two tiles (1024 + 128, 4096 + 256) and of one
def test_triton_kernels_match_their_twins(kind, columns):
    rows = 333
    x = (3 * torch.randn(rows, 2 * columns if kind == "silu_mul" else columns, device="cuda")).bfloat16()
    x[::7, ::13] *= 50
    residual = torch.randn(rows, columns, device="cuda").bfloat16()
    weight, bias = (1 + 0.1 * torch.randn(columns, device="cuda")).bfloat16(), torch.randn(columns, device="cuda").bfloat16()
    if "norm" in kind:
        rms, add = "rms" in kind, kind.startswith("add")
        arguments = (None if rms else bias, 1e-6, rms)
        output = float8_fuscore.norm_quant(x, weight, *arguments, residual=residual if add else None)
        expected = float8_fuscore.norm_quant_reference(x, residual if add else None, weight, *arguments)
        if add:
            torch.testing.assert_close(output[2], expected[2], rtol=0, atol=0)
    else:
        output, expected = float8_fuscore.act_quant(x, kind), float8_fuscore.act_quant_reference(x, kind)
    torch.testing.assert_close(output[1], expected[1], rtol=1e-5, atol=0)
    dequantized, reference = output[0].float() * output[1], expected[0].float() * expected[1]
    assert ((dequantized - reference).norm() / reference.norm()).item() < 1e-2
