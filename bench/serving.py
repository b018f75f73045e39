"""Serving load benchmark: throughput and p50/p99 latency of the kfx serving runtime over real HTTP.

    .venv/bin/python bench/serving.py --model REGISTRY/MODEL/vN [--data CSV] [--seconds 5]
                                      [--concurrency 1,4,16] [--doc docs/benchmarks.md]

For each protocol (V1 `/v1/models/<m>:predict`, V2 `/v2/models/<m>/infer`) and concurrency, an
asyncio client (httpx, one instance per request, closed loop: each of C workers sends its next
request when the previous answer arrives) drives
  * direct: one KServe model server (process executor, .venv-serving);
  * nginx split: a real nginx front with split_clients 50/50 over two servers of the same version
    (what a canary step costs on the request path).
Writes a Markdown table into --doc between <!-- serving:begin --> and <!-- serving:end -->.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kfx.serving.front import Front  # noqa: E402
from kfx.serving.registry import local_version  # noqa: E402
from kfx.serving.servers import Server, free_port  # noqa: E402
from kfx.serving.traffic import instances_from_csv  # noqa: E402

BEGIN, END = "<!-- serving:begin -->", "<!-- serving:end -->"
DT = {"int64": "INT64", "float": "FP32", "string": "BYTES"}


async def load(url: str, bodies: list, concurrency: int, seconds: float) -> dict:
    import httpx
    lat, errors, n = [], 0, 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def worker(k: int):
            nonlocal errors, n
            i = k
            while True:     # at least one request each, however short the window
                t0 = time.perf_counter()
                r = await client.post(url, json=bodies[i % len(bodies)])
                lat.append((time.perf_counter() - t0) * 1000)
                errors += r.status_code != 200
                n += 1
                i += concurrency
                if time.monotonic() >= stop:
                    break
        t0 = time.monotonic()
        # the window starts once the client exists (building it takes seconds on a loaded machine)
        stop = t0 + seconds
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        took = time.monotonic() - t0
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731
    return {"requests": n, "rps": n / took, "p50": q(0.50), "p99": q(0.99), "errors": errors}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="REGISTRY/MODEL/vN")
    ap.add_argument("--data", default=str(REPO / "data/chicago_taxi/data.csv"))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--doc", default=None)
    a = ap.parse_args(argv)
    version = local_version(a.model)
    vdir = version.path
    tmp = tempfile.mkdtemp(prefix="kfx-bench-serving-")
    servers = [Server(vdir, free_port(), log_file=f"{tmp}/server-{i}.log").start() for i in range(2)]
    front = None
    try:
        for s in servers:
            s.wait_ready()
        meta = servers[0].metadata()
        name, feats = meta["name"], meta["features"]
        rows = instances_from_csv(a.data, {f["name"]: f["dtype"] for f in feats}, 500)
        v1 = [{"instances": [r]} for r in rows]
        v2 = [{"inputs": [{"name": f["name"], "shape": [1], "datatype": DT[f["dtype"]], "data": [r[f["name"]]]}
                          for f in feats if r[f["name"]] is not None]
               + [{"name": f["name"], "shape": [1], "datatype": DT[f["dtype"]], "data": [None]}
                  for f in feats if r[f["name"]] is None]} for r in rows]
        front = Front(f"{tmp}/nginx", free_port(), servers[0].port, servers[1].port, "canary").start(50)
        paths = {"direct": servers[0].url, "nginx split 50/50": front.url}
        results = []
        for proto, bodies, route in (("V1", v1, f"/v1/models/{name}:predict"), ("V2", v2, f"/v2/models/{name}/infer")):
            for c in [int(x) for x in a.concurrency.split(",")]:
                for label, base in paths.items():
                    asyncio.run(load(base + route, bodies, c, 1.0))          # warm-up
                    r = asyncio.run(load(base + route, bodies, c, a.seconds))
                    r.update(protocol=proto, concurrency=c, path=label)
                    results.append(r)
                    print(f"{proto} c={c:<3} {label:<18} {r['rps']:7.1f} req/s  p50 {r['p50']:6.1f} ms  "
                          f"p99 {r['p99']:6.1f} ms  errors {r['errors']}", flush=True)
    finally:
        if front:
            front.stop()
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    table = [f"Measured by `bench/serving.py` on {time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores, "
             f"{platform.python_version()}): model `{name}` v{version.number}, one instance per request, closed-loop "
             f"asyncio httpx clients, {a.seconds:g} s per cell after a 1 s warm-up. *direct*: one KServe "
             "ModelServer process; *nginx split*: a real nginx (split_clients 50/50) over two servers of the same "
             "version, client and servers all on this machine.", "",
             "| protocol | concurrency | path | req/s | p50 ms | p99 ms | errors |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    table += [f"| {r['protocol']} | {r['concurrency']} | {r['path']} | {r['rps']:.1f} | {r['p50']:.1f} | "
              f"{r['p99']:.1f} | {r['errors']} |" for r in results]
    by = {(r["protocol"], r["concurrency"], r["path"]): r for r in results}
    deltas = [by[(p, c, "nginx split 50/50")]["p99"] - by[(p, c, "direct")]["p99"]
              for (p, c, path) in by if path == "direct"]
    table += ["", f"p99 added by the nginx split (split minus direct, per cell): "
              f"{', '.join(f'{d:+.1f} ms' for d in deltas)}."]
    text = "\n".join(table)
    print(text)
    if a.doc:
        doc = Path(a.doc)
        body = doc.read_text()
        if BEGIN not in body:
            body = body.rstrip("\n") + f"\n\n## Serving\n\n{BEGIN}\n{END}\n"
        head, rest = body.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
