"""Preprocessing: decoding within limits, the MNIST-style digit finder, and batch assembly.

``decoding`` reads uploads within their limits; ``digits`` finds and frames one digit;
``primitives`` holds the image operations both use; ``batches`` turns images and arrays into the
model's input.
"""

from service.preprocessing.batches import (
    arrays_to_batch,
    as_is,
    check_size_as_is,
    checked_unit_interval,
    images_to_batch,
    item_errors,
    plain_resize,
    prepare,
    prepare_image,
)
from service.preprocessing.decoding import (
    PREPROCESS_BYTES_PER_PIXEL,
    ImageHeader,
    ImageLimits,
    decode_grayscale,
    read_header,
    to_grayscale,
)
from service.preprocessing.digits import ink_is_dark, ink_map, mnist_style, normalise_stroke
from service.preprocessing.primitives import fit_background, stroke_width

__all__ = [
    "PREPROCESS_BYTES_PER_PIXEL",
    "ImageHeader",
    "ImageLimits",
    "arrays_to_batch",
    "as_is",
    "check_size_as_is",
    "checked_unit_interval",
    "decode_grayscale",
    "fit_background",
    "images_to_batch",
    "ink_is_dark",
    "ink_map",
    "item_errors",
    "mnist_style",
    "normalise_stroke",
    "plain_resize",
    "prepare",
    "prepare_image",
    "read_header",
    "stroke_width",
    "to_grayscale",
]
