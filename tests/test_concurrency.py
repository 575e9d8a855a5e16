"""Concurrent scoring on one model object (a web server, the Gradio app, an Inference Endpoint): every call gets the
scores a serial call gets, bit for bit, whatever the other threads score at the same time."""

import copy
import threading

import numpy as np
import pytest

from fuscore.tiny import FAMILIES


def _images():
    rng = np.random.default_rng(21)
    # Four shapes, so concurrent batches differ in visual-token count, vision-tower segments and padding.
    shapes = [(40, 56), (72, 96), (48, 130), (112, 64)]
    return [rng.integers(0, 256, (*shapes[i % 4], 3), dtype=np.uint8) for i in range(10)]


def _jobs(images):
    """(images, batch size, dimensions) per call: other subsets, orders and batch sizes in every job."""
    return [
        (images, 1, ("overall",)),
        (images[::-1], 3, ("overall", "sharpness")),
        (images[2:9], 8, ("artifacts", "overall")),
        (images[1::2], 2, ("thermal_retention",)),
        (images[:5] + images[5:][::-1], 5, ("overall", "texture_preservation", "sharpness")),
    ]


def _run(model, job):
    images, batch_size, dimensions = job
    return model.score(images, dimensions=dimensions, batch_size=batch_size, return_details=True)


@pytest.mark.parametrize("encoder_outputs", [True, False], ids=["mm_encoder_outputs", "image_prefixed_inputs"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.slow
def test_four_threads_with_mixed_shapes_and_batch_sizes_get_the_serial_scores_exactly(tiny_models, family,
                                                                                      encoder_outputs, monkeypatch):
    import modeling_fuscore

    model = copy.deepcopy(tiny_models[family])  # its dropout and mode are changed below
    # Both routes by which the forward pass hands the vision inputs over (see modeling_fuscore.takes_encoder_outputs).
    if encoder_outputs and not modeling_fuscore.takes_encoder_outputs(model.model):
        pytest.skip("this transformers has no mm_encoder_outputs (added in 5.18)")
    monkeypatch.setattr(modeling_fuscore, "takes_encoder_outputs", lambda base_model: encoder_outputs)
    # Dropout that acts in training mode: a call that ran while another had switched the model back to training
    # would get other scores.
    for layer in model.model.language_model.layers:
        if hasattr(layer, "self_attn"):  # Qwen3.5's Gated DeltaNet layers have no attention dropout
            layer.self_attn.attention_dropout = 0.5
    model.train()
    jobs = _jobs(_images())
    serial = [_run(model, job) for job in jobs]
    assert model.training, "scoring must give the model back in the mode it found it"

    results, errors = {}, []
    start = threading.Barrier(4)

    def worker(thread_index):
        try:
            start.wait()
            for round_index in range(3):
                for job_index in range(len(jobs)):
                    job_index = (job_index + thread_index + round_index) % len(jobs)  # threads run other jobs at once
                    results[(thread_index, round_index, job_index)] = _run(model, jobs[job_index])
        except BaseException as error:  # noqa: BLE001 - reported below with the thread's name
            errors.append(f"thread {thread_index}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 4 * 3 * len(jobs)
    for (thread_index, round_index, job_index), details in results.items():
        assert details == serial[job_index], f"thread {thread_index}, round {round_index}, job {job_index}"
    assert model.training


def test_concurrent_first_calls_load_the_processor_once(saved_tiny_model):
    from modeling_fuscore import FuScoreForQuality

    model = FuScoreForQuality.from_pretrained(saved_tiny_model)
    images = _images()[:3]
    expected = FuScoreForQuality.from_pretrained(saved_tiny_model).score(images)
    processors, errors = [], []

    def worker():
        try:
            assert model.score(images) == expected
            processors.append(model.get_processor())
        except BaseException as error:  # noqa: BLE001
            errors.append(repr(error))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len({id(processor) for processor in processors}) == 1
