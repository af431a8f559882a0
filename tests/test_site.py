"""The rendered book, checked in a real headless browser (Debian's chromium + chromedriver) at 1300 px.

Builds the book at the ``smoke`` profile with the book's own driver (``book/build.py``: chapters
executed first, then the site with execution off) into a temporary folder, serves it on loopback and
checks every page of the table of contents at a laptop width of 1300 px:

- it loads, every image resolves, no cell shows an error, the sidebar / next-page navigation works;
- **figures are legible**: each figure is drawn at ``plotting.DPI`` pixels per inch with fonts of at
  least ``plotting.MIN_FONT`` points; shown at its rendered width, that smallest font must stay at
  least :data:`LEGIBLE_PX` screen pixels (a figure drawn too wide for the column is shrunk below it);
- **no code line is cut off**: no visible code cell (input or printed output) overflows its box
  horizontally, and no printed table runs past the column (``book/_static/companion.css`` wraps long lines at the column's edge);
- **plumbing is folded**: the Colab install cell, the imports cell and the settings cell are not
  visible (cell tags ``remove-cell`` / ``hide-input``; a folded input may be opened by the reader).

It writes a full-page screenshot of every page to ``_build/artefacts/screenshots`` (or
``$PAPERLIB_SCREENSHOTS``). ``PAPERLIB_SITE=<folder with index.html>`` checks an already built site
instead of building one. Skipped when chromium is not installed (`.ci/run` installs it).
"""
import base64
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

from paperlib import plotting

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium / chromedriver not installed")

#: The laptop width the pages are checked at (CSS pixels).
WIDTH_PX = 1300
#: Smallest on-screen size (CSS pixels) of a figure's smallest font that still reads without zooming.
LEGIBLE_PX = 9.0
#: Code that is plumbing, never shown unfolded: the Colab install cell, the imports cell, the settings cell.
PLUMBING = ("pip install", "plotting.set_style()", "report.start(", "config.show_settings(")


def toc_pages():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc["parts"]:
        pages += [c["file"] for c in part["chapters"]]
    return [p.removesuffix(".ipynb").removesuffix(".md") for p in pages]


def screenshot_dir() -> Path:
    return Path(os.environ.get("PAPERLIB_SCREENSHOTS") or ROOT / "_build" / "artefacts" / "screenshots")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if os.environ.get("PAPERLIB_SITE"):
        html = Path(os.environ["PAPERLIB_SITE"])
    else:
        out = tmp_path_factory.mktemp("site")
        cache = os.environ.get("PAPERLIB_CACHE") or str(out / "cache")  # `make test`: shared with nbmake
        env = dict(os.environ, PAPERLIB_PROFILE="smoke", PAPERLIB_CACHE=cache, PAPERLIB_PROGRESS_EVERY="60")
        proc = subprocess.run([sys.executable, str(ROOT / "book" / "build.py"), "--profile", "smoke", "--jobs", "2",
                               "--cache", cache, "--executed", str(out / "executed"), "--output", str(out)],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-8000:]
        html = out / "_build" / "html"
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(html))
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
                 "--no-first-run", "--hide-scrollbars", f"--window-size={WIDTH_PX},1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH_PX, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()


def open_page(browser, url):
    browser.get(url)
    browser.execute_async_script(  # fonts loaded and equations typeset: what a reader sees
        "const done = arguments[arguments.length - 1];"
        "const mj = window.MathJax && MathJax.startup && MathJax.startup.promise;"
        "Promise.all([document.fonts.ready, mj || Promise.resolve()]).then(() => done(true), () => done(false));")
    assert browser.execute_script("return document.documentElement.clientWidth") == WIDTH_PX


BROKEN_IMAGES = "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"

# Every figure of a cell's output: its drawn width in CSS pixels (the <img> width attribute when the
# notebook gave one, e.g. a retina figure; else its natural width) and its width on the page.
FIGURES = """
return Array.from(document.querySelectorAll('.cell_output img')).map(img => {
  const fig = img.closest('figure');
  const cap = fig ? (fig.querySelector('figcaption') || {}).textContent : null;
  const drawn = img.getAttribute('width') ? parseFloat(img.getAttribute('width')) : img.naturalWidth;
  return {drawn: drawn, shown: img.getBoundingClientRect().width,
          name: (fig && fig.id) || (cap || '').trim().slice(0, 60) || img.src.split('/').pop()};
});"""

# Code boxes (cell inputs and printed outputs) whose content is wider than the box: a line is cut off.
OVERFLOW = """
return Array.from(document.querySelectorAll('.cell_input pre, .cell_output pre')).filter(pre => {
  const d = pre.closest('details');  // folded code is checked when a reader unfolds it, not here
  return pre.offsetParent !== null && !(d && !d.open) && pre.scrollWidth > pre.clientWidth + 1;
}).map(pre => {
  const lines = pre.textContent.split('\\n');
  const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
  return {where: pre.closest('.cell_input') ? 'code' : 'output', over: pre.scrollWidth - pre.clientWidth,
          line: longest.slice(0, 120)};
});"""

# Tables printed by cells (settings, paper says / we measure) that run past the text column's right edge.
WIDE_TABLES = """
const art = document.querySelector('article.bd-article') || document.querySelector('main');
const right = art.getBoundingClientRect().right;
return Array.from(document.querySelectorAll('.cell_output table')).filter(t => t.offsetParent !== null)
  .map(t => ({over: Math.round(t.getBoundingClientRect().right - right), head: t.innerText.replace(/\\s+/g, ' ').slice(0, 60)}))
  .filter(t => t.over > 1);"""

# Code cell inputs a reader sees without unfolding anything.
VISIBLE_CODE = """
return Array.from(document.querySelectorAll('.cell_input')).filter(el => {
  if (el.offsetParent === null) return false;
  const d = el.closest('details'); return !(d && !d.open);
}).map(el => el.textContent);"""


@pytest.fixture(scope="module")
def visit(site, browser):
    """``visit(page)``: open the page once at 1300 px, measure what the tests check, save a screenshot."""
    seen = {}

    def measure(page):
        if page not in seen:
            open_page(browser, f"{site}/{page}.html")
            seen[page] = {
                "title": bool(browser.find_elements("css selector", "main h1")),
                "broken": browser.execute_script(BROKEN_IMAGES),
                "errors": [e.text[:500] for e in browser.find_elements(
                    "css selector", ".output.traceback, .output.error, .cell_output .stderr")],
                "traceback": "Traceback (most recent call last)" in browser.page_source,
                "figures": browser.execute_script(FIGURES),
                "overflow": browser.execute_script(OVERFLOW),
                "wide_tables": browser.execute_script(WIDE_TABLES),
                "visible_code": browser.execute_script(VISIBLE_CODE),
            }
            # a full-page screenshot at the laptop width, for a person to look at
            screenshot_dir().mkdir(parents=True, exist_ok=True)
            shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
            (screenshot_dir() / (page.replace("/", "_") + ".png")).write_bytes(base64.b64decode(shot["data"]))
        return seen[page]

    return measure


def chapter_pages():
    return [p for p in toc_pages() if p.startswith("notebooks/")]


@pytest.mark.parametrize("page", toc_pages())
def test_page_renders(visit, page):
    m = visit(page)
    assert m["title"], f"{page}: no title"
    assert m["broken"] == [], f"{page}: broken images"
    assert not m["errors"], f"{page}: error output: {m['errors'][0]}"
    assert not m["traceback"], f"{page}: a traceback on the page"
    if page.startswith("notebooks/") and not page.endswith("scoreboard"):
        assert m["figures"], f"{page}: an executed chapter shows no figure"


@pytest.mark.parametrize("page", chapter_pages())
def test_figures_are_legible(visit, page):
    """A figure's smallest font (MIN_FONT points at DPI pixels per inch) stays >= LEGIBLE_PX on screen."""
    smallest_px = plotting.MIN_FONT * plotting.DPI / 72
    shrunk = []
    for f in visit(page)["figures"]:
        scale = f["shown"] / f["drawn"]
        if smallest_px * scale < LEGIBLE_PX:
            shrunk.append(f"{f['name']}: drawn {f['drawn']:.0f} px wide, shown at {f['shown']:.0f} px "
                          f"(x{scale:.2f}: {plotting.MIN_FONT} pt text at {smallest_px * scale:.1f} px)")
    assert not shrunk, (f"{page}: figures shrunk below legible text ({LEGIBLE_PX} px); draw them at "
                        f"plotting.WIDTH, or WIDE in a `full-width` cell:\n  " + "\n  ".join(shrunk))


@pytest.mark.parametrize("page", chapter_pages())
def test_no_code_line_is_cut_off(visit, page):
    cut = visit(page)["overflow"]
    assert not cut, f"{page}: {len(cut)} code box(es) wider than the column, e.g.:\n  " + "\n  ".join(
        f"{c['where']} (+{c['over']} px): {c['line']}" for c in cut[:8])


@pytest.mark.parametrize("page", chapter_pages())
def test_no_table_runs_past_the_column(visit, page):
    wide = visit(page)["wide_tables"]
    assert not wide, f"{page}: table(s) wider than the text column (book/_static/companion.css wraps cells):\n  " + \
        "\n  ".join(f"+{t['over']} px: {t['head']}" for t in wide)


@pytest.mark.parametrize("page", chapter_pages())
def test_plumbing_is_folded(visit, page):
    shown = [code for code in visit(page)["visible_code"] if any(p in code for p in PLUMBING)]
    assert not shown, (f"{page}: plumbing visible on the page (tag the cell remove-cell or hide-input):\n  "
                       + "\n  ".join(code.strip().splitlines()[0][:100] for code in shown))


def test_equations_are_typeset_offline(site, browser):
    """MathJax is served with the book (no CDN): the landing page's equations become rendered SVG."""
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, f"{site}/book/intro.html")
    WebDriverWait(browser, 30).until(lambda b: b.find_elements("css selector", "mjx-container svg"))
    assert "\\frac" not in browser.find_element("css selector", "main").text


def test_navigation(site, browser):
    pages = toc_pages()
    open_page(browser, f"{site}/index.html")
    sidebar = {a.get_attribute("href").split("#")[0] for a in browser.find_elements("css selector", "nav.bd-links a")}
    for page in pages[1:]:
        assert f"{site}/{page}.html" in sidebar, f"sidebar lacks {page}"
    open_page(browser, f"{site}/{pages[0]}.html")
    for page in pages[1:]:  # walk the whole book with the "next" button
        browser.find_element("css selector", "a.right-next").click()
        assert browser.current_url.split("#")[0] == f"{site}/{page}.html"
