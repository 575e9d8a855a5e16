# Copyright 2026 The FuScore authors. Apache-2.0.
"""Custom handler for Hugging Face Inference Endpoints (`handler.py` at the root of an exported FuScore repo).

The Inference Toolkit imports this file from the repository folder and calls `EndpointHandler(path)(data)`. It
imports only the standard library and transformers, so it runs wherever the model's remote code runs.

Request body (JSON), one of:

    {"inputs": "<base64 image>"}
    {"inputs": {"fused": "<base64>", "ir": "<base64>", "vis": "<base64>"}}
    {"inputs": [<either of the above>, ...], "parameters": {"dimensions": ["overall", "sharpness"], "batch_size": 4}}

Images may be base64 strings (plain or `data:image/...;base64,` URLs), raw bytes, or PIL images (the toolkit
decodes binary image requests to PIL itself). The response is the pipeline's result: for one input a dict
`{"score", "std", "probs": {level word: probability}, "dimensions": {...}}`, for a list a list of them.
"""

import base64
import binascii
from typing import Any

from transformers import pipeline


PARAMETER_NAMES = ("dimensions", "batch_size")


class EndpointHandler:
    def __init__(self, path: str = ""):
        # The repository declares its pipeline under `custom_pipelines`, so no task name is needed.
        self.scorer = pipeline(model=path or ".", trust_remote_code=True)

    def __call__(self, data: dict) -> Any:
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError('The request body must be a JSON object with an "inputs" field.')
        parameters = data.get("parameters") or {}
        unknown = sorted(set(parameters) - set(PARAMETER_NAMES))
        if unknown:
            raise ValueError(f"Unknown parameter(s) {unknown}; accepted: {list(PARAMETER_NAMES)}.")
        inputs = data["inputs"]
        if isinstance(inputs, list):
            decoded = [_decode_input(item, f"inputs[{index}]") for index, item in enumerate(inputs)]
        else:
            decoded = _decode_input(inputs, "inputs")
        return self.scorer(decoded, **parameters)


def _decode_input(item: Any, where: str) -> Any:
    if isinstance(item, dict):
        return {key: _decode_image(value, f"{where}.{key}") for key, value in item.items() if value is not None}
    return _decode_image(item, where)


def _decode_image(value: Any, where: str) -> Any:
    """Base64 text -> bytes; bytes and PIL images pass through (the FuScore processor decodes and checks them)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        text = "".join(text.split())  # line-wrapped base64 (as the `base64` tool writes it) is still valid
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"{where}: not valid base64 image data ({error}).") from None
    if hasattr(value, "mode") and hasattr(value, "size"):  # a PIL image
        return value
    raise ValueError(f"{where}: expected a base64 string, bytes or an image, got {type(value).__name__}.")
