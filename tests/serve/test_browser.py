"""The page in a real browser: Debian's chromium driven by Playwright (no browser download), against a server on
loopback. Each page is loaded, its main action done, the DOM checked, and a screenshot taken: into a temporary
folder, or into $RNNLM_SCREENSHOTS (``RNNLM_SCREENSHOTS=docs/img pytest tests/serve/test_browser.py`` retakes the
README's), so that a test run leaves the tree as it was. Skipped, with the reason, where the browser or Playwright
is missing."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

# Debian's chromium; RNNLM_CHROMIUM names another build of it
CHROMIUM = os.environ.get("RNNLM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.e2e
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs playwright (pip install playwright)"
)
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"the browser test needs Debian's chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser test needs playwright (pip install playwright)"
    )
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"the browser test needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def base_url(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page(browser, base_url):
    pg = browser.new_page(viewport={"width": 1200, "height": 800})
    pg.set_default_timeout(10_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    pg.close()
    assert not errors, f"the page raised JavaScript errors: {errors}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("RNNLM_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def shot(shots):
    """shot(page, name): a full-page screenshot, serve-<name>.png."""
    return lambda page, name: page.screenshot(path=str(shots / f"serve-{name}.png"), full_page=True)


def test_training_page_draws_each_runs_curve(page, shot, base_url):
    page.goto(base_url + "/#training")
    page.check("#train-cb-tag")
    page.wait_for_function("document.querySelectorAll('#train-chart path.curve').length >= 2")
    assert page.locator("#train-chart text", has_text="tag").count() >= 1
    shot(page, "training")


def test_generate_page_streams_shaded_tokens(page, shot, base_url):
    page.goto(base_url + "/#generate")
    page.fill("#gen-prefix", "row 1")
    page.fill("#gen-length", "60")
    page.fill("#gen-seed", "3")
    page.click("#gen-go")
    page.wait_for_function("document.querySelectorAll('#gen-out span.tok').length === 60")
    first = page.locator("#gen-out span.tok").first
    assert first.get_attribute("data-alts").startswith("p = ")
    # the shade follows the probability: the likeliest and the least likely token differ
    shades = page.evaluate(
        """() => {
        const s = [...document.querySelectorAll('#gen-out span.tok')].sort((a, b) => a.dataset.p - b.dataset.p);
        const [lo, hi] = [s[0], s[s.length - 1]];
        return [lo.style.background, hi.style.background, lo.dataset.p, hi.dataset.p]; }"""
    )
    assert shades[2] != shades[3] and shades[0] != shades[1]
    first.hover()
    assert page.locator("#tooltip").is_visible()
    shot(page, "generate")


def test_inspect_page_lists_a_spans_units_and_places(page, shot, base_url):
    page.goto(base_url + "/#inspect")
    page.click("#ins-sample")
    page.wait_for_function("document.getElementById('ins-text').value.includes('pack my box')")
    page.click("#ins-go")
    page.wait_for_selector("body[data-inspected]")
    assert page.locator("#ins-loss span.tok").count() > 100
    assert page.evaluate("document.getElementById('ins-heat').width") > 0
    page.select_option("#ins-signal", "c")
    page.select_option("#ins-order", "cluster")
    # select the tokens 4..9 of the text as a user would, then let the page ask for the span's units
    page.evaluate(
        """() => { const s = document.querySelectorAll('#ins-loss span.tok'); const r = document.createRange();
        r.setStart(s[4].firstChild, 0); r.setEnd(s[9].firstChild, 1); const sel = window.getSelection();
        sel.removeAllRanges(); sel.addRange(r);
        document.getElementById('ins-loss').dispatchEvent(new MouseEvent('mouseup', {bubbles: true})); }"""
    )
    page.wait_for_selector("#span-units li")
    assert page.locator("#span-units li").count() == 10
    assert page.locator("#span-places li mark").count() == 5
    page.locator("#span-units a.unit").first.click()  # colours the text by that unit
    shot(page, "inspect")


def test_tag_page_tags_the_apple_pair(page, shot, base_url):
    page.goto(base_url + "/#tag")
    page.fill("#tag-text", "Anna visited New York .")
    page.click("#tag-go")
    page.wait_for_selector("#tag-out .sentence")
    assert page.locator("#tag-out .sentence .tok").count() == 5
    page.click("#tag-apple")
    page.wait_for_function("document.querySelectorAll('#tag-out .sentence').length === 2")
    assert page.locator("#tag-out .sentence").nth(1).locator(".tok").first.inner_text().startswith("Apple")
    assert page.locator("#tag-out table.marginals").count() == 2
    assert page.locator("#tag-trans td").count() == 8 * 8  # O and B/E/S/I of PER and LOC, from and to
    shot(page, "tag")


def test_frames_page_predicts_an_upload(page, shot, base_url, served_runs):
    page.goto(base_url + "/#frames")
    page.set_input_files("#fr-file", str(served_runs["ts"]))
    page.wait_for_selector("#fr-table tr.clickable")
    assert page.locator("#fr-table tr.clickable").count() == 30
    assert page.locator("#fr-confusion td").count() == 9
    page.locator("#fr-table tr.clickable").nth(2).click()
    page.wait_for_selector("#fr-saliency rect.sal")
    frames = int(page.locator("#fr-table tr.clickable").nth(2).locator("td").nth(1).inner_text())
    assert page.locator("#fr-saliency rect.sal").count() == frames  # a bar per frame
    shot(page, "frames")
