"""Append-only JSON Lines files: progress that survives an interruption.

Each record is one line, flushed to disk before the next work starts, so an
interrupted run loses at most the line being written. Reading tolerates exactly
that: a last line cut short (no newline, not valid JSON) is dropped; any other bad
line is an error naming the file and the line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, List, Mapping

from .io import PathLike


def append_jsonl(path: PathLike, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one line and make it durable (flush + fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: PathLike) -> List[dict]:
    """The records of ``path`` (``[]`` if it does not exist); a cut-short last line is dropped."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8-sig")
    lines = text.split("\n")
    records: List[dict] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):            # the last line, without its newline: cut short
                break
            raise ValueError(f"'{path}', linha {number}: não é um JSON válido. "
                             "Apague o arquivo para recomeçar esta etapa.") from None
        if not isinstance(record, dict):
            raise ValueError(f"'{path}', linha {number}: esperava um objeto JSON.")
        records.append(record)
    return records


__all__ = ["append_jsonl", "read_jsonl"]
