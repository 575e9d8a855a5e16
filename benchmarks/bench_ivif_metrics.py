"""Time the vectorised IVIF metrics against a straightforward reference, on VIFB's 525 images.

The reference below is written the simple way, independently of
`fuscore_metrics.ivif_metrics`: one image, one channel and one metric at a time, direct 2-D
filtering with full kernels (scipy.signal.correlate2d / convolve2d, FFT convolution only for
Qcb's 31x31 Gaussians), MATLAB-style fftshift frequency grids, Python loops over histogram
bins and over Qcv's 16x16 blocks. It doubles as a cross-check: both implementations must
give the same values.

The reference is slow, so by default it runs on an evenly spaced subset of the images and its
time is extrapolated to all 525 (clearly labelled). Usage:

    python benchmarks/bench_ivif_metrics.py [--data ../shared/data/vifb] [--subset 25]
        [--output benchmarks/RESULTS_ivif_metrics.md]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.signal
from PIL import Image

from fuscore_metrics.ivif_metrics.ivif_metrics import METRIC_NAMES, compute_metrics_on_stack, prepare_triplet

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "vifb"


# ----------------------------------------------------------------------------------------
# Straightforward reference: one image, one channel, one metric at a time
# ----------------------------------------------------------------------------------------
def fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    half = (size - 1) / 2
    y, x = np.mgrid[-half:half + 1, -half:half + 1]
    kernel = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return kernel / kernel.sum()


def matlab_gradient(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB gradient: central differences inside, one-sided differences at the border."""
    dx = np.zeros_like(image)
    dy = np.zeros_like(image)
    dx[:, 1:-1] = (image[:, 2:] - image[:, :-2]) / 2
    dx[:, 0] = image[:, 1] - image[:, 0]
    dx[:, -1] = image[:, -1] - image[:, -2]
    dy[1:-1, :] = (image[2:, :] - image[:-2, :]) / 2
    dy[0, :] = image[1, :] - image[0, :]
    dy[-1, :] = image[-1, :] - image[-2, :]
    return dx, dy


def histogram_256(image: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(np.floor(image), bins=256, range=(0, 256))
    return counts / image.size


def ref_entropy(f):
    result = 0.0
    for p in histogram_256(f):
        if p > 0:
            result -= p * np.log2(p)
    return result


def ref_cross_entropy(f, ir, vis):
    p_fused = histogram_256(f)
    total = 0.0
    for source in (vis, ir):
        p_source = histogram_256(source)
        for k in range(256):
            if p_source[k] > 0 and p_fused[k] > 0:
                total += p_source[k] * np.log2(p_source[k] / p_fused[k])
    return total / 2


def mi_levels(image):
    low, high = image.min(), image.max()
    normalized = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return np.floor(normalized * 255 + 0.5) + 1  # int16() rounds half away from zero; +1 as MATLAB


def entropy_nats(probabilities):
    p = probabilities[probabilities > 0]
    return -np.sum(p * np.log(p))


def ref_mutual_information(f, ir, vis):
    fused_levels = mi_levels(f).ravel()
    total = 0.0
    for source in (vis, ir):
        joint, _, _ = np.histogram2d(mi_levels(source).ravel(), fused_levels, bins=256, range=[[1, 257], [1, 257]])
        joint /= joint.sum()
        total += entropy_nats(joint.sum(axis=1)) + entropy_nats(joint.sum(axis=0)) - entropy_nats(joint.ravel())
    return total


def vifb_error(a, b):
    return np.sqrt(np.sum((a - b) ** 2)) / a.size


def ref_psnr(f, ir, vis):
    error = (vifb_error(vis, f) + vifb_error(ir, f)) / 2
    return 20 * np.log10(255 / np.sqrt(error))


def ref_rmse(f, ir, vis):
    return (vifb_error(vis, f) + vifb_error(ir, f)) / 2


def ref_average_gradient(f):
    dx, dy = matlab_gradient(f)
    rows, cols = f.shape
    return np.sum(np.sqrt((dx**2 + dy**2) / 2)) / ((rows - 1) * (cols - 1))


SOBEL = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])


def ref_edge_intensity(f):
    padded = np.pad(f, 1, mode="edge")  # imfilter 'replicate'
    gx = scipy.signal.correlate2d(padded, SOBEL, mode="valid")
    gy = scipy.signal.correlate2d(padded, SOBEL.T, mode="valid")
    return np.mean(np.sqrt(gx**2 + gy**2))


def qabf_edges(image):
    h1 = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
    h3 = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    p = 255 * image
    sx = scipy.signal.convolve2d(p, h3, mode="same")
    sy = scipy.signal.convolve2d(p, h1, mode="same")
    strength = np.sqrt(sx**2 + sy**2)
    safe_sx = np.where(sx == 0, 1.0, sx)
    angle = np.where(sx == 0, np.pi / 2, np.arctan(sy / safe_sx))
    return strength, angle


def ref_qabf(f, ir, vis):
    g_f, a_f = qabf_edges(f)
    numerator = 0.0
    denominator = 0.0
    for source in (vis, ir):
        g_s, a_s = qabf_edges(source)
        ratio = np.empty_like(g_s)
        larger = g_s > g_f
        equal = g_s == g_f
        smaller = ~larger & ~equal
        ratio[larger] = g_f[larger] / g_s[larger]
        ratio[equal] = g_f[equal]
        ratio[smaller] = g_s[smaller] / g_f[smaller]
        alignment = 1 - np.abs(a_s - a_f) / (np.pi / 2)
        with np.errstate(over="ignore"):
            q_g = 0.9994 / (1 + np.exp(-15 * (ratio - 0.5)))
        q_a = 0.9879 / (1 + np.exp(-22 * (alignment - 0.8)))
        numerator += np.sum(q_g * q_a * g_s)
        denominator += np.sum(g_s)
    return numerator / denominator


def ref_ssim_single(a, b):
    window = fspecial_gaussian(11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a = scipy.signal.correlate2d(a, window, mode="valid")
    mu_b = scipy.signal.correlate2d(b, window, mode="valid")
    var_a = scipy.signal.correlate2d(a * a, window, mode="valid") - mu_a**2
    var_b = scipy.signal.correlate2d(b * b, window, mode="valid") - mu_b**2
    cov = scipy.signal.correlate2d(a * b, window, mode="valid") - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return np.mean(ssim_map)


def ref_ssim(f, ir, vis):
    return ref_ssim_single(vis, f) + ref_ssim_single(ir, f)


def normalize1(image):
    low, high = image.min(), image.max()
    if low == 0 and high == 0:
        return image
    return np.floor((image - low) / (high - low) * 255 + 0.5)


def matlab_freqspace(rows, cols):
    """freqspace([rows, cols], 'meshgrid'): grids in fftshift order."""
    u = (np.arange(cols) - np.floor(cols / 2)) * (2 / cols)
    v = (np.arange(rows) - np.floor(rows / 2)) * (2 / rows)
    return np.meshgrid(u, v)


def filter_shifted(image, response):
    spectrum = np.fft.fftshift(np.fft.fft2(image))
    return np.real(np.fft.ifft2(np.fft.ifftshift(spectrum * response)))


def ref_qcb(f, ir, vis):
    rows, cols = f.shape
    u, v = matlab_freqspace(rows, cols)
    r = np.sqrt((cols / 30 * u) ** 2 + (rows / 30 * v) ** 2)
    csf = np.exp(-((r / 15.3870) ** 2)) - 0.7622 * np.exp(-((r / 1.3456) ** 2))
    x, y = np.meshgrid(np.arange(-15, 16), np.arange(-15, 16))
    g1 = np.exp(-(x * x + y * y) / (2 * 4)) / (2 * np.pi * 4)
    g2 = np.exp(-(x * x + y * y) / (2 * 16)) / (2 * np.pi * 16)

    def contrast(image):
        filtered = filter_shifted(normalize1(image), csf)
        # FFT convolution of the zero-padded image ('same'); a direct 31x31 correlate2d is
        # identical but takes tens of seconds per image.
        ratio = scipy.signal.fftconvolve(filtered, g1, mode="same") / scipy.signal.fftconvolve(filtered, g2, mode="same")
        c = np.abs(ratio - 1)
        return c**3 / (c**2 + 0.0001)

    c_vis, c_ir, c_f = contrast(vis), contrast(ir), contrast(f)
    q_vis = np.where(c_vis < c_f, c_vis / c_f, c_f / c_vis)
    q_ir = np.where(c_ir < c_f, c_ir / c_f, c_f / c_ir)
    weight_vis = c_vis**2 / (c_vis**2 + c_ir**2)
    weight_ir = c_ir**2 / (c_vis**2 + c_ir**2)
    return np.mean(weight_vis * q_vis + weight_ir * q_ir)


def ref_qcv(f, ir, vis):
    rows, cols = f.shape
    block = 16
    u, v = matlab_freqspace(rows, cols)
    r = np.sqrt((cols / 8 * u) ** 2 + (rows / 8 * v) ** 2)
    mannos = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))
    f_n = normalize1(f)
    numerator = 0.0
    denominator = 0.0
    for source in (vis, ir):
        s_n = normalize1(source)
        gx = scipy.signal.correlate2d(s_n, np.array([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]), mode="same")
        gy = scipy.signal.correlate2d(s_n, np.array([[-1.0, -2, -1], [0, 0, 0], [1, 2, 1]]), mode="same")
        strength = np.sqrt(gx * gx + gy * gy)
        difference = filter_shifted(s_n - f_n, mannos)
        for top in range(0, rows, block):
            for left in range(0, cols, block):
                saliency = np.sum(strength[top:top + block, left:left + block] ** 5)
                distortion = np.sum(difference[top:top + block, left:left + block] ** 2) / (block * block)
                numerator += saliency * distortion
                denominator += saliency
    return numerator / denominator


def ref_vif_maps(reference, fused):
    maps = []
    for scale in range(1, 5):
        size = 2 ** (4 - scale + 1) + 1
        window = fspecial_gaussian(size, size / 5)
        if scale > 1:
            reference = scipy.signal.correlate2d(reference, window, mode="valid")[::2, ::2]
            fused = scipy.signal.correlate2d(fused, window, mode="valid")[::2, ::2]
        mu1 = scipy.signal.correlate2d(reference, window, mode="valid")
        mu2 = scipy.signal.correlate2d(fused, window, mode="valid")
        s1 = np.maximum(scipy.signal.correlate2d(reference * reference, window, mode="valid") - mu1 * mu1, 0)
        s2 = np.maximum(scipy.signal.correlate2d(fused * fused, window, mode="valid") - mu2 * mu2, 0)
        s12 = scipy.signal.correlate2d(reference * fused, window, mode="valid") - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        g[s1 < 1e-10] = 0
        sv[s1 < 1e-10] = s2[s1 < 1e-10]
        s1[s1 < 1e-10] = 0
        g[s2 < 1e-10] = 0
        sv[s2 < 1e-10] = 0
        sv[g < 0] = s2[g < 0]
        g[g < 0] = 0
        sv[sv <= 1e-10] = 1e-10
        noise = 0.005 * 255 * 255
        maps.append((np.log10(1 + g**2 * s1 / (sv + noise)), np.log10(1 + s1 / noise), g))
    return maps


def ref_vif(f, ir, vis):
    weights = np.array([1.0, 0.0, 0.15, 1.0]) / 2.15
    total = 0.0
    for weight, (n1, d1, g1), (n2, d2, g2) in zip(weights, ref_vif_maps(vis, f), ref_vif_maps(ir, f)):
        pick_vis = g1 < g2
        total += weight * np.sum(np.where(pick_vis, n1, n2) + 1e-7) / np.sum(np.where(pick_vis, d1, d2) + 1e-7)
    return total


def corr2(a, b):
    return np.corrcoef(a.ravel(), b.ravel())[0, 1]


def ref_scd(f, ir, vis):
    return corr2(f - ir, vis) + corr2(f - vis, ir)


def ref_cc(f, ir, vis):
    return (corr2(vis, f) + corr2(ir, f)) / 2


REFERENCE_PER_CHANNEL = {
    "CE": ref_cross_entropy,
    "EN": lambda f, ir, vis: ref_entropy(f),
    "MI": ref_mutual_information,
    "PSNR": ref_psnr,
    "AG": lambda f, ir, vis: ref_average_gradient(f),
    "EI": lambda f, ir, vis: ref_edge_intensity(f),
    "Qabf": ref_qabf,
    "SD": lambda f, ir, vis: np.std(f),
    "RMSE": ref_rmse,
    "SSIM": ref_ssim,
    "Qcb": ref_qcb,
    "Qcv": ref_qcv,
    "VIF": ref_vif,
    "SCD": ref_scd,
    "CC": ref_cc,
}


def ref_spatial_frequency(fused_rgb):
    # VIFB reads an H x W x 3 image as an H x 3W matrix (channels side by side).
    wide = np.hstack([fused_rgb[:, :, k] for k in range(fused_rgb.shape[2])])
    row_frequency = np.sum((wide[:, 1:] - wide[:, :-1]) ** 2) / wide.size
    column_frequency = np.sum((wide[1:, :] - wide[:-1, :]) ** 2) / wide.size
    return np.sqrt(row_frequency + column_frequency)


def reference_image_metrics(fused_path, ir_path, vis_path, timings: dict) -> dict[str, float]:
    """All metrics of one RGB fused image, VIFB style (per channel, then averaged)."""
    fused = np.asarray(Image.open(fused_path), dtype=np.float64)
    ir = np.asarray(Image.open(ir_path), dtype=np.float64)
    vis = np.asarray(Image.open(vis_path), dtype=np.float64)
    if fused.ndim != 3:
        raise ValueError("The reference handles RGB fused images only (all VIFB fused images are RGB).")
    values = {}
    for name in METRIC_NAMES:
        start = time.perf_counter()
        if name == "SF":
            values[name] = ref_spatial_frequency(fused)
        else:
            per_channel = []
            for k in range(3):
                ir_k = ir if ir.ndim == 2 else ir[:, :, k]
                vis_k = vis if vis.ndim == 2 else vis[:, :, k]
                per_channel.append(REFERENCE_PER_CHANNEL[name](fused[:, :, k], ir_k, vis_k))
            values[name] = float(np.mean(per_channel))
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
    return values


# ----------------------------------------------------------------------------------------
# Benchmark
# ----------------------------------------------------------------------------------------
def load_manifest(data_dir: Path) -> list[dict]:
    with open(data_dir / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for column in ("fused", "ir", "vis"):
            row[column] = str(data_dir / row[column])
    return rows


def time_vectorised(rows: list[dict]):
    """Per-metric seconds of the library (one image at a time, each metric vectorised over
    whole planes) over all images; decoding and preparation are timed separately."""
    timings = {name: 0.0 for name in METRIC_NAMES}
    values = {name: np.full(len(rows), np.nan) for name in METRIC_NAMES}
    prepare_seconds = 0.0
    for index, row in enumerate(rows):
        t0 = time.perf_counter()
        fused, ir, vis = prepare_triplet(Image.open(row["fused"]), Image.open(row["ir"]), Image.open(row["vis"]))
        stacks = [fused[None], np.ascontiguousarray(ir)[None], np.ascontiguousarray(vis)[None]]
        prepare_seconds += time.perf_counter() - t0
        for name in METRIC_NAMES:
            t0 = time.perf_counter()
            values[name][index] = compute_metrics_on_stack(*stacks, metrics=[name])[name][0]
            timings[name] += time.perf_counter() - t0
    return timings, values, prepare_seconds


def time_stacking(rows: list[dict], count: int) -> tuple[str, float, float, float]:
    """Seconds per image for `count` same-size images: one plane per call (the library's
    default) against the whole stack at once (planes_per_call = 3 * count)."""
    pair = rows[0]["pair"]
    chosen = [row for row in rows if row["pair"] == pair][:count]
    triplets = [prepare_triplet(Image.open(r["fused"]), Image.open(r["ir"]), Image.open(r["vis"])) for r in chosen]
    stacks = [np.stack([np.ascontiguousarray(t[k]) for t in triplets]) for k in range(3)]
    t0 = time.perf_counter()
    by_plane = compute_metrics_on_stack(*stacks, planes_per_call=1)
    plane_seconds = (time.perf_counter() - t0) / len(chosen)
    t0 = time.perf_counter()
    whole = compute_metrics_on_stack(*stacks, planes_per_call=3 * len(chosen))
    stack_seconds = (time.perf_counter() - t0) / len(chosen)
    difference = max(
        float(np.nanmax(np.abs(by_plane[n] - whole[n]) / np.maximum(np.abs(whole[n]), 1e-12))) for n in METRIC_NAMES
    )
    return f"{len(chosen)} images of pair {pair}", plane_seconds, stack_seconds, difference


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="VIFB folder with manifest.csv")
    parser.add_argument("--subset", type=int, default=25, help="images for the reference (0 = all)")
    parser.add_argument("--output", type=Path, default=None, help="also write the Markdown report here")
    parser.add_argument("--stack", type=int, default=8, help="same-size images for the stacking comparison")
    args = parser.parse_args(argv)
    if not (args.data / "manifest.csv").exists():
        print(f"VIFB data not found at {args.data} (expected manifest.csv).", file=sys.stderr)
        return 1

    rows = load_manifest(args.data)
    total = len(rows)
    subset_size = total if args.subset <= 0 else min(args.subset, total)
    subset = np.unique(np.linspace(0, total - 1, subset_size).round().astype(int))

    wall = time.perf_counter()
    vector_timings, vector_values, prepare_seconds = time_vectorised(rows)
    vector_wall = time.perf_counter() - wall

    stack_label, plane_seconds, stack_seconds, stack_difference = time_stacking(rows, args.stack)

    reference_timings: dict[str, float] = {}
    reference_values = {name: [] for name in METRIC_NAMES}
    wall = time.perf_counter()
    for index in subset:
        values = reference_image_metrics(rows[index]["fused"], rows[index]["ir"], rows[index]["vis"], reference_timings)
        for name in METRIC_NAMES:
            reference_values[name].append(values[name])
    reference_wall = time.perf_counter() - wall
    scale = total / len(subset)

    lines = [
        "# IVIF metrics: vectorised vs straightforward reference",
        "",
        f"* command: `python benchmarks/bench_ivif_metrics.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"* date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"* machine: {platform.platform()}, CPU {cpu_model()}, nproc {os.cpu_count()}",
        f"* python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}",
        f"* images: {total} VIFB fused images (21 pairs x {total // 21} methods), all RGB",
        f"* vectorised (fuscore_metrics): all {total} images, one image at a time, each metric "
        f"vectorised over whole channel planes; decoding + preparation {prepare_seconds:.1f} s "
        f"(not in the per-metric times); wall {vector_wall:.1f} s",
        f"* reference: {len(subset)} evenly spaced images (wall {reference_wall:.1f} s); "
        f"**its {total}-image seconds are extrapolated** (x {scale:.1f})",
        "",
        f"| metric | vectorised s ({total} img) | reference s ({len(subset)} img, measured) | "
        f"reference s ({total} img, extrapolated) | speed-up | max rel. diff (subset) |",
        "|---|---|---|---|---|---|",
    ]
    for name in METRIC_NAMES + ("total",):
        if name == "total":
            vector_s = sum(vector_timings.values())
            reference_s = sum(reference_timings.values())
            difference = ""
        else:
            vector_s = vector_timings[name]
            reference_s = reference_timings[name]
            ours = vector_values[name][subset]
            theirs = np.asarray(reference_values[name])
            relative = np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-12)
            difference = f"{np.nanmax(relative):.1e}"
        extrapolated = reference_s * scale
        lines.append(
            f"| {name} | {vector_s:.2f} | {reference_s:.2f} | {extrapolated:.1f} | "
            f"{extrapolated / vector_s:.1f}x | {difference} |"
        )
    lines += [
        "",
        f"Stacking check ({stack_label}, all metrics, seconds per image): one plane per call "
        f"{plane_seconds:.2f} s, the whole stack in one call {stack_seconds:.2f} s "
        f"(max rel. diff {stack_difference:.0e}). Larger stacks overflow the CPU caches, so the "
        "library walks stacks plane by plane.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output is not None:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
