"""service/preprocessing/primitives.py against scikit-image as an oracle."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.measure import block_reduce as skimage_block_reduce
from skimage.measure import label, perimeter_crofton

from service.preprocessing.primitives import block_reduce, stroke_width

ORACLE = settings(max_examples=60, derandomize=True, deadline=None, database=None)


def random_image(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width)).astype(np.uint8)


@ORACLE
@given(
    seed=st.integers(0, 10**6),
    blocks=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    factor=st.integers(2, 9),
    how=st.sampled_from(["mean", "max", "min"]),
)
def test_block_reduce_matches_scikit_image_on_whole_blocks(
    seed: int, blocks: tuple[int, int], factor: int, how: str
) -> None:
    image = random_image(seed, blocks[0] * factor, blocks[1] * factor)
    expected = skimage_block_reduce(
        image, (factor, factor), {"mean": np.mean, "max": np.max, "min": np.min}[how]
    )
    np.testing.assert_allclose(block_reduce(image, factor, how), expected, rtol=1e-5)  # type: ignore[arg-type]


@ORACLE
@given(seed=st.integers(0, 10**6), height=st.integers(1, 60), width=st.integers(1, 60))
def test_partial_edge_blocks_reduce_what_is_there(seed: int, height: int, width: int) -> None:
    """Edge blocks hold fewer pixels (no padding): their mean is the mean of those pixels."""
    image = random_image(seed, height, width)
    reduced = block_reduce(image, 7, "mean")
    assert reduced.shape == (-(-height // 7), -(-width // 7))
    assert reduced[-1, -1] == pytest.approx(
        image[(reduced.shape[0] - 1) * 7 :, (reduced.shape[1] - 1) * 7 :].mean(), rel=1e-5
    )


@ORACLE
@given(
    radius=st.integers(4, 40),
    thickness=st.integers(2, 12),
)
def test_crofton_perimeter_of_rings_agrees_with_scikit_image(radius: int, thickness: int) -> None:
    """stroke_width is twice the ink over the Crofton perimeter (4 directions): for a ring of
    known width, both the perimeter behind it and the width agree with the oracle's."""
    size = 2 * (radius + thickness) + 8
    rows, columns = np.mgrid[0:size, 0:size] - size / 2
    distance = np.hypot(rows, columns)
    ring = (distance >= radius) & (distance < radius + thickness)
    perimeter = perimeter_crofton(ring, directions=4)
    expected_width = 2 * ring.sum() / perimeter
    assert stroke_width(ring) == pytest.approx(expected_width, rel=0.02)
    assert stroke_width(ring) == pytest.approx(thickness, rel=0.2, abs=0.6)


@ORACLE
@given(seed=st.integers(0, 10**6), density=st.floats(0.05, 0.6))
def test_connected_pieces_are_the_same_as_scikit_image_finds(seed: int, density: float) -> None:
    mask = np.random.default_rng(seed).random((48, 64)) < density
    ours, count = cc3d.connected_components(mask, connectivity=8, return_N=True)
    theirs, their_count = label(mask, connectivity=2, return_num=True)
    assert count == their_count
    # The same partition of the pixels, whatever the numbering.
    pairs = set(zip(ours[mask].tolist(), theirs[mask].tolist(), strict=True))
    assert len(pairs) == count
