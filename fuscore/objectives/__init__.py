# Copyright 2025 The FuScore Authors.
# Licensed under the Apache License, Version 2.0.
"""FuScore's training objectives (DESIGN.md sections 3 and 4): the soft labels, the losses, and one registry record
per objective.

What lives here: `labels` builds the per-image targets in float64 numpy (the FuScore soft label, a discretised
Gaussian whose width comes from the sub-score agreement and the raters' spread, and the baselines' labels);
`losses` holds the torch losses (the distributional KL, Thurstone fidelity within and across source pairs, the
tripartite sum, the baselines' losses and the two softmax modes); `maps` holds the artifact-map term (a table's map
pooled to the patch grid, and the MSE against the map head's per-patch probabilities); `registry` holds one frozen `Objective` record per
objective (its label builder, its loss, what it predicts, whether it needs a regression head, its softmax mode and
whether it wants pair-grouped or randomly drawn batches) and the two entry points `label_for_objective` and
`compute_objective`. Nothing here reads files, models or processes: it is pure math on arrays, so anything may import
it (the training package, the benchmarks, a reward for fusion networks), and it imports only numpy, scipy, torch and
the level values of the Hub layer (`configuration_fuscore`). It must not import `fuscore.training` or the scripts. Batch sampling lives in
`fuscore.training.sampling`.
"""

from .labels import (
    MeanCorrection,
    DEFAULT_LEVEL_VALUES,
    deqa_soft_label,
    deqa_targets,
    fuscore_mos_std_only_targets,
    fuscore_soft_label,
    fuscore_targets,
    mos_standard_error,
    onehot_label,
    onehot_targets,
    qalign_label,
    qalign_targets,
    resolve_overall_score,
)
from .losses import (
    cross_pair_mask,
    deqa_loss,
    distribution_kl,
    fuscore_loss,
    level_log_probs,
    onehot_loss,
    qalign_loss,
    random_pair_mask,
    scalar_loss,
    thurstone_fidelity,
    tripartite_loss,
    within_pair_mask,
)
from .maps import artifact_map_array, map_loss, map_targets, pool_map_to_grid
from .registry import (
    OBJECTIVE_REGISTRY,
    OBJECTIVES,
    Batches,
    Objective,
    ObjectiveName,
    Softmax,
    compute_objective,
    expected_score,
    get_objective,
    label_for_objective,
    regression_output,
)


from . import labels, losses, maps, registry


# The public names are the submodules' own lists, so a new label, loss or record is exported once, where it is defined.
__all__ = [*labels.__all__, *losses.__all__, *maps.__all__, *registry.__all__]
