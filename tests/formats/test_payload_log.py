"""The payload log, late labels and the online metric (kfx_formats.payload_log): files on disk, no server."""
import json

import pytest

from kfx_formats import payload_log as pl


def _write(path, lines, end="\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + end)
    return path


def _rec(rid, version, outputs, n=None):
    return json.dumps(pl.record(rid, "2026-11-26T01:02:03Z", "m", version,
                                [{"x": i} for i in range(n or len(outputs))], outputs))


def test_records_of_a_directory_keyed_by_request_and_index(tmp_path):
    _write(tmp_path / "m" / "v1" / "payloads-1.jsonl", [_rec("a", "v1", [0.1, 0.2]), _rec("b", "v1", [0.3])])
    # The sink is still writing the last line of this file: it is skipped, not an error.
    _write(tmp_path / "m" / "v2" / "payloads-1.jsonl", [_rec("a", "v2", [0.9, 0.8]), '{"request_id": "c", "ins'],
           end="")
    records = pl.read_records(str(tmp_path))
    assert [(r["request_id"], r["model_version"]) for r in records] == [("a", "v1"), ("b", "v1"), ("a", "v2")]
    assert pl.predictions(records, "v1") == {("a", 0): 0.1, ("a", 1): 0.2, ("b", 0): 0.3}
    assert pl.predictions(records, "v2") == {("a", 0): 0.9, ("a", 1): 0.8}


@pytest.mark.parametrize("lines, message", [
    (['{"request_id": "a", "instances": []}', "not json"], r"p.jsonl, line 2: not JSON"),
    (['{"request_id": "a", "fare": 1}'], r'line 1: not a payload-log record \(no "instances"\)'),
    (['{"request_id": "a", "instances": [1, 2]}'], r'line 1: "instances" must be a list of'),
])
def test_a_bad_log_line_is_one_error_naming_file_and_line(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message):
        pl.read_records(str(_write(tmp_path / "p.jsonl", lines)))


def test_labels_are_keyed_by_request_and_instance(tmp_path):
    with_index = _write(tmp_path / "a.csv", ["request_id,index,label", "r1,0,true", "r1,1,false", "r2,0,",
                                             " r3 , 2 , true "])
    assert pl.read_labels(str(with_index)) == {("r1", 0): "true", ("r1", 1): "false", ("r3", 2): "true"}
    one_per_request = _write(tmp_path / "b.csv", ["label,request_id", "1.5,r1", "2.5,r2"])
    assert pl.read_labels(str(one_per_request)) == {("r1", 0): "1.5", ("r2", 0): "2.5"}


@pytest.mark.parametrize("lines, message", [
    # The old `kfx rollout --labels` format: one line saying what is expected.
    (['{"request_id": "r1", "index": 0, "label": 1}'], r"JSON, not CSV; late labels are a CSV with the header "
                                                        r"request_id,index,label"),
    (["id,y", "a,1"], r"header \['id', 'y'\] lacks request_id and label; late labels are a CSV"),
    (["request_id,label", "r1,1", "r1,0"], r"line 3: instance 0 of request r1 is labelled twice \(also at line 2\); "
                                           r"the file has no index column"),
    (["request_id,index,label", "r1,x,1"], r"line 2: index 'x' is not an instance position"),
    (["request_id,index,label", ",0,1"], r"line 2: no request_id"),
])
def test_a_labels_file_kfx_cannot_take_is_one_line(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message) as err:
        pl.read_labels(str(_write(tmp_path / "labels.jsonl", lines)))
    assert "\n" not in str(err.value)


def _binary(n, right):
    """n logged binary answers and their labels; the first `right` answers are confident and right."""
    preds, labels = {}, {}
    for i in range(n):
        truth = i % 2
        p = 0.9 if (truth == 1) == (i < right) else 0.1
        preds[(f"r{i}", 0)] = {"label": "true" if p > 0.5 else "false", "probabilities": {"false": 1 - p, "true": p}}
        labels[(f"r{i}", 0)] = "true" if truth else "false"
    return preds, labels


def test_online_auc_its_interval_and_the_verdict_against_a_reference():
    preds, labels = _binary(200, right=200)
    good = pl.online_metric(preds, labels, "binary", ["false", "true"], reference=0.9)
    assert good["metric"] == "auc" and good["value"] == 1.0 and good["labelled"] == 200
    assert good["judged"] and not good["worse"] and good["ci"] == [1.0, 1.0]
    preds, labels = _binary(200, right=0)                  # every answer wrong: AUC 0
    bad = pl.online_metric(preds, labels, "binary", ["false", "true"], reference=0.9)
    assert bad["value"] == 0.0 and bad["judged"] and bad["worse"]
    few = pl.online_metric(*_binary(20, right=0), "binary", ["false", "true"], reference=0.9)
    assert not few["judged"] and not few["worse"] and "too few to judge" in few["note"]
    alone = pl.online_metric(preds, labels, "binary", ["false", "true"])
    assert alone["value"] == 0.0 and not alone["judged"] and alone["note"] == pl.NO_REFERENCE


def test_auc_is_the_chance_a_positive_outranks_a_negative():
    import numpy as np
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 2, 60), np.round(rng.random(60), 1)        # rounded: many ties
    pairs = [(a, b) for a in p[y == 1] for b in p[y == 0]]
    assert pl.score("binary", y, p) == pytest.approx(sum((a > b) + 0.5 * (a == b) for a, b in pairs) / len(pairs))
    assert pl.score("binary", [1, 1], [0.2, 0.3]) is None              # one class: undefined


def test_online_accuracy_and_rmse_are_what_they_say():
    classes = ["a", "b", "c"]
    outputs = [{"label": c, "probabilities": {k: float(k == c) for k in classes}} for c in "abca"]
    preds = {("r", i): o for i, o in enumerate(outputs)}
    labels = {("r", 0): "a", ("r", 1): "b", ("r", 2): "a", ("r", 3): "b", ("other", 0): "a"}
    acc = pl.online_metric(preds, labels, "multiclass", classes)
    assert (acc["metric"], acc["value"], acc["labelled"], acc["unmatched_labels"]) == ("accuracy", 0.5, 4, 1)
    rmse = pl.online_metric({("r", 0): 1.0, ("r", 1): 3.0}, {("r", 0): "2", ("r", 1): "5"}, "regression",
                            reference=0.5, min_labels=1)
    assert rmse["metric"] == "rmse" and rmse["value"] == pytest.approx((2.5) ** 0.5)
    # Lower is better: worse when even the interval's low end (errors 1 and 2: at least 1) > 0.5 * 1.05.
    assert rmse["judged"] and rmse["worse"] and rmse["ci"][0] >= 1.0


def test_labels_the_model_cannot_read_are_one_line():
    preds, _ = _binary(4, right=4)
    with pytest.raises(ValueError, match=r"labels x.csv: label 'maybe' is not a class of the model"):
        pl.online_metric(preds, {("r0", 0): "maybe"}, "binary", ["false", "true"], where="labels x.csv")
    with pytest.raises(ValueError, match=r"no logged outputs to join the labels to"):
        pl.online_metric({}, {("r0", 0): "true"}, "binary")

