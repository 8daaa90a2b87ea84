"""What the judge's test files share: an item, fast client settings, a closed port, the book's files."""
from __future__ import annotations

import contextlib
import json
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ENTRY = {"instruction": "Rewrite the sentence using a simile.", "input": "The car is very fast.",
         "output": "The car is as fast as lightning.", "model_response": "The car is as fast as a bullet."}
FAST = {"backoff": 0.01, "timeout": 5.0}   # client keywords for tests: short backoff, bounded waits


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def items(n: int, prefix: str = "r") -> list:
    """``n`` copies of ENTRY whose model responses are ``r0``, ``r1``... (easy to script by substring)."""
    return [dict(ENTRY, model_response=f"{prefix}{i}") for i in range(n)]


def read_shared(shared_data: Path, relative: str) -> Any:
    """A JSON file of the shared data folder; missing data is a failure, not a skip."""
    path = shared_data / relative
    if not path.is_file():
        pytest.fail(f"Dados compartilhados ausentes: {path} (veja shared/data/README.md).")
    return json.loads(path.read_text(encoding="utf-8"))


@contextlib.contextmanager
def raw_http_server(respond: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    """A one-request server on 127.0.0.1 that writes raw bytes: ``respond(connection, stopping)``.

    For replies the test double does not make: HTTP/1.0 bodies that end when the
    connection closes, hand-made misbehaviour. Yields the base URL.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stopping = threading.Event()

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                body += connection.recv(65536)
            try:
                respond(connection, stopping)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        listener.close()
        thread.join(timeout=5)
