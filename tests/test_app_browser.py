"""The Gradio Space (app.py) in a real browser: Debian's Chromium driven by Playwright, against a tiny model.

Needs `apt-get install chromium` and `pip install gradio playwright` (no `playwright install`: the system Chromium
is used). Skipped with the reason when one of them is missing.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_support import load_app_module, served


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DIMENSIONS = ("overall", "thermal_retention", "texture_preservation", "artifacts", "sharpness")

pytest.importorskip("gradio", reason="gradio is not installed (pip install gradio, the project's [app] extra)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if not CHROMIUM.is_file() and not shutil.which("chromium"):
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def running_app():
    from fuscore.tiny import build_tiny_model

    app_module = load_app_module()
    model = build_tiny_model("qwen2_vl", seed=13)
    with served(app_module, app_module.build_app(model, model_name="tiny test model")) as url:
        yield url, model, app_module


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


def test_a_text_file_named_png_shows_fuscores_message(running_app, page, tmp_path):
    url, _, _ = running_app
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is a text file, not an image\n")
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#fused-input input[type=file]").set_input_files(str(bogus))
    page.locator("#fused-input img").first.wait_for(state="attached", timeout=30_000)  # the upload has reached the server
    page.click("#score-button")
    page.get_by_text("fused image (notes.png): cannot decode the image").first.wait_for(timeout=60_000)
    assert page.locator('#fuscore-scores tr[data-dimension="overall"]').count() == 0
