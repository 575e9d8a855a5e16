"""`fuscore_metrics`: how scores are judged, by correlation with ratings and by classical IVIF fusion metrics.

`plcc_srcc` is an `evaluate` metric: PLCC (raw and after the 4-parameter logistic mapping), SRCC, KRCC and RMSE
against `mos`, and, with groups (the fused images of one `pair_id`), the within-pair SRCC and ranking accuracy that
DESIGN.md's within-pair term is judged by. `ivif_metrics` is an `evaluate` metric with the classical reference-based
and no-reference fusion metrics (EN, SD, MI, Qabf, VIF, ...). `map_metrics` is an `evaluate` metric of predicted
artifact maps against target maps (NSS, CC, SIM, AUC-Judd, KL, MSE). Each of these three folders is self-contained
(numpy, scipy, PIL, `datasets`, `evaluate`) because `evaluate.load(<folder>)` copies its file alone. `report` correlates
every classical metric and every model with `mos` over a rating table and writes the baseline report through
`fuscore.atomic`, its only import from the project. The trainer (evaluation), the `fuscore` package (CLI,
ranking), the benchmarks and the tests may import it; the Hub remote-code files (`*_fuscore.py` but
`trainer_fuscore.py`) never do. Nothing is imported here: import the submodules.
"""
