"""The rollout's decisions without servers: the RolloutPolicy's limits, the canary steps, and the
`kfx serve | rollout | predict` command lines (kfx/commands/serving.py) building it. Quick: no process."""
import argparse
import json
import os
import threading
import time

import pytest

from kfx.commands import serving as commands
from kfx.errors import UsageError
from kfx.serving import ServingError
from kfx.serving.front import AccessLog
from kfx.serving.registry import LocalVersion
from kfx.serving.rollout import (EVIDENCE_WAIT, LocalSetup, RolloutPolicy, choose_current, parse_steps, read_late_labels,
                                 _LocalRollout, run_local_rollout, succeeded)
from kfx.serving.rollout_state import Rollout, read_active, send_command


def stats(requests, server_errors=0, client_errors=0, p99_ms=10.0):
    return {"requests": requests, "server_errors": server_errors, "client_errors": client_errors,
            "error_rate": server_errors / requests if requests else 0.0, "p50_ms": 1.0, "p99_ms": p99_ms}


def test_steps_are_increasing_percentages():
    assert parse_steps("10, 50,100") == (10, 50, 100)
    for bad in ("", "50,10", "0,100", "10,101", "ten", "10,,x"):
        with pytest.raises(ValueError):
            parse_steps(bad)
    assert RolloutPolicy(steps=(10, 50)).local_steps() == (10, 50, 100)   # a local canary ends promoted
    with pytest.raises(ServingError, match="--steps"):
        RolloutPolicy(steps=(60, 20))
    with pytest.raises(ServingError, match="rainbow"):
        RolloutPolicy(strategy="rainbow")


def test_breaches_judge_the_candidate_against_the_current_version():
    policy = RolloutPolicy(max_error_rate=0.05, max_p99_ms=500, min_requests=20)
    assert policy.breaches(stats(40), stats(40)) == []
    assert policy.breaches(stats(10, server_errors=10), stats(40)) == []          # too few to judge yet
    [err] = policy.breaches(stats(40, server_errors=4), stats(40))
    assert err.startswith("error rate 0.100")
    # 4xx: the client's fault only when the current version rejects the same share
    assert policy.breaches(stats(40, client_errors=8), stats(40, client_errors=8)) == []
    [rej] = policy.breaches(stats(40, client_errors=8), stats(40))
    assert "rejects 0.200" in rej
    [slow] = policy.breaches(stats(40, p99_ms=900), stats(40))
    assert slow == "p99 900 ms > 500 ms"
    assert policy.limit_breaches(None, None) == []


class _Watch:
    """A rollout's watch without servers: nginx's access log is a real file a thread appends to."""
    def __init__(self, tmp_path, policy, every_s, n):
        self.log = tmp_path / "access.jsonl"
        self.log.write_text("")
        self.ro = _LocalRollout.__new__(_LocalRollout)
        self.ro.policy, self.ro.labels, self.ro.accesslog = policy, {}, AccessLog(str(self.log))
        self.ro.ro = type("NoCommands", (), {"command": staticmethod(lambda: None)})()
        self.thread = threading.Thread(target=self._write, args=(every_s, n), daemon=True)

    def _write(self, every_s, n):
        for _ in range(n):
            time.sleep(every_s)
            with open(self.log, "a") as f:
                f.write(json.dumps({"variant": "candidate", "status": 200, "request_time": 0.01}) + "\n")

    def hold(self):
        self.thread.start()
        t0 = time.monotonic()
        res = self.ro.hold("candidate")
        return res, time.monotonic() - t0


def test_a_step_short_of_evidence_is_watched_longer_not_failed(tmp_path):
    # 4 requests wanted in a 1 s hold, one arrives every 0.5 s: the step waits for the 4th (about 2 s)
    res, took = _Watch(tmp_path, RolloutPolicy(hold_seconds=1.0, min_requests=4), 0.5, 10).hold()
    assert res["breaches"] == [] and res["stats"]["requests"] >= 4
    assert 1.5 <= took < EVIDENCE_WAIT * 1.0 + 1
    # none arrive: the step fails for want of evidence after EVIDENCE_WAIT holds, and says so
    (tmp_path / "none").mkdir()
    res, took = _Watch(tmp_path / "none", RolloutPolicy(hold_seconds=1.0, min_requests=4), 0.5, 0).hold()
    assert EVIDENCE_WAIT * 1.0 <= took < EVIDENCE_WAIT * 1.0 + 1.5
    [why] = res["breaches"]
    assert why.startswith("only 0 requests reached the candidate in 3 s") and "not enough evidence" in why


def _versions(tmp_path):
    out = []
    for n in (1, 2):
        d = tmp_path / "m" / f"v{n}"
        d.mkdir(parents=True)
        (d / "model_card.json").write_text(json.dumps({"problem_type": "multiclass", "label_vocabulary": ["no", "yes"]}))
        out.append(LocalVersion(str(tmp_path / "m"), n, str(d)))
    return out


def _logged(truth, version, right):
    """Payload-log records of `version` answering each labelled request: right (or wrong) with p=0.7..0.9."""
    recs = []
    for i, yes in enumerate(truth):
        p = 0.7 + 0.2 * ((i * 7) % 10) / 10
        p_yes = p if yes == right else 1 - p
        recs.append({"request_id": f"r{i}", "model_version": version, "instances": [{}],
                     "outputs": [{"label": "yes" if p_yes > 0.5 else "no", "probabilities": {"no": 1 - p_yes,
                                                                                            "yes": p_yes}}]})
    return recs


def test_late_labels_judge_the_candidate_by_the_one_online_metric(tmp_path):
    current, candidate = _versions(tmp_path)
    truth = [(i * 5) % 3 == 0 for i in range(80)]
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("request_id,index,label\n" + "".join(f"r{i},0,{'yes' if y else 'no'}\n"
                                                               for i, y in enumerate(truth)))
    labels = read_late_labels(str(labels_csv))
    good = _logged(truth, "v1", right=True)
    policy = RolloutPolicy(max_online_drop=0.05, min_labels=50)
    same = policy.online_comparison(good + _logged(truth, "v2", right=True), labels, current, candidate)
    # accuracy (multiclass): the metric needs no scikit-learn import, which costs ~10 s on a loaded machine
    assert same["breach"] is None and same["candidate"]["metric"] == "accuracy" and same["candidate"]["judged"]
    worse = policy.online_comparison(good + _logged(truth, "v2", right=False), labels, current, candidate)
    assert worse["current"]["value"] > 0.9 and worse["candidate"]["value"] < 0.1
    assert worse["breach"].startswith("online accuracy 0.0") and "by more than 5%" in worse["breach"]
    # too few labelled answers: no verdict, whatever they say
    few = RolloutPolicy(min_labels=200).online_comparison(good + _logged(truth, "v2", right=False), labels,
                                                          current, candidate)
    assert few["breach"] is None and "too few" in few["candidate"]["note"]
    for early in ([], good):   # nothing logged yet, or only the current version's answers
        assert policy.online_comparison(early, labels, current, candidate)["breach"] is None


def test_late_labels_in_another_format_are_refused_naming_the_option(tmp_path):
    old = tmp_path / "labels.jsonl"
    old.write_text(json.dumps({"request_id": "r1", "index": 0, "label": "yes"}) + "\n")
    with pytest.raises(UsageError, match="^--labels .*request_id,index,label"):
        read_late_labels(str(old))
    _versions(tmp_path)
    with pytest.raises(UsageError, match="^--labels"):    # before any server, sink or front starts
        run_local_rollout(str(tmp_path / "m"), 2, RolloutPolicy(), setup=LocalSetup(labels=str(old)))
    assert not (tmp_path / "m" / "rollouts").exists()


def parse(*argv):
    ap = argparse.ArgumentParser(prog="kfx")
    commands.register(ap.add_subparsers(dest="command", required=True))
    return ap.parse_args(list(argv))


def test_commands_build_the_policy_from_the_command_line():
    args = parse("rollout", "start", "/r/m", "--candidate", "v2", "--strategy", "blue-green", "--steps", "20,60",
                 "--hold", "7", "--max-error-rate", "0.2", "--max-p99-ms", "80", "--min-requests", "3",
                 "--max-online-drop", "0.01", "--min-labels", "5", "--approve", "--approve-timeout", "9")
    assert commands.policy_from_args(args) == RolloutPolicy(
        strategy="blue-green", steps=(20, 60), hold_seconds=7.0, max_error_rate=0.2, max_p99_ms=80.0,
        min_requests=3, max_online_drop=0.01, min_labels=5, approve=True, approve_timeout=9.0)
    assert commands.policy_from_args(parse("rollout", "start", "/r/m")) == RolloutPolicy()   # same defaults
    assert {parse(c, *rest).command for c, *rest in (("serve", "/r/m/v1"), ("predict", "--model", "m", "--data",
                                                                              "d", "--out", "o"))} == {"serve", "predict"}


@pytest.mark.parametrize("argv, says", [
    (["rollout", "start", "/r/m"], "--candidate"),
    (["rollout", "start", "/r/m", "--candidate", "vx"], "--candidate 'vx'"),
    (["rollout", "start", "/r/m", "--candidate", "2", "--current", "v0"], "--current 'v0'"),
    (["rollout", "start", "/r/m", "--candidate", "2", "--attach", "canary=http://h:1"], "--attach"),
    (["rollout", "start", "/r/m", "--candidate", "2", "--target", "kubernetes"], "--isvc"),
    (["rollout", "alias", "/r/m", "--set", "production"], "--set NAME=vN"),
])
def test_usage_errors_name_the_option(argv, says):
    args = parse(*argv)
    with pytest.raises(UsageError, match=says):
        args.func(args)


@pytest.mark.parametrize("argv", [["rollout", "start", "/r/m", "--steps", "50,10"],
                                  ["rollout", "start", "/r/m", "--hold", "0"], ["serve", "m", "--port", "70000"]])
def test_bad_values_are_refused_when_the_command_line_is_read(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    assert exit_.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()[-1]) > 0


def test_serving_failures_are_one_line(tmp_path, capsys):
    reg = tmp_path / "registry" / "m"
    (reg / "v1").mkdir(parents=True)
    for argv in (["serve", f"{reg}/v7"], ["rollout", "approve", str(reg)],
                 ["rollout", "alias", str(reg), "--set", "production=v4"]):
        args = parse(*argv)
        assert args.func(args) == 1
        err = capsys.readouterr().err
        assert err.startswith("kfx: ") and err.count("\n") == 1, err
    args = parse("rollout", "alias", str(reg), "--set", "production=v1")
    assert args.func(args) == 0 and json.loads(capsys.readouterr().out)["production"]["version"] == 1


def test_current_version_and_commands_reach_the_rollout(tmp_path):
    model = tmp_path / "registry" / "m"
    for v in ("v1", "v2", "v3"):
        (model / v).mkdir(parents=True)
    assert choose_current(str(model), 3) == 2                 # newest other version
    (model / "aliases.json").write_text(json.dumps({"production": {"version": 1}}))   # an old, minimal file
    assert choose_current(str(model), 3) == 1                 # the production alias
    with pytest.raises(ServingError, match="already the current"):
        choose_current(str(model), 1)
    with pytest.raises(ServingError, match="no rollout in progress"):
        send_command(str(model), "approve")
    ro = Rollout(str(model), "canary", 1, 3)
    ro.save(status="running")
    assert read_active(str(model))["id"] == ro.id
    send_command(str(model), "approve")
    assert ro.command() == "approve" and ro.command() == ""   # consumed once
    ro.save(status="promoted")
    assert read_active(str(model)) is None and os.path.isfile(os.path.join(ro.dir, "state.json"))


def test_exit_status_follows_the_decision():
    assert succeeded({"status": "promoted", "result": {"decision": "promoted"}})
    assert succeeded({"status": "shadowed", "result": {"healthy": True}})
    assert not succeeded({"status": "shadowed", "result": {"healthy": False}})
    assert not succeeded({"status": "rolled-back", "result": {}}) and not succeeded({"status": "switched-back"})
