# Copyright 2026 The FuScore authors. Apache-2.0.
"""FuScore Space: upload a fused infrared-visible image (and optionally its sources) and see its quality scores.

Run locally with `python app.py` (needs `pip install gradio`, or the project's `[app]` extra). The model comes from
the environment variable FUSCORE_MODEL (a folder or a Hub repo id; default `fuscore/demo_model`, the small shipped
checkpoint trained on synthetic truth). Like the Hub remote code, this file imports only the standard library,
transformers and gradio, so a Space needs nothing from the FuScore project but the model repo.
"""

import html
import os

# No telemetry calls from a Space or a test run; set before gradio is imported, which reads it.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402


DEFAULT_MODEL = "fuscore/demo_model"
DIMENSION_ORDER = ("overall", "thermal_retention", "texture_preservation", "artifacts", "sharpness")
DISPLAY_DECIMALS = 3
# Best level green to worst red, in the model's level order (excellent .. bad for the default words).
LEVEL_COLORS = ("#1a9850", "#91cf60", "#fee08b", "#fc8d59", "#d73027")
# System fonts: the default theme fetches Google Fonts, which a Space behind a proxy or an offline test cannot reach.
APP_THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
APP_CSS = """
#fuscore-scores table { border-collapse: collapse; width: 100%; }
#fuscore-scores th, #fuscore-scores td { padding: 6px 10px; border-bottom: 1px solid #ddd; text-align: left; }
#fuscore-scores td.score { font-weight: 600; }
#fuscore-scores tr[data-dimension="overall"] td { font-size: 1.15em; }
"""


def load_model(name_or_path: str):
    from transformers import AutoModel

    return AutoModel.from_pretrained(name_or_path, trust_remote_code=True).eval()


def model_dimensions(model) -> list:
    known = list(model.get_processor().prompts)
    return [dim for dim in DIMENSION_ORDER if dim in known] + [dim for dim in known if dim not in DIMENSION_ORDER]


def format_value(value: float) -> str:
    return f"{value:.{DISPLAY_DECIMALS}f}"


def scores_html(details: dict) -> str:
    """The score table: one row per dimension with `data-dimension`, score and uncertainty cells."""
    rows = "".join(
        f'<tr data-dimension="{html.escape(dim)}"><td>{html.escape(dim.replace("_", " "))}</td>'
        f'<td class="score">{format_value(result["score"])}</td><td class="std">± {format_value(result["std"])}</td></tr>'
        for dim, result in details.items()
    )
    return ("<table><thead><tr><th>dimension</th><th>score (1 bad – 5 excellent)</th><th>uncertainty</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def build_app(model, model_name: str = "") -> gr.Blocks:
    """The Gradio interface around an already loaded FuScore model (tests pass a tiny one)."""
    dimensions = model_dimensions(model)
    level_words = list(model.config.level_words)
    needs_sources = getattr(model.config, "input_mode", "fused") == "fused_ir_vis"

    def score(fused, ir, vis):
        if fused is None:
            raise gr.Error("Upload a fused image first.")
        if needs_sources and (ir is None or vis is None):
            raise gr.Error("This model reads the fused image with its infrared and visible sources: upload all three.")
        try:
            details = model.score(fused, ir=ir, vis=vis, dimensions=dimensions, return_details=True)
        except ValueError as error:  # FuScore's ImageInputError: too small, unreadable, sources not registered
            raise gr.Error(str(error)) from None
        return scores_html(details), level_frame(details["overall"]["probs"])

    def level_frame(probs):
        import pandas as pd  # a gradio dependency

        return pd.DataFrame({"level": level_words, "probability": [float(p) for p in probs]})

    with gr.Blocks(title="FuScore") as app:
        gr.Markdown(
            "# FuScore: quality of infrared-visible fused images\n"
            "Upload a fused image (and, if you have them, its infrared and visible sources). FuScore reads the "
            "model's probabilities of the levels *excellent, good, fair, poor, bad* and gives a score from 1 to 5 "
            "with its uncertainty, overall and for thermal retention, texture preservation, artifacts and sharpness."
        )
        if model_name:
            warning = (" This is the demo checkpoint, **trained on synthetic truth only, not human ratings**: "
                       "its scores illustrate the tool." if "demo_model" in model_name else "")
            gr.Markdown(f"Model: `{model_name}`.{warning}")
        with gr.Row():
            fused = gr.Image(label="Fused image", type="pil", image_mode=None, sources=["upload", "clipboard"], elem_id="fused-input")
            ir = gr.Image(label="Infrared source (optional)" if not needs_sources else "Infrared source",
                          type="pil", image_mode=None, sources=["upload", "clipboard"], elem_id="ir-input")
            vis = gr.Image(label="Visible source (optional)" if not needs_sources else "Visible source",
                           type="pil", image_mode=None, sources=["upload", "clipboard"], elem_id="vis-input")
        button = gr.Button("Score", variant="primary", elem_id="score-button")
        with gr.Row():
            table = gr.HTML(label="Scores", elem_id="fuscore-scores")
            levels = gr.BarPlot(
                x="level", y="probability", color="level", sort=level_words, y_lim=[0, 1],
                color_map=dict(zip(level_words, LEVEL_COLORS)) if len(level_words) == len(LEVEL_COLORS) else None,
                label="Overall level distribution", elem_id="fuscore-levels",
            )
        button.click(score, inputs=[fused, ir, vis], outputs=[table, levels])
    return app


def launch(app: gr.Blocks, **kwargs):
    """Launches with FuScore's theme (Gradio 6 takes the theme and css at launch)."""
    return app.launch(theme=APP_THEME, css=APP_CSS, **kwargs)


if __name__ == "__main__":
    model_name = os.environ.get("FUSCORE_MODEL", DEFAULT_MODEL)
    launch(build_app(load_model(model_name), model_name))
