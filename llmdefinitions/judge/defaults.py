"""The judge's defaults, written once: the model, the URL, the request options and the limits.

``profiles.py`` and ``cli.py`` take ``DEFAULT_MODEL`` and ``DEFAULT_URL`` from here,
so the book's ``"llama3"`` at ``http://localhost:11434/api/chat`` is written in one place.
"""
from __future__ import annotations

from typing import Any, Dict

DEFAULT_MODEL = "llama3"
DEFAULT_URL = "http://localhost:11434/api/chat"

# As in the book: a fixed RNG seed and temperature 0 make the judge's replies repeatable.
DEFAULT_OPTIONS: Dict[str, Any] = {"seed": 123, "temperature": 0, "num_ctx": 2048}

DEFAULT_TIMEOUT = 120.0          # seconds of silence allowed (connect, or between two reads)
DEFAULT_DEADLINE = 300.0         # seconds for one whole request, last byte included
DEFAULT_MAX_REPLY_BYTES = 1_000_000   # a judge's reply is a few hundred bytes; this stops endless ones
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF = 1.0            # seconds; doubled after each failed attempt
DEFAULT_MAX_CONSECUTIVE_FAILURES = 3   # items failing the same way in a row before a run stops
