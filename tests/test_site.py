"""The rendered book, checked in a real headless browser (Debian's chromium + chromedriver).

Builds the book at the ``smoke`` profile into a temporary folder, serves it on loopback and checks
every page of the table of contents: it loads, every image resolves, no cell shows an error, and
the sidebar / next-page navigation works. Skipped when chromium is not installed (`.ci/run`
installs it). Set PAPERLIB_SCREENSHOTS=<dir> to keep a screenshot of every page.
"""
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium / chromedriver not installed")


def toc_pages():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc["parts"]:
        pages += [c["file"] for c in part["chapters"]]
    return [p.removesuffix(".ipynb").removesuffix(".md") for p in pages]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, PAPERLIB_PROFILE="smoke", PAPERLIB_CACHE=str(out / "cache"))
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", ".", "--config", "book/_config.yml", "--toc", "book/_toc.yml",
                           "--path-output", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    html = out / "_build" / "html"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,2000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


BROKEN_IMAGES = "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"


@pytest.mark.parametrize("page", toc_pages())
def test_page_renders(site, browser, page):
    browser.get(f"{site}/{page}.html")
    assert browser.find_elements("css selector", "main h1"), f"{page}: no title"
    assert browser.execute_script(BROKEN_IMAGES) == [], f"{page}: broken images"
    errors = browser.find_elements("css selector", ".output.traceback, .output.error, .cell_output .stderr")
    assert not errors, f"{page}: error output: {errors[0].text[:500]}"
    assert "Traceback (most recent call last)" not in browser.page_source
    if page.startswith("notebooks/") and not page.endswith("scoreboard"):
        figures = browser.find_elements("css selector", ".cell_output img")
        assert figures, f"{page}: an executed chapter shows no figure"
    if os.environ.get("PAPERLIB_SCREENSHOTS"):
        Path(os.environ["PAPERLIB_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(os.environ["PAPERLIB_SCREENSHOTS"]) / (page.replace("/", "_") + ".png")))


def test_equations_are_typeset_offline(site, browser):
    """MathJax is served with the book (no CDN): the landing page's equations become rendered SVG."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{site}/book/intro.html")
    WebDriverWait(browser, 30).until(lambda b: b.find_elements("css selector", "mjx-container svg"))
    assert "\\frac" not in browser.find_element("css selector", "main").text


def test_navigation(site, browser):
    pages = toc_pages()
    browser.get(f"{site}/index.html")
    sidebar = {a.get_attribute("href").split("#")[0] for a in browser.find_elements("css selector", "nav.bd-links a")}
    for page in pages[1:]:
        assert f"{site}/{page}.html" in sidebar, f"sidebar lacks {page}"
    browser.get(f"{site}/{pages[0]}.html")
    for page in pages[1:]:  # walk the whole book with the "next" button
        browser.find_element("css selector", "a.right-next").click()
        assert browser.current_url.split("#")[0] == f"{site}/{page}.html"
