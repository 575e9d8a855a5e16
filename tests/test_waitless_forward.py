"""The scoring forward pass that does not wait for the GPU (`acceleration_fuscore.prepare_base_model`,
`scoring_fuscore.batch_for_model`), and the engine's pause of its workers while kernels are launched
(`scoring_fuscore._LaunchGate`)."""

import copy
import pickle
import threading
import time
import traceback

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import acceleration_fuscore
import modeling_fuscore
import scoring_fuscore
from fuscore.tiny import FAMILIES, build_tiny_model


def gpu_waits(call) -> int:
    """`benchmarks/bench_speed.gpu_waits` (the benchmarks' one count of waits for the GPU)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_speed import gpu_waits as count

    return count(call)


def engine_batch(model, images):
    """A batch as the scoring engine hands it to `model` on a GPU (collated, position inputs, `batch_for_model`),
    right-padded on the CPU too."""
    processor = model.processor
    batch = processor.collate([processor.prepare_sample(image) for image in images])
    batch = scoring_fuscore.batch_for_model(model, {**batch, **model.position_inputs(batch)})
    if "position_ids" in batch:
        batch["right_padded"] = True
    return batch


class HostReads(TorchDispatchMode):
    """Records the operators that read a tensor's values or size on the host: on a GPU each waits for it."""

    READS = {"aten._local_scalar_dense.default", "aten.item.default", "aten.nonzero.default",
             "aten.masked_select.default", "aten.is_nonzero.default", "aten.equal.default"}

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        boolean_index = str(func).startswith("aten.index") and any(
            isinstance(arg, (list, tuple)) and any(torch.is_tensor(t) and t.dtype == torch.bool for t in arg)
            for arg in args)
        if str(func) in self.READS or boolean_index:
            frame = next(f for f in reversed(traceback.extract_stack()[:-1]) if "torch/" not in f.filename)
            self.reads.append(f"{func} at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} ({frame.name})")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_engine_forward_reads_nothing_on_the_host_and_scores_as_before(tiny_models, random_images, family):
    """With the engine's inputs the forward pass runs no operator that reads a value on the host (on a GPU each
    waits for it), and its outputs are the ones of the base model's own count and deepstack additions."""
    model = tiny_models[family]
    batch = engine_batch(model, random_images[:3])
    assert batch["image_tokens_checked"] is True
    with torch.inference_mode():
        reads = HostReads()
        with reads:
            waitless = model(**batch)
        assert reads.reads == []
        counted = model(**{**batch, "image_tokens_checked": False})
    torch.testing.assert_close(waitless.level_logits, counted.level_logits, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_grid_on_the_host_meets_no_tensor_of_the_device(tiny_models, random_images, family, monkeypatch):
    """On a GPU the engine keeps `image_grid_thw` on the CPU and the rest on the GPU; here the meta device stands in
    for the GPU: an operator that mixed the two would fail as it would there."""
    import contextlib

    model = copy.deepcopy(tiny_models[family])
    processor = model.processor
    batch = processor.collate([processor.prepare_sample(image) for image in random_images[:3]])
    batch = {**batch, **model.position_inputs(batch), "right_padded": True}
    grid = batch.pop("image_grid_thw")
    batch = {**scoring_fuscore.to_device(batch, torch.device("meta")), "image_grid_thw": grid}
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
    model.to("meta", dtype=torch.bfloat16)
    monkeypatch.setattr(torch, "autocast", lambda *args, **kwargs: contextlib.nullcontext())  # none for meta
    with torch.inference_mode():
        output = model(**batch)
    assert output.level_logits.device.type == "meta" and output.level_logits.shape == (3, 5)


def test_deepstack_additions_without_boolean_indexing_are_bit_identical(tiny_models):
    model = copy.deepcopy(tiny_models["qwen3_vl"])
    model.score([np.zeros((64, 64, 3), np.uint8)])  # prepares the base model
    language_model = model.model.language_model
    assert isinstance(language_model, acceleration_fuscore._WaitlessDeepstack)
    own = type(language_model).__bases__[1]._deepstack_process  # the language model's own class
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 11, 16, generator=generator).to(torch.bfloat16)
    mask = torch.rand(3, 11, generator=generator) > 0.5
    visual = torch.randn(int(mask.sum()), 16, generator=generator).to(torch.bfloat16)
    with torch.inference_mode():
        expected = own(language_model, hidden.clone(), mask, visual)
        got = language_model._deepstack_process(hidden, mask, visual)
    assert torch.equal(got, expected)
    assert torch.equal(hidden, hidden.clone())  # the input is not changed in place


def test_a_batch_whose_image_tokens_do_not_match_its_grid_is_refused_on_the_host(tiny_models, random_images):
    model = tiny_models["qwen3_vl"]
    processor = model.processor
    batch = processor.collate([processor.prepare_sample(image) for image in random_images[:2]])
    grid = batch["image_grid_thw"].clone()
    grid[0, 1] += 2
    with pytest.raises(ValueError, match="Image features and image tokens do not match, tokens: .*, features: "):
        model.position_inputs({**batch, "image_grid_thw": grid})


def test_the_models_classes_are_mixed_once_and_survive_a_copy_a_pickle_and_a_reload(tiny_models, random_images, tmp_path):
    model = copy.deepcopy(tiny_models["qwen3_vl"])
    first = model.score(random_images[:2])
    base_class = type(model.model)
    assert isinstance(model.model, acceleration_fuscore._HostCountedPlaceholders)
    model.score(random_images[:2])
    assert type(model.model) is base_class and base_class.__name__ == "Qwen3VLModel"
    copied = copy.deepcopy(model)
    assert type(copied.model) is base_class.__bases__[1]  # its own class, until it next scores
    assert copied.score(random_images[:2]) == first
    assert pickle.dumps(model)  # a class made at run time could not be pickled by name: the model's own is
    assert model.model.__reduce_ex__(4)[1][0] is base_class.__bases__[1]
    model.save_pretrained(tmp_path / "saved")
    from modeling_fuscore import FuScoreForQuality

    assert FuScoreForQuality.from_pretrained(tmp_path / "saved").score(random_images[:2]) == pytest.approx(first, abs=1e-6)


# ---------------------------------------------------------------------------------------------------- the gate
class Recording:
    def __init__(self):
        self.started = []

    def __getitem__(self, position):
        self.started.append(position)
        return {"position": position}


def _first_batch_read_during_a_launch(monkeypatch, spare_awaited: bool, batches: list, prefetch_batches: int):
    """Decoding threads started while a launch holds the gate (no time limit), and a reader waiting for the first batch:
    `(gate, dataset, decoded, reader, read)`; the caller leaves `gate.launching()` (returned entered) when it will."""
    monkeypatch.setattr(scoring_fuscore, "LAUNCH_PAUSE_LIMIT", 10.0)
    monkeypatch.setattr(scoring_fuscore, "PAUSE_ONLY_WORK_AHEAD", spare_awaited)
    gate = scoring_fuscore._LaunchGate(True)
    dataset, read = Recording(), []
    launch = gate.launching()
    launch.__enter__()
    decoded = scoring_fuscore._decoded_in_threads(dataset, batches, 2, prefetch_batches, gate)
    reader = threading.Thread(target=lambda: read.append(next(decoded)))
    reader.start()
    return launch, dataset, decoded, reader, read


def _positions(read) -> list:
    return [[sample["position"] for sample in samples] for samples, _ in read]


def test_decoding_threads_start_nothing_while_kernels_are_launched(monkeypatch):
    launch, dataset, decoded, reader, read = _first_batch_read_during_a_launch(monkeypatch, False, [[0, 1], [2, 3]], 1)
    time.sleep(0.3)
    assert dataset.started == []
    launch.__exit__(None, None, None)
    reader.join(timeout=10)
    assert _positions(read) == [[0, 1]]
    assert sorted(dataset.started)[:2] == [0, 1]
    decoded.close()


def test_sparing_the_awaited_batch_lets_only_its_decoding_run_through_a_launch(monkeypatch):
    launch, dataset, decoded, reader, read = _first_batch_read_during_a_launch(
        monkeypatch, True, [[0, 1], [2, 3], [4, 5]], 2)
    reader.join(timeout=10)
    time.sleep(0.2)
    assert _positions(read) == [[0, 1]]
    # The first batch was handed on: the second is awaited now and runs; the third waits for the launch's end.
    assert sorted(dataset.started) == [0, 1, 2, 3]
    launch.__exit__(None, None, None)
    assert _positions([next(decoded), next(decoded)]) == [[2, 3], [4, 5]]
    decoded.close()


def test_a_worker_waits_at_most_the_limit_and_the_gate_opens_on_an_error(monkeypatch):
    monkeypatch.setattr(scoring_fuscore, "LAUNCH_PAUSE_LIMIT", 0.05)
    gate = scoring_fuscore._LaunchGate(True)
    with gate.launching():
        start = time.perf_counter()
        gate.wait()
        assert 0.04 <= time.perf_counter() - start < 2
    with pytest.raises(RuntimeError):
        with gate.launching():
            raise RuntimeError("the forward pass failed")
    assert not gate.launching_now
    off = scoring_fuscore._LaunchGate(False)
    with off.launching():
        start = time.perf_counter()
        off.wait()
        assert time.perf_counter() - start < 0.04


# ---------------------------------------------------------------------------------------------------- on a GPU
@pytest.mark.skipif(not torch.cuda.is_available(), reason="waits for the GPU are a GPU's")
@pytest.mark.parametrize("family", FAMILIES)
def test_on_a_gpu_the_engine_forward_leaves_out_the_base_models_waits_and_scores_as_with_them(family, monkeypatch):
    """The waits the engine's inputs remove: reading the grid on the GPU (1), the image-token count's message and
    check (2) and, in Qwen3-VL, two boolean indexings per deepstack layer. (Eager tiny models wait elsewhere too:
    calls 12 and 13 of `benchmarks/RESULTS_speed.md` counted 2-6 waits per such forward, not traced, against 0-1 for
    the compiled 8B engine; so this counts the difference, not zero.)"""
    model = build_tiny_model(family, seed=3, num_layers=2).to("cuda")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (56 + 28 * (i % 2), 84, 3), dtype=np.uint8) for i in range(12)]
    batch = engine_batch(model, images[:4])
    assert batch["image_grid_thw"].device.type == "cpu"
    with_waits = {**batch, "image_grid_thw": batch["image_grid_thw"].to("cuda"), "image_tokens_checked": False}
    language_model = model.model.language_model
    deepstack_layers = len(getattr(getattr(model.model.visual, "config", None), "deepstack_visual_indexes", None) or [])
    with torch.inference_mode():
        model(**batch)
        waitless = gpu_waits(lambda: model(**batch))
        saved = type(language_model)
        with monkeypatch.context() as patched:
            if isinstance(language_model, acceleration_fuscore._WaitlessDeepstack):
                # The base model's own deepstack additions (the forward pass would mix the class in again).
                patched.setattr(modeling_fuscore, "prepare_base_model", lambda base_model: None)
                language_model.__class__ = saved.__bases__[1]
            try:
                before = gpu_waits(lambda: model(**with_waits))
            finally:
                language_model.__class__ = saved
    assert before - waitless >= 2 + 2 * deepstack_layers, (before, waitless)
    shipped = model.score(images, batch_size=4, num_workers=2)
    settings = scoring_fuscore.WAITLESS_FORWARD, scoring_fuscore.PAUSE_WORKERS_WHILE_LAUNCHING
    try:
        scoring_fuscore.WAITLESS_FORWARD = scoring_fuscore.PAUSE_WORKERS_WHILE_LAUNCHING = False
        unpaused = model.score(images, batch_size=4, num_workers=2)
    finally:
        scoring_fuscore.WAITLESS_FORWARD, scoring_fuscore.PAUSE_WORKERS_WHILE_LAUNCHING = settings
    np.testing.assert_allclose(shipped, unpaused, atol=1e-5)
