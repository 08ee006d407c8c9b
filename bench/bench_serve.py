"""Benchmark: online lookups over HTTP, `millet serve` against stock `feast serve`, on the same store.

    .venv/bin/python bench/bench_serve.py --users 20000 --seconds 10

Publishes a synthetic snapshot (every feature of the spec, --users users) into a packed SQLite online
store, then, one server at a time on a loopback port: Millet's server (millet.serving.api.server) and
Feast's own feature server app (`feast serve`'s `get_app`) over the same FeatureStore. For each:
sequential latency of 1 user × credit_risk_v1 (p50, p99 over --requests calls), then requests per
second under 32 concurrent keep-alive clients for --seconds. The load generators stop by themselves.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from bench_materialize import DAY, STORES, _write_snapshots  # noqa: E402

from millet.serving.store import materialize_day, store_over  # noqa: E402

SERVICE = "credit_risk_v1"
SERVER = """
import sys, uvicorn
from millet.serving.store import store_over
from pathlib import Path
online, engine = {online!r}, {engine!r}
store = store_over(Path({snapshots!r}), Path({work!r}), online, engine, project="bench_serve")
if {kind!r} == "millet":
    from millet.serving.api.server import create_app
    from millet.settings import Settings
    app = create_app(store, Settings(data_root={work!r}, serve_auth="none"))
else:
    from feast.feature_server import get_app
    app = get_app(store)
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning", access_log=False)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="millet-bench-serve-"))
    try:
        online, engine, keys = published_store(work, args.users, "bench_serve")
        results = {kind: _measure(kind, work, online, engine, keys, args) for kind in ("millet", "stock")}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["rps_ratio"] = round(results["millet"]["rps"] / results["stock"]["rps"], 1)
    print(json.dumps(results))


def published_store(work: Path, users: int, project: str) -> tuple[dict, dict, list[str]]:
    """A synthetic snapshot of `users` published into a packed SQLite store under `work`: the store's
    online config, its engine, and the users' keys."""
    _write_snapshots(work / "snapshots", users, None)
    online = dict(STORES["millet"][0]["sqlite"], path=str(work / "online.db"))
    engine = STORES["millet"][1]
    store = store_over(work / "snapshots", work / "repo", online, engine, project=project)
    materialize_day(store, DAY)
    keys = pq.read_table(next((work / "snapshots" / "credit").rglob("*.parquet")),
                         columns=["user_key"]).column(0).to_pylist()
    return online, engine, keys


def _measure(kind: str, work: Path, online: dict, engine: dict, keys: list[str], args) -> dict:
    port = _free_port()
    code = SERVER.format(online=online, engine=engine, snapshots=str(work / "snapshots"),
                         work=str(work / "repo"), kind=kind, port=port)
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_until_up(port, server)
        latencies = _sequential(port, keys, args.requests)
        rps = _concurrent(port, keys, args.clients, args.seconds)
    finally:
        stop(server)
    latencies.sort()
    return {"p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2), "rps": round(rps)}


def _body(key: str) -> bytes:
    return json.dumps({"entities": {"user_key": [key]}, "feature_service": SERVICE}).encode()


def _call(conn: http.client.HTTPConnection, key: str) -> None:
    conn.request("POST", "/get-online-features", body=_body(key),
                 headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    payload = answer.read()
    if answer.status != 200:
        raise RuntimeError(f"{answer.status}: {payload[:200]!r}")


def _sequential(port: int, keys: list[str], n: int) -> list[float]:
    conn, rng, out = http.client.HTTPConnection("127.0.0.1", port, timeout=30), random.Random(1), []
    for _ in range(50):  # warm up: registry caches, first-read plans
        _call(conn, rng.choice(keys))
    for _ in range(n):
        started = time.perf_counter()
        _call(conn, rng.choice(keys))
        out.append(time.perf_counter() - started)
    conn.close()
    return out


def _concurrent(port: int, keys: list[str], clients: int, seconds: float) -> float:
    stop_at, counts = time.monotonic() + seconds, [0] * clients

    def client(i: int) -> None:
        conn, rng = http.client.HTTPConnection("127.0.0.1", port, timeout=30), random.Random(i)
        while time.monotonic() < stop_at:
            _call(conn, rng.choice(keys))
            counts[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - started)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(port: int, server: subprocess.Popen, log=None) -> None:
    """Until the server's /health answers 200; `log`: the file its stderr goes to, when not a pipe."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            if log is not None:
                log.seek(0)
            said = log.read() if log is not None else server.stderr.read().decode()
            raise RuntimeError(f"the server exited: {said[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not come up within 120 s")


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)

if __name__ == "__main__":
    main()
