"""Payload logging as KServe's logger does it: every request and its response
posted to a sink URL as CloudEvents (binary content mode, HTTP POST).

KServe's agent sidecar (spec.predictor.logger.url) emits, per request, an event of
type `org.kubeflow.serving.inference.request` and one of type
`org.kubeflow.serving.inference.response`, both with `ce-id` = the request id and
the extensions `inferenceservicename`, `namespace`, `component`, `endpoint`. kfx's
server emits the same two events itself (no sidecar locally) and adds the
extension `modelversion` (registry version, e.g. `v3`). Posting never blocks or
fails a prediction: events go through a bounded queue to a background task;
a full queue or an unreachable sink drops events and counts them
(`kfx_payload_events_dropped_total`).
"""
from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
from typing import Any, Optional

from kfx_formats.payload_log import REQUEST_TYPE, RESPONSE_TYPE

log = logging.getLogger("kfx_serving.payload")


def _counter(name: str, doc: str):
    from prometheus_client import Counter
    return Counter(name, doc, ["model"])


class PayloadLogger:
    def __init__(self, url: str, model: str, model_version: str, *, source: str = "",
                 namespace: str = "", component: str = "predictor", endpoint: str = "",
                 max_queue: int = 10000, timeout: float = 5.0):
        self.url, self.model, self.model_version = url, model, model_version
        self.source = source or f"http://{os.uname().nodename}/kfx-serving/{model}/{model_version}"
        self.namespace, self.component, self.endpoint = namespace, component, endpoint
        self.timeout = timeout
        self._queue: Optional[asyncio.Queue] = None
        self._max_queue = max_queue
        self._task: Optional[asyncio.Task] = None
        self._client = None
        self.sent = _counter("kfx_payload_events_sent_total", "CloudEvents delivered to the payload sink")
        self.dropped = _counter("kfx_payload_events_dropped_total",
                                "CloudEvents dropped (queue full or sink unreachable)")

    def _ensure_worker(self) -> None:
        if self._task is None or self._task.done():
            self._queue = self._queue or asyncio.Queue(self._max_queue)
            self._task = asyncio.get_running_loop().create_task(self._run())

    def log(self, request_id: str, request: Any, response: Any) -> None:
        """Queue the request and response events (call from the server's event loop)."""
        self._ensure_worker()
        now = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        for ce_type, data in ((REQUEST_TYPE, request), (RESPONSE_TYPE, response)):
            try:
                self._queue.put_nowait((ce_type, request_id, now, data))
            except asyncio.QueueFull:
                self.dropped.labels(self.model).inc()

    def headers(self, ce_type: str, request_id: str, when: str) -> dict:
        return {"ce-specversion": "1.0", "ce-id": request_id, "ce-type": ce_type,
                "ce-source": self.source, "ce-time": when,
                "ce-inferenceservicename": self.model, "ce-namespace": self.namespace,
                "ce-component": self.component, "ce-endpoint": self.endpoint,
                "ce-modelversion": self.model_version, "content-type": "application/json"}

    async def _run(self) -> None:
        import httpx
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            while True:
                ce_type, request_id, when, data = await self._queue.get()
                try:
                    r = await client.post(self.url, content=json.dumps(data).encode(),
                                          headers=self.headers(ce_type, request_id, when))
                    if r.status_code >= 300:
                        raise RuntimeError(f"sink answered {r.status_code}")
                    self.sent.labels(self.model).inc()
                except Exception as err:  # noqa: BLE001 - logging must never break serving
                    self.dropped.labels(self.model).inc()
                    log.warning("payload sink %s: %s", self.url, err)
                finally:
                    self._queue.task_done()
