"""How long a scoring call spends reading its images' sizes before anything else starts (`scoring_fuscore.
image_tokens`: the batch plan sorts the images by visual-token count, so every size is read first).

    python benchmarks/bench_image_sizes.py                  # 2,048 448-px JPEGs, 5 rounds
    python benchmarks/bench_image_sizes.py --vifb ../shared/data/vifb

Rows (the median round): `image_size` as shipped (the JPEG frame-header reader, Pillow for any other file) and Pillow's
`Image.open` with the EXIF orientation, as `image_size` read every file before. With `--vifb`, VIFB's fused images too.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_speed import scratch_folder, write_images  # noqa: E402
from image_utils_fuscore import _displayed_size, image_size  # noqa: E402


def pillow_size(path):
    with Image.open(path) as handle:
        return _displayed_size(handle)


def timed_rounds(read, paths, rounds: int) -> tuple:
    seconds, sizes = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        sizes = [read(path) for path in paths]
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), sizes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--side", type=int, default=448)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vifb", help="a VIFB folder (manifest.csv, output/): its fused images as a second set")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args()

    sets = {f"{args.images} written {args.side}-px JPEGs": write_images(scratch_folder("fuscore_bench_sizes_"),
                                                                         args.images, args.side)}
    if args.vifb:
        sets["VIFB fused images"] = sorted(str(path) for path in Path(args.vifb, "output").rglob("*.jpg"))
    results = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
               "pillow": Image.__version__, "rounds": args.rounds, "sets": {}}
    for name, paths in sets.items():
        shipped, sizes = timed_rounds(image_size, paths, args.rounds)
        pillow, expected = timed_rounds(pillow_size, paths, args.rounds)
        if sizes != expected:
            raise SystemExit(f"{name}: image_size and Pillow disagree")
        results["sets"][name] = {"files": len(paths), "image_size_ms": shipped * 1e3, "pillow_ms": pillow * 1e3,
                                 "image_size_us_per_file": shipped / len(paths) * 1e6,
                                 "pillow_us_per_file": pillow / len(paths) * 1e6}
        print(f"{name} ({len(paths)} files): image_size {shipped * 1e3:.1f} ms ({shipped / len(paths) * 1e6:.1f} us a "
              f"file), Pillow {pillow * 1e3:.1f} ms ({pillow / len(paths) * 1e6:.1f} us a file), same sizes", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
