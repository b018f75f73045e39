"""`kfx ui` in a real headless Chromium (Debian's, driven by Playwright; the launch recipe of
tests/analysis/browser.py): start the server on a root, visit every page, and report console
errors, page errors, failed responses and requests that left the server."""
from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.analysis.browser import ARGS, CHROMIUM, available

VIEWPORT = {"width": 1400, "height": 900}
TRAVERSALS = ["/file/../../../etc/passwd", "/file/%2e%2e/%2e%2e/etc/passwd", "/file/%252e%252e/etc/passwd",
              "/file//etc/passwd", "/file/runs/..%2f..%2f..%2fetc%2fpasswd", "/file/metadata.sqlite/../../x",
              "/file/escape/secret.txt", "/runs/..%2f..%2fetc", "/api/runs/..%2f..%2fetc/status"]


def need_browser() -> None:
    if not available():
        pytest.skip(f"no Chromium at {CHROMIUM} or no playwright (make browser)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ui_server(root: Path):
    """`kfx ui --root ROOT` in its own process; yields its base URL."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kfx.cli", "ui", "--root", str(root), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/api/runs", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"kfx ui did not start: {proc.stdout.read()[-3000:]}")
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


class Watched:
    """A browser page whose console errors, page errors, failed responses and outside requests are kept."""

    def __init__(self, browser, base: str, shots: Path):
        self.base, self.shots = base, shots
        self.page = browser.new_page(viewport=VIEWPORT)
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("request", self._request)
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))

    def _request(self, request) -> None:
        url = request.url
        if not url.startswith((self.base + "/", "data:", "about:")):
            self.problems.append(f"request outside the server: {url}")

    def visit(self, path: str, shot: str = "") -> None:
        response = self.page.goto(self.base + path)
        assert response.status == 200, f"{path}: HTTP {response.status}"
        self.page.wait_for_load_state("load")
        if shot:
            self.shoot(shot)

    def shoot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"ui-{name}.png"
        self.page.screenshot(path=str(path), full_page=False)
        return path

    def clean(self) -> None:
        assert not self.problems, "\n".join(self.problems)


@contextlib.contextmanager
def chromium():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def complete_runs(page) -> list[str]:
    """The Runs page's runs that completed, newest first."""
    return page.eval_on_selector_all("#run-rows tr:has(.badge.state-COMPLETE)", "rows => rows.map(r => r.dataset.run)")


def check_every_page(watched: Watched, task: str, artifact_kind: str, version_lineage: bool = True) -> dict:
    """Runs, a run (clicking `task` opens its artifacts, one of them shown by `artifact_kind`'s
    viewer: html | markdown | metrics | classification), Compare on the two newest runs (ticked on
    the Runs page), Models, Lineage (of the newest registry version, or with `version_lineage`
    False of the task's last output), Monitoring; no console error and no request outside the
    server anywhere."""
    page = watched.page
    watched.visit("/runs", "runs")
    runs = complete_runs(page)
    assert len(runs) >= 2, runs
    watched.visit(f"/runs/{runs[0]}")
    assert page.locator("svg.graph a.node").count() >= 3
    node = page.locator(f"svg.graph a.node[data-label='{task}']").first
    node.click()
    opened = page.locator(f"details.task[data-label='{task}'][open]")
    opened.first.wait_for(state="visible", timeout=10000)
    viewer = {"html": "iframe.fit[src^='/file/']", "markdown": "iframe.fit[srcdoc]",
              "metrics": "table.metrics", "classification": "svg[aria-label='ROC curve']"}[artifact_kind]
    shown = opened.first.locator(viewer).first
    shown.wait_for(state="visible", timeout=10000)
    if artifact_kind == "html":   # sized to its content, and unable to script the UI
        page.wait_for_function("f => f.contentDocument && f.contentDocument.readyState === 'complete' && "
                               "f.clientHeight > 160", arg=shown.element_handle(), timeout=10000)
        assert shown.get_attribute("sandbox") == "allow-same-origin"
    watched.shoot("run")
    traced = opened.first.locator("a[href^='/lineage?uri=']").last.get_attribute("href")   # an output
    watched.visit("/runs")
    for run in runs[:2]:
        page.check(f"input.pick[value='{run}']")
    page.click("#compare-selected")
    page.wait_for_url(re.compile(r".*/compare\?run=.*&run=.*"))
    page.wait_for_load_state("load")
    assert page.locator("table.compare").count() >= 3
    assert page.locator("text=no record for").count() == 0
    watched.shoot("compare")
    watched.visit("/models", "models")
    watched.visit("/lineage")
    if version_lineage:
        page.locator("a[href^='/lineage?uri=']").first.click()
    else:
        watched.visit(traced)
    page.wait_for_load_state("load")
    drawing = page.locator("svg[aria-label='lineage graph']")
    drawing.wait_for(timeout=10000)
    lineage = drawing.locator("a.node").count()
    watched.shoot("lineage")
    watched.visit("/monitoring", "monitoring")
    watched.clean()
    return {"runs": runs, "lineage": lineage}


def refused(base: str) -> dict[str, int]:
    """The final HTTP status of every traversal attempt (redirects followed)."""
    statuses = {}
    for path in TRAVERSALS:
        try:
            with urllib.request.urlopen(base + path, timeout=10) as response:
                statuses[path] = response.status
        except urllib.error.HTTPError as err:
            statuses[path] = err.code
    return statuses
