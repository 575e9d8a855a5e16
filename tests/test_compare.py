"""`FuScoreForQuality.compare`: P(a better than b) from the two predicted level distributions under the Thurstone model
(DESIGN.md section 11; `comparison_fuscore`), with a tie band, batched, on a remote-code load too."""

import math

import numpy as np
import pytest
from scipy.stats import norm

import comparison_fuscore
from comparison_fuscore import PairwiseOutcome
from conftest import run_clean_python


def _images(count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8) for i in range(count)]


def _thurstone(a, b, band=0.0):
    sigma = math.sqrt(a["std"] ** 2 + b["std"] ** 2)
    difference = a["score"] - b["score"]
    return norm.cdf((difference - band) / sigma), norm.cdf((-difference - band) / sigma)


def test_compare_is_the_thurstone_formula_of_the_predicted_distributions(tiny_models):
    model = tiny_models["qwen3_vl"]
    a, b = _images(2)
    details = model.score([a, b], return_details=True)
    first, second = details[0]["overall"], details[1]["overall"]
    assert first["score"] != second["score"]
    outcome = model.compare(a, b)
    assert isinstance(outcome, PairwiseOutcome) and all(isinstance(value, float) for value in outcome)
    a_better, b_better = _thurstone(first, second)
    assert outcome.a_better == pytest.approx(a_better, abs=1e-6) and outcome.tie == 0.0
    assert outcome.b_better == pytest.approx(b_better, abs=1e-6)
    banded = model.compare(a, b, tie_band=0.05)
    a_better, b_better = _thurstone(first, second, 0.05)
    assert banded.a_better == pytest.approx(a_better, abs=1e-6) and banded.b_better == pytest.approx(b_better, abs=1e-6)
    assert banded.tie == pytest.approx(1 - a_better - b_better, abs=1e-6) and banded.tie > 0
    sharpness = model.compare(a, b, dimension="sharpness")  # another dimension: its own scores
    expected = model.score([a, b], dimensions="sharpness", return_details=True)
    assert sharpness.a_better == pytest.approx(_thurstone(expected[0]["sharpness"], expected[1]["sharpness"])[0], abs=1e-6)


def test_symmetry_an_image_against_itself_and_the_tie_band(tiny_models):
    model = tiny_models["qwen2_vl"]
    a, b = _images(2, seed=1)
    for band in (0.0, 0.2):
        ab, ba = model.compare(a, b, tie_band=band), model.compare(b, a, tie_band=band)
        assert ab.a_better + ab.tie + ba.a_better == pytest.approx(1.0, abs=1e-12)  # P(a, b) + P(b, a) = 1 without ties
        assert ab.a_better == ba.b_better and ab.tie == ba.tie
        assert sum(ab) == pytest.approx(1.0, abs=1e-12)
        itself = model.compare(a, a.copy(), tie_band=band)  # the same pixels in another array: the same image
        assert itself.a_better == itself.b_better
        assert itself.a_better == (0.5 if band == 0 else pytest.approx((1 - itself.tie) / 2, abs=1e-12))
    assert model.compare(a, a) == (0.5, 0.0, 0.5)


def test_batched_equals_one_by_one(tiny_models):
    model = tiny_models["qwen2_vl"]
    a, b, c = _images(3, seed=2)
    batched = model.compare([a, b, c, a], [b, c, a, a], tie_band=0.1, batch_size=3)
    assert isinstance(batched.a_better, list) and len(batched.a_better) == 4
    for index, (x, y) in enumerate(((a, b), (b, c), (c, a), (a, a))):
        alone = model.compare(x, y, tie_band=0.1)
        for field in PairwiseOutcome._fields:
            assert getattr(batched, field)[index] == pytest.approx(getattr(alone, field), abs=1e-6), (index, field)
    assert batched.a_better[3] == batched.b_better[3]


def test_each_distinct_image_is_scored_once_and_the_formula_on_hand_values(monkeypatch):
    """The engine is replaced by one that returns hand-chosen scores and spreads: what `compare_images` makes of them
    is the formula, and it asks for every distinct (image, sources) once."""
    hand = {"a.png": (3.5, 0.6), "b.png": (3.0, 0.8), "c.png": (3.0, 0.0), "d.png": (4.0, 0.0)}
    calls = []

    def fake_engine(model, processor, fused, ir, vis, dimensions, **kwargs):
        calls.append((list(fused), ir, vis, dimensions))
        return {dimensions[0]: {"score": [hand[name][0] for name in fused], "std": [hand[name][1] for name in fused]}}

    class Processor:
        input_mode = "fused"

        @staticmethod
        def resolve_dimensions(dimensions, argument="dimensions"):
            return [dimensions] if isinstance(dimensions, str) else list(dimensions)

    monkeypatch.setattr(comparison_fuscore, "score_images", fake_engine)
    outcome = comparison_fuscore.compare_images(None, Processor(), ["a.png", "b.png", "a.png", "c.png", "d.png"],
                                                ["b.png", "a.png", "a.png", "d.png", "c.png"], tie_band=0.5)
    assert len(calls) == 1 and calls[0][0] == ["a.png", "b.png", "c.png", "d.png"] and calls[0][1:] == (None, None, ["overall"])
    # sigma = sqrt(0.6^2 + 0.8^2) = 1, difference 0.5, band 0.5: Phi(0), Phi(1) - Phi(0), Phi(-1).
    assert outcome.a_better[0] == pytest.approx(0.5, abs=1e-12)
    assert outcome.tie[0] == pytest.approx(norm.cdf(1) - 0.5, abs=1e-12)
    assert outcome.b_better[0] == pytest.approx(norm.cdf(-1), abs=1e-12)
    assert (outcome.a_better[1], outcome.tie[1], outcome.b_better[1]) == pytest.approx(
        (norm.cdf(-1), norm.cdf(1) - 0.5, 0.5), abs=1e-12)
    itself = 0.5 / (0.6 * math.sqrt(2))  # a against itself: sigma = sqrt(2) 0.6
    assert outcome.tie[2] == pytest.approx(norm.cdf(itself) - norm.cdf(-itself), abs=1e-12)
    assert outcome.a_better[2] == outcome.b_better[2] == pytest.approx(norm.cdf(-itself), abs=1e-12)
    assert (outcome.a_better[3], outcome.b_better[3]) == (0.0, 1.0)  # two one-level distributions: no NaN
    assert (outcome.a_better[4], outcome.b_better[4]) == (1.0, 0.0)

    # A model that reads the sources: the same fused file with other sources is another image.
    Processor.input_mode = "fused_ir_vis"
    calls.clear()
    comparison_fuscore.compare_images(None, Processor(), ["a.png", "a.png"], ["b.png", "b.png"], ir=["ir1", "ir2"],
                                      vis="vis", ir_b="ir1")
    assert calls[0][0] == ["a.png", "a.png", "b.png"]
    assert calls[0][1] == ["ir1", "ir2", "ir1"] and calls[0][2] == ["vis"] * 3


def test_compare_refuses_what_it_cannot_compare(tiny_models):
    model = tiny_models["qwen2_vl"]
    a, b = _images(2)
    with pytest.raises(ValueError, match="same length"):
        model.compare([a, b], [a])
    with pytest.raises(ValueError, match="one image for a and one for b"):
        model.compare([a], b)
    with pytest.raises(ValueError, match="tie_band"):
        model.compare(a, b, tie_band=-0.1)
    with pytest.raises(ValueError, match="one dimension"):
        model.compare(a, b, dimension="all")
    with pytest.raises(ValueError, match="Unknown rating dimension"):
        model.compare(a, b, dimension="colourfulness")


def test_sources_of_a_fused_ir_vis_model():
    from fuscore.tiny import build_tiny_model

    model = build_tiny_model("qwen2_vl", input_mode="fused_ir_vis", seed=4)
    a, b, ir, vis = _images(4, seed=5)
    ir, vis = ir[: a.shape[0]], vis[: a.shape[0]]
    b = b[: a.shape[0]]
    outcome = model.compare(a, b, ir=ir, vis=vis)
    details = model.score([a, b], ir=[ir, ir], vis=[vis, vis], return_details=True)
    assert outcome.a_better == pytest.approx(_thurstone(details[0]["overall"], details[1]["overall"])[0], abs=1e-6)


@pytest.mark.slow
def test_compare_and_explain_on_a_remote_code_load(tiny_models, tmp_path):
    """A folder saved by save_pretrained carries the comparison and attribution files: a Hub user's process (no
    FuScore module importable) compares and explains with the folder's own code, as the checkout's classes do."""
    model = tiny_models["qwen2_5_vl"]
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    assert {"comparison_fuscore.py", "attribution_fuscore.py"} <= {path.name for path in folder.iterdir()}
    a, b = _images(2, seed=7)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    result = run_clean_python(f"""
        import json
        import numpy as np
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        a, b = np.load({str(tmp_path / "a.npy")!r}), np.load({str(tmp_path / "b.npy")!r})
        outcome = model.compare([a, b], [b, b], tie_band=0.1)
        saliency = model.explain(a, samples=2)
        print(json.dumps({{"outcome": [list(values) for values in outcome], "module": type(model).__module__,
                           "saliency": saliency.tolist(), "dtype": str(saliency.dtype)}}))
        """, tmp_path)
    assert result["module"].startswith("transformers_modules.")
    expected = model.compare([a, b], [b, b], tie_band=0.1)
    np.testing.assert_allclose(result["outcome"], [list(values) for values in expected], atol=1e-5)
    assert result["outcome"][0][1] == result["outcome"][2][1]  # b against itself: a coin flip
    saliency = np.asarray(result["saliency"])
    assert result["dtype"] == "float32" and saliency.shape == a.shape[:2]
    np.testing.assert_allclose(saliency, model.explain(a, samples=2), atol=1e-4)
