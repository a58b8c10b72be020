"""Image kernels and processors against Pillow and transformers' PIL/NumPy backend.

The reference is transformers' own processor class, called with ``input_data_format="channels_last"``
(for a 1x1 or 3-pixel-wide image it would otherwise guess the channel axis wrong and fail or
mangle it, which is its inference, not its preprocessing)."""
import io
import json

import numpy as np
import PIL.Image
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import HAS_TORCHVISION
from smg._ext import USE_TWINS
from smg.errors import InvalidImage, UnsupportedFeature
from smg.multimodal import kernels_py
from smg.multimodal.processor import ImageProcessor, kernels

transformers_qwen = pytest.importorskip("transformers.models.qwen2_vl.image_processing_qwen2_vl")
transformers_llava = pytest.importorskip("transformers.models.llava.image_processing_llava")
transformers_llava_next = pytest.importorskip("transformers.models.llava_next.image_processing_llava_next")
transformers_pixtral = pytest.importorskip("transformers.models.pixtral.image_processing_pixtral")

FILTERS = [kernels_py.LANCZOS, kernels_py.BILINEAR, kernels_py.BICUBIC, kernels_py.BOX, kernels_py.HAMMING]


def _pil_resize(array, out_h, out_w, filter_id):
    image = PIL.Image.fromarray(array if array.shape[2] == 3 else array[:, :, 0])
    return np.asarray(image.resize((out_w, out_h), resample=filter_id)).reshape(out_h, out_w, array.shape[2])


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), out_h=st.integers(1, 90), out_w=st.integers(1, 90),
       filter_id=st.sampled_from(FILTERS), channels=st.sampled_from([1, 3]), seed=st.integers(0, 2**32 - 1))
def test_resize_is_pillow_bit_for_bit(h, w, out_h, out_w, filter_id, channels, seed):
    array = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    assert np.array_equal(kernels().resize(array, out_h, out_w, filter_id), _pil_resize(array, out_h, out_w, filter_id))


def _window(corners, out_h: int, out_w: int) -> tuple[int, int, int, int]:
    """A window (top, left, height, width) of an out_h x out_w result, from four fractions."""
    y0, y1 = sorted(int(c * out_h) for c in corners[:2])
    x0, x1 = sorted(int(c * out_w) for c in corners[2:])
    top, left = min(y0, out_h - 1), min(x0, out_w - 1)
    return top, left, max(1, y1 - top), max(1, x1 - left)


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 60), w=st.integers(1, 60), out_h=st.integers(1, 80), out_w=st.integers(1, 80),
       filter_id=st.sampled_from(FILTERS), torch_weights=st.booleans(), channels=st.sampled_from([3, 4]),
       corners=st.tuples(*[st.floats(0, 1)] * 4), seed=st.integers(0, 2**32 - 1))
def test_a_resize_window_is_that_crop_of_the_whole(h, w, out_h, out_w, filter_id, torch_weights, channels,
                                                   corners, seed):
    array = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    window = _window(corners, out_h, out_w)
    top, left = window[:2]
    whole = kernels().resize(array, out_h, out_w, filter_id, torch_weights)
    part = kernels().resize(array, out_h, out_w, filter_id, torch_weights, window=window)
    assert np.array_equal(part, whole[top:top + window[2], left:left + window[3]])


def test_a_resize_window_outside_the_result_is_refused():
    array = np.zeros((10, 10, 3), np.uint8)
    for window in [(0, 0, 6, 5), (-1, 0, 2, 2), (0, 0, 0, 1)]:
        with pytest.raises(ValueError, match="window"):
            kernels().resize(array, 5, 5, kernels_py.BICUBIC, window=window)


def test_resize_pass_order_follows_pillow():
    # Height shrinks by more than twice what the width does: Pillow runs the vertical pass first.
    array = np.random.default_rng(7).integers(0, 256, (30, 26, 3), dtype=np.uint8)
    assert not kernels_py.horizontal_first(30, 26, 8, 39)
    assert np.array_equal(kernels().resize(array, 8, 39, kernels_py.BILINEAR), _pil_resize(array, 8, 39, 2))


def test_resize_large_photo_matches_pillow():
    if USE_TWINS:
        pytest.skip("the NumPy twins are slow on a 12-megapixel photo; the compiled pass covers it (CI time)")
    array = np.random.default_rng(1).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    for out_h, out_w in [(868, 1148), (4000, 3000)]:
        assert np.array_equal(kernels().resize(array, out_h, out_w, kernels_py.BICUBIC),
                              _pil_resize(array, out_h, out_w, kernels_py.BICUBIC))


@pytest.mark.compiled_only
@pytest.mark.parametrize("passes", ["avx2", "numba"])
@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 50), w=st.integers(1, 50), out_h=st.integers(1, 70), out_w=st.integers(1, 70),
       filter_id=st.sampled_from(FILTERS), torch_weights=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_resize_pass_by_pass_where_the_cpu_has_no_whole_resize(passes, h, w, out_h, out_w, filter_id,
                                                               torch_weights, seed):
    # A CPU without the VNNI passes resizes pass by pass: the AVX2 pass across and the Numba pass
    # down, or the Numba passes alone, the coefficients the compiled module's either way.
    from smg._ext import resample
    from smg.multimodal import kernels as compiled

    if passes not in (*resample.TIERS, "numba"):
        pytest.skip("this CPU has no AVX2")
    array = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    with pytest.MonkeyPatch.context() as patch:  # (the module as such a CPU would have it)
        patch.setattr(compiled._resample, "SIMD", passes if passes != "numba" else "")
        patch.setattr(compiled._resample, "VERTICAL_TIERS", ())
        ours = compiled.resize(array, out_h, out_w, filter_id, torch_weights)
    assert np.array_equal(ours, kernels_py.resize(array, out_h, out_w, filter_id, torch_weights))


def _compiled_passes(axis: int) -> list:
    """(tier, pass) for each compiled pass of ``axis`` (0: vertical, 1: horizontal) this CPU runs."""
    from smg._ext import resample

    run = resample.vertical if axis == 0 else resample.horizontal
    return [(tier, lambda *args, tier=tier: run(*args, tier=tier))
            for tier in (resample.VERTICAL_TIERS if axis == 0 else resample.TIERS)]


# (axis is a pytest parameter, not a hypothesis one: a CPU with no compiled pass down the columns
# skips that axis alone, where a skip inside the hypothesis loop would skip both)
@pytest.mark.compiled_only
@pytest.mark.parametrize("axis", [0, 1])
@settings(max_examples=75, deadline=None)
@given(across=st.integers(1, 40), along=st.integers(1, 90), outputs=st.integers(1, 120),
       filter_id=st.sampled_from(FILTERS), torch_weights=st.booleans(), ends=st.tuples(st.floats(0, 1), st.floats(0, 1)),
       seed=st.integers(0, 2**32 - 1))
def test_resample_passes_agree(axis, across, along, outputs, filter_id, torch_weights, ends, seed):
    # Every compiled pass this CPU runs (smg._ext.resample: AVX2 and AVX512-VNNI across, VNNI
    # down), the Numba pass each stands in for, and the twin: the same integers, on windows of the
    # output too (a window's last pixels read up to the row's end, where the loads are masked; a
    # row's last bytes are a masked tail of the vertical pass unless the row is 8 pixels a multiple).
    from smg._ext import resample_py
    from smg.multimodal import kernels as compiled

    shape = (along, across, 4) if axis == 0 else (across, along, 4)
    image = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    first, last = sorted(min(int(e * outputs), outputs - 1) for e in ends)
    bounds, weights, precision = kernels_py.resample_coeffs(along, outputs, filter_id, torch_weights)
    bounds, weights = bounds[first:last + 1], weights[first:last + 1].astype(np.int32)
    twin = (resample_py.vertical if axis == 0 else resample_py.horizontal)(image, bounds, weights, precision)
    for tier, run in _compiled_passes(axis):  # (none where the CPU runs none: the Numba pass still checked)
        assert np.array_equal(run(image, bounds, weights, precision), twin), tier
    numba = compiled._vertical if axis == 0 else compiled._horizontal
    assert np.array_equal(numba(image, bounds, weights, precision), twin)


@pytest.mark.compiled_only
@pytest.mark.parametrize("axis", [0, 1])
@settings(max_examples=75, deadline=None)
@given(size=st.integers(1, 40), ksize=st.integers(1, 12), precision=st.integers(1, 22), data=st.data())
def test_resample_passes_agree_on_any_weights(axis, size, ksize, precision, data):
    # Weights of every size the passes take (to +-3 << 21, where the VNNI passes' top digit is
    # largest), not only a filter's: each digit and half of the split weights is exercised.
    from smg._ext import resample_py

    passes = _compiled_passes(axis)
    if not passes:
        pytest.skip("this CPU runs no compiled pass of this axis")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    outputs, across = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 11))
    image = rng.integers(0, 256, (size, across, 4) if axis == 0 else (across, size, 4), dtype=np.uint8)
    counts = rng.integers(0, min(ksize, size) + 1, outputs)
    bounds = np.stack([rng.integers(0, size - counts + 1), counts], axis=1).astype(np.int64)
    most = min(3 << 21, (2**31 - 2**30) // (255 * ksize))  # (sums within int32, as Pillow's are)
    weights = rng.integers(-most, most + 1, (outputs, ksize)).astype(np.int32)
    weights[:, :3] = data.draw(st.sampled_from([-most, most, 0, 2047, -2048, 255, -129]))  # digit edges
    twin = (resample_py.vertical if axis == 0 else resample_py.horizontal)(image, bounds, weights, precision)
    for tier, run in passes:
        assert np.array_equal(run(image, bounds, weights, precision), twin), tier


@pytest.mark.compiled_only
@settings(max_examples=200, deadline=None)
@given(in_size=st.integers(1, 700), out_size=st.integers(1, 700), filter_id=st.sampled_from(FILTERS),
       torch_weights=st.booleans())
def test_resample_coeffs_agree(in_size, out_size, filter_id, torch_weights):
    # The compiled module's coefficients (C doubles, rounded to fixed point) against the twin's:
    # every bound, every weight and the precision.
    from smg._ext import resample

    bounds, weights, precision = resample.coeffs(in_size, out_size, filter_id, torch_weights)
    twin_bounds, twin_weights, twin_precision = kernels_py.resample_coeffs(in_size, out_size, filter_id, torch_weights)
    assert precision == twin_precision
    assert np.array_equal(bounds, twin_bounds)
    assert weights.dtype == np.int32 and np.array_equal(weights, twin_weights)


@pytest.mark.compiled_only
@settings(max_examples=200, deadline=None)
@given(h=st.integers(1, 50), w=st.integers(1, 50), out_h=st.integers(1, 70), out_w=st.integers(1, 70),
       filter_id=st.sampled_from(FILTERS), torch_weights=st.booleans(), horizontal_first=st.booleans(),
       corners=st.tuples(*[st.floats(0, 1)] * 4), seed=st.integers(0, 2**32 - 1))
def test_the_whole_resize_agrees(h, w, out_h, out_w, filter_id, torch_weights, horizontal_first, corners, seed):
    # One call for the whole resize (every tier with both passes), against the twin: either pass
    # order, windows of the result (each pass reads only the pixels the window needs), and axes
    # that keep their size (no pass, the window's pixels).
    from smg._ext import resample, resample_py

    image = np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8)
    args = (out_h, out_w, *_window(corners, out_h, out_w), filter_id, torch_weights, horizontal_first)
    twin = resample_py.resize(image, *args)
    for tier in resample.VERTICAL_TIERS:  # (none where the CPU has no compiled vertical pass)
        assert np.array_equal(resample.resize(image, *args, tier=tier), twin), tier


@pytest.mark.parametrize("module", [pytest.param("resample", marks=pytest.mark.compiled_only), "resample_py"])
def test_the_whole_resize_refuses_what_it_cannot_compute(module):
    import importlib

    resample = importlib.import_module(f"smg._ext.{module}")
    if not resample.VERTICAL_TIERS:
        pytest.skip("this CPU has no compiled vertical pass")
    image = np.zeros((5, 5, 4), np.uint8)
    for window in [(0, 0, 0, 1), (-1, 0, 2, 2), (4, 0, 2, 2), (0, 3, 1, 3)]:  # empty, before, past the result
        with pytest.raises(ValueError, match="window"):
            resample.resize(image, 5, 5, *window, kernels_py.BICUBIC, False, True)
    with pytest.raises(ValueError, match="pixels"):
        resample.resize(np.zeros((5, 5, 3), np.uint8), 3, 3, 0, 0, 3, 3, kernels_py.BICUBIC, False, True)
    for filter_id in (kernels_py.NEAREST, 9):
        with pytest.raises(ValueError, match="filter"):
            resample.resize(image, 3, 3, 0, 0, 3, 3, filter_id, False, True)
        with pytest.raises(ValueError, match="filter"):
            resample.coeffs(5, 3, filter_id)
    with pytest.raises(ValueError, match="coefficients"):
        resample.coeffs(0, 3, kernels_py.BICUBIC)


@pytest.mark.compiled_only
def test_the_resample_passes_refuse_what_they_cannot_compute():
    from smg._ext import resample

    if not resample.TIERS:
        pytest.skip("this CPU has no AVX2")
    image = np.zeros((5, 5, 4), np.uint8)
    weights = np.ones((1, 3), np.int32)
    for axis, run in [(1, resample.horizontal)] + [(0, resample.vertical)] * bool(resample.VERTICAL_TIERS):
        for bounds in ([[3, 3]], [[-1, 2]], [[0, 4]]):  # past the image's end, before its start, past the weights
            with pytest.raises(ValueError, match="window"):
                run(image, np.array(bounds, np.int64), weights, 22)
        with pytest.raises(ValueError, match="beyond"):
            run(image, np.array([[0, 1]], np.int64), np.full((1, 3), (3 << 21) + 1, np.int32), 22)
        with pytest.raises(RuntimeError, match="does not run"):
            run(image, np.array([[0, 1]], np.int64), weights, 22, tier="neon")


@pytest.mark.compiled_only
@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2**32 - 1),
       patch=st.sampled_from([2, 4, 14]), merge=st.sampled_from([1, 2]))
def test_compiled_kernels_equal_twins(h, w, seed, patch, merge):
    from smg.multimodal import kernels as compiled

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    lut = rng.standard_normal((3, 256)).astype(np.float32)
    for height, width, fill in ((h, w, 0), (h + 3, w + 5, 255)):  # (on a larger canvas: padded with fill)
        assert np.array_equal(compiled.normalize_chw(image, lut, height, width, fill),
                              kernels_py.normalize_chw(image, lut, height, width, fill))
        into = [np.full((2, 3, height + 1, width + 2), np.nan, np.float32) for _ in range(2)]  # (views of a batch)
        compiled.normalize_into(image, lut, fill, into[0][1, :, :height, :width])
        kernels_py.normalize_into(image, lut, fill, into[1][1, :, :height, :width])
        assert np.array_equal(into[0], into[1], equal_nan=True)
        for out_h, out_w in ((7, 5), (2 * h + 1, w)):  # (down and up)
            assert np.array_equal(compiled.bicubic_canvas(image, lut, height, width, fill, out_h, out_w),
                                  kernels_py.bicubic_canvas(image, lut, height, width, fill, out_h, out_w))
    side = patch * merge
    tiled = rng.integers(0, 256, (side * (1 + h % 3), side * (1 + w % 3), 3), dtype=np.uint8)
    rows = (tiled.shape[0] // patch) * (tiled.shape[1] // patch)
    into = [np.full((rows + 2, 3 * 2 * patch * patch), np.nan, np.float32) for _ in range(2)]
    compiled.flatten_patches(tiled, lut, patch, merge, 2, into[0][1:-1])  # (rows of a larger batch)
    kernels_py.flatten_patches(tiled, lut, patch, merge, 2, into[1][1:-1])
    assert np.array_equal(into[0], into[1], equal_nan=True) and not np.isnan(into[0][1:-1]).any()
    for filter_id in FILTERS:
        assert np.array_equal(compiled.resize(image, w, h, filter_id), kernels_py.resize(image, w, h, filter_id))
        assert np.array_equal(compiled.resize(image, w, h, filter_id, True),
                              kernels_py.resize(image, w, h, filter_id, True))
        window = (h // 3, w // 4, h - h // 3, max(1, w // 2))  # (top, left, height, width)
        assert np.array_equal(compiled.resize(image, h + 5, w, filter_id, window=window),
                              kernels_py.resize(image, h + 5, w, filter_id, window=window))
    rows, cols = -(-h // patch), -(-w // patch)  # the canvas covers the image
    # placed at the corner, inside, and partly past the canvas's end (that part left out)
    for top, left in ((0, 0), (patch // 2, 1), (rows * patch - 1, cols * patch // 2)):
        tiles = [np.full((5, 3, patch, patch), np.nan, np.float32) for _ in range(2)]
        if rows * cols <= 4:
            compiled.normalize_tiles(image, lut, patch, rows, cols, top, left, 255, tiles[0][1:1 + rows * cols])
            kernels_py.normalize_tiles(image, lut, patch, rows, cols, top, left, 255, tiles[1][1:1 + rows * cols])
            assert np.array_equal(tiles[0], tiles[1], equal_nan=True)
    for kernels_module in (compiled, kernels_py):
        with pytest.raises(ValueError, match="negative"):
            kernels_module.normalize_tiles(image, lut, patch, 1, 1, -1, 0, 0, np.empty((1, 3, patch, patch), np.float32))


QWEN3 = {"patch_size": 16, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
         "size": {"longest_edge": 16777216, "shortest_edge": 65536}}
LLAVA_15 = {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}}

FAMILIES = {
    "qwen2_vl": ({}, lambda c: transformers_qwen.Qwen2VLImageProcessor(**c)),
    "qwen3_vl": ({}, lambda c: transformers_qwen.Qwen2VLImageProcessor(**{**QWEN3, **c})),
    "llava": (LLAVA_15, lambda c: transformers_llava.LlavaImageProcessor(**c)),
    "llava-pad": ({**LLAVA_15, "do_pad": True}, lambda c: transformers_llava.LlavaImageProcessor(**c)),
    "llava-small-crop": ({"size": {"shortest_edge": 20}, "crop_size": {"height": 32, "width": 24}},
                         lambda c: transformers_llava.LlavaImageProcessor(**c)),
    "qwen2_vl-bilinear-bounds": ({"resample": 2, "min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 64},
                                 lambda c: transformers_qwen.Qwen2VLImageProcessor(**c)),
    "llava_next": (LLAVA_15, lambda c: transformers_llava_next.LlavaNextImageProcessor(**c)),
    "llava_next-defaults": ({}, lambda c: transformers_llava_next.LlavaNextImageProcessor(**c)),
    "pixtral": ({}, lambda c: transformers_pixtral.PixtralImageProcessor(**c)),
    "pixtral-mistral3": ({"patch_size": {"height": 14, "width": 14}, "size": {"longest_edge": 1540}},
                         lambda c: transformers_pixtral.PixtralImageProcessor(**c)),
}

MODES = ["RGB", "RGBA", "LA", "P", "PA", "L", "1", "I;16", "CMYK"]
SIZES = [(1, 1), (3, 2), (7, 5), (33, 1000), (640, 480), (1280, 720), (4000, 3000), (1000, 6)]


def _image(width, height, mode, seed, fmt=None):
    rng = np.random.default_rng(seed)
    base = PIL.Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    if mode == "P":
        image = base.convert("RGB").quantize(64)
    elif mode == "PA":  # palette with a transparent index
        image = base.convert("RGB").quantize(16)
        image.info["transparency"] = 3
    elif mode == "I;16":
        image = PIL.Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
        assert image.mode == "I;16"
    else:
        image = base.convert(mode)
    if fmt is not None:  # through an encoder and back, as a fetched image arrives
        buffer = io.BytesIO()
        (image.convert("RGB") if fmt == "JPEG" else image).save(buffer, fmt)
        image = PIL.Image.open(io.BytesIO(buffer.getvalue()))
        image.load()
    return image


def _compare(family, images):
    config, make_reference = FAMILIES[family]
    ours = ImageProcessor.create(family.split("-")[0], config)
    reference = make_reference(dict(config))
    expected = reference(images, return_tensors="np", input_data_format="channels_last")
    got = ours(images)
    assert set(got) == set(expected)
    for key in expected:
        want = np.asarray(expected[key])
        assert got[key].shape == want.shape and got[key].dtype == want.dtype, key
        if np.issubdtype(want.dtype, np.integer):
            assert np.array_equal(got[key], want), key
        else:
            assert float(np.abs(got[key].astype(np.float64) - want).max()) <= 1e-5, key
    return got


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_processor_matches_transformers_across_sizes(family, size):
    width, height = size
    if USE_TWINS and width * height > 2_000_000:
        pytest.skip("the NumPy twins are slow on a 12-megapixel photo; the compiled pass covers it (CI time)")
    _compare(family, [_image(width, height, "RGB", 1), _image(height, width, "RGB", 2)])


@pytest.mark.parametrize("family", ["qwen2_vl", "llava", "llava_next", "pixtral"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", [None, "PNG", "JPEG"])
def test_processor_matches_transformers_for_every_mode(family, mode, fmt):
    if fmt == "PNG" and mode in ("CMYK",):
        fmt = "TIFF"  # PNG cannot hold CMYK
    _compare(family, [_image(45, 31, mode, 3, fmt), _image(17, 60, mode, 4, fmt)])


def test_qwen_outputs_and_token_counts():
    processor = ImageProcessor.create("qwen2_vl")
    processed = processor.process_one(_image(640, 480, "RGB", 5))
    grid = processed.arrays["image_grid_thw"]
    assert grid.tolist() == [[1, 34, 46]]  # 476x644 -> 34x46 patches of 14
    assert processed.num_tokens == 34 * 46 // 4
    assert processed.arrays["pixel_values"].shape == (34 * 46, 3 * 2 * 14 * 14)


def test_llava_token_count_is_patch_grid():
    processed = ImageProcessor.create("llava", LLAVA_15).process_one(_image(500, 300, "RGB", 6))
    assert processed.arrays["pixel_values"].shape == (1, 3, 336, 336)
    assert processed.num_tokens == 24 * 24


def test_extreme_aspect_ratio_is_refused_like_transformers():
    image = _image(1000, 4, "RGB", 8)
    with pytest.raises(ValueError, match="aspect ratio"):
        transformers_qwen.Qwen2VLImageProcessor()([image], return_tensors="np", input_data_format="channels_last")
    with pytest.raises(InvalidImage, match="aspect ratio"):
        ImageProcessor.create("qwen2_vl")([image])


def test_config_from_dict_file_or_directory(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"patch_size": 16, "merge_size": 2}))
    for source in (tmp_path, tmp_path / "preprocessor_config.json", str(tmp_path), {"patch_size": 16}):
        processor = ImageProcessor.create("qwen2_vl", source)
        assert processor.patch == 16


def test_a_directorys_processor_config_fills_in_the_token_settings(tmp_path):
    """Mistral Small 3.1 keeps spatial_merge_size in processor_config.json: it doubles Pixtral's
    patch side; the preprocessor file's own keys win where both have one."""
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"patch_size": {"height": 14, "width": 14}}))
    (tmp_path / "processor_config.json").write_text(json.dumps({"patch_size": 99, "spatial_merge_size": 2}))
    assert ImageProcessor.create("pixtral", tmp_path).patch == (28, 28)
    assert ImageProcessor.create("pixtral", tmp_path / "preprocessor_config.json").patch == (14, 14)


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown image processor family 'no-such-family'"):
        ImageProcessor.create("no-such-family")


@pytest.mark.parametrize("family", ["qwen2_vl", "pixtral", "phi4_multimodal", "llava_next", "llava"])
def test_threads_give_the_same_batch(family):
    """(each of these writes its images straight into one batch, from the executor's threads)"""
    from concurrent.futures import ThreadPoolExecutor

    processor = ImageProcessor.create(family)
    images = [_image(300 + 40 * i, 200 + 30 * i, "RGB", 10 + i) for i in range(4)]
    with ThreadPoolExecutor(2) as pool:
        threaded = processor(images, executor=pool)
    serial = processor(images)
    assert all(np.array_equal(threaded[key], serial[key]) for key in serial)
    if family == "qwen2_vl":
        return  # (its batch stacks patch rows, not images)
    alone = [processor([image]) for image in images]  # the batch: each image's own, zero-padded
    for key in serial:
        assert all(np.array_equal(serial[key][i][tuple(slice(0, n) for n in one[key][0].shape)], one[key][0])
                   for i, one in enumerate(alone))


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava", "llava_next", "pixtral", "llama4",
                                    "phi4_multimodal"])
def test_a_batch_says_which_image_it_refused(family):
    """The processor marks the image it refused (InvalidImage.image_index), whether the refusal
    comes while the batch is sized or while the image is processed, so the gateway can name it;
    images that only fail together carry no index."""
    config = {"do_convert_rgb": False}
    gray, deep = _image(64, 48, "L", 1), _image(64, 48, "I;16", 2)  # (one 8-bit, one not: the second refused)
    with pytest.raises(InvalidImage, match="not 8-bit") as refused:
        ImageProcessor.create(family, config)([gray, deep])
    assert refused.value.image_index == 1
    with pytest.raises(InvalidImage, match="channel counts|different shapes") as together:
        ImageProcessor.create(family, config)([gray, _image(64, 48, "RGB", 3)])
    assert together.value.image_index is None
    if family in ("qwen2_vl", "phi4_multimodal"):  # (refused from its size, before any pixel work)
        with pytest.raises(InvalidImage, match="aspect ratio") as extreme:
            ImageProcessor.create(family)([_image(64, 48, "RGB", 4), _image(64, 48, "RGB", 5), _image(1000, 4, "RGB", 6)])
        assert extreme.value.image_index == 2


@pytest.mark.parametrize("config", [{}, {"do_pad": True}, {"do_center_crop": False}])
def test_a_llava_batch_is_each_image_alone(config):
    """LLaVA's batch is written in place when every image has the crop's shape (an image smaller
    than the crop is zero-padded to it, one wider is padded to a square first); without the crop,
    images of one shape still make a batch."""
    processor = ImageProcessor.create("llava", config)
    sizes = [(10, 5), (300, 200), (640, 480)] if config.get("do_center_crop", True) else [(300, 200), (600, 400)]
    images = [_image(w, h, "RGB", 3 + i) for i, (w, h) in enumerate(sizes)]
    batch = processor(images)["pixel_values"]
    assert batch.shape[0] == len(images)
    for i, image in enumerate(images):
        assert np.array_equal(batch[i:i + 1], processor([image])["pixel_values"])


# ---- placeholder token counts against transformers' model processors ---------------------------

@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    """A transformers tokenizer (the shipped Llama 3.2 one) holding every family's image tokens."""
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import PreTrainedTokenizerFast

    from smg.tokenizer.bundled import bundled_tokenizer_dir

    raw = HFTokenizer.from_file(str(bundled_tokenizer_dir("llama3.2") / "tokenizer.json"))
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in
                            ("<image>", "<|image_pad|>", "[IMG]", "[IMG_BREAK]", "[IMG_END]", "<|image|>",
                             "<|image_start|>", "<|image_end|>", "<|patch|>", "<|tile_x_separator|>",
                             "<|tile_y_separator|>")])
    path = tmp_path_factory.mktemp("hf-tok") / "tokenizer.json"
    raw.save(str(path))
    return PreTrainedTokenizerFast(tokenizer_file=str(path))


def _reference_ids(hf_tokenizer, family, config, image, placeholder):
    from transformers.models.llava.processing_llava import LlavaProcessor
    from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor
    from transformers.models.pixtral.processing_pixtral import PixtralProcessor

    clip = {"patch_size": 14, "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1}
    make = {
        "llava": lambda: LlavaProcessor(transformers_llava.LlavaImageProcessor(**config), hf_tokenizer, **clip),
        "llava_next": lambda: LlavaNextProcessor(transformers_llava_next.LlavaNextImageProcessor(**config),
                                                 hf_tokenizer, **clip),
        "pixtral": lambda: PixtralProcessor(transformers_pixtral.PixtralImageProcessor(**config), hf_tokenizer,
                                            patch_size=16),
        "llama4": lambda: _llama4_processor(config, hf_tokenizer),
    }[family]()
    if family == "llama4":  # (a torchvision processor: tensors only)
        out = make(text=placeholder, images=[image], return_tensors="pt", add_special_tokens=False)
    else:
        out = make(text=placeholder, images=[image], return_tensors="np", add_special_tokens=False,
                   images_kwargs={"input_data_format": "channels_last"})
    return out["input_ids"][0].tolist()


# (Qwen2-VL's model processor needs its video processor, which needs torchvision: its count, grid
# t*h*w over merge**2, is pinned by test_qwen_outputs_and_token_counts.)
@pytest.mark.parametrize("family, config", [("llava", LLAVA_15), ("llava_next", LLAVA_15), ("pixtral", {}),
                                            ("llama4", {})])
@pytest.mark.parametrize("size", [(1, 1), (640, 480), (33, 1000), (1000, 6), (719, 1283)], ids=str)
def test_placeholder_expansion_equals_transformers_processors(hf_tokenizer, family, config, size):
    ours = ImageProcessor.create(family, config)
    image = _image(*size, "RGB", 12)
    token_ids = {t: hf_tokenizer.convert_tokens_to_ids(t) for t in (ours.image_token, *ours.structure_tokens)}
    expected = _reference_ids(hf_tokenizer, family, config, image, ours.image_token)
    assert ours.placeholder_ids(ours.process_one(image), token_ids) == expected


def test_registry_matches_the_family_names():
    from smg.multimodal import FAMILIES
    from smg.multimodal.processor import ImageProcessor as Base

    ImageProcessor.create("llava")  # (imports the families)
    assert sorted(Base._registry) == sorted(FAMILIES)


def _over_pillow_memory(array) -> bool:
    import ctypes

    while array is not None:
        if isinstance(array, ctypes.Array):
            return True
        array = getattr(array, "base", None)
    return False


@pytest.mark.parametrize("single_block", [True, False])
def test_pixels_view_pillow_memory_when_one_block(single_block):
    from PIL.Image import core

    from smg.multimodal.pixels import pixels

    previous = core.get_use_block_allocator()
    core.set_use_block_allocator(int(single_block))
    try:
        for mode in ("RGB", "RGBA", "L", "P", "I;16"):
            image = _image(37, 23, mode, 20)
            got, want = pixels(image), np.asarray(image)
            want = want[:, :, None] if want.ndim == 2 else want
            assert got.shape == want.shape and np.array_equal(got, want), mode
            assert _over_pillow_memory(got) == (single_block and mode in ("RGB", "RGBA", "L")), mode
            del image  # the view keeps Pillow's memory alive
            assert np.array_equal(got, want)
        processor = ImageProcessor.create("qwen2_vl")
        images = [_image(300, 200, "RGB", 21), _image(90, 300, "RGBA", 22)]
        reference = transformers_qwen.Qwen2VLImageProcessor()(images, return_tensors="np",
                                                              input_data_format="channels_last")
        assert float(np.abs(processor(images)["pixel_values"] - reference["pixel_values"]).max()) <= 1e-5
    finally:
        core.set_use_block_allocator(previous)



# ---- Llama 4: transformers has only a torchvision processor ------------------------------------

def _llama4_reference(config):
    if not HAS_TORCHVISION:
        pytest.skip("torchvision is not installed (the test extra installs it)")
    from transformers.models.llama4.image_processing_llama4_fast import Llama4ImageProcessorFast

    return Llama4ImageProcessorFast(**config)


def _llama4_processor(config, tokenizer):
    from transformers.models.llama4.processing_llama4 import Llama4Processor

    return Llama4Processor(_llama4_reference(config), tokenizer, chat_template=None)


@settings(max_examples=80, deadline=None)
@given(h=st.integers(1, 90), w=st.integers(1, 90), out_h=st.integers(1, 120), out_w=st.integers(1, 120),
       bicubic=st.booleans(), channels=st.sampled_from([1, 3, 4]), seed=st.integers(0, 2**32 - 1))
def test_resize_with_torch_weights_is_torchvision_bit_for_bit(h, w, out_h, out_w, bicubic, channels, seed):
    if not HAS_TORCHVISION:
        pytest.skip("torchvision is not installed")
    import torch
    import torchvision.transforms.v2.functional as tvF
    from torchvision.transforms import InterpolationMode

    array = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    mode = InterpolationMode.BICUBIC if bicubic else InterpolationMode.BILINEAR
    try:
        expected = tvF.resize(torch.from_numpy(array).permute(2, 0, 1).contiguous(), [out_h, out_w],
                              interpolation=mode, antialias=True).permute(1, 2, 0).numpy()
    except RuntimeError:  # torch's AVX kernel asserts on some one-pixel-wide images (a torch bug)
        assume(False)
    filter_id = kernels_py.BICUBIC if bicubic else kernels_py.BILINEAR
    assert np.array_equal(kernels().resize(array, out_h, out_w, filter_id, True), expected)


@pytest.mark.parametrize("config", [{}, {"max_patches": 4}, {"resample": 3}], ids=["default", "4-tiles", "bicubic"])
@pytest.mark.parametrize("size", SIZES + [(336, 336), (700, 500), (1500, 300)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_llama4_matches_transformers_in_bfloat16(config, size):
    reference = _llama4_reference(config)
    images = [_image(*size, "RGB", 30)]
    if USE_TWINS and size[0] * size[1] > 2_000_000:
        pytest.skip("the NumPy twins are slow on a 12-megapixel photo; the compiled pass covers it")
    expected = reference(images, return_tensors="pt")
    got = ImageProcessor.create("llama4", config)(images)
    want = expected["pixel_values"].float().numpy()  # bfloat16 values, exactly representable
    assert got["pixel_values"].shape == want.shape and got["pixel_values"].dtype == np.float32
    assert np.array_equal(got["pixel_values"], want)
    assert np.array_equal(got["aspect_ratios"], expected["aspect_ratios"].numpy())


@pytest.mark.parametrize("mode", MODES)
def test_llama4_every_mode(mode):
    reference = _llama4_reference({})
    images = [_image(45, 31, mode, 3, "PNG" if mode != "CMYK" else "TIFF"), _image(700, 400, mode, 4)]
    expected = reference(images, return_tensors="pt")
    got = ImageProcessor.create("llama4")(images)
    assert np.array_equal(got["pixel_values"], expected["pixel_values"].float().numpy())


def test_llama4_max_canvas_is_refused():
    with pytest.raises(UnsupportedFeature, match="resize_to_max_canvas"):
        ImageProcessor.create("llama4", {"resize_to_max_canvas": True})



# ---- Phi-4-multimodal: also torchvision-only in transformers -------------------------------------

def _phi4_reference():
    if not HAS_TORCHVISION:
        pytest.skip("torchvision is not installed (the test extra installs it)")
    from transformers.models.phi4_multimodal.image_processing_phi4_multimodal_fast import (
        Phi4MultimodalImageProcessorFast)

    return Phi4MultimodalImageProcessorFast()


def _compare_phi4(images):
    expected = _phi4_reference()(images, return_tensors="pt")
    got = ImageProcessor.create("phi4_multimodal")(images)
    assert set(got) == set(expected)
    for key, value in expected.items():
        want = value.numpy()
        assert got[key].shape == want.shape and got[key].dtype == want.dtype, key
        if np.issubdtype(want.dtype, np.integer) or key == "image_attention_mask":
            assert np.array_equal(got[key], want), key
        else:  # (the global view is a float bicubic resize: torch's compiler may fuse multiply-adds)
            assert float(np.abs(got[key] - want).max()) <= 1e-5, key


# (1000x6 is refused, as transformers refuses it: test_phi4_refuses_what_transformers_refuses)
@pytest.mark.parametrize("size", [s for s in SIZES if s != (1000, 6)] + [(448, 448), (1500, 300), (5000, 100)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_phi4_matches_transformers(size):
    if USE_TWINS and size[0] * size[1] > 2_000_000:
        pytest.skip("the NumPy twins are slow on a 12-megapixel photo; the compiled pass covers it (CI time)")
    _compare_phi4([_image(*size, "RGB", 40), _image(300, 200, "RGB", 41)])  # a batch: crops padded to the most


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK"])
def test_phi4_modes(mode):
    _compare_phi4([_image(45, 31, mode, 3, "PNG" if mode != "CMYK" else "TIFF")])


def test_phi4_refuses_what_transformers_refuses():
    image = _image(1000, 6, "RGB", 42)
    with pytest.raises(ValueError, match="extreme"):
        _phi4_reference()([image], return_tensors="pt")
    with pytest.raises(InvalidImage, match="too extreme an aspect ratio"):
        ImageProcessor.create("phi4_multimodal")([image])


def test_bicubic_is_torchs_float_resize_of_the_normalised_canvas():
    import torch

    rng = np.random.default_rng(43)
    lut = rng.uniform(-1, 1, (3, 256)).astype(np.float32)
    for (h, w), (height, width) in [((896, 1300), (896, 1344)), ((448, 448), (448, 448)), ((990, 30), (1000, 30)),
                                    ((5, 7), (5, 7))]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        canvas = kernels_py.normalize_chw(image, lut, height, width, 255)  # (white beyond the image)
        expected = torch.nn.functional.interpolate(torch.from_numpy(canvas)[None], size=(448, 448), mode="bicubic",
                                                   align_corners=False, antialias=False)[0].numpy()
        got = kernels().bicubic_canvas(image, lut, height, width, 255, 448, 448)
        assert float(np.abs(got - expected).max()) <= 1e-5


def test_llava_next_writes_a_given_batch_slot_on_either_path():
    """Tiles cut as they are go straight into the batch; tiles that CLIP's steps still resize
    (crop 224, shortest edge 200) are made apart, then written there: the same values."""
    paths = []
    for config in (LLAVA_15, {"size": {"shortest_edge": 200}, "crop_size": {"height": 224, "width": 224},
                              "image_grid_pinpoints": [[448, 224], [224, 448], [448, 448]]}):
        processor = ImageProcessor.create("llava_next", config)
        paths.append(processor._tiles_as_cut)
        image = _image(300, 200, "RGB", 21)
        alone = processor.process_one(image).arrays["pixel_values"]
        slot = np.full((2, *alone.shape), np.nan, np.float32)
        written = processor.process_one(image, slot[1]).arrays["pixel_values"]
        assert np.shares_memory(written, slot)
        assert np.array_equal(slot[1], alone) and np.isnan(slot[0]).all()
    assert paths == [True, False]
