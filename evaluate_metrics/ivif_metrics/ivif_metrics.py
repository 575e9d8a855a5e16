# Copyright 2025 The FuScore authors. Licensed under the Apache License, Version 2.0.
"""Classical infrared-visible image fusion (IVIF) metrics with VIFB's conventions.

The 13 metrics of the VIFB benchmark (Zhang, Ye and Xiao, "VIFB: A Visible and Infrared
Image Fusion Benchmark", CVPRW 2020; MATLAB code in github.com/xingchenzhang/VIFB, folder
`metrics/`) re-implemented in vectorised numpy/scipy, plus VIF (the fusion VIF of Han et al.
2013, as in MEFB by the same authors), SCD and CC.

Conventions shared by every metric (they are VIFB's):

* Pixel values are doubles on the 0-255 scale (uint8 images as they are; float images must
  already be on that scale).
* Colour is handled per channel: when the fused image has three channels, each metric is
  computed on channel k of the fused image against channel k of each source (a one-channel
  source is used for all three channels) and the three values are averaged. VIFB never
  converts to grayscale on its own data (all its fused images are RGB). When the fused
  image has one channel, three-channel sources are converted with MATLAB's `rgb2gray`
  weights (rounded to integers for integer inputs, as MATLAB does for uint8).
* Two-source metrics combine the visible (VIS) and infrared (IR) terms as VIFB does:
  MI and SSIM sum the two terms; CE, RMSE and CC average them; PSNR uses the average of
  the two errors.

This file is self-contained (numpy, scipy, PIL, datasets, evaluate) because
`evaluate.load("evaluate_metrics/ivif_metrics")` copies it alone into the module cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import datasets
import evaluate
import numpy as np
import scipy.fft
from PIL import Image
from scipy import ndimage

METRIC_NAMES: tuple[str, ...] = (
    "CE", "EN", "MI", "PSNR", "AG", "EI", "Qabf", "SD", "SF", "RMSE", "SSIM", "Qcb", "Qcv",
    "VIF", "SCD", "CC",
)
"""VIFB's 13 metrics followed by VIF, SCD and CC."""

HIGHER_IS_BETTER: dict[str, bool] = {name: name not in ("CE", "RMSE", "Qcv") for name in METRIC_NAMES}
"""Direction of each metric: CE, RMSE and Qcv are distances (lower is better)."""

# MATLAB rgb2gray coefficients (ITU-R BT.601 rounded as MATLAB stores them).
_RGB2GRAY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])

# Float inputs may exceed [0, 255] by this much (rounding) before they are rejected.
_RANGE_SLACK = 1e-6

_SOBEL_SMOOTH = np.array([1.0, 2.0, 1.0])
_SOBEL_DERIVATIVE = np.array([1.0, 0.0, -1.0])


# ----------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------
def to_planes(image, name: str = "image") -> tuple[np.ndarray, bool]:
    """Convert one image to float64 planes of shape (C, H, W) on the 0-255 scale, C in {1, 3}.

    Accepts a PIL image or a numpy array (H, W), (H, W, 1) or (H, W, 3) of an integer dtype
    with values in [0, 255] or a float dtype with finite values in [0, 255]. Returns the
    planes and whether the input was integer-valued (which decides gray-level rounding).
    """
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB"):
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise ValueError(
                    f"{name}: PIL mode {image.mode!r} is not an 8-bit image; convert it to 'L' or 'RGB' "
                    "(or pass a float array scaled to [0, 255])."
                )
            image = image.convert("L" if image.mode in ("1", "LA") else "RGB")
        array = np.asarray(image)
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(f"{name}: expected a PIL image or a numpy array, got {type(image).__name__}.")

    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        planes = array[None, :, :]
    elif array.ndim == 3 and array.shape[2] == 3:
        planes = np.moveaxis(array, 2, 0)
    else:
        raise ValueError(f"{name}: expected shape (H, W), (H, W, 1) or (H, W, 3), got {array.shape}.")
    if planes.shape[1] < 2 or planes.shape[2] < 2:
        raise ValueError(f"{name}: image of size {planes.shape[1]}x{planes.shape[2]} is too small (at least 2x2).")

    if array.dtype == np.bool_:
        raise ValueError(f"{name}: boolean images are not supported; use uint8 0/255.")
    is_integer = np.issubdtype(array.dtype, np.integer)
    if not (is_integer or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name}: unsupported dtype {array.dtype}.")
    planes = planes.astype(np.float64)
    if not np.all(np.isfinite(planes)):
        raise ValueError(f"{name}: contains NaN or infinite values.")
    low, high = planes.min(), planes.max()
    if low < -_RANGE_SLACK or high > 255 + _RANGE_SLACK:
        raise ValueError(
            f"{name}: values must lie in [0, 255] (VIFB's scale), found [{low:.9g}, {high:.9g}]. "
            "Scale float images in [0, 1] by 255 first."
        )
    # Float arithmetic (e.g. a weighted blend) may overshoot the range by a few ulps.
    return np.clip(planes, 0, 255), bool(is_integer)


def _rgb_to_gray(planes: np.ndarray, round_to_integer: bool) -> np.ndarray:
    gray = np.tensordot(_RGB2GRAY_WEIGHTS, planes, axes=(0, 0))[None]
    # MATLAB's rgb2gray returns uint8 (rounded) for uint8 input.
    return np.floor(gray + 0.5) if round_to_integer else gray


def prepare_triplet(fused, ir, vis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (fused, ir, vis) as float64 arrays of one shape (C, H, W), following VIFB.

    A three-channel fused image keeps its channels and one-channel sources are repeated on
    the three channels; a one-channel fused image makes three-channel sources grayscale.
    """
    fused_planes, _ = to_planes(fused, "fused")
    ir_planes, ir_is_integer = to_planes(ir, "ir")
    vis_planes, vis_is_integer = to_planes(vis, "vis")
    size = fused_planes.shape[1:]
    for name, planes in (("ir", ir_planes), ("vis", vis_planes)):
        if planes.shape[1:] != size:
            raise ValueError(
                f"{name} has size {planes.shape[1]}x{planes.shape[2]} but fused has {size[0]}x{size[1]} (H x W); "
                "the three images must be registered and of one size."
            )
    channels = fused_planes.shape[0]
    if channels == 3:
        ir_planes = np.broadcast_to(ir_planes, fused_planes.shape)
        vis_planes = np.broadcast_to(vis_planes, fused_planes.shape)
    else:
        if ir_planes.shape[0] == 3:
            ir_planes = _rgb_to_gray(ir_planes, ir_is_integer)
        if vis_planes.shape[0] == 3:
            vis_planes = _rgb_to_gray(vis_planes, vis_is_integer)
    return fused_planes, ir_planes, vis_planes


# ----------------------------------------------------------------------------------------
# Helpers; every array below is a stack of planes of shape (N, H, W)
# ----------------------------------------------------------------------------------------
def _matlab_round(values: np.ndarray) -> np.ndarray:
    """MATLAB round (half away from zero) for non-negative values; numpy rounds half to even."""
    return np.floor(values + 0.5)


def _histograms_256(levels: np.ndarray) -> np.ndarray:
    """Per-plane 256-bin histograms of integer gray levels 0..255, shape (N, 256)."""
    count = levels.shape[0]
    offsets = (np.arange(count) * 256)[:, None, None]
    flat = (levels.astype(np.int64) + offsets).ravel()
    return np.bincount(flat, minlength=count * 256).reshape(count, 256).astype(np.float64)


def _gray_levels(planes: np.ndarray) -> np.ndarray:
    # VIFB indexes histograms with floor(value) (EN) or the value itself (CE, integer images).
    return np.clip(np.floor(planes), 0, 255)


def _plogp_sum(probabilities: np.ndarray, log: Callable[[np.ndarray], np.ndarray], axis) -> np.ndarray:
    """sum p * log p over `axis`, with 0 * log 0 = 0."""
    safe = np.where(probabilities > 0, probabilities, 1.0)
    return np.sum(probabilities * log(safe), axis=axis)


def _correlate_separable(planes: np.ndarray, kernel_rows: np.ndarray, kernel_cols: np.ndarray, mode: str) -> np.ndarray:
    """2-D correlation with the outer product kernel_rows x kernel_cols, plane by plane.

    Zero ('constant') and replicate ('nearest') padding are separable, so two 1-D passes
    give exactly MATLAB's filter2/imfilter result.
    """
    out = ndimage.correlate1d(planes, kernel_rows, axis=-2, mode=mode, cval=0.0)
    return ndimage.correlate1d(out, kernel_cols, axis=-1, mode=mode, cval=0.0)


def _filter_valid(planes: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """MATLAB filter2(kernel_1d' * kernel_1d, x, 'valid') for an odd symmetric separable kernel."""
    radius = len(kernel_1d) // 2
    full = _correlate_separable(planes, kernel_1d, kernel_1d, mode="constant")
    return full[:, radius:full.shape[1] - radius, radius:full.shape[2] - radius]


def _gaussian_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """1-D factor of MATLAB fspecial('gaussian', size, sigma) (normalised to sum 1)."""
    x = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _sobel_responses(planes: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Sobel responses with the signs of VIFB's Qabf, conv2(x, [-1 0 1; -2 0 2; -1 0 1]) and
    conv2(x, [1 2 1; 0 0 0; -1 -2 -1]) (convolution flips the kernels).

    The signs matter only for Qabf's orientation where the x-response is 0 (set to +pi/2).
    """
    along_cols = _correlate_separable(planes, _SOBEL_SMOOTH, _SOBEL_DERIVATIVE, mode)
    along_rows = _correlate_separable(planes, -_SOBEL_DERIVATIVE, _SOBEL_SMOOTH, mode)
    return along_cols, along_rows


def _pearson_per_plane(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """MATLAB corr2 per plane; NaN where either plane is constant."""
    xc = x - x.mean(axis=(1, 2), keepdims=True)
    yc = y - y.mean(axis=(1, 2), keepdims=True)
    numerator = np.sum(xc * yc, axis=(1, 2))
    denominator = np.sqrt(np.sum(xc * xc, axis=(1, 2)) * np.sum(yc * yc, axis=(1, 2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def _normalize_to_255(planes: np.ndarray) -> np.ndarray:
    """Z. Liu's normalize1 (used by Qcb and Qcv): min-max stretch to 0..255, rounded.

    An all-zero plane is returned unchanged; any other constant plane becomes NaN (0/0),
    which makes Qcb and Qcv undefined (NaN) for it, as in VIFB.
    """
    low = planes.min(axis=(1, 2), keepdims=True)
    high = planes.max(axis=(1, 2), keepdims=True)
    span = high - low
    with np.errstate(divide="ignore", invalid="ignore"):
        stretched = _matlab_round((planes - low) / span * 255)
    all_zero = (high == 0) & (low == 0)
    return np.where(all_zero, planes, stretched)


def _matlab_frequency_radius(height: int, width: int, divisor: float) -> np.ndarray:
    """Radial frequency of MATLAB's freqspace grid scaled by (size / divisor), on the rfft2 grid.

    MATLAB builds the grid in fftshift order and multiplies fftshift(fft2(x)); the same filter
    in unshifted order has frequency 2 * fftfreq(n). The filters are even in both axes, so the
    result is real and the half-spectrum (rfft2) suffices.
    """
    v = (height / divisor) * 2 * np.fft.fftfreq(height)
    u = (width / divisor) * 2 * np.fft.rfftfreq(width)
    return np.sqrt(u[None, :] ** 2 + v[:, None] ** 2)


def _frequency_filter(planes: np.ndarray, response: np.ndarray) -> np.ndarray:
    height, width = planes.shape[1:]
    spectrum = scipy.fft.rfft2(planes, axes=(1, 2))
    return scipy.fft.irfft2(spectrum * response, s=(height, width), axes=(1, 2))


def _block_sums(planes: np.ndarray, block: int) -> np.ndarray:
    """Sums over block x block tiles; partial tiles are zero-padded as MATLAB's blkproc does."""
    count, height, width = planes.shape
    pad_h, pad_w = (-height) % block, (-width) % block
    padded = np.pad(planes, ((0, 0), (0, pad_h), (0, pad_w)))
    tiles = padded.reshape(count, padded.shape[1] // block, block, padded.shape[2] // block, block)
    return tiles.sum(axis=(2, 4))


# ----------------------------------------------------------------------------------------
# Metrics. Each takes fused, ir, vis stacks of shape (N, H, W) and returns shape (N,),
# except spatial_frequency, which needs the channels of one image together.
# ----------------------------------------------------------------------------------------
def cross_entropy(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """CE: mean over the sources of the relative entropy sum p_s log2(p_s / p_f) of gray-level
    histograms (bins where either probability is 0 are skipped, as in VIFB). Lower is better."""
    pixels = fused.shape[1] * fused.shape[2]
    fused_p = _histograms_256(_gray_levels(fused)) / pixels
    terms = []
    for source in (vis, ir):
        source_p = _histograms_256(_gray_levels(source)) / pixels
        both = (source_p > 0) & (fused_p > 0)
        ratio = np.where(both, source_p, 1.0) / np.where(both, fused_p, 1.0)
        terms.append(np.sum(np.where(both, source_p * np.log2(ratio), 0.0), axis=1))
    return (terms[0] + terms[1]) / 2.0


def entropy(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """EN: Shannon entropy (bits) of the fused image's 256-bin gray-level histogram."""
    pixels = fused.shape[1] * fused.shape[2]
    probabilities = _histograms_256(_gray_levels(fused)) / pixels
    return -_plogp_sum(probabilities, np.log2, axis=1)


def _quantize_for_mi(planes: np.ndarray) -> np.ndarray:
    # VIFB's mutinf: min-max normalise to [0, 1], then int16(x * 255) (rounds half away from zero).
    low = planes.min(axis=(1, 2), keepdims=True)
    high = planes.max(axis=(1, 2), keepdims=True)
    constant = high == low
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = (planes - low) / np.where(constant, 1.0, high - low)
    normalized = np.where(constant, 0.0, normalized)
    return _matlab_round(normalized * 255).astype(np.int64)


def mutual_information(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """MI: MI(VIS, F) + MI(IR, F) in nats (natural log, as VIFB), from 256x256 joint histograms
    of min-max normalised images."""
    count = fused.shape[0]
    fused_levels = _quantize_for_mi(fused)
    offsets = (np.arange(count) * 65536)[:, None, None]
    total = np.zeros(count)
    for source in (vis, ir):
        source_levels = _quantize_for_mi(source)
        flat = (source_levels * 256 + fused_levels + offsets).ravel()
        joint = np.bincount(flat, minlength=count * 65536).reshape(count, 256, 256).astype(np.float64)
        joint /= joint.sum(axis=(1, 2), keepdims=True)
        h_joint = -_plogp_sum(joint, np.log, axis=(1, 2))
        h_source = -_plogp_sum(joint.sum(axis=2), np.log, axis=1)
        h_fused = -_plogp_sum(joint.sum(axis=1), np.log, axis=1)
        total += h_source + h_fused - h_joint
    return total


def _vifb_error(source: np.ndarray, fused: np.ndarray) -> np.ndarray:
    # VIFB's "mse" helper: sqrt(sum of squared differences) / (H * W), i.e. the L2 norm of the
    # difference divided by the pixel count (not the textbook mean squared error).
    pixels = fused.shape[1] * fused.shape[2]
    return np.sqrt(np.sum((source - fused) ** 2, axis=(1, 2))) / pixels


def psnr(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """PSNR (VIFB): 20 log10(255 / sqrt(e)) with e the mean over the sources of VIFB's error
    ||S - F||_2 / (H W). +inf when the fused image equals both sources."""
    error = (_vifb_error(vis, fused) + _vifb_error(ir, fused)) / 2.0
    with np.errstate(divide="ignore"):
        return 20 * np.log10(255.0 / np.sqrt(error))


def rmse(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """RMSE (VIFB): mean over the sources of ||S - F||_2 / (H W). Lower is better."""
    return (_vifb_error(vis, fused) + _vifb_error(ir, fused)) / 2.0


def average_gradient(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """AG: sum of sqrt((dx^2 + dy^2) / 2) over the image / ((H - 1)(W - 1)), with MATLAB
    `gradient` (central differences inside, one-sided at the border)."""
    d_rows, d_cols = np.gradient(fused, axis=(1, 2))
    magnitude = np.sqrt((d_cols**2 + d_rows**2) / 2)
    height, width = fused.shape[1:]
    return magnitude.sum(axis=(1, 2)) / ((height - 1) * (width - 1))


def edge_intensity(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """EI: mean Sobel gradient magnitude of the fused image (replicate padding, as imfilter)."""
    gx, gy = _sobel_responses(fused, mode="nearest")
    return np.sqrt(gx**2 + gy**2).mean(axis=(1, 2))


# Xydeas-Petrovic model constants (as in VIFB's metricsQabf).
_QABF_TG, _QABF_KG, _QABF_DG = 0.9994, -15.0, 0.5
_QABF_TA, _QABF_KA, _QABF_DA = 0.9879, -22.0, 0.8


def _edge_strength_and_orientation(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # VIFB scales the images by 255 (255 * im2double of a double image); kept for exactness of
    # the strength-ratio tie rule below. conv2 'same' pads with zeros.
    sx, sy = _sobel_responses(255.0 * planes, mode="constant")
    strength = np.sqrt(sx**2 + sy**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        orientation = np.where(sx == 0, np.pi / 2, np.arctan(sy / np.where(sx == 0, 1.0, sx)))
    return strength, orientation


def _qabf_preservation(source_g, source_a, fused_g, fused_a) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(
            source_g > fused_g,
            fused_g / np.where(source_g > fused_g, source_g, 1.0),
            # VIFB's tie rule: where the strengths are equal the "ratio" is the strength itself.
            np.where(source_g == fused_g, fused_g, source_g / np.where(fused_g > 0, fused_g, 1.0)),
        )
    alignment = 1 - np.abs(source_a - fused_a) / (np.pi / 2)
    q_strength = _QABF_TG / (1 + np.exp(np.clip(_QABF_KG * (ratio - _QABF_DG), -700, 700)))
    q_orientation = _QABF_TA / (1 + np.exp(_QABF_KA * (alignment - _QABF_DA)))
    return q_strength * q_orientation


def qabf(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Qabf (Xydeas-Petrovic): edge-strength-weighted preservation of Sobel edge strength and
    orientation from the sources. NaN when both sources are constant (no edges)."""
    fused_g, fused_a = _edge_strength_and_orientation(fused)
    numerator = np.zeros(fused.shape[0])
    denominator = np.zeros(fused.shape[0])
    for source in (vis, ir):
        source_g, source_a = _edge_strength_and_orientation(source)
        preservation = _qabf_preservation(source_g, source_a, fused_g, fused_a)
        numerator += np.sum(preservation * source_g, axis=(1, 2))
        denominator += np.sum(source_g, axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def standard_deviation(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """SD (VIFB's "variance"): population standard deviation of the fused image."""
    return fused.std(axis=(1, 2))


def spatial_frequency(fused_images: np.ndarray) -> np.ndarray:
    """SF: sqrt(RF^2 + CF^2) with RF, CF the mean squared horizontal / vertical differences.

    Takes fused images of shape (B, C, H, W) and returns (B,). VIFB indexes a colour image
    as an H x (C W) matrix, so the channels are laid side by side (the two seams between
    channels add two columns of differences) and the means are over H x C W pixels.
    """
    count, channels, height, width = fused_images.shape
    side_by_side = fused_images.transpose(0, 2, 1, 3).reshape(count, height, channels * width)
    pixels = height * channels * width
    row_frequency = np.sum(np.diff(side_by_side, axis=2) ** 2, axis=(1, 2)) / pixels
    column_frequency = np.sum(np.diff(side_by_side, axis=1) ** 2, axis=(1, 2)) / pixels
    return np.sqrt(row_frequency + column_frequency)


_SSIM_WINDOW = _gaussian_kernel_1d(11, 1.5)
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2


def _local_stats(planes: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-weighted local mean and variance ('valid' windows)."""
    mean = _filter_valid(planes, window)
    return mean, _filter_valid(planes * planes, window) - mean**2


def _ssim_mean(reference: np.ndarray, fused: np.ndarray, fused_stats) -> np.ndarray:
    """Wang et al. SSIM averaged over the 'valid' 11x11 Gaussian (sigma 1.5) windows, L = 255."""
    mu_f, var_f = fused_stats
    mu_r, var_r = _local_stats(reference, _SSIM_WINDOW)
    cov = _filter_valid(reference * fused, _SSIM_WINDOW) - mu_r * mu_f
    ssim_map = ((2 * mu_r * mu_f + _SSIM_C1) * (2 * cov + _SSIM_C2)) / (
        (mu_r**2 + mu_f**2 + _SSIM_C1) * (var_r + var_f + _SSIM_C2)
    )
    return ssim_map.mean(axis=(1, 2))


def ssim(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """SSIM (VIFB): SSIM(VIS, F) + SSIM(IR, F), so a fused image equal to both sources scores 2."""
    if min(fused.shape[1:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {fused.shape[1]}x{fused.shape[2]}.")
    fused_stats = _local_stats(fused, _SSIM_WINDOW)
    return _ssim_mean(vis, fused, fused_stats) + _ssim_mean(ir, fused, fused_stats)


# Chen-Blum (Qcb) constants, from VIFB's metricsQcb (Z. Liu's implementation).
_QCB_F0, _QCB_F1, _QCB_A = 15.3870, 1.3456, 0.7622
_QCB_P, _QCB_Q, _QCB_Z = 3.0, 2.0, 0.0001
_QCB_TAPS = np.arange(-15, 16)


def _qcb_local_contrast(planes: np.ndarray) -> np.ndarray:
    # Ratio of two unnormalised 31x31 Gaussians (sigma 2 and 4), zero padded ('same'), minus 1.
    responses = []
    for sigma in (2.0, 4.0):
        taps = np.exp(-(_QCB_TAPS**2) / (2 * sigma**2))
        responses.append(_correlate_separable(planes, taps, taps, mode="constant") / (2 * np.pi * sigma**2))
    with np.errstate(divide="ignore", invalid="ignore"):
        contrast = np.abs(responses[0] / responses[1] - 1)
    return contrast**_QCB_P / (contrast**_QCB_Q + _QCB_Z)


def qcb(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Qcb (Chen-Blum): mean over pixels of the saliency-weighted contrast preservation after
    a contrast-sensitivity (difference-of-Gaussians) filter in the frequency domain."""
    height, width = fused.shape[1:]
    # VIFB's grid: u scaled by W/30, v by H/30.
    radius = _matlab_frequency_radius(height, width, divisor=30)
    csf = np.exp(-((radius / _QCB_F0) ** 2)) - _QCB_A * np.exp(-((radius / _QCB_F1) ** 2))
    contrasts = [
        _qcb_local_contrast(_frequency_filter(_normalize_to_255(planes), csf)) for planes in (vis, ir, fused)
    ]
    vis_c, ir_c, fused_c = contrasts
    with np.errstate(divide="ignore", invalid="ignore"):
        vis_q = np.where(vis_c < fused_c, vis_c / fused_c, fused_c / vis_c)
        ir_q = np.where(ir_c < fused_c, ir_c / fused_c, fused_c / ir_c)
        saliency_vis = vis_c**2 / (vis_c**2 + ir_c**2)
        quality = saliency_vis * vis_q + (1 - saliency_vis) * ir_q
    return quality.mean(axis=(1, 2))


_QCV_WINDOW = 16
_QCV_ALPHA = 5


def qcv(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Qcv (Chen-Varshney): saliency-weighted (sum of Sobel strength^5 over 16x16 blocks) mean
    squared CSF-filtered (Mannos-Sakrison) difference between each source and the fused
    image. Lower is better."""
    height, width = fused.shape[1:]
    fused_n = _normalize_to_255(fused)
    # VIFB's grid: u scaled by W/8, v by H/8.
    radius = _matlab_frequency_radius(height, width, divisor=8)
    mannos_sakrison = 2.6 * (0.0192 + 0.144 * radius) * np.exp(-((0.144 * radius) ** 1.1))
    numerator = np.zeros(fused.shape[0])
    denominator = np.zeros(fused.shape[0])
    for source in (vis, ir):
        source_n = _normalize_to_255(source)
        gx, gy = _sobel_responses(source_n, mode="constant")
        saliency = _block_sums(np.sqrt(gx**2 + gy**2) ** _QCV_ALPHA, _QCV_WINDOW)
        filtered_difference = _frequency_filter(source_n - fused_n, mannos_sakrison)
        # blkproc's mean2 runs on zero-padded 16x16 tiles, so every tile divides by 256.
        distortion = _block_sums(filtered_difference**2, _QCV_WINDOW) / _QCV_WINDOW**2
        numerator += np.sum(saliency * distortion, axis=(1, 2))
        denominator += np.sum(saliency, axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / denominator


# Han et al. (2013) fusion VIF constants, as in MEFB's metricsVIF.
_VIF_NOISE = 0.005 * 255 * 255
_VIF_C = 1e-7
_VIF_SCALE_WEIGHTS = np.array([1.0, 0.0, 0.15, 1.0]) / 2.15
_VIF_EPS = 1e-10
# Scale s (1..4) uses fspecial('gaussian', N, N / 5) with N = 2^(5 - s) + 1.
_VIF_WINDOWS = [_gaussian_kernel_1d(2 ** (5 - scale) + 1, (2 ** (5 - scale) + 1) / 5) for scale in range(1, 5)]
# Smallest side for which the 4th scale still has one 'valid' window (17, 9, 5, 3-tap filters).
_VIF_MIN_SIZE = 41


def _vif_pyramid(planes: np.ndarray) -> list[np.ndarray]:
    """The four scales of VIFF: scale s > 1 is the previous one filtered ('valid') with the
    scale's Gaussian window and subsampled by 2."""
    levels = [planes]
    for window in _VIF_WINDOWS[1:]:
        levels.append(_filter_valid(levels[-1], window)[:, ::2, ::2])
    return levels


def _vif_information_maps(reference: np.ndarray, fused: np.ndarray, window: np.ndarray, fused_stats):
    """(information with distortion, information without distortion, gain g) maps of one scale."""
    mu_f, var_f = fused_stats
    mu_r, var_r = _local_stats(reference, window)
    var_r = np.maximum(var_r, 0)
    cov = _filter_valid(reference * fused, window) - mu_r * mu_f
    # The clamping sequence below is the one of Sheikh-Bovik's VIF, as in the reference code.
    gain = cov / (var_r + _VIF_EPS)
    noise = var_f - gain * cov
    flat_reference = var_r < _VIF_EPS
    gain = np.where(flat_reference, 0.0, gain)
    noise = np.where(flat_reference, var_f, noise)
    var_r = np.where(flat_reference, 0.0, var_r)
    flat_fused = var_f < _VIF_EPS
    gain = np.where(flat_fused, 0.0, gain)
    noise = np.where(flat_fused, 0.0, noise)
    negative = gain < 0
    noise = np.where(negative, var_f, noise)
    gain = np.where(negative, 0.0, gain)
    noise = np.maximum(noise, _VIF_EPS)
    with_distortion = np.log10(1 + gain**2 * var_r / (noise + _VIF_NOISE))
    without_distortion = np.log10(1 + var_r / _VIF_NOISE)
    return with_distortion, without_distortion, gain


def vif(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """VIF for fusion (VIFF, Han et al. 2013): per scale and pixel the source with the smaller
    gain supplies the information terms; scales weighted [1, 0, 0.15, 1] / 2.15."""
    if min(fused.shape[1:]) < _VIF_MIN_SIZE:
        raise ValueError(
            f"VIF needs images of at least {_VIF_MIN_SIZE}x{_VIF_MIN_SIZE} pixels (four scales of 'valid' "
            f"filtering), got {fused.shape[1]}x{fused.shape[2]}."
        )
    pyramids = [_vif_pyramid(planes) for planes in (fused, vis, ir)]
    total = np.zeros(fused.shape[0])
    for scale, (weight, window) in enumerate(zip(_VIF_SCALE_WEIGHTS, _VIF_WINDOWS)):
        fused_level = pyramids[0][scale]
        fused_stats = _local_stats(fused_level, window)
        fused_stats = (fused_stats[0], np.maximum(fused_stats[1], 0))
        vis_num, vis_den, vis_gain = _vif_information_maps(pyramids[1][scale], fused_level, window, fused_stats)
        ir_num, ir_den, ir_gain = _vif_information_maps(pyramids[2][scale], fused_level, window, fused_stats)
        pick_vis = vis_gain < ir_gain
        numerator = np.sum(np.where(pick_vis, vis_num, ir_num) + _VIF_C, axis=(1, 2))
        denominator = np.sum(np.where(pick_vis, vis_den, ir_den) + _VIF_C, axis=(1, 2))
        total += weight * numerator / denominator
    return total


def scd(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """SCD (Aslantas-Bendes): corr(F - IR, VIS) + corr(F - VIS, IR). NaN if a term is constant."""
    return _pearson_per_plane(fused - ir, vis) + _pearson_per_plane(fused - vis, ir)


def correlation_coefficient(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """CC: mean of corr(VIS, F) and corr(IR, F) (Pearson over pixels). NaN if an image is constant."""
    return (_pearson_per_plane(vis, fused) + _pearson_per_plane(ir, fused)) / 2.0


PER_PLANE_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "CE": cross_entropy,
    "EN": entropy,
    "MI": mutual_information,
    "PSNR": psnr,
    "AG": average_gradient,
    "EI": edge_intensity,
    "Qabf": qabf,
    "SD": standard_deviation,
    "RMSE": rmse,
    "SSIM": ssim,
    "Qcb": qcb,
    "Qcv": qcv,
    "VIF": vif,
    "SCD": scd,
    "CC": correlation_coefficient,
}


# ----------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------
def _check_metric_names(metrics: Iterable[str] | None) -> list[str]:
    if metrics is None:
        return list(METRIC_NAMES)
    if isinstance(metrics, str):
        metrics = [metrics]
    names = list(metrics)
    unknown = [name for name in names if name not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"Unknown metric(s) {unknown}; available: {list(METRIC_NAMES)}.")
    if not names:
        raise ValueError("`metrics` is empty; pass None for all metrics.")
    return names


def compute_metrics_on_stack(
    fused: np.ndarray,
    ir: np.ndarray,
    vis: np.ndarray,
    metrics: Iterable[str] | None = None,
    planes_per_call: int = 1,
) -> dict[str, np.ndarray]:
    """Metrics for a stack of same-size images already prepared by `prepare_triplet`.

    Every metric is vectorised over whole planes; the stack is walked `planes_per_call`
    channel planes at a time. One plane at a time is the fastest on CPU: larger blocks no
    longer fit the caches and run about twice slower per image (see
    benchmarks/RESULTS_ivif_metrics.md).

    Args:
        fused, ir, vis: float64 arrays of shape (B, C, H, W) on the 0-255 scale.
    Returns:
        {metric name: array of shape (B,)}, per-channel values averaged over C.
    """
    names = _check_metric_names(metrics)
    if not (fused.shape == ir.shape == vis.shape) or fused.ndim != 4:
        raise ValueError(f"Expected three arrays of one shape (B, C, H, W); got {fused.shape}, {ir.shape}, {vis.shape}.")
    if planes_per_call < 1:
        raise ValueError(f"planes_per_call must be at least 1, got {planes_per_call}.")
    count, channels, height, width = fused.shape
    flat = [np.ascontiguousarray(a, dtype=np.float64).reshape(count * channels, height, width) for a in (fused, ir, vis)]
    per_plane_names = [name for name in names if name != "SF"]
    per_plane = {name: np.empty(count * channels) for name in per_plane_names}
    for start in range(0, count * channels, planes_per_call):
        block = [planes[start:start + planes_per_call] for planes in flat]
        for name in per_plane_names:
            per_plane[name][start:start + planes_per_call] = PER_PLANE_METRICS[name](*block)
    return {
        name: spatial_frequency(fused) if name == "SF" else per_plane[name].reshape(count, channels).mean(axis=1)
        for name in names
    }


def compute_ivif_metrics(fused, ir, vis, metrics: Iterable[str] | None = None) -> dict[str, float]:
    """All (or the named) metrics for one fused image and its infrared and visible sources.

    Args:
        fused, ir, vis: PIL images or numpy arrays (H, W) / (H, W, 3), uint8 or float in [0, 255].
        metrics: metric names from `METRIC_NAMES`; None for all.
    Returns:
        {metric name: value}. See `HIGHER_IS_BETTER` for directions.
    """
    fused_p, ir_p, vis_p = prepare_triplet(fused, ir, vis)
    stacked = compute_metrics_on_stack(fused_p[None], ir_p[None], vis_p[None], metrics)
    return {name: float(values[0]) for name, values in stacked.items()}


def compute_ivif_metrics_batch(
    fused_images: Sequence,
    ir_images: Sequence,
    vis_images: Sequence,
    metrics: Iterable[str] | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Metrics for many images (of any sizes), one image at a time.

    Args:
        fused_images, ir_images, vis_images: sequences of equal length (PIL images or arrays).
        metrics: metric names; None for all.
        progress: show a tqdm progress bar over images.
    Returns:
        {metric name: float64 array with one value per image, in input order}.
    """
    names = _check_metric_names(metrics)
    if not len(fused_images) == len(ir_images) == len(vis_images):
        raise ValueError(
            f"fused_images, ir_images and vis_images must have one length, got "
            f"{len(fused_images)}, {len(ir_images)}, {len(vis_images)}."
        )
    results = {name: np.full(len(fused_images), np.nan) for name in names}
    indices = range(len(fused_images))
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="IVIF metrics", unit="image")
    for index in indices:
        try:
            fused, ir, vis = prepare_triplet(fused_images[index], ir_images[index], vis_images[index])
        except (ValueError, TypeError) as error:
            raise type(error)(f"Image {index}: {error}") from None
        values = compute_metrics_on_stack(fused[None], ir[None], vis[None], metrics=names)
        for name in names:
            results[name][index] = values[name][0]
    return results


# ----------------------------------------------------------------------------------------
# evaluate module
# ----------------------------------------------------------------------------------------
_DESCRIPTION = """\
Classical no-reference and source-reference metrics for infrared-visible image fusion with the
conventions of the VIFB benchmark: CE, EN, MI, PSNR, AG, EI, Qabf, SD, SF, RMSE, SSIM, Qcb,
Qcv (VIFB's 13), plus VIF (Han et al. 2013), SCD and CC.
"""

_KWARGS_DESCRIPTION = """
Args:
    fused (`list` of images): fused images (PIL images, uint8 arrays or image paths).
    ir (`list` of images): infrared source images, same sizes as `fused`.
    vis (`list` of images): visible source images, same sizes as `fused`.
    metrics (`list` of `str`, optional): subset of metric names; all by default.
    return_per_image (`bool`, optional): also return the per-image values (default False).
Returns:
    One entry per metric: the mean over the images (NaN values ignored, as VIFB's nanmean),
    and, with `return_per_image=True`, `per_image`: {metric: list of per-image values}.
Examples:
    >>> import evaluate
    >>> ivif = evaluate.load("evaluate_metrics/ivif_metrics")
    >>> scores = ivif.compute(fused=[fused_img], ir=[ir_img], vis=[vis_img], metrics=["EN", "SSIM"])
"""

_CITATION = """\
@inproceedings{zhang2020vifb,
  title={VIFB: A Visible and Infrared Image Fusion Benchmark},
  author={Zhang, Xingchen and Ye, Ping and Xiao, Gang},
  booktitle={CVPR Workshops},
  year={2020}
}
"""


def _lossless_image(image, name: str):
    """Make an input safe for datasets.Image: in-memory PIL images become uint8 arrays."""
    if isinstance(image, Image.Image) and not getattr(image, "filename", ""):
        if image.mode not in ("L", "RGB"):
            image = image.convert("L" if image.mode in ("1", "LA") else "RGB")
        return np.asarray(image)
    if isinstance(image, np.ndarray) and image.dtype != np.uint8:
        raise ValueError(
            f"{name}: the evaluate module stores images as 8-bit; got a {image.dtype} array. "
            "Use compute_ivif_metrics_batch for float images."
        )
    return image


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class IvifMetrics(evaluate.Metric):
    """evaluate wrapper around `compute_ivif_metrics_batch`."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"fused": datasets.Image(), "ir": datasets.Image(), "vis": datasets.Image()}),
            reference_urls=["https://github.com/xingchenzhang/VIFB"],
        )

    # datasets.Image re-encodes an in-memory PIL image in its own format, which for JPEG is
    # lossy; such images are handed over as uint8 arrays instead (stored losslessly as PNG).
    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of (fused, ir, vis) images."""
        kwargs = {
            name: [_lossless_image(image, name) for image in column] if name in ("fused", "ir", "vis") else column
            for name, column in kwargs.items()
        }
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one (fused, ir, vis) example."""
        kwargs = {
            name: _lossless_image(value, name) if name in ("fused", "ir", "vis") else value
            for name, value in kwargs.items()
        }
        super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, fused, ir, vis, metrics=None, return_per_image=False):
        values = compute_ivif_metrics_batch(list(fused), list(ir), list(vis), metrics=metrics)
        summary = {}
        for name, per_image in values.items():
            finite = per_image[~np.isnan(per_image)]
            summary[name] = float(finite.mean()) if finite.size else float("nan")
        if return_per_image:
            summary["per_image"] = {name: per_image.tolist() for name, per_image in values.items()}
        return summary
