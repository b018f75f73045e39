"""Synthetic client traffic for a local rollout: CSV rows typed by the served model's feature spec,
replayed through the front over real HTTP at a rate, as clients would send them."""
from __future__ import annotations

import csv
import threading
import time
import uuid
from typing import Dict, List

from kfx.serving.servers import http_json


def instances_from_csv(path: str, feature_types: Dict[str, str], limit: int = 0) -> List[dict]:
    """CSV rows as request instances typed by the served model's raw feature spec ('' -> null)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            inst = {}
            for name, dtype in feature_types.items():
                v = (r.get(name) or "").strip()
                if v == "":
                    inst[name] = None
                elif dtype == "int64":
                    inst[name] = int(float(v))
                elif dtype == "float":
                    inst[name] = float(v)
                else:
                    inst[name] = v
            rows.append(inst)
            if limit and len(rows) >= limit:
                break
    return rows


class Traffic(threading.Thread):
    """Replays instances through the front at a rate (real HTTP), like clients would."""

    def __init__(self, url: str, instances: List[dict], rps: float = 20.0, batch: int = 1, workers: int = 4):
        super().__init__(daemon=True)
        self.url, self.instances, self.rps, self.batch, self.workers = url, instances, rps, batch, workers
        self.stop_event = threading.Event()
        self.sent = self.failed = 0
        self.request_ids: List[tuple] = []   # (request id, first instance index into self.instances)

    def _one(self, i: int) -> None:
        batch = [self.instances[(i + k) % len(self.instances)] for k in range(self.batch)]
        rid = uuid.uuid4().hex
        try:
            code, _, _ = http_json("POST", self.url, {"instances": batch}, timeout=30, headers={"x-request-id": rid})
        except OSError:
            code = 599
        self.sent += 1
        self.failed += code >= 500
        self.request_ids.append((rid, i % len(self.instances)))

    def run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor
        i = 0
        with ThreadPoolExecutor(self.workers) as pool:
            t0 = time.monotonic()
            while not self.stop_event.is_set():
                pool.submit(self._one, i)
                i += self.batch
                delay = t0 + (i / self.batch) / self.rps - time.monotonic()
                if delay > 0:
                    self.stop_event.wait(delay)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(30)
