"""Pairwise comparison (Thurstone, with a tie band) and Davidson's tie-aware Bradley-Terry ranking (fuscore.pairwise),
against hand-worked values and the model's score equations."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from fuscore.pairwise import (
    comparison_counts,
    compare_distributions,
    davidson_probabilities,
    fit_davidson,
    level_moments,
    preference_probabilities,
    rank_methods_pairwise,
)


def test_preference_is_the_thurstone_formula():
    # sigma = sqrt(0.6^2 + 0.8^2) = 1: P = Phi(0.5).
    outcome = preference_probabilities(3.5, 0.6, 3.0, 0.8)
    assert outcome.a_better.item() == pytest.approx(norm.cdf(0.5), abs=1e-7)
    assert outcome.b_better.item() == pytest.approx(norm.cdf(-0.5), abs=1e-7)
    assert outcome.tie.item() == 0.0


def test_an_image_against_itself_is_a_coin_flip_and_the_order_of_a_pair_is_symmetric():
    assert preference_probabilities(3.2, 0.7, 3.2, 0.7).a_better.item() == 0.5
    assert preference_probabilities(4.0, 0.0, 4.0, 0.0).a_better.item() == 0.5  # sd 0: no NaN
    assert preference_probabilities(4.0, 0.0, 3.0, 0.0).a_better.item() == 1.0
    generator = torch.Generator().manual_seed(0)
    s_a, s_b = 1 + 4 * torch.rand(50, generator=generator, dtype=torch.float64), 1 + 4 * torch.rand(50, dtype=torch.float64, generator=generator)
    d_a, d_b = torch.rand(50, generator=generator, dtype=torch.float64), torch.rand(50, generator=generator, dtype=torch.float64)
    for band in (0.0, 0.3):
        ab, ba = preference_probabilities(s_a, d_a, s_b, d_b, band), preference_probabilities(s_b, d_b, s_a, d_a, band)
        assert torch.equal(ab.a_better, ba.b_better) and torch.equal(ab.tie, ba.tie)
        torch.testing.assert_close(ab.a_better + ab.tie + ab.b_better, torch.ones(50, dtype=torch.float64))
    torch.testing.assert_close(preference_probabilities(s_a, d_a, s_b, d_b).a_better
                               + preference_probabilities(s_b, d_b, s_a, d_a).a_better, torch.ones(50, dtype=torch.float64))
    # Batched against one reference image (broadcast).
    assert preference_probabilities(s_a, d_a, 3.0, 0.5).a_better.shape == (50,)


def test_tie_band_gives_three_outcomes():
    # sigma 1, difference 0.5, band 0.5: Phi(0), Phi(1) - Phi(0), Phi(-1).
    outcome = preference_probabilities(3.5, 0.6, 3.0, 0.8, tie_band=0.5)
    assert outcome.a_better.item() == pytest.approx(0.5, abs=1e-7)
    assert outcome.tie.item() == pytest.approx(norm.cdf(1.0) - 0.5, abs=1e-7)
    assert outcome.b_better.item() == pytest.approx(norm.cdf(-1.0), abs=1e-7)
    itself = preference_probabilities(3.0, 0.3, 3.0, 0.4, tie_band=0.5)  # sigma 0.5: tie = Phi(1) - Phi(-1)
    assert itself.tie.item() == pytest.approx(norm.cdf(1) - norm.cdf(-1), abs=1e-7)
    assert itself.a_better.item() == itself.b_better.item() == pytest.approx(norm.cdf(-1), abs=1e-7)
    with pytest.raises(ValueError, match="tie_band"):
        preference_probabilities(3.0, 0.3, 3.0, 0.4, tie_band=-0.1)


def test_comparison_from_level_distributions():
    # Levels in the model's order (excellent..bad = 5..1): half good, half fair -> s = 3.5, sd = 0.5; all fair -> 3, 0.
    a, b = torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])
    score, std = level_moments(torch.stack([a, b]))
    assert score.tolist() == pytest.approx([3.5, 3.0]) and std.tolist() == pytest.approx([0.5, 0.0])
    assert compare_distributions(a, b).a_better.item() == pytest.approx(norm.cdf(1.0), abs=1e-7)
    assert compare_distributions(a, a).a_better.item() == 0.5
    batch = compare_distributions(torch.stack([a, b]), torch.stack([b, a]))
    assert batch.a_better.tolist() == pytest.approx([norm.cdf(1.0), norm.cdf(-1.0)], abs=1e-7)
    with pytest.raises(ValueError, match="5 levels but level_values 3"):
        level_moments(a, level_values=(1, 2, 3))


def test_davidson_two_methods_closed_form():
    # With two methods the model is saturated: P(A) = 6/12, P(tie) = 4/12, P(B) = 2/12 exactly, so
    # pi_A / pi_B = 6 / 2 and nu = t / sqrt(w l) = 4 / sqrt(12).
    fit = fit_davidson([[0, 6], [2, 0]], [[0, 4], [4, 0]], ["A", "B"])
    assert fit.strength[0] - fit.strength[1] == pytest.approx(math.log(3), abs=1e-6)
    assert fit.tie == pytest.approx(4 / math.sqrt(12), abs=1e-6)
    assert fit.probabilities("A", "B") == pytest.approx((0.5, 1 / 3, 1 / 6), abs=1e-6)
    assert fit.ranking()[0][0] == "A" and fit.n_comparisons == 12 and fit.converged
    # No tie at all: plain Bradley-Terry, nu = 0.
    plain = fit_davidson([[0, 3], [1, 0]])
    assert plain.tie == 0.0 and plain.strength[0] - plain.strength[1] == pytest.approx(math.log(3), abs=1e-6)


def test_davidson_symmetric_cycle():
    # A beats B, B beats C, C beats A 3 times each (1 the other way), 2 ties per pair: equal strengths by symmetry,
    # and then P(tie) = nu / (2 + nu) = 2 / 6, so nu = 1.
    wins = [[0, 3, 1], [1, 0, 3], [3, 1, 0]]
    ties = [[0, 2, 2], [2, 0, 2], [2, 2, 0]]
    fit = fit_davidson(wins, ties)
    assert fit.strength == pytest.approx([0, 0, 0], abs=1e-6)
    assert fit.tie == pytest.approx(1.0, abs=1e-6)


def test_davidson_fit_solves_its_score_equations():
    wins = np.array([[0, 5, 3], [2, 0, 4], [1, 1, 0]], dtype=float)
    ties = np.array([[0, 2, 1], [2, 0, 3], [1, 3, 0]], dtype=float)
    fit = fit_davidson(wins, ties, ["A", "B", "C"])
    pi, nu = np.exp(fit.strength), fit.tie
    n = wins + wins.T + ties
    for i in range(3):
        # Wins of i plus half its ties = sum_j n_ij (pi_i + nu sqrt(pi_i pi_j) / 2) / D_ij.
        expected = sum(n[i, j] * (pi[i] + nu * math.sqrt(pi[i] * pi[j]) / 2)
                       / (pi[i] + pi[j] + nu * math.sqrt(pi[i] * pi[j])) for j in range(3) if j != i)
        assert wins[i].sum() + ties[i].sum() / 2 == pytest.approx(expected, abs=1e-5)
    # Ties observed (6) = sum_{i<j} n_ij nu sqrt(pi_i pi_j) / D_ij.
    expected_ties = sum(n[i, j] * nu * math.sqrt(pi[i] * pi[j]) / (pi[i] + pi[j] + nu * math.sqrt(pi[i] * pi[j]))
                        for i in range(3) for j in range(i + 1, 3))
    assert expected_ties == pytest.approx(6.0, abs=1e-5)
    assert [name for name, _ in fit.ranking()] == ["A", "B", "C"]
    assert fit.strength.sum() == pytest.approx(0.0, abs=1e-12)
    win, tie, loss = davidson_probabilities(fit.strength[0], fit.strength[2], fit.tie)
    assert win + tie + loss == pytest.approx(1.0) and fit.probabilities("A", "C") == pytest.approx((win, tie, loss))


def test_davidson_says_when_the_estimate_is_not_finite():
    # A beat B and C every time: its strength has no finite maximum; B and C lost and tied among themselves.
    fit = fit_davidson([[0, 3, 3], [0, 0, 2], [0, 1, 0]], [[0, 0, 0], [0, 0, 1], [0, 1, 0]], ["A", "B", "C"])
    assert not fit.finite and fit.ranking()[0][0] == "A"
    # One tie of A with B is enough: A can no longer run away.
    assert fit_davidson([[0, 3, 3], [0, 0, 2], [0, 1, 0]], [[0, 1, 0], [1, 0, 1], [0, 1, 0]]).finite
    assert not fit_davidson([[0, 0], [0, 0]], [[0, 2], [2, 0]]).finite  # only ties: nu has no finite maximum
    assert fit_davidson([[0, 6], [2, 0]], [[0, 4], [4, 0]]).finite


def test_davidson_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match=r"\['C', 'D'\] were never compared"):
        fit_davidson([[0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], methods=["A", "B", "C", "D"])
    with pytest.raises(ValueError, match="square"):
        fit_davidson([[0, 1, 2]])
    with pytest.raises(ValueError, match="symmetric"):
        fit_davidson([[0, 1], [1, 0]], [[0, 1], [0, 0]])
    with pytest.raises(ValueError, match=">= 0"):
        fit_davidson([[0, -1], [1, 0]])


def test_comparison_counts_expected_and_hard():
    pair_ids = ["p1", "p1", "p1", "p2", "p2", "p3"]
    methods = ["A", "B", "C", "A", "B", "A"]
    scores = [4.0, 3.5, 3.5, 3.0, 3.0, 5.0]
    stds = [0.6, 0.8, 0.8, 0.5, 0.5, 0.1]
    names, wins, ties = comparison_counts(pair_ids, methods, scores, stds)
    assert names == ["A", "B", "C"]
    # p1: A-B and A-C at Phi(0.5) each, B-C a coin flip; p2: A-B a coin flip; p3 alone compares nothing.
    phi = norm.cdf(0.5)
    np.testing.assert_allclose(wins, [[0, phi + 0.5, phi], [1 - phi + 0.5, 0, 0.5], [1 - phi, 0.5, 0]], atol=1e-7)
    assert ties.sum() == 0
    names, wins, ties = comparison_counts(pair_ids, methods, scores, stds, hard=True)
    np.testing.assert_allclose(wins, [[0, 1.5, 1], [0.5, 0, 0.5], [0, 0.5, 0]])  # coin flips split in half
    # With a band of 1: sigma 1, difference 0.5 in p1 -> P(A) = Phi(-0.5) = 0.31, P(tie) = Phi(1.5) - Phi(-0.5) = 0.62;
    # in p2 (sigma 0.71, difference 0) P(tie) = 0.84.
    _, wins, ties = comparison_counts(pair_ids, methods, scores, stds, tie_band=1.0, hard=True)
    assert ties[0, 1] == ties[1, 0] == 2  # p1 and p2 both most probably ties
    assert np.allclose(ties, ties.T)
    with pytest.raises(ValueError, match="appears twice"):
        comparison_counts(["p", "p"], ["A", "A"], [1, 2], [1, 1])


def test_ranking_recovers_the_order_of_methods():
    rng = np.random.default_rng(0)
    pair_ids, methods, scores, stds = [], [], [], []
    for pair in range(30):
        for method, quality in (("good", 4.0), ("fair", 3.4), ("poor", 2.6)):
            pair_ids.append(f"s{pair}")
            methods.append(method)
            scores.append(quality + rng.normal(0, 0.5))
            stds.append(0.6)
    for hard in (False, True):
        fit = rank_methods_pairwise(pair_ids, methods, scores, stds, tie_band=0.2, hard=hard)
        assert [name for name, _ in fit.ranking()] == ["good", "fair", "poor"]
        assert fit.n_comparisons == pytest.approx(90)
        # Expected counts carry each comparison's tie probability (about 0.2 here); as hard outcomes a tie is never
        # the most probable of the three, so there are none.
        assert (fit.tie > 0) != hard
