"""service/preprocessing.py on its own: polarity, background, stroke width, crop, centring."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from model_card import PreprocessingSpec
from service import preprocessing
from service.errors import InvalidInputError
from service.preprocessing import PREPROCESS_BYTES_PER_PIXEL, prepare
from service.preprocessing.primitives import block_reduce
from service.preprocessing.sheet import find_sheet

SPEC = PreprocessingSpec(default="mnist", invert="auto", digit_box=20, canvas=28)


def drawn_seven(size: int, pen: int, ink: int = 0, paper: int = 255) -> np.ndarray:
    """A '7' drawn with a pen ``pen`` pixels wide on a size x size canvas. uint8 (size, size)."""
    image = Image.new("L", (size, size), paper)
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = size * 0.3, size * 0.7, size * 0.2, size * 0.8
    draw.line([(left, top), (right, top), (size * 0.45, bottom)], fill=ink, width=pen)
    return np.asarray(image)


def width_in_box(digit: np.ndarray) -> float:
    """Stroke width of a preprocessed 28x28 digit, in pixels of its 20x20 box."""
    return preprocessing.stroke_width(digit)


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8, 13])
@pytest.mark.parametrize("angle", [0, 30, 45, 80])
def test_stroke_width_estimates_lines_of_any_direction(width: int, angle: int) -> None:
    image = Image.new("1", (400, 400), 0)
    direction = np.deg2rad(angle)
    centre = np.array([200.0, 200.0])
    offset = 150 * np.array([np.cos(direction), np.sin(direction)])
    ImageDraw.Draw(image).line(
        [tuple(centre - offset), tuple(centre + offset)], fill=1, width=width
    )
    line = np.asarray(image)
    true_width = line.sum() / 300  # Pillow draws some angles thinner than asked.
    assert preprocessing.stroke_width(line) == pytest.approx(true_width, rel=0.25, abs=0.5)


def test_stroke_width_of_nothing_is_zero() -> None:
    assert preprocessing.stroke_width(np.zeros((10, 10), dtype=bool)) == 0.0


@pytest.mark.parametrize("size, pen", [(100, 1), (400, 1), (1500, 1), (300, 24), (64, 6)])
@pytest.mark.parametrize("ink, paper", [(0, 255), (255, 0), (30, 200), (220, 40)])
def test_polarity_is_judged_from_ink_of_any_width(
    size: int, pen: int, ink: int, paper: int
) -> None:
    gray = drawn_seven(size, pen, ink, paper).astype(np.float32)
    assert preprocessing.ink_is_dark(gray, "auto") == (ink < paper)


def test_polarity_follows_the_model_card_when_it_is_not_auto() -> None:
    gray = drawn_seven(100, 3).astype(np.float32)  # Dark ink.
    assert preprocessing.ink_is_dark(gray, "never") is False
    assert preprocessing.ink_is_dark(255 - gray, "always") is True


def test_background_fit_removes_uneven_lighting_under_ink() -> None:
    rows, columns = np.mgrid[0:64, 0:64].astype(np.float32)
    lighting = 150 + 60 * columns / 63 - 30 * (rows / 63) ** 2
    gray = lighting.copy()
    gray[20:44, 30:34] -= 100  # A dark stroke covering a few percent of the image.
    background = preprocessing.fit_background(gray)
    assert np.abs(background.at(gray.shape) - lighting).max() < 3.0
    assert background.noise < 1.0


def test_mnist_digits_pass_through_almost_unchanged(
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    images, _ = mnist_digits
    correlations = []
    for digit in images[:50]:
        prepared = preprocessing.mnist_style(digit.astype(np.float32), SPEC)
        correlations.append(np.corrcoef(prepared.ravel(), digit.ravel() / 255.0)[0, 1])
    assert float(np.median(correlations)) > 0.9


@pytest.mark.parametrize("size, pen", [(120, 1), (400, 1), (1500, 1), (1500, 3), (200, 2)])
def test_thin_pens_come_out_at_mnist_stroke_width(size: int, pen: int) -> None:
    digit = preprocessing.mnist_style(drawn_seven(size, pen), SPEC)
    assert digit.max() == pytest.approx(1.0)
    assert 1.5 <= width_in_box(digit) <= 3.5


@pytest.mark.parametrize("size, pen", [(300, 40), (120, 18), (800, 100)])
def test_thick_markers_are_thinned_towards_mnist_width(size: int, pen: int) -> None:
    digit = preprocessing.mnist_style(drawn_seven(size, pen), SPEC)
    assert 1.5 <= width_in_box(digit) <= 4.5


def test_digit_is_fitted_in_its_box_and_centred_by_mass() -> None:
    digit = preprocessing.mnist_style(drawn_seven(500, 12), SPEC)
    rows, columns = np.nonzero(digit > 0.05)
    assert max(np.ptp(rows), np.ptp(columns)) + 1 <= 21
    total = digit.sum()
    centre = [(np.indices(digit.shape)[axis] * digit).sum() / total for axis in (0, 1)]
    assert centre == pytest.approx([14.0, 14.0], abs=1.0)


def ink_box(digit: np.ndarray) -> tuple[int, int, int, int]:
    rows, columns = np.nonzero(digit > 0.3)
    return int(rows.min()), int(rows.max()), int(columns.min()), int(columns.max())


def test_small_digit_far_off_centre_on_a_big_canvas_is_found() -> None:
    canvas = np.full((900, 900), 255, dtype=np.uint8)
    canvas[700:820, 60:180] = drawn_seven(120, 3)
    found = preprocessing.mnist_style(canvas, SPEC)
    alone = preprocessing.mnist_style(drawn_seven(120, 3), SPEC)
    assert np.abs(np.subtract(ink_box(found), ink_box(alone))).max() <= 1
    assert width_in_box(found) == pytest.approx(width_in_box(alone), abs=0.5)


def test_specks_and_page_edges_stay_out_of_the_digit_box() -> None:
    """A dark table edge along the photo's side is cut off with the sheet, and a speck far from
    the digit is dropped: the result is the clean drawing's, cut to the same sheet."""
    noisy = drawn_seven(300, 12).copy()
    noisy[:, :15] = 0  # A dark table edge along the photo's side.
    noisy[10:14, 270:274] = 0  # A speck far from the digit.
    sheet = find_sheet(noisy)
    assert sheet is not None and sheet.columns.start >= 15
    clean = preprocessing.mnist_style(drawn_seven(300, 12)[sheet.rows, sheet.columns], SPEC)
    np.testing.assert_array_equal(preprocessing.mnist_style(noisy, SPEC), clean)


def test_blank_flat_and_noise_images_have_no_digit() -> None:
    rng = np.random.default_rng(0)
    lit_unevenly = np.linspace(120, 200, 100, dtype=np.float32)[np.newaxis, :].repeat(100, 0)
    for image in (
        np.full((100, 100), 200.0, dtype=np.float32),
        lit_unevenly,
        np.clip(rng.normal(180, 6, (100, 100)), 0, 255).astype(np.float32),
    ):
        with pytest.raises(InvalidInputError, match="no digit"):
            preprocessing.mnist_style(image, SPEC)


@pytest.mark.parametrize("contrast", [12, 20, 40])
def test_faint_ink_a_person_can_see_is_a_digit(contrast: int) -> None:
    """Pencil 12-40 grey levels darker than noisy paper is found, not refused as blank."""
    rng = np.random.default_rng(contrast)
    faint = drawn_seven(200, 5, ink=200 - contrast, paper=200).astype(np.float32)
    noisy = np.clip(faint + rng.normal(0, 1.5, faint.shape), 0, 255)
    digit = preprocessing.mnist_style(noisy, SPEC)
    clean = preprocessing.mnist_style(drawn_seven(200, 5), SPEC)
    assert np.corrcoef(digit.ravel(), clean.ravel())[0, 1] > 0.8


def test_max_reduction_keeps_a_one_pixel_line() -> None:
    image = np.zeros((30, 30), dtype=np.uint8)
    image[:, 7] = 255
    assert block_reduce(image, 3, "max")[:, 2].min() == 255.0
    assert block_reduce(image, 3, "mean")[:, 2].max() == pytest.approx(85.0)


def rgba(strokes: np.ndarray, colour: tuple[int, int, int], opaque_background: bool) -> Image.Image:
    """The coverage of ``strokes`` (0-255) as a drawing app's RGBA layer."""
    layer = np.zeros((*strokes.shape, 4), dtype=np.uint8)
    layer[..., :3] = colour
    layer[..., 3] = 255 if opaque_background else strokes
    if opaque_background:
        coverage = strokes[..., np.newaxis] / 255.0
        layer[..., :3] = (255 * (1 - coverage) + np.asarray(colour) * coverage).astype(np.uint8)
    return Image.fromarray(layer, "RGBA")


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (200, 30, 30)])
def test_transparent_strokes_of_any_colour_are_composited_to_contrast(
    colour: tuple[int, int, int],
) -> None:
    strokes = 255 - drawn_seven(200, 6)
    gray = preprocessing.to_grayscale(rgba(strokes, colour, opaque_background=False))
    ink_pixels, empty_pixels = gray[strokes > 200], gray[strokes == 0]
    assert abs(float(ink_pixels.mean()) - float(empty_pixels.mean())) > 50


def test_opaque_rgba_reads_like_rgb() -> None:
    strokes = 255 - drawn_seven(150, 2)
    image = rgba(strokes, (0, 0, 0), opaque_background=True)
    np.testing.assert_array_equal(
        preprocessing.to_grayscale(image), preprocessing.to_grayscale(image.convert("RGB"))
    )


@settings(max_examples=60, derandomize=True, deadline=None, database=None)
@given(
    width=st.one_of(st.integers(1, 3000), st.sampled_from([1, 2, 16_383, 200_000])),
    height=st.one_of(st.integers(1, 3000), st.sampled_from([1, 2, 976, 60_000])),
    method=st.sampled_from(["mnist", "resize"]),
    content=st.sampled_from(["blank", "noise", "bar"]),
)
def test_preprocessing_memory_stays_within_its_per_pixel_budget(
    width: int, height: int, method: str, content: str
) -> None:
    """Every method, any aspect ratio: NumPy holds at most PREPROCESS_BYTES_PER_PIXEL per pixel
    (plus a fixed 2 MB), which the decode budget reserves; the answer is a digit or a 422."""
    if width * height > 16_000_000:
        width = max(1, 16_000_000 // height)
    gray = np.full((height, width), 230, dtype=np.uint8)
    if content == "noise":
        gray[:] = np.random.default_rng(width * height).integers(0, 256, gray.shape)
    elif content == "bar":
        gray[height // 4 : max(height // 4 + 1, 3 * height // 4), width // 2 :: 7] = 20
    tracemalloc.start()
    try:
        digit = prepare(gray, method, SPEC)  # type: ignore[arg-type]
    except InvalidInputError:
        digit = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= PREPROCESS_BYTES_PER_PIXEL * width * height + 2 * 2**20, (peak, width, height)
    if digit is not None:
        assert digit.shape == (28, 28) and np.isfinite(digit).all()
        assert 0.0 <= digit.min() and digit.max() <= 1.0
