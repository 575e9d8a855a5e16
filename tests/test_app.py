"""The Gradio app (app.py) served on the loopback and driven through gradio_client, as an API user or a hostile one
would: bad uploads get FuScore's message, large ones are refused from their header, the queue is bounded, 50
concurrent requests get the direct scores, and `python app.py` started elsewhere serves the shipped model."""

import base64
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from app_support import REPO_ROOT, free_port, load_app_module, served, write_palette_png


if importlib.util.find_spec("gradio") is None or importlib.util.find_spec("gradio_client") is None:
    pytest.skip("gradio is not installed (pip install gradio, the project's [app] extra)", allow_module_level=True)
Client = handle_file = AppError = QueueError = None  # gradio_client's, set by _gradio_client below


@pytest.fixture(scope="module", autouse=True)
def _gradio_client():
    """gradio_client (and, in app_module, gradio) is imported when this file's tests run, not when pytest collects
    them: gradio takes seconds to import, and a test process that runs none of these tests should not pay them."""
    global Client, handle_file, AppError, QueueError
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

GENERIC_ERROR = "upstream Gradio app has raised an exception"


class RecordingModel:
    """The model as the app sees it, counting `score` calls; `gate`, when set, holds each call until it is opened."""

    def __init__(self, model, gate: threading.Event = None):
        self._model, self.gate, self.calls, self.entered = model, gate, 0, threading.Event()

    def __getattr__(self, name):
        return getattr(self._model, name)

    def score(self, *args, **kwargs):
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(60), "the test never opened the gate"
        return self._model.score(*args, **kwargs)


@pytest.fixture(scope="module")
def app_module():
    return load_app_module()


@pytest.fixture(scope="module")
def served_app(app_module, tiny_model):
    model = RecordingModel(tiny_model)
    app = app_module.build_app(model, model_name="tiny test model", queue_size=64)
    with served(app_module, app) as url:
        # The client's HTTP calls wait up to 120 s (httpx's default is 5 s): on a loaded 2-core machine 50 uploads at
        # once can take longer, and the test bounds the whole run itself.
        yield Client(url, verbose=False, max_workers=50, download_files=False, httpx_kwargs={"timeout": 120}), model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (60, 84, 3), dtype=np.uint8)).save(folder / "good.png")
    (folder / "notes.png").write_text("this is a text file, not an image\n")
    (folder / "empty.png").write_bytes(b"")
    good = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    write_palette_png(folder / "palette.png", 9400, 9500)  # 89.3 million pixels: under Pillow's bomb limit
    write_palette_png(folder / "bomb.png", 20000, 20000)  # 400 million: over twice Pillow's limit, which refuses it
    return folder


def _score(client, *paths):
    return client.predict(*[handle_file(str(path)) for path in paths], api_name="/score")


def _cells(table: dict, column: str) -> dict:
    """`{dimension: value}` of one column of the scores table as an API client receives it: data, not markup."""
    position = table["headers"].index(column)
    return {row[0]: row[position] for row in table["data"]}


@pytest.mark.parametrize("name, reason", [("notes.png", "cannot decode the image"), ("empty.png", "cannot decode"),
                                          ("truncated.png", "truncated")])
def test_unreadable_upload_gets_fuscores_message(served_app, files, name, reason):
    client, _ = served_app
    with pytest.raises(AppError) as raised:
        _score(client, files / name)
    message = str(raised.value)
    assert GENERIC_ERROR not in message
    assert reason in message and f"fused image ({name})" in message  # the upload's name, not a server temp path
    assert "/tmp" not in message


def test_large_palette_png_is_refused_from_its_header(served_app, files):
    client, model = served_app
    assert (files / "palette.png").stat().st_size < 600_000  # a small file that decodes to 89 MB
    calls = model.calls
    with pytest.raises(AppError, match=r"9400x9500 = 89,300,000 pixels, over this app's limit of 16,777,216 pixels"):
        _score(client, files / "palette.png")
    assert model.calls == calls  # refused before the model's loader would have decoded it


def test_decompression_bomb_is_refused_with_the_apps_limit(served_app, files):
    client, model = served_app
    calls = model.calls
    with pytest.raises(AppError, match="more than 178,956,970 pixels, over this app's limit of 16,777,216") as raised:
        _score(client, files / "bomb.png")
    assert GENERIC_ERROR not in str(raised.value) and model.calls == calls


@pytest.mark.slow
def test_fifty_concurrent_requests_get_the_direct_scores(served_app, app_module, tiny_model, tmp_path):
    client, _ = served_app
    rng = np.random.default_rng(21)
    paths = []
    for index in range(50):  # mixed shapes, so requests differ in visual-token count and answers cannot be swapped
        path = tmp_path / f"image_{index}.png"
        Image.fromarray(rng.integers(0, 256, (32 + 7 * (index % 9), 40 + 11 * (index % 5), 3), dtype=np.uint8)).save(path)
        paths.append(path)
    dimensions = app_module.model_dimensions(tiny_model)
    expected = [tiny_model.score(str(path), dimensions=dimensions, return_details=True) for path in paths]

    start = time.perf_counter()
    jobs = [client.submit(handle_file(str(path)), api_name="/score") for path in paths]
    results = [job.result(timeout=240) for job in jobs]
    elapsed = time.perf_counter() - start

    for path, want, (table, levels) in zip(paths, expected, results):
        assert _cells(table, "score") == pytest.approx({dim: want[dim]["score"] for dim in dimensions}, abs=1e-6), path
        assert _cells(table, "uncertainty") == pytest.approx({dim: want[dim]["std"] for dim in dimensions}, abs=1e-6)
        assert [row[0] for row in levels["data"]] == list(tiny_model.config.level_words)
        # The chart's data travel as JSON with 10 decimals.
        assert [row[1] for row in levels["data"]] == pytest.approx(want["overall"]["probs"], abs=1e-10), path
    assert elapsed < 240


@pytest.mark.slow
def test_queue_is_bounded(app_module, tiny_model, files):
    gate = threading.Event()
    model = RecordingModel(tiny_model, gate=gate)
    app = app_module.build_app(model, queue_size=2, concurrency=1)
    with served(app_module, app) as url:
        client = Client(url, verbose=False, download_files=False)
        first = client.submit(handle_file(str(files / "good.png")), api_name="/score")
        assert model.entered.wait(60)  # the first request is being scored and holds the only worker
        waiting = [client.submit(handle_file(str(files / "good.png")), api_name="/score") for _ in range(2)]
        deadline = time.monotonic() + 30
        while sum(job.status().code.name == "IN_QUEUE" for job in waiting) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(QueueError, match="Queue is full"):
            client.predict(handle_file(str(files / "good.png")), api_name="/score")
        gate.set()
        results = [job.result(timeout=120) for job in [first] + waiting]
    assert len({json.dumps(table, sort_keys=True) for table, _ in results}) == 1 and model.calls == 3


def test_pixel_cap_and_queue_are_configurable(app_module, tiny_model, files, monkeypatch):
    monkeypatch.delenv("FUSCORE_MAX_IMAGE_PIXELS", raising=False)
    settings = app_module.parse_settings([], environ={})
    assert (settings.max_image_pixels, settings.queue_size, settings.concurrency) == (4096 * 4096, 16, 1)
    environ = {"FUSCORE_MAX_IMAGE_PIXELS": "5000", "FUSCORE_QUEUE_SIZE": "3", "FUSCORE_MODEL": "some/model"}
    settings = app_module.parse_settings([], environ=environ)
    assert (settings.max_image_pixels, settings.queue_size, settings.model) == (5000, 3, "some/model")
    assert app_module.parse_settings(["--max-image-pixels", "7000"], environ=environ).max_image_pixels == 7000
    with pytest.raises(SystemExit):
        app_module.parse_settings([], environ={"FUSCORE_QUEUE_SIZE": "many"})
    with pytest.raises(ValueError, match="max_image_pixels"):
        app_module.build_app(tiny_model, max_image_pixels=0)

    app = app_module.build_app(tiny_model, max_image_pixels=60 * 84 - 1)  # good.png is 84x60
    with served(app_module, app) as url:
        with pytest.raises(AppError, match="84x60 = 5,040 pixels, over this app's limit of 5,039"):
            _score(Client(url, verbose=False, download_files=False), files / "good.png")


@pytest.mark.slow
def test_model_with_sources_names_the_bad_upload(app_module, tiny_model_ir_vis, files):
    model = tiny_model_ir_vis
    with served(app_module, app_module.build_app(model)) as url:
        client = Client(url, verbose=False, download_files=False)
        assert len(client.view_api(return_format="dict")["named_endpoints"]["/score"]["parameters"]) == 3
        with pytest.raises(AppError, match="upload all three"):
            client.predict(handle_file(str(files / "good.png")), None, None, api_name="/score")
        with pytest.raises(AppError, match=r"infrared source \(notes.png\): cannot decode"):
            _score(client, files / "good.png", files / "notes.png", files / "good.png")
        table, _ = _score(client, files / "good.png", files / "good.png", files / "good.png")
    expected = model.score(str(files / "good.png"), ir=str(files / "good.png"), vis=str(files / "good.png"))
    assert _cells(table, "score")["overall"] == pytest.approx(expected, abs=1e-6)


def test_the_api_returns_data_a_client_can_use(served_app, app_module, tiny_model, files):
    """A gradio_client call gets numbers: the scores table's headers and rows (full precision, the page's 3-decimal
    text beside them) and the chart's level probabilities, not HTML."""
    client, _ = served_app
    table, levels = _score(client, files / "good.png")
    assert table["headers"] == ["dimension", "score", "uncertainty"]
    dimensions = app_module.model_dimensions(tiny_model)
    expected = tiny_model.score(str(files / "good.png"), dimensions=dimensions, return_details=True)
    assert [row[0] for row in table["data"]] == dimensions
    for dimension, score, std in table["data"]:
        assert isinstance(score, float) and score == pytest.approx(expected[dimension]["score"], abs=1e-6)
        assert isinstance(std, float) and std == pytest.approx(expected[dimension]["std"], abs=1e-6)
    shown = table["metadata"]["display_value"][0]
    assert shown == ["overall", app_module.format_value(table["data"][0][1]), app_module.format_value(table["data"][0][2])]
    assert "<" not in json.dumps(table) and "<" not in json.dumps(levels)
    assert [row[1] for row in levels["data"]] == pytest.approx(expected["overall"]["probs"], abs=1e-10)


def test_the_examples_are_scoreable_synthetic_scenes(app_module, tiny_model):
    rows = app_module.example_rows(needs_sources=True)
    assert len(rows) >= 2 and all(len(row) == 3 for row in rows)
    for fused, ir, vis in rows:
        assert 1 <= tiny_model.score(fused) <= 5
        assert Image.open(ir).size == Image.open(vis).size == Image.open(fused).size
    assert app_module.example_rows(needs_sources=False) == [row[:1] for row in rows]


def test_fused_only_model_asks_for_the_fused_image_only(served_app):
    client, _ = served_app
    assert len(client.view_api(return_format="dict")["named_endpoints"]["/score"]["parameters"]) == 1


@pytest.mark.slow
def test_started_from_another_folder_serves_the_shipped_model(app_module, files, tmp_path):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("FUSCORE_MODEL", None)
    log = tmp_path / "app.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, str(REPO_ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"app.py exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"app.py did not start in 180 s:\n{log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                time.sleep(0.5)
        # The shipped demo has a map head: the map overlay comes third.
        table, *_ = _score(Client(url, verbose=False, download_files=False), files / "good.png")
    finally:
        process.terminate()
        process.wait(timeout=30)
    demo = app_module.load_model(app_module.default_model_path())
    expected = demo.score(str(files / "good.png"), dimensions=app_module.model_dimensions(demo), return_details=True)
    assert _cells(table, "score") == pytest.approx({dim: value["score"] for dim, value in expected.items()}, abs=1e-6)


def test_default_model_is_resolved_from_the_apps_folder(app_module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = app_module.default_model_path()
    assert os.path.isabs(path) and os.path.isfile(os.path.join(path, "config.json"))
    assert path == str(REPO_ROOT / "fuscore" / "demo_model")



def test_pasted_image_is_read_from_its_data_url(served_app, files):
    """A data URL (an image pasted, or sent so by an API client) is scored from its bytes, and a bad one is named."""
    import httpx

    client, _ = served_app

    def call(url):
        payload = {"path": None, "url": url, "meta": {"_type": "gradio.FileData"}}
        event = httpx.post(client.src + "gradio_api/call/score", json={"data": [payload]}, timeout=30).json()["event_id"]
        return httpx.get(client.src + f"gradio_api/call/score/{event}", timeout=120).text

    good = base64.b64encode((files / "good.png").read_bytes()).decode()
    assert "event: complete" in call("data:image/png;base64," + good)
    text = base64.b64encode((files / "notes.png").read_bytes()).decode()
    answer = call("data:image/png;base64," + text)
    assert "event: error" in answer and "pasted image: cannot decode the image" in answer, answer
    assert "not valid base64 image data" in call("data:image/png;base64,@@@")


@pytest.mark.slow
def test_uploads_over_the_size_limit_are_refused_by_the_server(app_module, tiny_model, tmp_path):
    import httpx

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(2 * 1024 * 1024))
    with served(app_module, app_module.build_app(tiny_model), max_file_size_mb=1) as url:
        with open(big, "rb") as handle:
            response = httpx.post(url + "gradio_api/upload", files={"files": ("big.png", handle)}, timeout=60)
    assert response.status_code == 413, response.text


def test_the_readme_makes_the_repository_a_gradio_space():
    """The README's front matter is a Space card (`huggingface_hub.SpaceCard`) naming this app, and the Space's
    requirements.txt asks for the same versions as the project's pyproject.toml."""
    import tomllib
    from importlib.metadata import version

    from huggingface_hub import SpaceCard
    from packaging.requirements import Requirement

    data = SpaceCard.load(REPO_ROOT / "README.md").data
    assert data.sdk == "gradio" and (REPO_ROOT / data.app_file).resolve() == REPO_ROOT / "app.py"
    assert data.sdk_version.split(".")[0] == version("gradio").split(".")[0]  # the major version the tests run
    app_extra = [Requirement(r) for r in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
                 ["optional-dependencies"]["app"]]
    assert all(requirement.specifier.contains(data.sdk_version) for requirement in app_extra if requirement.name == "gradio")
    assert data.suggested_hardware == "cpu-basic" and data.license == "apache-2.0" and data.title

    project = {Requirement(r).name: Requirement(r).specifier
               for r in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    lines = [line.split("#")[0].strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    space = [Requirement(line) for line in lines if line]
    assert {"torch", "transformers", "pillow"} <= {requirement.name for requirement in space}
    for requirement in space:
        assert requirement.specifier == project[requirement.name], requirement
