"""service/limits.py's decode budget: bytes taken and given back from any thread, waiters on
the event loop woken whichever thread frees them; and uploads opened once, in one thread hop
while memory is free."""

from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
import pytest
from PIL import Image

from model_card import PreprocessingSpec
from service.errors import PayloadTooLargeError
from service.limits import Deadline, MemoryBudget
from service.preprocessing import decoding
from service.preprocessing.uploads import prepare_uploads

LIMITS = decoding.ImageLimits(max_pixels=4_000_000, max_bytes=1 << 22)
SPEC = PreprocessingSpec.model_validate(
    {"default": "mnist", "canvas": 28, "digit_box": 20, "invert": "auto"}
)


def png(side: int = 64) -> bytes:
    picture = Image.new("L", (side, side), 255)
    picture.paste(0, (side // 3, side // 4, side // 3 + side // 8, 3 * side // 4))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def test_bytes_are_taken_only_while_free_and_never_more_than_the_capacity() -> None:
    budget = MemoryBudget(100)
    assert budget.try_take(60) and not budget.try_take(50) and budget.try_take(40)
    assert budget.available == 0
    budget.give_back(100)
    assert budget.available == 100
    with pytest.raises(PayloadTooLargeError, match="the limit is"):
        budget.check(101)


def test_a_waiter_on_the_loop_wakes_when_a_thread_gives_bytes_back() -> None:
    async def scenario() -> float:
        budget = MemoryBudget(100)
        assert budget.try_take(100)
        loop = asyncio.get_running_loop()
        waiter = asyncio.create_task(budget.wait_and_take(30))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # Nothing free yet.
        started = loop.time()
        threading.Timer(0.1, budget.give_back, args=(100,)).start()
        await asyncio.wait_for(waiter, 5)
        assert budget.available == 70
        return loop.time() - started

    assert asyncio.run(scenario()) < 2.0


def test_uploads_are_opened_once_each(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[int] = []
    real_open = decoding.Image.open

    def counting_open(*args: object, **kwargs: object) -> Image.Image:
        opened.append(1)
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(decoding.Image, "open", counting_open)
    budget = MemoryBudget(64 << 20)
    notes: list[set[str]] = []
    batch = asyncio.run(
        prepare_uploads([png(), png(96)], "mnist", SPEC, LIMITS, budget, Deadline.after(10), notes)
    )
    assert batch.shape == (2, 28, 28, 1) and batch.dtype == np.float32
    assert len(opened) == 2 and len(notes) == 2
    assert budget.available == budget.capacity  # Every byte given back.


def test_an_upload_that_must_wait_for_memory_waits_then_decodes() -> None:
    async def scenario() -> np.ndarray:
        budget = MemoryBudget(64 << 20)
        held = budget.capacity - 1024  # Less free than one image needs.
        assert budget.try_take(held)
        asyncio.get_running_loop().call_later(0.1, budget.give_back, held)
        return await prepare_uploads([png()], "mnist", SPEC, LIMITS, budget, Deadline.after(10))

    assert asyncio.run(scenario()).shape == (1, 28, 28, 1)
