"""Artifact-map metrics with the MIT Saliency Benchmark's definitions (also an `evaluate` module)."""

from .map_metrics import (
    HIGHER_IS_BETTER,
    KL_EPS,
    MAP_METRICS,
    auc_judd,
    cc,
    kl,
    map_metrics,
    map_metrics_batch,
    mse,
    nss,
    sim,
)

__all__ = [
    "HIGHER_IS_BETTER",
    "KL_EPS",
    "MAP_METRICS",
    "auc_judd",
    "cc",
    "kl",
    "map_metrics",
    "map_metrics_batch",
    "mse",
    "nss",
    "sim",
]
