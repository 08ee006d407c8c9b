"""The packed Redis store fails, rather than hangs, on a Redis that accepts and never answers."""

import socket
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import redis

from millet.serving.online import stores as online_store


def test_a_redis_that_never_answers_fails_the_read_within_the_timeout(monkeypatch):
    monkeypatch.setattr(online_store, "REDIS_TIMEOUT_S", 1.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        config = SimpleNamespace(online_store=SimpleNamespace(
            connection_string=f"127.0.0.1:{silent.getsockname()[1]},db=0"))
        store = online_store.PackedRedisOnlineStore()
        # In a thread of its own, so that without the store's timeout this test fails rather than hangs
        # (closing the socket on the way out ends that ping too).
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            ping = pool.submit(store._client(config).ping)
            with pytest.raises(redis.exceptions.TimeoutError):
                ping.result(timeout=60)  # a few timed-out tries (redis-py retries), then the error
        finally:
            pool.shutdown(wait=False)
