"""Opt-in FP8 scoring (`FuScoreForQuality.quantize_fp8`, `score(..., fp8=True)`, `fuscore score --fp8`).

The float8 kernels need a GPU of compute capability 8.9+; here the fallback, its messages and the CLI wiring are
tested as they run, and the quantization itself with torchao's hardware assertion lifted (torch's CPU scaled matmul
computes float8, slowly), as `benchmarks/bench_fp8.py --tiny` does.
"""

import json
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

import acceleration_fuscore
import modeling_fuscore
from conftest import REPO_ROOT
from fuscore.tiny import build_tiny_model


@pytest.fixture
def images(random_images):
    return [image[:48, :64] for image in random_images[:3]]  # three of one size


@pytest.fixture
def bf16_model():
    return build_tiny_model("qwen3_vl", seed=3).to(torch.bfloat16).eval()


def plain(model) -> bool:
    return all(type(parameter) is torch.nn.Parameter for parameter in model.parameters())


def test_on_the_cpu_the_model_keeps_its_bf16_path_and_says_why(bf16_model, images):
    expected = bf16_model.score(images)
    with pytest.warns(UserWarning, match=r"FP8 scoring is not available: the model is on cpu; .*compute capability 8\.9"):
        assert bf16_model.quantize_fp8() is False
    assert plain(bf16_model)
    with pytest.warns(UserWarning, match="keeps its bf16 path"):
        assert bf16_model.score(images, fp8=True) == expected


def test_the_reason_names_an_old_gpu_a_float32_model_and_a_missing_torchao(bf16_model, monkeypatch):
    cuda_weight = types.SimpleNamespace(device=torch.device("cuda:0"), dtype=torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    reason = acceleration_fuscore._fp8_unsupported_reason(cuda_weight)
    assert "NVIDIA A100-SXM4-80GB has compute capability 8.0" in reason and "8.9 or later" in reason
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert acceleration_fuscore._fp8_unsupported_reason(cuda_weight) is None
    cuda_weight.dtype = torch.float32
    assert "torch.float32" in acceleration_fuscore._fp8_unsupported_reason(cuda_weight)

    monkeypatch.setattr(acceleration_fuscore, "_fp8_unsupported_reason", lambda weight: None)
    monkeypatch.setitem(sys.modules, "torchao", None)  # `import torchao...` now raises ImportError
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    other = build_tiny_model("qwen2_5_vl", seed=3).to(torch.bfloat16).eval()  # its decoder layers need torchao
    with pytest.warns(UserWarning, match=r"Qwen2_5_VLDecoderLayer: torchao could not be imported .*pip install torchao"):
        assert other.quantize_fp8() is False
    assert plain(other)
    assert bf16_model.quantize_fp8() is True  # Qwen3-VL's fused blocks need no torchao


def test_torchao_quantizes_the_decoder_linears_only_and_a_second_call_is_a_no_op(images, monkeypatch):
    """A family whose decoder layers `float8_fuscore` does not fuse (Qwen2.5-VL here) gets torchao's float8 on its
    decoder's linear layers; its vision blocks (RMSNorm, SwiGLU) are not Qwen3-VL's and keep bf16."""
    pytest.importorskip("torchao")
    import torchao.quantization.quant_api as quant_api

    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)
    monkeypatch.setattr(acceleration_fuscore, "_fp8_unsupported_reason", lambda weight: None)
    bf16_model = build_tiny_model("qwen2_5_vl", seed=3).to(torch.bfloat16).eval()
    expected = np.array(bf16_model.score(images))
    head = bf16_model.lm_head.weight
    head_values = head.detach().clone()
    vision = {name: p.detach().clone() for name, p in bf16_model.model.visual.named_parameters()}

    assert bf16_model.quantize_fp8() is True
    linears = [m for m in bf16_model.model.language_model.layers.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m.weight).__name__ == "Float8Tensor" for m in linears)
    assert bf16_model.lm_head.weight is head and type(head) is torch.nn.Parameter
    torch.testing.assert_close(head, head_values, rtol=0, atol=0)
    assert plain(bf16_model.model.visual) and plain(bf16_model.model.language_model.embed_tokens)
    for name, p in bf16_model.model.visual.named_parameters():
        torch.testing.assert_close(p, vision[name], rtol=0, atol=0)

    weights = [m.weight for m in linears]
    assert bf16_model.quantize_fp8() is True
    assert all(m.weight is w for m, w in zip(linears, weights))
    scores = np.array(bf16_model.score(images, fp8=True))
    assert not np.array_equal(scores, expected)  # float8 ran
    np.testing.assert_allclose(scores, expected, atol=0.05, rtol=0)


@pytest.fixture
def saved_model(saved_tiny_model, tmp_path):
    folder = saved_tiny_model
    image = tmp_path / "fused.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(image)
    return folder, image


def test_cli_fp8_quantizes_before_compiling_and_falls_back_on_the_cpu(saved_model, tmp_path, monkeypatch):
    from fuscore.cli import build_parser, main

    folder, image = saved_model
    plain_output, fp8_output = tmp_path / "plain.csv", tmp_path / "fp8.csv"
    arguments = ["score", str(image), "--model", str(folder), "--dimensions", "overall", "--device", "cpu"]
    assert main(arguments + ["--output", str(plain_output)]) == 0
    with pytest.warns(UserWarning, match="FP8 scoring is not available: the model is on cpu"):
        assert main(arguments + ["--output", str(fp8_output), "--fp8"]) == 0
    assert fp8_output.read_text() == plain_output.read_text()

    calls = []
    monkeypatch.setattr(modeling_fuscore.FuScoreForQuality, "quantize_fp8", lambda self: calls.append("fp8") or False)
    monkeypatch.setattr(modeling_fuscore.FuScoreForQuality, "compile_blocks", lambda self, **kw: calls.append("compile") or self)
    assert main(arguments + ["--output", str(tmp_path / "both.csv"), "--fp8", "--compile"]) == 0
    assert calls == ["fp8", "compile"]
    assert main(arguments + ["--output", str(tmp_path / "none.csv")]) == 0
    assert calls == ["fp8", "compile"]
    assert build_parser().parse_args(["rank", "--vifb", "--output-dir", str(tmp_path / "r"), "--fp8"]).fp8


def fused_images(folder, count: int, seed: int):
    """A folder of `count` random PNGs of different heights, as the benchmarks' `--vifb` folder of fused images."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (48 + 8 * index, 64, 3), dtype=np.uint8)).save(folder / f"m{index}.png")
    return folder


@pytest.mark.slow
def test_bench_fp8_tiny_quantizes_scores_and_compares(tmp_path):
    pytest.importorskip("torchao")
    fused = fused_images(tmp_path / "fused", 6, seed=2)
    output = tmp_path / "fp8.json"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_fp8.py"), "--tiny", "--vifb", str(fused),
                             "--output", str(output)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    r = json.loads(output.read_text())
    assert r["float8_emulated_on_cpu"] and r["fp8_applied"] and r["demo_fp8_applied"]
    assert r["cpu_fallback_fp8_applied"] is False and "the model is on cpu" in r["cpu_fallback_fp8_message"]
    assert 0 < r["level_logits_rel_error_mean"] <= r["level_logits_rel_error_max"] < 0.5
    assert r["demo_images"] == 6 and set(r["demo_dimensions"]) >= {"overall", "sharpness"}
    assert 0 < r["demo_max_abs_diff"] < 0.5
    for key in ("speedup_e2e", "speedup_model", "engine_bf16_e2e_img_s", "engine_fp8_e2e_img_s", "model_fp8_img_s"):
        assert r[key] > 0
    assert "fp8 / bf16 engine end to end" in result.stdout and "SRCC" in result.stdout


@pytest.mark.slow
def test_fp8_variants_tiny_quantizes_each_variant_and_profiles_it(tmp_path):
    """benchmarks/fp8_variants.py --tiny: every variant quantizes the layers it names (float8 emulated on the CPU),
    is timed and profiled against bf16, and the demo model's fidelity is measured for the ones whose numerics differ."""
    pytest.importorskip("torchao")
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import fp8_variants

    fused = fused_images(tmp_path / "fused", 4, seed=3)
    output = tmp_path / "variants.json"
    names = ["torchao_decoder", "fused_decoder", "fused"]
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "fp8_variants.py"), "--tiny", "--vifb", str(fused),
                             "--variants", ",".join(names), "--output", str(output)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    r = json.loads(output.read_text())
    assert set(r["variants"]) == {"bf16", *names} and set(r["demo"]) == set(names)
    for name in names:
        row = r["variants"][name]
        assert row["img_s"] > 0 and row["speedup_model"] > 0 and 0 < row["level_logits_rel_error_mean"] < 0.5
        assert row["profile"]["top_kernels"] and 0 < r["demo"][name]["max_abs_diff"] < 0.5  # float8 ran, and close
    # Each variant quantized what it names: the vision tower adds to the decoder's error.
    errors = {name: r["variants"][name]["level_logits_rel_error_mean"] for name in names}
    assert errors["fused_decoder"] < errors["fused"]
    model = build_tiny_model("qwen3_vl", seed=0).to(torch.bfloat16)
    with fp8_variants.cpu_float8_emulation():
        fp8_variants.quantize_variant(model, "torchao_decoder")
    kinds = {name: type(module.weight).__name__ for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    assert kinds["model.language_model.layers.0.mlp.down_proj"] == "Float8Tensor"
    assert kinds["model.visual.blocks.0.mlp.linear_fc1"] == "Parameter"
    fused = build_tiny_model("qwen3_vl", seed=0).to(torch.bfloat16)
    with fp8_variants.cpu_float8_emulation():
        fp8_variants.quantize_variant(fused, "fused_decoder")
    assert hasattr(fused.model.language_model.layers[0], "float8_weights")
    assert not hasattr(fused.model.visual.blocks[0], "float8_weights")


def test_padded_batches_and_zero_weight_rows_stay_finite_with_torchao(monkeypatch):
    """Per-row scales of all-zero rows are 0, and 0/0 would make them NaN: padding tokens (a zero embedding) then
    poison the attention of the whole row through masked values, and a zero weight row its output column (torchao's
    path; the fused one is tested in test_float8_blocks.py)."""
    pytest.importorskip("torchao")
    import torchao.quantization.quant_api as quant_api

    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)
    monkeypatch.setattr(acceleration_fuscore, "_fp8_unsupported_reason", lambda weight: None)
    model = build_tiny_model("qwen2_5_vl", seed=3).to(torch.bfloat16).eval()
    pad = model.get_processor().tokenizer.pad_token_id
    with torch.no_grad():
        model.model.language_model.embed_tokens.weight[pad] = 0
        model.model.language_model.layers[0].mlp.down_proj.weight[3] = 0
    rng = np.random.default_rng(8)
    images = [rng.integers(0, 256, (32 + 24 * i, 48 + 16 * i, 3), dtype=np.uint8) for i in range(4)]
    expected = np.array(model.score(images, batch_size=4))
    assert model.quantize_fp8()
    assert type(model.model.language_model.layers[0].mlp.down_proj.weight) is torch.nn.Parameter  # kept in bf16
    scores = np.array(model.score(images, batch_size=4))
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores, expected, atol=0.05, rtol=0)


def test_loading_the_remote_code_never_requires_torchao_or_triton():
    from transformers.dynamic_module_utils import get_imports

    for name in ("modeling_fuscore.py", "acceleration_fuscore.py", "float8_fuscore.py"):
        imports = get_imports(REPO_ROOT / name)
        assert "torchao" not in imports and "triton" not in imports
