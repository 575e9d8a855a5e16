"""The pairwise ranking of `fuscore rank`: Davidson's tie-aware Bradley-Terry fit over all within-pair comparisons,
beside the mean-score ranking (fuscore.ranking, fuscore.cli)."""

import csv
import math

import numpy as np
import pytest
from PIL import Image

from fuscore.cli import main
from fuscore.pairwise import rank_methods_pairwise
from fuscore.ranking import pairwise_ranking, write_ranking_report
from fuscore.sources import BenchmarkItem
from fuscore.tiny import build_tiny_model


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# With a spread of 0 every comparison has one sure outcome: a score higher by more than the tie band wins, one within
# it ties. So hand-chosen scores give hand-counted wins and ties.
CYCLE = {  # scene -> scores of A, B, C
    "s1": (4.0, 3.0, 2.0),  # A > B > C
    "s2": (2.0, 4.0, 3.0),  # B > C > A
    "s3": (3.0, 2.0, 4.0),  # C > A > B
    "s4": (3.0, 3.03, 2.97),  # all within the band of 0.1: three ties
}


def _benchmark(table):
    pairs, methods, scores = [], [], []
    for scene, values in table.items():
        for method, score in zip("ABC", values):
            if score is not None:
                pairs.append(scene)
                methods.append(method)
                scores.append(score)
    return pairs, methods, np.array(scores)


def test_a_cycle_with_ties_gives_equal_strengths_and_the_tie_parameter_by_hand():
    # Each pair of methods: 2 wins to 1 and one tie. By symmetry the strengths are equal, so
    # P(tie) = nu / (2 + nu) = 1/4: nu = 2/3.
    pairs, methods, scores = _benchmark(CYCLE)
    ranking = pairwise_ranking(scores, np.zeros_like(scores), pairs, methods, tie_band=0.1)
    assert ranking.problem == "" and ranking.fit.finite and ranking.fit.converged
    assert ranking.fit.n_comparisons == pytest.approx(12)
    assert ranking.fit.strength == pytest.approx([0, 0, 0], abs=1e-6)
    assert ranking.fit.tie == pytest.approx(2 / 3, abs=1e-6)
    # Without the band the last scene's differences decide: B > A > C there, and B comes out first.
    plain = pairwise_ranking(scores, np.zeros_like(scores), pairs, methods, tie_band=0.0)
    assert plain.fit.tie == 0.0 and [name for name, _ in plain.fit.ranking()] == ["B", "A", "C"]


def test_two_methods_by_hand():
    # A beats B on 6 scenes, ties on 4, loses on 2: P(A) = 1/2, P(tie) = 1/3, P(B) = 1/6 exactly (saturated), so
    # strength_A - strength_B = log(6 / 2) and nu = 4 / sqrt(6 * 2).
    table = {f"w{i}": (3.5, 3.0, None) for i in range(6)}
    table.update({f"t{i}": (3.0, 3.02, None) for i in range(4)})
    table.update({f"l{i}": (2.0, 3.0, None) for i in range(2)})
    pairs, methods, scores = _benchmark(table)
    fit = pairwise_ranking(scores, np.zeros_like(scores), pairs, methods, tie_band=0.1).fit
    assert fit.strength[0] - fit.strength[1] == pytest.approx(math.log(3), abs=1e-6)
    assert fit.tie == pytest.approx(4 / math.sqrt(12), abs=1e-6)


def test_what_cannot_be_fitted_is_said():
    one = pairwise_ranking([3.0, 3.5], [0.5, 0.5], ["s1", "s2"], ["A", "A"])
    assert one.fit is None and "one method" in one.problem
    apart = pairwise_ranking([3.0, 3.5, 2.0, 2.5], [0.5] * 4, ["s1", "s1", "s2", "s2"], ["A", "B", "C", "D"])
    assert apart.fit is None and "never compared" in apart.problem


def _items(pairs, methods, folder):
    image = folder / "blank.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    return [BenchmarkItem(pair=pair, method=method, fused=str(image)) for pair, method in zip(pairs, methods)]


def test_the_report_puts_the_pairwise_ranking_beside_the_mean_ranking(tmp_path):
    # The cycle plus one scene where A wins everything: A is first by strength and by mean.
    table = dict(CYCLE, s5=(4.0, 2.0, 2.5))
    pairs, methods, scores = _benchmark(table)
    stds = np.full_like(scores, 0.3)
    probs = np.full((len(scores), 5), 0.2)
    report = write_ranking_report(tmp_path / "report", _items(pairs, methods, tmp_path),
                                  {"overall": {"score": scores, "std": stds, "probs": probs}},
                                  ["excellent", "good", "fair", "poor", "bad"], model_name="hand", n_resamples=20,
                                  tie_band=0.1)
    expected = rank_methods_pairwise(pairs, methods, scores, stds, tie_band=0.1)
    rows = _read_csv(tmp_path / "report" / "ranking.csv")
    assert [row["method"] for row in rows] == report.ranking.methods  # still in mean-score order
    strengths = dict(zip(expected.methods, expected.strength))
    for row in rows:
        assert float(row["bt_strength"]) == pytest.approx(strengths[row["method"]], abs=1e-5)
    by_strength = [name for name, _ in expected.ranking()]
    assert [row["method"] for row in sorted(rows, key=lambda row: int(row["bt_rank"]))] == by_strength
    assert by_strength[0] == "A"
    markdown = (tmp_path / "report" / "ranking.md").read_text()
    assert "## Pairwise ranking (tie-aware Bradley-Terry)" in markdown
    assert f"ν = {expected.tie:.3f}" in markdown and "within ±0.1" in markdown
    assert f"| 1 | A | {expected.strength[0]:+.3f} |" in markdown
    assert report.pairwise.fit.tie == pytest.approx(expected.tie)

    # Methods never compared on one scene: the mean ranking is written, the pairwise one says why it is absent.
    apart = write_ranking_report(tmp_path / "apart", _items(["s1", "s2"], ["A", "B"], tmp_path),
                                 {"overall": {"score": np.array([3.0, 4.0]), "std": np.array([0.5, 0.5]),
                                              "probs": probs[:2]}},
                                 ["excellent", "good", "fair", "poor", "bad"], model_name="hand", n_resamples=20)
    assert apart.pairwise.fit is None
    assert all(row["bt_rank"] == "" and row["bt_strength"] == "" for row in _read_csv(tmp_path / "apart" / "ranking.csv"))
    assert "Not fitted: Methods ['B'] were never compared" in (tmp_path / "apart" / "ranking.md").read_text()


def test_rank_command_end_to_end(tmp_path, capsys):
    """`fuscore rank` on a tiny model and a FOLDER/<method>/<pair>.png benchmark: the BT columns are the fit to the
    scores it wrote, and the printout shows them."""
    folder = tmp_path / "model"
    build_tiny_model("qwen2_vl", seed=9).save_pretrained(folder)
    rng = np.random.default_rng(3)
    for index, method in enumerate(("alpha", "beta", "gamma")):
        (tmp_path / "fused" / method).mkdir(parents=True)
        for pair in ("scene1", "scene2"):
            image = rng.integers(0, 256, (32, 40, 3)).astype(float) * (1 - 0.3 * index) + 40 * index
            Image.fromarray(image.astype(np.uint8)).save(tmp_path / "fused" / method / f"{pair}.png")
    output = tmp_path / "ranking"
    assert main(["rank", str(tmp_path / "fused"), "--model", str(folder), "--device", "cpu", "--dimensions", "overall",
                 "--bootstrap-resamples", "20", "--tie-band", "0.02", "--output-dir", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "BT rank" in printed and "BT strength" in printed
    scores = _read_csv(output / "scores.csv")
    expected = rank_methods_pairwise([row["pair"] for row in scores], [row["method"] for row in scores],
                                     [float(row["overall"]) for row in scores],
                                     [float(row["overall_std"]) for row in scores], tie_band=0.02)
    strengths = dict(zip(expected.methods, expected.strength))
    rows = _read_csv(output / "ranking.csv")
    assert sorted(row["method"] for row in rows) == ["alpha", "beta", "gamma"]
    for row in rows:
        # scores.csv keeps 6 significant digits: the fit to them agrees to about that.
        assert float(row["bt_strength"]) == pytest.approx(strengths[row["method"]], abs=1e-3)
        assert row["method"] in printed
    assert "within ±0.02" in (output / "ranking.md").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["rank", str(tmp_path / "fused"), "--tie-band", "-1", "--output-dir", str(tmp_path / "other")])
    assert exit_info.value.code == 2 and "--tie-band must be a number of at least 0" in capsys.readouterr().err
