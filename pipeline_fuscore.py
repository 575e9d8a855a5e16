# Copyright 2026 The FuScore authors. Apache-2.0.
"""The FuScore pipeline: `pipeline(model="org/fuscore", trust_remote_code=True)`.

This file is Hub remote code: it imports only the standard library, torch, transformers and its sibling
`modeling_fuscore.py` (the model and processor it drives come from the sibling files). An exported
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
bare image (path, encoded bytes, PIL image or HxW[xC] array); a list of inputs gives a list of results. All the
requested dimensions of one image are scored in one forward pass; `batch_size=n` scores n images per pass.
"""

from typing import Any, Sequence, Union

import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY


try:  # Hub remote code: the sibling file is part of the same dynamic module package.
    from .modeling_fuscore import DIMENSIONS
except ImportError:  # A checkout or an installed FuScore: the sibling is a top-level module.
    from modeling_fuscore import DIMENSIONS

TASK_NAME = "fused-image-quality"
OVERALL = "overall"
INPUT_KEYS = ("fused", "ir", "vis")


class FuScorePipeline(Pipeline):
    """Scores infrared-visible fused images with a FuScore model.

    Call arguments (also accepted when the pipeline is built):
        dimensions: `"all"` (default: every dimension the model has a prompt for) or a list of names. The
            overall quality is always scored, since it is the top-level result.

    Returns, per input, `{"score", "std", "probs", "dimensions"}`: the overall score in [1, 5], its uncertainty (the
    spread of the level distribution), the level probabilities as `{level word: probability}` in the model's level
    order, and the same three values for each other requested dimension under `"dimensions"`.
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
        known = list(self.processor.prompts)
        if dimensions is None or dimensions == "all":
            requested = known
        else:
            requested = [dimensions] if isinstance(dimensions, str) else list(dimensions)
            unknown = [name for name in requested if name not in known]
            if unknown:
                raise ValueError(f"Unknown rating dimension(s) {unknown}; this model knows: {', '.join(known)}.")
        # Overall first, then FuScore's dimensions in their usual order, then any custom ones; each once.
        ordered = [OVERALL] + [name for name in DIMENSIONS if name in requested]
        return list(dict.fromkeys(ordered + requested))

    # ----------------------------------------------------------------- stages
    def preprocess(self, inputs: Any, dimensions=None) -> dict:
        """One input -> its unbatched samples, one per dimension (collated in `_forward`)."""
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - set(INPUT_KEYS))
            if unknown or "fused" not in inputs:
                raise ValueError(
                    f"A FuScore input dict needs the key 'fused' (and optionally 'ir', 'vis'); got keys {sorted(inputs)}."
                )
            fused, ir, vis = inputs["fused"], inputs.get("ir"), inputs.get("vis")
        else:
            fused, ir, vis = inputs, None, None
        dimension_list = self._resolve_dimensions(dimensions)
        samples = [self.processor.prepare_sample(fused, ir, vis, dimension) for dimension in dimension_list]
        return {"samples": samples, "dimensions": dimension_list, "rows_per_input": [len(samples)]}

    def _forward(self, model_inputs: dict) -> dict:
        batch = self.processor.collate(model_inputs["samples"]).to(self.device)
        batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        output = self.model(**batch)
        return {
            "score": output.score.float(),
            "std": output.score_std.float(),
            "probs": output.level_probs.float(),
            "dimensions": model_inputs["dimensions"],
            "rows_per_input": model_inputs["rows_per_input"],
        }

    def postprocess(self, model_outputs: dict) -> dict:
        per_dimension = {}
        for row, dimension in enumerate(model_outputs["dimensions"]):
            probs = model_outputs["probs"][row].tolist()
            per_dimension[dimension] = {
                "score": model_outputs["score"][row].item(),
                "std": model_outputs["std"][row].item(),
                "probs": dict(zip(self.level_words, probs)),
            }
        overall = per_dimension.pop(OVERALL)
        return {**overall, "dimensions": per_dimension}

    # ----------------------------------------------------------------- batching
    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, (list, tuple)) and len(inputs) == 0:
            return []
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def get_iterator(self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params):
        """Scores `batch_size` inputs per forward pass.

        The base class's padding collator knows only text-style tensors; FuScore batches concatenate image patches,
        so preprocessed inputs are merged here and the outputs split back per input.
        """
        from transformers.pipelines.pt_utils import PipelineDataset

        dataset = PipelineDataset(inputs, self.preprocess, preprocess_params) if hasattr(inputs, "__len__") else None
        if dataset is None:  # a generator: preprocess lazily, one at a time
            dataset = _PreprocessedStream(inputs, self.preprocess, preprocess_params)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                             collate_fn=_merge_preprocessed)
        return self._score_batches(loader, forward_params, postprocess_params)

    def _score_batches(self, loader, forward_params, postprocess_params):
        for merged in loader:
            outputs = self.forward(merged, **forward_params)
            start = 0
            for rows in merged["rows_per_input"]:
                piece = {
                    "score": outputs["score"][start : start + rows],
                    "std": outputs["std"][start : start + rows],
                    "probs": outputs["probs"][start : start + rows],
                    "dimensions": outputs["dimensions"][start : start + rows],
                    "rows_per_input": [rows],
                }
                start += rows
                yield self.postprocess(piece, **postprocess_params)


def _merge_preprocessed(items: list) -> dict:
    return {
        "samples": [sample for item in items for sample in item["samples"]],
        "dimensions": [dimension for item in items for dimension in item["dimensions"]],
        "rows_per_input": [len(item["samples"]) for item in items],
    }


class _PreprocessedStream(torch.utils.data.IterableDataset):
    def __init__(self, inputs, preprocess, params):
        self.inputs, self.preprocess, self.params = inputs, preprocess, params

    def __iter__(self):
        for item in self.inputs:
            yield self.preprocess(item, **self.params)


# Registering makes `pipeline("fused-image-quality", model=<FuScore model object>)` work once this module is
# imported, and lets `FuScorePipeline.save_pretrained` write `custom_pipelines` into the saved config.
PIPELINE_REGISTRY.register_pipeline(TASK_NAME, pipeline_class=FuScorePipeline, pt_model=AutoModel, type="multimodal")

__all__ = ["FuScorePipeline", "TASK_NAME"]
