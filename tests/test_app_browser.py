"""The Gradio Space (app.py) in a real browser: Debian's Chromium driven by Playwright, against a tiny model.

Needs `apt-get install chromium` and `pip install gradio playwright` (no `playwright install`: the system Chromium
is used). Skipped with the reason when one of them is missing.
"""

import importlib.util
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

# Checked without importing (gradio and playwright take seconds to import; they are imported when the tests run).
if importlib.util.find_spec("gradio") is None:
    pytest.skip("gradio is not installed (pip install gradio, the project's [app] extra)", allow_module_level=True)
if importlib.util.find_spec("playwright") is None:
    pytest.skip("playwright is not installed (pip install playwright)", allow_module_level=True)
if not CHROMIUM.is_file() and not shutil.which("chromium"):
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)


pytestmark = pytest.mark.slow  # browser runs: seconds each


@pytest.fixture(scope="module")
def running_app(tiny_model):
    app_module = load_app_module()
    model = tiny_model
    with served(app_module, app_module.build_app(model, model_name="tiny test model")) as url:
        yield url, model, app_module


@pytest.fixture
def page(tmp_path):
    executable = str(CHROMIUM if CHROMIUM.is_file() else shutil.which("chromium"))
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"), executable_path=executable, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def _cells(page):
    """The score table's cells (Gradio's grid: `role="gridcell"`, header cells excluded), in reading order."""
    return page.locator('#fuscore-scores [role="gridcell"]')


def _table_rows(page) -> list:
    """The score table's rows as the page shows them, cell texts stripped."""
    texts = [text.strip() for text in _cells(page).all_inner_texts()]
    return [texts[i : i + 3] for i in range(0, len(texts), 3)]


def _score_upload(page, url, image_path):
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#fused-input input[type=file]").set_input_files(str(image_path))
    page.locator("#fused-input img").first.wait_for(timeout=30_000)  # the upload has reached the server
    page.click("#score-button")
    page.locator("#fuscore-scores").get_by_text("overall").first.wait_for(timeout=60_000)
    page.locator("#fuscore-levels").get_by_text("excellent").first.wait_for(timeout=30_000)  # the chart has drawn


def test_uploaded_image_shows_the_models_scores(running_app, page, tmp_path):
    url, model, app_module = running_app
    image_path = tmp_path / "fused.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (60, 84, 3), dtype=np.uint8)).save(image_path)

    _score_upload(page, url, image_path)
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)

    expected = model.score(str(image_path), dimensions=DIMENSIONS, return_details=True)  # the same model object
    shown = {row[0]: row[1:] for row in _table_rows(page)}
    for dim in DIMENSIONS:
        assert shown[dim.replace("_", " ")] == [app_module.format_value(expected[dim]["score"]),
                                                app_module.format_value(expected[dim]["std"])], dim
    assert (tmp_path / "app.png").stat().st_size > 10_000


def test_at_a_phones_width_the_scores_and_chart_stack_without_overlap(running_app, page, tmp_path):
    """At 390 px (a phone held upright) the table and the chart sit one above the other, each inside the screen,
    and every score stays readable; the screenshot is kept in the test's folder."""
    url, model, app_module = running_app
    image_path = tmp_path / "fused.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (60, 84, 3), dtype=np.uint8)).save(image_path)
    page.set_viewport_size({"width": 390, "height": 844})
    _score_upload(page, url, image_path)
    page.screenshot(path=str(tmp_path / "app_390px.png"), full_page=True)

    table = page.locator("#fuscore-scores").bounding_box()
    chart = page.locator("#fuscore-levels").bounding_box()
    assert table["y"] + table["height"] <= chart["y"] + 1, (table, chart)  # stacked: the chart starts below the table
    for box in (table, chart):
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1, box
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    expected = model.score(str(image_path), dimensions=DIMENSIONS, return_details=True)
    assert [row[1] for row in _table_rows(page)] == [app_module.format_value(expected[dim]["score"]) for dim in DIMENSIONS]
    cells = _cells(page)
    for i in range(cells.count()):  # every cell, the uncertainties included, inside the table: nothing cut off
        box = cells.nth(i).bounding_box()
        assert box["x"] >= table["x"] - 1 and box["x"] + box["width"] <= table["x"] + table["width"] + 1, (i, box)
    assert (tmp_path / "app_390px.png").stat().st_size > 10_000


def test_scoring_without_an_image_shows_an_error(running_app, page):
    url, _, _ = running_app
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#score-button").wait_for(timeout=30_000)
    page.click("#score-button")
    page.get_by_text("Upload a fused image first.").first.wait_for(timeout=30_000)
    assert page.locator("#fuscore-scores").get_by_text("overall").count() == 0


def test_a_text_file_named_png_shows_fuscores_message(running_app, page, tmp_path):
    url, _, _ = running_app
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is a text file, not an image\n")
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#fused-input input[type=file]").set_input_files(str(bogus))
    page.locator("#fused-input img").first.wait_for(state="attached", timeout=30_000)  # the upload has reached the server
    page.click("#score-button")
    page.get_by_text("fused image (notes.png): cannot decode the image").first.wait_for(timeout=60_000)
    assert page.locator("#fuscore-scores").get_by_text("overall").count() == 0
