"""Uploaded images to model input within the process's decode budget and the request's deadline.

Each image is opened once, in one thread hop: its header is read and checked there and, when the
memory its decode will hold is free in the budget, it is decoded and preprocessed in the same
hop. Only an image that must wait for memory goes back to the event loop to wait (without
holding a thread), then decodes in a second hop. Images are taken one at a time, and none is
decoded once the request's deadline has passed or its client has gone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from PIL import Image

from model_card import PreprocessingSpec, PreprocessMethod
from service.limits import Deadline, MemoryBudget
from service.preprocessing.batches import check_size_as_is, item_errors, prepare
from service.preprocessing.decoding import ImageLimits, decode_opened, header_of, open_image


@dataclass(frozen=True)
class _MustWait:
    """An opened image whose decode needs ``amount`` bytes that were not free."""

    image: Image.Image
    amount: int


def _open_then_prepare(
    blob: bytes,
    method: PreprocessMethod,
    spec: PreprocessingSpec,
    limits: ImageLimits,
    budget: MemoryBudget,
    notes: set[str],
) -> np.ndarray | _MustWait:
    """In a decoding thread: open and check ``blob``, then decode and preprocess it if its
    bytes are free (float32 (canvas, canvas)); else hand the opened image back."""
    image = open_image(blob, limits)
    try:
        header = header_of(image)
        if method == "none":
            check_size_as_is(header.size, spec)
        budget.check(header.decode_bytes)
    except BaseException:
        image.close()
        raise
    if not budget.try_take(header.decode_bytes):
        return _MustWait(image, header.decode_bytes)
    return _prepare_taken(image, header.decode_bytes, method, spec, budget, notes)


def _prepare_taken(
    image: Image.Image,
    amount: int,
    method: PreprocessMethod,
    spec: PreprocessingSpec,
    budget: MemoryBudget,
    notes: set[str],
) -> np.ndarray:
    """Decode and preprocess an opened image whose ``amount`` bytes are taken; give them back."""
    try:
        return prepare(decode_opened(image), method, spec, notes)
    finally:
        budget.give_back(amount)


async def _prepared(
    blob: bytes,
    method: PreprocessMethod,
    spec: PreprocessingSpec,
    limits: ImageLimits,
    budget: MemoryBudget,
    deadline: Deadline,
    notes: set[str],
) -> np.ndarray:
    outcome = await asyncio.to_thread(_open_then_prepare, blob, method, spec, limits, budget, notes)
    if not isinstance(outcome, _MustWait):
        return outcome
    try:
        await budget.wait_and_take(outcome.amount)
    except BaseException:
        outcome.image.close()
        raise
    try:
        deadline.check()
    except BaseException:
        outcome.image.close()
        budget.give_back(outcome.amount)
        raise
    return await asyncio.to_thread(
        _prepare_taken, outcome.image, outcome.amount, method, spec, budget, notes
    )


async def prepare_uploads(
    blobs: list[bytes],
    method: PreprocessMethod,
    spec: PreprocessingSpec,
    limits: ImageLimits,
    budget: MemoryBudget,
    deadline: Deadline,
    notes: list[set[str]] | None = None,
) -> np.ndarray:
    """Encoded images -> float32 (N, canvas, canvas, 1), off the event loop; ``notes`` gets one
    set per image of what preprocessing noticed (see ``batches.prepare``).

    Raises:
        ServiceError: the first image that cannot be used, with ``details.item``; the request's
            deadline or its client going (``Deadline.check``).
    """
    prepared = []
    for index, blob in enumerate(blobs):
        deadline.check()
        noticed: set[str] = set()
        with item_errors(index):
            prepared.append(await _prepared(blob, method, spec, limits, budget, deadline, noticed))
        if notes is not None:
            notes.append(noticed)
    return np.stack(prepared)[..., np.newaxis]
