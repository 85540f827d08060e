"""The course site (``make site``, runs/site/) in a real browser, offline: served from 127.0.0.1 and opened in
headless Chromium, its front page, a method page (03) and the theory page (02) show their figures, typeset their
formulas with the local MathJax and open a solution when it is clicked; no page asks another host for anything,
and every internal link of the site leads to a file (and an anchor) that exists.

Run by ``make site-test`` after ``make tutorial && make site``. Playwright drives the system browser
(``/usr/bin/chromium``, which ``make browser-test`` installs as root when it is missing; ``playwright install`` is
never needed). Screenshots go to ``runs/test-artifacts/``. ``UDALIB_SITE`` names another built site to test.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("UDALIB_SITE", ROOT / "runs" / "site"))
ARTIFACTS = ROOT / "runs" / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# the text of a page outside code, scripts and typeset math: raw TeX left there means MathJax did not run
VISIBLE_TEXT = """() => {
  const skip = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'MJX-CONTAINER', 'TEXTAREA']);
  const walker = document.createTreeWalker(document.querySelector('main') || document.body, NodeFilter.SHOW_TEXT);
  const parts = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    let e = n.parentElement, hidden = false;
    for (; e; e = e.parentElement) { if (skip.has(e.tagName)) { hidden = true; break; } }
    if (!hidden) parts.push(n.textContent);
  }
  return parts.join(' ');
}"""


def _require_site() -> None:
    if not (SITE / "index.html").exists():
        where = SITE.relative_to(ROOT) if SITE.is_relative_to(ROOT) else SITE
        pytest.fail(f"{where}/index.html is missing: run `make tutorial && make site` first", pytrace=False)


def _page(pattern: str) -> Path | None:
    found = sorted(SITE.glob(pattern))
    return found[0] if found else None


@pytest.fixture(scope="module")
def site():
    """The built site served over HTTP on a free port of 127.0.0.1."""
    _require_site()
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory):
    """A headless Chromium page that records page errors and every request to a host other than the site's."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser-test` installs it (as root), or `apt-get install -y "
                    "chromium`")
    pytest.importorskip("playwright", reason="pip install -e '.[test]' (playwright drives the system chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("chromium")),
                                                       executable_path=str(CHROMIUM), headless=True,
                                                       args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.errors, page.remote = [], []
            page.on("pageerror", lambda e: page.errors.append(str(e)))
            page.on("request", lambda r: page.remote.append(r.url)
                    if urlsplit(r.url).scheme in ("http", "https") and not r.url.startswith(site) else None)
            yield page
        finally:
            context.close()


def _open(page, url: str) -> None:
    page.errors.clear()
    page.goto(url, wait_until="load", timeout=60_000)


def _check_images(page, name: str) -> int:
    """Every <img> of the page's article has loaded; return how many there are."""
    page.evaluate("() => Promise.all([...document.images].map(i => i.decode().catch(() => null)))")
    broken = page.evaluate("() => [...document.querySelectorAll('main img')]"
                           ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))")
    assert not broken, f"{name}: images that do not load: {broken}"
    return page.evaluate("() => document.querySelectorAll('main img').length")


def _check_math(page, name: str) -> int:
    """MathJax has typeset every formula of the page (no raw TeX left in its text); return how many there are."""
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
    page.evaluate("() => MathJax.startup.promise")
    typeset = page.evaluate("() => document.querySelectorAll('mjx-container').length")
    text = page.evaluate(VISIBLE_TEXT)
    for raw in ("\\(", "\\)", "\\[", "\\begin{"):
        at = text.find(raw)
        assert at < 0, f"{name}: raw TeX {raw!r} left in the text: ...{text[max(0, at - 80):at + 120]}"
    dollar = re.search(r"\$[^$\s][^$]*\\[A-Za-z]+[^$]*\$", text)  # $\lambda$ that was never parsed as math
    assert dollar is None, f"{name}: raw TeX left in the text: {dollar and dollar.group()}"
    return typeset


def test_front_page(site, browser):
    _open(browser, f"{site}/index.html")  # a redirect to the front page, notebooks/README.md
    browser.wait_for_url("**/README.html", timeout=10_000)
    browser.wait_for_load_state("load")
    assert browser.locator("main h1").count() >= 1
    nav = browser.inner_text("nav.bd-docs-nav")
    for notebook in sorted(SITE.glob("[0-9][0-9]_*.html")):
        title = browser.locator(f"nav.bd-docs-nav a[href='{notebook.name}']")
        assert title.count() == 1, f"the navigation does not list {notebook.name}: {nav}"
    _check_images(browser, "front page")
    _check_math(browser, "front page")
    browser.screenshot(path=str(ARTIFACTS / "site_front.png"))
    assert not browser.errors, browser.errors
    assert not browser.remote, f"requests to other hosts: {browser.remote}"


def test_method_page_figure_formula_and_solution(site, browser):
    page_file = _page("03_*.html")
    assert page_file, "runs/site/ has no page of notebook 03: run `make tutorial && make site`"
    _open(browser, f"{site}/{page_file.name}")
    assert _check_images(browser, page_file.name) > 0, f"{page_file.name} shows no figure"
    assert _check_math(browser, page_file.name) > 0, f"{page_file.name} typesets no formula"

    exercises = browser.locator("main div.exercise.admonition")
    assert exercises.count() > 0, (f"{page_file.name} has no exercise box: tag the markdown cell that states each "
                                   "exercise 'exercise'")
    solution = browser.locator("main div.solution.dropdown").first
    assert solution.count() == 1, f"{page_file.name} has no solution dropdown (code cells with nbgrader solution)"
    code = solution.locator("div.cell_input").first
    assert code.count() == 1 and not code.is_visible(), "the solution is shown before it is clicked"
    assert "Click to show" in solution.inner_text() or solution.locator("button").count() >= 1
    solution.locator(".admonition-title").first.click()
    code.wait_for(state="visible", timeout=5_000)
    assert "BEGIN SOLUTION" in code.inner_text()
    solution.scroll_into_view_if_needed()
    solution.screenshot(path=str(ARTIFACTS / "site_solution.png"))
    browser.screenshot(path=str(ARTIFACTS / "site_method.png"))
    assert not browser.errors, browser.errors
    assert not browser.remote, f"requests to other hosts: {browser.remote}"


def test_theory_page_formulas(site, browser):
    page_file = _page("02_*.html")
    if page_file is None:
        pytest.skip("notebook 02 (theory) is not in this site: no notebooks/02_*.ipynb was executed")
    _open(browser, f"{site}/{page_file.name}")
    _check_images(browser, page_file.name)
    assert _check_math(browser, page_file.name) > 0, f"{page_file.name} typesets no formula"
    browser.screenshot(path=str(ARTIFACTS / "site_theory.png"))
    assert not browser.errors, browser.errors
    assert not browser.remote, f"requests to other hosts: {browser.remote}"


class _Links(HTMLParser):
    """The links (``<a href>``), the assets (``<link href>``, ``<img src>``, ``<script src>``) and the ids of one
    HTML file."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.assets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        key = {"link": "href", "img": "src", "script": "src"}.get(tag)
        if key and attrs.get(key):
            self.assets.append(attrs[key])


@functools.cache
def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(errors="replace"))
    return parser


def _remote(target: str) -> bool:
    return urlsplit(target).scheme in ("http", "https") or target.startswith("//")


def test_no_broken_internal_link_and_nothing_from_the_network():
    _require_site()
    broken, remote = [], []
    pages = [p for p in sorted(SITE.rglob("*.html")) if "_static" not in p.relative_to(SITE).parts]  # (templates)
    for page in pages:
        name = page.relative_to(SITE)
        if "cdn" in page.read_text(errors="replace").lower():
            remote.append(f"{name}: mentions a CDN")
        parsed = _parse(page)
        remote += [f"{name} loads {a}" for a in parsed.assets if _remote(a)]
        for target in parsed.links + parsed.assets:
            if _remote(target) or urlsplit(target).scheme:  # a reference to the web, mailto:, data:
                continue
            path, anchor = urldefrag(target)
            file = (page.parent / unquote(urlsplit(path).path)).resolve() if path else page
            if file.is_dir():
                file = file / "index.html"
            if not file.exists():
                broken.append(f"{name} -> {target}")
            elif anchor and file.suffix == ".html" and unquote(anchor) not in _parse(file).ids:
                broken.append(f"{name} -> {target} (no such anchor)")
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:40])
    assert not remote, "the site needs the network:\n" + "\n".join(remote[:40])
    assert len(pages) > 3, pages
