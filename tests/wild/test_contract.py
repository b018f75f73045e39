"""The contract's judge (tests/wild/contract.py), on the outputs `kfx run` prints: what keeps the
contract and each way of breaking it are told apart (the bench and the whole-run tests rely on it)."""
import pytest

from tests.wild import contract, tables

TABLE = tables.nastiest(rows=40)
PUSHED = ("pushed model v1 (student): auc 0.8399 on 1575 test rows (95% CI 0.8179-0.8605), trivial 0.5000, "
          "LogisticRegression 0.8379")


@pytest.mark.parametrize("returncode, stdout, stderr, kind", [
    (0, f"run x COMPLETE in 9.0s\n{PUSHED}\npublished: /r/model/v1\n", "", contract.PUSHED),
    (0, "run x COMPLETE\nnot pushed: not blessed: accuracy 0.42 does not beat the trivial predictor\n", "",
     contract.NOT_PUSHED),
    (1, "report: r.html\n", "error: ingest: IngestError: d.csv: column 'lambda' is numeric except 1 cell(s), "
                            "first at line 9: 'n.a.' (log: /x/ingest.log)\n", contract.REFUSED_IN_INGEST),
    (1, "report: r.html\n", "error: ingest: IngestError: d.csv: ingest failed unexpectedly (KeyError: 3)\n",
     "ingest error names nothing"),
    (1, "report: r.html\n", "error: validate: AnomaliesFoundError: data validation found 1 anomaly\n",
     "failed in validate"),
    (1, "", "Traceback (most recent call last):\n  File \"x\", line 1\nValueError: path in endpoint is not allowed\n",
     "traceback"),
    (1, "", "error: distributed-train: 'lambda' is not a valid parameter name\nmore\n", "error of 2 lines"),
    (0, "run x COMPLETE\n", "", "no verdict"),
])
def test_classify_tells_kept_contracts_from_broken_ones(returncode, stdout, stderr, kind):
    assert contract.classify(returncode, stdout, stderr, TABLE)[0] == kind


def test_metrics_of_a_verdict():
    figures = contract.metrics_of(PUSHED)
    assert figures == {"metric": "auc", "value": 0.8399, "test_rows": 1575, "ci": "0.8179-0.8605", "trivial": 0.5,
                       "reference": "LogisticRegression", "reference_value": 0.8379}
    assert contract.metrics_of("not pushed: no") == {}
