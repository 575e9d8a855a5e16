# Copyright 2026 The FuScore authors. Apache-2.0.
"""Where a FuScore score comes from: SmoothGrad saliency of the expected score with respect to the fused image's
pixels, the engine behind `FuScoreForQuality.explain` (DESIGN.md section 10).

This file is Hub remote code: it imports only the standard library, torch and its siblings `processing_fuscore.py`
(the differentiable tensor path `FuScoreProcessor.tensor_inputs`, the one `fuscore.reward` trains fusion networks
through) and `scoring_fuscore.py` (its eval-mode guard and `to_device`). Like the scoring engine it drives any FuScore
model object, so it never imports `modeling_fuscore.py`.

A saliency map is **attribution, not artifact detection**: it shows which pixels the score is most sensitive to, for
better or worse. A bright region may be one whose quality raised the score as much as one that lowered it, and a
model trained without artifact maps has never been told what an artifact looks like. Artifact maps come from a model
trained with them (its artifact map head); a saliency map explains any model.

The map of an image `x` (values in [0, 1], the image's own size) for the score `s` of one rating dimension:

1. SmoothGrad (Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017): `samples` copies
   `x + N(0, noise^2)`, noise drawn from a generator seeded with `seed` alone (so an image's map does not depend on
   the other images of a call), clamped to [0, 1] (the gradient is taken at the clamped copy: the model's path clamps
   too, and a copy pushed past black or white would otherwise give no gradient to a saturated pixel), each scored
   through `tensor_inputs` and the model's `forward` (no rounding to 8 bits, so the gradient reaches every pixel;
   the resize to the model's patch grid is inside the differentiable path, so the gradient is at the image's own
   size);
2. per copy `sum_c |d s / d x_c|` (absolute value summed over the colour channels), averaged over the copies;
3. a Gaussian blur, by default of standard deviation half a model patch in the image's pixels (the model reads
   14 or 16-pixel patches of the resized image, and raw gradients show that grid);
4. divided by its 99th percentile and capped at 1 (Smilkov et al. cap the outlying 1 % too), so a few extreme pixels
   do not leave the rest of the map black. A map that is zero everywhere stays zero.

The sources of a `fused_ir_vis` model are fixed inputs: the map is the fused image's. The model's train/eval mode,
its parameters' `requires_grad` flags and their `.grad` are left as they were (the gradient is taken with respect to
the pixels alone, with `torch.autograd.grad`), and nothing global changes (grad mode is switched on inside the call
only).
"""

import math
import warnings
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


try:  # Hub remote code: the sibling files are part of the same dynamic module package.
    from .processing_fuscore import _pil_to_uint8_chw
except ImportError:  # A checkout or an installed FuScore: the siblings are top-level modules.
    from processing_fuscore import _pil_to_uint8_chw
try:
    from .scoring_fuscore import _evaluating, check_count, to_device
except ImportError:
    from scoring_fuscore import _evaluating, check_count, to_device


# The share of a map's pixels left below the normalising value (step 4 of the module docstring).
NORMALISING_QUANTILE = 0.99


def tensor_batch(model, processor, fused: torch.Tensor, ir: Optional[torch.Tensor] = None,
                 vis: Optional[torch.Tensor] = None, dimensions=("overall",), cast: bool = True) -> dict:
    """The model's inputs for `[B, C, H, W]` image tensors in [0, 1], differentiable with respect to their pixels:
    `FuScoreProcessor.tensor_inputs`, the positions computed on the host as the scoring engine computes them
    (`model.position_inputs`), everything on the images' device, the patches in the model's dtype when `cast`."""
    batch = processor.tensor_inputs(fused, ir, vis, dimensions=dimensions)
    batch = {**batch, **model.position_inputs(batch)}
    pixel_values = batch.pop("pixel_values")
    batch = to_device(batch, fused.device)
    batch["pixel_values"] = pixel_values.to(model.dtype) if cast else pixel_values
    return batch


def gaussian_blur(image: torch.Tensor, sigma_y: float, sigma_x: float) -> torch.Tensor:
    """Separable Gaussian blur of a `(H, W)` map, edges replicated; a sigma of 0 leaves that axis as it is. (By hand:
    torchvision's `gaussian_blur` would be one more dependency for remote code, for two 1-D convolutions.)"""
    out = image[None, None]
    for axis, sigma in ((2, sigma_y), (3, sigma_x)):
        if sigma <= 0:
            continue
        radius = max(1, math.ceil(3 * sigma))
        offsets = torch.arange(-radius, radius + 1, dtype=out.dtype, device=out.device)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = kernel / kernel.sum()
        shape = (1, 1, -1, 1) if axis == 2 else (1, 1, 1, -1)
        padding = (0, 0, radius, radius) if axis == 2 else (radius, radius, 0, 0)
        out = F.conv2d(F.pad(out, padding, mode="replicate"), kernel.view(shape))
    return out[0, 0]


def normalise(saliency: torch.Tensor, quantile: float = NORMALISING_QUANTILE) -> torch.Tensor:
    """`saliency` (non-negative) divided by its `quantile` (its maximum where that is 0) and capped at 1."""
    flat = saliency.flatten()
    k = min(flat.numel(), max(1, math.ceil(quantile * flat.numel())))
    scale = flat.kthvalue(k).values
    if scale <= 0:
        scale = flat.max()
    if not scale > 0:  # zero everywhere (or not finite): nothing to show
        return torch.zeros_like(saliency) if bool(torch.isfinite(flat).all()) else saliency
    return (saliency / scale).clamp(0, 1)


def saliency_maps(model, processor, images: Sequence, ir: Sequence = None, vis: Sequence = None,
                  dimension: str = "overall", samples: int = 16, noise: float = 0.1, blur: Optional[float] = None,
                  seed: int = 0, batch_size: int = 8) -> list:
    """SmoothGrad saliency maps of `images` (module docstring), one image at a time.

    Args:
        images: fused images (paths, encoded bytes, PIL images or HxW[xC] arrays), loaded as `score` loads them.
        ir, vis: their sources, one per image or None (models whose `input_mode` is `"fused_ir_vis"` need them).
        dimension: the rating dimension whose expected score is explained.
        samples: noisy copies per image (1 with `noise=0`: the plain gradient).
        noise: standard deviation of the Gaussian noise, as a fraction of the intensity range [0, 1] (Smilkov et al.
            recommend 10 to 20 % of the image's range).
        blur: standard deviation of the Gaussian blur in the image's pixels; None: half a model patch; 0: no blur.
        seed: seeds the noise; the same seed gives the same map.
        batch_size: noisy copies per forward and backward pass (the map does not depend on it beyond rounding).

    Returns:
        One float32 `(H, W)` tensor in [0, 1] per image, on the CPU, H x W the size `load_image` gives the image.
    """
    samples = check_count(samples, "samples")
    batch_size = check_count(batch_size, "batch_size")
    if not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise must be a finite number >= 0, got {noise}.")
    if blur is not None and not (blur >= 0 and math.isfinite(blur)):
        raise ValueError(f"blur must be None or a finite number >= 0, got {blur}.")
    names = processor.resolve_dimensions(dimension, argument="dimension")
    if len(names) != 1:
        raise ValueError(f"explain explains one dimension at a time; got {dimension!r}.")
    count = len(images)
    ir = [None] * count if ir is None else list(ir)
    vis = [None] * count if vis is None else list(vis)
    if not (len(ir) == len(vis) == count):
        raise ValueError(f"Got {count} images but {len(ir)} infrared and {len(vis)} visible sources.")
    if processor.input_mode == "fused" and any(source is not None for source in ir + vis):
        warnings.warn("This model reads the fused image alone (input_mode 'fused'): the infrared and visible sources "
                      "given with it are ignored.", UserWarning, stacklevel=3)
    maps = []
    with _evaluating(model), torch.inference_mode(False), torch.enable_grad():
        for image, ir_image, vis_image in zip(images, ir, vis):
            maps.append(_saliency_map(model, processor, image, ir_image, vis_image, names, samples, noise, blur, seed,
                                      batch_size))
    return maps


def _saliency_map(model, processor, image, ir, vis, dimensions, samples, noise, blur, seed, batch_size):
    device = model.device
    loaded = processor.prepare_images(image, ir, vis)  # fused[, infrared, visible], RGB, sources at the fused size
    tensors = [_pil_to_uint8_chw(picture).to(device=device, dtype=torch.float32)[None] / 255 for picture in loaded]
    fused, sources = tensors[0], tensors[1:]
    height, width = fused.shape[-2:]
    copies = samples if noise > 0 else 1
    # One copy's noise at a time from one generator: the same noise whatever `batch_size`, and only a batch of it in
    # memory at once.
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(height, width, dtype=torch.float32, device=device)
    grid = None
    for start in range(0, copies, batch_size):
        chunk = torch.cat([torch.randn((1, *fused.shape[1:]), generator=generator)
                           for _ in range(min(batch_size, copies - start))]).mul_(noise).to(device)
        noisy = (fused + chunk).clamp_(0, 1).requires_grad_(True)
        given = [source.expand(len(chunk), -1, -1, -1) for source in sources] or [None, None]
        batch = tensor_batch(model, processor, noisy, *given, dimensions=dimensions)
        grid = batch["image_grid_thw"][0]
        score = model(**batch, return_artifact_map=False).score  # the score alone: no artifact head
        (gradient,) = torch.autograd.grad(score.sum(), noisy)
        total += gradient.abs().sum(dim=1).sum(dim=0).float()
    saliency = total / copies
    if blur is None:  # half a patch of the resized image (`image_grid_thw`: patches per side), in this image's pixels
        sigma_y, sigma_x = 0.5 * height / int(grid[1]), 0.5 * width / int(grid[2])
    else:
        sigma_y = sigma_x = float(blur)
    return normalise(gaussian_blur(saliency, sigma_y, sigma_x)).cpu()


__all__ = ["NORMALISING_QUANTILE", "gaussian_blur", "normalise", "saliency_maps", "tensor_batch"]
