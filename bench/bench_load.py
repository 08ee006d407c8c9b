"""Benchmark: `millet serve` under load from authenticated clients, against itself unloaded.

    .venv/bin/python bench/bench_load.py --users 20000 --clients 32 --seconds 60 --rate 5

Publishes a synthetic snapshot (every feature of the spec) into a packed SQLite online store and starts
Millet's server with OIDC authentication against a provider on loopback (tests/oidc.py: discovery
document, keys, tokens signed here). Then, in one run:
- unloaded: --requests sequential lookups of 1 user × credit_risk_v1 with a valid token (p50, p99);
- loaded: --clients clients, each on its own keep-alive connection and its own token, each sending
  --rate requests a second (paced, as a decision service sends them) for --seconds; every answer that is
  not a 200, and every failed connection, is an error.
The run stops by itself (each client at its deadline; the server and the provider are stopped on the way
out, whatever happened). Prints one JSON line: both p99s, their ratio, errors and the achieved rate.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from bench_serve import _free_port, _wait_until_up, published_store, stop  # noqa: E402

from millet.serving.definitions import CREDIT_DECISIONS  # noqa: E402
from tests.oidc import oidc_provider  # noqa: E402

SERVICE = "credit_risk_v1"
SERVER = """
import uvicorn
from pathlib import Path
from millet.serving.api.server import create_app
from millet.serving.store import store_over
from millet.settings import Settings
store = store_over(Path({snapshots!r}), Path({work!r}), {online!r}, {engine!r}, project="bench_load")
settings = Settings(data_root={work!r}, serve_auth="oidc", oidc_discovery_url={discovery!r})
uvicorn.run(create_app(store, settings), host="127.0.0.1", port={port}, log_level="warning", access_log=False)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=5, help="requests a second per client")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="millet-bench-load-"))
    try:
        online, engine, keys = published_store(work, args.users, "bench_load")
        with oidc_provider() as provider:
            result = _measure(work, online, engine, keys, provider, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


def _measure(work: Path, online: dict, engine: dict, keys: list[str], provider, args) -> dict:
    port = _free_port()
    code = SERVER.format(snapshots=str(work / "snapshots"), work=str(work / "repo"), online=online,
                         engine=engine, discovery=provider.discovery_url, port=port)
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_until_up(port, server)
        token = provider.mint("bench-unloaded", [CREDIT_DECISIONS], expires_in=3600)
        unloaded = _sequential(port, keys, token, args.requests)
        tokens = [provider.mint(f"bench-client-{i}", [CREDIT_DECISIONS], expires_in=3600)
                  for i in range(args.clients)]
        loaded, errors, seconds = _paced(port, keys, tokens, args.rate, args.seconds)
    finally:
        stop(server)
    p99 = {"unloaded": _p(unloaded, 0.99), "loaded": _p(loaded, 0.99)}
    return {"clients": args.clients, "rate_per_client": args.rate, "seconds": args.seconds,
            "requests": len(loaded), "errors": errors, "achieved_rps": round(len(loaded) / seconds),
            "unloaded_p50_ms": _p(unloaded, 0.5), "unloaded_p99_ms": p99["unloaded"],
            "loaded_p50_ms": _p(loaded, 0.5), "loaded_p99_ms": p99["loaded"],
            "p99_ratio": round(p99["loaded"] / p99["unloaded"], 2)}


def _p(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 2)


def _call(conn: http.client.HTTPConnection, key: str, token: str) -> int:
    conn.request("POST", "/get-online-features",
                 body=json.dumps({"entities": {"user_key": [key]}, "feature_service": SERVICE}).encode(),
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    answer = conn.getresponse()
    answer.read()
    return answer.status


def _sequential(port: int, keys: list[str], token: str, n: int) -> list[float]:
    conn, rng, out = http.client.HTTPConnection("127.0.0.1", port, timeout=30), random.Random(1), []
    for _ in range(50):  # warm up: the provider's keys fetched, plans cached
        _call(conn, rng.choice(keys), token)
    for _ in range(n):
        started = time.perf_counter()
        status = _call(conn, rng.choice(keys), token)
        out.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"unloaded lookup answered {status}")
    conn.close()
    return out


def _paced(port: int, keys: list[str], tokens: list[str], rate: float, seconds: float):
    """Each client sends at `rate` a second until the deadline; latencies of all, and the errors."""
    started = time.monotonic()
    stop_at, latencies, errors, lock = started + seconds, [], [0], threading.Lock()

    def client(i: int) -> None:
        conn, rng = http.client.HTTPConnection("127.0.0.1", port, timeout=30), random.Random(i)
        due = time.monotonic() + rng.random() / rate  # spread the clients' first requests
        mine, failed = [], 0
        while due < stop_at:
            time.sleep(max(0.0, due - time.monotonic()))  # pacing, not synchronisation
            begun = time.perf_counter()
            try:
                failed += _call(conn, rng.choice(keys), tokens[i]) != 200
            except OSError:
                failed += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - begun)
            due += 1 / rate
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(tokens))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 120)
    return latencies, errors[0], time.monotonic() - started


if __name__ == "__main__":
    main()
