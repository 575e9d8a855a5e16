# Copyright 2026 The FuScore authors. Apache-2.0.
"""FuScore Space: upload a fused infrared-visible image (and, for a model that reads them, its sources) and see its
quality scores.

Run locally with `python app.py` (needs `pip install gradio`, or the project's `[app]` extra); `python app.py --help`
lists the settings. Each can also be set by an environment variable (a Space sets them in its settings):

    --model / FUSCORE_MODEL                        a folder or a Hub repo id; default: the shipped demo checkpoint
                                                   (`fuscore/demo_model` beside this file, trained on synthetic truth)
    --max-image-pixels / FUSCORE_MAX_IMAGE_PIXELS  uploads with more pixels are refused from their header, before
                                                   anything decodes them (default 16,777,216 = 4096 x 4096)
    --queue-size / FUSCORE_QUEUE_SIZE              requests that may wait; more are told the queue is full (16)
    --concurrency / FUSCORE_CONCURRENCY            requests scored at once (1)
    --max-file-size-mb / FUSCORE_MAX_FILE_SIZE_MB  largest upload accepted, in MB (100)

Why these defaults: the model never reads more pixels than its image processor's `max_pixels` (Qwen3-VL's default is
4096 x 4096, Qwen2-VL's 12.8 million), so a larger upload is only shrunk, after costing decode time and memory that
grow with its pixel count; Pillow's own bomb limit (89.5 million pixels) lets an 87 KB palette PNG cost 7 s and
1.6 GB. One request at a time is what a CPU Space can serve (each forward pass already uses every core), and a
bounded queue tells the 17th waiting user at once instead of letting the wait grow without end.

Uploads reach FuScore as the uploaded files, undecoded: the app reads only their header (for the pixel cap) and the
model's own loader decodes and checks them, so a corrupt, truncated or non-image file gets FuScore's message. The
model is loaded with FuScore's classes where FuScore is installed; otherwise this file needs only the standard
library, Pillow, transformers and gradio, and a Space runs the model repo's own code.
"""

import argparse
import base64
import binascii
import html
import io
import os
import warnings
from pathlib import Path

# No telemetry calls from a Space or a test run; set before gradio is imported, which reads it.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402


DEMO_MODEL_NAME = "fuscore/demo_model"  # how the page names the demo (its path: fuscore.hub.DEMO_MODEL)
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
DEFAULT_QUEUE_SIZE = 16
DEFAULT_CONCURRENCY = 1
DEFAULT_MAX_FILE_SIZE_MB = 100
DISPLAY_DECIMALS = 3
# Best level green to worst red, in the model's level order (excellent .. bad for the default words).
LEVEL_COLORS = ("#1a9850", "#91cf60", "#fee08b", "#fc8d59", "#d73027")
# System fonts: the default theme fetches Google Fonts, which a Space behind a proxy or an offline test cannot reach.
APP_THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
# Below this width the score table and the level chart no longer fit side by side and stack instead (a phone is
# 360-430 px wide).
RESULT_MIN_WIDTH = 320
# Synthetic scenes from `fuscore_data.synthetic` (examples/space/README.md says how they were made): never real
# benchmark images, which are for research use only.
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples" / "space"
SCORE_COLUMNS = ("dimension", "score", "uncertainty")
# The artifact map overlay (models with the artifact map head): this colour, at an opacity of OVERLAY_OPACITY times
# the map's probability, over the fused image.
OVERLAY_COLOR = (255, 0, 0)
OVERLAY_OPACITY = 0.6


def load_model(name_or_path: str):
    """The one place the app loads its model: with FuScore's own loader (`fuscore.hub.load_model`: no code from the
    model folder runs, and the shipped demo folder holds none) where FuScore is installed, else as the model repo's
    remote code (a Space that has only the model repo)."""
    try:
        from fuscore.hub import load_model as load_fuscore_model
    except ImportError:
        from transformers import AutoModel

        return AutoModel.from_pretrained(name_or_path, trust_remote_code=True).eval()
    return load_fuscore_model(name_or_path)


def default_model_path() -> str:
    """The shipped demo checkpoint (`fuscore.hub.DEMO_MODEL`, beside this file in a checkout, else in an installed
    FuScore): resolved from the package, not from the working folder, so `python path/to/app.py` started anywhere
    finds it instead of taking the relative name for a Hub repo id."""
    try:
        from fuscore.hub import DEMO_MODEL
    except ImportError:
        DEMO_MODEL = None
    if DEMO_MODEL is not None and (DEMO_MODEL / "config.json").is_file():
        return str(DEMO_MODEL)
    raise FileNotFoundError(
        f"The shipped demo checkpoint is not in {DEMO_MODEL or 'an installed FuScore'}; pass --model "
        "(or set FUSCORE_MODEL) to a FuScore model folder or Hub repo id."
    )


def image_input(label: str, elem_id: str) -> gr.Image:
    """An image upload; its event runs with `preprocess=False`, so the function gets the upload as sent (see
    `uploaded_file`): `gr.Image` would open every upload with Pillow first, even with `type="filepath"`, and a text
    file named .png or a decompression bomb would fail there with Gradio's generic error."""
    return gr.Image(label=label, type="filepath", image_mode=None, sources=["upload", "clipboard"], elem_id=elem_id)


def uploaded_file(payload):
    """The uploaded file's path (or a pasted data URL's bytes) from an image input's unprocessed value."""
    if payload is None:
        return None
    url = payload.get("url") or ""
    if url.startswith("data:"):
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=True)
        except (IndexError, binascii.Error, ValueError):
            raise gr.Error("The pasted image is not valid base64 image data.") from None
    if not payload.get("path"):
        raise gr.Error("The upload did not arrive: try again.")
    return str(payload["path"])


def check_image_pixels(upload, role: str, max_pixels: int) -> None:
    """Refuses an upload with more than `max_pixels` pixels, from its header (Pillow's lazy open decodes nothing).

    A file Pillow cannot open at all is left to FuScore's loader, which says what is wrong with it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(upload) if isinstance(upload, bytes) else upload) as image:
                width, height = image.size
    except Image.DecompressionBombError:  # Pillow refuses to open more than twice its MAX_IMAGE_PIXELS
        raise gr.Error(f"The {role} has more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels, over this app's "
                       f"limit of {max_pixels:,} pixels: downscale it and upload it again.") from None
    except Exception:  # noqa: BLE001 - not openable: FuScore's loader reports it with its own message
        return
    if width * height > max_pixels:
        raise gr.Error(
            f"The {role} is {width}x{height} = {width * height:,} pixels, over this app's limit of {max_pixels:,} "
            "pixels (the model would shrink it anyway): downscale it and upload it again."
        )


def model_dimensions(model) -> list:
    """Every dimension the model has a prompt for, in FuScore's order (the one resolver's `"all"`)."""
    return model.get_processor().resolve_dimensions("all")


def format_value(value: float) -> str:
    return f"{value:.{DISPLAY_DECIMALS}f}"


def scores_table(details: dict):
    """The scores as data: one row per dimension (its name, score in [1, 5], uncertainty), at full precision for API
    clients; the page shows them with `DISPLAY_DECIMALS` decimals (a pandas Styler's display values)."""
    import pandas as pd  # a gradio dependency

    frame = pd.DataFrame([(dim, float(result["score"]), float(result["std"])) for dim, result in details.items()],
                         columns=list(SCORE_COLUMNS))
    return frame.style.format(precision=DISPLAY_DECIMALS, subset=list(SCORE_COLUMNS[1:])).format(
        lambda name: name.replace("_", " "), subset=[SCORE_COLUMNS[0]])


def has_artifact_maps(model) -> bool:
    """Whether the model was trained with artifact maps (it has the artifact map head, `config.artifact_map`)."""
    return getattr(model, "artifact_head", None) is not None


def map_overlay(upload, artifact_map) -> Image.Image:
    """The fused image (upright, as FuScore's loader reads it) with its artifact map laid over it: `OVERLAY_COLOR` at
    an opacity of `OVERLAY_OPACITY` x the map's probability per pixel, so clean regions keep the image as it is."""
    import numpy as np
    from PIL import ImageOps

    with Image.open(io.BytesIO(upload) if isinstance(upload, bytes) else upload) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    height, width = artifact_map.shape
    if image.size != (width, height):  # never for a map of this image; a safeguard for the display only
        image = image.resize((width, height), Image.BILINEAR)
    alpha = OVERLAY_OPACITY * np.clip(np.asarray(artifact_map, dtype=np.float32), 0, 1)[..., None]
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * np.asarray(OVERLAY_COLOR, dtype=np.float32)
    return Image.fromarray(np.rint(blended).astype(np.uint8))


def example_rows(needs_sources: bool) -> list:
    """The shipped example scenes as input rows (fused image, and its sources for a model that reads them)."""
    rows = []
    for fused in sorted(EXAMPLES_DIR.glob("*_fused.png")):
        scene = fused.name.split("_")[0]
        sources = [EXAMPLES_DIR / f"{scene}_{role}.png" for role in ("ir", "vis")]
        rows.append([str(fused), *map(str, sources)] if needs_sources else [str(fused)])
    return rows


def build_app(model, model_name: str = "", max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
              queue_size: int = DEFAULT_QUEUE_SIZE, concurrency: int = DEFAULT_CONCURRENCY) -> gr.Blocks:
    """The Gradio interface around an already loaded FuScore model (tests pass a tiny one), with its bounded queue.

    A model that reads the fused image only gets a fused-image input only: sources it would ignore are not asked for.
    A model trained with artifact maps (`has_artifact_maps`) also shows its map laid over the fused image
    (`map_overlay`); the API then returns that image as a third output.
    """
    for name, value in (("max_image_pixels", max_image_pixels), ("queue_size", queue_size), ("concurrency", concurrency)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    dimensions = model_dimensions(model)
    level_words = list(model.config.level_words)
    needs_sources = model.get_processor().input_mode == "fused_ir_vis"
    roles = ("fused image", "infrared source", "visible source") if needs_sources else ("fused image",)
    shows_maps = has_artifact_maps(model)

    def score(*payloads):
        uploads = [uploaded_file(payload) for payload in payloads]
        if uploads[0] is None:
            raise gr.Error("Upload a fused image first.")
        if needs_sources and any(upload is None for upload in uploads):
            raise gr.Error("This model reads the fused image with its infrared and visible sources: upload all three.")
        for role, upload in zip(roles, uploads):
            check_image_pixels(upload, role, max_image_pixels)
        fused, ir, vis = uploads if needs_sources else (uploads[0], None, None)
        try:
            details = model.score(fused, ir=ir, vis=vis, dimensions=dimensions, return_details=True,
                                  **({"return_maps": True} if shows_maps else {}))
        except ValueError as error:  # FuScore's ImageInputError: unreadable, too small, sources not registered
            # Gradio renders an error as HTML, and the message carries the uploader's file name.
            raise gr.Error(html.escape(_name_uploads(str(error), roles, uploads), quote=False)) from None
        outputs = (scores_table({dim: details[dim] for dim in dimensions}), level_frame(details["overall"]["probs"]))
        return (*outputs, map_overlay(fused, details["artifact_map"])) if shows_maps else outputs

    def level_frame(probs):
        import pandas as pd  # a gradio dependency

        return pd.DataFrame({"level": level_words, "probability": [float(p) for p in probs]})

    with gr.Blocks(title="FuScore") as app:
        gr.Markdown(
            "# FuScore: quality of infrared-visible fused images\n"
            + ("Upload a fused image with its infrared and visible sources. " if needs_sources else
               "Upload a fused image (this model reads the fused image alone). ")
            + "FuScore reads the model's probabilities of the levels *excellent, good, fair, poor, bad* and gives a "
            "score from 1 to 5 with its uncertainty, overall and for thermal retention, texture preservation, "
            f"artifacts and sharpness. Images up to {max_image_pixels:,} pixels."
        )
        if model_name:
            warning = (" This is the demo checkpoint, **trained on synthetic truth only, not human ratings**: "
                       "its scores illustrate the tool." if "demo_model" in model_name else "")
            gr.Markdown(f"Model: `{model_name}`.{warning}")
        with gr.Row():
            inputs = [image_input("Fused image", "fused-input")]
            if needs_sources:
                inputs += [image_input("Infrared source", "ir-input"), image_input("Visible source", "vis-input")]
        button = gr.Button("Score", variant="primary", elem_id="score-button")
        examples = example_rows(needs_sources)
        if examples:
            gr.Examples(examples, inputs=inputs, label="Examples: synthetic scenes, the best and worst rated fusion of each")
        with gr.Row(equal_height=False):  # the two columns wrap onto two lines below 2 x RESULT_MIN_WIDTH
            with gr.Column(min_width=RESULT_MIN_WIDTH):
                table = gr.Dataframe(headers=list(SCORE_COLUMNS), datatype=["str", "number", "number"],
                                     interactive=False, wrap=True, column_widths=["40%", "22%", "38%"],
                                     label="Scores (1 bad - 5 excellent)", elem_id="fuscore-scores")
            with gr.Column(min_width=RESULT_MIN_WIDTH):
                levels = gr.BarPlot(
                    x="level", y="probability", color="level", sort=level_words, y_lim=[0, 1],
                    color_map=dict(zip(level_words, LEVEL_COLORS)) if len(level_words) == len(LEVEL_COLORS) else None,
                    label="Overall level distribution", elem_id="fuscore-levels",
                )
        outputs = [table, levels]
        if shows_maps:
            outputs.append(gr.Image(label=f"Artifact map: red where the model sees artifacts (opacity "
                                          f"{OVERLAY_OPACITY:g} x probability)", type="pil", format="png",
                                    interactive=False, elem_id="fuscore-artifact-map"))
        # Unprocessed inputs: the uploads reach `score` as files, for FuScore's own loader to decode and check.
        button.click(score, inputs=inputs, outputs=outputs, api_name="score", preprocess=False)
    return app.queue(max_size=queue_size, default_concurrency_limit=concurrency)


def _name_uploads(message: str, roles, uploads) -> str:
    """FuScore's message with each upload's temporary server path replaced by its role and file name (a pasted
    image, which reaches the loader as bytes, is named so)."""
    for role, upload in zip(roles, uploads):
        if isinstance(upload, str):
            message = message.replace(upload, f"{role} ({Path(upload).name})")
    return message.replace("<bytes>", "pasted image")


def launch(app: gr.Blocks, max_file_size_mb: int = DEFAULT_MAX_FILE_SIZE_MB, **kwargs):
    """Launches with FuScore's theme (Gradio 6 takes the theme at launch) and the upload size limit."""
    return app.launch(theme=APP_THEME, max_file_size=f"{max_file_size_mb}mb", **kwargs)


def _positive_int(text: str) -> int:
    try:
        value = int(str(text).replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


SETTINGS = (  # (option, environment variable, default, help)
    ("--max-image-pixels", "FUSCORE_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS, "largest upload, in pixels"),
    ("--queue-size", "FUSCORE_QUEUE_SIZE", DEFAULT_QUEUE_SIZE, "requests that may wait to be scored"),
    ("--concurrency", "FUSCORE_CONCURRENCY", DEFAULT_CONCURRENCY, "requests scored at once"),
    ("--max-file-size-mb", "FUSCORE_MAX_FILE_SIZE_MB", DEFAULT_MAX_FILE_SIZE_MB, "largest upload, in MB"),
)


def parse_settings(argv=None, environ=None) -> argparse.Namespace:
    """Command-line options, each defaulting to its environment variable, then to the documented default."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(description="The FuScore Gradio app.")
    parser.add_argument("--model", default=environ.get("FUSCORE_MODEL") or None,
                        help="FuScore model folder or Hub repo id (FUSCORE_MODEL; default: the shipped demo checkpoint)")
    for option, variable, default, help_text in SETTINGS:
        if environ.get(variable):
            try:
                default = _positive_int(environ[variable])
            except argparse.ArgumentTypeError as error:
                parser.error(f"environment variable {variable}: {error}")
        parser.add_argument(option, type=_positive_int, default=default, help=f"{help_text} ({variable}; default {default})")
    parser.add_argument("--host", default=None, help="address to serve on (default: Gradio's, GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=None, help="port to serve on (default: Gradio's, GRADIO_SERVER_PORT)")
    return parser.parse_args(argv)


def main(argv=None):
    settings = parse_settings(argv)
    model_path = settings.model or default_model_path()
    model = load_model(model_path)
    app = build_app(model, settings.model or DEMO_MODEL_NAME, max_image_pixels=settings.max_image_pixels,
                    queue_size=settings.queue_size, concurrency=settings.concurrency)
    launch(app, max_file_size_mb=settings.max_file_size_mb, server_name=settings.host, server_port=settings.port)


if __name__ == "__main__":
    main()
