"""Classical IVIF fusion metrics with VIFB's conventions (also an `evaluate` module)."""

from .ivif_metrics import (
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    compute_ivif_metrics,
    compute_ivif_metrics_batch,
    compute_metrics_on_stack,
    prepare_triplet,
    to_planes,
)

__all__ = [
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "compute_ivif_metrics",
    "compute_ivif_metrics_batch",
    "compute_metrics_on_stack",
    "prepare_triplet",
    "to_planes",
]
