"""The request-contract check of `kfx rollout start` (docs/serving.md, "Request contract"): before any
traffic moves, the candidate's contract (kfx_formats.contract) is compared with production's, against
what production's clients send (the fields they send a value for, from the payload log when there is
one). A breaking difference refuses the rollout unless --allow-contract-change; every difference is one
line on stderr and the result is kept in the rollout's record.

A version pushed before contracts has no contract.json: its contract is derived from its SavedModel's
serving signature (and its schema file, when the version holds one), and the result says so.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, Iterable, List, Optional, Set, Tuple

from kfx.serving import ServingError, log
from kfx.serving.registry import LocalVersion
from kfx.serving.rollout_state import payload_dirs
from kfx_formats import contract, payload_log, registry, s3

REFUSED, ALLOWED, COMPATIBLE, NOTHING = "refused", "allowed", "compatible", "nothing to compare with"


class ContractRefused(ServingError):
    """The candidate breaks production's clients (the rollout is not started)."""


def version_contract(version: LocalVersion) -> contract.Contract:
    """The version's contract.json, or the one derived from its SavedModel (and schema) when it has none."""
    path = os.path.join(version.path, registry.CONTRACT)
    if os.path.isfile(path):
        return contract.read(registry.Version(version.number, version.path))
    schema = os.path.join(version.path, *registry.SCHEMA.split("/"))
    try:
        return contract.from_saved_model(
            os.path.join(version.path, registry.SAVED_MODEL), schema if os.path.isfile(schema) else "",
            version.model_card().get("label_key", ""),
            note=f"v{version.number} has no {registry.CONTRACT} (pushed before request contracts): derived from "
                 f"its SavedModel's serving signature{'' if os.path.isfile(schema) else ' (no schema: no categories)'}")
    except ValueError as err:
        raise ServingError(f"v{version.number}: no request contract ({err})") from None


def _records(source: str) -> List[dict]:
    if not s3.is_s3(source):
        return payload_log.read_records(source)
    with tempfile.TemporaryDirectory() as scratch:
        return payload_log.read_records(s3.local_copy(source, scratch))


def sent_fields(records: Iterable[dict], production: int) -> Optional[Set[str]]:
    """The fields production's clients send a value for (not null) in at least one logged instance: of
    the requests production (v<production>) answered, else of every logged request; None without any."""
    records = list(records)
    answered = [r for r in records if r.get("model_version") == f"v{production}"] or records
    if not answered:
        return None
    return {k for r in answered for inst in r["instances"] for k, v in inst.items() if v is not None}


def gate(versions: Tuple[Optional[LocalVersion], LocalVersion], payload_log_path: str = "", allow: bool = False,
         record: Callable[..., None] = lambda kind, **data: None) -> dict:
    """Compare the candidate's contract with production's (versions: (production or None, candidate)),
    print one line per difference, `record("contract", **result)`; ContractRefused when a difference
    breaks production's clients and `allow` is false. Returns the result."""
    production, candidate = versions
    if production is None:
        result = {"decision": NOTHING}
        record("contract", **result)
        return result
    prod, cand = version_contract(production), version_contract(candidate)
    sources = [payload_log_path] if payload_log_path else payload_dirs(candidate.model_dir)
    try:
        sent = sent_fields((r for source in sources for r in _records(source)), production.number)
    except ValueError as err:
        raise ServingError(f"--payload-log {err}") from None
    differences = contract.compare(cand, prod, sent)
    breaking = [d for d in differences if d.breaking]
    decision = (REFUSED if not allow else ALLOWED) if breaking else COMPATIBLE
    result = {"decision": decision, "production": f"v{production.number}", "candidate": f"v{candidate.number}",
              "sent_fields": sorted(sent) if sent is not None else None,
              "sent_fields_from": sources if sent is not None else f"v{production.number}'s contract (no payload log)",
              "notes": [c.note for c in (prod, cand) if c.note],
              "differences": [{"kind": d.kind, "field": d.field, "breaking": d.breaking, "text": d.text}
                              for d in differences]}
    for note in result["notes"]:
        log(f"contract: {note}")
    for d in differences:
        log(f"contract: {'BREAKING' if d.breaking else 'shown'} {d.kind}: {d.text}")
    record("contract", **result)
    if decision == REFUSED:
        raise ContractRefused(f"candidate v{candidate.number} breaks the request contract of production "
                              f"v{production.number} ({len(breaking)} breaking difference(s) above; "
                              "--allow-contract-change to roll it out anyway)")
    return result
