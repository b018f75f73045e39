"""`kfx rollout start` checks the candidate's request contract against production's before any traffic
moves (kfx/serving/contract_check.py): a candidate reading a field production's clients do not send is
refused (one line naming it, exit 1, no server, aliases unchanged) unless --allow-contract-change; a
compatible one (a new category, a field it ignores) passes. Tiny real SavedModels, no pipeline run;
production (v1) is a version pushed before contracts, so its contract is derived from its SavedModel."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kfx.serving import contract_check
from kfx.serving.registry import local_version
from kfx_formats import payload_log, registry
from tests.formats.tiny_models import publish

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    import tensorflow as tf
    reg = tmp_path_factory.mktemp("contract") / "registry"
    fare, payment = tf.io.VarLenFeature(tf.float32), tf.io.VarLenFeature(tf.string)
    publish(str(reg), "m", {"fare": fare, "payment": payment},
            {"fare": ("FLOAT", []), "payment": ("BYTES", ["Cash", "Card"])}, with_contract=False)
    publish(str(reg), "m", {"fare": fare, "payment": payment,   # needs `tips`, imputing 0 when it is missing
                            "tips": tf.io.FixedLenFeature([], tf.float32, default_value=0.0)},
            {"fare": ("FLOAT", []), "payment": ("BYTES", ["Cash", "Card"]), "tips": ("FLOAT", [])})
    publish(str(reg), "m", {"fare": fare, "payment": payment},  # a new category, and a column it does not read
            {"fare": ("FLOAT", []), "payment": ("BYTES", ["Cash", "Card", "Mobile"]), "comment": ("BYTES", [])})
    registry.set_alias(str(reg / "m"), "production", 1)
    return reg / "m"


def _start(model_dir, state_dir, *args):
    return subprocess.run([sys.executable, "-m", "kfx.cli", "rollout", "start", str(model_dir), "--skip-replay",
                           "--state-dir", str(state_dir), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def _events(state_dir):
    [run] = [d for d in state_dir.iterdir() if d.is_dir()]
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()], \
        json.loads((run / "state.json").read_text())


def test_a_candidate_needing_a_field_clients_do_not_send_is_refused(model_dir, tmp_path):
    before = (model_dir / "aliases.json").read_text()
    p = _start(model_dir, tmp_path, "--candidate", "v2")
    assert p.returncode == 1, p.stderr[-2000:]
    lines = p.stderr.splitlines()
    [line] = [ln for ln in lines if "BREAKING" in ln]
    assert "not-sent: field 'tips' (float): the candidate reads it (imputing a default" in line
    assert any("v1 has no contract.json (pushed before request contracts): derived" in ln for ln in lines)
    assert lines[-1].startswith("kfx: candidate v2 breaks the request contract of production v1")
    assert (model_dir / "aliases.json").read_text() == before
    events, state = _events(tmp_path)
    assert [e["event"] for e in events] == ["contract"] and events[0]["decision"] == "refused"
    assert state["status"] == "failed" and "breaks the request contract" in state["error"]


def test_the_kubernetes_target_is_refused_before_the_cluster_is_touched(model_dir, tmp_path):
    p = _start(model_dir, tmp_path, "--candidate", "v2", "--target", "kubernetes", "--isvc", "taxi")
    assert p.returncode == 1 and "BREAKING not-sent: field 'tips'" in p.stderr, p.stderr[-2000:]
    assert p.stderr.splitlines()[-1].startswith("kfx: candidate v2 breaks the request contract")


def test_allow_contract_change_goes_past_the_check(model_dir, tmp_path):
    before = (model_dir / "aliases.json").read_text()
    p = _start(model_dir, tmp_path, "--candidate", "v2", "--allow-contract-change", "--ready-timeout", "0.5")
    events, state = _events(tmp_path)   # past the check, the servers are started (and not ready in 0.5 s)
    assert events[0]["event"] == "contract" and events[0]["decision"] == "allowed"
    assert [d["kind"] for d in events[0]["differences"]] == ["not-sent"]
    assert "breaks the request contract" not in state.get("error", "") and state["contract"]["decision"] == "allowed"
    assert "servers-ready" in [e["event"] for e in events] or "not ready" in state.get("error", "")
    assert "BREAKING not-sent: field 'tips'" in p.stderr
    assert (model_dir / "aliases.json").read_text() == before


def test_a_new_category_and_an_ignored_field_are_shown_not_blocked(model_dir, tmp_path):
    recorded = []
    result = contract_check.gate((local_version(f"{model_dir}/v1"), local_version(f"{model_dir}/v3")),
                                 record=lambda kind, **data: recorded.append((kind, data)))
    assert result["decision"] == "compatible" and recorded == [("contract", result)]
    assert sorted(d["kind"] for d in result["differences"]) == ["ignored-field", "new-categories"]
    assert result["sent_fields"] is None and "no payload log" in result["sent_fields_from"]
    # production's clients, as the payload log shows them, never send a payment: v3 imputes it as v1 does,
    # and v2's new `tips` is still refused
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(payload_log.record(f"r{i}", "t", "m", "v1", [{"fare": 1.0, "payment": None}],
                                                         [0.5])) + "\n" for i in range(3)))
    logged = contract_check.gate((local_version(f"{model_dir}/v1"), local_version(f"{model_dir}/v3")), str(log))
    assert logged["decision"] == "compatible" and logged["sent_fields"] == ["fare"]
    assert "imputed" in [d["kind"] for d in logged["differences"]]
    with pytest.raises(contract_check.ContractRefused, match="candidate v2 breaks"):
        contract_check.gate((local_version(f"{model_dir}/v1"), local_version(f"{model_dir}/v2")), str(log))
