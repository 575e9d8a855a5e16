# Copyright 2026 The FuScore authors. Apache-2.0.
"""FuScore's image loading: every input image (a path, encoded bytes, a PIL image, an array) read and checked once.

This file is Hub remote code, a sibling of `processing_fuscore.py` (which imports it and re-exports its public names):
it imports only the standard library, PIL and torch.

`load_image` opens an image, applies its EXIF orientation, refuses what FuScore cannot assess (a missing, corrupt,
animated or multi-page file, a malformed or complex array, a size `size_problem` rejects) with an `ImageInputError`
that names the input, and returns 8-bit RGB: grey replicated, alpha composited on black, high-bit-depth intensities
converted by one rule (`_intensities_to_uint8`). `image_size` tells the size `load_image` will give without decoding
the pixels.
"""

import io
import os
from struct import error as struct_error
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError


ImageLike = Union[str, os.PathLike, bytes, Image.Image, Any]

# Sides under this many pixels carry too little content to assess; the image processor would upsample
# them to its minimum pixel count and the score would mostly reflect interpolation.
MIN_IMAGE_SIDE = 16
# Larger images are refused before decoding: a decompression bomb or a mistaken raw dump, not a photo. This is
# Pillow's own decompression-bomb threshold (`Image.MAX_IMAGE_PIXELS`), so files, PIL images and arrays share one limit.
MAX_IMAGE_PIXELS = 89_478_485
# Qwen-VL's image processors refuse images whose long side exceeds this many times the short side.
MAX_ASPECT_RATIO = 200


class ImageInputError(ValueError):
    """An input image that FuScore cannot read or accept; the message names the file and the fix."""


def describe_image(image: Any, source: Optional[str]) -> str:
    """What an error names for `image`: `source` when given, else its path, else its type."""
    if source is not None:
        return source
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return f"<{type(image).__name__}>"


# Said once per process when an image's contrast is changed (`_intensities_to_uint8`): the rule is load_image's.
HIGH_BIT_DEPTH_NOTE = (
    "FuScore stretched a high-bit-depth image (values beyond 0..255) linearly from its own range to 0..255, as "
    "load_image does for raw infrared counts: the scored contrast is the stretched one. Convert the image to 8 bits "
    "yourself to score it otherwise."
)
_SIXTEEN_BIT = (0.0, 65535.0)


def _intensities_to_uint8(values: torch.Tensor, type_range: Optional[tuple], name: str) -> torch.Tensor:
    """8-bit intensities from integer or high-bit-depth data (a float64 tensor), by one rule:

    - integer values that all fit 0..255 are an 8-bit picture: kept as they are (an 8-bit image held in a wider type
      scores as the uint8 image does);
    - otherwise the values are stretched linearly from their own range to 0..255 (raw 16-bit thermal counts rarely
      use the type's full range, so dividing by 257 would render most of them black), with a warning
      (`HIGH_BIT_DEPTH_NOTE`, once per process);
    - a constant image beyond 0..255 has no range to stretch: it is mapped from the type's full range (0..65535 for
      16-bit data, and for any value that fits it; the type's own range otherwise), so all-white 65535 is white.
      Without a type range (32-bit float images) such an image is refused.
    """
    low, high = values.min().item(), values.max().item()
    if low >= 0 and high <= 255 and bool((values == values.round()).all()):
        return values.round().to(torch.uint8)
    if high > low:
        warnings.warn(HIGH_BIT_DEPTH_NOTE, UserWarning, stacklevel=4)
        return ((values - low) * (255.0 / (high - low))).round().to(torch.uint8)
    if type_range is None:
        raise ImageInputError(f"{name}: a constant floating-point image of value {low:.6g}, outside [0, 1]: FuScore "
                              "cannot tell what brightness it stands for. Scale it to [0, 1] or pass 8-bit data.")
    if _SIXTEEN_BIT[0] <= low <= _SIXTEEN_BIT[1]:
        type_range = _SIXTEEN_BIT
    bottom, top = type_range
    return ((values - bottom) * (255.0 / (top - bottom))).round().clamp(0, 255).to(torch.uint8)


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    """Converts every PIL mode to 8-bit RGB: grey replicated, alpha composited on black, 16-bit and 32-bit grey by
    `_intensities_to_uint8`'s rule (32-bit float in [0, 1] scaled by 255, as float arrays are)."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        wide = image.convert("F")  # every integer mode converts losslessly enough to 32-bit float
        values = torch.frombuffer(bytearray(wide.tobytes()), dtype=torch.float32).reshape(image.height, image.width)
        if not torch.isfinite(values).all():
            raise ImageInputError(f"{name}: the image holds NaN or infinite values.")
        values = values.double()
        if image.mode == "F" and values.min() >= 0 and values.max() <= 1:
            grey = (values * 255).round().to(torch.uint8)
        else:
            type_range = None if image.mode == "F" else (_SIXTEEN_BIT if image.mode.startswith("I;16") else
                                                         (-2.0 ** 31, 2.0 ** 31 - 1))
            grey = _intensities_to_uint8(values, type_range, name)
        return Image.frombytes("L", image.size, grey.numpy().tobytes()).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        # Transparent areas become black: in a fused infrared image black reads as "no signal", not as content.
        if image.mode == "La":  # Pillow converts premultiplied grey+alpha only to LA
            image = image.convert("LA")
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(image: ImageLike, *, source: Optional[str] = None) -> Image.Image:
    """Opens and checks one input image and returns it as 8-bit RGB.

    Accepts a path, encoded bytes, a PIL image, or an HxW[xC] array (numpy or torch; any integer type, or float in
    [0, 1]). Grey images are replicated to three channels, palette and alpha images are composited on black,
    CMYK/YCbCr/HSV are converted to RGB. Integer data (arrays of any integer type, 16-bit and 32-bit images) whose
    values all fit 0..255 is an 8-bit picture and is kept as it is; data with values beyond 0..255 is stretched
    linearly from its own range to 0..255, with a warning (`HIGH_BIT_DEPTH_NOTE`), and a constant image beyond
    0..255 is mapped from its type's full range (0..65535 for 16-bit data): see `_intensities_to_uint8`.
    A file's or PIL image's EXIF orientation is applied, so the image is scored as viewers display it (a phone photo
    stored sideways with orientation 6 is turned upright); arrays have no EXIF and are taken as they are. Animated
    and multi-page images are refused (which frame to score is the caller's choice); a multi-picture JPEG (MPO) is
    read as its first picture, the photo. Complex arrays are refused.

    Raises:
        ImageInputError: the file is missing, truncated or not an image, the array is malformed or complex, the
            image has several frames, or it is smaller than `MIN_IMAGE_SIDE` or larger than `MAX_IMAGE_PIXELS`. The
            message names `source` (or the path).
    """
    name = describe_image(image, source)
    if isinstance(image, Image.Image):
        _refuse_multi_frame(image, name)
        pil = image
    elif isinstance(image, (str, os.PathLike, bytes)):
        if isinstance(image, bytes):
            stream = io.BytesIO(image)
        else:
            path = Path(image)
            if path.is_dir():
                raise ImageInputError(f"{name}: a folder, not an image file. Pass its images as a list of paths, or "
                                      "score the whole folder with `fuscore score FOLDER`.")
            if not path.is_file():
                raise ImageInputError(f"{name}: no such image file. Check the path (relative paths are read from {os.getcwd()}).")
            stream = path
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                pil = Image.open(stream)
                if pil.width * pil.height > MAX_IMAGE_PIXELS:
                    raise ImageInputError(
                        f"{name}: {pil.width}x{pil.height} pixels is over FuScore's limit of {MAX_IMAGE_PIXELS} pixels; "
                        "downscale it first."
                    )
                _refuse_multi_frame(pil, name)
                # Decode now, so a truncated file fails here with its name rather than deep in the batch.
                pil.load()
        except ImageInputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageInputError(
                f"{name}: too many pixels to decode safely ({error}); FuScore reads images up to {MAX_IMAGE_PIXELS} "
                "pixels: downscale it first."
            ) from error
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, IndexError, EOFError, struct_error) as error:
            # Pillow's decoders report truncated or corrupt data with any of these, depending on format and version.
            raise ImageInputError(f"{name}: cannot decode the image ({type(error).__name__}: {error}). "
                                  "The file is corrupt, truncated or not an image.") from error
    else:
        pil = _array_to_pil_checked(image, name)
    if _orientation(pil) in _TRANSPOSING_ORIENTATIONS:
        pil = ImageOps.exif_transpose(pil)  # a transposed copy: a caller's PIL image is left as it was

    problem = size_problem(pil.width, pil.height)
    if problem:
        raise ImageInputError(f"{name}: {problem}")
    return _to_rgb(pil, name)


def size_problem(width: int, height: int) -> Optional[str]:
    """Why FuScore refuses an image of this size (None when it takes it): the one place of the size rules, checked
    by `load_image` and by `image_size` before anything counts an image's tokens (Qwen-VL's own count fails on them
    without the file's name)."""
    if min(width, height) < MIN_IMAGE_SIDE:
        return (f"{width}x{height} pixels is too small to assess; FuScore needs at least {MIN_IMAGE_SIDE} pixels on "
                "each side.")
    if width * height > MAX_IMAGE_PIXELS:
        return f"{width}x{height} pixels is over the limit of {MAX_IMAGE_PIXELS} pixels."
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        return (f"{width}x{height} pixels is more than {MAX_ASPECT_RATIO} times longer than wide, which Qwen-VL "
                "cannot read; crop it into parts or pad it.")
    return None


# EXIF orientation (tag 0x0112): 1 is upright; 2-8 flip and/or rotate; 5-8 swap width and height.
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = frozenset(range(2, 9))
_SIDE_SWAPPING_ORIENTATIONS = frozenset(range(5, 9))


def _orientation(image: Image.Image) -> int:
    """The image's EXIF orientation, 1 (upright) when it has none or its EXIF block cannot be read."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except (SyntaxError, ValueError, TypeError, OSError, struct_error):
        return 1


# Multi-picture JPEGs (MPO, written by many cameras) hold the photo first and previews or depth maps after it.
_PRIMARY_FIRST_FORMATS = ("MPO",)


def _refuse_multi_frame(image: Image.Image, name: str) -> None:
    """Animated and multi-page images (GIF, APNG, WebP, TIFF, ...) hold several pictures; which one to score is the
    caller's choice, so they are refused rather than scored by their first frame."""
    if getattr(image, "is_animated", False) and image.format not in _PRIMARY_FIRST_FORMATS:
        frames = getattr(image, "n_frames", "several")
        raise ImageInputError(
            f"{name}: an animated or multi-page {image.format or ''} image with {frames} frames; FuScore scores one "
            "still image. Save the frame to score as its own image (with PIL: image.seek(k); frame = image.copy())."
        )


def _array_to_pil_checked(array: Any, name: str) -> Image.Image:
    if isinstance(array, torch.Tensor):
        tensor = array.detach().cpu()
    else:
        try:
            # A copy makes flipped or strided numpy views contiguous, which torch cannot wrap directly.
            tensor = torch.as_tensor(array.copy() if hasattr(array, "copy") else array)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ImageInputError(
                f"{name}: cannot read an image from a {type(array).__name__}; pass a path, a PIL image or an array."
            ) from error
    if tensor.is_complex():
        raise ImageInputError(
            f"{name}: the image array holds complex numbers ({tensor.dtype}); FuScore reads real intensities: pass "
            "the magnitude (abs) or the real part as a real array."
        )
    if tensor.ndim == 3 and tensor.shape[-1] == 1:
        tensor = tensor[..., 0]
    if tensor.ndim not in (2, 3) or (tensor.ndim == 3 and tensor.shape[-1] not in (3, 4)):
        raise ImageInputError(
            f"{name}: an image array must be HxW, HxWx1, HxWx3 or HxWx4 (channels last); got shape {tuple(tensor.shape)}."
        )
    if min(tensor.shape[0], tensor.shape[1]) < MIN_IMAGE_SIDE:  # before any arithmetic: an empty array has no range
        raise ImageInputError(
            f"{name}: {tensor.shape[1]}x{tensor.shape[0]} pixels is too small to assess; FuScore needs at least "
            f"{MIN_IMAGE_SIDE} pixels on each side."
        )
    if tensor.dtype == torch.bool:
        tensor = tensor.to(torch.uint8) * 255
    elif tensor.is_floating_point():
        tensor = tensor.double()
        if not torch.isfinite(tensor).all():
            raise ImageInputError(f"{name}: the image array holds NaN or infinite values.")
        if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
            raise ImageInputError(
                f"{name}: a floating-point image must be in [0, 1]; got values in "
                f"[{tensor.min().item():.4g}, {tensor.max().item():.4g}]. Scale it to [0, 1] or pass uint8/uint16."
            )
        tensor = (tensor * 255).round().to(torch.uint8)
    elif tensor.dtype != torch.uint8:
        info = torch.iinfo(tensor.dtype)
        tensor = _intensities_to_uint8(tensor.to(torch.float64), (float(info.min), float(info.max)), name)
    mode = "L" if tensor.ndim == 2 else ("RGB" if tensor.shape[-1] == 3 else "RGBA")
    height, width = tensor.shape[0], tensor.shape[1]
    return Image.frombytes(mode, (width, height), tensor.contiguous().numpy().tobytes())


def _displayed_size(image: Image.Image) -> tuple:
    width, height = image.size
    return (height, width) if _orientation(image) in _SIDE_SWAPPING_ORIENTATIONS else (width, height)


# JPEG frame headers (SOF markers: baseline, extended, progressive, lossless, arithmetic), which hold the image's size.
_JPEG_FRAME_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_APP1, _JPEG_START_OF_SCAN = 0xE1, 0xDA


def _jpeg_frame_size(path) -> Optional[tuple]:
    """`(width, height)` from a JPEG file's frame header, reading its markers' lengths only; None wherever Pillow must
    tell: not a JPEG, an APP1 segment (EXIF or XMP, either of which may hold an orientation), no frame or two, a
    frame of unknown height, a header that breaks off. (Hand-written because Pillow's `Image.open` parses every table
    of the header in Python, about 60 us a file on the project's CPU: 130 ms before a 2,048-image scoring call could
    start, `benchmarks/RESULTS_speed.md`.)"""
    size = None
    with open(path, "rb") as file:
        if file.read(2) != b"\xff\xd8":
            return None
        while True:
            header = file.read(4)
            if len(header) < 4 or header[0] != 0xFF:
                return None
            marker, length = header[1], int.from_bytes(header[2:4], "big")
            if marker == _JPEG_START_OF_SCAN:
                return size
            if marker == _JPEG_APP1 or length < 2 or not 0xC0 <= marker <= 0xFE or 0xD0 <= marker <= 0xD9:
                return None
            if marker in _JPEG_FRAME_MARKERS:
                frame = file.read(5)
                if size is not None or len(frame) < 5 or length < 7:
                    return None
                height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
                if not height or not width:
                    return None
                size = (width, height)
                file.seek(length - 7, os.SEEK_CUR)
            else:
                file.seek(length - 2, os.SEEK_CUR)


def image_size(image: ImageLike) -> Optional[tuple]:
    """`(width, height)` of an input image as `load_image` will give it (EXIF orientation applied), without decoding
    its pixels where possible; None when it cannot be told or is one `load_image` refuses (`size_problem`): an
    unreadable file or a refused size fails later, with its name, in `load_image`."""
    size = None
    try:
        if isinstance(image, (str, os.PathLike)):
            size = _jpeg_frame_size(image)
            if size is None:
                with Image.open(image) as handle:
                    size = _displayed_size(handle)
        elif isinstance(image, Image.Image):
            size = _displayed_size(image)
        else:
            shape = getattr(image, "shape", None)
            if shape is not None and len(shape) >= 2:
                size = int(shape[1]), int(shape[0])
    except Exception:  # noqa: BLE001 - any failure here is reported by load_image with the file's name
        return None
    if size is None or size_problem(*size):
        return None
    return size


ImageFile.LOAD_TRUNCATED_IMAGES = False

__all__ = ["HIGH_BIT_DEPTH_NOTE", "MAX_ASPECT_RATIO", "MAX_IMAGE_PIXELS", "MIN_IMAGE_SIDE", "ImageInputError", "ImageLike",
           "describe_image", "image_size", "load_image", "size_problem"]
