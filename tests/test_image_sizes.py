# Copyright 2026 The FuScore authors. Apache-2.0.
"""`image_size` reads a JPEG's frame header without Pillow's table parsing; it must give what Pillow gives for every
file, and leave to Pillow every file whose header it is not sure of."""

import io

import numpy as np
import pytest
from PIL import Image

from image_utils_fuscore import _jpeg_frame_size, image_size, load_image


def _picture(width, height, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "CMYK": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)


def _pillow_size(path):
    with Image.open(path) as handle:
        width, height = handle.size
        orientation = handle.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _with_segment(jpeg: bytes, segment: bytes) -> bytes:
    """`jpeg` with a marker segment inserted right after its start-of-image marker."""
    return jpeg[:2] + segment + jpeg[2:]


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _jpegs(folder):
    """JPEGs of the kinds Pillow writes and cameras make, each with the size `load_image` gives."""
    files = {}

    def save(name, image, **options):
        path = folder / f"{name}.jpg"
        image.save(path, format="JPEG", **options)
        files[name] = path

    save("baseline", _picture(96, 40))
    save("progressive", _picture(70, 33), progressive=True)
    save("grey", _picture(33, 70, "L"))
    save("cmyk", _picture(48, 32, "CMYK"))
    save("subsampled_optimized", _picture(101, 57), subsampling=2, optimize=True, quality=50)
    save("restart_markers", _picture(64, 64), restart_marker_blocks=1)
    save("icc_profile_and_comment", _picture(80, 30), icc_profile=b"\0" * 3000, comment=b"fused by method X")
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif_rotated", _picture(90, 64), exif=exif.tobytes())
    exif = Image.Exif()
    exif[0x0112] = 1
    save("exif_upright", _picture(90, 64), exif=exif.tobytes())
    # XMP in an APP1 segment: Pillow reads an orientation from it when there is no EXIF one.
    xmp = (b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/"
           b"1999/02/22-rdf-syntax-ns#'><rdf:Description xmlns:tiff='http://ns.adobe.com/tiff/1.0/' "
           b"tiff:Orientation=\"8\"/></rdf:RDF></x:xmpmeta>")
    buffer = io.BytesIO()
    _picture(72, 40).save(buffer, format="JPEG")
    path = folder / "xmp_rotated.jpg"
    path.write_bytes(_with_segment(buffer.getvalue(), _segment(0xE1, xmp)))
    files["xmp_rotated"] = path
    return files


def test_a_jpegs_size_is_the_one_pillow_and_load_image_give(tmp_path):
    files = _jpegs(tmp_path)
    for name, path in files.items():
        expected = _pillow_size(path)
        assert image_size(path) == expected == load_image(path).size, name
        assert image_size(str(path)) == expected, name
    assert image_size(files["exif_rotated"]) == (64, 90) and image_size(files["xmp_rotated"]) == (40, 72), \
        "the rotated files are rotated, so the check above can fail"
    # The header reader itself answers for the plain files and leaves those with an APP1 segment to Pillow.
    for name in ("baseline", "progressive", "grey", "cmyk", "subsampled_optimized", "restart_markers",
                 "icc_profile_and_comment"):
        assert _jpeg_frame_size(files[name]) == _pillow_size(files[name]), name
    for name in ("exif_rotated", "exif_upright", "xmp_rotated"):
        assert _jpeg_frame_size(files[name]) is None, name


def test_headers_the_reader_is_not_sure_of_go_to_pillow(tmp_path):
    buffer = io.BytesIO()
    _picture(50, 20).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    frame = jpeg.index(b"\xff\xc0")
    cases = {
        "png": None,
        "truncated_before_the_frame": jpeg[:frame + 3],
        "truncated_in_the_frame": jpeg[:frame + 6],
        "zero_height": jpeg[:frame + 5] + b"\x00\x00" + jpeg[frame + 7:],  # height given by a DNL marker later
        "two_frames": jpeg[:frame] + jpeg[frame:frame + 2 + int.from_bytes(jpeg[frame + 2:frame + 4], "big")] + jpeg[frame:],
        "garbage_after_start": jpeg[:2] + b"\x00\x01\x02\x03" + jpeg[2:],
        "bad_length": jpeg[:2] + b"\xff\xe0\x00\x01" + jpeg[2:],
        "standalone_marker": jpeg[:2] + b"\xff\xd0" + jpeg[2:],
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.jpg"
        if data is None:
            _picture(50, 20).save(path, format="PNG")
        else:
            path.write_bytes(data)
        assert _jpeg_frame_size(path) is None, name
        try:
            expected = _pillow_size(path)
        except Exception:  # noqa: BLE001 - a file Pillow cannot open has no size
            expected = None
        assert image_size(path) == expected, name
    assert image_size(tmp_path / "png.jpg") == (50, 20)


def test_a_missing_or_unreadable_file_has_no_size(tmp_path):
    assert image_size(tmp_path / "missing.jpg") is None
    assert image_size(tmp_path) is None  # a folder
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert image_size(tmp_path / "empty.jpg") is None


@pytest.mark.parametrize("size", [(15, 200), (10_000, 9_000)])
def test_a_refused_size_read_from_the_header_is_none(tmp_path, size):
    """`size_problem`'s rules apply to sizes read by the header reader as to Pillow's (a tiny or huge frame
    header; the pixels are never decoded, so the huge one costs nothing)."""
    buffer = io.BytesIO()
    _picture(50, 20).save(buffer, format="JPEG")
    jpeg = bytearray(buffer.getvalue())
    frame = jpeg.index(b"\xff\xc0")
    jpeg[frame + 5:frame + 9] = size[1].to_bytes(2, "big") + size[0].to_bytes(2, "big")
    path = tmp_path / "frame.jpg"
    path.write_bytes(bytes(jpeg))
    assert _jpeg_frame_size(path) == size
    assert image_size(path) is None


def test_the_size_benchmark_runs_and_checks_the_sizes_agree(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    output = tmp_path / "sizes.json"
    subprocess.run([sys.executable, str(root / "benchmarks" / "bench_image_sizes.py"), "--images", "6", "--side", "64",
                    "--rounds", "1", "--output", str(output)], check=True, capture_output=True, cwd=tmp_path)
    (row,) = json.loads(output.read_text())["sets"].values()
    assert row["files"] == 6 and row["image_size_ms"] > 0 and row["pillow_ms"] > 0
