"""The judge's reply cache: an interrupted or partly failed run resumes without asking again."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Dict, Optional

from ..io import PathLike


def cache_key(model: str, prompt: str, variant: str = "") -> str:
    """SHA-256 of model and prompt (and ``variant``: request options that change the reply)."""
    text = f"{model}\n{prompt}" + (f"\n{variant}" if variant else "")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ReplyCache:
    """Append-only JSONL file of judge replies, one ``{"key", "model", "reply"}`` per line.

    * Only replies are stored. A request that failed (network error, timeout,
      HTTP error, broken stream) writes nothing, so a rerun asks again for
      exactly the failed items and keeps every reply already received.
    * A reply without a valid score is a reply: it is stored, and the raw text is
      kept (not the score), so a change in the parsing rules applies to a rerun.
    * A line that cannot be read (the last one cut short by an interrupted
      write) is skipped, counted in ``skipped_lines`` and reported with a
      warning; its item is asked again, and the next :meth:`put` starts on a new line.
    * To ask everything again (the CLI's ``--refazer``), call :meth:`clear` or
      delete the file.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.skipped_lines = 0
        self._replies: Dict[str, str] = {}
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    self._replies[record["key"]] = str(record["reply"])
                except (ValueError, KeyError, TypeError):
                    self.skipped_lines += line.strip() != ""
        if self.skipped_lines:
            warnings.warn(
                f"Cache do juiz '{self.path}': {self.skipped_lines} linha(s) ilegível(is) ignorada(s) "
                "(provavelmente uma gravação interrompida); esses itens serão perguntados de novo.",
                stacklevel=3)

    def get(self, key: str) -> Optional[str]:
        return self._replies.get(key)

    def __len__(self) -> int:
        return len(self._replies)

    def put(self, key: str, model: str, reply: str) -> None:
        """Append one reply; a cut-off last line is closed with a newline first."""
        line = json.dumps({"key": key, "model": model, "reply": reply}, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as handle:
                if handle.tell() > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        handle.write(b"\n")
                handle.write(line.encode("utf-8"))
            self._replies[key] = reply

    def clear(self) -> None:
        """Forget every reply and delete the file: the next run asks the judge everything again."""
        with self._lock:
            self._replies.clear()
            self.skipped_lines = 0
            if self.path.exists():
                self.path.unlink()


__all__ = ["ReplyCache", "cache_key"]
