"""A real browser on the real page: one flow per tab (chain, grid, direction), cancel, a refused input,
a picture uploaded as a keyframe.

Drives Debian's Chromium (`apt-get install chromium`) through Playwright; skipped
when either is missing. Screenshots land in `artifacts/browser-<tab>.png`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.testing import ROOT, ServerProcess

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RESULT_MS = 120_000  # generous: waits for something that must happen, never a measure of speed

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("browser")
    # Both bundled models in the menu, as a newcomer gets them, but shapes64 first: its 64 px
    # pictures keep the browser's renders small and its shapes are what the checks below read.
    # A frame cache of its own.
    arguments = ["--device", "cpu", "--model", "shapes64", "--model", "scenes"]
    with ServerProcess(arguments, folder / "server.log", env={"LATENT_MORPH_CACHE": str(folder)}) as running:
        yield running


@pytest.fixture(scope="module")
def page():
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            yield context.new_page()
        finally:
            browser.close()


def open_tab(page, server: ServerProcess, walk: str) -> None:
    page.goto(server.url, wait_until="networkidle")
    if walk != "chain":  # the chain's tab is the one shown first
        page.locator(f"#tab-{walk}-button").click()
    page.locator(f"#{walk}-render").wait_for(state="visible")


def fill(page, walk: str, **values: str) -> None:
    """Type into the tab's widgets by their ids: text boxes, and sliders through their number box."""
    for name, value in values.items():
        box = page.locator(f"#{walk}-{name.replace('_', '-')}")
        field = box.locator("input[type=number]") if box.locator("input[type=number]").count() else box.locator(
            "textarea, input").first
        field.fill(value)
        field.press("Tab")  # a slider's number box takes its value when it loses focus
    page.locator("h1").first.click()  # close a dropdown's open list, so it hides nothing


def wait_for_main_picture(page, walk: str, suffix: str) -> None:
    page.wait_for_function(
        "([selector, suffix]) => { const img = document.querySelector(selector);"
        " return img && img.complete && img.naturalWidth > 0 && img.src.includes(suffix); }",
        arg=[f"#{walk}-main img", suffix],
        timeout=RESULT_MS,
    )


def jobs_logged(server: ServerProcess, mark: int) -> list[str]:
    """The outcome of each job the server ran since character `mark` ("done", "JobCancelled", ...)."""
    lines = [line for line in server.log()[mark:].splitlines() if " job " in line and " after " in line]
    return [line.split(" job ")[1].split()[0] for line in lines]


def test_type_two_prompts_render_and_see_the_gif(server: ServerProcess, page) -> None:
    open_tab(page, server, "chain")
    fill(page, "chain", prompt_a="a red circle", prompt_b="a blue square", steps="12", frames="6")
    page.locator("#chain-render").click()

    wait_for_main_picture(page, "chain", ".gif")
    assert page.locator("#chain-main img").evaluate("img => img.naturalWidth") == 64
    assert page.locator("#chain-gallery img").count() >= 6
    assert "6 frames in" in page.locator("#chain-status").inner_text()
    for name in ("gif", "strip", "mp4", "manifest"):
        assert page.locator(f"#chain-download-{name}").is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-chain.png"), full_page=True)

    with page.expect_download(timeout=30_000) as download_info:
        page.locator("#chain-download-gif").click()
    saved = ARTIFACTS / "browser-morph.gif"
    download_info.value.save_as(saved)
    assert saved.read_bytes()[:6] in (b"GIF87a", b"GIF89a")


def test_grid_tab_renders_the_mosaic(server: ServerProcess, page) -> None:
    open_tab(page, server, "grid")
    fill(page, "grid", prompt_a="a red circle", prompt_b="a blue circle", prompt_c="a red square",
         prompt_d="a blue square", grid="2x2", steps="8")
    page.locator("#grid-render").click()

    wait_for_main_picture(page, "grid", "grid.png")
    size = page.locator("#grid-main img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [2 * 64, 2 * 64]  # 2 x 2 tiles of 64 px, no gaps
    assert "4 frames in" in page.locator("#grid-status").inner_text()
    for name in ("grid", "gif", "mp4", "manifest"):
        assert page.locator(f"#grid-download-{name}").is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-grid.png"), full_page=True)


def test_direction_tab_renders_the_sweep(server: ServerProcess, page) -> None:
    open_tab(page, server, "direction")
    fill(page, "direction", prompt_a="a red circle", prompt_b="a red square", prompt_c="a blue square",
         frames="4", scale="0 1.5", steps="8")
    page.locator("#direction-render").click()

    wait_for_main_picture(page, "direction", ".gif")
    assert page.locator("#direction-main img").evaluate("img => img.naturalWidth") == 64
    assert "4 frames in" in page.locator("#direction-status").inner_text()
    assert page.locator("#direction-gallery img").count() >= 4
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-direction.png"), full_page=True)


def test_cancel_button_stops_the_job(server: ServerProcess, page) -> None:
    open_tab(page, server, "chain")
    fill(page, "chain", prompt_a="a small yellow star", prompt_b="a large purple triangle", frames="48", steps="50")
    mark = len(server.log())
    page.locator("#chain-render").click()
    page.wait_for_function(
        "() => (document.querySelector('#chain-status') || {}).innerText.includes('step')", timeout=RESULT_MS
    )
    page.locator("#chain-cancel").click()
    assert server.wait_for_log("job JobCancelled", timeout_s=RESULT_MS / 1000, start=mark) is not None, (
        server.log()[mark:]
    )
    assert jobs_logged(server, mark) == ["JobCancelled"]  # it stopped; it did not run to its end
    page.wait_for_function(
        "() => document.querySelector('#chain-status').innerText.includes('stopped')", timeout=RESULT_MS
    )


def test_bad_input_shows_the_message_naming_the_limit(server: ServerProcess, page) -> None:
    open_tab(page, server, "grid")
    fill(page, "grid", prompt_a="a red circle", prompt_b="a blue circle", prompt_c="a red square",
         prompt_d="a blue square", grid="2x9")
    page.locator("#grid-render").click()
    page.get_by_text("grid columns must be between 2 and 8 (--max-grid-side)").first.wait_for(
        state="visible", timeout=RESULT_MS
    )


def test_upload_a_picture_as_the_first_keyframe(server: ServerProcess, page, tmp_path: Path) -> None:
    """Prompt A left empty, a picture beside it: the morph starts on that picture."""
    import urllib.request

    import numpy as np
    from PIL import Image, ImageDraw

    from pipelines.pictures import fit

    drawn = Image.new("RGB", (90, 70), (128, 128, 128))  # an odd size: centre-cropped to 70x70, then 64x64
    ImageDraw.Draw(drawn).ellipse((27, 17, 63, 53), fill=(220, 30, 30))
    drawn.save(tmp_path / "red-disc.png")
    expected = np.asarray(fit(drawn, (64, 64))[0], dtype=np.float64)

    open_tab(page, server, "chain")
    page.locator("#chain-image-a input[type=file]").set_input_files(str(tmp_path / "red-disc.png"))
    page.locator("#chain-image-a img").first.wait_for(state="visible", timeout=RESULT_MS)  # the upload's preview
    assert page.locator("#chain-prompt-a textarea, #chain-prompt-a input").first.input_value() == ""
    fill(page, "chain", prompt_b="a blue square", steps="20", frames="3")
    page.locator("#chain-render").click()

    wait_for_main_picture(page, "chain", ".gif")
    assert "3 frames in" in page.locator("#chain-status").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-picture.png"), full_page=True)
    source = page.locator("#chain-gallery img").first.get_attribute("src")
    with urllib.request.urlopen(urllib.request.Request(source), timeout=30) as answer:
        (tmp_path / "frame-0.png").write_bytes(answer.read())
    with Image.open(tmp_path / "frame-0.png") as frame:
        first = np.asarray(frame.convert("RGB"), dtype=np.float64)
    assert first.shape == expected.shape
    # the first frame is the picture, as well as the model's autoencoder gives it back
    assert np.abs(first.mean(axis=(0, 1)) - expected.mean(axis=(0, 1))).max() < 20, first.mean(axis=(0, 1))
    red, green, blue = first[24:40, 24:40].mean(axis=(0, 1))
    assert red > green + 80 and red > blue + 80  # a red disc in the middle ...
    corner = first[:8, :8].reshape(-1, 3).mean(axis=0)
    assert np.abs(corner - 128).max() < 40, corner  # ... on grey
    psnr = 10 * np.log10(255**2 / np.mean((first - expected) ** 2))
    assert psnr > 20, psnr
