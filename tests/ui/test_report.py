"""The run report (kfx/report.py) reads summary first: checked in a real Chromium on a report written
from a synthetic run record shaped as the taxi run's (evaluate's trust facts, quantize's variants,
check-drift's verdict, training curves, stage HTML pages). No pipeline runs."""
from __future__ import annotations

from pathlib import Path

from kfx import report
from kfx.stores.metadata import StoredArtifact
from kfx.runner.run_context import RunResult, StepRecord
from tests.ui import synthetic
from tests.ui.browser import VIEWPORT, chromium, need_browser

_STAGE_PAGE = "<!doctype html><html><head><style>p{margin:0 0 40px}</style></head><body><h1>{title}</h1>{body}</body></html>"


def result_from_record(record: dict, root: Path) -> RunResult:
    """A RunResult as the runner returns it, from a run.json record."""
    steps = {}
    for name, step in record["steps"].items():
        outputs = {out: StoredArtifact(k, a["type"], a["uri"], a["metadata"], "f")
                   for k, (out, a) in enumerate((step.get("outputs") or {}).items())}
        steps[name] = StepRecord(name, step["state"], step["seconds"], outputs=outputs,
                                 parameters=step.get("parameters") or {}, skipped=step.get("skipped", ""))
    return RunResult(run_id=record["run_id"], pipeline=record["pipeline"], root=root,
                     parameters=record["parameters"], steps=steps, seconds=record["seconds"],
                     state=record["state"], error=record.get("error", ""), error_line=record.get("error_line", ""))


def taxi_like(tmp_path: Path) -> RunResult:
    """synthetic.record(4) (drift in trip_miles) with what the taxi run adds: references with
    intervals, quantized variants, curves, long notes and two tall stage pages."""
    record = synthetic.record(4)
    evaluate = record["steps"]["evaluate"]["outputs"]
    evaluate["blessing"]["metadata"]["trust"].update(
        confidence=0.95, trivial={"metric": 0.5, "ci": [0.5, 0.5]},
        references={"linear": {"metric": 0.83, "ci": [0.82, 0.85], "estimator": "LogisticRegression"},
                    "boosting": {"metric": 0.88, "ci": [0.86, 0.89], "estimator": "HistGradientBoostingClassifier"}})
    evaluate["blessing"]["metadata"]["per_slice"] = [{"slice": f"hour={h}", "auc": 0.8 + h / 100, "rows": 10 * h}
                                                     for h in range(30)]
    for i, page in enumerate(("report", "explanation")):
        uri = tmp_path / f"{page}.html"
        uri.write_text(_STAGE_PAGE.replace("{title}", page).replace("{body}", "<p>section</p>" * 200))
        evaluate[page] = {"type": "system.HTML", "uri": str(uri), "metadata": {}}
    variants = {name: {"size_bytes": size, "metric": 0.9, "latency": {"single_call": {"median_ms": ms, "p90_ms": ms * 2}},
                       "file": f"{name}.tflite"}
                for name, size, ms in (("float32", 12600, 0.047), ("float16", 10140, 0.043), ("int8", 8688, 0.046))}
    record["steps"]["quantize"] = {"state": "COMPLETE", "seconds": 30.0, "outputs": {"quantized": {
        "type": "system.Model", "uri": str(tmp_path / "quantized"), "metadata": {
            "variants": variants, "recommended": "int8",
            "notes": {"int8": "full integer: " + "weights and activations are int8; " * 20}}}}}
    record["steps"]["distributed-train"] = {"state": "COMPLETE", "seconds": 90.0, "outputs": {"model": {
        "type": "system.Model", "uri": str(tmp_path / "model"), "metadata": {
            "curves": {"loss": [0.5, 0.3, 0.25, 0.2], "val_loss": [0.45, 0.33, 0.3, 0.29]},
            "history": {"best_epoch": 3, "curves": {"loss": [1.3, 0.7]}}}}}}
    return result_from_record(record, tmp_path)


def test_the_summary_comes_first_and_no_cell_holds_json(tmp_path):
    page = report.write(taxi_like(tmp_path), tmp_path / "report.html").read_text()
    summary = page[:page.index("<h2>Each step</h2>")]
    assert "BLESSED by evaluate" in summary and "drift in trip_miles" in summary
    assert "aria-label='auc with intervals'" in summary and "HistGradientBoostingClassifier" in summary
    assert "aria-label='variant size'" in summary and "aria-label='variant latency'" in summary
    assert "aria-label='step timeline'" in summary
    assert "<td>{" not in page and "<td>[" not in page and '{&quot;' not in page.replace("srcdoc=", "")
    assert "<script" not in page and "src=" not in page and "onload" not in page


def test_the_first_screen_in_chromium(tmp_path):
    """At 1400x900: the verdict and the metric chart in view, no console error, no JSON text in a
    table cell, and the page a few screens tall with every step's details collapsed."""
    need_browser()
    path = report.write(taxi_like(tmp_path), tmp_path / "report.html")
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: r.url.startswith(("file:", "about:", "data:")) or problems.append(r.url))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        for selector in (".verdict", "svg[aria-label='auc with intervals']"):
            box = page.locator(selector).first.bounding_box()
            assert box and box["y"] + box["height"] <= VIEWPORT["height"], (selector, box)
        cells = page.eval_on_selector_all("td", "cells => cells.map(c => c.innerText)")
        assert cells and not [c for c in cells if '{"' in c or '["' in c]
        height = page.evaluate("document.documentElement.scrollHeight")
        assert height < 6000, height
        shots = Path(__file__).resolve().parents[2] / "build" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "report-first-screen.png"))
        page.locator("details#step-evaluate > summary").click()   # a stage's page opens at a readable height
        frame = page.locator("details#step-evaluate iframe").first
        frame.wait_for(state="visible")
        assert frame.bounding_box()["height"] >= 0.7 * VIEWPORT["height"]
    assert not problems, problems
