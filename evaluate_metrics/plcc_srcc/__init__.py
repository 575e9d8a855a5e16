"""PLCC / SRCC / KRCC between predicted quality scores and MOS (also an `evaluate` module)."""

from .plcc_srcc import (
    MIN_ITEMS,
    apply_fitted_mapping,
    correlation_metrics,
    fit_logistic_4p,
    logistic_4p,
    within_group_statistics,
)

__all__ = [
    "MIN_ITEMS",
    "apply_fitted_mapping",
    "correlation_metrics",
    "fit_logistic_4p",
    "logistic_4p",
    "within_group_statistics",
]
