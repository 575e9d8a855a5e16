"""Bad input everywhere a user hands FuScore something: image files and arrays, the processor, rating tables, base
checkpoints and level words. Each case must end in a valid result or in one of the documented errors
(`ImageInputError`, `TableValidationError`, `ValueError`) whose message names the file or row and says what to do;
never another exception type, and never a half-written output."""

import io
import os
import struct
import tempfile
import zlib
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import image_utils_fuscore
import processing_fuscore
from fuscore.tiny import build_tiny_model, build_tiny_tokenizer
from fuscore_data import tables
from fuscore_data.schema import RATING_FEATURES, SCORE_COLUMNS, SPREAD_COLUMNS
from fuscore_data.synthetic import SyntheticIVIF
from fuscore_data.tables import load_table, save_arrow, save_imagefolder
from fuscore_data.validation import TableValidationError, find_problems, validate_table
from modeling_fuscore import FuScoreConfig, FuScoreForQuality
from processing_fuscore import MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, ImageInputError, load_image


datasets.disable_progress_bars()

# Small, deterministic property runs: the file must stay well under a minute on two cores.
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

Image.init()  # registers every plugin, so SAVE / OPEN are complete
ENCODABLE_FORMATS = [fmt for fmt in ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "QOI")
                     if fmt in Image.SAVE and fmt in Image.OPEN]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _rgb(seed=0, size=(40, 48)):
    return Image.fromarray(_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` RGB pixels, with a few bytes of image data (never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _assert_names(error: BaseException, name: str):
    assert name in str(error), f"the message does not name {name!r}: {error}"


@pytest.fixture(scope="module")
def processor(tiny_model):
    return tiny_model.processor


@pytest.fixture(scope="module")
def sources_model(tiny_model_ir_vis):
    return tiny_model_ir_vis


# ---------------------------------------------------------------------------------------------------------------------
# Image files: corrupt, truncated, empty, not an image
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ENCODABLE_FORMATS)
@pytest.mark.parametrize("keep", [0.0, 13, 0.5, 0.9])
def test_truncated_files_of_every_format_fail_naming_the_file(tmp_path, fmt, keep):
    data = _encoded(_rgb(1), fmt)
    cut = keep if isinstance(keep, int) else int(len(data) * keep)
    path = tmp_path / f"cut_{fmt.lower()}_{cut}.img"
    path.write_bytes(data[:cut])
    with pytest.raises(ImageInputError) as raised:
        load_image(str(path))
    _assert_names(raised.value, path.name)
    assert "corrupt, truncated or not an image" in str(raised.value) or "too small" in str(raised.value)
    # Through the table validator the same file is a problem of its row, not a crash.
    table = datasets.Dataset.from_dict({"fused": [str(path)], "pair_id": ["scene"], "method": ["m"], "mos": [3.0]})
    problems = find_problems(table)
    assert len(problems) == 1 and "row 0 (pair_id='scene', method='m')" in problems[0] and path.name in problems[0]


def test_random_bytes_and_other_files_fail_naming_the_file(tmp_path, tiny_models):
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"these are not pixels\n" * 20)
    folder = tmp_path / "a_folder.png"
    folder.mkdir()
    for path in (junk, folder, tmp_path / "missing.png"):
        with pytest.raises(ImageInputError) as raised:
            tiny_models["qwen2_vl"].score(str(path))
        _assert_names(raised.value, path.name)


def test_one_bad_file_in_a_scoring_list_is_named_not_its_neighbours(tmp_path, tiny_models):
    good = []
    for i in range(3):
        good.append(tmp_path / f"good_{i}.png")
        _rgb(i).save(good[-1])
    bad = tmp_path / "bad_one.jpg"
    bad.write_bytes(_encoded(_rgb(9), "JPEG")[:100])
    with pytest.raises(ImageInputError) as raised:
        tiny_models["qwen2_vl"].score([str(good[0]), str(bad), str(good[1]), str(good[2])], batch_size=2)
    _assert_names(raised.value, "bad_one.jpg")
    assert "good_" not in str(raised.value)


# ---------------------------------------------------------------------------------------------------------------------
# Unusual modes are accepted and converted sensibly
# ---------------------------------------------------------------------------------------------------------------------


def test_sixteen_bit_grey_is_stretched_from_its_own_range_with_a_warning():
    values = np.linspace(1000, 3000, 32 * 40).reshape(32, 40).astype(np.uint16)  # a raw thermal frame's narrow range
    for image in (Image.fromarray(values), values, torch.from_numpy(values.astype(np.int32))):
        with pytest.warns(UserWarning, match="stretched a high-bit-depth image"):
            rgb = np.asarray(load_image(image))
        assert rgb.shape == (32, 40, 3) and rgb.dtype == np.uint8
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()  # grey stays grey
        assert rgb.min() == 0 and rgb.max() == 255  # not rendered black by a /257
        assert (np.diff(rgb[..., 0].reshape(-1).astype(int)) >= 0).all()  # monotone in the raw values
    constant = np.full((20, 20), 4242, dtype=np.uint16)
    assert (np.asarray(load_image(constant)) == 17).all()  # no range: the 16-bit range's 4242 / 65535 * 255


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_constant_sixteen_bit_images_use_the_full_sixteen_bit_range(tiny_models, recwarn):
    """A constant 16-bit image has no range to stretch: all-white 65535 is white (and scores as 8-bit white does),
    from an array, a PIL image or a 16-bit PNG file, of any integer type."""
    white8 = np.full((32, 32), 255, np.uint8)
    for value, grey in ((65535, 255), (0, 0), (32768, 128)):
        array = np.full((32, 32), value, np.uint16)
        for image in (array, array.astype(np.int32), array.astype(np.int64), Image.fromarray(array),
                      _png_bytes(Image.fromarray(array))):
            assert (np.asarray(load_image(image)) == grey).all(), (value, type(image))
    model = tiny_models["qwen2_vl"]
    assert model.score(np.full((32, 32), 65535, np.uint16)) == model.score(white8)
    assert not [w for w in recwarn if "high-bit-depth" in str(w.message)], "nothing was stretched"


def test_an_eight_bit_picture_in_a_wider_integer_type_scores_as_the_uint8_picture(tiny_models, recwarn):
    """Integer arrays whose values fit 0..255 are 8-bit pictures: their contrast is kept, not stretched."""
    rng = np.random.default_rng(0)
    pictures = {"full": rng.integers(0, 256, (32, 40, 3), dtype=np.uint8),
                "low contrast": rng.integers(100, 140, (32, 40), dtype=np.uint8)}
    model = tiny_models["qwen2_vl"]
    for label, picture in pictures.items():
        expected = np.asarray(load_image(picture))
        reference = model.score(picture)
        for dtype in (np.int64, np.int32, np.int16, np.uint16, np.uint32):
            wide = picture.astype(dtype)
            for image in (wide, torch.from_numpy(wide.astype(np.int64))):
                assert (np.asarray(load_image(image)) == expected).all(), (label, dtype)
            assert model.score(wide) == reference, (label, dtype)
    grey16 = Image.fromarray(pictures["low contrast"].astype(np.uint16))  # a 16-bit PNG holding 8-bit values
    assert (np.asarray(load_image(_png_bytes(grey16)))[..., 0] == pictures["low contrast"]).all()
    assert not [w for w in recwarn if "high-bit-depth" in str(w.message)]


def test_float_images_in_unit_range_scale_and_others_stretch_or_are_refused():
    ramp = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    assert (np.asarray(load_image(Image.fromarray(ramp, mode="F")))[..., 0] == np.round(ramp * 255)).all()
    with pytest.warns(UserWarning, match="high-bit-depth"):
        assert np.asarray(load_image(Image.fromarray(ramp * 1000 - 20, mode="F"))).max() == 255
    with pytest.raises(ImageInputError, match="constant floating-point image of value 300"):
        load_image(Image.fromarray(np.full((32, 32), 300, np.float32), mode="F"), source="flat.tif")


def test_rgba_and_palette_transparency_are_composited_on_black():
    pixels = np.zeros((20, 24, 4), dtype=np.uint8)
    pixels[..., :3] = (200, 100, 50)
    pixels[:10, :, 3] = 0  # top half transparent
    pixels[10:, :, 3] = 255
    rgb = np.asarray(load_image(Image.fromarray(pixels, mode="RGBA")))
    assert (rgb[:10] == 0).all() and (rgb[10:] == (200, 100, 50)).all()

    palette = Image.fromarray(np.where(np.arange(20)[:, None] < 10, 0, 1).astype(np.uint8).repeat(24, 1), mode="P")
    palette.putpalette([255, 255, 255, 200, 100, 50])
    palette.info["transparency"] = 0  # index 0 (white) is transparent
    rgb = np.asarray(load_image(palette))
    assert (rgb[:10] == 0).all() and (rgb[10:] == (200, 100, 50)).all()


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX",
                                  "RGBa", "La", "I;16", "I;16B"])
def test_every_pillow_mode_is_accepted_as_rgb(mode):
    base = Image.fromarray(_rng(5).integers(0, 256, (20, 22, 3), dtype=np.uint8))
    image = base.convert(mode) if mode not in ("LAB", "HSV", "La", "I;16", "I;16B") else Image.new(mode, (22, 20))
    if mode in ("I;16", "I;16B"):
        image = Image.fromarray(_rng(5).integers(0, 60000, (20, 22)).astype(np.uint16)).convert(mode)
    rgb = load_image(image, source=f"mode-{mode}")
    assert rgb.mode == "RGB" and rgb.size == (22, 20)
    if mode in ("CMYK", "YCbCr", "RGBX"):
        assert np.abs(np.asarray(rgb, dtype=int) - np.asarray(image.convert("RGB"), dtype=int)).max() <= 1


def test_odd_mode_files_are_scored(tmp_path, tiny_models):
    rng = _rng(6)
    files = {
        "thermal16.png": Image.fromarray(rng.integers(0, 65535, (40, 48)).astype(np.uint16)),
        "cmyk.jpg": _rgb(2).convert("CMYK"),
        "cmyk.tif": _rgb(3).convert("CMYK"),
        "palette.gif": _rgb(4).convert("P"),
        "rgba.png": Image.fromarray(rng.integers(0, 256, (40, 48, 4), dtype=np.uint8), mode="RGBA"),
        "grey_alpha.png": Image.fromarray(rng.integers(0, 256, (40, 48, 2), dtype=np.uint8), mode="LA"),
        "bilevel.bmp": _rgb(5).convert("1"),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
    scores = tiny_models["qwen2_5_vl"].score([str(tmp_path / name) for name in files])
    assert len(scores) == len(files) and all(1.0 <= score <= 5.0 for score in scores)


# ---------------------------------------------------------------------------------------------------------------------
# Sizes: minimum side, maximum pixel count, extreme aspect ratios, source/fused mismatch
# ---------------------------------------------------------------------------------------------------------------------


def test_minimum_side_is_enforced_with_the_name(tmp_path):
    assert load_image(np.zeros((MIN_IMAGE_SIDE, MIN_IMAGE_SIDE), dtype=np.uint8)).size == (16, 16)
    small = tmp_path / "thumbnail.png"
    _rgb(1, size=(MIN_IMAGE_SIDE - 1, 200)).save(small)
    with pytest.raises(ImageInputError, match=r"thumbnail\.png: 200x15 pixels is too small.*at least 16 pixels"):
        load_image(str(small))


def test_oversized_file_fails_before_decoding_with_the_size_and_the_fix(tmp_path):
    path = tmp_path / "huge_scan.png"
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    path.write_bytes(_png_header_only(side, side))
    with pytest.raises(ImageInputError) as raised:
        load_image(str(path))
    message = str(raised.value)
    _assert_names(raised.value, "huge_scan.png")
    # An over-large but valid image is not "corrupt": the message must say what is wrong and what to do.
    assert "downscale" in message and "corrupt" not in message, message


def test_oversized_array_fails_with_the_limit(monkeypatch):
    monkeypatch.setattr(image_utils_fuscore, "MAX_IMAGE_PIXELS", 32 * 32)
    with pytest.raises(ImageInputError, match=r"big-array: 40x40 pixels is over the limit of 1024 pixels"):
        load_image(np.zeros((40, 40, 3), dtype=np.uint8), source="big-array")


@pytest.mark.parametrize("shape", [(16, 3400, 3), (3400, 16)])
def test_extreme_aspect_ratio_fails_naming_the_input(processor, shape):
    # Qwen-VL's image processor refuses aspect ratios above 200; the user must learn which image and what to do.
    with pytest.raises(ValueError) as raised:
        processor.prepare_sample(np.zeros(shape, dtype=np.uint8), source="panorama.png")
    _assert_names(raised.value, "panorama.png")
    assert isinstance(raised.value, ImageInputError)


def test_empty_arrays_of_any_dtype_fail_as_too_small():
    for dtype in (np.uint8, np.uint16, np.int16, np.int32, np.int64, np.uint32, np.float32, np.bool_):
        for shape in ((0, 40), (40, 0), (0, 0, 3)):
            with pytest.raises(ImageInputError, match="empty-frame: .*too small"):
                load_image(np.zeros(shape, dtype=dtype), source="empty-frame")


def test_sources_are_resized_to_the_fused_size_within_two_percent(sources_model):
    processor = sources_model.processor
    fused = _rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ir_double = np.kron(fused[..., 0], np.ones((2, 2), dtype=np.uint8))  # 96 x 128: same aspect, another resolution
    vis_close = _rng(2).integers(0, 256, (48, 65, 3), dtype=np.uint8)  # 1.6 % wider: within tolerance
    images = processor.prepare_images(fused, ir_double, vis_close, source="scene-7")
    assert [image.size for image in images] == [(64, 48)] * 3
    sample = processor.prepare_sample(fused, ir_double, vis_close, source="scene-7")
    assert sample["image_grid_thw"].shape == (3, 3) and (sample["image_grid_thw"] == sample["image_grid_thw"][0]).all()
    assert 1.0 <= sources_model.score(fused, ir=ir_double, vis=vis_close) <= 5.0


def test_sources_with_another_aspect_ratio_fail_naming_the_role_and_sizes(sources_model, tmp_path):
    fused = tmp_path / "fused_0042.png"
    _rgb(1, size=(48, 64)).save(fused)
    square_ir = _rng(3).integers(0, 256, (64, 64), dtype=np.uint8)  # 33 % off
    vis = _rng(4).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with pytest.raises(ImageInputError) as raised:
        sources_model.score(str(fused), ir=square_ir, vis=vis)
    message = str(raised.value)
    assert "fused_0042.png" in message and "infrared source is 64x64" in message and "64x48" in message
    assert "register" in message
    slightly_off = _rng(5).integers(0, 256, (48, 67, 3), dtype=np.uint8)  # 4.7 % off
    with pytest.raises(ImageInputError, match="the visible source is 67x48"):
        sources_model.processor.prepare_sample(str(fused), vis, slightly_off)
    with pytest.raises(ImageInputError, match="pass ir= and vis="):
        sources_model.score(str(fused))


# ---------------------------------------------------------------------------------------------------------------------
# Property tests: generated junk into load_image, prepare_sample and the table validator
# ---------------------------------------------------------------------------------------------------------------------

_DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint32, np.float16, np.float32, np.float64,
           np.bool_]


@st.composite
def junk_arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    shape = draw(st.one_of(
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=24),
        st.tuples(st.integers(12, 40), st.integers(12, 40)),
        st.tuples(st.integers(12, 40), st.integers(12, 40), st.sampled_from([1, 2, 3, 4, 5])),
    ))
    if dtype.kind == "f":
        elements = st.one_of(st.floats(0, 1, width=dtype.itemsize * 8),
                             st.floats(allow_nan=True, allow_infinity=True, width=dtype.itemsize * 8))
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


def _check_loaded(image: Image.Image):
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert min(image.size) >= MIN_IMAGE_SIDE and image.width * image.height <= MAX_IMAGE_PIXELS


@PROPERTY
@given(array=junk_arrays(), as_tensor=st.booleans())
def test_load_image_on_junk_arrays_returns_rgb_or_names_the_input(array, as_tensor):
    image = torch.from_numpy(array.copy()) if as_tensor and array.dtype != np.uint32 else array
    try:
        result = load_image(image, source="junk-array-17")
    except ImageInputError as error:
        _assert_names(error, "junk-array-17")
    else:
        _check_loaded(result)


@PROPERTY
@given(junk=st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5), st.lists(st.integers(0, 255), max_size=4),
                      st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_load_image_on_non_image_objects_names_the_input(junk):
    with pytest.raises(ImageInputError) as raised:
        load_image(junk, source="odd-object")
    _assert_names(raised.value, "odd-object")


@st.composite
def mutated_image_bytes(draw):
    fmt = draw(st.sampled_from(ENCODABLE_FORMATS))
    data = bytearray(_encoded(_rgb(draw(st.integers(0, 3)), size=(20, 24)), fmt))
    operation = draw(st.sampled_from(["truncate", "flip", "both", "random"]))
    if operation == "random":
        return fmt, draw(st.binary(max_size=400))
    if operation in ("flip", "both"):
        for position, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=6)):
            data[position] = value
    if operation in ("truncate", "both"):
        data = data[: draw(st.integers(0, len(data)))]
    return fmt, bytes(data)


@PROPERTY
@given(case=mutated_image_bytes())
def test_load_image_on_corrupted_files_returns_rgb_or_names_the_file(case):
    fmt, data = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload.{fmt.lower()}"
        path.write_bytes(data)
        for image in (str(path), data):  # a path names itself; bytes are named by `source`
            try:
                result = load_image(image, source=None if isinstance(image, str) else "upload-bytes")
            except ImageInputError as error:
                _assert_names(error, path.name if isinstance(image, str) else "upload-bytes")
            else:
                _check_loaded(result)


@PROPERTY
@given(fused_shape=st.tuples(st.integers(8, 40), st.one_of(st.integers(8, 64), st.integers(3000, 4200))),
       ir_shape=st.tuples(st.integers(8, 90), st.integers(8, 90)), vis_scale=st.sampled_from([0.5, 1.0, 1.5, 2.0]),
       vis_skew=st.sampled_from([0.0, 0.01, 0.05, 0.3]), ir_dtype=st.sampled_from([np.uint8, np.uint16, np.float32]))
def test_prepare_sample_on_junk_sizes_gives_a_sample_or_names_the_input(sources_model, fused_shape, ir_shape, vis_scale,
                                                                          vis_skew, ir_dtype):
    rng = _rng(sum(fused_shape) + sum(ir_shape))
    fused = rng.integers(0, 256, (*fused_shape, 3), dtype=np.uint8)
    ir = (rng.random(ir_shape) if ir_dtype == np.float32 else rng.integers(0, 256, ir_shape)).astype(ir_dtype)
    vis_size = (max(1, round(fused_shape[0] * vis_scale)), max(1, round(fused_shape[1] * vis_scale * (1 + vis_skew))))
    vis = rng.integers(0, 256, (*vis_size, 3), dtype=np.uint8)
    try:
        sample = sources_model.processor.prepare_sample(fused, ir, vis, source="pair-x/method-y")
    except ValueError as error:  # ImageInputError is a ValueError; either way it must name the sample
        _assert_names(error, "pair-x/method-y")
    else:
        grid = sample["image_grid_thw"]
        assert grid.shape == (3, 3) and (grid == grid[0]).all()  # the sources were brought to the fused size
        tokens = sum(1 for token in sample["input_ids"] if token == sources_model.processor.image_token_id)
        assert tokens == int(grid.prod(-1).sum()) // sources_model.processor.merge_size**2


_GOOD_PNGS = [_encoded(_rgb(seed, size=(20, 20)), "PNG") for seed in range(6)]
_SCORES = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e300, -1e300, 0.0, 3.0]))


@st.composite
def junk_tables(draw):
    rows = []
    for i in range(draw(st.integers(0, 5))):
        fused_kind = draw(st.sampled_from(["good", "good", "junk", "missing", "none"]))
        fused = {"good": {"bytes": _GOOD_PNGS[i], "path": None},
                 "junk": {"bytes": draw(st.binary(max_size=60)), "path": None},
                 "missing": {"bytes": None, "path": f"/nonexistent/fused_{i}.png"},
                 "none": None}[fused_kind]
        row = {"fused": fused, "pair_id": draw(st.sampled_from(["road", "yard", "", " "])),
               "method": draw(st.sampled_from(["avg", "max", "lap", ""]))}
        for column in (*SCORE_COLUMNS, *SPREAD_COLUMNS):
            row[column] = draw(_SCORES)
        rows.append(row)
    return rows


def _as_dataset(rows):
    features = datasets.Features({"fused": datasets.Image(), "pair_id": datasets.Value("string"),
                                  "method": datasets.Value("string"),
                                  **{c: datasets.Value("float64") for c in (*SCORE_COLUMNS, *SPREAD_COLUMNS)}})
    if not rows:
        return datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    return datasets.Dataset.from_list(rows, features=features)


@PROPERTY
@given(rows=junk_tables(), score_range=st.sampled_from([None, (1.0, 5.0), (0.0, 100.0)]), require_mos=st.booleans())
def test_table_validator_on_junk_lists_every_bad_row_and_raises_only_its_error(rows, score_range, require_mos):
    table = _as_dataset(rows)
    problems = find_problems(table, score_range=score_range, require_mos=require_mos)
    assert isinstance(problems, list) and all(isinstance(problem, str) for problem in problems)
    if not rows:
        assert problems == ["the table is empty (0 rows)"]
    for i, row in enumerate(rows):
        label = f"row {i} (pair_id={row['pair_id']!r}, method={row['method']!r})"
        mine = [problem for problem in problems if label in problem]
        for column in (*SCORE_COLUMNS, *SPREAD_COLUMNS):
            value = row[column]
            if value is not None and not np.isfinite(value):
                assert any(f"{column} is " in p and "finite" in p for p in mine), (column, value, mine)
        if row["fused"] is None or (row["fused"]["bytes"] is not None and row["fused"]["bytes"] not in _GOOD_PNGS):
            assert any("fused image" in p for p in mine), mine
        if row["fused"] is not None and row["fused"]["path"]:
            assert any(row["fused"]["path"] in p for p in mine), mine
        if not row["pair_id"].strip() or not row["method"]:
            assert any("is empty" in p for p in mine), mine
    try:
        validate_table(table, score_range=score_range, require_mos=require_mos)
    except TableValidationError as error:
        # The same problems (decoder messages may hold object addresses, so compare what each problem is about).
        assert [p.split(": ")[0] for p in error.problems] == [p.split(": ")[0] for p in problems]
        assert str(error).startswith(f"The rating table has {len(problems)} problem(s)")
    else:
        assert problems == []


# ---------------------------------------------------------------------------------------------------------------------
# Rating tables: loading, validation and atomic saving
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_table():
    return SyntheticIVIF(image_size=32, seed=3).table(num_scenes=3, images_per_scene=2)


def _leftovers(parent: Path, name: str) -> list:
    return [entry for entry in os.listdir(parent) if entry.startswith(f".{name}.")]


def test_non_finite_scores_are_refused_before_anything_is_written(tmp_path, small_table):
    bad = small_table.map(lambda row, i: {"mos": float("nan") if i == 1 else row["mos"],
                                           "sharpness": float("inf") if i == 4 else row["sharpness"]}, with_indices=True)
    for writer in (save_imagefolder, save_arrow):
        with pytest.raises(TableValidationError) as raised:
            writer(bad, tmp_path / writer.__name__)
        assert len(raised.value.problems) == 2
        assert "row 1 " in raised.value.problems[0] and "mos is nan" in raised.value.problems[0]
        assert "row 4 " in raised.value.problems[1] and "sharpness is inf" in raised.value.problems[1]
        assert not (tmp_path / writer.__name__).exists() and _leftovers(tmp_path, writer.__name__) == []


@pytest.mark.parametrize("failure", [OSError("disk full (simulated)"), KeyboardInterrupt()])
def test_a_failed_save_over_an_existing_table_keeps_the_old_one(tmp_path, small_table, monkeypatch, failure):
    target = save_arrow(small_table, tmp_path / "ratings")
    before = sorted(os.listdir(target))

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(tables, "write_dataset_card", fail)  # after the data files, before the rename
    with pytest.raises(type(failure)):
        save_arrow(small_table.select(range(2)), target, overwrite=True)
    with pytest.raises(type(failure)):
        save_imagefolder(small_table, tmp_path / "fresh")
    assert sorted(os.listdir(target)) == before and len(load_table(target)) == len(small_table)
    assert not (tmp_path / "fresh").exists()
    assert _leftovers(tmp_path, "ratings") == [] and _leftovers(tmp_path, "fresh") == []


def test_a_save_to_disk_failing_half_way_leaves_nothing(tmp_path, small_table, monkeypatch):
    def save_half(self, path, *args, **kwargs):
        Path(path, "data-00000-of-00001.arrow").parent.mkdir(parents=True, exist_ok=True)
        Path(path, "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError("no space left on device (simulated)")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", save_half)
    with pytest.raises(OSError, match="simulated"):
        save_arrow(small_table, tmp_path / "arrow_table")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------------------
# The trainer's table path: a user's table is validated (file / row named) before any training
# ---------------------------------------------------------------------------------------------------------------------


def _data_args(path, **kwargs):
    from trainer_fuscore import DataArguments

    return DataArguments(train_table=str(path), **kwargs)


def test_trainer_loads_a_users_table_scene_disjoint_and_on_the_unit_scale(tmp_path, small_table):
    from trainer_fuscore import load_tables

    six_scenes = datasets.concatenate_datasets([small_table, SyntheticIVIF(image_size=32, seed=4).table(3, 2)])
    # A 20..100 rating scale for every score, spreads scaled with it.
    scaled = six_scenes.map(lambda row: {c: 20 * row[c] for c in (*SCORE_COLUMNS, *SPREAD_COLUMNS)})
    folder = save_imagefolder(scaled, tmp_path / "user_table")
    train, evaluation = load_tables(_data_args(folder, eval_fraction=0.34, score_range="20,100"), seed=0)
    assert set(train["pair_id"]).isdisjoint(evaluation["pair_id"]) and len(train) + len(evaluation) == len(scaled)
    assert all(1.0 - 1e-4 <= value <= 5.0 + 1e-4 for value in list(train["mos"]) + list(evaluation["mos"]))


def test_trainer_refuses_a_table_with_non_finite_scores_naming_the_row(tmp_path, small_table):
    from trainer_fuscore import load_tables

    bad = small_table.map(lambda row, i: {"mos": float("inf") if i == 3 else row["mos"]}, with_indices=True)
    folder = save_arrow(bad, tmp_path / "bad_scores", validate=False)
    with pytest.raises(TableValidationError) as raised:
        load_tables(_data_args(folder), seed=0)
    assert any("row 3 " in problem and "mos is inf" in problem for problem in raised.value.problems)


def _empty_tables(tmp_path) -> list:
    empty = datasets.Dataset.from_dict({name: [] for name in RATING_FEATURES}, features=RATING_FEATURES)
    arrow = save_arrow(empty, tmp_path / "empty_arrow", validate=False)
    folder = tmp_path / "empty_folder"
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "metadata.jsonl").write_text("")
    return [arrow, folder]


def test_loading_an_empty_table_says_it_is_empty(tmp_path):
    for path in _empty_tables(tmp_path):
        with pytest.raises(ValueError) as raised:  # TableValidationError is a ValueError
            load_table(path)
        assert str(path) in str(raised.value) and "empty" in str(raised.value)


def test_trainer_refuses_an_empty_table(tmp_path):
    from trainer_fuscore import load_tables

    for path in _empty_tables(tmp_path):
        with pytest.raises(ValueError) as raised:
            load_tables(_data_args(path), seed=0)
        assert str(path) in str(raised.value) and "empty" in str(raised.value)


def test_trainer_refuses_a_table_with_a_truncated_image_naming_the_file(tmp_path, small_table):
    from trainer_fuscore import load_tables

    folder = save_imagefolder(small_table, tmp_path / "folder_table")
    victim = sorted((folder / "train" / "fused").iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(TableValidationError) as raised:
        load_tables(_data_args(folder), seed=0)
    assert any(victim.name in problem and "row 2 " in problem for problem in raised.value.problems)


def test_collator_names_the_row_of_a_bad_image(tmp_path, tiny_models):
    from trainer_fuscore import FuScoreCollator

    model = tiny_models["qwen2_vl"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(_encoded(_rgb(1), "PNG")[:50])
    rows = [{"fused": _rgb(2), "pair_id": "road", "method": "avg", "mos": 3.0},
            {"fused": str(broken), "pair_id": "road", "method": "lap", "mos": 2.0}]
    collator = FuScoreCollator(model.processor, model.config.level_values)
    with pytest.raises(ImageInputError, match=r"pair 'road', method 'lap'"):
        collator(rows)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints of an unsupported model type; level words that are not single tokens
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    from transformers import LlamaConfig

    folder = tmp_path_factory.mktemp("tiny_llama")
    LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1).save_pretrained(folder)
    return folder


def test_from_base_refuses_an_unsupported_model_type_naming_it(llama_folder):
    with pytest.raises(ValueError) as raised:
        FuScoreForQuality.from_base(str(llama_folder))
    message = str(raised.value)
    assert str(llama_folder) in message and "'llama'" in message and "Qwen/Qwen3-VL-8B-Instruct" in message


def test_trainer_load_model_refuses_an_unsupported_model_type(llama_folder):
    from trainer_fuscore import ModelArguments, load_model

    with pytest.raises(ValueError, match=r"'llama' model; FuScore wraps Qwen-VL models"):
        load_model(ModelArguments(model_name_or_path=str(llama_folder)))


def test_config_with_a_foreign_base_config_is_refused():
    with pytest.raises(ValueError, match=r"model_type='llama'"):
        FuScoreConfig(base_config={"model_type": "llama", "hidden_size": 16})


def test_level_words_that_are_not_single_tokens_are_refused_naming_the_word():
    with pytest.raises(ValueError) as raised:
        build_tiny_model("qwen2_vl", level_words=["excellent", "good", "fair", "poor", "terrible"])
    assert "'terrible'" in str(raised.value) and "single token" in str(raised.value)
    model = build_tiny_model("qwen2_vl", seed=1)
    tokenizer = build_tiny_tokenizer()
    with pytest.raises(ValueError, match="repeated token ids"):
        model.set_level_words(tokenizer, ["good", "good", "fair", "poor", "bad"])
    with pytest.raises(ValueError, match="'magnificent'"):
        model.set_level_words(tokenizer, ["magnificent", "good", "fair", "poor", "bad"])
    assert model.config.level_words == ["excellent", "good", "fair", "poor", "bad"]  # a refused change changes nothing


# ---------------------------------------------------------------------------------------------------------------------
# EXIF orientation: images are scored as viewers display them
# ---------------------------------------------------------------------------------------------------------------------


def _sideways_jpeg(path: Path) -> Image.Image:
    """A camera-style JPEG stored sideways with EXIF orientation 6 (display = stored rotated 90 degrees clockwise);
    returns the upright image a viewer shows."""
    stored = Image.fromarray(np.concatenate([np.full((40, 90, 3), 230, np.uint8),
                                             _rng(5).integers(0, 256, (24, 90, 3), dtype=np.uint8)]))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, format="JPEG", exif=exif.tobytes(), quality=95)
    with Image.open(path) as reopened:
        return reopened.convert("RGB").transpose(Image.Transpose.ROTATE_270)


def test_exif_orientation_is_applied_to_files_bytes_and_pil_images(tmp_path, tiny_models):
    path = tmp_path / "phone.jpg"
    upright = _sideways_jpeg(path)
    assert upright.size == (64, 90)
    for given in (path, str(path), path.read_bytes()):
        loaded = load_image(given)
        assert loaded.size == (64, 90)
        assert np.array_equal(np.asarray(loaded), np.asarray(upright))
    with Image.open(path) as opened:
        assert np.array_equal(np.asarray(load_image(opened)), np.asarray(upright))
        assert opened.size == (90, 64) and opened.getexif()[0x0112] == 6, "the caller's image is left as it was"
    assert processing_fuscore.image_size(path) == (64, 90), "batching counts the displayed size's visual tokens"

    model = tiny_models["qwen2_vl"]
    scores = model.score([str(path), np.asarray(upright), np.asarray(upright.transpose(Image.Transpose.ROTATE_90))])
    assert scores[0] == scores[1], "a sideways-stored photo scores as the upright image"
    assert scores[0] != scores[2], "the orientation matters to the model, so the check above can fail"


# ---------------------------------------------------------------------------------------------------------------------
# Scoring arguments and inputs that used to fail vaguely or silently
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [2.5, None, "8", True, 0, -3])
def test_a_bad_batch_size_names_the_argument(tiny_models, random_images, batch_size):
    import pipeline_fuscore
    from transformers import pipeline

    model = tiny_models["qwen2_vl"]
    with pytest.raises(ValueError, match="batch_size must be"):
        model.score(random_images[:2], batch_size=batch_size)
    if batch_size is not None:  # a pipeline's None means its default
        scorer = pipeline(pipeline_fuscore.TASK_NAME, model=model, device="cpu")
        with pytest.raises(ValueError, match="batch_size must be"):
            scorer(random_images[:2], batch_size=batch_size)


@pytest.mark.parametrize("num_workers", [-1, 1.5, None])
def test_a_bad_num_workers_names_the_argument(tiny_models, random_images, num_workers):
    with pytest.raises(ValueError, match="num_workers must be"):
        tiny_models["qwen2_vl"].score(random_images[:2], num_workers=num_workers)


def test_a_bad_file_under_worker_processes_fails_with_its_own_message(tmp_path, tiny_models):
    paths = []
    for index in range(6):
        path = tmp_path / f"image_{index}.png"
        _rgb(index).save(path)
        paths.append(str(path))
    (tmp_path / "image_3.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageInputError) as caught:
        tiny_models["qwen2_vl"].score(paths, batch_size=2, num_workers=2)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "image_3.png")), message
    assert "DataLoader worker" not in message and "Traceback" not in message
    # The workers stop when the call raises, not when the error is released (that took 10 s).
    import multiprocessing

    assert not multiprocessing.active_children()


def test_no_dimensions_is_an_error_not_an_empty_result(tiny_models, random_images):
    import pipeline_fuscore
    from transformers import pipeline

    model = tiny_models["qwen2_vl"]
    for call in (lambda: model.score(random_images[:1], dimensions=[]),
                 lambda: pipeline(pipeline_fuscore.TASK_NAME, model=model, device="cpu")(random_images[0], dimensions=[])):
        with pytest.raises(ValueError, match="dimensions is empty; name at least one of: overall"):
            call()


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_arrays_are_refused_not_cast(dtype, recwarn):
    array = (_rng(2).random((32, 32)) + 1j * _rng(3).random((32, 32))).astype(dtype)
    for given in (array, torch.from_numpy(array)):
        with pytest.raises(ImageInputError, match="complex numbers"):
            load_image(given, source="spectrum")
    assert not [w for w in recwarn if "imaginary" in str(w.message)]


def _frames(count: int) -> list:
    return [_rgb(seed, size=(32, 32)) for seed in range(count)]


@pytest.mark.parametrize("fmt", [fmt for fmt in ("GIF", "PNG", "WEBP", "TIFF") if fmt in Image.SAVE])
@pytest.mark.slow
def test_animated_and_multi_page_images_are_refused_with_the_fix(tmp_path, fmt):
    frames = _frames(3)
    path = tmp_path / f"animated.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    with Image.open(path) as opened:
        assert opened.n_frames == 3
    for given in (path, path.read_bytes()):
        with pytest.raises(ImageInputError, match="animated or multi-page .* 3 frames.*image.seek"):
            load_image(given)
    with Image.open(path) as opened:
        with pytest.raises(ImageInputError, match="3 frames"):
            load_image(opened)
        opened.seek(1)
        frame = opened.copy()  # the documented way to score one frame
    assert load_image(frame).size == (32, 32)
    still = tmp_path / f"still.{fmt.lower()}"
    frames[0].save(still, format=fmt)
    assert load_image(still).size == (32, 32)


def test_a_multi_picture_jpeg_is_read_as_its_photo(tmp_path):
    photo, preview = _rgb(7, size=(48, 64)), _rgb(8, size=(48, 64))
    path = tmp_path / "camera.jpg"
    photo.save(path, format="MPO", save_all=True, append_images=[preview], quality=95)
    with Image.open(path) as opened:
        assert opened.format == "MPO" and opened.n_frames == 2
        expected = np.asarray(opened.convert("RGB"))
    assert np.array_equal(np.asarray(load_image(path)), expected)


@pytest.mark.slow
def test_sources_given_to_a_fused_only_model_are_ignored_with_a_warning(tiny_models, random_images):
    import pipeline_fuscore
    from transformers import pipeline

    model = tiny_models["qwen2_vl"]
    fused, source = random_images[0], random_images[0][..., 0]
    with pytest.warns(UserWarning, match="reads the fused image alone.*sources given with it are ignored"):
        with_sources = model.score(fused, ir=source, vis=source)
    assert with_sources == model.score(fused)
    scorer = pipeline(pipeline_fuscore.TASK_NAME, model=model, device="cpu")
    with pytest.warns(UserWarning, match="reads the fused image alone"):
        scorer({"fused": fused, "ir": source, "vis": source})


def test_a_folder_given_as_an_image_says_what_to_do(tmp_path):
    with pytest.raises(ImageInputError, match="a folder, not an image file. Pass its images as a list of paths"):
        load_image(str(tmp_path))
