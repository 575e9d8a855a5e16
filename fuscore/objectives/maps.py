# Copyright 2025 The FuScore Authors.
# Licensed under the Apache License, Version 2.0.
"""The artifact-map term of the objective (DESIGN.md section 10): `L_map`, the MSE between the map head's per-patch
artifact probabilities and the table's map (`artifact_heatmap`) pooled to the same patch grid.

EVAFusion trains its heat-map head with the MSE between its predicted map and the target map, both at 384 x 384.
FuScore's head predicts one probability per merged patch of the vision tower, so the target is brought to the patch
grid instead of the prediction to the pixels: each patch's target is the **mean** of the map over the patch's
footprint (area pooling). For a binary mask that is the share of the patch covered by artifacts, so the MSE is
minimised by the calibrated probability that a pixel of the patch is an artifact, and upsampling the predicted grid
back to the image keeps the map's mean; max pooling would mark a whole patch for one artifact pixel. The image
processor resizes the whole image to the grid (no crop), so the grid covers the whole map whatever the map's own
size.

* `artifact_map_array(image)`: a stored map (a PIL image, grey / 255 as EVAFusion reads it, or an array) as float32
  `(H, W)` in [0, 1].
* `pool_map_to_grid(map, (h, w))`: `(h, w)` area means (torch's adaptive average pooling: exact means when the
  map's size is a multiple of the grid, else each cell averages the pixels its footprint touches).
* `map_targets(maps, grids)`: a batch's flat targets and `has_map` mask, in the order of the visual tokens.
* `map_loss(...)`: the loss; rows without a map contribute exactly 0 (never NaN), and a batch with no map gives 0
  still attached to the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F


__all__ = ["artifact_map_array", "map_loss", "map_targets", "pool_map_to_grid"]


def artifact_map_array(image) -> np.ndarray:
    """A map as float32 `(H, W)` in [0, 1].

    A PIL image is converted to grey ("L") and divided by 255, as EVAFusion reads its `artifact_heatmap`
    (`convert("L")`, then `ToTensor`); a 16-bit grey image is divided by 65535 and a float ("F") one taken as it is;
    a uint8 array is divided by 255; a float array is taken as it is and must lie in [0, 1]. A `(1, H, W)` or
    `(H, W, 1)` array is squeezed.

    Raises:
        ValueError: not two-dimensional, not finite, or a float map outside [0, 1].
    """
    if hasattr(image, "getbands"):
        if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit grey: its own full scale
            return artifact_map_array(np.asarray(image, dtype=np.float32) / 65535.0)
        image = np.asarray(image if image.mode == "F" else image.convert("L"))
    array = np.asarray(image)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:-1])
    if array.ndim != 2:
        raise ValueError(f"An artifact map is a 2-D grey image, got shape {array.shape}.")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)) or array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError("A float artifact map must hold finite values in [0, 1] "
                         f"(got min {np.nanmin(array):g}, max {np.nanmax(array):g}).")
    return array


def pool_map_to_grid(artifact_map, grid: Sequence[int]) -> torch.Tensor:
    """The map's mean over each cell of an `(h, w)` grid laid over the whole map: float32 `(h, w)`.

    Args:
        artifact_map: anything `artifact_map_array` reads, or a 2-D tensor in [0, 1].
        grid: `(h, w)`, the number of merged patches down and across (for Qwen-VL, `image_grid_thw`'s h and w
            divided by the spatial merge size).
    """
    height, width = (int(n) for n in grid)
    if height < 1 or width < 1:
        raise ValueError(f"grid must be two positive sizes (h, w), got {tuple(grid)}.")
    if not isinstance(artifact_map, torch.Tensor):
        artifact_map = torch.from_numpy(artifact_map_array(artifact_map))
    if artifact_map.ndim != 2:
        raise ValueError(f"An artifact map is 2-D, got shape {tuple(artifact_map.shape)}.")
    return F.adaptive_avg_pool2d(artifact_map.float()[None, None], (height, width))[0, 0]


def map_targets(maps: Sequence, grids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's pooled targets, flat in the order of the visual tokens, and which rows have a map.

    Args:
        maps: one map per image, or None where the table has none for that row.
        grids: `(h, w)` merged-patch grid of each image, in batch order.

    Returns:
        `(target, has_map)`: float32 `(sum_i h_i w_i,)` (zeros for the rows without a map) and bool `(B,)`.
    """
    if len(maps) != len(grids):
        raise ValueError(f"{len(maps)} maps but {len(grids)} grids.")
    parts, has_map = [], []
    for artifact_map, grid in zip(maps, grids):
        if artifact_map is None:
            parts.append(torch.zeros(int(grid[0]) * int(grid[1])))
        else:
            parts.append(pool_map_to_grid(artifact_map, grid).reshape(-1))
        has_map.append(artifact_map is not None)
    return torch.cat(parts) if parts else torch.zeros(0), torch.tensor(has_map, dtype=torch.bool)


def map_loss(
    patch_probs: torch.Tensor,
    target: torch.Tensor,
    patch_counts: Union[Sequence[int], torch.Tensor],
    has_map: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """`L_map`: mean over the images with a map of the mean squared error over that image's patches.

    Each image weighs the same whatever its number of patches (as EVAFusion's maps, all at 384 x 384, do).

    Args:
        patch_probs (`torch.Tensor` of shape `(N,)`): predicted artifact probability of each merged patch, the images'
            patches concatenated in batch order (the order of the visual tokens).
        target (`torch.Tensor` of shape `(N,)`): the pooled target of each patch (`map_targets`); entries of rows
            without a map are ignored, whatever they hold (NaN included). No gradient is taken through it.
        patch_counts (`(B,)` ints): number of patches of each image; they must sum to `N`.
        has_map (`torch.BoolTensor` of shape `(B,)`, *optional*): which rows have a target map (default: all).

    Returns:
        Scalar float32 (or wider) tensor, differentiable w.r.t. `patch_probs`; exactly 0 with zero, finite gradients
        when no row has a map.
    """
    probs = patch_probs.reshape(-1)
    probs = probs.to(torch.promote_types(probs.dtype, torch.float32))
    counts = torch.as_tensor(patch_counts, dtype=torch.long, device=probs.device).reshape(-1)
    if int(counts.sum()) != probs.numel() or target.numel() != probs.numel() or bool((counts < 0).any()):
        raise ValueError(f"patch_counts (sum {int(counts.sum())}) must split the {probs.numel()} patch probabilities; "
                         f"target has {target.numel()} entries.")
    if has_map is None:
        has_map = torch.ones(counts.numel(), dtype=torch.bool)
    has_map = has_map.to(device=probs.device, dtype=torch.bool).reshape(-1)
    if has_map.numel() != counts.numel():
        raise ValueError(f"has_map has {has_map.numel()} rows but patch_counts {counts.numel()}.")
    image_of_patch = torch.repeat_interleave(torch.arange(counts.numel(), device=probs.device), counts)
    valid = has_map[image_of_patch]
    goal = torch.where(valid, target.detach().reshape(-1).to(probs.device, probs.dtype), 0.0)
    # torch.where keeps the rows without a map at exactly 0 (and their gradient too), whatever their target holds.
    squared = torch.where(valid, (probs - goal) ** 2, 0.0)
    per_image = torch.zeros(counts.numel(), dtype=probs.dtype, device=probs.device).index_add(0, image_of_patch, squared)
    per_image = per_image / counts.clamp_min(1).to(probs.dtype)
    return per_image.sum() / has_map.sum().clamp_min(1).to(probs.dtype)
