"""The peer baselines against the peers' published definitions, derived here independently of the code under test.

* Q-Align: one-hot on the level whose bin of equal fifths of the score range holds the score; on the level scale
  [1, 5] the upper bin edges are 1.8, 2.6, 3.4, 4.2 (and 5), a score on an edge belongs to the lower level, and a
  score within 1e-8 above an edge too (DeQA-Score's `get_level`, build_soft_labels/gen_soft_label.py, which
  re-implements Q-Align's binning; Q-Align itself ships only the labelled JSON files).
* DeQA-Score (build_soft_labels/gen_soft_label.py, the "cdf" density its config uses for SPAQ):
  `p_l = Phi(l + 0.5; mu, std) - Phi(l - 0.5; mu, std)` for l = 5..1 (no tail folding),
  `A = sum p`, `B = sum p_l l`, `alpha = (mu - 3) / (B - 3 A + 1e-9)`, `beta = (1 - alpha A) / 5`,
  `q = max(alpha p + beta, 0)` (not renormalised); the two-level split when `std < 0.2` or `|q . v - mu| > 0.1`.
  The "pdf" density (its config for KonIQ and KADID) uses `p_l = phi(l; mu, std)` instead.

The reference values below are computed in this file from those formulas (scipy's `norm`) or written out as
literals worked out by hand; nothing here calls the label code to produce an expected value.
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from fuscore.objectives import label_for_objective


ASCENDING = (1.0, 2.0, 3.0, 4.0, 5.0)
MODEL_ORDER = (5.0, 4.0, 3.0, 2.0, 1.0)  # excellent..bad, the order FuScore models keep their level words in
QALIGN_UPPER_EDGES = np.array([1.8, 2.6, 3.4, 4.2])  # of levels 1..4 on [1, 5]; level 5 takes the rest


# ---------------------------------------------------------------------------------------------------------------------
# References, written from the peers' definitions
# ---------------------------------------------------------------------------------------------------------------------


def qalign_reference_level(mu: float) -> int:
    """Q-Align's level (1..5) of a score on [1, 5]: the bin of equal fifths, edges going to the lower level."""
    # np.digitize(right=True): index i with edges[i-1] < mu <= edges[i].
    return int(np.digitize(mu, QALIGN_UPPER_EDGES, right=True)) + 1


def deqa_reference(mu: float, std: float, density: str = "cdf") -> np.ndarray:
    """DeQA-Score's soft label in excellent..bad order (its own order), straight from its definition."""
    values = np.array(MODEL_ORDER)
    if std < 0.2:
        return two_level_reference(mu)
    if density == "cdf":
        p = norm.cdf(values + 0.5, mu, std) - norm.cdf(values - 0.5, mu, std)
    else:
        p = norm.pdf(values, mu, std)
    big_a, big_b = p.sum(), p @ values
    alpha = (mu - 3.0) / (big_b - 3.0 * big_a + 1e-9)
    beta = (1.0 - alpha * big_a) / 5.0
    q = np.maximum(alpha * p + beta, 0.0)
    if abs(q @ values - mu) > 0.1:
        return two_level_reference(mu)
    return q


def two_level_reference(mu: float) -> np.ndarray:
    """Mass on floor(mu) and ceil(mu) by linear interpolation, excellent..bad order (one-hot on an exact level)."""
    q = np.zeros(5)
    lower = min(int(np.floor(mu)), 4)
    frac = mu - lower
    q[5 - lower] = 1.0 - frac  # level `lower` sits at index 5 - lower in 5..1 order
    q[4 - lower] += frac
    return q


MU_GRID = sorted(set(np.round(np.linspace(1.0, 5.0, 41), 10).tolist()
                     + [1.0, 1.03, 1.6, 2.95, 3.0, 3.05, 3.5, 4.3, 4.97, 5.0]))
STD_GRID = [0.0, 1e-6, 0.1, 0.1999, 0.2, 0.25, 0.35, 0.5, 0.8, 1.2, 2.0]


# ---------------------------------------------------------------------------------------------------------------------
# Q-Align
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mu, level",
    [
        (1.0, 1), (1.5, 1), (1.6, 1), (1.79, 1), (1.8, 1), (1.8 + 5e-9, 1), (1.8 + 1e-7, 2), (2.0, 2),
        (2.6, 2), (2.61, 3), (3.0, 3), (3.4, 3), (3.41, 4), (4.0, 4), (4.2, 4), (4.2 + 1e-6, 5), (4.3, 5),
        (4.5, 5), (5.0, 5),
    ],
)
def test_qalign_level_worked_out_by_hand(mu, level):
    """Literal levels: 1.6 is "bad" and 4.3 "excellent" for Q-Align (the nearest level would say poor and good)."""
    q = label_for_objective("qalign", mu=mu, level_values=ASCENDING)[0]
    expected = np.zeros(5)
    expected[level - 1] = 1.0
    np.testing.assert_array_equal(np.asarray(q), expected)


def test_qalign_on_a_grid_and_in_the_model_level_order():
    mus = np.array(MU_GRID)
    q_ascending = np.asarray(label_for_objective("qalign", mu=mus, level_values=ASCENDING)[0])
    q_model = np.asarray(label_for_objective("qalign", mu=mus, level_values=MODEL_ORDER)[0])
    for row, mu in enumerate(mus):
        level = qalign_reference_level(mu)
        assert q_ascending[row].tolist() == [1.0 if l == level else 0.0 for l in ASCENDING], mu
        assert q_model[row].tolist() == [1.0 if l == level else 0.0 for l in MODEL_ORDER], mu


def test_qalign_differs_from_the_nearest_level_for_a_fifth_of_the_scale():
    """The controlled variant `nearest_onehot` keeps today's rounding: on a fine uniform grid they disagree on
    [1.5, 1.8], [2.5, 2.6], (3.4, 3.5), (4.2, 4.5): 0.3 + 0.1 + 0.1 + 0.3 = 0.8 of 4, a fifth."""
    mus = np.linspace(1.0, 5.0, 40001)
    qalign = np.asarray(label_for_objective("qalign", mu=mus, level_values=ASCENDING)[0]).argmax(-1)
    nearest = np.asarray(label_for_objective("nearest_onehot", mu=mus, level_values=ASCENDING)[0]).argmax(-1)
    assert abs(np.mean(qalign != nearest) - 0.2) < 1e-3
    assert nearest[np.searchsorted(mus, 4.3)] == 3 and qalign[np.searchsorted(mus, 4.3)] == 4


def test_qalign_keeps_tensors_and_refuses_scores_off_the_scale():
    q = label_for_objective("qalign", mu=torch.tensor([1.8, 4.3], dtype=torch.float64), level_values=ASCENDING)[0]
    assert isinstance(q, torch.Tensor)
    assert q.argmax(-1).tolist() == [0, 4]
    with pytest.raises(ValueError, match=r"\[1.0, 5.0\]"):
        label_for_objective("qalign", mu=5.5)


# ---------------------------------------------------------------------------------------------------------------------
# DeQA-Score
# ---------------------------------------------------------------------------------------------------------------------


def test_deqa_label_on_a_grid_of_mu_and_std():
    mus = np.array([mu for mu in MU_GRID for _ in STD_GRID])
    stds = np.array([std for _ in MU_GRID for std in STD_GRID])
    q, sigma = label_for_objective("deqa", mu=mus, mos_std=stds, level_values=MODEL_ORDER)
    q = np.asarray(q)
    expected = np.stack([deqa_reference(mu, std) for mu, std in zip(mus, stds)])
    np.testing.assert_allclose(q, expected, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(sigma), stds)  # the raw std, no floor: the fidelity term reads it


def test_deqa_label_worked_out_by_hand():
    """Four cases computed by hand from the formulas (values rounded to 1e-6)."""
    q = np.asarray(label_for_objective("deqa", mu=[4.0, 3.0, 1.0, 3.7], mos_std=[0.5, 0.5, 0.5, 0.1],
                                       level_values=MODEL_ORDER)[0])
    # mu = 4, std = 0.5: p = (0.157305, 0.682689, 0.157305, 0.001350, 0.000000); alpha = 1.004070,
    # beta = -0.000542: the last level clips to 0 and the row sums to 1.000542 (no renormalisation).
    np.testing.assert_allclose(q[0], [0.157403, 0.684923, 0.157403, 0.000813, 0.0], atol=1e-6)
    assert q[0].sum() == pytest.approx(1.000542, abs=1e-6)
    # mu = 3 exactly: alpha = 0 / (B - 3A + 1e-9) = 0, so q = beta = 1/5 everywhere (mean 3, accepted).
    np.testing.assert_allclose(q[1], [0.2] * 5, atol=1e-12)
    # mu = 1, std = 0.5: the corrected mean misses by 0.247 > 0.1: the two-level split, one-hot on "bad".
    np.testing.assert_array_equal(q[2], [0, 0, 0, 0, 1])
    # std = 0.1 < 0.2: the two-level split, 0.7 on "good" and 0.3 on "fair".
    np.testing.assert_allclose(q[3], [0, 0.7, 0.3, 0, 0], atol=1e-12)


@pytest.mark.parametrize("mu", [1.0, 3.0, 5.0, 1.8, 2.6, 3.4, 4.2, 2.5])
@pytest.mark.parametrize("std", [0.0, 1e-9, 0.19999999, 0.2, 0.5, 2.0])
def test_deqa_label_edge_cases(mu, std):
    q = np.asarray(label_for_objective("deqa", mu=mu, mos_std=std, level_values=MODEL_ORDER)[0])
    np.testing.assert_allclose(q, deqa_reference(mu, std), rtol=0, atol=1e-9)
    if std < 0.2:
        np.testing.assert_allclose(q, two_level_reference(mu), atol=1e-12)


def test_deqa_label_near_three_follows_the_peers_1e9_guard():
    """Within ~1e-8 of mu = 3 DeQA's `+ 1e-9` in alpha's denominator dominates and the label tends to uniform."""
    mus = np.array([3.0 - 1e-10, 3.0 + 1e-10, 3.0 + 1e-6, 2.9])
    q = np.asarray(label_for_objective("deqa", mu=mus, mos_std=0.5, level_values=MODEL_ORDER)[0])
    expected = np.stack([deqa_reference(mu, 0.5) for mu in mus])
    np.testing.assert_allclose(q, expected, rtol=0, atol=1e-7)
    assert q[0].max() - q[0].min() < 0.1 and q[2].max() > 0.6


def test_deqa_label_ascending_order_is_the_same_label_reversed():
    mus, stds = np.array([1.3, 2.2, 3.9, 4.6]), np.array([0.3, 0.6, 0.25, 0.9])
    q_model = np.asarray(label_for_objective("deqa", mu=mus, mos_std=stds, level_values=MODEL_ORDER)[0])
    q_ascending = np.asarray(label_for_objective("deqa", mu=mus, mos_std=stds, level_values=ASCENDING)[0])
    np.testing.assert_allclose(q_ascending, q_model[:, ::-1], atol=0)


def test_deqa_label_ignores_sub_scores_but_lets_them_fill_a_missing_mu():
    subs = [[2.0, 4.0, 3.0, 3.4]]
    with_subs = np.asarray(label_for_objective("deqa", mu=[3.3], sub_scores=subs, mos_std=[0.4])[0])
    without = np.asarray(label_for_objective("deqa", mu=[3.3], mos_std=[0.4])[0])
    np.testing.assert_array_equal(with_subs, without)
    filled = np.asarray(label_for_objective("deqa", mu=[float("nan")], sub_scores=subs, mos_std=[0.4],
                                            level_values=MODEL_ORDER)[0])
    np.testing.assert_allclose(filled[0], deqa_reference(3.1, 0.4), atol=1e-9)


def test_deqa_without_a_rater_std_is_the_two_level_split():
    q, sigma = label_for_objective("deqa", mu=[2.25], mos_std=None, level_values=MODEL_ORDER)
    np.testing.assert_allclose(np.asarray(q)[0], [0, 0, 0.25, 0.75, 0], atol=1e-12)
    assert np.asarray(sigma).tolist() == [0.0]


def test_deqa_pdf_density():
    from fuscore.objectives import deqa_soft_label

    mus, stds = np.array([1.7, 3.0, 3.6, 4.4, 4.9]), np.array([0.6, 0.8, 0.3, 0.45, 1.1])
    q, _ = deqa_soft_label(mus, stds, level_values=MODEL_ORDER, density="pdf")
    expected = np.stack([deqa_reference(mu, std, density="pdf") for mu, std in zip(mus, stds)])
    np.testing.assert_allclose(np.asarray(q), expected, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="density"):
        deqa_soft_label(mus, stds, density="histogram")


# ---------------------------------------------------------------------------------------------------------------------
# Controlled variants keep honest names
# ---------------------------------------------------------------------------------------------------------------------


def test_old_baseline_names_are_gone():
    with pytest.raises(ValueError, match="nearest_onehot"):
        label_for_objective("onehot", mu=3.0)


def test_fuscore_mos_std_only_is_the_fuscore_label_without_sub_score_spread():
    from fuscore.objectives import fuscore_soft_label

    mus, stds = np.array([1.4, 2.7, 3.2, 4.8]), np.array([0.1, 0.5, 0.9, 0.3])
    subs = np.array([[1.0, 2.0, 1.5, 1.2], [2.0, 3.5, 2.5, 3.0], [3.0, 3.0, 3.5, 3.2], [5.0, 4.5, 4.9, 4.8]])
    q, sigma = label_for_objective("fuscore_mos_std_only", mu=mus, sub_scores=subs, mos_std=stds)
    expected_q, expected_sigma = fuscore_soft_label(mus, None, stds)
    np.testing.assert_array_equal(np.asarray(q), expected_q)
    np.testing.assert_array_equal(np.asarray(sigma), np.maximum(stds, 0.2))


def test_nearest_onehot_rounds_half_up():
    q = np.asarray(label_for_objective("nearest_onehot", mu=[1.49, 1.5, 2.5, 4.3, 4.5], level_values=ASCENDING)[0])
    assert q.argmax(-1).tolist() == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------------------------------
# The peers' losses, from their training code's formulas (math.erf, explicit sums)
# ---------------------------------------------------------------------------------------------------------------------


def _peer_batch(batch_size=6, vocab_extra=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    level_logits = torch.randn(batch_size, 5, generator=generator, dtype=torch.float64).requires_grad_()
    other_logits = torch.randn(batch_size, vocab_extra, generator=generator, dtype=torch.float64)
    vocab = torch.cat([level_logits, other_logits], dim=1)
    values = torch.tensor(MODEL_ORDER, dtype=torch.float64)
    score = level_logits.softmax(-1) @ values  # the restricted-softmax expectation, as DeQA's closeset score
    mu = torch.tensor([4.1, 2.2, 3.7, 1.4, 4.8, 3.0][:batch_size], dtype=torch.float64)
    std = torch.tensor([0.5, 0.05, 0.8, 0.3, 0.25, 0.6][:batch_size], dtype=torch.float64)
    answer_nll = torch.rand(batch_size, generator=generator, dtype=torch.float64) * 20
    answer_tokens = torch.tensor([9, 9, 9, 9, 9, 9][:batch_size])
    return level_logits, vocab, score, mu, std, answer_nll, answer_tokens


def _deqa_by_hand(vocab, score, q, mu, std, answer_nll, answer_tokens):
    """DeQA-Score's loss (modeling_mplug_owl2.py forward_pair/rating_loss/softkl_loss, train.sh weights) by hand."""
    batch_size = len(mu)
    half = batch_size // 2
    log_p = vocab.detach().log_softmax(-1)[:, :5]  # the full-vocabulary softmax at the level tokens
    eps = 1e-8
    fidelity = 0.0
    for i in range(half):
        j = i + half
        pred = 0.5 * (1 + math.erf((score[i].item() - score[j].item()) / 2))  # use_fix_std: sqrt(2 (1 + 1)) = 2
        gt_var = std[i].item() ** 2 + std[j].item() ** 2 + eps
        gt = 0.5 * (1 + math.erf((mu[i].item() - mu[j].item()) / math.sqrt(2 * gt_var)))
        fidelity += 1 - math.sqrt(pred * gt + eps) - math.sqrt((1 - pred) * (1 - gt) + eps)
    fidelity /= half
    total = 0.0
    for rows in (range(0, half), range(half, batch_size)):
        kl = sum(q[i, l] * (math.log(q[i, l]) - log_p[i, l].item()) for i in rows for l in range(5) if q[i, l] > 0)
        ce = sum(answer_nll[i].item() for i in rows) / sum(int(answer_tokens[i]) for i in rows)
        total += ce + 1.0 * kl / len(rows)  # KL with reduction="batchmean" over the half, weight_softkl 1
    return 1.0 * fidelity + 0.05 * total  # weight_rank 1, weight_next_token 0.05


def test_deqa_loss_is_deqa_scores_training_loss():
    from fuscore.objectives import compute_objective

    level_logits, vocab, score, mu, std, answer_nll, answer_tokens = _peer_batch()
    q = np.stack([deqa_reference(m, s) for m, s in zip(mu.tolist(), std.tolist())])
    terms = compute_objective("deqa", level_logits=level_logits, vocab_logits=vocab, score=score,
                              soft_label=torch.tensor(q), mu=mu, sigma=std, answer_nll=answer_nll, answer_tokens=answer_tokens,
                              fixed_std=False, lambda_within=7.0)  # neither applies: DeQA's weights, fixed std
    expected = _deqa_by_hand(vocab, score.detach(), q, mu, std, answer_nll, answer_tokens)
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-6)
    terms["loss"].backward()
    assert torch.isfinite(level_logits.grad).all() and level_logits.grad.abs().sum() > 0


def test_deqa_loss_pairs_the_two_halves_of_a_random_batch():
    """Only the pairs (i, i + B/2) count: swapping rows inside a half changes the loss, swapping the halves does not."""
    from fuscore.objectives import compute_objective, random_pair_mask

    level_logits, vocab, score, mu, std, answer_nll, answer_tokens = _peer_batch()
    q = torch.tensor(np.stack([deqa_reference(m, s) for m, s in zip(mu.tolist(), std.tolist())]))

    def loss(order):
        return compute_objective("deqa", level_logits=level_logits[order], vocab_logits=vocab[order],
                                 score=score[order], soft_label=q[order], mu=mu[order], sigma=std[order],
                                 answer_nll=answer_nll[order], answer_tokens=answer_tokens[order])["loss"].item()

    base = loss([0, 1, 2, 3, 4, 5])
    assert loss([3, 4, 5, 0, 1, 2]) == pytest.approx(base, rel=1e-12)
    assert loss([1, 0, 2, 3, 4, 5]) != pytest.approx(base, rel=1e-6)
    assert random_pair_mask(5).nonzero().tolist() == [[0, 2], [1, 3]]  # odd: the last row only serves KL and CE


def test_qalign_loss_is_the_token_mean_cross_entropy_of_the_answer():
    from fuscore.objectives import compute_objective

    level_logits, vocab, score, mu, std, answer_nll, answer_tokens = _peer_batch()
    q = np.asarray(label_for_objective("qalign", mu=mu.numpy(), level_values=MODEL_ORDER)[0])
    terms = compute_objective("qalign", level_logits=level_logits, vocab_logits=vocab, soft_label=torch.tensor(q),
                              answer_nll=answer_nll, answer_tokens=answer_tokens)
    log_p = vocab.detach().log_softmax(-1)
    level_nll = [-log_p[i, int(np.argmax(q[i]))].item() for i in range(6)]
    expected = (answer_nll.sum().item() + sum(level_nll)) / (int(answer_tokens.sum()) + 6)
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-9)
    assert terms["loss_ce_level"].item() == pytest.approx(np.mean(level_nll), rel=1e-9)
    with pytest.raises(ValueError, match="answer_nll"):
        compute_objective("qalign", level_logits=level_logits, vocab_logits=vocab, soft_label=torch.tensor(q))
    with pytest.raises(ValueError, match="one-hot"):
        compute_objective("qalign", level_logits=level_logits, vocab_logits=vocab, soft_label=torch.full((6, 5), 0.2),
                          answer_nll=answer_nll, answer_tokens=answer_tokens)


# ---------------------------------------------------------------------------------------------------------------------
# The trainer side: answer-prefix tokens and random batches
# ---------------------------------------------------------------------------------------------------------------------


def test_answer_prefix_labels_and_their_nll_match_the_full_logits():
    from fuscore.tiny import build_tiny_model
    from fuscore.training.answer_tokens import (answer_prefix_ids, answer_token_labels, answer_token_nll,
                                                capture_last_hidden_state)
    from fuscore_data.synthetic import SyntheticIVIF

    model = build_tiny_model("qwen2_vl", hidden_size=32, num_layers=1, vision_hidden_size=32, vision_depth=1)
    rows = SyntheticIVIF(image_size=40, seed=2).group(0, 3)
    samples = [model.processor.prepare_sample(row["fused"], None, None, "overall") for row in rows]
    batch = dict(model.processor.collate(samples))
    answer_ids = answer_prefix_ids(model.processor, "overall")
    text = model.processor.tokenizer.decode(answer_ids)
    assert text == model.processor.prompts["overall"]["answer"]
    labels = answer_token_labels(batch["input_ids"], batch["attention_mask"], answer_ids)
    lengths = batch["attention_mask"].sum(-1)
    for row in range(3):
        marked = (labels[row] != -100).nonzero().flatten().tolist()
        assert marked == list(range(int(lengths[row]) - len(answer_ids), int(lengths[row])))

    with capture_last_hidden_state(model) as captured:
        model(**batch)
    nll_sum, count = answer_token_nll(model, captured["hidden_states"], labels)
    assert count.tolist() == [len(answer_ids)] * 3
    with torch.no_grad():
        hidden = model.model(**batch, use_cache=False).last_hidden_state
        log_p = model.lm_head(hidden).float().log_softmax(-1)
    for row in range(3):
        end = int(lengths[row])
        expected = -sum(log_p[row, t - 1, batch["input_ids"][row, t]].item() for t in range(end - len(answer_ids), end))
        assert nll_sum[row].item() == pytest.approx(expected, rel=1e-4)

    wrong = batch["input_ids"].clone()
    wrong[1, int(lengths[1]) - 1] = answer_ids[0] + 1 if answer_ids[0] + 1 != answer_ids[-1] else answer_ids[0] + 2
    with pytest.raises(ValueError, match="Row 1"):
        answer_token_labels(wrong, batch["attention_mask"], answer_ids)


@pytest.mark.parametrize("objective", ["qalign", "deqa"])
def test_peer_objectives_train_through_the_trainer(tmp_path, objective):
    """Two steps of the trainer: random batches, the answer-prefix NLL and the full-vocabulary terms logged."""
    from torch.utils.data import RandomSampler

    import trainer_fuscore
    from fuscore.objectives import get_objective
    from fuscore.training.collator import FuScoreCollator
    from fuscore.training.loading import load_model, load_tables
    from fuscore.training.trainer import FuScoreTrainer

    argv = ["--model_name_or_path", "tiny:qwen2_vl:32x1", "--train_table", "synthetic", "--synthetic_image_size", "40",
            "--synthetic_train_scenes", "4", "--synthetic_eval_scenes", "2", "--synthetic_images_per_scene", "4",
            "--pairs_per_batch", "2", "--images_per_pair", "2", "--max_steps", "2", "--logging_steps", "1",
            "--save_strategy", "no", "--use_cpu", "true", "--disable_tqdm", "true", "--report_to", "none",
            "--per_device_eval_batch_size", "8", "--output_dir", str(tmp_path), "--objective", objective]
    model_args, data_args, training_args = trainer_fuscore.parse_arguments(argv)
    model = load_model(model_args)
    train, evaluation = load_tables(data_args, training_args.seed)
    collator = FuScoreCollator(model.processor, model.config.level_values, objective)
    trainer = FuScoreTrainer(model=model, args=training_args, train_dataset=train, eval_dataset=evaluation,
                             data_collator=collator)
    batches = trainer.get_train_dataloader().batch_sampler
    batches = getattr(batches, "batch_sampler", batches)  # a shard wraps it
    assert isinstance(batches.sampler, RandomSampler) and batches.batch_size == 4
    trainer.train()
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert set(get_objective(objective).terms) <= logged
    assert all(np.isfinite(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry)
    metrics = trainer.evaluate()
    assert np.isfinite(metrics["eval_srcc"]) and np.isfinite(metrics["eval_loss_ce_answer"])
