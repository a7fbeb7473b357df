"""The gallery and review pages in a real headless Chromium (Debian's chromium + chromedriver).

Screenshots of the grid and the lightbox go to tests/gallery/screenshots/ (git-ignored;
IMGSPEC_SCREENSHOTS overrides). In CI (CI=true) a missing browser fails the test; on a
developer's machine without Chromium it is skipped with the command to install it.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from pipeline.operations.gallery.model import (
    Axis,
    Entry,
    Gallery,
    ImageFiles,
    JobView,
    Picture,
    State,
)
from pipeline.operations.gallery.page import render_gallery
from pipeline.shell.store.review import read_review
from tests.gallery.helpers import (
    KEY,
    REROLLED,
    ROOT,
    Server,
    imgspec,
    lock_entries,
    storefronts,
)
from tests.simulator.simkit import simulators

SHOTS = Path(os.environ.get("IMGSPEC_SCREENSHOTS", ROOT / "tests" / "gallery" / "screenshots"))
INSTALL = ("apt-get update && apt-get install -y chromium chromium-driver && "
           "python3 -m pip install -e '.[test]'")
WAIT = 60.0  # seconds: a hang guard, never a timing assertion
SYNTHETIC = 10_000


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        message = f"Chromium and chromedriver are needed for the browser test: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return chromium, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile and no background network traffic."""
    chromium, driver_path = _binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: WebDriver, name: str) -> Path:
    """Save a screenshot under the screenshots folder; its path."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")  # shown with -s: where to look
    return path


def ready(driver: WebDriver) -> None:
    """Wait until the page's script has rendered."""
    WebDriverWait(driver, WAIT).until(
        lambda d: d.execute_script("return document.body.dataset.ready === '1'"))


def css(driver: WebDriver, selector: str) -> list[WebElement]:
    """Elements matching a CSS selector."""
    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def choose(driver: WebDriver, select_id: str, text: str) -> None:
    """Pick an option by its visible text."""
    Select(driver.find_element(By.ID, select_id)).select_by_visible_text(text)


def press(driver: WebDriver, keys: str) -> None:
    """Type keys at the page (not into a form field)."""
    ActionChains(driver).send_keys(keys).perform()


def lightbox_open(driver: WebDriver) -> bool:
    """Whether the lightbox is showing."""
    return bool(driver.execute_script("return !document.getElementById('lightbox').hidden"))


def test_gallery_grid_lightbox_and_failures(tmp_path: Path, browser: WebDriver) -> None:
    """Two axes chosen give their cells; the lightbox shows details and moves; failures explain."""
    manifest = storefronts(tmp_path)
    with simulators(latency=(0.05, 0.2), seed=3, api_key=KEY) as start:
        good = start()
        imgspec("run", str(manifest), "--base-url", good.base_url, "--yes",
                "--job", "storefront", "--job", "products", cwd=tmp_path)
        failing = start(faults={"task.fail": 1.0})
        imgspec("run", str(manifest), "--base-url", failing.base_url, "--yes",
                "--job", "storefront-night", cwd=tmp_path, check=False)
    imgspec("gallery", str(manifest), cwd=tmp_path)
    index = tmp_path / "outputs" / "storefronts" / "index.html"
    browser.get(index.as_uri())
    ready(browser)
    assert not injected_script_ran(browser)  # the page's CSP: only its own script runs

    choose(browser, "x-axis", "season")
    choose(browser, "y-axis", "model")
    # shop is a selector now, at its most common value (flower shop); image shows all.
    assert Select(browser.find_element(By.CSS_SELECTOR, 'select[data-axis="0"]')) \
        .first_selected_option.text == "flower shop"
    cells = css(browser, "td.cell")
    assert len(cells) == 3 * 2  # spring, winter, autumn x the two models
    assert len(css(browser, "td.cell .empty")) == 2  # no flower shop in autumn
    assert len(css(browser, "td.cell .slot")) == 4 * 2  # n = 2
    heads = [h.text.split("\n")[0] for h in css(browser, "th.colh")]
    assert heads == ["spring", "winter", "autumn"]
    # Per-row and per-column counts and cost: two instances of two images in each.
    assert "4/4 images · ¥0.80" in css(browser, "th.rowh")[0].text  # wan2.7-image
    assert "4/4 images · ¥1.40" in css(browser, "th.colh")[0].text  # spring, both models
    WebDriverWait(browser, WAIT).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('td.cell img')].every(i => i.complete && "
        "i.naturalWidth > 0)"))
    shot(browser, "grid")

    css(browser, "td.cell .slot")[0].click()
    assert lightbox_open(browser)
    WebDriverWait(browser, WAIT).until(lambda d: d.execute_script(
        "const i = document.getElementById('lb-img'); return i && i.complete && "
        "i.naturalWidth === 2048"))
    info = browser.find_element(By.ID, "lb-info").text
    entries = lock_entries(manifest.with_name("storefronts.lock.json"))
    first = entries[REROLLED]
    assert REROLLED in info
    assert first["request"]["prompt"] in info.replace("\n", " ")
    assert first["outputs"][0]["sha256"] in info.replace("\n", "")
    assert str(first["seed"]) in info
    assert first["task_id"] in info
    shot(browser, "lightbox")
    press(browser, Keys.ARROW_RIGHT)
    assert "image 1" in browser.find_element(By.CSS_SELECTOR, "#lb-info h2").text
    press(browser, Keys.ESCAPE)
    assert not lightbox_open(browser)

    choose(browser, "job", "storefront-night (3)")
    browser.find_element(By.ID, "view-sheet").click()  # the contact sheet: every instance
    assert len(css(browser, ".card")) == 3
    failed = css(browser, '.slot[data-state="failed"]')
    assert len(failed) == 3
    message = entries[str(failed[0].get_attribute("title"))]["last_error"]
    assert failed[0].find_element(By.CSS_SELECTOR, ".msg").text == message
    failed[0].click()
    assert message in browser.find_element(By.CSS_SELECTOR, "#lb-info .error").text
    shot(browser, "failed-lightbox")


def test_review_keys_write_decisions_that_plan_and_run_follow(
        tmp_path: Path, browser: WebDriver) -> None:
    """p/r/x/u in the page write the review file; plan prices the re-roll; run replaces it."""
    manifest = storefronts(tmp_path)
    imgspec("run", "--simulate", str(manifest), cwd=tmp_path)
    lockfile = manifest.with_name("storefronts.simulate.lock.json")
    before = lock_entries(lockfile)
    server = Server(manifest)
    try:
        browser.get(server.url)
        ready(browser)
        status = browser.find_element(By.ID, "review-status")
        css(browser, "td.cell .slot")[0].click()  # flower shop, spring, wan2.7-image, #0
        assert REROLLED in browser.find_element(By.CSS_SELECTOR, "#lb-info h2").text

        def decided(prefix: str) -> None:
            WebDriverWait(browser, WAIT).until(lambda d: status.text.startswith(prefix))

        press(browser, "p")
        decided("pick: ")
        press(browser, Keys.ARROW_RIGHT)  # the instance's image 1
        press(browser, "r")
        decided("reroll: ")
        press(browser, Keys.ARROW_RIGHT)  # the bakery's image 0
        press(browser, "x")
        decided("reject: ")
        press(browser, "u")
        decided("undone: reject")
        shot(browser, "review-lightbox")
        press(browser, Keys.ESCAPE)
        assert [v.text for v in css(browser, ".slot .verdict")] == ["PICK", "REROLL"]
        shot(browser, "review-grid")
    finally:
        err = server.stop()
    assert server.process.returncode == 0, err

    review = read_review(manifest.with_name("storefronts.review.yaml"))
    old = before[REROLLED]["outputs"]
    assert [(d.key, d.image, d.sha256, d.verdict) for d in review.decisions] == [
        (REROLLED, 0, old[0]["sha256"], "pick"), (REROLLED, 1, old[1]["sha256"], "reroll")]

    plan = imgspec("plan", "--simulate", str(manifest), cwd=tmp_path).stdout
    line = next(x for x in plan.splitlines() if REROLLED in x)
    assert line.split()[:2] == ["↺", "reroll"]
    assert "¥0.40" in line
    assert "Plan: 1 to submit (2 images, ¥0.40)" in plan
    folder = tmp_path / "outputs" / "storefronts.simulate"
    files = [folder / o["path"].split("storefronts.simulate/")[1] for o in old]
    assert [_sha(f) for f in files] == [o["sha256"] for o in old]  # kept until the run

    imgspec("run", "--simulate", str(manifest), cwd=tmp_path)
    new = lock_entries(lockfile)[REROLLED]["outputs"]
    assert [_sha(f) for f in files] == [o["sha256"] for o in new]  # new images in place
    assert {o["sha256"] for o in new}.isdisjoint(o["sha256"] for o in old)
    imgspec("gallery", "--simulate", str(manifest), cwd=tmp_path)
    browser.get((folder / "index.html").as_uri())
    ready(browser)
    assert css(browser, ".slot .verdict") == []  # the decisions were about the old images
    shot(browser, "after-reroll")


def injected_script_ran(driver: WebDriver) -> bool:
    """Whether an inline script added to the page runs (a Content-Security-Policy stops it)."""
    return bool(driver.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.injected = 1';"
        "document.body.appendChild(s); return window.injected === 1"))


class Framing:
    """A page on another loopback origin (its own port) that frames a URL: an attacker's page."""

    def __init__(self, target: str) -> None:
        page = (f'<!doctype html><title>elsewhere</title><iframe id="f" src="{target}" '
                'width="900" height="600"></iframe>').encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def test_another_origin_cannot_frame_the_review_page(tmp_path: Path, browser: WebDriver) -> None:
    """A page on another loopback port frames the review page: the frame stays empty."""
    manifest = storefronts(tmp_path)
    imgspec("run", "--simulate", str(manifest), cwd=tmp_path)
    server = Server(manifest)
    framing = Framing(server.url)
    try:
        browser.get(server.url)  # the page itself works under its own policy
        ready(browser)
        assert not injected_script_ran(browser)
        browser.get(framing.url)
        WebDriverWait(browser, WAIT).until(
            lambda d: d.execute_script("return document.readyState === 'complete'"))
        browser.switch_to.frame(browser.find_element(By.ID, "f"))
        framed: Any = browser.execute_script(
            "return [location.href, document.getElementById('gallery-data') !== null, "
            "document.body ? document.body.dataset.ready || '' : '']")
        browser.switch_to.default_content()
        shot(browser, "framed-review")
    finally:
        framing.close()
        err = server.stop()
    assert server.process.returncode == 0, err
    assert framed[1:] == [False, ""], framed  # no gallery in the frame: it was refused
    assert not framed[0].startswith(server.url), framed


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def synthetic(tmp: Path, count: int) -> Gallery:
    """A gallery of ``count`` instances on a 100-wide grid, thumbnails cycling through 8 files."""
    (tmp / "_thumbs").mkdir(parents=True)
    names = []
    for i in range(8):
        name = f"_thumbs/t{i}.jpg"
        Image.new("RGB", (160, 160), (30 * i, 200 - 20 * i, 90)).save(tmp / name, "JPEG")
        names.append(name)
    side = 100
    rows = (count + side - 1) // side
    entries = []
    for i in range(count):
        state: State = "failed" if i % 97 == 0 else "done"
        picture = Picture(0, None if state == "failed" else ImageFiles(names[i % 8],
                                                                       names[i % 8]),
                          None if state == "failed" else f"{i:064x}", 160, 160, None)
        entries.append(Entry(
            key=f"big@row={i // side},col={i % side}", job="big", state=state,
            values=(("row", str(i // side)), ("col", str(i % side))),
            prompt=f"A synthetic prompt number {i} with a few more words in it",
            request={"model": "wan2.7-image", "size": "1K", "seed": i}, seed=i,
            task_id=f"task_{i:08d}", cost=Decimal("0.20"), planned=Decimal(0),
            time="2026-11-30T00:00:00Z", error="generation failed" if state == "failed"
            else None, note=None, pictures=(picture,)))
    axes = (Axis("row", "matrix", tuple(str(r) for r in range(rows))),
            Axis("col", "matrix", tuple(str(c) for c in range(side))))
    return Gallery("big", "big.yaml", "CNY", (JobView("big", axes, tuple(entries)),))


def test_ten_thousand_entries_open_promptly(tmp_path: Path, browser: WebDriver) -> None:
    """A 10,000-instance gallery opens (the time is printed) and its thumbnails load lazily."""
    page = tmp_path / "index.html"
    page.write_text(render_gallery(synthetic(tmp_path, SYNTHETIC)), encoding="utf-8")
    started = time.monotonic()
    browser.get(page.as_uri())
    ready(browser)
    wall = time.monotonic() - started
    in_page: Any = browser.execute_script(
        "const n = performance.getEntriesByType('navigation')[0]; const p = "
        "performance.getEntriesByName('first-contentful-paint')[0]; return [window."
        "imgspecReadyMs, p ? p.startTime : -1, n.loadEventEnd]")
    slots = browser.execute_script("return document.querySelectorAll('.slot').length")
    print(f"10,000-entry gallery ({page.stat().st_size / 1e6:.1f} MB page), ms after "
          f"navigation started: script done {in_page[0]:.0f}, first paint {in_page[1]:.0f}, "
          f"load event {in_page[2]:.0f}; {wall:.2f} s as the test saw it (WebDriver)")
    assert slots == SYNTHETIC
    assert browser.execute_script(
        "return [...document.querySelectorAll('.slot img')].every(i => i.loading === 'lazy')")
    shot(browser, "ten-thousand")
    grid_ms = browser.execute_script("return window.imgspecRenderMs")
    browser.find_element(By.ID, "view-sheet").click()
    sheet = browser.execute_script("return document.querySelectorAll('.card').length")
    sheet_ms = browser.execute_script("return window.imgspecRenderMs")
    print(f"rendering the 100 x 100 grid took {grid_ms:.0f} ms, the contact sheet of "
          f"10,000 {sheet_ms:.0f} ms (script time, before layout)")
    assert sheet == SYNTHETIC
    assert wall < WAIT
