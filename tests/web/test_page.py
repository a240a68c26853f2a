"""The web page, end to end in headless Chromium (Debian's package) driven by Playwright.

Screenshots are saved under artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.conftest import MODELS_DIR, ROOT
from tests.imaging import encode, mnist_png, paper_photo
from tests.servers import running_service

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """The real service (python -m service) on a free local port."""
    with running_service() as service:
        yield service.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture()
def page(browser: Browser, server_url: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.goto(server_url)
    expect(opened.locator("#model-select option")).not_to_have_count(0)
    yield opened
    context.close()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def draw(page: Page, strokes: list[list[tuple[float, float]]]) -> None:
    """Draw strokes given in canvas fractions (0-1), moving the mouse in small steps."""
    box = page.locator("#draw-canvas").bounding_box()
    assert box is not None
    for stroke in strokes:
        start_x, start_y = stroke[0]
        page.mouse.move(box["x"] + start_x * box["width"], box["y"] + start_y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()


def feature_map_widths(page: Page) -> list[int]:
    return page.locator("#feature-maps img").evaluate_all(
        "images => images.map(image => image.naturalWidth)"
    )


def test_drawing_a_one_predicts_1(page: Page) -> None:
    draw(page, [[(0.5, 0.15), (0.52, 0.5), (0.5, 0.85)]])
    expect(page.locator("#predicted-label")).to_have_text("1", timeout=10_000)
    expect(page.locator(".bar-row")).to_have_count(10)
    expect(page.locator("#feature-maps img")).to_have_count(6, timeout=10_000)
    screenshot(page, "drawn-one")


def test_drawing_a_seven_stroke_by_stroke(page: Page) -> None:
    draw(page, [[(0.25, 0.2), (0.75, 0.2)], [(0.75, 0.2), (0.6, 0.5), (0.45, 0.85)]])
    expect(page.locator("#predicted-label")).to_have_text("7", timeout=10_000)
    expect(page.locator("#feature-maps img")).to_have_count(6, timeout=10_000)
    screenshot(page, "drawn-seven")
    page.click("#clear-button")
    expect(page.locator("#predicted-label")).to_have_text("–")


STROKES = {
    "7": [[(0.25, 0.2), (0.75, 0.2)], [(0.75, 0.2), (0.6, 0.5), (0.45, 0.85)]],
    "4": [[(0.4, 0.15), (0.28, 0.6), (0.75, 0.6)], [(0.62, 0.3), (0.62, 0.88)]],
    "0": [
        [(0.5, 0.15), (0.3, 0.3), (0.28, 0.6), (0.45, 0.85), (0.65, 0.75), (0.7, 0.4), (0.5, 0.15)]
    ],
    "2": [[(0.3, 0.3), (0.5, 0.15), (0.7, 0.3), (0.6, 0.55), (0.3, 0.85), (0.75, 0.85)]],
}


def set_pen_width(page: Page, pixels: int) -> None:
    page.locator("#pen-width").fill(str(pixels))
    expect(page.locator("#pen-width-value")).to_have_text(f"{pixels} px")


@pytest.mark.parametrize("pen", [1, 2, 36])
@pytest.mark.parametrize("digit", sorted(STROKES))
def test_drawings_with_thin_and_thick_pens_are_read(page: Page, pen: int, digit: str) -> None:
    set_pen_width(page, pen)
    draw(page, STROKES[digit])
    expect(page.locator("#predicted-label")).to_have_text(digit, timeout=10_000)
    if digit == "4":
        screenshot(page, f"drawn-four-pen-{pen}px")


def test_uploading_a_png_shows_prediction_and_feature_maps(
    page: Page, mnist_digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    images, labels = mnist_digits
    upload = tmp_path / "digit.png"
    upload.write_bytes(mnist_png(images[0]))
    page.set_input_files("#file-input", str(upload))
    expect(page.locator("#predicted-label")).to_have_text(str(labels[0]), timeout=10_000)
    expect(page.locator("#feature-maps img")).to_have_count(6, timeout=10_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#feature-maps img')].every(i => i.naturalWidth > 0)"
    )
    assert all(width > 0 for width in feature_map_widths(page))
    screenshot(page, "uploaded-png")


def test_uploading_a_photo_on_paper(
    page: Page, mnist_digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    images, labels = mnist_digits
    upload = tmp_path / "photo.jpg"
    upload.write_bytes(paper_photo(images[1], seed=1))
    page.set_input_files("#file-input", str(upload))
    expect(page.locator("#predicted-label")).to_have_text(str(labels[1]), timeout=10_000)
    screenshot(page, "uploaded-photo")


def test_switching_model_uses_its_labels(
    page: Page, mnist_digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    upload = tmp_path / "digit.png"
    upload.write_bytes(mnist_png(mnist_digits[0][0]))
    page.set_input_files("#file-input", str(upload))
    expect(page.locator("#predicted-label")).not_to_have_text("–", timeout=10_000)
    page.select_option("#model-select", "fashion-deep-cnn")
    card = json.loads((MODELS_DIR / "fashion-deep-cnn" / "model.json").read_text())
    fashion_labels = card["labels"]
    page.wait_for_function(
        "labels => labels.includes(document.querySelector('#predicted-label').textContent)",
        arg=fashion_labels,
    )
    expect(page.locator(".bar-row").first).to_be_visible()


def test_a_bad_file_shows_the_api_error(page: Page, tmp_path: Path) -> None:
    upload = tmp_path / "notes.txt"
    upload.write_text("not an image at all")
    page.set_input_files("#file-input", str(upload))
    error_box = page.locator("#error-box")
    expect(error_box).to_be_visible(timeout=10_000)
    expect(error_box).to_contain_text("not an image")
    expect(error_box).to_contain_text("HTTP 422")
    screenshot(page, "error")


def test_phone_layout_stacks_the_panels(browser: Browser, server_url: str) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True
    )
    phone = context.new_page()
    phone.goto(server_url)
    canvas = phone.locator("#draw-canvas").bounding_box()
    assert canvas is not None and canvas["width"] <= 390
    bars = phone.locator("#result-panel").bounding_box()
    assert bars is not None and bars["y"] > canvas["y"] + canvas["height"]
    screenshot(phone, "phone")
    context.close()


def test_docs_render_offline_from_packaged_assets(browser: Browser, server_url: str) -> None:
    """Swagger UI loads with every request to anything but this server aborted."""
    context = browser.new_context()
    outside: list[str] = []

    def only_local(route: Route) -> None:
        if route.request.url.startswith(server_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    docs = context.new_page()
    docs.goto(f"{server_url}/docs")
    expect(docs.locator(".opblock-summary-path").first).to_be_visible(timeout=15_000)
    expect(docs.get_by_text("/v2/models/{name}/infer").first).to_be_attached()
    screenshot(docs, "docs-offline")
    assert outside == []
    context.close()


@pytest.fixture(scope="module")
def keyed_server_url() -> Iterator[str]:
    with running_service(api_keys="page-test-key") as service:
        yield service.url


def test_page_asks_for_the_api_key_when_the_server_needs_one(
    browser: Browser, keyed_server_url: str
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(keyed_server_url)
    expect(page.locator("#api-key-box")).to_be_visible(timeout=10_000)
    page.fill("#api-key-input", "page-test-key")
    page.click("#api-key-form button")
    expect(page.locator("#model-select option")).not_to_have_count(0)
    expect(page.locator("#api-key-box")).to_be_hidden()
    draw(page, STROKES["7"])
    expect(page.locator("#predicted-label")).to_have_text("7", timeout=10_000)
    context.close()


def test_two_digits_say_the_service_is_not_sure(
    page: Page, mnist_digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """'72' in one picture: a label still, and the page says it is not one digit; one digit
    alone shows no doubt."""
    images, _ = mnist_digits
    pair = Image.fromarray(255 - np.concatenate([images[0], images[1]], axis=1)).resize((224, 112))
    upload = tmp_path / "pair.png"
    upload.write_bytes(encode(pair))
    page.set_input_files("#file-input", str(upload))
    expect(page.locator("#confidence")).to_contain_text("several digits", timeout=10_000)
    expect(page.locator("#confidence")).to_have_class("caption doubtful")
    screenshot(page, "two-digits")
    single = tmp_path / "single.png"
    single.write_bytes(mnist_png(images[0]))
    page.set_input_files("#file-input", str(single))
    expect(page.locator("#confidence")).to_have_text(
        re.compile(r"^[0-9.]+ % sure$"), timeout=10_000
    )


def test_the_page_explains_the_answer_and_why_not_another_class(page: Page) -> None:
    """The saliency of the predicted class appears over what the model saw; clicking another
    class in the list shows why not that one."""
    draw(page, STROKES["7"])
    expect(page.locator("#predicted-label")).to_have_text("7", timeout=10_000)
    saliency = page.locator("#saliency-image")
    expect(saliency).to_have_attribute("data-target", "7", timeout=10_000)
    expect(page.locator("#saliency-caption")).to_contain_text("Why 7")
    page.wait_for_function("() => document.getElementById('saliency-image').naturalWidth === 280")
    page.locator(".bar-row[data-class-index='1']").click()
    expect(saliency).to_have_attribute("data-target", "1", timeout=10_000)
    expect(page.locator("#saliency-caption")).to_contain_text("Why not 1")
    expect(page.locator(".bar-row.explained")).to_have_count(1)
    page.locator(".bar-row[data-class-index='9']").focus()
    page.keyboard.press("Enter")
    expect(saliency).to_have_attribute("data-target", "9", timeout=10_000)
    screenshot(page, "why-not-nine")
