"""Tests of the classical IVIF metrics (fuscore_metrics.ivif_metrics).

Hand-checkable images pin each definition; VIFB's own published per-image results pin the
conventions (the VIFB images are read from ../shared/data/vifb, never copied here).
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fuscore_metrics.ivif_metrics import (
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    compute_ivif_metrics,
    compute_ivif_metrics_batch,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
VIFB_DIR = Path(os.environ.get("FUSCORE_VIFB_DIR", REPO_ROOT.parent / "shared" / "data" / "vifb"))

ROWS, COLS = 48, 56  # at least 41 x 41, the smallest size VIF accepts


def texture(seed: int = 0, low: int = 30, high: int = 220) -> np.ndarray:
    """Deterministic random texture; the [30, 220) range leaves room for +10 shifts without clipping."""
    rng = np.random.default_rng(seed)
    return rng.integers(low, high, size=(ROWS, COLS)).astype(np.uint8)


def horizontal_ramp(step: int = 3) -> np.ndarray:
    return np.tile(np.arange(COLS) * step, (ROWS, 1)).astype(np.uint8)


# ----------------------------------------------------------------------------------------
# Hand-checkable values
# ----------------------------------------------------------------------------------------
def test_constant_image_has_no_information_or_detail():
    constant = np.full((ROWS, COLS), 117, dtype=np.uint8)
    values = compute_ivif_metrics(constant, texture(1), texture(2), metrics=["EN", "AG", "SD", "SF", "EI"])
    assert values == {"EN": 0.0, "AG": 0.0, "SD": 0.0, "SF": 0.0, "EI": 0.0}


def test_fused_equal_to_both_sources():
    image = texture(3)
    values = compute_ivif_metrics(image, image, image)
    assert values["RMSE"] == 0.0
    assert values["PSNR"] == math.inf  # VIFB: 20 log10(255 / 0)
    assert values["SSIM"] == pytest.approx(2.0, abs=1e-12)  # VIFB sums SSIM(VIS, F) + SSIM(IR, F)
    assert values["CC"] == pytest.approx(1.0, abs=1e-12)
    assert values["CE"] == 0.0  # identical histograms
    assert values["VIF"] == pytest.approx(1.0, abs=1e-9)  # information with = without distortion
    # MI(X, X) = H(X) in nats, summed over the two sources.
    counts = np.bincount(image.ravel(), minlength=256) / image.size
    entropy_nats = -np.sum(counts[counts > 0] * np.log(counts[counts > 0]))
    assert values["MI"] == pytest.approx(2 * entropy_nats, rel=1e-12)
    # Qabf: with identical edges VIFB's tie rule gives strength term Tg, orientation term
    # Ta / (1 + exp(-22 (1 - 0.8))), the same at every edge pixel.
    assert values["Qabf"] == pytest.approx(0.9994 * 0.9879 / (1 + math.exp(-22 * 0.2)), rel=1e-12)


def test_fused_equal_to_one_source_gives_ssim_one_for_it():
    visible, infrared = texture(4), texture(5)
    values = compute_ivif_metrics(visible, infrared, visible, metrics=["SSIM"])
    alone = compute_ivif_metrics(visible, infrared, infrared, metrics=["SSIM"])  # SSIM(IR, F) twice
    assert values["SSIM"] == pytest.approx(1.0 + alone["SSIM"] / 2, abs=1e-12)


def test_shifted_copy():
    visible = texture(6)
    shifted = visible + np.uint8(10)
    values = compute_ivif_metrics(shifted, visible, visible, metrics=["RMSE", "PSNR", "CC", "SD", "EN", "AG", "SF"])
    pixels = ROWS * COLS
    # VIFB's error is ||S - F||_2 / (H W) = sqrt(100 H W) / (H W) for both sources.
    vifb_error = 10 / math.sqrt(pixels)
    assert values["RMSE"] == pytest.approx(vifb_error, rel=1e-12)
    assert values["PSNR"] == pytest.approx(20 * math.log10(255 / math.sqrt(vifb_error)), rel=1e-12)
    assert values["CC"] == pytest.approx(1.0, abs=1e-12)
    unshifted = compute_ivif_metrics(visible, visible, visible, metrics=["SD", "EN", "AG", "SF"])
    for name in ("SD", "EN", "AG", "SF"):
        assert values[name] == pytest.approx(unshifted[name], rel=1e-12), name


def test_ramp_gradients_by_hand():
    ramp = horizontal_ramp(step=3)
    values = compute_ivif_metrics(ramp, ramp, ramp, metrics=["AG", "SF", "EI"])
    # MATLAB gradient of a ramp: dx = 3 everywhere, dy = 0.
    assert values["AG"] == pytest.approx(ROWS * COLS * 3 / math.sqrt(2) / ((ROWS - 1) * (COLS - 1)), rel=1e-12)
    # Row differences 3 in W - 1 columns, means over H x W pixels.
    assert values["SF"] == pytest.approx(3 * math.sqrt((COLS - 1) / COLS), rel=1e-12)
    # Sobel with replicate padding: |4 * (x[j+1] - x[j-1])| = 24 inside, 12 in the two border columns.
    assert values["EI"] == pytest.approx((24 * (COLS - 2) + 12 * 2) / COLS, rel=1e-12)


def test_spatial_frequency_lays_colour_channels_side_by_side():
    ramp = horizontal_ramp(step=3)
    rgb = np.stack([ramp] * 3, axis=2)
    value = compute_ivif_metrics(rgb, rgb, rgb, metrics=["SF"])["SF"]
    # Per row: 3 (W - 1) steps of 3 inside the channels, 2 seams falling from 3 (W - 1) to 0.
    row_sum = 3 * (COLS - 1) * 9 + 2 * (3 * (COLS - 1)) ** 2
    assert value == pytest.approx(math.sqrt(ROWS * row_sum / (ROWS * 3 * COLS)), rel=1e-12)


def test_entropy_and_standard_deviation_by_hand():
    four_levels = np.repeat(np.array([0, 60, 120, 180], dtype=np.uint8), ROWS * COLS // 4).reshape(ROWS, COLS)
    two_levels = np.repeat(np.array([0, 100], dtype=np.uint8), ROWS * COLS // 2).reshape(ROWS, COLS)
    assert compute_ivif_metrics(four_levels, four_levels, four_levels, ["EN"])["EN"] == pytest.approx(2.0)
    assert compute_ivif_metrics(two_levels, two_levels, two_levels, ["SD"])["SD"] == pytest.approx(50.0)


def test_cross_entropy_by_hand():
    half = ROWS * COLS // 2
    source = np.repeat(np.array([10, 20], dtype=np.uint8), half).reshape(ROWS, COLS)
    quarter = ROWS * COLS // 4
    fused = np.repeat(np.array([10, 20, 30, 40], dtype=np.uint8), quarter).reshape(ROWS, COLS)
    # sum p_s log2(p_s / p_f) = 2 * 0.5 * log2(0.5 / 0.25) = 1 for each source.
    assert compute_ivif_metrics(fused, source, source, ["CE"])["CE"] == pytest.approx(1.0)


def test_scd_by_hand():
    visible, infrared = texture(7).astype(float), texture(8).astype(float)
    fused = (visible + infrared) / 2
    value = compute_ivif_metrics(fused, infrared, visible, ["SCD"])["SCD"]
    expected = np.corrcoef((fused - infrared).ravel(), visible.ravel())[0, 1] + np.corrcoef(
        (fused - visible).ravel(), infrared.ravel()
    )[0, 1]
    assert value == pytest.approx(expected, rel=1e-12)
    assert 0.5 < value < 2.0  # each difference correlates with the other source


def test_degenerate_values_are_nan_without_warnings():
    constant = np.full((ROWS, COLS), 50, dtype=np.uint8)
    black = np.zeros((ROWS, COLS), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = compute_ivif_metrics(constant, constant, constant)
        black_values = compute_ivif_metrics(black, black, black, metrics=["Qabf", "Qcb", "Qcv"])
    # corr of constants, and VIFB's min-max stretch of a constant image (0 / 0).
    for name in ("CC", "SCD", "Qcb", "Qcv"):
        assert math.isnan(values[name]), name
    assert values["PSNR"] == math.inf and values["EN"] == 0.0 and values["MI"] == 0.0
    # conv2 'same' pads with zeros, so a constant image still has edges on its frame...
    assert values["Qabf"] == pytest.approx(0.9994 * 0.9879 / (1 + math.exp(-22 * 0.2)), rel=1e-12)
    # ...and only an all-zero image has none; the all-zero image is left as it is by the stretch.
    assert math.isnan(black_values["Qabf"]) and math.isnan(black_values["Qcb"]) and math.isnan(black_values["Qcv"])


# ----------------------------------------------------------------------------------------
# Conventions
# ----------------------------------------------------------------------------------------
def test_rgb_fused_is_the_mean_of_per_channel_metrics():
    fused = np.stack([texture(10), texture(11), texture(12)], axis=2)
    visible = np.stack([texture(13), texture(14), texture(15)], axis=2)
    infrared = texture(16)  # one channel, used against every channel (VIFB's b1 == 1 case)
    together = compute_ivif_metrics(fused, infrared, visible)
    per_channel = [compute_ivif_metrics(fused[:, :, k], infrared, visible[:, :, k]) for k in range(3)]
    for name in METRIC_NAMES:
        if name == "SF":
            continue  # SF uses the side-by-side layout instead (tested above)
        assert together[name] == pytest.approx(np.mean([v[name] for v in per_channel]), rel=1e-12), name


def test_gray_fused_converts_rgb_sources_like_matlab_rgb2gray():
    fused = texture(20)
    visible = np.stack([texture(21), texture(22), texture(23)], axis=2)
    weights = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
    visible_gray = np.floor(visible.astype(float) @ weights + 0.5).astype(np.uint8)
    assert compute_ivif_metrics(fused, texture(24), visible) == pytest.approx(
        compute_ivif_metrics(fused, texture(24), visible_gray), rel=1e-12
    )


def test_pil_and_float_inputs_match_uint8_arrays():
    fused = np.stack([texture(30), texture(33), texture(34)], axis=2)
    infrared, visible = texture(31), np.stack([texture(32), texture(35), texture(36)], axis=2)
    from_arrays = compute_ivif_metrics(fused, infrared, visible)
    from_pil = compute_ivif_metrics(Image.fromarray(fused), Image.fromarray(infrared), Image.fromarray(visible))
    from_float = compute_ivif_metrics(fused.astype(np.float32), infrared.astype(float), visible.astype(float))
    assert from_pil == from_arrays
    assert from_float == pytest.approx(from_arrays, rel=1e-12)


def test_directions():
    assert [name for name in METRIC_NAMES if not HIGHER_IS_BETTER[name]] == ["CE", "RMSE", "Qcv"]


def test_batch_matches_single_images_in_order():
    sizes = [(48, 56), (50, 44), (48, 56)]
    rng = np.random.default_rng(40)
    triplets = [[rng.integers(0, 256, size=s).astype(np.uint8) for _ in range(3)] for s in sizes]
    batch = compute_ivif_metrics_batch(*zip(*triplets), metrics=["EN", "Qabf", "SSIM", "SF"])
    for index, (fused, ir, vis) in enumerate(triplets):
        single = compute_ivif_metrics(fused, ir, vis, metrics=["EN", "Qabf", "SSIM", "SF"])
        for name, value in single.items():
            assert batch[name][index] == pytest.approx(value, rel=1e-12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), mix=st.floats(0.0, 1.0))
def test_ranges_on_random_fusions(seed, mix):
    rng = np.random.default_rng(seed)
    visible = rng.integers(0, 256, (ROWS, COLS)).astype(float)
    infrared = rng.integers(0, 256, (ROWS, COLS)).astype(float)
    fused = mix * visible + (1 - mix) * infrared
    values = compute_ivif_metrics(fused, infrared, visible)
    assert 0 <= values["EN"] <= 8
    assert 0 <= values["Qabf"] <= 1
    assert values["SSIM"] <= 2 + 1e-9
    assert -1 - 1e-12 <= values["CC"] <= 1 + 1e-12
    assert values["MI"] >= -1e-12 and values["CE"] >= -1e-12 and values["RMSE"] >= 0


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fused", "ir", "message"),
    [
        (np.zeros((ROWS, COLS + 1), np.uint8), np.zeros((ROWS, COLS), np.uint8), "ir has size"),
        (np.full((ROWS, COLS), np.nan), np.zeros((ROWS, COLS)), "NaN"),
        (np.full((ROWS, COLS), 300.0), np.zeros((ROWS, COLS)), r"\[0, 255\]"),
        (np.zeros((ROWS, COLS, 4), np.uint8), np.zeros((ROWS, COLS), np.uint8), "expected shape"),
        (np.zeros((ROWS, COLS), bool), np.zeros((ROWS, COLS), np.uint8), "boolean"),
    ],
)
def test_invalid_images_raise(fused, ir, message):
    with pytest.raises(ValueError, match=message):
        compute_ivif_metrics(fused, ir, np.zeros(ir.shape, ir.dtype))


def test_float_rounding_overshoot_is_clipped_not_rejected():
    image = np.full((ROWS, COLS), 255.0)
    image[0, 0] = np.nextafter(255.0, 300.0)  # what a weighted blend can produce
    assert compute_ivif_metrics(image, image, image, ["SD"])["SD"] == 0.0
    image[0, 0] = 255.01
    with pytest.raises(ValueError, match="found"):
        compute_ivif_metrics(image, image, image, ["SD"])


def test_invalid_requests_raise():
    image = texture(50)
    with pytest.raises(ValueError, match="Unknown metric"):
        compute_ivif_metrics(image, image, image, metrics=["PSNR", "FMI"])
    with pytest.raises(TypeError, match="PIL image or a numpy array"):
        compute_ivif_metrics([[1, 2], [3, 4]], image, image)
    with pytest.raises(ValueError, match="one length"):
        compute_ivif_metrics_batch([image, image], [image], [image])
    small = np.zeros((30, 30), np.uint8)
    with pytest.raises(ValueError, match="VIF needs images of at least 41x41"):
        compute_ivif_metrics(small, small, small, metrics=["VIF"])


def test_evaluate_module_matches_plain_function():
    evaluate = pytest.importorskip("evaluate")
    module = evaluate.load(str(REPO_ROOT / "evaluate_metrics" / "ivif_metrics"))
    images = [(texture(60), texture(61), texture(62)), (texture(63), texture(64), texture(65))]
    result = module.compute(
        fused=[Image.fromarray(t[0]) for t in images],
        ir=[t[1] for t in images],
        vis=[Image.fromarray(t[2]) for t in images],
        metrics=["EN", "SSIM"],
        return_per_image=True,
    )
    expected = [compute_ivif_metrics(*t, metrics=["EN", "SSIM"]) for t in images]
    assert result["per_image"]["SSIM"] == pytest.approx([e["SSIM"] for e in expected], rel=1e-12)
    assert result["EN"] == pytest.approx(np.mean([e["EN"] for e in expected]), rel=1e-12)


# ----------------------------------------------------------------------------------------
# VIFB's published results
# ----------------------------------------------------------------------------------------
# Per-image values that VIFB publishes in its repository (github.com/xingchenzhang/VIFB,
# output/evaluation_metrics_single/<pair>_<method>_<metric>.txt, commit 5d29ee7), written by
# its MATLAB code with dlmwrite (5 significant digits). Missing entries are files that the
# searchable copy of the repository did not hold. ADF is complete over the 21 pairs except
# for those gaps; the other lines are spot checks (sizes 768x276 to 320x240, grayscale IR).
VIFB_PUBLISHED = """\
carLight ADF CE=1.6561 EN=6.8923 MI=2.5368 PSNR=60.066 AG=1.9328 EI=19.123 Qabf=0.55504 SD=39.371 SF=7.4007 RMSE=0.06404 Qcb=0.42551 Qcv=899.75
carShadow ADF CE=1.6664 EN=7.127 MI=2.3511 PSNR=58.248 AG=2.7549 EI=29.919 Qabf=0.50605 SD=45.783 RMSE=0.097619 Qcb=0.46501 Qcv=451.87
carWhite ADF CE=0.69531 EN=7.1539 PSNR=56.884 AG=5.0752 EI=51.326 Qabf=0.52638 SD=44.397 SF=14.846 RMSE=0.13331 SSIM=1.4018 Qcb=0.50466 Qcv=906.83
elecbike ADF EN=6.3078 MI=1.4989 PSNR=61.296 AG=3.4971 EI=35.274 Qabf=0.65179 SD=25.632 SF=10.767 RMSE=0.048253 SSIM=1.6134 Qcb=0.50471 Qcv=518.13
fight ADF CE=0.72975 EN=6.6999 MI=1.6824 PSNR=58.65 AG=4.9518 EI=52.663 Qabf=0.48407 SD=29.158 SF=13.708 RMSE=0.088803 SSIM=1.4988 Qcb=0.47299 Qcv=1178.4
kettle ADF CE=1.4347 EN=7.1621 MI=2.4209 PSNR=58.3 AG=6.3919 EI=66.879 Qabf=0.70563 SD=51.791 SF=17.004 RMSE=0.096169 SSIM=1.3316 Qcb=0.55995 Qcv=439.37
labMan ADF CE=2.6314 EN=7.3407 PSNR=58.218 AG=3.8177 EI=40.477 Qabf=0.45425 SD=60.297 SF=14.558 RMSE=0.098015 SSIM=1.2868 Qcb=0.40315 Qcv=1287.6
man ADF CE=1.1283 EN=6.0716 MI=1.0334 PSNR=61.753 AG=4.7024 EI=47.736 Qabf=0.65157 SD=19.204 SF=12.949 RMSE=0.043432 SSIM=1.4963 Qcb=0.51707 Qcv=345.98
manCall ADF CE=1.014 EN=6.5355 PSNR=61.15 AG=2.7913 EI=28.967 Qabf=0.5095 SD=27.22 SF=7.1414 RMSE=0.0499 SSIM=1.5675 Qcb=0.51568 Qcv=235.88
manCar ADF CE=0.831 EN=6.8839 MI=1.5181 PSNR=59.425 EI=54.231 Qabf=0.39635 SD=34.959 SF=16.056 RMSE=0.074533 SSIM=1.2873 Qcb=0.48581 Qcv=1044.5
manWalking ADF EN=6.7123 MI=2.4412 PSNR=55.325 AG=4.2153 EI=43.712 Qabf=0.52494 SD=29.84 SF=13.966 RMSE=0.19221 SSIM=1.3822 Qcb=0.50559 Qcv=737.87
manlight ADF CE=2.0204 EN=6.6986 MI=1.7931 PSNR=59.647 AG=4.6842 EI=45.116 Qabf=0.60077 SD=34.601 SF=17.349 RMSE=0.070526 Qcb=0.42516 Qcv=400.95
manwithbag ADF EN=6.3854 MI=1.3381 PSNR=60.904 AG=4.7776 EI=45.649 Qabf=0.64357 SD=22.774 SF=15.286 RMSE=0.052814 Qcv=1070.6
nightCar ADF CE=0.58414 EN=7.0743 MI=1.7348 PSNR=59.433 AG=3.8969 EI=40.438 Qabf=0.5516 SD=36.64 SF=12.031 RMSE=0.074093 SSIM=1.4785 Qcb=0.47925 Qcv=525.92
peopleshadow ADF EN=7.4768 MI=2.0375 PSNR=55.924 AG=8.5106 EI=84.823 Qabf=0.43623 SD=51.389 SF=24.705 RMSE=0.16625 SSIM=1.2621 Qcb=0.42458 Qcv=876.22
running ADF CE=1.2113 EN=6.8583 MI=2.051 PSNR=55.643 AG=5.4788 EI=55.324 Qabf=0.46162 SD=34.332 SF=16.847 RMSE=0.17784 Qcb=0.4938 Qcv=859.3
snow ADF CE=1.6097 EN=6.6647 MI=1.6528 PSNR=56.605 Qabf=0.43866 SD=30.182 SF=14.427 RMSE=0.1421 SSIM=1.1943 Qcb=0.57271 Qcv=1025.8
tricycle ADF CE=1.5123 EN=6.8396 MI=1.8789 AG=3.9909 EI=40.306 Qabf=0.58912 SF=13.889 RMSE=0.074651 SSIM=1.5797 Qcb=0.51132 Qcv=619.1
walking ADF EN=7.1327 PSNR=55.888 AG=7.2209 EI=68.515 Qabf=0.42529 SD=36.28 SF=22.894 RMSE=0.16763 SSIM=1.2511 Qcb=0.42749 Qcv=742.09
walking2 ADF CE=1.3057 EN=6.5679 MI=1.8519 PSNR=58.064 AG=3.6929 EI=38.065 Qabf=0.43744 SD=29.582 SF=12.26 RMSE=0.10163 SSIM=1.4144 Qcb=0.45474 Qcv=585.19
walkingnight ADF CE=4.2322 MI=2.1061 AG=2.9235 EI=29.248 Qabf=0.35875 SD=21.979 SF=11.523 RMSE=0.17564 Qcb=0.3284 Qcv=1582.8
carLight CBF SSIM=1.3447
carLight DLF SSIM=1.6466
carLight FPDE SSIM=1.6257
carLight GFCE SSIM=1.0574
carShadow GFF CE=1.3632 EN=7.2539 MI=2.091 PSNR=57.921 AG=3.6076 EI=39.456 Qabf=0.62193 SD=45.653 SF=9.6661 RMSE=0.10524 Qcb=0.56811 Qcv=695.36
walkingnight LatLRR CE=3.3189 EN=6.5788 MI=2.3603 PSNR=54.124 AG=4.8809 EI=51.563 Qabf=0.41012 SD=41.559 SF=19.292 RMSE=0.25168 SSIM=1.0934 Qcb=0.36324 Qcv=1096.2
labMan TIF CE=2.0413 EN=7.5742 MI=1.6606 PSNR=58.02 AG=5.4677 Qabf=0.57265 SD=67.838 SF=22.262 RMSE=0.10259 SSIM=1.2184 Qcb=0.4832 Qcv=931.63
running MGFF CE=0.9965 EN=7.3743 MI=2.0843 PSNR=55.476 AG=7.9134 EI=81.109 Qabf=0.50155 SD=46.771 RMSE=0.18487 SSIM=1.2918 Qcb=0.54692 Qcv=785.91
"""


def parse_published() -> dict[tuple[str, str], dict[str, float]]:
    table = {}
    for line in VIFB_PUBLISHED.strip().splitlines():
        pair, method, *entries = line.split()
        table[(pair, method)] = {key: float(value) for key, value in (entry.split("=") for entry in entries)}
    return table


def five_significant_digits_tolerance(value: float) -> float:
    """Half a unit in the 5th significant digit: the rounding of dlmwrite's %.5g."""
    return 0.5 * 10 ** (math.floor(math.log10(abs(value))) - 4) * (1 + 1e-9)


@pytest.fixture(scope="module")
def vifb_values():
    if not (VIFB_DIR / "manifest.csv").exists():
        pytest.skip(f"VIFB images not found at {VIFB_DIR} (set FUSCORE_VIFB_DIR to run the VIFB checks)")
    with open(VIFB_DIR / "manifest.csv", newline="") as handle:
        manifest = {(row["pair"], row["method"]): row for row in csv.DictReader(handle)}
    published = parse_published()
    ours = {}
    for key, expected in published.items():
        row = manifest[key]
        images = [Image.open(VIFB_DIR / row[column]) for column in ("fused", "ir", "vis")]
        ours[key] = compute_ivif_metrics(*images, metrics=list(expected))
        for image in images:
            image.close()
    return published, ours


@pytest.mark.slow
def test_vifb_per_image_values_match_published(vifb_values):
    published, ours = vifb_values
    mismatches = [
        (pair, method, name, value, ours[(pair, method)][name])
        for (pair, method), values in published.items()
        for name, value in values.items()
        if abs(ours[(pair, method)][name] - value) > five_significant_digits_tolerance(value)
    ]
    assert sum(len(v) for v in published.values()) == 302
    assert not mismatches, mismatches


@pytest.mark.slow
def test_vifb_method_averages_match_published(vifb_values):
    """ADF's average over the 21 pairs (over the pairs whose published file is available)."""
    published, ours = vifb_values
    adf = {pair: values for (pair, method), values in published.items() if method == "ADF"}
    assert len(adf) == 21
    for name in ("CE", "EN", "MI", "PSNR", "AG", "EI", "Qabf", "SD", "SF", "RMSE", "SSIM", "Qcb", "Qcv"):
        pairs = [pair for pair, values in adf.items() if name in values]
        published_mean = np.mean([adf[pair][name] for pair in pairs])
        our_mean = np.mean([ours[(pair, "ADF")][name] for pair in pairs])
        assert our_mean == pytest.approx(published_mean, rel=1e-4), (name, len(pairs))
