"""The GPT-2 tokenizer (tiktoken), fetched through the course's downloader.

``tiktoken.get_encoding("gpt2")`` reads ``encoder.json`` and ``vocab.bpe`` from its cache
folder (``$TIKTOKEN_CACHE_DIR``), each under the name ``sha1(url)``. We put the two files
there first with :func:`~llmdefinitions.downloads.download_file`: from the offline mirror
(``LLMDEF_MIRROR``) when it has them, else from OpenAI, and in both cases checked against
their known sha256 — so a tampered mirror file is a clear error naming it, and the real
``get_encoding("gpt2")`` then runs with no network at all.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .downloads import TOKENIZER_URLS, download_file

END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256


def encode_text(tokenizer, text: str) -> list:
    """Token ids of ``text`` under the course's one encoding rule.

    A literal ``<|endoftext|>`` written inside a text (an entry, a prompt) is
    encoded as ordinary text, never as the control token: the only end-of-text
    id in a sequence is the one the code appends (the collate, generation's stop).
    Training, generation, length statistics and widgets all encode through here.
    """
    return tokenizer.encode(text, disallowed_special=())


def tiktoken_cache_dir() -> Path:
    """The folder tiktoken reads its cache from (same rule as tiktoken itself)."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def ensure_tokenizer_files(progress: bool = False) -> Path:
    """Place GPT-2's ``encoder.json`` and ``vocab.bpe`` in tiktoken's cache, verified; return the cache.

    Files already there and intact are kept; others come from the mirror or the
    network (a :class:`~llmdefinitions.downloads.DownloadError` in pt-BR if neither works).
    """
    cache = tiktoken_cache_dir()
    for url in TOKENIZER_URLS.values():
        download_file(url, cache / hashlib.sha1(url.encode()).hexdigest(), progress=progress)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cache))
    return cache


def get_gpt2_tokenizer():
    """``tiktoken.get_encoding("gpt2")``, with its files from the offline mirror or the network."""
    import tiktoken

    ensure_tokenizer_files()
    return tiktoken.get_encoding("gpt2")
