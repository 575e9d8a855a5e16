"""Tests of fuscore.objectives: soft labels, losses, the objective switch and the pair-aware batch sampler.

Expected loss values are computed here from the formulas of DESIGN.md with `math.erf`, never by calling the module.
"""

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fuscore.objectives as objectives
from fuscore.objectives import (
    OBJECTIVES,
    compute_objective,
    cross_pair_mask,
    distribution_kl,
    thurstone_fidelity,
    tripartite_loss,
    within_pair_mask,
)
from fuscore.training.sampling import PairGroupedBatchSampler


LEVELS = np.arange(1.0, 6.0)
EPS = 1e-8


# The label tests below are written in ascending level order (bad..excellent, as DESIGN.md's formulas read); the
# builders' default is the model's order (excellent..bad), tested on its own in test_default_level_order_is_the_models.
def _ascending(builder):
    def build(*args, level_values=tuple(LEVELS), **kwargs):
        return builder(*args, level_values=level_values, **kwargs)

    return build


fuscore_soft_label = _ascending(objectives.fuscore_soft_label)
onehot_label = _ascending(objectives.onehot_label)
label_for_objective = _ascending(objectives.label_for_objective)


def phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def entropy(q: np.ndarray) -> float:
    q = q[q > 0]
    return float(-(q * np.log(q)).sum())


def fidelity_by_hand(s_i, s_j, sd_i, sd_j, mu_i, mu_j, sigma_i, sigma_j, eps=EPS):
    p = phi((mu_i - mu_j) / math.sqrt(max(sigma_i**2 + sigma_j**2, eps)))
    p_hat = phi((s_i - s_j) / math.sqrt(sd_i**2 + sd_j**2 + eps))
    return 1.0 - math.sqrt(p * p_hat + eps) - math.sqrt((1.0 - p) * (1.0 - p_hat) + eps)


# ---------------------------------------------------------------------------------------------------------------------
# Soft labels
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mean_correction", ["iterative", "single"])
def test_soft_label_is_a_distribution_on_a_grid(mean_correction):
    mu = np.repeat(np.linspace(1.0, 5.0, 41), 12)
    mos_std = np.tile(np.linspace(0.0, 2.0, 12), 41)
    q, sigma = fuscore_soft_label(mu, mos_std=mos_std, mean_correction=mean_correction)
    assert q.shape == (mu.size, 5)
    assert np.all(q >= 0)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(sigma, np.maximum(0.2, mos_std))
    mean_error = np.abs(q @ LEVELS - mu)
    if mean_correction == "iterative":
        # Exact on every path: corrected Gaussian and two-level fallback alike.
        assert mean_error.max() <= 1e-9
    else:
        # DESIGN.md's single step is only accepted up to 0.1 (otherwise it falls back, exactly).
        assert mean_error.max() <= 0.1 + 1e-12
        assert mean_error.max() > 1e-3  # the reason "iterative" is the default


def test_soft_label_matches_the_design_formulas_by_hand():
    # mu = 2, sigma = 1: the single DeQA step clips level 5, so "single" and "iterative" differ.
    mu, sigma = 2.0, 1.0
    edges = [-math.inf, 1.5, 2.5, 3.5, 4.5, math.inf]
    cdf = [0.0 if e == -math.inf else 1.0 if e == math.inf else phi((e - mu) / sigma) for e in edges]
    gauss = np.array([cdf[k + 1] - cdf[k] for k in range(5)])
    a, b = gauss.sum(), gauss @ LEVELS
    alpha = (mu - 3.0) / (b - 3.0 * a)
    beta = (1.0 - alpha * a) / 5.0
    single = np.maximum(alpha * gauss + beta, 0.0)
    single /= single.sum()
    assert single[4] == 0.0  # the clip did happen

    q_single, _ = fuscore_soft_label(mu, mos_std=sigma, mean_correction="single")
    np.testing.assert_allclose(q_single, single, atol=1e-12)

    # Iterative: the same formula again on levels 1..4 (restricted Gaussian, c = 2.5, L = 4).
    support = gauss[:4]
    a4, b4, c4 = support.sum(), support @ LEVELS[:4], LEVELS[:4].mean()
    alpha4 = (mu - c4) / (b4 - c4 * a4)
    beta4 = (1.0 - alpha4 * a4) / 4.0
    iterative = np.append(alpha4 * support + beta4, 0.0)
    assert np.all(iterative >= 0)
    q_iter, _ = fuscore_soft_label(mu, mos_std=sigma)
    np.testing.assert_allclose(q_iter, iterative, atol=1e-12)
    assert abs(q_iter @ LEVELS - mu) <= 1e-12


def test_iterative_equals_single_where_nothing_is_clipped():
    # Symmetric around 2.5: alpha ~ 1 and beta >= 0, nothing is clipped.
    q_iter, _ = fuscore_soft_label(2.5, mos_std=0.8)
    q_single, _ = fuscore_soft_label(2.5, mos_std=0.8, mean_correction="single")
    np.testing.assert_allclose(q_iter, q_single, atol=1e-15)
    assert np.all(q_iter[:4] > 0.05)


def test_agreement_spread_from_present_sub_scores():
    subs = [3.0, None, 4.0, float("nan")]
    q, sigma = fuscore_soft_label(3.2, subs, mos_std=0.4)
    sigma_sub_sq = ((3.0 - 3.2) ** 2 + (4.0 - 3.2) ** 2) / 2
    assert sigma == pytest.approx(math.sqrt(sigma_sub_sq + 0.4**2), rel=1e-12)
    assert q.shape == (5,)

    # No overall score: mu is the mean of the sub-scores present.
    q, sigma = fuscore_soft_label(None, [2.0, 3.0, None, 4.0])
    assert q @ LEVELS == pytest.approx(3.0, abs=1e-12)
    assert sigma == pytest.approx(math.sqrt(2.0 / 3.0), rel=1e-12)

    # Batched rows, torch in -> torch out.
    q, sigma = fuscore_soft_label(torch.tensor([2.5, float("nan")]), torch.tensor([[2.0, 3.0, 2.5, 2.5],
                                                                                  [4.0, 4.0, 4.0, 4.0]]))
    assert isinstance(q, torch.Tensor) and q.shape == (2, 5) and q.dtype == torch.float64
    assert torch.allclose(q[1], torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64))


def test_agreeing_sub_scores_give_a_sharper_label():
    entropies = []
    for spread in [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]:
        subs = 3.2 + spread * np.array([1.0, -1.0, 1.0, -1.0])
        q, _ = fuscore_soft_label(3.2, subs, mos_std=0.5)
        entropies.append(entropy(q))
    assert all(later > earlier for earlier, later in zip(entropies, entropies[1:])), entropies


@settings(max_examples=150, deadline=None)
@given(
    mu=st.floats(1.0, 5.0),
    subs=st.lists(st.one_of(st.none(), st.floats(1.0, 5.0)), min_size=4, max_size=4),
    mos_std=st.one_of(st.none(), st.floats(0.0, 1.5)),
)
def test_soft_label_properties(mu, subs, mos_std):
    q, sigma = fuscore_soft_label(mu, subs, mos_std)
    assert np.all(q >= 0)
    assert abs(q.sum() - 1.0) <= 1e-12
    assert abs(q @ LEVELS - mu) <= 1e-3
    assert sigma >= 0.2


@settings(max_examples=100, deadline=None)
@given(mu=st.floats(1.0, 5.0), low=st.floats(0.0, 1.0), high=st.floats(0.0, 1.0))
def test_entropy_grows_with_sub_score_spread(mu, low, high):
    # Total spreads inside [0.5, 1.2] (mos_std = 0.5), where the design's entropy property holds at every mu.
    low, high = sorted((low * 1.09, high * 1.09))
    pattern = np.array([1.0, -1.0, 1.0, -1.0])
    q_low, s_low = fuscore_soft_label(mu, mu + low * pattern, 0.5)
    q_high, s_high = fuscore_soft_label(mu, mu + high * pattern, 0.5)
    assert s_low <= s_high
    assert entropy(q_low) <= entropy(q_high) + 1e-9


@pytest.mark.parametrize("mu, level", [(1.0, 0), (5.0, 4)])
def test_end_levels(mu, level):
    expected = np.eye(5)[level]
    # Any spread: a mean on an end level forces the whole mass there.
    for mos_std in [None, 0.3, 0.8, 1.5]:
        q, _ = fuscore_soft_label(mu, [mu, mu, mu, mu], mos_std)
        np.testing.assert_allclose(q, expected, atol=1e-12)
    q, _ = fuscore_soft_label(mu, mos_std=0.8, mean_correction="single")
    np.testing.assert_allclose(q, expected, atol=1e-12)  # |E - mu| = 0.23 > 0.1 -> fallback


def test_fallback_two_level_split():
    # Sigma at the floor (all sub-scores agree, no rater spread): 1 - frac on floor(mu), frac on ceil(mu).
    q, sigma = fuscore_soft_label(3.3, [3.3, 3.3, 3.3, 3.3])
    np.testing.assert_allclose(q, [0.0, 0.0, 0.7, 0.3, 0.0], atol=1e-12)
    assert sigma == 0.2
    q, _ = fuscore_soft_label(4.0, mos_std=0.1)
    np.testing.assert_allclose(q, [0.0, 0.0, 0.0, 1.0, 0.0])
    # Mean-error fallback of the literal DESIGN.md step: mu = 1.2, sigma = 0.8 misses the mean by ~0.16.
    q, _ = fuscore_soft_label(1.2, mos_std=0.8, mean_correction="single")
    np.testing.assert_allclose(q, [0.8, 0.2, 0.0, 0.0, 0.0], atol=1e-12)
    q_loose, _ = fuscore_soft_label(1.2, mos_std=0.8, mean_correction="single", mean_tol=0.5)
    assert q_loose[2] > 0


def test_level_order_follows_level_values():
    q_up, _ = fuscore_soft_label(2.2, [2.0, 2.5, 2.0, 2.4], 0.6)
    q_down, _ = fuscore_soft_label(2.2, [2.0, 2.5, 2.0, 2.4], 0.6, level_values=[5, 4, 3, 2, 1])
    np.testing.assert_allclose(q_down, q_up[::-1], atol=1e-15)
    assert q_up[0] > q_up[4]


def test_default_level_order_is_the_models():
    """One order for the level values: the builders default to the model's own (excellent..bad = 5..1, the order of
    its level words and logits), taken from the Hub layer rather than a copy; the masses do not depend on the order."""
    import configuration_fuscore

    assert objectives.DEFAULT_LEVEL_VALUES is configuration_fuscore.DEFAULT_LEVEL_VALUES
    assert tuple(objectives.DEFAULT_LEVEL_VALUES) == (5.0, 4.0, 3.0, 2.0, 1.0)
    ascending, sigma = fuscore_soft_label(2.2, [2.0, 2.5, 2.0, 2.4], 0.6)
    default, default_sigma = objectives.fuscore_soft_label(2.2, [2.0, 2.5, 2.0, 2.4], 0.6)
    np.testing.assert_array_equal(default, ascending[::-1])
    assert default_sigma == sigma
    for objective in OBJECTIVES:
        q_default, _ = objectives.label_for_objective(objective, [1.3, 4.6], None, [0.4, 0.9])
        q_up, _ = label_for_objective(objective, [1.3, 4.6], None, [0.4, 0.9])
        np.testing.assert_array_equal(q_default, q_up[:, ::-1])
    np.testing.assert_array_equal(objectives.onehot_label(4.6), [1, 0, 0, 0, 0])


def test_out_of_range_mu_raises():
    with pytest.raises(ValueError):
        fuscore_soft_label(5.5, mos_std=0.5)
    with pytest.raises(ValueError):
        fuscore_soft_label(None, [None, None, None, None])


def test_mos_std_only_and_nearest_onehot_labels():
    """The controlled variants (the peers' own labels are tested against their definitions in
    test_peer_baselines.py)."""
    q, sigma = label_for_objective("fuscore_mos_std_only", 3.4, [2.0, 4.0, 3.0, 4.5], 0.7)
    q_ref, _ = fuscore_soft_label(3.4, mos_std=0.7)
    np.testing.assert_allclose(q, q_ref)
    assert sigma == pytest.approx(0.7)
    assert label_for_objective("fuscore_mos_std_only", 3.4, None, 0.05)[1] == pytest.approx(0.2)

    expected_index = [0, 1, 2, 2, 3, 4, 4]  # round half up: 1.5 -> 2, 3.5 -> 4, 4.5 -> 5
    q = onehot_label([1.2, 1.5, 2.51, 3.49, 3.5, 4.5, 5.0])
    np.testing.assert_array_equal(q, np.eye(5)[expected_index])
    np.testing.assert_array_equal(onehot_label(2.5, level_values=[5, 4, 3, 2, 1]), [0, 0, 1, 0, 0])
    assert isinstance(onehot_label(torch.tensor([3.0])), torch.Tensor)


def test_label_for_objective():
    subs = [[2.0, 3.0, 4.0, 3.0]]
    q_fus, s_fus = label_for_objective("fuscore", None, subs, 0.3)
    q_deqa, s_deqa = label_for_objective("fuscore_mos_std_only", None, subs, 0.3)
    q_one, _ = label_for_objective("nearest_onehot", None, subs, 0.3)
    assert s_fus[0] == pytest.approx(math.sqrt(0.5 + 0.09))
    assert s_deqa[0] == pytest.approx(0.3)
    assert q_deqa @ LEVELS == pytest.approx([3.0]) and entropy(q_deqa[0]) < entropy(q_fus[0])
    np.testing.assert_array_equal(q_one, [[0, 0, 1, 0, 0]])
    with pytest.raises(ValueError):
        label_for_objective("mse", 3.0)


# ---------------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------------


def test_distribution_kl_by_hand_and_zero_mass():
    q = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0]])
    p = torch.tensor([[0.25, 0.25, 0.5, 0.0, 0.0], [0.1, 0.2, 0.4, 0.2, 0.1]])
    log_p = p.log().requires_grad_(True)  # -inf where p = 0 and q = 0
    loss = distribution_kl(q, log_p)
    expected = (math.log(2.0) + math.log(1.0 / 0.4)) / 2.0
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(log_p.grad).all()
    # d/dlog p_l of mean_i sum_l -q_il log p_il = -q_il / B
    assert torch.allclose(log_p.grad, -q / 2.0)
    assert distribution_kl(q, q.clamp_min(1e-30).log()).item() == pytest.approx(0.0, abs=1e-6)


def test_thurstone_fidelity_two_and_three_elements():
    score = torch.tensor([3.4, 2.9, 4.1], requires_grad=True)
    std = torch.tensor([0.6, 0.4, 0.8], requires_grad=True)
    mu = torch.tensor([3.5, 2.5, 4.0])
    sigma = torch.tensor([0.5, 0.3, 0.7])
    f = {(i, j): fidelity_by_hand(score[i].item(), score[j].item(), std[i].item(), std[j].item(),
                                  mu[i].item(), mu[j].item(), sigma[i].item(), sigma[j].item())
         for i in range(3) for j in range(3) if i != j}
    assert f[(0, 1)] == pytest.approx(f[(1, 0)], abs=1e-12)  # symmetric, so ordered == unordered means

    groups = ["a", "a", "b"]
    within = thurstone_fidelity(score, std, mu, sigma, within_pair_mask(groups))
    cross = thurstone_fidelity(score, std, mu, sigma, cross_pair_mask(groups))
    assert within.item() == pytest.approx(f[(0, 1)], rel=1e-5)
    assert cross.item() == pytest.approx((f[(0, 2)] + f[(1, 2)]) / 2.0, rel=1e-5)

    upper_only = torch.triu(torch.ones(3, 3, dtype=torch.bool), diagonal=1)
    everything = torch.ones(3, 3, dtype=torch.bool)
    full = thurstone_fidelity(score, std, mu, sigma, everything)
    assert full.item() == pytest.approx(thurstone_fidelity(score, std, mu, sigma, upper_only).item(), rel=1e-6)
    assert full.item() == pytest.approx((f[(0, 1)] + f[(0, 2)] + f[(1, 2)]) / 3.0, rel=1e-5)

    full.backward()
    assert score.grad.abs().min() > 0 and std.grad.abs().min() > 0
    assert mu.grad is None


def test_fixed_std_uses_unit_spread():
    score = torch.tensor([3.0, 2.0], requires_grad=True)
    std = torch.tensor([0.2, 0.2], requires_grad=True)
    mu = torch.tensor([3.2, 2.6])
    sigma = torch.tensor([0.4, 0.4])
    mask = cross_pair_mask(["a", "b"])
    predicted = thurstone_fidelity(score, std, mu, sigma, mask)
    fixed = thurstone_fidelity(score, std, mu, sigma, mask, fixed_std=True)
    assert predicted.item() == pytest.approx(fidelity_by_hand(3.0, 2.0, 0.2, 0.2, 3.2, 2.6, 0.4, 0.4), rel=1e-5)
    assert fixed.item() == pytest.approx(fidelity_by_hand(3.0, 2.0, 1.0, 1.0, 3.2, 2.6, 0.4, 0.4), rel=1e-5)
    # A confident prediction (sd = 0.2) overshoots the target P ~ 0.86 more than sd = 1 does.
    assert predicted.item() > fixed.item()
    fixed.backward()
    assert std.grad is None and score.grad is not None
    assert thurstone_fidelity(score, None, mu, sigma, mask, fixed_std=True).item() == pytest.approx(fixed.item())
    with pytest.raises(ValueError):
        thurstone_fidelity(score, None, mu, sigma, mask)


def test_zero_label_spread_and_no_pair():
    score = torch.tensor([3.0, 2.5], requires_grad=True)
    std = torch.tensor([0.0, 0.0], requires_grad=True)
    mu = torch.tensor([3.0, 3.0])
    sigma = torch.zeros(2)
    mask = within_pair_mask(["a", "a"])
    loss = thurstone_fidelity(score, std, mu, sigma, mask)
    p_hat = phi(0.5 / math.sqrt(EPS))
    assert loss.item() == pytest.approx(1 - math.sqrt(0.5 * p_hat + EPS) - math.sqrt(0.5 * (1 - p_hat) + EPS),
                                        abs=1e-6)

    for none_selected in [within_pair_mask(["a", "b"]), torch.zeros(2, 2, dtype=torch.bool)]:
        score.grad = std.grad = None
        loss = thurstone_fidelity(score, std, mu, sigma, none_selected)
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.equal(score.grad, torch.zeros(2)) and torch.equal(std.grad, torch.zeros(2))


def test_pair_masks():
    within = within_pair_mask(["x", "y", "x"])
    cross = cross_pair_mask(torch.tensor([7, 8, 7]))
    assert within.tolist() == [[False, False, True], [False, False, False], [True, False, False]]
    assert cross.tolist() == [[False, True, False], [True, False, True], [False, True, False]]


def _batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 5, generator=generator, requires_grad=True)
    probs = logits.softmax(dim=-1)
    values = torch.arange(1.0, 6.0)
    score = (probs * values).sum(-1)
    score_std = (probs * (values - score[:, None]) ** 2).sum(-1).sqrt()
    mu = torch.tensor([2.2, 3.1, 4.0, 1.6])
    sigma = torch.tensor([0.5, 0.7, 0.3, 0.9])
    soft_label = torch.as_tensor(fuscore_soft_label(mu.numpy(), mos_std=sigma.numpy())[0], dtype=torch.float32)
    groups = ["p1", "p1", "p2", "p2"]
    return logits, score, score_std, soft_label, mu, sigma, groups


def test_tripartite_loss_by_hand():
    logits, score, score_std, q, mu, sigma, groups = _batch()
    out = tripartite_loss(logits, score, score_std, q, mu, sigma, groups, lambda_within=1.0, lambda_cross=0.5)
    assert set(out) == {"loss", "loss_dist", "loss_within", "loss_cross"}

    log_p = logits.detach().log_softmax(-1)
    kl = sum(float(qv) * (math.log(float(qv)) - float(lp)) for row_q, row_lp in zip(q, log_p)
             for qv, lp in zip(row_q, row_lp) if qv > 0) / 4.0
    s, sd = score.tolist(), score_std.tolist()

    def f(i, j):
        return fidelity_by_hand(s[i], s[j], sd[i], sd[j], mu[i].item(), mu[j].item(), sigma[i].item(),
                                sigma[j].item())

    within = (f(0, 1) + f(2, 3)) / 2.0
    cross = (f(0, 2) + f(0, 3) + f(1, 2) + f(1, 3)) / 4.0
    assert out["loss_dist"].item() == pytest.approx(kl, rel=1e-5)
    assert out["loss_within"].item() == pytest.approx(within, rel=1e-4)
    assert out["loss_cross"].item() == pytest.approx(cross, rel=1e-4)
    assert out["loss"].item() == pytest.approx(kl + within + 0.5 * cross, rel=1e-5)

    # Log-probabilities give the same loss as logits (restricted softmax is idempotent).
    again = tripartite_loss(logits.log_softmax(-1), score, score_std, q, mu, sigma, groups)
    assert again["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_tripartite_single_group_batch_has_zero_cross_term():
    logits, score, score_std, q, mu, sigma, _ = _batch()
    out = tripartite_loss(logits, score, score_std, q, mu, sigma, ["p"] * 4)
    assert out["loss_cross"].item() == 0.0 and out["loss_within"].item() > 0
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all()


def _peer_inputs(logits):
    """What the peers' losses read besides the level logits: full-vocabulary logits at the answer position (the
    level logits and 20 other tokens) and the answer-prefix NLL (its values are tested in test_peer_baselines.py)."""
    vocab = torch.cat([logits, torch.randn(len(logits), 20, generator=torch.Generator().manual_seed(1))], dim=1)
    return {"vocab_logits": vocab, "answer_nll": torch.full((len(logits),), 3.0),
            "answer_tokens": torch.full((len(logits),), 9)}


def test_compute_objective_switch():
    logits, score, score_std, q, mu, sigma, groups = _batch()
    regression = torch.tensor([2.0, 3.0, 4.5, 1.0], requires_grad=True)
    onehot = torch.as_tensor(onehot_label(mu.numpy()), dtype=torch.float32)
    labels = {"fuscore": q, "fuscore_mos_std_only": q, "deqa": q, "qalign": onehot, "nearest_onehot": onehot,
              "scalar": q}
    expected_terms = {
        "fuscore": {"loss", "loss_dist", "loss_within", "loss_cross"},
        "fuscore_mos_std_only": {"loss", "loss_dist", "loss_within", "loss_cross"},
        "deqa": {"loss", "loss_kl", "loss_ce_answer", "loss_fidelity"},
        "qalign": {"loss", "loss_ce_level", "loss_ce_answer"},
        "nearest_onehot": {"loss", "loss_ce"},
        "scalar": {"loss", "loss_mse"},
    }
    outs = {}
    for objective in OBJECTIVES:
        outs[objective] = compute_objective(
            objective, level_logits=logits, score=score, score_std=score_std, regression=regression,
            soft_label=labels[objective], mu=mu, sigma=sigma, group_ids=groups, **_peer_inputs(logits),
        )
        assert set(outs[objective]) == expected_terms[objective]
        assert outs[objective]["loss"].requires_grad
    assert outs["fuscore_mos_std_only"]["loss"].item() == pytest.approx(outs["fuscore"]["loss"].item())

    log_p = logits.detach().log_softmax(-1)
    ce = -sum(log_p[i, int(onehot[i].argmax())].item() for i in range(4)) / 4.0
    assert outs["nearest_onehot"]["loss_ce"].item() == pytest.approx(ce, rel=1e-6)
    mse = sum((r - m) ** 2 for r, m in zip(regression.tolist(), mu.tolist())) / 4.0
    assert outs["scalar"]["loss_mse"].item() == pytest.approx(mse, rel=1e-6)

    with pytest.raises(ValueError):
        compute_objective("nearest_onehot", level_logits=logits, soft_label=q)  # not one-hot
    with pytest.raises(ValueError):
        compute_objective("fuscore", level_logits=logits, score=score, soft_label=q, mu=mu, sigma=sigma)
    with pytest.raises(ValueError):
        compute_objective("ranking", level_logits=logits)


def test_registry_records_say_what_each_objective_needs():
    import dataclasses
    from types import SimpleNamespace

    records = {name: objectives.get_objective(name) for name in OBJECTIVES}
    assert set(OBJECTIVES) == set(objectives.OBJECTIVE_REGISTRY) == {
        "fuscore", "qalign", "deqa", "fuscore_mos_std_only", "nearest_onehot", "scalar"}
    assert [name for name, record in records.items() if record.regression_head] == ["scalar"]
    # The peers read the full-vocabulary softmax, train on randomly drawn batches and need the answer tokens.
    peers = {"qalign", "deqa"}
    assert {name for name, record in records.items() if record.softmax == "vocabulary"} == peers
    assert {name for name, record in records.items() if record.batches == "random"} == peers
    assert {name for name, record in records.items() if record.answer_tokens} == peers
    outputs = SimpleNamespace(score=torch.tensor([2.0, 3.0]), regression=torch.tensor([4.0, 1.0]))
    assert records["fuscore"].predict(outputs).tolist() == [2.0, 3.0]
    assert records["scalar"].predict(outputs).tolist() == [4.0, 1.0]
    with pytest.raises(ValueError, match="regression head"):
        records["scalar"].predict(SimpleNamespace(score=outputs.score, regression=None))
    with pytest.raises(dataclasses.FrozenInstanceError):
        records["fuscore"].softmax = "vocabulary"
    with pytest.raises(ValueError, match="Unknown objective 'ranking': choose one of fuscore, qalign, deqa, "
                                         "fuscore_mos_std_only, nearest_onehot, scalar"):
        objectives.get_objective("ranking")
    with pytest.raises(ValueError, match="softmax"):
        dataclasses.replace(records["fuscore"], softmax="full")

    # Each record's logged terms are exactly what its loss returns besides the total.
    logits, score, score_std, q, mu, sigma, groups = _batch()
    onehot = torch.as_tensor(onehot_label(mu.numpy()), dtype=torch.float32)
    for name, record in records.items():
        terms = compute_objective(name, level_logits=logits, score=score, score_std=score_std,
                                  regression=torch.zeros(4), soft_label=onehot if "onehot" in name or name == "qalign"
                                  else q, mu=mu, sigma=sigma, group_ids=groups, **_peer_inputs(logits))
        assert tuple(terms) == ("loss", *record.terms), name


def test_full_vocabulary_softmax_normalises_over_the_vocabulary():
    """softmax="vocabulary" (DeQA-Score): log p_l = logit_l - logsumexp(vocabulary); the level masses sum to < 1."""
    logits, score, score_std, q, mu, sigma, groups = _batch()
    vocab = torch.cat([logits.detach(), torch.randn(4, 20, generator=torch.Generator().manual_seed(1))], dim=1)
    terms = compute_objective("fuscore", level_logits=logits, vocab_logits=vocab, score=score, score_std=score_std,
                              soft_label=q, mu=mu, sigma=sigma, group_ids=groups, softmax="vocabulary")
    log_p = vocab.log_softmax(-1)[:, :5]
    assert log_p.exp().sum(-1).max() < 1
    expected = sum(q[i, l].item() * (math.log(q[i, l].item()) - log_p[i, l].item())
                   for i in range(4) for l in range(5) if q[i, l] > 0) / 4
    assert terms["loss_dist"].item() == pytest.approx(expected, rel=1e-5)
    restricted = compute_objective("fuscore", level_logits=logits, score=score, score_std=score_std, soft_label=q,
                                   mu=mu, sigma=sigma, group_ids=groups)
    assert terms["loss_dist"].item() > restricted["loss_dist"].item()
    with pytest.raises(ValueError, match="vocab_logits"):
        compute_objective("fuscore", level_logits=logits, score=score, score_std=score_std, soft_label=q, mu=mu,
                          sigma=sigma, group_ids=groups, softmax="vocabulary")


# ---------------------------------------------------------------------------------------------------------------------
# Pair-aware batch sampler
# ---------------------------------------------------------------------------------------------------------------------

# 10 source pairs of 2..9 images and two single-image pairs.
SIZES = {"p0": 9, "p1": 8, "p2": 5, "p3": 4, "p4": 4, "p5": 3, "p6": 2, "p7": 2, "p8": 7, "p9": 6, "s0": 1, "s1": 1}
GROUP_IDS = [name for name, size in SIZES.items() for _ in range(size)]


def _check_batches(batches, group_ids, pairs_per_batch, images_per_pair, exact_pairs):
    singles = {g for g, n in Counter(group_ids).items() if n == 1}
    for batch in batches:
        assert len(batch) == len(set(batch)), "an image repeated inside a batch"
        groups = [group_ids[i] for i in batch]
        counts = Counter(g for g in groups if g not in singles)
        assert sum(1 for n in counts.values() if n >= 2) >= 2
        assert all(2 <= n <= images_per_pair for n in counts.values())
        if exact_pairs:
            assert len(counts) == pairs_per_batch
        # Groups intact: each source pair's images are one contiguous run of the batch.
        paired = [g for g in groups if g not in singles]
        runs = [g for g, _ in itertools.groupby(paired)]
        assert len(runs) == len(set(runs))


@pytest.mark.parametrize("drop_last", [True, False])
def test_sampler_invariants_and_coverage(drop_last):
    sampler = PairGroupedBatchSampler(GROUP_IDS, pairs_per_batch=3, images_per_pair=4, seed=5, drop_last=drop_last)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    _check_batches(batches, GROUP_IDS, 3, 4, exact_pairs=drop_last)
    seen = {i for batch in batches for i in batch}
    by_group = {g: {i for i, x in enumerate(GROUP_IDS) if x == g} for g in SIZES}
    # Pairs with fewer than M images come whole; pairs with more than M are seen entirely (several chunks).
    for g in ["p5", "p6", "p7"]:
        assert any(set(batch) >= by_group[g] for batch in batches)
    if not drop_last:
        assert seen == set(range(len(GROUP_IDS)))  # nothing dropped, single-image pairs ride along
    assert by_group["s0"] <= seen and by_group["s1"] <= seen


def test_sampler_is_deterministic_per_epoch_and_reshuffles():
    a = PairGroupedBatchSampler(GROUP_IDS, 3, 4, seed=11)
    b = PairGroupedBatchSampler(GROUP_IDS, 3, 4, seed=11)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b) and len(list(b)) == len(a)
    assert list(PairGroupedBatchSampler(GROUP_IDS, 3, 4, seed=12)) != list(PairGroupedBatchSampler(GROUP_IDS, 3, 4,
                                                                                                   seed=11))
    # Resume: skipping the first k batches of a fresh sampler yields the rest of the same epoch.
    a.set_epoch(2)
    assert list(itertools.islice(iter(a), 2, None)) == a.epoch_batches(2)[2:]


def test_sampler_shards_whole_batches_between_processes():
    """The one sharding mechanism is accelerate's: `BatchSamplerShard` (what `accelerator.prepare` wraps the batch
    sampler in) hands each process whole batches, disjoint, and together the whole epoch."""
    from accelerate.data_loader import BatchSamplerShard

    group_ids = [f"pair{g}" for g in range(9) for _ in range(8)]  # 18 chunks of 4, P = 3 -> 6 batches
    reference = PairGroupedBatchSampler(group_ids, 3, 4, seed=3)
    reference.set_epoch(1)
    shards = [BatchSamplerShard(reference, num_processes=3, process_index=r) for r in range(3)]
    per_rank = [list(shard) for shard in shards]
    assert [len(b) for b in per_rank] == [2, 2, 2] == [len(s) for s in shards]
    images = [i for batches in per_rank for batch in batches for i in batch]
    assert len(images) == len(set(images)) == len(group_ids)  # disjoint, and together the whole epoch
    assert sorted(map(tuple, sum(per_rank, []))) == sorted(map(tuple, reference))
    assert per_rank[1] == reference.epoch_batches(1)[1::3], "round-robin, whole batches"
    for batches in per_rank:
        _check_batches(batches, group_ids, 3, 4, exact_pairs=True)

    # 6 batches on 4 processes: with drop_last the incomplete last round is dropped; without it accelerate's
    # even_batches fills that round up with the epoch's first batches. Every process gets the same count.
    dropped = [list(BatchSamplerShard(reference, num_processes=4, process_index=r)) for r in range(4)]
    assert [len(batches) for batches in dropped] == [1, 1, 1, 1]
    keep = PairGroupedBatchSampler(group_ids, 3, 4, seed=3, drop_last=False)
    padded = [list(BatchSamplerShard(keep, num_processes=4, process_index=r)) for r in range(4)]
    assert [len(batches) for batches in padded] == [2, 2, 2, 2]
    for batches in dropped + padded:
        _check_batches(batches, group_ids, 3, 4, exact_pairs=True)
    assert not hasattr(reference, "num_replicas") and "rank" not in PairGroupedBatchSampler.__init__.__code__.co_varnames


def test_sampler_dominant_pair_is_capped():
    group_ids = ["big"] * 40 + ["a", "a", "b", "b"]
    sampler = PairGroupedBatchSampler(group_ids, 2, 2, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2
    _check_batches(batches, group_ids, 2, 2, exact_pairs=True)


def test_sampler_rejects_impossible_settings():
    with pytest.raises(ValueError):
        PairGroupedBatchSampler(["a", "a", "b", "c"], 2, 2)  # a single pair with two images
    with pytest.raises(ValueError):
        PairGroupedBatchSampler(GROUP_IDS, 1, 4)
    with pytest.raises(ValueError):
        PairGroupedBatchSampler(GROUP_IDS, 3, 1)  # M = 1: no within-pair term


def test_the_objectives_package_imports_what_its_header_allows():
    """fuscore/objectives/ is pure math: from the project it takes only the level values of the Hub layer, never the
    training package, the scripts or the data and metrics packages (its `__init__` says so)."""
    import ast
    from pathlib import Path

    folder = Path(objectives.__file__).parent
    project = {"fuscore", "fuscore_data", "fuscore_metrics", "modeling_fuscore", "acceleration_fuscore",
               "processing_fuscore", "image_utils_fuscore", "scoring_fuscore", "comparison_fuscore",
               "attribution_fuscore", "pipeline_fuscore", "trainer_fuscore", "configuration_fuscore", "app", "handler"}
    found = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            found |= {name for name in names if name.split(".")[0] in project}
    assert found == {"configuration_fuscore"}


def test_the_package_exports_every_public_name_of_its_modules():
    import fuscore.objectives as objectives

    missing = [name for name in objectives.__all__ if not hasattr(objectives, name)]
    assert not missing, f"fuscore.objectives.__all__ names {missing}, which the package does not import"


def test_mos_standard_error():
    """mos_std / sqrt(raters), in the input's kind; missing spreads and bad rater counts are refused."""
    np.testing.assert_allclose(objectives.mos_standard_error(np.array([1.2, 0.0]), 9), [0.4, 0.0])
    assert objectives.mos_standard_error(0.8, 4) == pytest.approx(0.4)
    tensor = objectives.mos_standard_error(torch.tensor([2.0]), 16)
    assert isinstance(tensor, torch.Tensor) and tensor.item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="missing"):
        objectives.mos_standard_error([1.0, float("nan")], 24)
    with pytest.raises(ValueError, match="non-negative"):
        objectives.mos_standard_error([-0.1], 24)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="num_raters"):
            objectives.mos_standard_error([1.0], bad)
