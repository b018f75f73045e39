"""Replay before canary: before any user sees a candidate, `kfx rollout start` scores the newest logged
requests (the payload log, kfx_formats.payload_log) with it offline, in this process (batch.Scorer), and
compares it with the champion (the current version) on the SAME requests:

- always: the requests the candidate could not answer (an error rate above the policy's
  max_error_rate stops it) and how its answers shift from the champion's (changed decisions);
- where late labels exist: both versions' online metric (AUC, accuracy or RMSE with a 95% bootstrap
  interval, payload_log.online_metric), overall and per slice (the values of a slice feature); a
  candidate worse than the champion beyond the tolerance overall, or on a slice with at least
  min_labels labels, is "rejected-by-replay" and never reaches users.

The champion's answers are the logged ones of the current version where there are, else it is scored
offline too. No payload log: "nothing to replay", and the rollout proceeds.
"""
from __future__ import annotations

import collections
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from kfx.errors import UsageError
from kfx.serving import ServingError, log
from kfx.serving.batch import Scorer
from kfx.serving.registry import LocalVersion
from kfx.serving.rollout_state import payload_dirs
from kfx_formats import payload_log

REJECTED = "rejected-by-replay"
PASSED, NOTHING, SKIPPED = "passed", "nothing to replay", "skipped"
CHUNK = 256                   # instances scored in one call
MAX_SLICE_VALUES = 30         # per slice feature, the most frequent values (a numeric feature has many)
MISSING = "(missing)"


def replay_gate(versions: Tuple[Optional[LocalVersion], LocalVersion], policy, labels: Mapping[payload_log.Key, str],
                payload_log_path: str = "", record: Callable[..., None] = lambda kind, **data: None) -> dict:
    """Replay for a rollout of `versions` (champion or None, candidate) as `policy` says (its replay*,
    max_error_rate, max_online_drop, min_labels); `record(event, **data)` keeps the result. Returns it:
    "decision" is REJECTED (with "reasons", one line each), PASSED, NOTHING or SKIPPED."""
    champion, candidate = versions
    if not policy.replay:
        result = {"decision": SKIPPED}
    else:
        model_dir = candidate.model_dir
        sources = [payload_log_path] if payload_log_path else payload_dirs(model_dir)
        records: List[dict] = []
        for source in sources:
            try:
                records += payload_log.read_records(source, "--payload-log" if payload_log_path else "payload log")
            except ValueError as err:
                raise UsageError(str(err)) from None
        tolerance = policy.max_online_drop if policy.replay_tolerance is None else policy.replay_tolerance
        result = {**replay(champion, candidate, records, labels, requests=policy.replay_requests,
                           tolerance=tolerance, min_labels=policy.min_labels, max_error_rate=policy.max_error_rate,
                           slices=policy.replay_slices), "sources": sources}
    for reason in result.get("reasons", []):
        log(f"{REJECTED}: {reason}")
    record("replay", **result)
    return result


def replay(champion: Optional[LocalVersion], candidate: LocalVersion, records: Sequence[dict],
           labels: Mapping[payload_log.Key, str], *, requests: int = 1000, tolerance: float = 0.05,
           min_labels: int = payload_log.MIN_LABELS, max_error_rate: float = 0.01,
           slices: Sequence[str] = ()) -> dict:
    """Score the newest `requests` logged requests of `records` with `candidate` (and `champion` where its
    answers were not logged) and judge the candidate (module docstring)."""
    t0 = time.monotonic()
    chosen = newest_requests(records, requests, f"v{champion.number}" if champion else "")
    if not chosen:
        return {"decision": NOTHING, "requests": 0, "reasons": []}
    try:
        scorer = Scorer(candidate)
    except Exception as err:  # noqa: BLE001 - whatever TensorFlow raises on a SavedModel it cannot load
        return {"decision": REJECTED, "requests": len(chosen), "reasons": [
            f"candidate v{candidate.number} could not be loaded to replay: {' '.join(str(err).split())[:300]}"]}
    answers, errors, scored = score_requests(scorer, chosen, int(max_error_rate * len(chosen)))
    result: Dict[str, Any] = {
        "candidate": f"v{candidate.number}", "champion": f"v{champion.number}" if champion else None,
        "requests": len(chosen), "instances": sum(len(r["instances"]) for r in chosen), "scored": scored,
        "errors": len(errors), "error_rate": len(errors) / scored,
        "error_examples": sorted(set(errors.values()))[:3], "tolerance": tolerance, "min_labels": min_labels}
    reasons = []
    if len(errors) > max_error_rate * len(chosen):
        stopped = f" (stopped after {scored}: the limit was passed)" if scored < len(chosen) else ""
        reasons.append(f"candidate v{candidate.number} could not answer {len(errors)} of {len(chosen)} replayed "
                       f"requests{stopped}, more than --max-error-rate {max_error_rate} allows, e.g. "
                       f"{result['error_examples'][0]}")
    if champion is not None and scored == len(chosen):   # (stopped early, the decision is made)
        try:
            reference, logged = champion_answers(champion, chosen)
        except Exception as err:  # noqa: BLE001 - as for the candidate: it cannot be scored offline
            result["note"] = (f"champion v{champion.number} could not be loaded to score the requests it did not "
                              f"answer in the log ({' '.join(str(err).split())[:200]}): judged on errors only")
            reference, logged = {}, 0
        result["champion_answers"] = {"logged": logged, "scored": len(reference) - logged}
        result["shift"] = shift(reference, answers)
        card = candidate.model_card() or champion.model_card()
        features = list(slices or (card.get("metrics") or {}).get("slice_features") or [])
        labelled = {k: v for k, v in labels.items() if k in reference}
        if labelled and answers:
            result.update(compare(chosen, reference, answers, labelled, card, features, tolerance, min_labels))
            reasons += result.pop("worse_lines")
    result.update(decision=REJECTED if reasons else PASSED, reasons=reasons,
                  seconds=round(time.monotonic() - t0, 2))
    return result


# ------------------------------------------------------------------ the requests and their answers
def newest_requests(records: Sequence[dict], n: int, champion: str) -> List[dict]:
    """The `n` newest logged requests, one per request id (a shadowed request is logged by both versions):
    {"request_id", "instances", "logged" (the champion's outputs, or None)}."""
    by_id: Dict[str, dict] = {}
    for r in sorted(records, key=lambda r: str(r.get("time") or ""), reverse=True):
        if not r["instances"]:
            continue
        req = by_id.setdefault(r["request_id"], {"request_id": r["request_id"], "instances": r["instances"],
                                                 "logged": None})
        if champion and r["model_version"] == champion and len(r["outputs"]) == len(r["instances"]):
            req["logged"] = r["outputs"]
    return list(by_id.values())[:n]


def _text(value: Any, feature: str) -> str:
    """A logged JSON value as the text batch.to_example reads ('' is missing)."""
    if isinstance(value, list):
        if len(value) > 1:
            raise ValueError(f"feature {feature!r}: a list of {len(value)} values, one expected")
        value = value[0] if value else None
    return "" if value is None else str(value)


def score_requests(scorer: Scorer, chosen: Sequence[dict], max_errors: Optional[int] = None
                   ) -> Tuple[Dict[payload_log.Key, Any], Dict[str, str], int]:
    """{(request_id, index): output} of a batch.Scorer on the requests, {request_id: error (one line)} of
    those it could not answer, and how many were scored: CHUNK instances at a time, a failing chunk request
    by request (a failing call costs ~0.1 s: scoring stops once more than `max_errors` failed)."""
    answers: Dict[payload_log.Key, Any] = {}
    errors: Dict[str, str] = {}

    def score(reqs: Sequence[dict]) -> None:
        rows = [{k: _text(v, k) for k, v in inst.items()} for r in reqs for inst in r["instances"]]
        outputs = iter(scorer.outputs(rows))
        answers.update({(r["request_id"], i): next(outputs) for r in reqs for i in range(len(r["instances"]))})

    chunk: List[dict] = []
    for n, req in enumerate(chosen):
        chunk.append(req)
        if n + 1 < len(chosen) and sum(len(r["instances"]) for r in chunk) < CHUNK:
            continue
        try:
            score(chunk)
        except scorer.errors:
            for one in chunk:
                try:
                    score([one])
                except scorer.errors as err:
                    errors[one["request_id"]] = " ".join(str(err).split())[:200]
        chunk = []
        if max_errors is not None and len(errors) > max_errors:
            return answers, errors, n + 1
    return answers, errors, len(chosen)


def champion_answers(champion: LocalVersion, chosen: Sequence[dict]) -> Tuple[Dict[payload_log.Key, Any], int]:
    """The champion's answers to the requests: logged where they were, else scored now; and how many
    requests were logged."""
    logged = [r for r in chosen if r["logged"] is not None]
    out = {(r["request_id"], i): o for r in logged for i, o in enumerate(r["logged"])}
    missing = [r for r in chosen if r["logged"] is None]
    if missing:
        out.update(score_requests(Scorer(champion), missing)[0])
    return out, len(logged)


def _decision(output: Any) -> Any:
    return output.get("label") if isinstance(output, dict) else output


def shift(champion: Mapping[payload_log.Key, Any], candidate: Mapping[payload_log.Key, Any]) -> dict:
    """How the candidate's answers move from the champion's on the instances both answered: the share of
    changed decisions (classification) or the mean prediction change (regression)."""
    common = [k for k in candidate if k in champion]
    if not common:
        return {"compared": 0}
    if isinstance(candidate[common[0]], dict):
        changed = sum(_decision(champion[k]) != _decision(candidate[k]) for k in common)
        return {"compared": len(common), "changed_decisions": changed / len(common)}
    diffs = [float(candidate[k]) - float(champion[k]) for k in common]
    return {"compared": len(common), "mean_change": sum(diffs) / len(diffs),
            "mean_abs_change": sum(map(abs, diffs)) / len(diffs)}


# ------------------------------------------------------------------ with late labels
def compare(chosen: Sequence[dict], champion: Mapping, candidate: Mapping, labels: Mapping[payload_log.Key, str],
            card: dict, features: Sequence[str], tolerance: float, min_labels: int) -> dict:
    """Champion and candidate on the labelled instances, overall and per slice: {"overall", "slices"
    (rows), "slice_features", "labelled", "worse_lines"}."""
    instances = {(r["request_id"], i): inst for r in chosen for i, inst in enumerate(r["instances"])}
    missing = [f for f in features if not any(f in inst for inst in instances.values())]
    if missing:
        seen = sorted({k for inst in instances.values() for k in inst})
        raise UsageError(f"--replay-slices {','.join(missing)}: no replayed request has this feature "
                         f"(they have {', '.join(seen)})")

    def judge(name: str, keys) -> dict:
        sub = {k: labels[k] for k in keys}
        where = f"--labels (replay, {name})"
        try:
            cham = payload_log.online_metric(champion, sub, card.get("problem_type", ""), vocab, where=where)
            cand = payload_log.online_metric(candidate, sub, card.get("problem_type", ""), vocab, where=where,
                                             reference=cham["value"], tolerance=tolerance, min_labels=min_labels)
        except ValueError as err:
            raise ServingError(str(err)) from None
        row = {"slice": name, "labelled": cand["labelled"], "metric": cand["metric"], "worse": cand["worse"],
               "champion": {k: cham[k] for k in ("value", "ci")}, "candidate": {k: cand[k] for k in ("value", "ci")}}
        if cand.get("note"):
            row["note"] = cand["note"]
        return row

    vocab = [str(v) for v in card.get("label_vocabulary") or []]
    overall = judge("overall", labels)
    rows = []
    for feature in features:
        values = collections.Counter(_slice_value(instances[k], feature) for k in labels)
        for value, _ in values.most_common(MAX_SLICE_VALUES):
            keys = [k for k in labels if _slice_value(instances[k], feature) == value]
            rows.append(judge(f"{feature}={value}", keys))
    worse = [_worse_line(r, tolerance) for r in [overall, *rows] if r["worse"]]
    return {"labelled": overall["labelled"], "overall": overall, "slice_features": list(features), "slices": rows,
            "worse_lines": worse}


def _slice_value(instance: Mapping[str, Any], feature: str) -> str:
    value = instance.get(feature)
    value = ",".join(map(str, value)) if isinstance(value, list) else value
    return MISSING if value is None or value == "" else str(value)


def _worse_line(row: dict, tolerance: float) -> str:
    cand, cham = row["candidate"], row["champion"]
    where = "overall" if row["slice"] == "overall" else f"on slice {row['slice']}"
    lo, hi = cand["ci"]
    return (f"{where}: candidate {row['metric']} {cand['value']:.4f} (95% interval {lo:.4f}-{hi:.4f}) "
            f"worse than the champion's {cham['value']:.4f} (95% interval {cham['ci'][0]:.4f}-{cham['ci'][1]:.4f}) "
            f"by more than {tolerance:.0%} on {row['labelled']} labelled replayed answers")
