"""A real browser on the real page: type two prompts, Render, see the GIF. Keeps a screenshot.

Drives Debian's Chromium (`apt-get install chromium`) through Playwright; skipped
when either is missing. The screenshot lands in `artifacts/browser-morph.png`.
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

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("browser")
    # No --model: the page a newcomer gets, on the bundled model; a frame cache of its own.
    with ServerProcess(["--device", "cpu"], folder / "server.log", env={"LATENT_MORPH_CACHE": str(folder)}) as running:
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


def test_type_two_prompts_render_and_see_the_gif(server: ServerProcess, page) -> None:
    page.goto(server.url, wait_until="networkidle")
    page.get_by_label("Prompt A").fill("a red circle")
    page.get_by_label("Prompt B").fill("a blue square")
    page.get_by_label("Steps").first.fill("12")  # the slider's number box
    page.get_by_label("Frames").first.fill("6")
    page.locator("#render").click()

    gif = page.locator("#morph-gif img")
    gif.wait_for(state="visible", timeout=60_000)
    page.wait_for_function(
        "() => { const img = document.querySelector('#morph-gif img');"
        " return img && img.complete && img.naturalWidth > 0 && img.src.includes('.gif'); }",
        timeout=60_000,
    )
    assert gif.evaluate("img => img.naturalWidth") == 64
    assert page.locator("#morph-frames img").count() >= 6
    assert "6 frames in" in page.locator("#morph-status").inner_text()
    for name in ("gif", "strip", "mp4", "manifest"):
        assert page.locator(f"#download-{name}").is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-morph.png"), full_page=True)

    with page.expect_download(timeout=30_000) as download_info:
        page.locator("#download-gif").click()
    saved = ARTIFACTS / "browser-morph.gif"
    download_info.value.save_as(saved)
    assert saved.read_bytes()[:6] in (b"GIF87a", b"GIF89a")


def test_cancel_button_stops_the_job(server: ServerProcess, page) -> None:
    page.goto(server.url, wait_until="networkidle")
    page.get_by_label("Prompt A").fill("a small yellow star")
    page.get_by_label("Prompt B").fill("a large purple triangle")
    page.get_by_label("Frames").first.fill("48")
    page.get_by_label("Steps").first.fill("50")
    mark = len(server.log())
    page.locator("#render").click()
    page.wait_for_function(
        "() => (document.querySelector('#morph-status') || {}).innerText.includes('step')", timeout=60_000
    )
    page.locator("#cancel").click()
    stopped_after = server.wait_for_log("job JobCancelled", timeout_s=15, start=mark)
    assert stopped_after is not None and stopped_after < 5, server.log()[mark:]
    page.wait_for_function(
        "() => document.querySelector('#morph-status').innerText.includes('stopped')", timeout=10_000
    )


def test_bad_input_shows_the_message_naming_the_limit(server: ServerProcess, page) -> None:
    page.goto(server.url, wait_until="networkidle")
    page.get_by_label("Prompt A").fill("a red circle")
    page.get_by_label("Prompt B").fill("")
    page.locator("#render").click()
    page.get_by_text("prompt B is empty").first.wait_for(state="visible", timeout=15_000)
