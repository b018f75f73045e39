"""A local rollout's record on disk, and how other processes talk to it:

    <registry_uri>/<model_name>/rollouts/<id>/         state.json, events.jsonl, command, nginx/, payloads/
    <registry_uri>/<model_name>/rollouts/active.json   the rollout `kfx rollout approve|...` talks to

A rollout of an S3 registry keeps this under the temp directory (the rollout runs on this machine).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

from kfx.serving import ServingError, log
from kfx.serving.registry import local_path
from kfx_formats import registry, s3

COMMANDS = ("approve", "reject", "rollback", "switch-back")
_ACTIVE_STATES = ("starting", "running", "awaiting-approval", "switched")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rollouts_dir(model_dir: str, state_root: Optional[str] = None) -> str:
    if state_root:
        return state_root
    if s3.is_s3(model_dir):
        return os.path.join(tempfile.gettempdir(), "kfx-rollouts")
    return os.path.join(local_path(model_dir.rstrip("/")), "rollouts")


def read_active(model_dir: str) -> Optional[dict]:
    """The rollout in progress for a model (rollouts/active.json), or None."""
    return registry.read_json(os.path.join(_rollouts_dir(model_dir), "active.json"))


def _rollout_dirs(model_dir: str) -> list:
    """rollouts/<id>/ of a model, oldest first (ids start with their UTC start time)."""
    root = _rollouts_dir(model_dir)
    return [os.path.join(root, rid) for rid in sorted(os.listdir(root))] if os.path.isdir(root) else []


def payload_dirs(model_dir: str) -> list:
    """The payload logs earlier local rollouts' sinks wrote (rollouts/<id>/payloads/), oldest first."""
    found = (os.path.join(d, "payloads") for d in _rollout_dirs(model_dir))
    return [d for d in found if any(Path(d).rglob("*.jsonl"))]


def read_latest(model_dir: str) -> Optional[dict]:
    """The newest rollout's state.json (its status, result, replay and contract check), or None."""
    states = [p for p in (os.path.join(d, "state.json") for d in _rollout_dirs(model_dir)) if os.path.isfile(p)]
    return registry.read_json(states[-1]) if states else None


def send_command(model_dir: str, command: str) -> dict:
    """Leave `command` (approve, reject, rollback, switch-back) for the rollout in progress."""
    if command not in COMMANDS:
        raise ServingError(f"{command!r}: one of {COMMANDS}")
    active = read_active(model_dir)
    if not active:
        raise ServingError(f"{model_dir}: no rollout in progress (rollouts/active.json)")
    with open(os.path.join(active["dir"], "command"), "w") as f:
        f.write(command + "\n")
    return active


class Rollout:
    """One local rollout's record: state.json + events.jsonl under <model_dir>/rollouts/<id>/."""

    def __init__(self, model_dir: str, strategy: str, current: int, candidate: int, state_root: Optional[str] = None):
        self.model_dir, self.strategy, self.current, self.candidate = model_dir.rstrip("/"), strategy, current, candidate
        self.id = f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%S}-{strategy}-v{current}-v{candidate}"
        self.dir = os.path.join(_rollouts_dir(self.model_dir, state_root), self.id)
        os.makedirs(self.dir, exist_ok=True)
        # `kfx rollout approve|...` finds the rollout here (a --state-dir rollout only under its own dir)
        self.active_path = (os.path.join(state_root, "active.json") if s3.is_s3(self.model_dir) and state_root
                            else os.path.join(_rollouts_dir(self.model_dir), "active.json"))
        self.state = {"id": self.id, "model_dir": self.model_dir, "strategy": strategy, "current": f"v{current}",
                      "candidate": f"v{candidate}", "status": "starting", "started": now(), "steps": [],
                      "dir": self.dir}

    def event(self, kind: str, **data) -> None:
        rec = {"time": now(), "event": kind, **data}
        with open(os.path.join(self.dir, "events.jsonl"), "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        log(f"{self.strategy} v{self.current}->v{self.candidate}: {kind} "
            + json.dumps({k: v for k, v in data.items() if k != "stats"}, default=str)[:300])

    def save(self, **updates) -> None:
        self.state.update(updates, updated=now())
        registry.write_json(os.path.join(self.dir, "state.json"), self.state)
        if self.state["status"] in _ACTIVE_STATES:
            registry.write_json(self.active_path, {"id": self.id, "dir": self.dir, "strategy": self.strategy})
        else:
            with contextlib.suppress(FileNotFoundError):
                if (registry.read_json(self.active_path) or {}).get("id") == self.id:
                    os.remove(self.active_path)

    def command(self) -> str:
        """A command left by `kfx rollout approve|switch-back|...` (consumed)."""
        path = os.path.join(self.dir, "command")
        if not os.path.exists(path):
            return ""
        cmd = Path(path).read_text().strip()
        os.remove(path)
        return cmd

    def wait_approval(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cmd = self.command()
            if cmd == "approve":
                self.event("approved")
                return True
            if cmd in ("reject", "rollback"):
                return False
            time.sleep(0.5)
        return False
