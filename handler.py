# Copyright 2026 The FuScore authors. Apache-2.0.
"""Custom handler for Hugging Face Inference Endpoints (`handler.py` at the root of an exported FuScore repo).

The Inference Toolkit imports this file from the repository folder and calls `EndpointHandler(path)(data)`. It
imports only the standard library, Pillow and transformers, so it runs wherever the model's remote code runs.

Request body (JSON), one of:

    {"inputs": "<base64 image>"}
    {"inputs": {"fused": "<base64>", "ir": "<base64>", "vis": "<base64>"}}
    {"inputs": [<either of the above>, ...], "parameters": {"dimensions": ["overall", "sharpness"], "batch_size": 4}}

Images may be base64 strings (plain or `data:image/...;base64,` URLs), raw bytes, or PIL images (the toolkit
decodes binary image requests to PIL itself). The response is the pipeline's result: for one input a dict
`{"score", "std", "probs": {level word: probability}, "dimensions": {...}}`, for a list a list of them.

Limits (constructor arguments, else environment variables of the endpoint, else the defaults):

    max_image_pixels / FUSCORE_MAX_IMAGE_PIXELS            an image with more pixels is refused from its header,
                                                           before it is decoded (default 16,777,216 = 4096 x 4096)
    max_inputs / FUSCORE_MAX_INPUTS                        images per request (default 64)
    max_waiting_requests / FUSCORE_MAX_WAITING_REQUESTS    requests that may wait while one is scored; beyond them a
                                                           request fails at once with `EndpointBusyError` (default 8)

The model never reads more pixels than its image processor's `max_pixels` (Qwen3-VL's default is 4096 x 4096), so a
larger image only costs decode time and memory; under Pillow's own bomb limit (89.5 million pixels) an 87 KB palette
PNG costs 7 s and 1.6 GB. Requests are scored one at a time (a transformers pipeline is not safe to call from
several threads at once). The Inference Toolkit itself calls a handler one request at a time and keeps the others
waiting in its server, where no handler can count them: there the per-request limits bound the work a request
brings, and the endpoint's replica settings bound the rest. Binary image requests are decoded by the toolkit before
the handler sees them, so the pixel cap is checked from the header only for JSON requests (base64 images).
"""

import base64
import binascii
import io
import os
import threading
import warnings
from typing import Any

from PIL import Image, UnidentifiedImageError
from transformers import pipeline


PARAMETER_NAMES = ("dimensions", "batch_size")
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
DEFAULT_MAX_INPUTS = 64
DEFAULT_MAX_WAITING_REQUESTS = 8


class EndpointBusyError(RuntimeError):
    """More requests are waiting than the handler's `max_waiting_requests`; the client should retry later."""


class EndpointHandler:
    def __init__(self, path: str = "", max_image_pixels: int = None, max_inputs: int = None,
                 max_waiting_requests: int = None):
        # The repository declares its pipeline under `custom_pipelines`, so no task name is needed.
        self.scorer = pipeline(model=path or ".", trust_remote_code=True)
        self.max_image_pixels = _limit(max_image_pixels, "max_image_pixels", "FUSCORE_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)
        self.max_inputs = _limit(max_inputs, "max_inputs", "FUSCORE_MAX_INPUTS", DEFAULT_MAX_INPUTS)
        self.max_waiting_requests = _limit(max_waiting_requests, "max_waiting_requests", "FUSCORE_MAX_WAITING_REQUESTS",
                                           DEFAULT_MAX_WAITING_REQUESTS, minimum=0)
        # One request scored at a time; `_admitted` counts it and those waiting for it.
        self._scoring = threading.Lock()
        self._admitted = threading.BoundedSemaphore(1 + self.max_waiting_requests)

    def __call__(self, data: dict) -> Any:
        if not self._admitted.acquire(blocking=False):
            raise EndpointBusyError(
                f"The FuScore endpoint is busy: one request is being scored and {self.max_waiting_requests} are "
                "waiting (FUSCORE_MAX_WAITING_REQUESTS). Retry in a moment."
            )
        try:
            decoded, parameters = self._read_request(data)
            with self._scoring:
                try:
                    return self.scorer(decoded, **parameters)
                except ValueError as error:  # the processor names a bad image `<bytes>`: say which input it is
                    raise self._name_the_input(error, decoded) from None
        finally:
            self._admitted.release()

    def _read_request(self, data) -> tuple:
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError('The request body must be a JSON object with an "inputs" field.')
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValueError(f'"parameters" must be a JSON object, got {type(parameters).__name__}.')
        unknown = sorted(set(parameters) - set(PARAMETER_NAMES))
        if unknown:
            raise ValueError(f"Unknown parameter(s) {unknown}; accepted: {list(PARAMETER_NAMES)}.")
        batch_size = parameters.get("batch_size", 1)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"parameters.batch_size must be a positive integer, got {batch_size!r}.")
        dimensions = parameters.get("dimensions", "all")
        if not (isinstance(dimensions, str) or (isinstance(dimensions, list) and all(isinstance(d, str) for d in dimensions))):
            raise ValueError(f'parameters.dimensions must be "all", a dimension name or a list of names, got {dimensions!r}.')
        inputs = data["inputs"]
        if isinstance(inputs, list):
            if len(inputs) > self.max_inputs:
                raise ValueError(f"{len(inputs)} inputs in one request; this endpoint takes at most {self.max_inputs} "
                                 "(FUSCORE_MAX_INPUTS): split the request.")
            decoded = [self._decode_input(item, f"inputs[{index}]") for index, item in enumerate(inputs)]
        else:
            decoded = self._decode_input(inputs, "inputs")
        return decoded, parameters

    def _name_the_input(self, error: ValueError, decoded: Any) -> ValueError:
        """`error` with the first input that fails on its own (`inputs[3]`, `inputs.ir`): the images are loaded and
        checked one input at a time by the model's processor (decoding only; this runs only after a failure)."""
        items = decoded if isinstance(decoded, list) else [decoded]
        for index, item in enumerate(items):
            where = f"inputs[{index}]" if isinstance(decoded, list) else "inputs"
            images = item if isinstance(item, dict) else {"fused": item}
            try:
                self.scorer.processor.prepare_images(images.get("fused"), images.get("ir"), images.get("vis"))
            except ValueError as found:
                message = str(found)
                for placeholder in ("<bytes>", "<Image>", "<PngImageFile>", "<JpegImageFile>"):
                    message = message.replace(placeholder, where)
                return ValueError(message if where in message else f"{where}: {message}")
        return error

    def _decode_input(self, item: Any, where: str) -> Any:
        if isinstance(item, dict):
            return {key: self._decode_image(value, f"{where}.{key}") for key, value in item.items() if value is not None}
        return self._decode_image(item, where)

    def _decode_image(self, value: Any, where: str) -> Any:
        """Base64 text -> bytes; bytes and PIL images pass through (the FuScore processor decodes and checks them),
        once their size is known to be within `max_image_pixels`."""
        if isinstance(value, (bytes, bytearray)):
            image = bytes(value)
        elif isinstance(value, str):
            if value.startswith("data:") and "," not in value:
                raise ValueError(f"{where}: a data URL without the comma before its data; write it as "
                                 "data:image/png;base64,<base64 data>.")
            text = value.split(",", 1)[1] if value.startswith("data:") else value
            text = "".join(text.split())  # line-wrapped base64 (as the `base64` tool writes it) is still valid
            try:
                image = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as error:
                raise ValueError(f"{where}: not valid base64 image data ({error}).") from None
        elif hasattr(value, "mode") and hasattr(value, "size"):  # a PIL image
            image = value
        else:
            raise ValueError(f"{where}: expected a base64 string, bytes or an image, got {type(value).__name__}.")
        self._check_pixels(image, where)
        return image

    def _check_pixels(self, image: Any, where: str) -> None:
        """Refuses an image over `max_image_pixels` from its header (Pillow's lazy open decodes nothing), and data
        that is not an image at all, naming the input; the FuScore processor decodes and checks the rest."""
        size = getattr(image, "size", None)
        if isinstance(image, bytes):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(io.BytesIO(image)) as opened:
                        size = opened.size
            except Image.DecompressionBombError:  # Pillow refuses to open more than twice its MAX_IMAGE_PIXELS
                raise ValueError(f"{where}: more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels, over this "
                                 f"endpoint's limit of {self.max_image_pixels:,} pixels: downscale it.") from None
            except Exception as error:  # noqa: BLE001 - Pillow's error says why; `where` says which input
                reason = ("no image format recognised" if isinstance(error, UnidentifiedImageError)
                          else f"{type(error).__name__}: {error}")
                raise ValueError(f"{where}: {len(image):,} bytes that are not a readable image ({reason}). Send a "
                                 "PNG, JPEG, TIFF, BMP or WebP file.") from None
        if size and size[0] * size[1] > self.max_image_pixels:
            raise ValueError(f"{where}: {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, over this endpoint's "
                             f"limit of {self.max_image_pixels:,} pixels (FUSCORE_MAX_IMAGE_PIXELS): downscale it.")


def _limit(value, name: str, variable: str, default: int, minimum: int = 1) -> int:
    """A limit from the constructor argument, else the environment variable, else the default; checked."""
    source = name
    if value is None and os.environ.get(variable):
        value, source = os.environ[variable], f"environment variable {variable}"
        try:
            value = int(value.replace("_", ""))
        except ValueError:
            raise ValueError(f"{source} must be an integer, got {os.environ[variable]!r}.") from None
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{source} must be an integer of at least {minimum}, got {value!r}.")
    return value
