"""Real alert receivers on loopback: an HTTP server taking webhook POSTs and aiosmtpd's SMTP server.
Each is stopped when its test ends, whatever happened in it."""

from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

WAIT_S = 30  # every wait for a delivery is bounded


class Webhook:
    """Records each JSON body POSTed to it, in a queue the test reads with a bound."""

    def __init__(self):
        self.received: queue.Queue = queue.Queue()
        self.url = ""

    def next(self) -> dict:
        return self.received.get(timeout=WAIT_S)

    def all(self) -> list[dict]:
        found = []
        while not self.received.empty():
            found.append(self.received.get_nowait())
        return found


@contextmanager
def webhook_server(port: int = 0) -> Iterator[Webhook]:
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.received.put(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):  # quiet: pytest shows the test's own output
            pass

    with http_server(Handler, port) as url:
        hook.url = f"{url}/hooks/alerts"
        yield hook


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler], port: int = 0) -> Iterator[str]:
    """`handler` served on 127.0.0.1 from a thread; its base URL. Stopped when the block ends, however."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=WAIT_S)


class Mailbox:
    def __init__(self):
        self.received: queue.Queue = queue.Queue()
        self.port = 0

    def next(self):
        return self.received.get(timeout=WAIT_S)

    def all(self) -> list:
        found = []
        while not self.received.empty():
            found.append(self.received.get_nowait())
        return found


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox()

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            box.received.put(message_from_bytes(envelope.content))
            return "250 OK"

    with socket.socket() as probe:  # aiosmtpd's controller needs a port number: a free one
        probe.bind(("127.0.0.1", 0))
        box.port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port, ready_timeout=WAIT_S)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with webhook_server() as hook:
        yield hook


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box
