"""`kfx ui` in a real headless Chromium on a root of light pipeline runs (no TensorFlow: seconds):
every page loads with no console error and no request outside the server, a task's click opens
its artifacts, compare works on two runs, traversal is refused, and a run started in another
process appears and changes state without a reload. Screenshots are kept under the tmp dir."""
import json
import os
import subprocess
import sys
import urllib.request

import pytest

from tests.ui import browser, synthetic
from tests.ui.pipelines import compile_ui_demo


def _run(ir_path, root, *params, wait=True):
    args = [sys.executable, "-m", "kfx.cli", "run", "--ir", str(ir_path), "--root", str(root)]
    for param in params:
        args += ["--param", param]
    if not wait:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def ir_path(tmp_path_factory):
    return compile_ui_demo(tmp_path_factory.mktemp("ir"))


@pytest.fixture(scope="module")
def light_root(ir_path, tmp_path_factory):
    """Two runs of the demo pipeline (the second takes the other branch, the rest cached), a
    registry and monitor windows (synthetic: no model is trained here), and a symlink out of ROOT."""
    root = tmp_path_factory.mktemp("ui-root")
    _run(ir_path, root, "rows=50")
    _run(ir_path, root, "rows=80", "loud=true")
    synthetic.write_registry(root)
    synthetic.write_monitor_run(root, 1, retrain=False, online=0.88)
    synthetic.write_monitor_run(root, 2, retrain=True, online=0.81)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("not for the UI")
    os.symlink(outside, root / "escape")
    return root


@pytest.fixture(scope="module")
def server(light_root):
    with browser.ui_server(light_root) as base:
        yield base


def test_every_page_loads_and_a_task_click_opens_its_artifacts(server, tmp_path):
    browser.need_browser()
    with browser.chromium() as chromium:
        watched = browser.Watched(chromium, server, tmp_path)
        seen = browser.check_every_page(watched, task="judge", artifact_kind="html", version_lineage=False)
        assert seen["lineage"] >= 4   # judge's output <- judge <- pause's... <- make-data's data
        page = watched.page
        # The graph shows the skipped branch and the loop as such; the card's <script> stayed text.
        watched.visit(f"/runs/{seen['runs'][0]}")
        assert page.locator("svg.graph a.node.kind-if.state-SKIPPED").count() == 1
        assert page.locator("svg.graph a.node.kind-for-each").count() == 1
        assert "×3" in page.locator("svg.graph a.node[data-label='square'] text.state").text_content()
        page.locator("svg.graph a.node[data-label='judge']").click()
        card = page.frame_locator("details[data-label='judge'] iframe[srcdoc]")
        assert "<script>" in card.locator("body").inner_text()
        assert page.locator("details[data-label='judge'] svg[aria-label='ROC curve']").count() == 1
        assert page.locator("details[data-label='judge'] table.confusion").count() == 1
        watched.clean()
    assert sorted(p.name for p in tmp_path.glob("ui-*.png")) == \
        ["ui-compare.png", "ui-lineage.png", "ui-models.png", "ui-monitoring.png", "ui-run.png", "ui-runs.png"]


def test_the_run_report_opened_from_the_ui_reads_the_same(server, tmp_path):
    """The report (kfx/report.py) under the UI's sandbox (no script runs): no console error, the
    verdict and the timeline on the first screen, a stage's page framed at a readable height."""
    browser.need_browser()
    with browser.chromium() as chromium:
        watched = browser.Watched(chromium, server, tmp_path)
        page = watched.page
        watched.visit("/runs")
        watched.visit(f"/runs/{browser.complete_runs(page)[0]}")
        page.click("text=run report")
        page.wait_for_load_state("load")
        assert page.url.endswith("/report.html")
        for selector in (".verdict", "svg[aria-label='step timeline']"):
            box = page.locator(selector).first.bounding_box()
            assert box and box["y"] + box["height"] <= browser.VIEWPORT["height"], (selector, box)
        # Opened as the page's own state, not by Playwright's input: in a document whose sandbox runs
        # no script, its input events log "Blocked script execution" (tests/ui/test_report.py clicks it).
        page.locator("details#step-judge").evaluate("details => { details.open = true; }")
        frame = page.locator("details#step-judge iframe").first
        frame.wait_for(state="visible")
        assert frame.bounding_box()["height"] >= 0.7 * browser.VIEWPORT["height"]
        watched.shoot("report")
        watched.clean()


def test_traversal_attempts_are_refused(server, light_root):
    statuses = browser.refused(server)
    assert all(code in (403, 404) for code in statuses.values()), statuses
    # ... while a file under ROOT is served, sandboxed (no script, even opened on its own).
    run = next(p for p in (light_root / "runs").iterdir() if p.name.startswith("ui-demo-"))
    with urllib.request.urlopen(f"{server}/file/runs/{run.name}/run.json") as response:
        assert response.status == 200 and json.loads(response.read())["run_id"] == run.name
        assert response.headers["Content-Security-Policy"].startswith("sandbox allow-same-origin;")


def test_the_runner_writes_the_listing_the_runs_page_reads(light_root):
    from kfx.runner.orchestrator import run_listing
    from kfx.views import run_records
    for run in (light_root / "runs").glob("ui-demo-*"):
        record, listing = run_records.read_record(run), run_records.read_record(run, "summary.json")
        assert listing == json.loads(json.dumps(run_listing(record)))
        assert (run / "summary.json").stat().st_size < (run / "run.json").stat().st_size / 3
        assert listing["steps"].keys() == record["steps"].keys() and listing["state"] == record["state"]


def test_a_run_started_elsewhere_appears_and_its_tasks_change_state_without_a_reload(ir_path, tmp_path):
    browser.need_browser()
    root = tmp_path / "live"
    root.mkdir()
    with browser.ui_server(root) as base, browser.chromium() as chromium:
        watched = browser.Watched(chromium, base, tmp_path / "shots")
        page = watched.page
        watched.visit("/runs")
        page.evaluate("window.kfxMarker = 'same page'")
        run = _run(ir_path, root, "seconds=10", wait=False)
        try:
            row = page.locator("#run-rows tr[data-run^='ui-demo-']")
            row.wait_for(timeout=30000)
            assert page.evaluate("window.kfxMarker") == "same page"   # appeared without a reload
            watched.visit(f"/runs/{row.get_attribute('data-run')}")
            assert page.locator("#run-state").get_attribute("data-state") == "RUNNING"
            judge = page.locator("svg.graph a.node[data-label='judge']")
            before = judge.get_attribute("class")
            assert "state-PENDING" in before or "state-RUNNING" in before, before
            judged = "details.task[data-label='judge']"
            if "state-PENDING" in before:   # drawn in the same response as the graph: not listed yet
                assert page.locator(judged).count() == 0
            page.evaluate("window.kfxMarker = 'run page'")
            page.wait_for_function(
                "() => document.querySelector(\"svg.graph a.node[data-label='judge']\")"
                ".getAttribute('class').includes('state-COMPLETE')", timeout=60000)
            page.wait_for_function("() => document.getElementById('state-badge').textContent === 'COMPLETE'",
                                   timeout=30000)
            # The task list grew and the timeline was redrawn as tasks started, in the same page.
            page.locator(f"{judged} table.metrics").wait_for(state="attached", timeout=10000)
            assert page.locator("#timeline svg title", has_text="judge").count() == 1
            assert page.evaluate("window.kfxMarker") == "run page"
            watched.shoot("live")
            watched.clean()
        finally:
            out, _ = run.communicate(timeout=120)
        assert run.returncode == 0, out[-3000:]
