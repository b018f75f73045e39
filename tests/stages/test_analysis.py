"""Model analysis and optimization, run once on the shared taxi fixtures (the published student):
evaluate with several slice features, a crossed pair, Fairness Indicators and a SHAP explanation;
quantize with pruning and QAT beside the post-training variants; the model card built from both;
then the evaluate page, the explanation page and the rendered card checked in a real headless
Chromium (screenshots kept under the test's tmp dir)."""
import json
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "analysis"))
import browser  # noqa: E402  (tests/analysis/browser.py)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")

EXPLAIN_ROWS = 80


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("analysis")


@pytest.fixture(scope="module")
def evaluated(examples, student, teacher, out):
    from kfx_components.evaluate import executor
    m = examples.metadata
    histories = {"distributed_train (teacher)": {k: teacher.metadata[k] for k in ("curves", "best_epoch")},
                 "distill (student)": student.metadata["history"]}
    return executor.run(model_dir=student.path, examples_dir=examples.path,
                        evaluation_dir=str(out / "evaluation"), report_path=str(out / "report.html"),
                        label_key=m["label_key"], problem_type=m["problem_type"], num_classes=m["num_classes"],
                        slice_features=["trip_start_hour", "payment_type"],
                        crossed_slices=["payment_type,trip_start_day"], explain_rows=EXPLAIN_ROWS,
                        explanation_path=str(out / "explanation.html"), training_history=histories)


@pytest.fixture(scope="module")
def optimized(student, examples, model_args, out):
    from kfx_components.quantize import executor
    return executor.run(model_dir=student.path, quantized_dir=str(out / "quantized"), tolerance=0.05,
                        examples_dir=examples.path, pruning_sparsity=0.5, qat=True, finetune_epochs=1,
                        finetune_when="always", **model_args)


@pytest.fixture(scope="module")
def card(evaluated, optimized, student, examples, out):
    """The model card as push writes it, from the facts of the runs above (as the components pass them)."""
    from kfx_components.evaluate import fairness
    from kfx_components.push import executor
    blessing = {"blessed": True, "reasons": [], "baseline_used": False, "split": "test",
                **{k: evaluated[k] for k in ("trust", "overall", "per_slice", "slice_features", "crossed_slices",
                                             "explanation", "warnings")},
                "fairness": fairness.compact(evaluated["fairness"])}
    model = {**student.metadata, "teacher_history": evaluated["training_history"]["distributed_train (teacher)"]}
    made = executor.make_card("chicago-taxi", model, optimized, blessing, examples.metadata,
                              {"width": 32, "depth": 2, "learning_rate": 0.003}, {"model": "7"})
    json.dumps(made, allow_nan=False)  # what goes into artifact metadata and model_card.json
    facts = executor.run(model_dir=student.path, quantized_dir=str(out / "quantized"), blessing=blessing,
                         registry_uri=str(out / "registry"), model_name="chicago-taxi", card=made)
    return facts


def test_explanation_ranks_raw_features_and_is_locally_accurate(evaluated):
    e = evaluated["explanation"]
    assert EXPLAIN_ROWS // 2 <= e["rows"] <= EXPLAIN_ROWS and e["background_rows"] <= 25  # an even stride
    names = [i["feature"] for i in e["importance"]]
    assert "payment_type" in names and "fare" in names and "label" not in names  # raw columns, not transformed
    values = [i["mean_abs_shap"] for i in e["importance"]]
    assert values == sorted(values, reverse=True) and values[0] > 0
    # on taxi, whether a tip is recorded depends first of all on the payment type (cash tips are not)
    assert "payment_type" in names[:3], names
    # local accuracy: base value + the row's SHAP values = the model's output
    assert e["additivity_max_error"] < 0.02
    assert 0.0 < e["expected_output"] < 1.0
    pd = {d["feature"]: d for d in e["partial_dependence"]}
    assert set(pd) == set(names[:3])
    payment = dict(zip(pd["payment_type"]["values"], pd["payment_type"]["mean_output"]))
    assert payment["Credit Card"] > payment["Cash"] + 0.2, payment
    # bounded work: per explained row a fixed number of masked copies (one permutation, both directions,
    # over the background rows) plus the partial-dependence grid; nothing grows with the table
    assert e["model_calls_rows"] <= e["rows"] * ((4 * e["features"] + 2) * e["background_rows"] + 40)


def test_report_has_every_analysis_section(evaluated, out):
    page = (out / "report.html").read_text()
    for section in ("verdict", "trust", "overall", "roc", "fairness", "explanation", "training"):
        assert f"id='{section}'" in page, section
    assert page.count("class='slices'") == 3  # trip_start_hour, payment_type, payment_type x trip_start_day
    assert not re.search(r"https?://|<script|<link|<img|@import|src=", page, re.I)
    assert "Partial dependence" in (out / "explanation.html").read_text()


def test_pruned_and_qat_variants(optimized, out):
    v = optimized["variants"]
    assert {"float32", "dynamic_range", "float16", "int8", "pruned", "qat"} <= set(v) | set(optimized["rejected"])
    pruned = v["pruned"]
    assert pruned["training"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    # the zeros compress: relative to the file size, the pruned file gzips better than the unpruned one
    assert pruned["gzip_bytes"] / pruned["size_bytes"] < v["dynamic_range"]["gzip_bytes"] / v["dynamic_range"]["size_bytes"]
    qat = v["qat"]
    assert qat["training"]["annotated_layers"] and qat["training"]["not_annotated"] == ["Embedding"]
    assert "Embedding" in optimized["notes"]["qat"]
    assert qat["tensors"]["outputs"]["logits"] == "int8"
    for name in ("pruned", "qat"):
        assert abs(v[name]["metric_delta"]) <= 0.05 and (out / "quantized" / f"{name}.tflite").exists()
    ref = optimized["reference"]["latency"]
    # end to end (parsing + TFT + model) costs more than the model on transformed inputs
    assert ref["end_to_end_batch"]["median_ms"] > ref["transformed_batch"]["median_ms"] > 0
    assert optimized["recommended"] == min(v, key=lambda k: v[k]["size_bytes"])
    assert optimized["recommended"] in optimized["recommendation"]


def test_model_card_holds_the_analysis(card, optimized):
    md = card["model_card"]
    for text in ("Fairness", "Largest gap", "Explanation", "payment_type", "partial dependence",
                 "pruned", "qat", "Recommended:", optimized["recommended"], "single-example latency",
                 "The student has"):
        assert text in md, text
    page = card["model_card_html"]
    for section in ("evaluation", "slices", "fairness", "explanation", "training", "quantized", "lineage"):
        assert f"id='{section}'" in page, section


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    directory = os.environ.get("KFX_TEST_ARTIFACTS") or str(tmp_path_factory.mktemp("screenshots"))
    os.makedirs(directory, exist_ok=True)
    return directory


def _shown_in_a_browser(path: str, shot: str) -> None:
    """Every section is shown (not empty, drawn inside its box), no console error, no network request,
    nothing wider than the window; the full-page screenshot is kept."""
    if not browser.available():
        pytest.skip(f"no headless browser: {browser.CHROMIUM} or playwright missing (apt-get install chromium)")
    seen = browser.inspect(path, shot)
    print(f"screenshot: {shot}")
    assert seen["errors"] == [] and [m for m in seen["console"] if m[0] in ("error", "warning")] == []
    assert seen["requests"] == []
    assert seen["scrollWidth"] <= seen["clientWidth"], "the page is wider than the window"
    assert seen["sections"], "no section"
    for s in seen["sections"]:
        assert s["height"] > 20 and s["text"] > 0, s
        assert s["problems"] == [], (s["id"], s["problems"])
    drawn = [s for s in seen["sections"] if s["svgs"]]
    assert drawn, "no chart on the page"
    assert os.path.getsize(shot) > 20_000


@pytest.mark.parametrize("page", ["report.html", "explanation.html", "model_card.html"])
def test_pages_in_a_real_browser(page, evaluated, card, out, screenshots):
    path = os.path.join(card["uri"], page) if page == "model_card.html" else str(out / page)
    _shown_in_a_browser(path, os.path.join(screenshots, page.replace(".html", ".png")))


def test_validate_page_in_a_real_browser(validated, screenshots):
    """validate's page: anomalies, train vs eval distribution charts, the split tables."""
    _shown_in_a_browser(validated.report, os.path.join(screenshots, "validate.png"))
