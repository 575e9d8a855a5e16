"""Pairwise comparison of fused images, and a tie-aware ranking of fusion methods from all within-pair comparisons.

**Thurstone comparison** (DESIGN.md section 11): `P(a better than b) = Phi((s_a - s_b) / sqrt(sd_a^2 + sd_b^2))` from
the two images' predicted level distributions, with an optional tie band. It is defined once, in the Hub file
`comparison_fuscore.py` (the remote code behind `model.compare`, which cannot import this package), whose
`PairwiseOutcome`, `level_moments`, `preference_probabilities` and `compare_distributions` are re-exported here.

**Tie-aware Bradley-Terry**: methods are ranked by Davidson's (1970) extension of the Bradley-Terry model, the
standard one with ties: with strengths `pi_i = exp(theta_i)` and a tie parameter `nu >= 0`,

    P(i beats j) = pi_i / D_ij,   P(tie) = nu sqrt(pi_i pi_j) / D_ij,   D_ij = pi_i + pi_j + nu sqrt(pi_i pi_j),

fitted by maximum likelihood (`fit_davidson`, scipy's L-BFGS-B with the analytic gradient) over counts of wins and
ties. `comparison_counts` makes those counts from every within-pair comparison of a scored benchmark: expected counts
(the three Thurstone probabilities of each comparison, the default) or hard outcomes (the most probable of the three,
as a pairwise model such as LPIFM outputs A / B / tie). Why by hand: choix, the maintained library of Luce-model fits,
has Bradley-Terry but no tie model, and the PyPI packages that fit ties are Bayesian (PyMC) or unmaintained; the
Davidson likelihood is a few lines on top of scipy.optimize.

The fit is pure math (numpy/scipy): no model, no file.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy import optimize, sparse
from scipy.sparse import csgraph

from comparison_fuscore import PairwiseOutcome, compare_distributions, level_moments, preference_probabilities


__all__ = [
    "DavidsonFit",
    "PairwiseOutcome",
    "comparison_counts",
    "compare_distributions",
    "davidson_probabilities",
    "fit_davidson",
    "level_moments",
    "preference_probabilities",
    "rank_methods_pairwise",
]

# ---------------------------------------------------------------------------------------------------------------------
# Davidson's tie-aware Bradley-Terry model
# ---------------------------------------------------------------------------------------------------------------------


def davidson_probabilities(theta_i, theta_j, tie: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(P(i beats j), P(tie), P(j beats i))` under Davidson's model, for log-strengths `theta` and tie parameter nu."""
    theta_i, theta_j = np.asarray(theta_i, float), np.asarray(theta_j, float)
    log_tie = np.log(tie) if tie > 0 else -np.inf
    terms = np.stack(np.broadcast_arrays(theta_i, theta_j, log_tie + (theta_i + theta_j) / 2))
    log_d = np.logaddexp.reduce(terms, axis=0)
    return np.exp(terms[0] - log_d), np.exp(terms[2] - log_d), np.exp(terms[1] - log_d)


@dataclass
class DavidsonFit:
    """A fitted Davidson model.

    Attributes:
        methods: the method names, in the order of the count matrices.
        strength: log-strengths `theta` (mean 0), one per method; a larger one is a better method.
        tie: the tie parameter `nu` (0 when no comparison was a tie).
        log_likelihood: at the fit.
        n_comparisons: total (possibly fractional) number of comparisons.
        converged: what the optimiser reported.
        finite: whether the maximum-likelihood estimate is finite. False when some group of methods won every
            comparison against the others (its strengths grow without bound: the fit stops at large values whose
            order is still the ranking, but whose size means nothing) or when every comparison was a tie.
    """

    methods: list
    strength: np.ndarray
    tie: float
    log_likelihood: float
    n_comparisons: float
    converged: bool
    finite: bool = True

    def ranking(self) -> list:
        """`(method, strength)` from the best method down (equal strengths keep the methods' order)."""
        order = np.argsort(-self.strength, kind="stable")
        return [(self.methods[i], float(self.strength[i])) for i in order]

    def probabilities(self, method_a, method_b) -> tuple[float, float, float]:
        """`(P(a beats b), P(tie), P(b beats a))` under the fitted model."""
        i, j = self.methods.index(method_a), self.methods.index(method_b)
        return tuple(float(p) for p in davidson_probabilities(self.strength[i], self.strength[j], self.tie))


def _negative_log_likelihood(params: np.ndarray, wins: np.ndarray, ties: np.ndarray, fit_tie: bool):
    """Davidson's negative log-likelihood over the unordered pairs i < j, and its gradient; params = (theta_1..M-1,
    log nu) with theta_0 = 0 (the scale's anchor)."""
    m = wins.shape[0]
    theta = np.concatenate([[0.0], params[: m - 1]])
    log_tie = params[m - 1] if fit_tie else -np.inf
    i, j = np.triu_indices(m, k=1)
    w_ij, w_ji, t_ij = wins[i, j], wins[j, i], ties[i, j]
    n_ij = w_ij + w_ji + t_ij
    half = (theta[i] + theta[j]) / 2
    log_d = np.logaddexp(np.logaddexp(theta[i], theta[j]), log_tie + half)
    tie_terms = t_ij * (log_tie + half) if fit_tie else 0.0
    log_likelihood = np.sum(w_ij * theta[i] + w_ji * theta[j] + tie_terms - n_ij * log_d)
    p_i, p_j = np.exp(theta[i] - log_d), np.exp(theta[j] - log_d)
    p_tie = np.exp(log_tie + half - log_d) if fit_tie else np.zeros_like(p_i)
    # d/d theta_i: wins and half the ties, minus n times (P(i wins) + P(tie) / 2), accumulated over both ends.
    g_i = w_ij + t_ij / 2 - n_ij * (p_i + p_tie / 2)
    g_j = w_ji + t_ij / 2 - n_ij * (p_j + p_tie / 2)
    grad_theta = np.bincount(i, weights=g_i, minlength=m) + np.bincount(j, weights=g_j, minlength=m)
    gradient = list(-grad_theta[1:])
    if fit_tie:
        gradient.append(-np.sum(t_ij - n_ij * p_tie))
    return -log_likelihood, np.asarray(gradient)


def fit_davidson(wins, ties=None, methods: Optional[Sequence[Hashable]] = None, tol: float = 1e-10) -> DavidsonFit:
    """Maximum-likelihood fit of Davidson's tie-aware Bradley-Terry model.

    At the optimum the score equations hold: for each method `i`, its wins plus half its ties equal
    `sum_j n_ij (pi_i + nu sqrt(pi_i pi_j) / 2) / D_ij`, and the number of ties equals
    `sum_{i<j} n_ij nu sqrt(pi_i pi_j) / D_ij`.

    Args:
        wins (`(M, M)` array): `wins[i, j]` = (possibly fractional) number of comparisons i won against j.
        ties (`(M, M)` array, *optional*): `ties[i, j] = ties[j, i]` = number of ties between i and j.
        methods: names of the M methods (default 0..M-1).
        tol: the optimiser's gradient tolerance.

    Raises:
        ValueError: shapes, negative or non-finite counts, asymmetric ties, fewer than 2 methods, or methods that
            were never compared with the others (the comparison graph is not connected: their strengths cannot be
            put on one scale).

    A group of methods that won every comparison against the others has no finite maximum-likelihood strength; the
    fit then stops at large strengths and says so (`finite=False`). Expected counts (`comparison_counts`' default)
    never hit this, as every Thurstone probability is positive.
    """
    wins = np.asarray(wins, dtype=np.float64)
    m = wins.shape[0] if wins.ndim == 2 else 0
    ties = np.zeros_like(wins) if ties is None else np.asarray(ties, dtype=np.float64)
    if wins.ndim != 2 or wins.shape != (m, m) or ties.shape != wins.shape or m < 2:
        raise ValueError(f"wins and ties must be square (M, M) matrices with M >= 2, got {wins.shape} and {ties.shape}.")
    if not (np.all(np.isfinite(wins)) and np.all(np.isfinite(ties)) and wins.min() >= 0 and ties.min() >= 0):
        raise ValueError("Counts must be finite and >= 0.")
    if not np.allclose(ties, ties.T):
        raise ValueError("ties must be symmetric: ties[i, j] counts the ties between i and j once, in both entries.")
    methods = list(range(m)) if methods is None else list(methods)
    if len(methods) != m:
        raise ValueError(f"{len(methods)} method names for {m} methods.")
    wins, ties = wins.copy(), ties.copy()
    np.fill_diagonal(wins, 0.0)  # a method against itself says nothing
    np.fill_diagonal(ties, 0.0)
    _, component = csgraph.connected_components(sparse.csr_matrix(wins + wins.T + ties > 0), connection="weak")
    if component.max() > 0:
        apart = [methods[k] for k in range(m) if component[k] != component[0]]
        raise ValueError(f"Methods {apart} were never compared, directly or through others, with {methods[0]!r}; "
                         "their strengths cannot be put on one scale.")
    # The maximum-likelihood strengths are finite exactly when every group of methods did not win against the rest at
    # least once (lost or tied): the graph "i beat or tied j" is strongly connected (Ford, 1957, for Bradley-Terry; a
    # tie joins both ways). A finite tie parameter also needs a comparison that was not a tie.
    not_lost = (wins.T + ties) > 0  # [i, j]: i lost to or tied with j at least once
    strong, _ = csgraph.connected_components(sparse.csr_matrix(not_lost), connection="strong")
    finite = strong == 1 and bool(wins.sum() > 0)
    fit_tie = bool(ties.sum() > 0)
    start = np.zeros(m - 1 + fit_tie)
    result = optimize.minimize(_negative_log_likelihood, start, args=(wins, ties, fit_tie), jac=True,
                               method="L-BFGS-B", options={"gtol": tol, "ftol": 1e-15, "maxiter": 10000})
    theta = np.concatenate([[0.0], result.x[: m - 1]])
    return DavidsonFit(
        methods=methods,
        strength=theta - theta.mean(),
        tie=float(np.exp(result.x[m - 1])) if fit_tie else 0.0,
        log_likelihood=float(-result.fun),
        n_comparisons=float(np.triu(wins + wins.T + ties, k=1).sum()),
        converged=bool(result.success),
        finite=finite,
    )


def comparison_counts(pair_ids: Sequence[Hashable], methods: Sequence[Hashable], scores, stds, tie_band: float = 0.0,
                      hard: bool = False) -> tuple[list, np.ndarray, np.ndarray]:
    """Wins and ties of every within-pair comparison of a scored benchmark (each unordered pair of images of one
    `pair_id` once).

    Args:
        pair_ids, methods: source pair and fusion method of each image (a method appears at most once per pair).
        scores, stds: each image's predicted score and spread.
        tie_band: see `preference_probabilities`.
        hard: count the most probable outcome of each comparison (1 to it, split evenly in an exact draw) instead of
            the expected counts (its three probabilities).

    Returns:
        `(method_names, wins, ties)`: the methods sorted, `wins[i, j]` and the symmetric `ties[i, j]`, ready for
        `fit_davidson`.
    """
    pair_ids, methods = [str(p) for p in pair_ids], [str(m) for m in methods]
    scores, stds = np.asarray(scores, dtype=np.float64), np.asarray(stds, dtype=np.float64)
    if not (len(pair_ids) == len(methods) == len(scores) == len(stds)):
        raise ValueError(f"pair_ids, methods, scores and stds differ in length: {len(pair_ids)}, {len(methods)}, "
                         f"{len(scores)}, {len(stds)}.")
    names = sorted(set(methods))
    index = {name: k for k, name in enumerate(names)}
    seen, groups = set(), {}
    for row, (pair, method) in enumerate(zip(pair_ids, methods)):
        if (pair, method) in seen:
            raise ValueError(f"row {row}: method {method!r} appears twice for pair {pair!r}.")
        seen.add((pair, method))
        groups.setdefault(pair, []).append(row)
    first, second = [], []
    for rows in groups.values():
        for a_pos, a in enumerate(rows):
            for b in rows[a_pos + 1:]:
                first.append(a)
                second.append(b)
    wins, ties = np.zeros((len(names), len(names))), np.zeros((len(names), len(names)))
    if not first:
        return names, wins, ties
    first, second = np.asarray(first), np.asarray(second)
    outcome = preference_probabilities(torch.from_numpy(scores[first]), torch.from_numpy(stds[first]),
                                       torch.from_numpy(scores[second]), torch.from_numpy(stds[second]),
                                       tie_band=tie_band)
    probs = torch.stack(outcome, dim=-1).numpy()  # [comparisons, (a better, tie, b better)]
    if hard:
        # The most probable outcome counts 1; an exact draw between outcomes is split evenly among them.
        most = probs == probs.max(axis=1, keepdims=True)
        probs = most / most.sum(axis=1, keepdims=True)
    a_index = np.array([index[methods[r]] for r in first])
    b_index = np.array([index[methods[r]] for r in second])
    np.add.at(wins, (a_index, b_index), probs[:, 0])
    np.add.at(wins, (b_index, a_index), probs[:, 2])
    np.add.at(ties, (a_index, b_index), probs[:, 1])
    np.add.at(ties, (b_index, a_index), probs[:, 1])
    return names, wins, ties


def rank_methods_pairwise(pair_ids, methods, scores, stds, tie_band: float = 0.0, hard: bool = False) -> DavidsonFit:
    """Methods ranked by Davidson's model fitted to all within-pair comparisons (`comparison_counts` then
    `fit_davidson`); `fit.ranking()` lists them best first."""
    names, wins, ties = comparison_counts(pair_ids, methods, scores, stds, tie_band=tie_band, hard=hard)
    return fit_davidson(wins, ties, names)
