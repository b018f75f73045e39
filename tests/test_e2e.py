"""The whole lifecycle, from the compiled IR, on the bundled data, through the CLI.

One run (the session's shared `taxi_run`, tests/conftest.py) then two identical runs; assertions on what a user
gets: a pushed, blessed model that serves raw examples and beats the trivial
predictor on the test split, full MLMD lineage, a report, and reruns that push
nothing new and re-run only what the new baseline changed (then nothing but
resolve and push).
"""
import json
import re
from pathlib import Path

import pytest

from kfx_components.common import loading
from tests.cli_runs import FAST, kfx as _kfx, land_span as _span, pushed_uri as _pushed_uri

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runs(repo, taxi_run):
    """Three runs over span 1 (the bundled data): the first (the session's shared `taxi_run`,
    conftest.py; its outcome posted to the session's `webhook`) pushes v1, the others change nothing."""
    root, incoming, first = taxi_run
    config = str(repo / "pipelines/configs/chicago_taxi.yaml")
    data = ["--data", str(incoming / "span-{SPAN}" / "data.csv")]
    second = _kfx("run", "--config", config, *data, "--root", str(root), *FAST)
    third = _kfx("run", "--config", config, *data, "--root", str(root), *FAST)
    # Everything recomputed: the model is made from the same data, parameters and code as v1.
    uncached = _kfx("run", "--config", config, *data, "--root", str(root), "--no-cache", *FAST)
    return root, first, second, third, incoming, uncached


@pytest.fixture(scope="module")
def later_spans(repo, runs, webhook):
    """Span 2 (the second taxi sample) runs through; span 3 (span 2 with trip_miles shifted) stops."""
    root, *_, incoming, _ = runs
    config = str(repo / "pipelines/configs/chicago_taxi.yaml")
    data = ["--data", str(incoming / "span-{SPAN}" / "data.csv")]
    _span(incoming, 2, repo / "data/chicago_taxi/second_sample.csv")
    second_span = _kfx("run", "--config", config, *data, "--root", str(root), *FAST)
    _span(incoming, 3, repo / "data/chicago_taxi/second_sample.csv", ("trip_miles", lambda miles: miles * 3 + 10))
    shifted = _kfx("run", "--config", config, *data, "--root", str(root), *FAST,
                   "--param", f"notify_url={webhook.url}", check=False)
    history = _kfx("history", "--root", str(root), "--json")
    return second_span, shifted, json.loads(history.stdout)


def _examples(root: Path, proc) -> Path:
    """The examples a run's ingest wrote (each run has its own; a cached run reuses the first's)."""
    run_id = re.search(r"^run (\S+) COMPLETE", proc.stdout, re.M).group(1)
    return root / "artifacts" / "kfx-tabular" / run_id / "ingest" / "examples"


def test_pushed_model_serves_raw_examples_and_beats_majority_baseline(runs):
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    root, first, *_ = runs
    uri = Path(_pushed_uri(first))
    assert re.fullmatch(r"v\d+", uri.name) and uri.parent.name == "chicago-taxi-big-tipper"
    card_md = (uri / "model_card.md").read_text()
    assert "## Training (distillation)" in card_md
    card = json.loads((uri / "model_card.json").read_text())
    assert card["training"]["temperature"] == 4.0
    if card["which_model"].get("teacher_family") == "gradient_boosted_trees":
        # A forest has no parameters to compress; its distilled student is the edge variant, said so.
        assert card["which_model"]["edge_model"] in ("student", "none") and "## For the edge" in card_md
        assert card["model_family"]["chosen"] == "gradient_boosted_trees"
    else:
        assert card["training"]["compression_ratio"] > 1
    assert card["blessing"]["blessed"] is True and card["metrics"]["overall"]
    # Infra validation: the candidate was loaded and queried in the serving runtime before push.
    infra = card["infra_validation"]
    assert infra["runtime"].split()[0] in ("docker", "process", "step") and infra["load_seconds"] > 0
    assert infra["latency_ms"]["p99"] >= infra["latency_ms"]["p50"] > 0 and infra["requests"] == 100
    assert infra["max_difference"] <= infra["tolerance"] and "## Infra validation" in (uri / "model_card.md").read_text()
    assert re.search(r"^infra-blessed: loaded in [\d.]+s by \w+; 100 requests", first.stdout, re.M), first.stdout
    # What ingest left out of the file is counted beside its rows, in the run's outcome lines and the card.
    left_out = "columns left out: 'tips', 'trip_start_timestamp' (drop_columns)"
    assert re.search(rf"^data: [\d,]+ rows in the file, all used; {re.escape(left_out)}$", first.stdout, re.M)
    assert any(left_out in w for w in card["warnings"]), card["warnings"]
    assert card["metrics"]["split"] == "test" and card["trust"]["vs_trivial_ci"][0] > 0
    low, high = card["trust"]["vs_boosting_ci"]   # paired: the point difference lies inside
    assert low <= card["trust"]["model"]["metric"] - card["trust"]["references"]["boosting"]["metric"] <= high
    assert f"(paired 95% CI, positive = this model): {low:+.4f} to {high:+.4f}." in (uri / "model_card.md").read_text()
    # The request contract clients must keep: the taxi's raw fields with their types, the label not among them.
    fields = {f["name"]: f["type"] for f in json.loads((uri / "contract.json").read_text())["fields"] if f["used"]}
    assert fields["fare"] == "float" and fields["trip_start_hour"] == "int" and fields["company"] == "string"
    assert "label" not in fields and "tips" not in fields
    # The run's one-line outcome names the model, its test metric with its interval and the comparisons.
    assert re.search(r"^pushed chicago-taxi-big-tipper v1 \((student|teacher)\): auc 0\.\d{4} on \d+ test rows "
                     r"\(95% CI 0\.\d{4}-[01]\.\d{4}\), trivial 0\.5000, LogisticRegression 0\.\d{4}$",
                     first.stdout, re.M), first.stdout
    model = loading.load_model(str(uri / "saved_model"))
    serve = model.signatures["serving_default"]

    # The raw test split exactly as ingested: serialized tf.Examples, label included
    # (the signature ignores it), no transformation applied by the caller.
    examples_dir = _examples(root, first)
    raw = list(tf.data.TFRecordDataset(str(examples_dir / "test/data.tfrecord.gz"), "GZIP").as_numpy_iterator())
    labels = [tf.train.Example.FromString(r).features.feature["label"].int64_list.value[0] for r in raw]
    probabilities = serve(examples=tf.constant(raw))["probabilities"].numpy().ravel()
    assert len(probabilities) == len(raw) > 2000
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    auc = roc_auc_score(labels, probabilities)
    assert auc > 0.6, f"AUC {auc:.3f} does not beat the majority-class baseline (0.5) by a margin"


def test_lineage_links_pushed_model_back_to_the_ingested_data(runs, repo):
    from kfx.stores import lineage
    from kfx.stores.metadata import MetadataStore

    root, first, *_ = runs
    tree = lineage.trace(MetadataStore(str(root / "metadata.sqlite")), _pushed_uri(first))

    traced = {n.artifact_id: n for n in tree.walk() if not n.repeated}

    def producer(node, input_name):
        """The node that made `node`'s input, wherever in the tree its own inputs were traced."""
        [child] = [c for c in node.inputs if c.name == input_name]
        return traced[child.artifact_id]

    # Each link, in order: which input of which step was made by which step.
    assert tree.task == "push"
    evaluated = producer(tree, "blessing")
    assert evaluated.task == "evaluate"
    student = producer(evaluated, "model")
    assert student.task == "distill"
    teacher = producer(student, "teacher")
    assert teacher.task == "distributed-train"
    transformed = producer(teacher, "transformed_examples")
    assert transformed.task == "transform"
    ingested = producer(transformed, "examples")
    assert ingested.task == "ingest"
    assert producer(ingested, "data").task == "importer"
    # The examples push and evaluate also read are the same ingest output, named as such.
    again = producer(tree, "examples")
    assert again.task == "ingest" and again.artifact_id == ingested.artifact_id
    data = [n for n in tree.walk() if n.task == "importer"]
    assert data and data[0].uri.endswith("/span-1/data.csv")   # the span the pattern resolved to

    cli = _kfx("lineage", _pushed_uri(first), "--root", str(root))
    assert "<- push" in cli.stdout and "<- ingest" in cli.stdout and "data.csv" in cli.stdout


def _states(root, proc) -> dict:
    run_id = re.search(r"^run (\S+) COMPLETE", proc.stdout, re.M).group(1)
    summary = json.loads((root / "runs" / run_id / "run.json").read_text())
    return {task: step["state"] for task, step in summary["steps"].items()}


def test_reruns_push_nothing_new_and_re_run_only_what_the_baseline_changed(runs):
    """KFP's caching semantics: resolve, push and deploy always run; check-drift and evaluate re-run in the
    second run because their baseline went from none to v1 (and infra-validate, after evaluate); the third
    run re-runs nothing else."""
    root, first, second, third, _, uncached = runs
    assert _pushed_uri(second) == _pushed_uri(first) == _pushed_uri(third)
    assert re.search(r"^already v1: ", second.stdout, re.M) and re.search(r"^already v1: ", third.stdout, re.M)
    assert [p.name for p in (root / "registry" / "chicago-taxi-big-tipper").glob("v*")] == ["v1"]
    ran = {t for t, s in _states(root, second).items() if s == "COMPLETE"}
    # infra-validate reads evaluate's blessing: it re-runs with it.
    assert ran == {"resolve", "check-drift", "evaluate", "infra-validate", "push", "deploy", "notify"}, \
        _states(root, second)
    ran = {t for t, s in _states(root, third).items() if s == "COMPLETE"}
    assert ran == {"resolve", "push", "deploy", "notify"}, _states(root, third)
    # --no-cache retrains everything; push knows the model by what made it, not by its bytes.
    assert set(_states(root, uncached).values()) == {"COMPLETE", "IMPORTED"}
    assert re.search(r"^(already v1: |not pushed: )", uncached.stdout, re.M), uncached.stdout
    assert [p.name for p in (root / "registry" / "chicago-taxi-big-tipper").glob("v*")] == ["v1"]


def test_report_shows_stats_anomalies_metrics_and_model_sizes(runs):
    root, first, *_ = runs
    report = Path(re.search(r"^report: (\S+)$", first.stdout, re.M).group(1))
    page = report.read_text()
    for stage in ("ingest", "validate", "transform", "tune", "distributed-train", "distill",
                  "quantize", "evaluate", "push"):
        assert stage in page
    assert "anomal" in page.lower() and "auc" in page.lower() and "int8" in page
    assert not re.search(r"<script[^>]+src=[\"']https?:", page)


# ---------------------------------------------------------------- containers + S3
@pytest.fixture(scope="module")
def docker_run(repo, runs, s3_server, tmp_path_factory):
    """The same IR with every step in its stage's image and every artifact in S3, the data included."""
    from kfx.stores.s3 import S3Store
    root = tmp_path_factory.mktemp("e2e-docker")
    store = "s3://kfx-e2e/pipeline-root"
    client = S3Store(store).client
    client.fput_object("kfx-e2e", "datasets/chicago_taxi/data.csv", str(repo / "data/chicago_taxi/data.csv"))
    # As on a cluster, the curated schema is an object too: a container sees no host path.
    client.fput_object("kfx-e2e", "schemas/chicago_taxi.pbtxt", str(repo / "pipelines/schemas/chicago_taxi.pbtxt"))
    proc = _kfx("run", "--config", str(repo / "pipelines/configs/chicago_taxi.yaml"), "--root", str(root),
                "--param", "data_uri=s3://kfx-e2e/datasets/chicago_taxi/data.csv",
                "--param", "schema_uri=s3://kfx-e2e/schemas/chicago_taxi.pbtxt",
                "--executor", "docker", "--artifact-store", store, *FAST)
    return root, store, proc


def _eval_auc(saved_model_dir, examples_dir) -> float:
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score
    serve = loading.load_model(str(saved_model_dir)).signatures["serving_default"]
    raw = list(tf.data.TFRecordDataset(str(examples_dir / "test/data.tfrecord.gz"), "GZIP").as_numpy_iterator())
    labels = [tf.train.Example.FromString(r).features.feature["label"].int64_list.value[0] for r in raw]
    return roc_auc_score(labels, serve(examples=tf.constant(raw))["probabilities"].numpy().ravel())


@pytest.mark.docker
@pytest.mark.s3
def test_containers_and_s3_give_the_same_outcome_as_local_processes(runs, docker_run, tmp_path):
    from kfx.stores import lineage
    from kfx.stores.metadata import MetadataStore, prop
    from kfx.stores.s3 import S3Store
    from kfx_formats import registry

    local_root, local_first, *_ = runs
    root, store_uri, proc = docker_run
    pushed = _pushed_uri(proc)
    assert pushed.startswith(store_uri + "/registry/chicago-taxi-big-tipper/v")

    md = MetadataStore(str(root / "metadata.sqlite"))
    executions = [e for e in md.store.get_executions() if prop(e, "image")]
    from kfx.runner import ir
    [run_dir] = (root / "runs").iterdir()
    steps = [t for t in ir.load(run_dir / "pipeline.yaml").tasks.values() if not t.is_importer]
    assert len(executions) == len(steps) == 14 and {prop(e, "launcher") for e in executions} == {"docker"}
    uris = [a.uri for a in md.store.get_artifacts()]
    assert all(u.startswith("s3://") for u in uris), uris
    tree = lineage.trace(md, pushed)
    assert {"push", "evaluate", "distill", "distributed-train", "transform", "ingest", "importer"} <= \
        {n.task for n in tree.walk()}

    # Same eval split (deterministic split), same model quality within a small tolerance.
    store = S3Store(store_uri)
    examples = next(n for n in tree.walk() if n.task == "ingest")
    examples_dir = Path(store.local_path(examples.uri, tmp_path / "examples"))
    version = registry.latest(store_uri + "/registry", "chicago-taxi-big-tipper")
    model_dir = Path(registry.fetch(version, str(tmp_path / "pushed")))
    docker_auc = _eval_auc(model_dir / "saved_model", examples_dir)
    local_examples = _examples(local_root, local_first)
    local_auc = _eval_auc(Path(_pushed_uri(local_first)) / "saved_model", local_examples)
    assert abs(docker_auc - local_auc) < 0.02, (docker_auc, local_auc)


# ---------------------------------------------------------------- any tabular data set
def test_another_data_set_through_the_cli_flags_alone(tmp_path):
    """Multiclass, string labels, a column name TF cannot use as-is, no config file."""
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    frame["cultivar"] = frame.pop("target").map({0: "barolo", 1: "grignolino", 2: "barbera"})
    assert "od280/od315_of_diluted_wines" in frame.columns
    data = tmp_path / "wine.csv"
    frame.to_csv(data, index=False)
    proc = _kfx("run", "--data", str(data), "--label", "cultivar", "--task", "multiclass",
                "--root", str(tmp_path / "root"), *FAST)
    pushed = Path(_pushed_uri(proc))
    serve = loading.load_model(str(pushed / "saved_model")).signatures["serving_default"]
    [examples_dir] = (tmp_path / "root").glob("artifacts/kfx-tabular/*/ingest/examples")
    raw = list(tf.data.TFRecordDataset(str(examples_dir / "test/data.tfrecord.gz"), "GZIP").as_numpy_iterator())
    labels = np.array([tf.train.Example.FromString(r).features.feature["cultivar"].int64_list.value[0] for r in raw])
    probabilities = serve(examples=tf.constant(raw))["probabilities"].numpy()
    assert probabilities.shape == (len(raw), 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    majority = float(np.bincount(labels).max() / len(labels))
    assert accuracy > majority + 0.1, (accuracy, majority)


def test_spans_form_one_history_and_a_shifted_span_stops_naming_the_feature(runs, later_spans):
    second_span, shifted, history = later_spans
    assert "error" not in second_span.stderr
    assert shifted.returncode == 1
    [line] = shifted.stderr.strip().splitlines()
    assert line.startswith("error: check-drift: ") and "trip_miles" in line, line
    assert [row["span"] for row in history] == [1, 1, 1, 1, 2, 3]
    assert history[0]["rows"] == 15002 and 4000 < history[4]["rows"] <= 5000
    assert history[4]["drift"] == "none"               # span 2 is like span 1
    assert history[5]["state"] == "FAILED at check-drift"
    assert history[0]["outcome"].startswith("pushed chicago-taxi-big-tipper v1")
    assert history[1]["outcome"].startswith("already v1")


def test_kfx_ui_shows_this_root_in_a_browser(runs, later_spans, tmp_path):
    """`kfx ui` on this module's root (issue 23; tests/ui/browser.py): every page with no console
    error and no request outside the server, evaluate's report opened from the graph, two runs
    compared, the pushed version's lineage drawn, traversal refused."""
    from tests.ui import browser
    browser.need_browser()
    with browser.ui_server(runs[0]) as base, browser.chromium() as chromium:
        seen = browser.check_every_page(browser.Watched(chromium, base, tmp_path), task="evaluate", artifact_kind="html")
        statuses = browser.refused(base)
    assert seen["lineage"] >= 10 and len(seen["runs"]) >= 4   # v1 back through every stage to the data
    assert all(code in (403, 404) for code in statuses.values()), statuses


def test_the_exit_handler_posts_a_pushed_run_and_a_failed_step_to_the_webhook(runs, later_spans, webhook):
    """dsl.ExitHandler's notify task: the pushed model and its metric, or the failing step and its error."""
    _, first, *_ = runs
    pushed, failed = webhook.posts      # the first run's and the shifted span's (the others set no URL)
    assert pushed["kfx"]["state"] == "SUCCEEDED" and pushed["kfx"]["pushed"] is True
    assert pushed["kfx"]["version"] == 1 and pushed["kfx"]["uri"] == _pushed_uri(first)
    assert pushed["kfx"]["metric"] == "auc" and 0.5 < pushed["kfx"]["value"] <= 1
    assert pushed["text"].startswith("kfx run kfx-tabular-")
    assert " pushed chicago-taxi-big-tipper v1, auc " in pushed["text"]
    assert failed["kfx"]["state"] == "FAILED" and failed["kfx"]["failed_step"] == "check-drift"
    assert "trip_miles" in failed["kfx"]["error"] and failed["text"].startswith("kfx run kfx-tabular-")
