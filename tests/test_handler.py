"""The Inference Endpoints handler (handler.py) of an exported folder, called as the toolkit or a threaded server
would: its pixel cap reads the header, requests are bounded in size and in number waiting, bad requests say which
input and which parameter, and 50 concurrent requests get the direct scores."""

import base64
import importlib.util
import io
import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from app_support import write_palette_png
from fuscore.export import HANDLER_FILE, export_model


LIMIT_VARIABLES = ("FUSCORE_MAX_IMAGE_PIXELS", "FUSCORE_MAX_INPUTS", "FUSCORE_MAX_WAITING_REQUESTS")


@pytest.fixture(autouse=True)
def _no_limits_from_the_environment(monkeypatch):
    for variable in LIMIT_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture(scope="module")
def handler_module():
    spec = importlib.util.spec_from_file_location("fuscore_endpoint_handler_under_test", HANDLER_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(saved_tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("handler")
    shutil.copytree(saved_tiny_model, root / "trained")
    (root / "trained" / "fuscore_eval.json").write_text(json.dumps({"metrics": {}, "synthetic": True}))
    return export_model(root / "trained", root / "fuscore").folder


@pytest.fixture(scope="module")
def endpoint(handler_module, exported):
    return handler_module.EndpointHandler(str(exported), max_waiting_requests=64)


class GatedScorer:
    """Stands in front of the handler's pipeline: counts calls and, with a gate, holds each until it opens."""

    def __init__(self, scorer, gate=None):
        self.scorer, self.gate, self.calls, self.entered = scorer, gate, 0, threading.Event()

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(60), "the test never opened the gate"
        return self.scorer(*args, **kwargs)


def _png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def good_b64():
    return _b64(_png(np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)))


def test_large_palette_png_is_refused_from_its_header(endpoint, tmp_path, good_b64):
    palette = _b64(write_palette_png(tmp_path / "palette.png", 9400, 9500).read_bytes())
    counting = GatedScorer(endpoint.scorer)
    endpoint.scorer, original = counting, endpoint.scorer
    try:
        with pytest.raises(ValueError, match=r"inputs\[1\]\.fused: 9400x9500 = 89,300,000 pixels, over this endpoint's "
                                             r"limit of 16,777,216 pixels"):
            endpoint({"inputs": [good_b64, {"fused": palette}]})
        bomb = _b64(write_palette_png(tmp_path / "bomb.png", 20000, 20000).read_bytes())
        with pytest.raises(ValueError, match=r"inputs: more than 178,956,970 pixels, over this endpoint's limit"):
            endpoint({"inputs": bomb})
        pil = Image.new("L", (5000, 4000))  # what the toolkit hands over for a binary image request
        with pytest.raises(ValueError, match="5000x4000 = 20,000,000 pixels"):
            endpoint({"inputs": pil})
    finally:
        endpoint.scorer = original
    assert counting.calls == 0  # refused before the pipeline decoded anything


def test_limits_come_from_arguments_or_the_environment(handler_module, exported, good_b64, monkeypatch):
    small = handler_module.EndpointHandler(str(exported), max_image_pixels=48 * 64 - 1, max_inputs=2)
    with pytest.raises(ValueError, match=r"64x48 = 3,072 pixels, over this endpoint's limit of 3,071"):
        small({"inputs": good_b64})
    with pytest.raises(ValueError, match=r"3 inputs in one request; this endpoint takes at most 2"):
        small({"inputs": [good_b64] * 3})

    monkeypatch.setenv("FUSCORE_MAX_IMAGE_PIXELS", "3000")
    monkeypatch.setenv("FUSCORE_MAX_WAITING_REQUESTS", "0")
    from_environment = handler_module.EndpointHandler(str(exported))
    assert (from_environment.max_image_pixels, from_environment.max_inputs, from_environment.max_waiting_requests) == (3000, 64, 0)
    with pytest.raises(ValueError, match="limit of 3,000 pixels"):
        from_environment({"inputs": good_b64})
    monkeypatch.setenv("FUSCORE_MAX_INPUTS", "lots")
    with pytest.raises(ValueError, match="environment variable FUSCORE_MAX_INPUTS must be an integer, got 'lots'"):
        handler_module.EndpointHandler(str(exported))
    with pytest.raises(ValueError, match="max_image_pixels must be an integer of at least 1"):
        handler_module.EndpointHandler(str(exported), max_image_pixels=0)


@pytest.mark.parametrize("data, message", [
    (b"this is a text file, not an image\n", r"inputs\[0\]\.ir: 34 bytes that are not a readable image \(no image format"),
    (b"", r"inputs\[0\]\.ir: 0 bytes that are not a readable image"),
])
def test_non_images_name_their_input(endpoint, good_b64, data, message):
    with pytest.raises(ValueError, match=message):
        endpoint({"inputs": [{"fused": good_b64, "ir": _b64(data)}]})


def test_truncated_image_gets_fuscores_message(endpoint, good_b64):
    data = base64.b64decode(good_b64)
    with pytest.raises(ValueError, match="cannot decode the image.*truncated"):
        endpoint({"inputs": _b64(data[: len(data) // 2])})


@pytest.mark.parametrize("parameters, message", [
    ({"batch_size": 2.5}, r"batch_size must be a positive integer, got 2\.5"),
    ({"batch_size": "4"}, r"batch_size must be a positive integer, got '4'"),
    ({"batch_size": True}, r"batch_size must be a positive integer, got True"),
    ({"batch_size": 0}, r"batch_size must be a positive integer, got 0"),
    ({"dimensions": 5}, r"dimensions must be \"all\", a dimension name or a list of names, got 5"),
    ({"dimensions": ["overall", None]}, r"dimensions must be"),
    ([1, 2], r'"parameters" must be a JSON object, got list'),
])
def test_bad_parameters_are_named(endpoint, good_b64, parameters, message):
    with pytest.raises(ValueError, match=message):
        endpoint({"inputs": good_b64, "parameters": parameters})


def test_busy_endpoint_refuses_at_once(handler_module, exported, good_b64):
    busy = handler_module.EndpointHandler(str(exported), max_waiting_requests=1)
    gate = threading.Event()
    busy.scorer = gated = GatedScorer(busy.scorer, gate)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(busy, {"inputs": good_b64})
        assert gated.entered.wait(60)  # the first request holds the model
        second = pool.submit(busy, {"inputs": good_b64})  # waits for it: the one waiting place
        deadline = threading.Event()
        while busy._admitted._value > 0 and not deadline.wait(0.05):
            pass
        with pytest.raises(handler_module.EndpointBusyError, match="busy: one request is being scored and 1 are waiting"):
            busy({"inputs": good_b64})
        gate.set()
        results = [first.result(timeout=120), second.result(timeout=120)]
    assert results[0] == results[1] and gated.calls == 2
    assert busy({"inputs": good_b64}) == results[0]  # the places are given back


@pytest.mark.slow
def test_fifty_concurrent_requests_get_the_direct_scores(endpoint, exported):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(exported, trust_remote_code=True)
    rng = np.random.default_rng(17)
    images = [rng.integers(0, 256, (32 + 6 * (i % 8), 40 + 9 * (i % 5), 3), dtype=np.uint8) for i in range(50)]
    dimensions = list(model.get_processor().prompts)
    expected = [model.score(image, dimensions=dimensions, return_details=True) for image in images]
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda image: endpoint({"inputs": _b64(_png(image))}), images))
    for want, got in zip(expected, results):
        assert got["score"] == pytest.approx(want["overall"]["score"], abs=1e-5)
        for dim, value in got["dimensions"].items():
            assert value["score"] == pytest.approx(want[dim]["score"], abs=1e-5), dim
        assert list(got["probs"].values()) == pytest.approx(want["overall"]["probs"], abs=1e-5)


def test_a_bad_item_of_a_list_is_named_by_its_position(endpoint, good_b64):
    data = base64.b64decode(good_b64)
    with pytest.raises(ValueError, match=r"^inputs\[1\]: cannot decode the image") as error:
        endpoint({"inputs": [good_b64, _b64(data[: len(data) // 2]), good_b64]})
    assert "<bytes>" not in str(error.value)


def test_a_data_url_without_its_comma_is_named(endpoint, good_b64):
    with pytest.raises(ValueError, match=r"inputs\[0\]: a data URL without the comma"):
        endpoint({"inputs": ["data:image/png;base64" + good_b64]})
