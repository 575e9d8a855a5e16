# Copyright 2026 The FuScore authors. Apache-2.0.
"""Batches of FuScore training: rating-table rows -> model inputs plus the labels of the chosen objective, and the
synthetic scenes of the endless synthetic stream."""

import copy
import math
import zlib
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from fuscore.objectives import (Objective, artifact_map_array, get_objective, label_for_objective, map_targets,
                                mos_standard_error, resolve_overall_score)
from configuration_fuscore import SUB_DIMENSIONS

from .answer_tokens import answer_prefix_ids, answer_token_labels


def pair_code(pair_id: str) -> int:
    """A stable integer for a source pair id, identical in every process (for gathering across processes)."""
    return zlib.crc32(str(pair_id).encode("utf-8"))


class FuScoreCollator:
    """Turns rating-table rows into model inputs plus the labels of the chosen objective.

    Each row is a dict with `fused` (and `ir`, `vis` when the model reads them), `pair_id`, `mos` and optionally
    `mos_std` and the four sub-scores, all on [1, 5]; an element may also be a list of such rows (one source pair's
    group, as `SyntheticScenes` yields them), which is flattened. The batch carries `soft_label` `[B, L]` in the
    model's level order (from the objective's label builder), `mu`, `sigma` and `mos` `[B]`, and `group_ids` `[B]`
    (stable codes of `pair_id`); for the objectives whose record has `answer_tokens` (the peers'), `answer_labels`
    `[B, T]`, the answer prefix's token ids on their positions and -100 elsewhere. When the rows have a map column
    (`artifact_heatmap`, DESIGN.md section 10), the batch carries the map term's targets (`fuscore.objectives.
    map_targets`): `map_target` `(N,)`, each row's map averaged over each merged patch of its fused image (the grid
    read from the processed batch's `image_grid_thw`), rows concatenated in batch order; `map_patch_counts` `(B,)`
    and `map_grids` `(B, 2)`, each row's patch count and `(h, w)` grid; and `has_map` `(B,)`, False for a row whose
    map is None (it weighs 0). Maps are decoded row by row, as the batch's rows are read, never all up front.
    Given a `position_model` (a FuScoreForQuality; `weightless_copy` makes one that
    costs no memory), it also carries the batch's `position_ids` and `vision_inputs`
    (`FuScoreForQuality.position_inputs`), computed here on the CPU: inside the forward pass the base model would
    compute them on the GPU, with per-row loops that synchronise with it.
    """

    label_keys = ("soft_label", "mu", "sigma", "group_ids", "mos", "answer_labels", "map_target", "map_patch_counts",
                  "map_grids", "has_map")
    map_column = "artifact_heatmap"

    def __init__(self, processor, level_values: Sequence[float], objective: Union[str, Objective] = "fuscore", sigma_min: float = 0.2,
                 dimension: str = "overall", position_model=None, pair_target_raters: Optional[int] = None):
        self.processor = processor
        if pair_target_raters is not None:
            mos_standard_error(1.0, pair_target_raters)  # a bad number of raters fails here, not at the first batch
        self.pair_target_raters = pair_target_raters
        self.position_model = position_model
        self.level_values = list(level_values)
        self.objective = get_objective(objective)  # the registry record, read once
        self.sigma_min = sigma_min
        self.dimension = dimension
        self.answer_ids = answer_prefix_ids(processor, dimension) if self.objective.answer_tokens else None

    def __call__(self, rows: Sequence[Union[dict, Sequence[dict]]]):
        rows = [row for item in rows for row in (item if isinstance(item, (list, tuple)) else [item])]
        samples = self.prepare_samples(rows)
        # A plain dict: accelerate moves a BatchFeature with its own `.to()`, which leaves nested tensors behind.
        batch = dict(self.processor.collate(samples))
        if self.position_model is not None:
            batch.update(self.position_model.position_inputs(batch))
        mu = np.array([_optional_float(row.get("mos")) for row in rows], dtype=np.float64)
        sub_scores = np.array([[_optional_float(row.get(name)) for name in SUB_DIMENSIONS] for row in rows], dtype=np.float64)
        mos_std = np.array([_optional_float(row.get("mos_std"), default=0.0) for row in rows], dtype=np.float64)
        soft_label, sigma = label_for_objective(self.objective, mu, sub_scores, mos_std, sigma_min=self.sigma_min,
                                                level_values=self.level_values)
        filled_mu = resolve_overall_score(mu, sub_scores, self.level_values)
        batch["soft_label"] = torch.as_tensor(np.asarray(soft_label), dtype=torch.float32)
        batch["mu"] = torch.as_tensor(filled_mu, dtype=torch.float32)
        if self.pair_target_raters is not None:
            missing = [f"pair {row.get('pair_id')!r}, method {row.get('method')!r}" for row in rows
                       if math.isnan(_optional_float(row.get("mos_std")))]
            if missing:
                raise ValueError(f"pair_target_raters={self.pair_target_raters} needs every row's mos_std; missing for "
                                 f"{', '.join(missing[:3])}{' and others' if len(missing) > 3 else ''}.")
            sigma = mos_standard_error(mos_std, self.pair_target_raters)
        batch["sigma"] = torch.as_tensor(np.asarray(sigma), dtype=torch.float32)
        batch["mos"] = batch["mu"].clone()
        batch["group_ids"] = torch.tensor([pair_code(row["pair_id"]) for row in rows], dtype=torch.long)
        if self.answer_ids is not None:
            batch["answer_labels"] = answer_token_labels(batch["input_ids"], batch["attention_mask"], self.answer_ids)
        if any(self.map_column in row for row in rows):
            batch.update(self.map_labels(rows, batch["image_grid_thw"]))
        return batch

    def map_labels(self, rows: Sequence[dict], image_grid_thw: torch.Tensor) -> dict:
        """The map term's targets of a batch: each row's map pooled to its fused image's merged-patch grid (the first
        of the row's images in `image_grid_thw`, `(t, h, w)` in patches, divided by the merge size)."""
        per_row = image_grid_thw.shape[0] // len(rows)
        merge = self.processor.merge_size
        grids = (image_grid_thw[::per_row, 1:] // merge).to(torch.long)
        maps = []
        for row in rows:
            artifact_map = row.get(self.map_column)
            if artifact_map is not None:
                try:
                    artifact_map = artifact_map_array(artifact_map)
                except ValueError as error:
                    raise ValueError(f"The {self.map_column} of pair {row.get('pair_id')!r}, method "
                                     f"{row.get('method')!r}: {error}") from None
            maps.append(artifact_map)
        target, has_map = map_targets(maps, grids.tolist())
        return {"map_target": target, "map_patch_counts": grids.prod(dim=1), "map_grids": grids, "has_map": has_map}

    def prepare_samples(self, rows: Sequence[dict]) -> list:
        """The processor's sample (`prepare_sample`: token ids and image patches) of each row."""
        return [
            self.processor.prepare_sample(row["fused"], row.get("ir"), row.get("vis"), self.dimension,
                                          source=f"pair {row.get('pair_id')!r}, method {row.get('method')!r}")
            for row in rows
        ]


def weightless_copy(model):
    """The model rebuilt from its configuration on the meta device: no weights, no memory, but the same methods and
    configuration (enough for `position_inputs`), and cheap to hand to data-loading worker processes."""
    with torch.device("meta"):
        return type(model)(copy.deepcopy(model.config))


def _optional_float(value, default=float("nan")) -> float:
    if value is None:
        return default
    value = float(value)
    return default if math.isnan(value) else value


class SyntheticScenes(Dataset):
    """The synthetic stream as a map-style data set: item `s` is scene `s`'s `images_per_pair` rated fused images
    (a list of rows), drawn from `generator` (a `fuscore_data.synthetic.SyntheticIVIF`) and deterministic in its
    seed. With `EndlessBatchSampler` (batch `k` = scenes `k P .. k P + P - 1`) it gives fresh pair-aware batches
    every step; DataLoader workers and processes fetch only their own batches (the sampler's indices decide, and
    accelerate shards the sampler). It has no length: the scene numbers go on without end.
    """

    def __init__(self, generator, images_per_pair: int):
        self.generator = generator
        self.images_per_pair = images_per_pair

    def __getitem__(self, scene: int) -> list:
        return self.generator.group(int(scene), self.images_per_pair)
