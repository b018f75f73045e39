"""A local rollout: the current and candidate versions behind a real nginx (front.py), traffic moved
and watched as a RolloutPolicy says, the decision written to the registry's aliases. Its record on
disk (state.json, events, commands from `kfx rollout approve|...`) is rollout_state.py."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kfx.errors import UsageError
from kfx.serving import ServingError, log
from kfx.serving import contract_check
from kfx.serving.front import AccessLog, Front, window_stats
from kfx.serving.registry import LocalVersion, local_version
from kfx.serving.replay import REJECTED, replay_gate
from kfx.serving.rollout_state import Rollout, now
from kfx.serving.servers import DEFAULT_IMAGE, Server, Sink, free_port, http_json
from kfx.serving.traffic import Traffic, instances_from_csv
from kfx_formats import payload_log, registry

STRATEGIES = ("canary", "blue-green", "shadow")
EVIDENCE_WAIT = 3   # a step short of --min-requests after --hold is watched up to this many holds


def parse_steps(text: str) -> Tuple[int, ...]:
    """'10,50,100' -> (10, 50, 100): increasing percentages in (0, 100]; ValueError otherwise."""
    parts = [s.strip() for s in str(text).split(",") if s.strip()]
    steps = tuple(int(s) for s in parts if s.isdigit())
    if not steps or len(steps) != len(parts) or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(steps):
        raise ValueError(f"{text!r}: expected increasing percentages in (0, 100], e.g. 10,50,100")
    return steps


@dataclasses.dataclass(frozen=True)
class RolloutPolicy:
    """What a rollout does and when it stops: the strategy, the canary steps, how long each step is
    watched, the limits a step must stay within, and whether production waits for a person."""
    strategy: str = "canary"
    steps: Tuple[int, ...] = (10, 50, 100)   # canary: candidate traffic percentages
    hold_seconds: float = 60.0
    max_error_rate: float = 0.01             # 5xx share, and the extra 4xx share over the current version
    max_p99_ms: float = 1000.0
    min_requests: int = 20                   # candidate requests a step needs before it can pass
    # With late labels: the candidate's online metric (kfx_formats.payload_log: AUC, accuracy or RMSE
    # with a bootstrap interval) may be worse than the current version's by this much (relative),
    # judged once at least `min_labels` of its answers are labelled.
    max_online_drop: float = 0.05
    min_labels: int = payload_log.MIN_LABELS
    approve: bool = False                    # wait for `kfx rollout approve` before production
    approve_timeout: float = 3600.0
    # Replay before canary (replay.py): the newest logged requests scored offline by the candidate first.
    replay: bool = True
    replay_requests: int = 1000
    replay_tolerance: Optional[float] = None   # relative, like max_online_drop (the default)
    replay_slices: Tuple[str, ...] = ()        # slice features; default: the model card's

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ServingError(f"--strategy {self.strategy!r}: one of {STRATEGIES}")
        try:
            parse_steps(",".join(map(str, self.steps)))
        except ValueError as err:
            raise ServingError(f"--steps {err}") from None

    def local_steps(self) -> Tuple[int, ...]:
        """The canary steps a local rollout walks: always ending at 100% (the promotion)."""
        return self.steps if self.steps[-1] == 100 else (*self.steps, 100)

    def limit_breaches(self, error_rate: Optional[float], p99_ms: Optional[float]) -> List[str]:
        out = []
        if error_rate is not None and error_rate > self.max_error_rate:
            out.append(f"error rate {error_rate:.3f} > {self.max_error_rate}")
        if p99_ms is not None and p99_ms > self.max_p99_ms:
            out.append(f"p99 {p99_ms:.0f} ms > {self.max_p99_ms} ms")
        return out

    def breaches(self, stats: dict, baseline: dict) -> List[str]:
        """A watched variant's breaches (window_stats), judged against the current version's."""
        if stats["requests"] < self.min_requests:
            return []
        out = self.limit_breaches(stats["error_rate"], None)
        # 4xx are the client's fault only when the current version rejects the same traffic too:
        # a candidate that refuses requests the current one answers (a changed feature contract) is broken.
        rejected = stats["client_errors"] / stats["requests"]
        base = (baseline["client_errors"] / baseline["requests"]) if baseline.get("requests") else 0.0
        if rejected - base > self.max_error_rate:
            out.append(f"rejects {rejected:.3f} of requests (4xx) vs {base:.3f} on the current version")
        return out + self.limit_breaches(None, stats["p99_ms"])

    def online_comparison(self, records: List[dict], labels: Dict[payload_log.Key, str],
                          current: LocalVersion, candidate: LocalVersion) -> dict:
        """Both versions' online metric on the logged answers joined to late labels; the candidate's is
        judged against the current version's value ({"current", "candidate", "breach" (a reason or None)})."""
        answers = {v.number: payload_log.predictions(records, f"v{v.number}") for v in (current, candidate)}
        if not all(answers.values()):
            return {"current": {}, "candidate": {}, "breach": None, "note": "no logged answers of both versions yet"}

        def metric(version: LocalVersion, reference: Optional[float]) -> dict:
            card = version.model_card()
            return payload_log.online_metric(
                answers[version.number], labels, card.get("problem_type", ""),
                [str(v) for v in card.get("label_vocabulary") or []], reference=reference,
                tolerance=self.max_online_drop, min_labels=self.min_labels, where=f"late labels of v{version.number}")
        cur = metric(current, None)
        cand = metric(candidate, cur["value"])
        breach = None
        if cand["worse"]:
            lo, hi = cand["ci"]
            breach = (f"online {cand['metric']} {cand['value']:.4f} (95% interval {lo:.4f}-{hi:.4f}) worse than "
                      f"the current version's {cur['value']:.4f} by more than {self.max_online_drop:.0%}")
        return {"current": cur, "candidate": cand, "breach": breach}


@dataclasses.dataclass(frozen=True)
class LocalSetup:
    """Where a local rollout's servers, front, traffic and evidence come from (not what it decides)."""
    executor: str = "process"
    image: str = DEFAULT_IMAGE
    attach: Dict[str, str] = dataclasses.field(default_factory=dict)   # role -> URL of a running server
    log_url: str = ""            # payload sink; default: a kfx sink under the rollout's dir
    port: int = 0                # nginx front; default: a free one
    ready_timeout: float = 180.0
    state_dir: Optional[str] = None
    traffic_csv: str = ""        # rows replayed through the front as client traffic
    rps: float = 20.0
    batch: int = 1
    labels: str = ""             # late labels for the online metric (payload_log.LABELS_FORMAT)
    payload_log: str = ""        # production's requests (contract check, replay); default: earlier rollouts' payloads/
    allow_contract_change: bool = False   # roll out a candidate that breaks production's request contract
    keep_running: bool = False   # keep the front and servers up after the decision


def prediction_difference(records: List[dict], current: str, candidate: str) -> dict:
    """Join the two versions' logged answers by request id and compare them instance by instance."""
    by: Dict[str, Dict[str, dict]] = {current: {}, candidate: {}}
    for r in records:
        if r.get("model_version") in by:
            by[r["model_version"]][r["request_id"]] = r
    common = sorted(set(by[current]) & set(by[candidate]))
    diffs, agree, n = [], 0, 0
    a: Sequence[Any] = ()
    for rid in common:
        a, b = by[current][rid]["outputs"], by[candidate][rid]["outputs"]
        for x, y in zip(a, b):
            n += 1
            if isinstance(x, dict):
                classes = sorted(set(x["probabilities"]) | set(y["probabilities"]))
                diffs.append(max(abs(x["probabilities"].get(c, 0.0) - y["probabilities"].get(c, 0.0)) for c in classes))
                agree += x.get("label") == y.get("label")
            else:
                diffs.append(abs(float(x) - float(y)))
    diffs.sort()
    return {"requests_compared": len(common), "instances_compared": n,
            "only_current": len(set(by[current]) - set(by[candidate])),
            "only_candidate": len(set(by[candidate]) - set(by[current])),
            "mean_abs_diff": (sum(diffs) / n) if n else None,
            "p99_abs_diff": diffs[min(n - 1, int(math.ceil(0.99 * n)) - 1)] if n else None,
            "max_abs_diff": diffs[-1] if n else None,
            "label_agreement": (agree / n) if n and isinstance(a[0] if common else None, dict) else None}


def succeeded(state: dict) -> bool:
    """A rollout that promoted its candidate, or a healthy shadow."""
    return state["status"] in ("promoted", "shadowed") and (state.get("result") or {}).get("healthy", True)


def read_late_labels(path: str) -> Dict[payload_log.Key, str]:
    """{(request_id, index): label} of `--labels` (payload_log.LABELS_FORMAT); a file kfx cannot take is a
    UsageError naming its line."""
    try:
        return payload_log.read_labels(path)
    except ValueError as err:
        raise UsageError(f"--{err}") from None


def choose_current(model_dir: str, candidate: int, current: Optional[int] = None) -> int:
    """The version a rollout starts from: `current`, else the production alias, else the newest other version."""
    if current is None:
        prod = registry.aliases(model_dir).get("production")
        if prod:
            current = int(prod["version"])
        else:
            older = [v for v in registry.version_numbers(model_dir) if v != candidate]
            if not older:
                raise ServingError(f"{model_dir}: no current version to roll out from (set --current or the "
                                   "production alias: kfx rollout alias)")
            current = older[-1]
    if current == candidate:
        raise ServingError(f"candidate v{candidate} is already the current version")
    return current


def rollout_versions(model_dir: str, candidate: int) -> Tuple[Optional[LocalVersion], LocalVersion]:
    """(current, candidate) as local directories; current is None when there is no version to start from."""
    model_dir = model_dir.rstrip("/")
    try:
        current: Optional[LocalVersion] = local_version(f"{model_dir}/v{choose_current(model_dir, candidate)}")
    except ServingError:
        current = None
    return current, local_version(f"{model_dir}/v{candidate}")


def run_local_rollout(model_dir: str, candidate: int, policy: RolloutPolicy, current: Optional[int] = None,
                      setup: LocalSetup = LocalSetup()) -> dict:
    """The whole local rollout; returns its final state (`succeeded(state)`: promoted or a healthy shadow)."""
    model_dir = model_dir.rstrip("/")
    current = choose_current(model_dir, candidate, current)
    labels = read_late_labels(setup.labels) if setup.labels else {}   # a bad file fails now, not in minutes
    versions = (local_version(f"{model_dir}/v{current}"), local_version(f"{model_dir}/v{candidate}"))
    run = _LocalRollout(model_dir, versions, policy, setup, labels)
    try:
        run.ro.state["contract"] = contract_check.gate(versions, setup.payload_log, setup.allow_contract_change,
                                                       run.ro.event)   # refused: ContractRefused, no server started
        run.ro.state["replay"] = replay_gate(versions, policy, labels, setup.payload_log, run.ro.event)
        if run.ro.state["replay"]["decision"] == REJECTED:   # no server started, aliases unchanged
            run.ro.save(status=REJECTED, result={"decision": REJECTED, "reasons": run.ro.state["replay"]["reasons"]},
                        finished=now())
            return run.ro.state
        run.start()
        result = {"canary": run.canary, "blue-green": run.blue_green, "shadow": run.shadow}[policy.strategy]()
        run.finish(result)
        return run.ro.state
    except BaseException as err:
        run.fail(err)
        raise
    finally:
        run.stop()


class _LocalRollout:
    """The moving parts of one local rollout: sink, servers, nginx front, traffic, and the watch."""

    def __init__(self, model_dir: str, versions: Tuple[LocalVersion, LocalVersion], policy: RolloutPolicy,
                 setup: LocalSetup, labels: Dict[payload_log.Key, str]):
        self.model_dir, self.versions, self.policy, self.setup, self.labels = model_dir, versions, policy, setup, labels
        self.current, self.candidate = (v.number for v in versions)
        self.ro = Rollout(model_dir, policy.strategy, self.current, self.candidate, setup.state_dir)
        self.payload_dir = os.path.join(self.ro.dir, "payloads")
        self.servers: List[Server] = []
        self.sink: Optional[Sink] = None
        self.front: Optional[Front] = None
        self.traffic: Optional[Traffic] = None
        self.accesslog: Optional[AccessLog] = None

    # ---------------------------------------------------------------- set up and tear down
    def start(self) -> None:
        ro, setup = self.ro, self.setup
        ro.save(status="starting")
        log_url = setup.log_url
        if not log_url and not setup.attach:
            self.sink = Sink(self.payload_dir, log_file=os.path.join(ro.dir, "sink.log")).start()
            log_url = self.sink.url
        ports = {}
        for role, version in zip(("current", "candidate"), self.versions):
            if role in setup.attach:
                ports[role] = int(setup.attach[role].rsplit(":", 1)[1].split("/")[0])
                continue
            srv = Server(version.path, free_port(), setup.executor, log_url, image=setup.image,
                         log_file=os.path.join(ro.dir, f"server-{role}-v{version.number}.log")).start()
            self.servers.append(srv)
            ports[role] = srv.port
        for srv in self.servers:
            srv.wait_ready(setup.ready_timeout)
        ro.event("servers-ready", ports=ports)
        self.front = Front(os.path.join(ro.dir, "nginx"), setup.port or free_port(), ports["current"],
                           ports["candidate"], self.policy.strategy).start(0)
        ro.save(status="running", front=self.front.url)
        ro.event("front-up", url=self.front.url)
        self.accesslog = AccessLog(os.path.join(self.front.prefix, "access.log"))
        if setup.traffic_csv:
            _, meta, _ = http_json("GET", f"http://127.0.0.1:{ports['current']}/kfx/metadata")
            types = {f["name"]: f["dtype"] for f in meta["features"]}
            self.traffic = Traffic(f"{self.front.url}/v1/models/{meta['name']}:predict",
                                   instances_from_csv(setup.traffic_csv, types, 2000), rps=setup.rps, batch=setup.batch)
            self.traffic.start()

    def fail(self, err: BaseException) -> None:
        front = self.front
        if front is not None and front.proc is not None and front.proc.poll() is None:
            with contextlib.suppress(Exception):
                front.set_weight(0)
        self.ro.save(status="failed", error=str(err), finished=now())

    def stop(self) -> None:
        if self.traffic is not None:
            self.traffic.stop()
            self.ro.state["traffic"] = {"sent": self.traffic.sent, "server_errors": self.traffic.failed}
            self.ro.save()
        if self.front is not None:
            self.front.stop()
        for srv in self.servers:
            srv.stop()
        if self.sink is not None:
            time.sleep(0.5)
            self.sink.stop()

    # ---------------------------------------------------------------- watching
    def logged(self) -> List[dict]:
        """The payload-log records the rollout's sink has written so far."""
        if not any(Path(self.payload_dir).rglob("*.jsonl")):
            return []
        return payload_log.read_records(self.payload_dir)

    def hold(self, variant: str) -> dict:
        """Watch `variant`'s traffic for the policy's hold (ends early on a breach or a command)."""
        policy = self.policy
        seen: List[dict] = []
        start = time.monotonic()
        # A slow or loaded front can fall short of --min-requests in --hold; the step is then watched
        # longer (up to EVIDENCE_WAIT holds) rather than failed for want of evidence it could still get.
        end, last = start + policy.hold_seconds, start + policy.hold_seconds * EVIDENCE_WAIT
        while True:
            now = time.monotonic()
            if now >= last or (now >= end and window_stats(seen, variant)["requests"] >= policy.min_requests):
                break
            time.sleep(min(1.0, max(0.0, (end if now < end else last) - now)))
            seen += self.accesslog.read()
            cmd = self.ro.command()
            if cmd:
                return {"command": cmd, "stats": window_stats(seen, variant)}
            if policy.breaches(window_stats(seen, variant), window_stats(seen, "current")):
                break
        stats, baseline = window_stats(seen, variant), window_stats(seen, "current")
        res = {"stats": stats, "baseline": baseline, "breaches": policy.breaches(stats, baseline)}
        if stats["requests"] < policy.min_requests and variant != "current":
            res["breaches"].append(f"only {stats['requests']} requests reached the candidate in "
                                   f"{time.monotonic() - start:.0f} s (< --min-requests {policy.min_requests}): "
                                   "not enough evidence")
        if self.labels:
            try:
                online = policy.online_comparison(self.logged(), self.labels, *self.versions)
            except ValueError as err:   # a label that is no class (or number) of the model
                raise ServingError(f"--labels {self.setup.labels}: {err}") from None
            res["online"] = {k: v for k, v in online.items() if k != "breach"}
            if online["breach"]:
                res["breaches"].append(online["breach"])
        return res

    def _approved(self, note: str) -> bool:
        """Staging moves to the candidate; production waits for `kfx rollout approve`."""
        registry.set_alias(self.model_dir, "staging", self.candidate, by=self.ro.id, note=note)
        self.ro.save(status="awaiting-approval")
        self.ro.event("awaiting-approval", hint=f"kfx rollout approve {self.model_dir}")
        return self.ro.wait_approval(self.policy.approve_timeout)

    # ---------------------------------------------------------------- strategies: each returns the result
    def canary(self) -> dict:
        ro, front = self.ro, self.front
        for pct in self.policy.local_steps():
            if pct == 100 and self.policy.approve and not self._approved("canary passed every step before 100%"):
                ro.event("not-approved")
                front.set_weight(0)
                return {"decision": "rolled-back", "reason": "not approved in time"}
            front.set_weight(pct)
            ro.event("step", candidate_percent=pct)
            res = self.hold("candidate")
            ro.state["steps"].append({"candidate_percent": pct, **res})
            ro.save()
            if res.get("command") == "rollback" or res.get("breaches"):
                front.set_weight(0)   # everything back on the current version at once
                ro.event("rolled-back", at_percent=pct, breaches=res.get("breaches"), stats=res["stats"])
                return {"decision": "rolled-back", "at_percent": pct,
                        "reason": "; ".join(res.get("breaches") or ["rollback requested"])}
        return {"decision": "promoted"}

    def blue_green(self) -> dict:
        ro, front = self.ro, self.front
        front.set_weight(100)          # switch at once; blue (current) stays up and warm
        ro.event("switched", to=f"v{self.candidate}", warm=f"v{self.current}")
        ro.save(status="switched")
        res = self.hold("candidate")
        ro.state["steps"].append({"candidate_percent": 100, **res})
        if res.get("command") == "switch-back" or res.get("breaches"):
            front.set_weight(0)
            why = "switch-back requested" if res.get("command") == "switch-back" else "; ".join(res["breaches"])
            ro.event("switched-back", to=f"v{self.current}", reason=why)
            return {"decision": "switched-back", "reason": why}
        if self.policy.approve and not self._approved("blue-green healthy"):
            front.set_weight(0)
            return {"decision": "switched-back", "reason": "not approved in time"}
        return {"decision": "promoted"}

    def shadow(self) -> dict:
        res = self.hold("shadow")
        time.sleep(2.5)                # the sink flushes every 2 s: let the last answers land
        diff = prediction_difference(self.logged(),
                                     f"v{self.current}", f"v{self.candidate}")
        self.ro.state["steps"].append({"mirror_percent": 100, **res, "difference": diff})
        healthy = not res.get("breaches") and diff["instances_compared"] > 0
        self.ro.event("shadow-report", **diff)
        if healthy:
            registry.set_alias(self.model_dir, "staging", self.candidate, by=self.ro.id,
                               note="shadow: healthy, see difference")
        return {"decision": "shadowed", "healthy": healthy, "difference": diff, "shadow": res["stats"],
                **({"reason": "; ".join(res.get("breaches") or ["no mirrored answers to compare"])}
                   if not healthy else {})}

    # ---------------------------------------------------------------- the decision
    def finish(self, result: dict) -> None:
        ro = self.ro
        if result.get("decision") == "promoted":
            registry.set_alias(self.model_dir, "staging", self.candidate, by=ro.id)
            registry.set_alias(self.model_dir, "production", self.candidate, by=ro.id,
                               note="approved" if self.policy.approve else f"{self.policy.strategy} passed")
            ro.event("promoted", production=f"v{self.candidate}")
        ro.save(status=result["decision"], result=result, finished=now())
        if self.setup.keep_running:
            self.serve_until_interrupted()

    def serve_until_interrupted(self) -> None:
        """--keep-running: the front keeps serving; blue-green's `switch-back` flips it again."""
        front = self.front
        log(f"serving on {front.url} until interrupted (Ctrl-C)")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                if self.ro.command() == "switch-back" and self.policy.strategy == "blue-green":
                    front.set_weight(0 if front.weight else 100)
                    self.ro.event("switched", to=f"v{self.current}" if front.weight == 0 else f"v{self.candidate}")
                time.sleep(1)
