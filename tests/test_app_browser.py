"""The Gradio Space (app.py) in a real browser: Debian's Chromium driven by Playwright, against a tiny model.

Needs `apt-get install chromium` and `pip install gradio playwright` (no `playwright install`: the system Chromium
is used). Skipped with the reason when one of them is missing.
"""

import importlib.util
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


CHROMIUM = Path("/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DIMENSIONS = ("overall", "thermal_retention", "texture_preservation", "artifacts", "sharpness")

pytest.importorskip("gradio", reason="gradio is not installed (pip install gradio, the project's [app] extra)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if not CHROMIUM.is_file() and not shutil.which("chromium"):
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _load_app_module():
    # Loaded by path: `app` is the Space's file at the repository root, not an installed module.
    spec = importlib.util.spec_from_file_location("fuscore_space_app", REPO_ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def running_app():
    from fuscore.tiny import build_tiny_model

    app_module = _load_app_module()
    model = build_tiny_model("qwen2_vl", seed=13)
    app = app_module.build_app(model, model_name="tiny test model")
    port = _free_port()
    app_module.launch(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", model, app_module
    finally:
        app.close()


@pytest.fixture
def page(tmp_path):
    executable = str(CHROMIUM if CHROMIUM.is_file() else shutil.which("chromium"))
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"), executable_path=executable, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def _cell(page, dimension: str, kind: str) -> str:
    return page.locator(f'#fuscore-scores tr[data-dimension="{dimension}"] td.{kind}').inner_text()


def test_uploaded_image_shows_the_models_scores(running_app, page, tmp_path):
    url, model, app_module = running_app
    image_path = tmp_path / "fused.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (60, 84, 3), dtype=np.uint8)).save(image_path)

    page.goto(url, wait_until="domcontentloaded")
    page.locator("#fused-input input[type=file]").set_input_files(str(image_path))
    page.locator("#fused-input img").first.wait_for(timeout=30_000)  # the upload has reached the server
    page.click("#score-button")
    page.locator('#fuscore-scores tr[data-dimension="overall"] td.score').wait_for(timeout=60_000)
    page.locator("#fuscore-levels").get_by_text("excellent").first.wait_for(timeout=30_000)  # the chart has drawn
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)

    expected = model.score(str(image_path), dimensions=DIMENSIONS, return_details=True)  # the same model object
    for dim in DIMENSIONS:
        assert _cell(page, dim, "score") == app_module.format_value(expected[dim]["score"]), dim
        assert _cell(page, dim, "std") == "± " + app_module.format_value(expected[dim]["std"]), dim
    assert (tmp_path / "app.png").stat().st_size > 10_000


def test_scoring_without_an_image_shows_an_error(running_app, page):
    url, _, _ = running_app
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#score-button").wait_for(timeout=30_000)
    page.click("#score-button")
    page.get_by_text("Upload a fused image first.").first.wait_for(timeout=30_000)
    assert page.locator('#fuscore-scores tr[data-dimension="overall"]').count() == 0
