# Copyright 2026 The FuScore authors. Apache-2.0.
"""The FuScore pipeline: `pipeline(model="org/fuscore", trust_remote_code=True)`.

This file is Hub remote code: it imports only the standard library, transformers and its siblings
`configuration_fuscore.py`, `image_utils_fuscore.py` and `scoring_fuscore.py` (the model and processor it drives come from the sibling files). An exported
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
bare image (path, encoded bytes, PIL image, HxW[xC] array, or a `datasets` image `{"bytes": ..., "path": ...}` as an
`Image(decode=False)` column gives it). The call is transformers' own `Pipeline.__call__`: a list gives a list of
results; a generator, a `datasets.Dataset` or a `KeyDataset` streams through a DataLoader (`num_workers` decode in
parallel) and gives an iterator of results:

    >>> from transformers.pipelines.pt_utils import KeyDataset
    >>> for result in scorer(KeyDataset(dataset, "image"), batch_size=8):
    ...     print(result["score"])

`batch_size=n` scores n images (all their requested dimensions) per pass through FuScore's scoring engine, so every
result equals `model.score`'s at batch size `n * dimensions`.
"""

import os
from typing import Any, Optional, Sequence, Union

from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY


try:  # Hub remote code: the sibling files are part of the same dynamic module package.
    from .configuration_fuscore import DIMENSIONS, OVERALL
except ImportError:  # A checkout or an installed FuScore: the siblings are top-level modules.
    from configuration_fuscore import DIMENSIONS, OVERALL
try:
    from .image_utils_fuscore import ImageInputError, load_image
except ImportError:
    from image_utils_fuscore import ImageInputError, load_image
try:
    from .scoring_fuscore import ARTIFACT_MAP, check_artifact_maps, check_count, score_images, upsample_artifact_map
except ImportError:
    from scoring_fuscore import ARTIFACT_MAP, check_artifact_maps, check_count, score_images, upsample_artifact_map

TASK_NAME = "fused-image-quality"
INPUT_KEYS = ("fused", "ir", "vis")
CUSTOM_PIPELINES = {TASK_NAME: {"impl": "pipeline_fuscore.FuScorePipeline", "pt": ["AutoModel"], "type": "multimodal"}}
"""The `custom_pipelines` entry of a saved model's `config.json` (`FuScoreForQuality.save_pretrained` writes it): with
it `pipeline(model=folder, trust_remote_code=True)` finds this pipeline without a task."""


class FuScorePipeline(Pipeline):
    """Scores infrared-visible fused images with a FuScore model, through the scoring engine
    (`scoring_fuscore.score_images`), so its scores are exactly those of `model.score`.

    Call arguments (also accepted when the pipeline is built):
        dimensions: `"all"` (default: every dimension the model has a prompt for) or a list of names. The
            overall quality is always scored, since it is the top-level result.
        batch_size: images per forward pass (default 1); with d dimensions a pass holds `batch_size * d` items, so
            the scores equal `model.score(images, dimensions, batch_size=batch_size * d)`.
        num_workers: DataLoader workers that read and decode the inputs (transformers' own argument).
        return_maps: also return each input's artifact map (models trained with maps: `config.artifact_map`; any
            other raises a ValueError that points at `model.explain`).

    Returns, per input, `{"score", "std", "probs", "dimensions"}`: the overall score in [1, 5], its uncertainty (the
    spread of the level distribution), the level probabilities as `{level word: probability}` in the model's level
    order, and the same three values for each other requested dimension under `"dimensions"`. With `return_maps`,
    also `"artifact_map"`: float32 numpy `(height, width)` in [0, 1] at the fused image's size, as
    `model.score(..., return_maps=True)` gives it.
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
        # transformers' batching (`pad_collate_fn`) needs a tokenizer to exist; the items it collates carry no
        # tensors, only decoded images, so nothing is padded by it.
        self.tokenizer = self.processor.tokenizer
        self.level_words = list(self.model.config.level_words)
        self._default_dimensions = self._resolve_dimensions("all")

    def save_pretrained(self, save_directory, **kwargs):
        """The model's folder (`FuScoreForQuality.save_pretrained`: weights, code files, pipeline registration) with the
        processor this pipeline scores with, so its input mode and prompts survive the save."""
        if getattr(self.model, "processor", None) is None:
            self.model.processor = self.processor
        super().save_pretrained(save_directory, **kwargs)

    # ----------------------------------------------------------------- parameters
    def _sanitize_parameters(self, dimensions: Union[str, Sequence[str], None] = None, return_maps: Optional[bool] = None,
                             **unused):
        if unused:
            raise TypeError(f"FuScorePipeline got unexpected arguments: {', '.join(sorted(unused))}.")
        # Resolved once per call (or once at build time), not once per input.
        preprocess_params = {} if dimensions is None else {"dimensions": self._resolve_dimensions(dimensions)}
        forward_params = {}
        if return_maps is not None:
            if return_maps:
                check_artifact_maps(self.model)  # before any input is read
            forward_params["return_maps"] = bool(return_maps)
        return preprocess_params, forward_params, {}

    def _resolve_dimensions(self, dimensions) -> tuple:
        # transformers' __init__ reads the build-time arguments before this class's __init__ sets the processor.
        processor = getattr(self, "processor", None) or self.model.get_processor()
        requested = processor.resolve_dimensions(dimensions)
        # Overall first, then FuScore's dimensions in their usual order, then any custom ones; each once.
        ordered = [OVERALL] + [name for name in DIMENSIONS if name in requested]
        return tuple(dict.fromkeys(ordered + requested))

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        """transformers' own iterator over a list, generator or dataset, after FuScore's check of the two counts (the
        DataLoader would take `True` for 1 and report 2.5 or "8" in its own words)."""
        batch_size = check_count(batch_size, "batch_size")
        num_workers = check_count(num_workers, "num_workers", 0)
        return super().get_iterator(inputs, num_workers, batch_size, preprocess_params, forward_params,
                                    postprocess_params)

    # ----------------------------------------------------------------- stages
    def preprocess(self, inputs: Any, dimensions: Optional[tuple] = None) -> dict:
        """One input -> its decoded images (`load_image`, so a bad file fails here with its name, in a DataLoader
        worker when `num_workers` is set) and the dimensions to score."""
        if isinstance(inputs, dict) and not _is_datasets_image(inputs):
            unknown = sorted(set(inputs) - set(INPUT_KEYS))
            if unknown or "fused" not in inputs:
                raise ValueError(
                    f"A FuScore input dict needs the key 'fused' (and optionally 'ir', 'vis'); got keys {sorted(inputs)}."
                )
            fused, ir, vis = inputs["fused"], inputs.get("ir"), inputs.get("vis")
        else:
            fused, ir, vis = inputs, None, None
        return {
            "fused": _decode(fused, "fused"),
            "ir": None if ir is None else _decode(ir, "ir"),
            "vis": None if vis is None else _decode(vis, "vis"),
            "dimensions": dimensions or self._default_dimensions,
        }

    def _forward(self, model_inputs: dict, return_maps: bool = False) -> dict:
        """One preprocessed input, or a batch of them as transformers' collate gives it (one list per key), scored in
        one engine call; returns `{"scores": ...}` shaped as it came (one result, or a list that transformers unbatches)."""
        batched = isinstance(model_inputs["fused"], list)
        fused = model_inputs["fused"] if batched else [model_inputs["fused"]]
        ir = model_inputs["ir"] if batched else [model_inputs["ir"]]
        vis = model_inputs["vis"] if batched else [model_inputs["vis"]]
        dimensions = list(model_inputs["dimensions"][0] if batched else model_inputs["dimensions"])
        results = score_images(self.model, self.processor, fused, ir, vis, dimensions,
                               batch_size=len(fused) * len(dimensions), return_maps=return_maps)
        scores = [{dimension: {key: results[dimension][key][row] for key in ("score", "std", "probs")}
                   for dimension in dimensions} for row in range(len(fused))]
        if return_maps:  # the patch grid travels (transformers unbatches it); postprocess upsamples it
            for row, entry in enumerate(scores):
                entry[ARTIFACT_MAP] = results[ARTIFACT_MAP][row]
        return {"scores": scores if batched else scores[0]}

    def postprocess(self, model_outputs: dict) -> dict:
        scores = dict(model_outputs["scores"])
        artifact_map = scores.pop(ARTIFACT_MAP, None)
        per_dimension = {
            dimension: {"score": values["score"], "std": values["std"], "probs": dict(zip(self.level_words, values["probs"]))}
            for dimension, values in scores.items()
        }
        overall = per_dimension.pop(OVERALL)
        if artifact_map is not None:
            return {**overall, "dimensions": per_dimension, ARTIFACT_MAP: upsample_artifact_map(**artifact_map)}
        return {**overall, "dimensions": per_dimension}


def _is_datasets_image(value) -> bool:
    """A `datasets` image as an `Image(decode=False)` column or a Parquet export holds it: `{"bytes", "path"}`."""
    return isinstance(value, dict) and bool(value) and set(value) <= {"bytes", "path"}


def _decode(image, role: str):
    """`load_image` of one input, with a `datasets` `{"bytes", "path"}` dict read from its bytes (else its path)."""
    if _is_datasets_image(image):
        name = image.get("path") or f"a datasets {role} image"
        if image.get("bytes") is not None:
            return load_image(bytes(image["bytes"]), source=os.fspath(name))
        if image.get("path") is None:
            raise ImageInputError(f"The {role} image dict has neither bytes nor a path.")
        return load_image(image["path"])
    return load_image(image)


# Registering makes `pipeline("fused-image-quality", model=<FuScore model object>)` work once this module is
# imported, and lets `FuScorePipeline.save_pretrained` write `custom_pipelines` into the saved config.
PIPELINE_REGISTRY.register_pipeline(TASK_NAME, pipeline_class=FuScorePipeline, pt_model=AutoModel, type="multimodal")

__all__ = ["CUSTOM_PIPELINES", "FuScorePipeline", "TASK_NAME"]
