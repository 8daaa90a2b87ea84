"""What the judge's test files share: an item, fast client settings, a closed port, the book's files."""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

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
