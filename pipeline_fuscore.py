# Copyright 2026 The FuScore authors. Apache-2.0.
"""The FuScore pipeline: `pipeline(model="org/fuscore", trust_remote_code=True)`.

This file is Hub remote code: it imports only the standard library, transformers and its siblings
`configuration_fuscore.py` and `scoring_fuscore.py` (the model and processor it drives come from the sibling files). An exported
FuScore folder declares the pipeline in its `config.json`:

    "custom_pipelines": {"fused-image-quality": {"impl": "pipeline_fuscore.FuScorePipeline", "pt": ["AutoModel"]}}

With exactly one custom pipeline in the config, `transformers.pipeline` infers the task, so no `task` argument is
needed:

    >>> from transformers import pipeline
    >>> scorer = pipeline(model="org/fuscore", trust_remote_code=True)
    >>> scorer({"fused": "fused.png", "ir": "ir.png", "vis": "vis.png"})
    {'score': 3.71, 'std': 0.62, 'probs': {'excellent': 0.21, 'good': 0.43, ...},
     'dimensions': {'thermal_retention': {'score': ..., 'std': ..., 'probs': {...}}, ...}}

Each input is a dict `{"fused": ..., "ir": ..., "vis": ...}` (sources optional unless the model reads them) or a
bare image (path, encoded bytes, PIL image or HxW[xC] array); a list of inputs gives a list of results. The pipeline
scores through FuScore's scoring engine, so `batch_size=n` scores n images (all their requested dimensions) per pass
and every result equals `model.score`'s.
"""

import itertools
from collections.abc import Iterator
from typing import Any, Sequence, Union

from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY


try:  # Hub remote code: the sibling files are part of the same dynamic module package.
    from .configuration_fuscore import DIMENSIONS, OVERALL
except ImportError:  # A checkout or an installed FuScore: the siblings are top-level modules.
    from configuration_fuscore import DIMENSIONS, OVERALL
try:
    from .scoring_fuscore import check_count, score_images
except ImportError:
    from scoring_fuscore import check_count, score_images

TASK_NAME = "fused-image-quality"
INPUT_KEYS = ("fused", "ir", "vis")


class FuScorePipeline(Pipeline):
    """Scores infrared-visible fused images with a FuScore model, through the scoring engine
    (`scoring_fuscore.score_images`), so its scores are exactly those of `model.score`.

    Call arguments (also accepted when the pipeline is built):
        dimensions: `"all"` (default: every dimension the model has a prompt for) or a list of names. The
            overall quality is always scored, since it is the top-level result.
        batch_size: images per forward pass (default 1); with d dimensions a pass holds `batch_size * d` items, so
            the scores equal `model.score(images, dimensions, batch_size=batch_size * d)`.
        num_workers: decoding workers, as for `model.score`.

    Returns, per input, `{"score", "std", "probs", "dimensions"}`: the overall score in [1, 5], its uncertainty (the
    spread of the level distribution), the level probabilities as `{level word: probability}` in the model's level
    order, and the same three values for each other requested dimension under `"dimensions"`. A generator of inputs
    is scored `batch_size` inputs at a time and gives a generator of results.
    """

    _load_processor = None  # the FuScore processor is loaded when the repo has one, else taken from the model
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            # A model object passed in directly carries the processor it was built or loaded with.
            self.processor = self.model.get_processor()
        self.level_words = list(self.model.config.level_words)

    # ----------------------------------------------------------------- parameters
    def _sanitize_parameters(self, dimensions: Union[str, Sequence[str], None] = None, **unused):
        if unused:
            raise TypeError(f"FuScorePipeline got unexpected arguments: {', '.join(sorted(unused))}.")
        preprocess_params = {}
        if dimensions is not None:
            preprocess_params["dimensions"] = dimensions
        return preprocess_params, {}, {}

    def _resolve_dimensions(self, dimensions) -> list:
        requested = self.processor.resolve_dimensions(dimensions)
        # Overall first, then FuScore's dimensions in their usual order, then any custom ones; each once.
        ordered = [OVERALL] + [name for name in DIMENSIONS if name in requested]
        return list(dict.fromkeys(ordered + requested))

    # ----------------------------------------------------------------- stages
    def preprocess(self, inputs: Any, dimensions=None) -> dict:
        """One input -> its images and the dimensions to score (the engine decodes and batches them)."""
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - set(INPUT_KEYS))
            if unknown or "fused" not in inputs:
                raise ValueError(
                    f"A FuScore input dict needs the key 'fused' (and optionally 'ir', 'vis'); got keys {sorted(inputs)}."
                )
            fused, ir, vis = inputs["fused"], inputs.get("ir"), inputs.get("vis")
        else:
            fused, ir, vis = inputs, None, None
        return {"fused": fused, "ir": ir, "vis": vis, "dimensions": self._resolve_dimensions(dimensions)}

    def _forward(self, model_inputs: dict, batch_size: int = 1, num_workers: int = 0) -> dict:
        return self._score([model_inputs], batch_size, num_workers)[0]

    def postprocess(self, model_outputs: dict) -> dict:
        per_dimension = {
            dimension: {"score": values["score"], "std": values["std"], "probs": dict(zip(self.level_words, values["probs"]))}
            for dimension, values in model_outputs.items()
        }
        overall = per_dimension.pop(OVERALL)
        return {**overall, "dimensions": per_dimension}

    def _score(self, prepared: list, batch_size, num_workers) -> list:
        """Engine results `{dimension: {"score", "std", "probs"}}` for preprocessed inputs of equal dimensions."""
        if not prepared:
            return []
        dimensions = prepared[0]["dimensions"]
        batch_size = check_count(batch_size, "batch_size")
        results = score_images(self.model, self.processor, [item["fused"] for item in prepared],
                               [item["ir"] for item in prepared], [item["vis"] for item in prepared], dimensions,
                               batch_size=batch_size * len(dimensions), num_workers=num_workers)
        return [{dimension: {key: results[dimension][key][row] for key in ("score", "std", "probs")}
                 for dimension in dimensions} for row in range(len(prepared))]

    # ----------------------------------------------------------------- calls
    def __call__(self, inputs, *args, batch_size=None, num_workers=None, **kwargs):
        if args:
            raise TypeError("FuScorePipeline takes its inputs as one argument (an input or a list of inputs).")
        preprocess_params, _, _ = self._sanitize_parameters(**kwargs)
        preprocess_params = {**self._preprocess_params, **preprocess_params}
        batch_size = check_count(batch_size if batch_size is not None else (self._batch_size or 1), "batch_size")
        num_workers = check_count(num_workers if num_workers is not None else (self._num_workers or 0), "num_workers", 0)
        if isinstance(inputs, (list, tuple)):
            return self._score_inputs(list(inputs), preprocess_params, batch_size, num_workers)
        if _is_stream(inputs):
            return self._score_stream(inputs, preprocess_params, batch_size, num_workers)
        return self._score_inputs([inputs], preprocess_params, batch_size, num_workers)[0]

    def _score_inputs(self, inputs: list, preprocess_params: dict, batch_size, num_workers) -> list:
        prepared = [self.preprocess(item, **preprocess_params) for item in inputs]
        return [self.postprocess(outputs) for outputs in self._score(prepared, batch_size, num_workers)]

    def _score_stream(self, inputs, preprocess_params: dict, batch_size, num_workers):
        iterator = iter(inputs)
        while True:
            chunk = list(itertools.islice(iterator, batch_size))
            if not chunk:
                return
            yield from self._score_inputs(chunk, preprocess_params, batch_size, num_workers)


def _is_stream(inputs) -> bool:
    """A generator or other iterator of inputs (not one image: strings, bytes, dicts, arrays and PIL images are)."""
    return isinstance(inputs, Iterator)


# Registering makes `pipeline("fused-image-quality", model=<FuScore model object>)` work once this module is
# imported, and lets `FuScorePipeline.save_pretrained` write `custom_pipelines` into the saved config.
PIPELINE_REGISTRY.register_pipeline(TASK_NAME, pipeline_class=FuScorePipeline, pt_model=AutoModel, type="multimodal")

__all__ = ["FuScorePipeline", "TASK_NAME"]
