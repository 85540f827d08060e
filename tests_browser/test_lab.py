"""Notebook 11 in a real browser: JupyterLab on 127.0.0.1, the notebook run in headless Chromium, its prediction
comparer found and changed, each change checked after its round trip through the kernel, and a screenshot saved.

Run by ``make test`` after the notebook tests (``make browser-test``; it installs Debian's chromium first when it
is missing), so ``runs/`` holds the runs of notebooks 01-08. Playwright drives the system browser
(``/usr/bin/chromium``); ``playwright install`` is never needed. The screenshots go to ``runs/test-artifacts/``.
Kept out of ``tests/`` so that the unit tests never start a browser.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "11_compare_methods.ipynb"
ARTIFACTS = ROOT / "runs" / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
IMAGES = 4  # images the comparer offers in this run (the notebook's default is 8)
SHOWN = ["source_only", "maxsquare_iw_multi", "oracle"]  # the checkpoints picked in the browser (seed 0)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# without these two files JupyterLab asks for a kernel in a dialog and shows a news toast; windowing "none" keeps
# every cell in the page, so the widget far down the notebook can be found without scrolling
USER_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"autoStartDefaultKernel": True,
                                                                    "windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_processes_under(folder: Path) -> None:
    """Kill what this test started and left behind: processes whose command line names ``folder`` (a fresh temp
    folder: the kernels' connection files and chromium's profile live there)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(folder) + os.sep in cmdline.read_bytes().decode(errors="ignore"):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass  # already gone


def _expected_accuracy(image: int) -> dict[str, str]:
    """Pixel accuracy (%) of the seed-0 checkpoints of ``SHOWN`` on ``image``, computed here, outside the kernel,
    from the checkpoints and labels (formatted as the comparer's status line shows them)."""
    import torch

    from udalib import zoo
    from udalib.experiment import find_run, open_data

    experiments = {"source_only": zoo.source_experiment(0), "oracle": zoo.oracle_experiment(0),
                   "maxsquare_iw_multi": zoo.adaptation_experiment("maxsquare_iw_multi", zoo.source_experiment(0))}
    out = {}
    for name in SHOWN:
        run = find_run(experiments[name])
        if run is None:
            pytest.fail(f"no finished run of {name} (seed 0) in runs/: run the notebooks first (make test runs them "
                        "before this test; or make tutorial)")
        x, label, *_ = open_data("minicity:target/val", default_split="val", train=False, exp=run.config)[image]
        with torch.no_grad():
            pred = run.model()(x[None])["out"].argmax(1)[0]
        valid = label != 255
        out[f"{name} · seed 0"] = f"{100 * ((pred == label) & valid).sum().item() / valid.sum().item():.1f}%"
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free port of 127.0.0.1 with a token, serving a papermill copy of notebook 11 (fewer
    images, never training); shut down, kernels included, when the module's tests end."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser-test` installs it (as root), or `apt-get install -y "
                    "chromium`")
    pytest.importorskip("playwright", reason="pip install -e '.[test]' (playwright drives the system chromium)")
    import papermill

    work = tmp_path_factory.mktemp("lab")
    papermill.execute_notebook(str(NOTEBOOK), str(work / NOTEBOOK.name), prepare_only=True, kernel_name="python3",
                               parameters={"IMAGES": IMAGES, "TRAIN_MISSING": False},
                               progress_bar=False)
    for rel, settings in USER_SETTINGS.items():
        path = work / "usersettings" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(work / "runtime"), "JUPYTER_CONFIG_DIR": str(work / "config"),
           "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [str(Path(sys.executable).with_name("jupyter")), "lab", "--allow-root", "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={work}", f"--LabApp.user_settings_dir={work / 'usersettings'}",
           f"--LabApp.workspaces_dir={work / 'workspaces'}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly"]
    log = open(work / "lab.log", "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work, preexec_fn=os.setsid)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(work / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield {"url": f"{base}/lab/tree/{NOTEBOOK.name}?token={token}&reset", "work": work}
    finally:
        try:  # shuts the kernels down too
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST"),
                                   timeout=5)
            server.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server's own process group (os.setsid)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        _kill_processes_under(work)  # kernels run in their own process groups; normally the shutdown above ended them
        log.close()


def _run_all(page) -> None:
    """Run > Run All Cells, again until the first cell runs (the first click can be dropped while the kernel
    connects)."""
    for _ in range(10):
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        try:
            page.wait_for_function("() => [...document.querySelectorAll('.jp-InputPrompt')]"
                                   ".some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))", timeout=10_000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try the menu again
            page.keyboard.press("Escape")
    pytest.fail("Run All Cells never started the notebook")


def _wait_status(page, pattern: str, timeout: float = 60_000) -> str:
    """Wait until the comparer's status line matches ``pattern`` (a JS regex); return its text."""
    status = ".udalib-compare .widget-html-content"
    page.wait_for_function("([sel, pat]) => { const e = document.querySelector(sel);"
                           " return e && new RegExp(pat).test(e.textContent); }", arg=[status, pattern],
                           timeout=timeout)
    return page.inner_text(status)


def _figure_src(page) -> str:
    return page.get_attribute(".udalib-compare .widget-output img", "src")


def test_comparer_in_jupyterlab_follows_clicks_through_the_kernel(lab):
    from playwright.sync_api import sync_playwright

    expected = _expected_accuracy(2)  # before the kernel runs: the two share two cores
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(lab["work"] / "chromium"), executable_path=str(CHROMIUM),
                                                       headless=True, args=CHROMIUM_ARGS,
                                                       viewport={"width": 1600, "height": 1000})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(lab["url"])
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            _run_all(page)
            page.wait_for_selector(".udalib-compare .widget-output img", timeout=300_000)
            # the notebook drives the widget from code after showing it: image 1, error mask, sidewalk highlighted
            _wait_status(page, "image 1 .*sidewalk IoU", timeout=300_000)
            page.wait_for_function("() => ![...document.querySelectorAll('.jp-InputPrompt')]"
                                   ".some(e => e.textContent.includes('*'))", timeout=300_000)

            # 1. a legend click clears the highlight: the kernel redraws, back to pixel accuracy
            before = _figure_src(page)
            page.locator(".udalib-compare").get_by_role("button", name="sidewalk", exact=True).click()
            _wait_status(page, "image 1 .*pixel accuracy")
            assert _figure_src(page) != before

            # 2. three checkpoints instead of the notebook's four (which include AdaBN)
            assert "adabn · seed 0" in page.inner_text(".udalib-compare .widget-html-content")
            page.select_option(".udalib-compare select", list(expected))
            text = _wait_status(page, "^(?![\\s\\S]*adabn)[\\s\\S]*image 1")
            assert all(f"{name}: " in text for name in expected)

            # 3. the image slider, from the keyboard: image 2, its numbers as computed outside the kernel
            before = _figure_src(page)
            page.locator(".udalib-compare .widget-slider .noUi-handle").first.click()
            page.keyboard.press("ArrowRight")
            text = _wait_status(page, "image 2 ")
            assert _figure_src(page) != before
            for name, accuracy in expected.items():
                assert f"{name}: {accuracy}" in text, (text, expected)

            comparer = page.locator(".udalib-compare")
            comparer.scroll_into_view_if_needed()
            comparer.screenshot(path=str(ARTIFACTS / "lab_compare.png"))
            page.screenshot(path=str(ARTIFACTS / "lab_page.png"))
        finally:
            context.close()
    assert not errors, errors
    assert (ARTIFACTS / "lab_compare.png").stat().st_size > 10_000
