"""A table whose column names are keywords, punctuation, a leading digit and unicode goes through
`kfx run` (every stage), is pushed, served by `kfx serve`'s server, and answers a V1 request that
uses the ORIGINAL column names (issue 20: "column names as they come")."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfx_components.common import loading
from tests.serving.conftest import need_serving_env

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
ROWS = 300
# Tiny budgets (as tests/test_e2e.py's FAST): every stage runs, briefly.
FAST = ["--param", "max_trials=1", "--param", "tune_epochs=1", "--param", "train_epochs=3",
        "--param", "distill_epochs=2", "--param", "explain_rows=40", "--param", "finetune_epochs=1"]
WILD = ["class", "lambda", "self", "a-b", "a.b", "2nd col", "größe", "vendor name"]


def wild_table(rows: int = ROWS, seed: int = 7) -> pd.DataFrame:
    """Numbers under keyword/punctuation/unicode names, a 3-valued text column; the label follows
    `class`, `a-b` and the text, so a model that reads them by their names beats the trivial one."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "class": rng.normal(size=rows),
        "lambda": rng.normal(size=rows),
        "self": rng.integers(0, 5, size=rows),
        "a-b": rng.normal(size=rows),
        "a.b": rng.normal(size=rows),
        "2nd col": rng.integers(0, 100, size=rows),
        "größe": rng.uniform(150, 200, size=rows),
        "vendor name": rng.choice(["acme", "globex", "initech"], size=rows),
    })
    score = 2 * frame["class"] - 1.5 * frame["a-b"] + (frame["vendor name"] == "acme") + rng.normal(0, 0.5, rows)
    frame["y"] = np.where(score > 0.3, "yes", "no")
    frame.loc[::11, "a.b"] = np.nan     # missing cells: a missing indicator named after 'a.b'
    frame.loc[5::17, "y"] = None         # missing labels: those rows are left out, and the run says so
    return frame


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """(version dir, the table) of one `kfx run` on the wild table."""
    work = tmp_path_factory.mktemp("wild-names")
    frame = wild_table()
    data = work / "wild.csv"
    frame.to_csv(data, index=False)
    proc = subprocess.run([sys.executable, "-m", "kfx.cli", "run", "--data", str(data), "--label", "y",
                           "--task", "binary", "--root", str(work / "root"), *FAST],
                          cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    match = re.search(r"^published: (\S+)$", proc.stdout, re.M)
    assert match, proc.stdout[-3000:]
    return Path(match.group(1)), frame, proc.stdout


def test_rows_left_out_are_counted_in_the_outcome(pushed):
    """Issue 20 item 5: the rows dropped for a missing label, beside the file's own row count."""
    _, frame, stdout = pushed
    dropped = int(frame["y"].isna().sum())
    line = f"data: {len(frame):,} rows in the file; {dropped:,} dropped (label missing); {len(frame) - dropped:,} used"
    assert dropped and line in stdout, stdout[-3000:]


def test_wild_names_are_pushed_with_their_original_names(pushed):
    version, _, _ = pushed
    card = json.loads((version / "model_card.json").read_text())
    assert card["blessing"]["blessed"] is True
    shown = json.dumps(card, ensure_ascii=False)
    for name in WILD:
        assert json.dumps(name, ensure_ascii=False) in shown, f"the card does not name column {name!r}"


def test_served_model_answers_a_request_with_the_original_names(pushed):
    need_serving_env()
    from kfx.serving.batch import to_example
    from kfx.serving.servers import Server, free_port, http_json
    from kfx_formats import features

    version, frame, _ = pushed
    server = Server(str(version), free_port()).start()
    try:
        server.wait_ready(180)
        meta = server.metadata()
        assert {f["name"] for f in meta["features"]} == set(WILD)
        rows = frame.drop(columns=["y"]).head(5)
        instances = [{k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v)
                      for k, v in row.items()} for row in rows.to_dict("records")]
        code, body, _ = http_json("POST", f"{server.url}/v1/models/{meta['name']}:predict",
                                  {"instances": instances}, timeout=60)
        assert code == 200, body
        served = [p["probabilities"]["yes"] for p in body["predictions"]]
        assert all(0 <= p <= 1 for p in served) and {p["label"] for p in body["predictions"]} <= {"yes", "no"}
        # The same rows as tf.Examples keyed by the original names, through the SavedModel itself.
        import tensorflow as tf
        fn = loading.load_model(str(version / "saved_model")).signatures["serving_default"]
        spec = features.spec_from_signature(fn)
        examples = [to_example(tf, {k: "" if pd.isna(v) else str(v) for k, v in row.items()}, spec)
                    for row in rows.to_dict("records")]
        expected = fn(examples=tf.constant(examples))["probabilities"].numpy()[:, 0]
        np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-6)
        # A request under the identifiers kfx uses inside is not the contract: refused, naming them.
        code, body, _ = http_json("POST", f"{server.url}/v1/models/{meta['name']}:predict",
                                  {"instances": [{"class_": 1.0}]}, timeout=60)
        assert code == 400 and "class_" in json.dumps(body), body
    finally:
        server.stop()
