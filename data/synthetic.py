"""The embedded synthetic IVIF benchmark: scenes, fusions, degradations and scores by construction.

No human-rated infrared-visible fusion table ships with FuScore, so the demo and the tests
use this generator. Everything is made from a seed, in milliseconds per image:

1. **Scenes** (`make_scene`): a procedural visible image (sky, textured ground, a road,
   buildings with windows, colour) and an infrared image of the same layout (cold sky,
   smooth ground, warm walls) with 1-4 *warm targets* (people and vehicles) whose masks
   are known. By day targets have random visible contrast (some are camouflaged); at
   night the visible image is dark and noisy and the targets barely differ from their
   surroundings, while the infrared still shows them hot.
2. **Fusions** (`fuse`, `FUSION_METHODS`): six classic IVIF methods on luminance
   (weighted average, max-absolute, Laplacian pyramid, Haar wavelet, guided filter,
   saliency-weighted); the visible chroma is added back (the usual YCbCr practice).
3. **Degradations** (`Degradation`): blur, additive noise, JPEG re-compression (blocking
   and ringing), contrast loss and thermal suppression (warm targets pulled towards their
   visible appearance), applied with explicit parameters (`render`) or random strengths
   (`sample_degradation`). Optionally (`SyntheticIVIF(local_artifacts=True)`), localised
   artifacts (`LocalArtifact`: blocking, halo, noise, ghosting, saturation) are planted too and
   an artifact map (`artifact_heatmap`) marks where each image shows artifacts.
4. **Scores by construction** (`render`): the four sub-scores are measured with oracle
   knowledge the model never sees (target masks, the noise-free sources, the undegraded
   fusion) and mapped to [1, 5] (higher is better):

   * `thermal_retention`: the targets' contrast against their local background in the
     fused image, as a fraction of their contrast in the infrared source (capped at 1 per
     target, averaged over targets; 1 at <= 0.15, 5 at >= 0.95).
   * `texture_preservation`: the share of the visible source's detail (band-pass, outside
     the targets) present in the fused image, a projection coefficient, so uncorrelated
     noise does not count (1 at <= 0.15, 5 at >= 0.9).
   * `sharpness`: the fused image's mean gradient magnitude relative to the sharper of
     the two sources at each pixel (1 at <= 0.25, 5 at >= 0.9).
   * `artifacts` (their absence): the high-pass RMS of everything in the fused image that
     the clean sources do not explain (injected noise, JPEG error, visible sensor noise
     passed through), plus the JPEG blockiness (gradient excess on the 8-px block grid
     over the clean image's), plus 4x the method's own overshoot outside the sources'
     local intensity envelope (halos) (5 at <= 0.005, 1 at >= 0.1).

   Noise and compression count once, as artifacts: thermal retention and texture are
   measured before them, sharpness on the noise-free branch (see `render`).
5. **Overall score and raters** (`SyntheticIVIF`): the constructed overall quality is
   `0.6 * mean(sub-scores) + 0.4 * min(sub-scores)`: the worst dimension weighs more,
   as a single strong flaw ruins a fused image for a viewer. Each scene is rated by a
   panel of `num_raters` simulated raters with their own bias (N(0, 0.3^2), shared by all
   images of the scene) and per-rating noise (N(0, s^2), s = 0.2 + 0.6 * sigma_sub, the
   RMS distance of the sub-scores from the overall truth as in DESIGN.md section 3, so
   ambiguous images are rated less consistently), each rating clipped to [1, 5]. `mos`
   is their mean and `mos_std` their standard deviation (ddof=1).

The `mos` is therefore constructed truth plus simulated rater noise, NOT a human rating.
"""

from __future__ import annotations

import io
import itertools
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import SimpleNamespace

import numpy as np
from PIL import Image
from scipy import ndimage

from .cards import SYNTHETIC_STATEMENT
from .schema import EXTRA_FEATURES, RATING_FEATURES, SUB_DIMENSIONS


# Every length in pixels below is for a 112-px image and scales with the image size, so a
# scene at 224 px is the same scene with the same scores, only finer.
REFERENCE_SIZE = 112
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# Natural base colours (RGB) of the visible scene's regions.
SKY_COLOURS = ((0.55, 0.65, 0.8), (0.7, 0.72, 0.75), (0.8, 0.7, 0.6))
GROUND_COLOURS = ((0.35, 0.45, 0.25), (0.45, 0.4, 0.3), (0.5, 0.5, 0.48), (0.6, 0.55, 0.4))
WALL_COLOURS = ((0.6, 0.35, 0.3), (0.7, 0.65, 0.55), (0.5, 0.5, 0.52), (0.45, 0.5, 0.6))
TARGET_COLOURS = ((0.2, 0.25, 0.5), (0.6, 0.2, 0.2), (0.3, 0.3, 0.3), (0.8, 0.8, 0.75), (0.3, 0.45, 0.3), (0.7, 0.6, 0.3))

# Overall = OVERALL_MEAN_WEIGHT * mean + (1 - OVERALL_MEAN_WEIGHT) * min of the sub-scores.
OVERALL_MEAN_WEIGHT = 0.6
RATER_BIAS_STD = 0.3
RATER_NOISE_BASE = 0.2
RATER_NOISE_PER_SPREAD = 0.6

# (measurement at score 1, measurement at score 5); linear in between, clipped outside.
SCORE_ANCHORS = {
    "thermal_retention": (0.15, 0.95),
    "texture_preservation": (0.15, 0.9),
    "artifacts": (0.1, 0.005),
    "sharpness": (0.25, 0.9),
}


# --------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Scene:
    """One procedural infrared/visible source pair with its oracle annotations.

    Arrays are float32 in [0, 1], shape (H, W) or (H, W, 3).
    """

    ir: np.ndarray  # infrared source as shown to fusion methods and raters
    vis: np.ndarray  # visible source as shown (RGB; at night dark and noisy)
    vis_clean: np.ndarray  # visible source without sensor noise (oracle only)
    targets: np.ndarray  # int32 label map: 0 = background, k = warm target k (oracle only)
    rings: np.ndarray  # int32 label map of the local background band around target k (oracle only)
    night: bool

    @property
    def size(self) -> int:
        return self.ir.shape[0]

    @property
    def scale(self) -> float:
        return self.size / REFERENCE_SIZE

    @property
    def num_targets(self) -> int:
        return int(self.targets.max())

    @cached_property
    def vis_y(self) -> np.ndarray:
        return _luma(self.vis)

    @cached_property
    def vis_clean_y(self) -> np.ndarray:
        return _luma(self.vis_clean) if self.night else self.vis_y

    @cached_property
    def target_weight(self) -> np.ndarray:
        """Soft target mask used by thermal suppression (smooth edges, no halo seams)."""
        mask = (self.targets > 0).astype(np.float32)
        return np.clip(_blur(mask, 1.0 * self.scale) * 1.5, 0.0, 1.0)

    @cached_property
    def reference_gradient(self) -> float:
        """Mean over pixels of the larger source gradient magnitude (the sharpness reference)."""
        return float(np.maximum(_gradient_magnitude(self.ir), _gradient_magnitude(self.vis_clean_y)).mean())

    @cached_property
    def envelope(self) -> tuple[np.ndarray, np.ndarray]:
        """Local intensity range of the clean sources; fused values outside it are overshoot."""
        high = ndimage.maximum_filter(np.maximum(self.ir, self.vis_clean_y), size=3) + 0.02
        low = ndimage.minimum_filter(np.minimum(self.ir, self.vis_clean_y), size=3) - 0.02
        return low, high

    @cached_property
    def visible_detail(self) -> np.ndarray:
        return _band_pass(self.vis_clean_y, self.scale)

    def ir_image(self) -> Image.Image:
        return Image.fromarray(_to_uint8(self.ir), mode="L")

    def vis_image(self) -> Image.Image:
        return Image.fromarray(_to_uint8(self.vis), mode="RGB")


def make_scene(rng: np.random.Generator, image_size: int = REFERENCE_SIZE, *, night: bool = False) -> Scene:
    """Draw one scene from `rng` (see the module docstring for what a scene contains)."""
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}.")
    size = int(image_size)
    scale = size / REFERENCE_SIZE
    # Normalised coordinates as broadcasting column/row vectors: cheap full-frame masks.
    yy = (np.arange(size, dtype=np.float32)[:, None] + 0.5) / size
    xx = (np.arange(size, dtype=np.float32)[None, :] + 0.5) / size

    horizon = rng.uniform(0.25, 0.45)
    ground = np.broadcast_to(yy >= horizon, (size, size))
    # region ids index `palette`, the per-region chroma of the visible image
    region = np.where(ground, 1, 0).astype(np.int32)
    palette = [_chroma(rng, SKY_COLOURS, 0.5), _chroma(rng, GROUND_COLOURS, 0.6)]

    # Visible luminance: bright sky gradient, textured ground with perspective shading.
    texture = 0.45 * _unit_noise(rng, size, 0.8 * scale) + 0.55 * _unit_noise(rng, size, 2.5 * scale)
    sky = rng.uniform(0.6, 0.85) + 0.25 * (yy - horizon)
    ground_level = rng.uniform(0.3, 0.55)
    lum = np.where(ground, ground_level + 0.1 * (yy - horizon) + rng.uniform(0.06, 0.12) * texture, sky)
    # Infrared: cold sky, smooth ground temperature with a faint echo of the ground texture.
    ir_ground = rng.uniform(0.3, 0.45) + 0.08 * _unit_noise(rng, size, 6.0 * scale) + 0.02 * texture
    ir = np.where(ground, ir_ground, rng.uniform(0.05, 0.15) + 0.05 * yy)

    # A road band with a dashed centre line: long straight edges in the visible image.
    road_top = rng.uniform(horizon + 0.2, 0.8)
    road = np.broadcast_to((yy >= road_top) & (yy < road_top + 0.12), (size, size))
    dashes = road & (np.abs(yy - road_top - 0.06) < 0.008 + 0.5 / size) & (np.mod(xx * 6.0 + rng.random(), 1.0) < 0.5)
    lum = np.where(road, 0.22 + 0.04 * texture, lum)
    lum = np.where(dashes, 0.85, lum)
    ir = np.where(road, ir + 0.05, ir)
    region = np.where(road, 2, region)
    palette.append(_chroma(rng, ((0.5, 0.5, 0.5),), 0.0))

    # Buildings on the horizon: flat walls with a grid of windows (sharp, regular edges).
    for _ in range(int(rng.integers(2, 6))):
        left = rng.uniform(-0.1, 0.9)
        width = rng.uniform(0.08, 0.3)
        height = rng.uniform(0.08, 0.3)
        bottom = horizon + rng.uniform(0.0, 0.05)
        wall = _box(yy, xx, bottom - height, bottom, left, left + width)
        fy, fx = rng.uniform(12, 30, size=2)
        windows = wall & (np.mod(yy * fy, 1.0) < 0.45) & (np.mod(xx * fx, 1.0) < 0.5)
        wall_level = rng.uniform(0.2, 0.8)
        window_level = np.clip(wall_level + rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.35), 0.0, 1.0)
        lum = np.where(windows, window_level, np.where(wall, wall_level, lum))
        ir_wall = rng.uniform(0.3, 0.55)
        ir = np.where(windows, ir_wall + 0.08, np.where(wall, ir_wall, ir))
        region = np.where(wall, len(palette), region)
        palette.append(_chroma(rng, WALL_COLOURS, 0.7))

    # Warm targets: people (body ellipse + head) and vehicles (body + cabin), on the ground.
    targets = np.zeros((size, size), dtype=np.int32)
    num_targets = int(rng.integers(1, 5))
    for k in range(1, num_targets + 1):
        cx = rng.uniform(0.1, 0.9)
        foot = rng.uniform(max(horizon + 0.15, 0.5), 0.95)
        if rng.random() < 0.6:
            height = rng.uniform(0.16, 0.3)
            width = 0.35 * height
            body = _ellipse(yy, xx, foot - 0.42 * height, cx, 0.4 * height, 0.5 * width)
            hot_part = _ellipse(yy, xx, foot - 0.88 * height, cx, 0.12 * height, 0.12 * height)
        else:
            width = rng.uniform(0.18, 0.32)
            height = 0.45 * width
            body = _box(yy, xx, foot - 0.6 * height, foot, cx - width / 2, cx + width / 2)
            body = body | _box(yy, xx, foot - height, foot - 0.6 * height, cx - width / 4, cx + width / 4)
            hot_part = _box(yy, xx, foot - 0.2 * height, foot, cx - width / 2, cx + width / 2)  # engine, wheels
        shape = body | hot_part
        targets[shape] = k
        temperature = rng.uniform(0.7, 0.9)
        ir = np.where(shape, temperature, ir)
        ir = np.where(hot_part, min(temperature + 0.08, 1.0), ir)
        # By day a target has its own reflectance (sometimes close to the ground: camouflage);
        # the texture term keeps clothes and bodywork from looking flat.
        lum = np.where(shape, rng.uniform(0.1, 0.9) + 0.05 * texture, lum)
        region = np.where(shape, len(palette), region)
        palette.append(_chroma(rng, TARGET_COLOURS, 0.8))
    targets = _drop_occluded(targets)
    # Infrared optics are softer than visible ones.
    ir = np.clip(_blur(ir.astype(np.float32), 0.6 * scale), 0.0, 1.0).astype(np.float32)

    rings = _rings(targets, radius=max(2, round(3 * scale)))
    lum = np.clip(lum, 0.0, 1.0).astype(np.float32)

    if night:
        # Night: dark, low-colour visible, a few lamps; targets sink into their surroundings.
        local = ndimage.uniform_filter(lum, size=max(3, round(9 * scale)))
        lum = np.where(targets > 0, local + rng.uniform(-0.03, 0.03), lum)
        lum = lum * rng.uniform(0.12, 0.3)
        for _ in range(int(rng.integers(0, 3))):
            ly, lx = rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.95)
            radius = rng.uniform(0.02, 0.06)
            lum = lum + 0.7 * np.exp(-((yy - ly) ** 2 + (xx - lx) ** 2) / (2 * radius**2))
        lum = np.clip(lum, 0.0, 1.0).astype(np.float32)
        saturation = 0.3
    else:
        saturation = 1.0

    chroma = np.stack(palette).astype(np.float32)[region] * saturation
    vis_clean = np.clip(lum[..., None] * (1.0 + chroma), 0.0, 1.0).astype(np.float32)
    if night:
        # Sensor noise on luminance (the same on all channels, so chroma stays clean).
        noise = rng.uniform(0.015, 0.04) * _field_rng(rng).standard_normal((size, size), dtype=np.float32)
        vis = np.clip(vis_clean + noise[..., None], 0.0, 1.0).astype(np.float32)
    else:
        vis = vis_clean
    return Scene(ir=ir, vis=vis, vis_clean=vis_clean, targets=targets, rings=rings, night=night)


# --------------------------------------------------------------------------------------
# Fusion methods (luminance in, luminance out; float32 in [0, 1])
# --------------------------------------------------------------------------------------


def fuse_weighted_average(ir: np.ndarray, vis: np.ndarray, scale: float) -> np.ndarray:
    """Pixel average: no artifacts, but halves the contrast of both sources."""
    return 0.5 * ir + 0.5 * vis


def fuse_max_absolute(ir: np.ndarray, vis: np.ndarray, scale: float) -> np.ndarray:
    """Pixel-wise max-absolute choice (the brighter source wins): keeps hot targets, loses dark texture."""
    return np.maximum(ir, vis)


def fuse_laplacian_pyramid(ir: np.ndarray, vis: np.ndarray, scale: float) -> np.ndarray:
    """Laplacian pyramid, base averaged, details max-absolute.

    We use the undecimated form (band-pass layers at sigma 1, 2, 4 px): same behaviour,
    no odd-size bookkeeping, and fast at these image sizes.
    """
    fused = np.zeros_like(ir)
    previous = (ir, vis)
    for sigma in (1.0, 2.0, 4.0):
        blurred = (_blur(previous[0], sigma * scale), _blur(previous[1], sigma * scale))
        detail_ir, detail_vis = previous[0] - blurred[0], previous[1] - blurred[1]
        fused += np.where(np.abs(detail_ir) >= np.abs(detail_vis), detail_ir, detail_vis)
        previous = blurred
    return fused + 0.5 * (previous[0] + previous[1])


def fuse_haar_wavelet(ir: np.ndarray, vis: np.ndarray, scale: float) -> np.ndarray:
    """Two-level orthonormal Haar DWT, approximation averaged, details max-absolute (blocky edges)."""
    size_y, size_x = ir.shape
    pad = ((0, -size_y % 4), (0, -size_x % 4))
    a, b = np.pad(ir, pad, mode="edge"), np.pad(vis, pad, mode="edge")
    a_details, b_details = [], []
    for _ in range(2):
        a, detail = _haar_forward(a)
        a_details.append(detail)
        b, detail = _haar_forward(b)
        b_details.append(detail)
    fused = 0.5 * (a + b)
    for detail_a, detail_b in zip(reversed(a_details), reversed(b_details)):
        chosen = tuple(np.where(np.abs(x) >= np.abs(y), x, y) for x, y in zip(detail_a, detail_b))
        fused = _haar_inverse(fused, chosen)
    return fused[:size_y, :size_x]


def fuse_guided_filter(ir: np.ndarray, vis: np.ndarray, scale: float) -> np.ndarray:
    """Guided filtering fusion (Li, Kang and Hu, 2013), radii scaled to the image size.

    Two-scale decomposition (box-filter base + detail); binary weight maps from smoothed
    Laplacian saliency, refined by a guided filter with each source as guide: large and
    smooth for the base layer, small and edge-tight for the detail layer.
    """
    base_size = max(3, 2 * round(7 * scale) + 1)
    sources = (ir, vis)
    bases = [ndimage.uniform_filter(x, size=base_size) for x in sources]
    details = [x - base for x, base in zip(sources, bases)]
    saliency = [_blur(np.abs(ndimage.laplace(x)), 2.5 * scale) for x in sources]
    pick_ir = (saliency[0] >= saliency[1]).astype(np.float32)
    picks = (pick_ir, 1.0 - pick_ir)
    base_radius, detail_radius = max(2, round(10 * scale)), max(1, round(2 * scale))
    base_weights = [_guided_filter(x, p, base_radius, 0.3) for x, p in zip(sources, picks)]
    detail_weights = [_guided_filter(x, p, detail_radius, 1e-4) for x, p in zip(sources, picks)]
    base_total = base_weights[0] + base_weights[1] + 1e-6
    detail_total = detail_weights[0] + detail_weights[1] + 1e-6
    fused_base = (base_weights[0] * bases[0] + base_weights[1] * bases[1]) / base_total
    fused_detail = (detail_weights[0] * details[0] + detail_weights[1] * details[1]) / detail_total
    return fused_base + fused_detail


def fuse_saliency_weighted(ir: np.ndarray, vis: np.ndarray, scale: float) -> np.ndarray:
    """Frequency-tuned saliency weighting: each pixel leans to the source that stands out there."""
    weights = []
    for x in (ir, vis):
        contrast = np.abs(_blur(x, 1.0 * scale) - x.mean())
        weights.append(_blur(contrast, 3.0 * scale) ** 2)
    weight_ir = weights[0] / (weights[0] + weights[1] + 1e-6)
    return weight_ir * ir + (1.0 - weight_ir) * vis


FUSION_METHODS: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "weighted_average": fuse_weighted_average,
    "max_absolute": fuse_max_absolute,
    "laplacian_pyramid": fuse_laplacian_pyramid,
    "haar_wavelet": fuse_haar_wavelet,
    "guided_filter": fuse_guided_filter,
    "saliency_weighted": fuse_saliency_weighted,
}
ALL_METHODS = tuple(FUSION_METHODS)


def fuse(ir: np.ndarray, vis: np.ndarray, method: str, scale: float | None = None) -> np.ndarray:
    """Fuse an infrared and a visible luminance image (float32 (H, W) in [0, 1]) with `method`."""
    if method not in FUSION_METHODS:
        raise ValueError(f"Unknown fusion method {method!r}; choose one of {list(FUSION_METHODS)}.")
    if ir.shape != vis.shape or ir.ndim != 2:
        raise ValueError(f"fuse expects two (H, W) luminance arrays of one shape, got {ir.shape} and {vis.shape}.")
    scale = ir.shape[0] / REFERENCE_SIZE if scale is None else scale
    fused = FUSION_METHODS[method](ir.astype(np.float32, copy=False), vis.astype(np.float32, copy=False), scale)
    return np.clip(fused, 0.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------
# Degradations and rendering
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Degradation:
    """Controlled degradations of a fused image; the defaults leave it untouched.

    Lengths are in pixels at 112 px and scale with the image size.
    """

    blur_sigma: float = 0.0  # Gaussian blur
    noise_sigma: float = 0.0  # additive Gaussian luminance noise, on [0, 1] intensities
    jpeg_quality: int | None = None  # JPEG re-compression at this quality (1-95); None: none
    contrast_loss: float = 0.0  # 0..1: fused = mean + (1 - contrast_loss) * (fused - mean)
    thermal_suppression: float = 0.0  # 0..1: warm targets pulled this far towards their visible look

    def __post_init__(self):
        for name in ("blur_sigma", "noise_sigma"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("contrast_loss", "thermal_suppression"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in [1, 95] or None, got {self.jpeg_quality}.")

    def tag(self) -> str:
        """Short text naming the active degradations, e.g. `blur1.50+jpeg20`; '' when none."""
        parts = []
        if self.blur_sigma > 0:
            parts.append(f"blur{self.blur_sigma:.2f}")
        if self.noise_sigma > 0:
            parts.append(f"noise{self.noise_sigma:.3f}")
        if self.jpeg_quality is not None:
            parts.append(f"jpeg{self.jpeg_quality}")
        if self.contrast_loss > 0:
            parts.append(f"contrast{self.contrast_loss:.2f}")
        if self.thermal_suppression > 0:
            parts.append(f"thermal{self.thermal_suppression:.2f}")
        return "+".join(parts)


def sample_degradation(rng: np.random.Generator) -> Degradation:
    """Random degradations: none for 25 % of images, else 1-3 kinds at random strengths.

    The ranges reach from barely visible to ruinous so that the scores cover [1, 5];
    strengths are `u ** 1.3` (u uniform), slightly favouring mild damage, as in real
    fusion results.
    """
    if rng.random() < 0.25:
        return Degradation()
    kinds = rng.choice(5, size=int(rng.integers(1, 4)), replace=False)
    strength = rng.random(5) ** 1.3
    return Degradation(
        blur_sigma=round(0.5 + 2.0 * strength[0], 2) if 0 in kinds else 0.0,
        noise_sigma=round(0.01 + 0.11 * strength[1], 3) if 1 in kinds else 0.0,
        jpeg_quality=int(round(40 - 35 * strength[2])) if 2 in kinds else None,
        contrast_loss=round(0.1 + 0.4 * strength[3], 2) if 3 in kinds else 0.0,
        thermal_suppression=round(0.2 + 0.8 * strength[4], 2) if 4 in kinds else 0.0,
    )


def _jittered(degradation: Degradation, amount: float, rng: np.random.Generator) -> Degradation:
    """`degradation` with each active strength scaled by its own factor uniform in [1 - amount, 1 + amount]
    (JPEG: the quality; clipped to each parameter's valid range). Always draws five factors, so the stream of
    `rng` does not depend on which kinds are active."""
    factor = rng.uniform(1.0 - amount, 1.0 + amount, size=5)
    quality = degradation.jpeg_quality
    return Degradation(
        blur_sigma=round(degradation.blur_sigma * factor[0], 2),
        noise_sigma=round(degradation.noise_sigma * factor[1], 3),
        jpeg_quality=None if quality is None else int(np.clip(round(quality * factor[2]), 1, 95)),
        contrast_loss=round(min(degradation.contrast_loss * factor[3], 1.0), 2),
        thermal_suppression=round(min(degradation.thermal_suppression * factor[4], 1.0), 2),
    )


LOCAL_ARTIFACT_KINDS = ("blocking", "halo", "noise", "ghosting", "saturation")
"""Localised artifacts of real fusion results that `LocalArtifact` plants: blocking and ringing from heavy compression
of one region, halos (overshoot) at strong edges, noise, ghosting from a misregistered infrared source, and a clipped,
saturated region."""
# A pixel of a planted halo or ghost is marked where it moved the luminance by at least this much (about 8 grey levels).
PLANTED_CHANGE_VISIBLE = 0.03
# An 8 x 8 block of a compressed region is marked where its mean absolute luminance change reaches this.
PLANTED_BLOCK_VISIBLE = 0.01
# With maps on, the generator's other artifacts are marked too: the unexplained high-pass residual (global noise, JPEG,
# passed-through sensor noise) where its local RMS (5 px window at 112 px) reaches this, and the method's overshoot
# outside the sources' envelope where it reaches OVERSHOOT_VISIBLE.
RESIDUAL_VISIBLE = 0.03
OVERSHOOT_VISIBLE = 0.02


@dataclass(frozen=True)
class LocalArtifact:
    """One localised artifact to plant in a fused image (`render(..., local_artifacts=...)`).

    Position and size are fractions of the image side, so an artifact is the same at 112 and 224 px. The region is
    the disc of `radius` around the centre (blocking: the 8-px-aligned square around it). `strength` in [0, 1] sets:

    * `blocking`: JPEG re-compression of the region at quality `round(12 - 9 strength)` (3..12);
    * `halo`: unsharp-mask overshoot, `(1 + 3 strength) (y - blur(y, 1.5 px))` added inside the region;
    * `noise`: Gaussian luminance noise of sigma `0.04 + 0.1 strength` (its field drawn from `seed`);
    * `ghosting`: the infrared source shifted by `3 + 5 strength` px towards `angle` (radians, 0 = right, pi/2 = down)
      and blended in at `0.35 + 0.3 strength`, as a misregistered source leaves a displaced copy of its edges;
    * `saturation`: a brightness boost that clips `40 + 50 strength` % of the region to white (that quantile of its
      luminance from the top pushed 0.05 past 1).
    """

    kind: str
    center_y: float
    center_x: float
    radius: float
    strength: float
    angle: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.kind not in LOCAL_ARTIFACT_KINDS:
            raise ValueError(f"Unknown local artifact {self.kind!r}; choose one of {list(LOCAL_ARTIFACT_KINDS)}.")
        for name in ("center_y", "center_x", "strength"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if not 0 < self.radius <= 0.5:
            raise ValueError(f"radius must be in (0, 0.5] (a fraction of the image side), got {self.radius}.")

    def tag(self) -> str:
        """e.g. `halo0.62`."""
        return f"{self.kind}{self.strength:.2f}"


def sample_local_artifacts(rng: np.random.Generator, scene: Scene, probability: float = 0.75,
                           max_count: int = 3) -> tuple[LocalArtifact, ...]:
    """Random localised artifacts for one fused image: none with probability `1 - probability`, else 1 to
    `max_count` of different kinds at strengths uniform in [0.2, 1], regions of radius 8-16 % of the side.

    Halos are centred on a strong edge of the sources (the top 5 % of their gradient), ghosts on a warm target (where
    a misregistered infrared image shows most), the others anywhere away from the border.
    """
    if rng.random() >= probability:
        return ()
    count = int(rng.integers(1, max_count + 1))
    kinds = [LOCAL_ARTIFACT_KINDS[k] for k in rng.choice(len(LOCAL_ARTIFACT_KINDS), size=count, replace=False)]
    size = scene.size
    edges = np.maximum(_gradient_magnitude(scene.ir), _gradient_magnitude(scene.vis_clean_y))
    strong = np.argwhere(edges >= np.quantile(edges, 0.95))
    artifacts = []
    for kind in kinds:
        strength = round(float(rng.uniform(0.2, 1.0)), 2)
        radius = round(float(rng.uniform(0.08, 0.16)), 3)
        angle = round(float(rng.uniform(0.0, 2 * np.pi)), 3)
        seed = int(rng.integers(2**31))
        y, x = rng.uniform(0.2, 0.8, size=2)
        pick = int(rng.integers(1 << 30))
        if kind == "halo" and len(strong):
            y, x = (strong[pick % len(strong)] + 1.0) / size
        elif kind == "ghosting" and scene.num_targets:
            y, x = (np.array(ndimage.center_of_mass(scene.targets == 1 + pick % scene.num_targets)) + 0.5) / size
        artifacts.append(LocalArtifact(kind, round(float(np.clip(y, 0, 1)), 3), round(float(np.clip(x, 0, 1)), 3),
                                       radius, strength, angle, seed))
    return tuple(artifacts)


@dataclass(frozen=True)
class Rendering:
    """One fused image with its constructed sub-scores.

    `scores` are on [1, 5]; `measurements` are the raw oracle quantities they are mapped
    from (see `SCORE_ANCHORS`).
    """

    fused: np.ndarray  # (H, W, 3) uint8
    method: str
    degradation: Degradation
    scores: dict[str, float]
    measurements: dict[str, float] = field(default_factory=dict)
    local_artifacts: tuple = ()  # the planted `LocalArtifact`s
    planted_masks: tuple = ()  # one (H, W) bool mask per planted artifact: where it is marked
    artifact_map: np.ndarray | None = None  # (H, W) uint8, 255 where the image shows an artifact (with maps on)

    def fused_image(self) -> Image.Image:
        return Image.fromarray(self.fused, mode="RGB")

    def artifact_map_image(self) -> Image.Image | None:
        """The artifact map as a grey image (0 clean, 255 artifact), or None without maps."""
        return None if self.artifact_map is None else Image.fromarray(self.artifact_map, mode="L")


def render(
    scene: Scene,
    method: str,
    degradation: Degradation = Degradation(),
    rng: np.random.Generator | None = None,
    local_artifacts: Sequence[LocalArtifact] = (),
    artifact_map: bool = False,
) -> Rendering:
    """Fuse `scene` with `method`, apply `degradation`, and score the result by construction.

    Three versions of the fused luminance are involved:

    * *shown*: fusion of the sources as observed, every degradation; this is the image.
    * *content*: the shown fusion with only the content degradations (thermal suppression,
      contrast loss, blur): no injected noise, no JPEG. Thermal retention and texture are
      measured on it; both are region averages or projections on the clean visible detail,
      so the night sensor noise it still carries does not bias them.
    * *clean*: fusion of the noise-free sources with the content degradations. Sharpness
      is measured on it (noise would pass for edges), and the high-pass difference
      between *shown* and *clean* is the artifact residual. By day the observed sources
      are noise-free, so *content* and *clean* coincide.

    `rng` draws the injected noise (default: a fixed generator, so a call with explicit
    parameters is reproducible).

    `local_artifacts` are planted last, into the shown image (after noise and JPEG); like noise and
    compression they count only as artifacts, by the same rule: the high-pass residual the clean
    sources do not explain and the 8-px blockiness of `_artifact_level`. With `artifact_map` (implied by `local_artifacts`)
    the rendering carries the artifact map: each planted artifact's mask (noise: its disc; blocking:
    the 8 x 8 blocks it visibly changed; halo and ghosting: the disc's pixels it moved by at least
    `PLANTED_CHANGE_VISIBLE`, grown by 1 px; saturation: the disc's pixels pushed past white), and
    the other artifacts the score counts where they are visible (`RESIDUAL_VISIBLE`,
    `OVERSHOOT_VISIBLE`). Without either, nothing changes: the same image and scores as before
    maps existed.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    scale = scene.scale
    fused_shown = fuse(scene.ir, scene.vis_y, method, scale)
    content = _content_degradations(fused_shown, scene.vis_y, scene, degradation)
    if scene.night:
        fused_clean = fuse(scene.ir, scene.vis_clean_y, method, scale)
        clean = _content_degradations(fused_clean, scene.vis_clean_y, scene, degradation)
    else:
        fused_clean, clean = fused_shown, content
    clean_rgb = _compose_rgb(clean, scene.vis_clean, scene.vis_clean_y)

    shown = content
    if degradation.noise_sigma > 0:
        noise = _field_rng(rng).standard_normal(content.shape, dtype=np.float32)
        shown = content + degradation.noise_sigma * noise
    shown_rgb = _compose_rgb(shown, scene.vis, scene.vis_y) if shown is not clean else clean_rgb
    if degradation.jpeg_quality is not None:
        shown_rgb = _jpeg(shown_rgb, degradation.jpeg_quality)
    clean_y = _luma(clean_rgb.astype(np.float32) / 255.0)
    shown_y = clean_y if shown_rgb is clean_rgb else _luma(shown_rgb.astype(np.float32) / 255.0)
    local_artifacts = tuple(local_artifacts)
    masks, artifact_map_array = (), None
    if local_artifacts or artifact_map:
        artifact_map_array = _visible_artifacts(shown_y, clean_y, fused_clean, scene)
    if local_artifacts:
        shown_rgb, masks = _plant(shown_rgb, scene, local_artifacts)
        shown_y = _luma(shown_rgb.astype(np.float32) / 255.0)
        for mask in masks:
            artifact_map_array |= mask

    measurements = {
        "thermal_retention": _thermal_contrast_ratio(content, scene),
        "texture_preservation": _texture_gain(content, scene),
        "artifacts": _artifact_level(shown_y, clean_y, fused_clean, scene),
        "sharpness": float(_gradient_magnitude(clean).mean() / max(scene.reference_gradient, 1e-6)),
    }
    scores = {name: _to_scale(value, *SCORE_ANCHORS[name]) for name, value in measurements.items()}
    return Rendering(fused=shown_rgb, method=method, degradation=degradation, scores=scores, measurements=measurements,
                     local_artifacts=local_artifacts, planted_masks=masks,
                     artifact_map=None if artifact_map_array is None else artifact_map_array.astype(np.uint8) * 255)


def overall_score(sub_scores: np.ndarray) -> np.ndarray:
    """The constructed overall quality: `0.6 * mean + 0.4 * min` over the last axis."""
    sub_scores = np.asarray(sub_scores, dtype=np.float64)
    return OVERALL_MEAN_WEIGHT * sub_scores.mean(axis=-1) + (1 - OVERALL_MEAN_WEIGHT) * sub_scores.min(axis=-1)


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


class SyntheticIVIF:
    """Deterministic stream of synthetic rating groups (one scene, several fused images).

    Args:
        image_size: side of the square images in pixels (112 and 224 are the usual).
        seed: the benchmark's seed; scene `i` is drawn from `np.random.default_rng([seed, i])`.
        methods: fusion methods to use (names from `FUSION_METHODS`).
        num_raters: simulated raters per scene (>= 2, so `mos_std` is defined). The default, 24, is
            in the range of ratings per image that IQA studies collect (ITU-R BT.500 asks for at
            least 15); with it the constructed truth reaches SRCC 0.97 against `mos` (0.94 with 8).
        night_fraction: probability that a scene is a night scene.
        shared_degradation: None (the default): every fused image draws its own random
            degradations. A number `j` in [0, 1): the images of one scene share a single
            degradation draw (the same kinds), each strength scaled by its own factor uniform in
            [1 - j, 1 + j]. Their qualities are then close and their order within the pair is set
            by the fusion method and small strength differences: method-level ordering is hard
            (the "close" setting of benchmarks/ablation.py).
        local_artifacts: False (the default): the images and scores of before maps existed, seed for
            seed. True: each fused image also gets localised artifacts (`sample_local_artifacts`: none
            for a quarter of the images, else 1-3 of blocking, halo, noise, ghosting, saturation),
            drawn from a stream of their own (`default_rng([seed, scene_index, 1])`), so the scenes,
            methods and degradations stay those of the same seed without them; they lower the
            artifacts score (and through it the overall truth and the simulated ratings), `method`
            names them (e.g. `+halo0.62`), and the table gains the `artifact_heatmap` column: a grey
            map, 255 where the image shows an artifact (`render`'s `artifact_map`).

    A group's row `j` depends only on (seed, scene_index, j): asking for more images of a
    scene appends rows without changing the earlier ones. Within a group the methods are
    cycled in a per-scene random order, each image with its own random degradations, and
    `method` names the fusion and its degradations (e.g. `haar_wavelet+blur1.20+jpeg17`).
    Objects are plain Python and numpy, so they pickle into data-loader workers.
    """

    def __init__(
        self,
        image_size: int = REFERENCE_SIZE,
        seed: int = 0,
        methods: Sequence[str] = ALL_METHODS,
        num_raters: int = 24,
        night_fraction: float = 0.35,
        shared_degradation: float | None = None,
        local_artifacts: bool = False,
    ):
        unknown = [m for m in methods if m not in FUSION_METHODS]
        if unknown or not methods:
            raise ValueError(f"methods must be a non-empty subset of {list(FUSION_METHODS)}, got {list(methods)}.")
        if num_raters < 2:
            raise ValueError(f"num_raters must be at least 2 to give a spread, got {num_raters}.")
        if not 0 <= night_fraction <= 1:
            raise ValueError(f"night_fraction must be in [0, 1], got {night_fraction}.")
        if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 32:
            raise ValueError(f"image_size must be a whole number of pixels, at least 32, got {image_size!r}.")
        if shared_degradation is not None and not 0 <= shared_degradation < 1:
            raise ValueError(f"shared_degradation must be None or in [0, 1), got {shared_degradation}.")
        if seed < 0:
            raise ValueError(f"seed must be >= 0 (numpy seed sequences take non-negative integers), got {seed}.")
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.methods = tuple(methods)
        self.num_raters = int(num_raters)
        self.night_fraction = float(night_fraction)
        self.shared_degradation = None if shared_degradation is None else float(shared_degradation)
        self.local_artifacts = bool(local_artifacts)

    def pair_id(self, scene_index: int) -> str:
        return f"syn-{self.seed}-{scene_index}"

    def scene(self, scene_index: int) -> Scene:
        """The source pair of scene `scene_index` (the same one `group` uses)."""
        return self._scene_and_rng(scene_index)[0]

    def group(self, scene_index: int, num_images: int) -> list[dict]:
        """`num_images` rated fused images of scene `scene_index`, as schema rows.

        Rows hold PIL images (`fused` RGB, `ir` grayscale, `vis` RGB; the two sources are
        the same objects in every row) and python floats for the scores.
        """
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}.")
        scene, rng = self._scene_and_rng(scene_index)
        order = rng.permutation(len(self.methods))
        rater_bias = rng.normal(0.0, RATER_BIAS_STD, size=self.num_raters)
        ir_image, vis_image = scene.ir_image(), scene.vis_image()
        pair_id = self.pair_id(scene_index)
        rows, used_names = [], set()
        # Drawn before the rows, so asking for more images still appends rows without changing the earlier ones.
        shared = None if self.shared_degradation is None else sample_degradation(rng)
        # Their own stream: with local artifacts on, everything else is drawn as with them off.
        artifact_rng = np.random.default_rng([self.seed, scene_index, 1]) if self.local_artifacts else None
        for j in range(num_images):
            method = self.methods[order[j % len(self.methods)]]
            if shared is None:
                degradation = sample_degradation(rng)
            else:
                degradation = _jittered(shared, self.shared_degradation, rng)
            planted = sample_local_artifacts(artifact_rng, scene) if self.local_artifacts else ()
            rendering = render(scene, method, degradation, rng, planted, artifact_map=self.local_artifacts)
            sub_scores = np.array([rendering.scores[name] for name in SUB_DIMENSIONS])
            truth = float(overall_score(sub_scores))
            spread = float(np.sqrt(np.mean((sub_scores - truth) ** 2)))
            noise = rng.normal(0.0, RATER_NOISE_BASE + RATER_NOISE_PER_SPREAD * spread, size=self.num_raters)
            ratings = np.clip(truth + rater_bias + noise, 1.0, 5.0)
            name = "+".join(filter(None, (method, degradation.tag(), *(a.tag() for a in planted))))
            if name in used_names:  # the same method twice without degradation in one group
                name = f"{name}#{j}"
            used_names.add(name)
            rows.append(
                {
                    "fused": rendering.fused_image(),
                    "ir": ir_image,
                    "vis": vis_image,
                    "pair_id": pair_id,
                    "method": name,
                    "mos": round(float(ratings.mean()), 4),
                    "mos_std": round(float(ratings.std(ddof=1)), 4),
                    **{k: round(float(v), 4) for k, v in rendering.scores.items()},
                    **({"artifact_heatmap": rendering.artifact_map_image()} if self.local_artifacts else {}),
                }
            )
        return rows

    def iter_groups(self, num_images: int, start: int = 0, step: int = 1, stop: int | None = None) -> Iterator[list[dict]]:
        """Groups of scenes `start, start + step, ...` (forever unless `stop`).

        Data-loader worker `w` of `n` uses `start=w, step=n` to get disjoint scenes.
        """
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}.")
        indices = itertools.count(start, step) if stop is None else range(start, stop, step)
        for scene_index in indices:
            yield self.group(scene_index, num_images)

    def table(self, num_scenes: int, images_per_scene: int, start_scene: int = 0):
        """A `datasets.Dataset` with the rating schema: scenes `start_scene ..` x `images_per_scene`.

        Built in chunks of scenes, so only one chunk of decoded PIL images is in memory at a
        time (the table itself holds PNG bytes).
        """
        import datasets

        if num_scenes < 1:
            raise ValueError(f"num_scenes must be >= 1, got {num_scenes}.")
        features = RATING_FEATURES
        if self.local_artifacts:
            features = datasets.Features({**RATING_FEATURES, "artifact_heatmap": EXTRA_FEATURES["artifact_heatmap"]})
        info = datasets.DatasetInfo(description=synthetic_description(self), license="apache-2.0", features=features)
        chunk_scenes = 64
        chunks = []
        for first in range(start_scene, start_scene + num_scenes, chunk_scenes):
            last = min(first + chunk_scenes, start_scene + num_scenes)
            rows = []
            for group in self.iter_groups(images_per_scene, first, 1, last):
                # The sources are shared by the group's rows: encode them once, not once per row.
                sources = {name: {"bytes": _png_bytes(group[0][name]), "path": None} for name in ("ir", "vis")}
                rows += [{**row, **sources} for row in group]
            chunks.append(datasets.Dataset.from_list(rows, features=features))
        return datasets.concatenate_datasets(chunks, info=info)

    def _scene_and_rng(self, scene_index: int) -> tuple[Scene, np.random.Generator]:
        if scene_index < 0:
            raise ValueError(f"scene_index must be >= 0, got {scene_index}.")
        rng = np.random.default_rng([self.seed, scene_index])
        night = bool(rng.random() < self.night_fraction)
        return make_scene(rng, self.image_size, night=night), rng

    def __repr__(self) -> str:
        return (
            f"SyntheticIVIF(image_size={self.image_size}, seed={self.seed}, methods={self.methods}, "
            f"num_raters={self.num_raters}, night_fraction={self.night_fraction}"
            + ("" if self.shared_degradation is None else f", shared_degradation={self.shared_degradation}")
            + (", local_artifacts=True" if self.local_artifacts else "")
            + ")"
        )


def synthetic_description(generator) -> str:
    """The description stored in a synthetic table's `info.description` and shown on its card."""
    low_high = {name: SCORE_ANCHORS[name] for name in SUB_DIMENSIONS}
    return "\n".join(
        [
            SYNTHETIC_STATEMENT,
            "",
            f"Generator: `{generator!r}`. Each `pair_id` (`syn-<seed>-<scene>`) is one procedural "
            "infrared/visible scene with 1-4 warm targets (people, vehicles) over a textured "
            "background, by day or by night (night: dark, noisy visible image in which the "
            "targets barely show; the infrared still shows them). Each row is one fused image "
            "made by one of the classic fusion methods "
            f"({', '.join(generator.methods)}) and then degraded at random strengths "
            "(blur, noise, JPEG, contrast loss, thermal suppression); `method` names both.",
            "",
            "What the scores mean (all on [1, 5], higher is better), measured with oracle "
            "knowledge the model never sees (target masks, the noise-free sources, the "
            "undegraded fusion) and mapped linearly between two anchors, clipped outside:",
            "",
            f"- `thermal_retention`: target-vs-local-background contrast in the fused image as "
            f"a fraction of that contrast in the infrared source, capped at 1 per target and "
            f"averaged over targets (1 at <= {low_high['thermal_retention'][0]}, "
            f"5 at >= {low_high['thermal_retention'][1]}).",
            f"- `texture_preservation`: projection coefficient of the fused image's "
            f"band-pass detail on the visible source's, outside the targets "
            f"(1 at <= {low_high['texture_preservation'][0]}, 5 at >= {low_high['texture_preservation'][1]}).",
            f"- `artifacts` (their absence): high-pass RMS of what the clean sources do not explain "
            f"(noise, JPEG error, passed-through sensor noise) plus the JPEG blockiness (gradient "
            f"excess on the 8-px block grid) plus 4x the overshoot outside "
            f"the sources' local intensity range (5 at <= {low_high['artifacts'][1]}, 1 at >= {low_high['artifacts'][0]}).",
            f"- `sharpness`: mean gradient magnitude relative to the sharper source at each pixel "
            f"(1 at <= {low_high['sharpness'][0]}, 5 at >= {low_high['sharpness'][1]}).",
            f"- overall truth = {OVERALL_MEAN_WEIGHT} x mean + "
            f"{1 - OVERALL_MEAN_WEIGHT:.1f} x min of the four sub-scores (the worst "
            "dimension weighs more).",
            f"- `mos` / `mos_std`: mean / standard deviation of {generator.num_raters} simulated "
            f"raters per scene, each with a bias N(0, {RATER_BIAS_STD}^2) shared by the "
            f"scene's images and noise N(0, s^2), s = {RATER_NOISE_BASE} + "
            f"{RATER_NOISE_PER_SPREAD} x the RMS distance of the sub-scores from the overall truth, "
            "ratings clipped to [1, 5].",
            *(["", "Localised artifacts (blocking and ringing from compressing one region, halos at strong "
                "edges, noise, ghosting from a misregistered infrared source, a saturated region) are planted in "
                "three quarters of the images and lower the artifacts score like the other artifacts; "
                "`artifact_heatmap` marks where each image shows an artifact (255), planted or not."]
              if getattr(generator, "local_artifacts", False) else []),
            "",
            "Use it to exercise and demonstrate the FuScore pipeline; results on it say nothing "
            "about agreement with human judgement of real fused images.",
        ]
    )


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=3.0) if sigma > 0 else x


def _luma(rgb: np.ndarray) -> np.ndarray:
    return (rgb @ LUMA).astype(np.float32, copy=False)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _field_rng(rng: np.random.Generator) -> np.random.Generator:
    """A child generator for a pixel field: `rng` advances by one draw whatever the image size,
    so a scene's layout, degradations and raters are the same at 112 and 224 px."""
    return np.random.default_rng(rng.integers(2**63))


def _unit_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Band-limited Gaussian noise with zero mean and unit standard deviation."""
    noise = _blur(_field_rng(rng).standard_normal((size, size), dtype=np.float32), sigma)
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def _chroma(rng: np.random.Generator, colours: Sequence[tuple[float, float, float]], saturation: float) -> np.ndarray:
    """A colour offset with zero luma, so `lum * (1 + chroma)` keeps the luminance.

    One of `colours` (RGB), jittered, its saturation scaled by `saturation` x U(0.5, 1).
    """
    colour = np.asarray(colours[int(rng.integers(len(colours)))], dtype=np.float32)
    colour = np.clip(colour + rng.normal(0.0, 0.04, size=3), 0.05, 1.0).astype(np.float32)
    return (colour / (LUMA @ colour) - 1.0) * saturation * rng.uniform(0.5, 1.0)


def _box(yy, xx, top, bottom, left, right) -> np.ndarray:
    return (yy >= top) & (yy < bottom) & (xx >= left) & (xx < right)


def _ellipse(yy, xx, cy, cx, ry, rx) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _drop_occluded(targets: np.ndarray) -> np.ndarray:
    """Renumber targets 1..K, dropping any that a later target hid (fewer than 6 pixels)."""
    counts = np.bincount(targets.ravel())
    keep = [k for k in range(1, len(counts)) if counts[k] >= 6]
    lookup = np.zeros(len(counts), dtype=np.int32)
    lookup[keep] = np.arange(1, len(keep) + 1, dtype=np.int32)
    return lookup[targets]


def _rings(targets: np.ndarray, radius: int) -> np.ndarray:
    """Label the background band within `radius` px of each target with that target's id."""
    grown = ndimage.maximum_filter(targets, size=2 * radius + 1)
    return np.where(targets == 0, grown, 0).astype(np.int32)


def _haar_forward(x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    a, b, c, d = x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2]
    return (a + b + c + d) / 2, ((a - b + c - d) / 2, (a + b - c - d) / 2, (a - b - c + d) / 2)


def _haar_inverse(approx: np.ndarray, details: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    horizontal, vertical, diagonal = details
    out = np.empty((2 * approx.shape[0], 2 * approx.shape[1]), dtype=approx.dtype)
    out[0::2, 0::2] = (approx + horizontal + vertical + diagonal) / 2
    out[0::2, 1::2] = (approx - horizontal + vertical - diagonal) / 2
    out[1::2, 0::2] = (approx + horizontal - vertical - diagonal) / 2
    out[1::2, 1::2] = (approx - horizontal - vertical + diagonal) / 2
    return out


def _guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with box means (O(1) per pixel in the radius)."""
    size = 2 * radius + 1
    mean_g = ndimage.uniform_filter(guide, size)
    mean_s = ndimage.uniform_filter(source, size)
    cov = ndimage.uniform_filter(guide * source, size) - mean_g * mean_s
    var = ndimage.uniform_filter(guide * guide, size) - mean_g * mean_g
    a = cov / (var + eps)
    b = mean_s - a * mean_g
    return ndimage.uniform_filter(a, size) * guide + ndimage.uniform_filter(b, size)


def _content_degradations(fused: np.ndarray, vis_y: np.ndarray, scene: Scene, degradation: Degradation) -> np.ndarray:
    out = fused
    if degradation.thermal_suppression > 0:
        out = out - degradation.thermal_suppression * scene.target_weight * (out - vis_y)
    if degradation.contrast_loss > 0:
        out = out.mean() + (1.0 - degradation.contrast_loss) * (out - out.mean())
    if degradation.blur_sigma > 0:
        out = _blur(out, degradation.blur_sigma * scene.scale)
    return out.astype(np.float32, copy=False)


def _compose_rgb(fused_y: np.ndarray, vis_rgb: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
    """Fused luminance plus the visible chroma (additive, as in YCbCr fusion), as uint8 RGB."""
    return _to_uint8(fused_y[..., None] + (vis_rgb - vis_y[..., None]))


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def _gradient_magnitude(x: np.ndarray) -> np.ndarray:
    gy = np.diff(x, axis=0)[:, :-1]
    gx = np.diff(x, axis=1)[:-1, :]
    return np.sqrt(gx * gx + gy * gy)


def _band_pass(x: np.ndarray, scale: float) -> np.ndarray:
    return x - _blur(x, 3.0 * scale)


def _thermal_contrast_ratio(fused_y: np.ndarray, scene: Scene) -> float:
    """Mean over targets of (target - local background) contrast, fused / infrared."""
    k = scene.num_targets + 1
    targets, rings = scene.targets.ravel(), scene.rings.ravel()
    target_count = np.maximum(np.bincount(targets, minlength=k), 1)
    ring_count = np.maximum(np.bincount(rings, minlength=k), 1)

    def contrast(image: np.ndarray) -> np.ndarray:
        flat = image.ravel()
        inside = np.bincount(targets, weights=flat, minlength=k) / target_count
        around = np.bincount(rings, weights=flat, minlength=k) / ring_count
        return (inside - around)[1:]

    ir_contrast, fused_contrast = contrast(scene.ir), contrast(fused_y)
    valid = ir_contrast > 0.05  # every target is warm by construction; guard against a degenerate ring
    if not valid.any():
        return 1.0
    # Capped at 1 per target (a target cannot be more than fully kept, and one over-enhanced
    # target must not hide a lost one); not floored, so inverted polarity scores lowest.
    return float(np.minimum(fused_contrast[valid] / ir_contrast[valid], 1.0).mean())


def _texture_gain(fused_y: np.ndarray, scene: Scene) -> float:
    """Projection of the fused fine detail on the visible fine detail, outside the targets."""
    background = scene.targets == 0
    visible = scene.visible_detail[background]
    fused = _band_pass(fused_y, scene.scale)[background]
    return float(np.dot(fused, visible) / max(float(np.dot(visible, visible)), 1e-8))


def _artifact_level(shown_y: np.ndarray, clean_y: np.ndarray, fused_clean: np.ndarray, scene: Scene) -> float:
    """High-pass RMS of what the clean branch does not explain + block-edge excess + 4x overshoot."""
    # The high-pass keeps noise and blocking and drops slow content differences (e.g. a
    # method weighting the noisy night source differently), which are not artifacts.
    difference = shown_y - clean_y
    residual = float(np.sqrt(np.mean((difference - _blur(difference, 2.0 * scene.scale)) ** 2)))
    # JPEG blocking is small in RMS but conspicuous: count the gradient excess on the 8-px grid.
    blocking = max(_blockiness(shown_y) - _blockiness(clean_y), 0.0)
    low, high = scene.envelope
    overshoot = float(np.mean(np.maximum(fused_clean - high, 0.0) + np.maximum(low - fused_clean, 0.0)))
    # Overshoot is a mean excess over few pixels; x4 puts strong halos on par with noise.
    return residual + blocking + 4.0 * overshoot


def _blockiness(y: np.ndarray) -> float:
    """Mean absolute gradient across 8x8 block boundaries minus that inside blocks."""
    dx, dy = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))
    on_x = np.arange(dx.shape[1]) % 8 == 7
    on_y = np.arange(dy.shape[0]) % 8 == 7
    return float(dx[:, on_x].mean() - dx[:, ~on_x].mean() + dy[on_y].mean() - dy[~on_y].mean())


def _to_scale(value: float, at_one: float, at_five: float) -> float:
    position = (value - at_one) / (at_five - at_one)
    return float(1.0 + 4.0 * np.clip(position, 0.0, 1.0))


def _visible_artifacts(shown_y: np.ndarray, clean_y: np.ndarray, fused_clean: np.ndarray, scene: Scene) -> np.ndarray:
    """Where the artifacts `_artifact_level` counts are visible: the unexplained high-pass residual (noise, JPEG,
    passed-through sensor noise) with a local RMS of at least `RESIDUAL_VISIBLE`, and the method's own overshoot of at
    least `OVERSHOOT_VISIBLE`. Bool (H, W)."""
    difference = shown_y - clean_y
    residual = difference - _blur(difference, 2.0 * scene.scale)
    window = max(3, 2 * round(2 * scene.scale) + 1)
    visible = ndimage.uniform_filter(residual * residual, size=window) >= RESIDUAL_VISIBLE**2  # local mean square
    low, high = scene.envelope
    overshoot = np.maximum(fused_clean - high, 0.0) + np.maximum(low - fused_clean, 0.0)
    return visible | (overshoot >= OVERSHOOT_VISIBLE)


def plant_artifacts(image, artifacts: Sequence[LocalArtifact], ir=None) -> tuple[np.ndarray, np.ndarray]:
    """Plants localised artifacts into any RGB image, a real fused image as well as a synthetic one, as `render` plants
    them (`LocalArtifact`: positions and radii are fractions of the image's height and width, filter widths scale
    with its shorter side); returns the planted uint8 `(H, W, 3)` image and its artifact map, uint8 `(H, W)`, 255
    where a planted artifact is marked (only the planted ones: a real image has no clean reference to mark others by).

    Args:
        image: a PIL image or an `(H, W, 3)` uint8 array.
        artifacts: what to plant, in order.
        ir: the infrared source registered to the image (PIL image or `(H, W)` array, uint8 or float in [0, 1]);
            needed by `ghosting`, which blends in a shifted copy of it.
    """
    rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}.")
    if ir is None and any(artifact.kind == "ghosting" for artifact in artifacts):
        raise ValueError("ghosting blends in a shifted infrared source: pass ir=.")
    if ir is not None:
        ir = np.asarray(ir.convert("L") if hasattr(ir, "convert") else ir)
        ir = ir.astype(np.float32) / 255.0 if ir.dtype == np.uint8 else ir.astype(np.float32)
        if ir.shape != rgb.shape[:2]:
            raise ValueError(f"ir must be registered to the image: shape {ir.shape}, image {rgb.shape[:2]}.")
    # `_plant` reads a scene's filter scale and its infrared source only.
    stand_in = SimpleNamespace(scale=min(rgb.shape[:2]) / REFERENCE_SIZE, ir=ir)
    planted, masks = _plant(rgb, stand_in, artifacts)
    marked = np.zeros(rgb.shape[:2], dtype=bool)
    for mask in masks:
        marked |= mask
    return planted, marked.astype(np.uint8) * 255


def _plant(rgb: np.ndarray, scene: Scene, artifacts: Sequence[LocalArtifact]) -> tuple[np.ndarray, tuple]:
    """Plant `artifacts` in order into the uint8 RGB image; return it and one bool mask per artifact."""
    size_y, size_x = rgb.shape[:2]
    yy = (np.arange(size_y, dtype=np.float32)[:, None] + 0.5) / size_y
    xx = (np.arange(size_x, dtype=np.float32)[None, :] + 0.5) / size_x
    scale = scene.scale
    masks = []
    for artifact in artifacts:
        image = rgb.astype(np.float32) / 255.0
        y = _luma(image)
        chroma = image - y[..., None]
        disc = (yy - artifact.center_y) ** 2 + (xx - artifact.center_x) ** 2 <= artifact.radius**2
        u = artifact.strength
        if artifact.kind == "blocking":
            top, bottom = (int(np.floor((artifact.center_y - artifact.radius) * size_y / 8)) * 8,
                           int(np.ceil((artifact.center_y + artifact.radius) * size_y / 8)) * 8)
            left, right = (int(np.floor((artifact.center_x - artifact.radius) * size_x / 8)) * 8,
                           int(np.ceil((artifact.center_x + artifact.radius) * size_x / 8)) * 8)
            top, left = max(top, 0), max(left, 0)
            compressed = _jpeg(rgb, int(round(12 - 9 * u)))
            region = np.zeros((size_y, size_x), dtype=bool)
            region[top:bottom, left:right] = True
            rgb = np.where(region[..., None], compressed, rgb)
            change = np.abs(_luma(rgb.astype(np.float32) / 255.0) - y)
            blocks_y, blocks_x = -(-size_y // 8), -(-size_x // 8)
            padded = np.pad(change, ((0, blocks_y * 8 - size_y), (0, blocks_x * 8 - size_x)))
            block_change = padded.reshape(blocks_y, 8, blocks_x, 8).mean(axis=(1, 3))
            marked = np.repeat(np.repeat(block_change >= PLANTED_BLOCK_VISIBLE, 8, 0), 8, 1)[:size_y, :size_x]
            masks.append(marked & region)
            continue
        if artifact.kind == "noise":
            delta = (0.04 + 0.1 * u) * np.random.default_rng(artifact.seed).standard_normal(y.shape, dtype=np.float32)
            mask = disc
        elif artifact.kind == "halo":
            delta = (1.0 + 3.0 * u) * (y - _blur(y, 1.5 * scale))
            mask = None
        elif artifact.kind == "ghosting":
            distance = (3.0 + 5.0 * u) * scale
            shifted = ndimage.shift(scene.ir, (distance * np.sin(artifact.angle), distance * np.cos(artifact.angle)),
                                    order=1, mode="nearest")
            delta = (0.35 + 0.3 * u) * (shifted - scene.ir)
            mask = None
        else:  # saturation
            boost = 1.0 - float(np.quantile(y[disc], 0.6 - 0.5 * u)) + 0.05 if disc.any() else 0.0
            delta = np.full_like(y, boost)
            mask = disc & (y + boost >= 1.0)
        delta = np.where(disc, delta, 0.0).astype(np.float32)
        if mask is None:
            mask = disc & ndimage.binary_dilation(np.abs(delta) >= PLANTED_CHANGE_VISIBLE)
        rgb = _to_uint8((y + delta)[..., None] + chroma)
        masks.append(mask)
    return rgb, tuple(masks)
