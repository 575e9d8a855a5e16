"""Selective activation checkpointing and the compiler's activation memory budget (FuScoreForQuality's
`checkpointing_policy` / `activation_memory_budget`, the trainer's `--checkpointing_policy` /
`--activation_memory_budget`, the training rows of benchmarks/bench_speed.py): the same gradients as full
checkpointing, with more saved for less recomputation."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import acceleration_fuscore
import trainer_fuscore
from fuscore.lora import add_language_model_lora
from fuscore.tiny import build_tiny_model
from fuscore.training.config import FuScoreTrainingConfig


REPO_ROOT = Path(__file__).resolve().parents[1]
needs_compiler = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                                    reason="torch.compile on the CPU needs a C++ compiler")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)) for _ in range(3)]


def lora_model(num_layers=3):
    peft_model = add_language_model_lora(build_tiny_model("qwen3_vl", seed=5, num_layers=num_layers), r=4, alpha=8,
                                         dropout=0.0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-zero B matrices, so that every adapter matrix gets a gradient
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return peft_model


def train_step(images, policy=None, budget=None, compiled=False, checkpointing=True, num_layers=3, steps=1):
    """Gradients of the adapters after a forward and backward, and the bytes the autograd graph saved (tensors
    packed by saved-tensor hooks, parameters excluded) in the last step."""
    peft_model = lora_model(num_layers)
    model = peft_model.get_base_model()
    model.checkpointing_policy, model.activation_memory_budget = policy, budget
    if compiled:
        model.compile_blocks()
    if checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model.train()
    batch = model.processor(images)
    parameters = {parameter.data_ptr() for parameter in peft_model.parameters()}
    saved = [0]

    def pack(tensor):
        if tensor.data_ptr() not in parameters:
            saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    for _ in range(steps):
        peft_model.zero_grad(set_to_none=True)
        saved[0] = 0
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            output = peft_model(**batch)
        output.score.sum().backward()
    gradients = {name: p.grad.clone() for name, p in peft_model.named_parameters() if p.requires_grad}
    return gradients, saved[0], model


def assert_same_gradients(actual, expected, atol=1e-6):
    assert all(gradient.abs().max() > 0 for gradient in expected.values())
    for name, gradient in expected.items():
        torch.testing.assert_close(actual[name], gradient, rtol=1e-4, atol=atol, msg=name)


def test_the_mlp_policy_saves_the_gate_and_up_outputs_with_the_same_gradients(images, monkeypatch):
    """Eager layers: transformers' checkpoint with the policy's context saves exactly the frozen gate and up
    projections' outputs of every layer (not LoRA's matmuls of the same width) and gives full checkpointing's
    gradients."""
    saved_shapes = []
    policy_of = acceleration_fuscore.CHECKPOINTING_POLICIES["mlp"]

    def recording(text_config):
        policy = policy_of(text_config)

        def record(ctx, op, *args, **kwargs):
            decision = policy(ctx, op, *args, **kwargs)
            if not ctx.is_recompute and decision == torch.utils.checkpoint.CheckpointPolicy.MUST_SAVE:
                saved_shapes.append((tuple(args[-2].shape), tuple(args[-1].shape)))
            return decision

        return record

    monkeypatch.setitem(acceleration_fuscore.CHECKPOINTING_POLICIES, "mlp", recording)
    full, _, _ = train_step(images)
    selective, _, model = train_step(images, policy="mlp")
    assert_same_gradients(selective, full, atol=1e-7)
    config = model.model.language_model.config
    tokens = saved_shapes[0][0][0]
    assert len(saved_shapes) == 2 * 3  # gate and up, three layers
    assert set(saved_shapes) == {((tokens, config.hidden_size), (config.hidden_size, config.intermediate_size))}


def test_bad_settings_fail_naming_them(images):
    model = build_tiny_model("qwen3_vl", seed=5)
    model.checkpointing_policy = "attention"
    with pytest.raises(ValueError, match="checkpointing_policy='attention': known policies are mlp"):
        model.gradient_checkpointing_enable()
    model.checkpointing_policy, model.activation_memory_budget = None, 0.3
    with pytest.raises(ValueError, match="activation_memory_budget needs compiled decoder layers"):
        model.gradient_checkpointing_enable()
    model.activation_memory_budget = 1.5
    with pytest.raises(ValueError, match=r"activation_memory_budget=1.5: must lie in \[0, 1\]"):
        model.gradient_checkpointing_enable()

    def config(**kwargs):
        return FuScoreTrainingConfig(output_dir="unused", use_cpu=True, report_to="none", **kwargs)

    with pytest.raises(ValueError, match="--checkpointing_policy needs --gradient_checkpointing"):
        config(checkpointing_policy="mlp")
    with pytest.raises(ValueError, match="--checkpointing_policy='gate': known policies are mlp"):
        config(checkpointing_policy="gate", gradient_checkpointing=True)
    with pytest.raises(ValueError, match="--activation_memory_budget needs --gradient_checkpointing and --compile_blocks"):
        config(activation_memory_budget=0.3, gradient_checkpointing=True)
    with pytest.raises(ValueError, match=r"--activation_memory_budget=-0.1: must lie in \[0, 1\]"):
        config(activation_memory_budget=-0.1, gradient_checkpointing=True, compile_blocks=True)
    with pytest.raises(ValueError, match="exclude each other"):
        config(activation_memory_budget=0.3, checkpointing_policy="mlp", gradient_checkpointing=True, compile_blocks=True)
    assert config(activation_memory_budget=0.3, gradient_checkpointing=True, compile_blocks=True).activation_memory_budget == 0.3


@pytest.mark.slow
def test_the_trainer_hands_the_policy_to_the_model(tmp_path, monkeypatch):
    """--checkpointing_policy reaches the layers when the Trainer switches checkpointing on, and trains to the loss of
    full checkpointing."""
    seen = []
    original = trainer_fuscore.FuScoreTrainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            layers = model.get_base_model().model.language_model.layers
            seen.append([getattr(layer._gradient_checkpointing_func, "keywords", {}).get("context_fn") is not None
                         for layer in layers])
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trainer_fuscore.FuScoreTrainer, "compute_loss", compute_loss)
    run = ["--model_name_or_path", "tiny:qwen3_vl:32x3", "--dtype", "float32", "--train_table", "synthetic",
           "--synthetic_image_size", "56", "--synthetic_train_scenes", "4", "--synthetic_eval_scenes", "2",
           "--synthetic_images_per_scene", "2", "--pairs_per_batch", "2", "--images_per_pair", "2", "--max_steps", "2",
           "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true",
           "--dataloader_num_workers", "0", "--gradient_checkpointing", "true", "--use_lora", "true", "--lora_r", "4",
           "--lora_alpha", "8", "--lora_dropout", "0", "--seed", "3",
           "--gradient_checkpointing_kwargs", '{"use_reentrant": false}']
    full = trainer_fuscore.main(run + ["--output_dir", str(tmp_path / "full")])
    assert seen and not any(seen[0])
    seen.clear()
    selective = trainer_fuscore.main(run + ["--output_dir", str(tmp_path / "selective"), "--checkpointing_policy", "mlp",
                                            "--uncheckpointed_layers", "1"])
    assert seen and seen[0] == [True, True, False]
    assert selective["train"]["train_loss"] == pytest.approx(full["train"]["train_loss"], rel=1e-5)


@needs_compiler
@pytest.mark.slow
def test_compiled_selective_checkpointing_and_memory_budgets_keep_the_gradients(images, monkeypatch):
    """Compiled layers: the policy runs inside the compiled region, where it keeps the frozen gate and up projections'
    outputs (its decisions, recorded while the region compiles); a larger memory budget saves more; each mode
    compiles one graph for all decoder layers; the gradients are full checkpointing's.

    What the policy keeps lives inside the checkpoint's own frame, out of reach of the saved-tensor hooks that count
    the budgets' bytes, so it is checked by its decisions, not by comparing byte counts with a budget (which compares
    two compiler heuristics)."""
    from torch._dynamo.utils import counters
    from torch.utils.checkpoint import CheckpointPolicy

    decisions = []
    policy_of = acceleration_fuscore.CHECKPOINTING_POLICIES["mlp"]

    def recording(text_config):
        policy = policy_of(text_config)

        def record(ctx, op, *args, **kwargs):
            decision = policy(ctx, op, *args, **kwargs)
            if decision == CheckpointPolicy.MUST_SAVE:
                decisions.append((tuple(args[-2].shape), tuple(args[-1].shape)))
            return decision

        return record

    monkeypatch.setitem(acceleration_fuscore.CHECKPOINTING_POLICIES, "mlp", recording)
    full, _, _ = train_step(images, num_layers=4)
    saved = {}
    for name, kwargs in (("budget0", dict(budget=0.0)), ("budget0.5", dict(budget=0.5)), ("budget1", dict(budget=1.0)),
                         ("mlp", dict(policy="mlp"))):
        torch._dynamo.reset()
        counters.clear()
        gradients, saved[name], model = train_step(images, compiled=True, num_layers=4, steps=2, **kwargs)
        assert_same_gradients(gradients, full, atol=1e-5)
        layers = model.model.language_model.layers
        assert not any(layer.gradient_checkpointing for layer in layers)  # torch's checkpoint is inside or gone
        assert all(layer._fuscore_training_call for layer in layers)
        # One compiled graph of the decoder layers' training call, shared by every layer; the vision blocks'
        # graphs from compile_blocks come beside it.
        if "budget" in name:
            assert len(torch._dynamo.eval_frame._debug_get_cache_entry_list(acceleration_fuscore._call_block.__code__)) == 1
        assert counters["stats"]["unique_graphs"] <= 3, (name, dict(counters["stats"]))
        model.gradient_checkpointing_disable()  # back to the blocks' own compiled code
        assert not any(layer._fuscore_training_call for layer in layers)
        if name == "mlp":  # compiling the region consulted the policy, which kept gate and up (and nothing else)
            config = model.model.language_model.config
            assert decisions and len(decisions) % 2 == 0, decisions
            assert {(left[-1], right[-1]) for left, right in decisions} == {(config.hidden_size, config.intermediate_size)}
    torch._dynamo.reset()
    assert saved["budget0"] <= saved["budget0.5"] <= saved["budget1"] and saved["budget0"] < saved["budget1"]


def run_bench(*arguments, timeout=900):
    return subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_speed.py"), *arguments],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def test_bench_speed_names_a_bad_row_or_part(monkeypatch, capsys):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import bench_speed

    monkeypatch.setattr(sys, "argv", ["bench_speed.py", "--tiny", "--parts", "training", "--train-rows",
                                      "baseline_ckpt,fuscore_sac"])
    with pytest.raises(SystemExit, match="unknown row\\(s\\) fuscore_sac; .*fuscore_compiled_budget0.5"):
        bench_speed.main()
    monkeypatch.setattr(sys, "argv", ["bench_speed.py", "--tiny", "--parts", "scoring,inference"])
    with pytest.raises(SystemExit):
        bench_speed.main()
    assert "--parts scoring,inference: choose from scoring, training" in capsys.readouterr().err


@needs_compiler
@pytest.mark.slow
def test_bench_speed_tiny_runs_the_new_training_rows(tmp_path):
    rows = ["baseline_ckpt", "fuscore_compiled_ckpt", "fuscore_compiled_sac_mlp", "fuscore_compiled_budget0.5",
            "reward_fwd_bwd", "reward_fwd_bwd_checkpointed"]
    output = tmp_path / "speed.json"
    done = run_bench("--tiny", "--parts", "training", "--train-rows", ",".join(rows), "--output", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results["parts"] == ["training"] and results["train_rows"] == rows[:4]
    for name in rows:
        rounds = results[f"train_{name}_rounds_samples_s"]
        assert len(rounds) == 2 and min(rounds) > 0, name
    assert "engine_e2e_img_s" not in results and "train_fuscore_eager_ckpt_samples_s" not in results
    assert "activation memory budget 0.5" in done.stdout and "reward path" in done.stdout
