"""The GPT-2 tokenizer (tiktoken), working offline from the mirror when there is one.

``tiktoken.get_encoding("gpt2")`` downloads ``encoder.json`` and ``vocab.bpe`` and caches
each file in ``$TIKTOKEN_CACHE_DIR`` under the name ``sha1(url)``. When the offline mirror
(``LLMDEF_MIRROR``) holds the two files, we place them in that cache under those names
first, so the real ``get_encoding("gpt2")`` runs with no network at all.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .downloads import TOKENIZER_URLS, KNOWN_SHA256, find_in_mirror, sha256_of

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


def seed_tiktoken_cache_from_mirror() -> bool:
    """Copy the mirror's tokenizer files into tiktoken's cache; True if both were there."""
    sources = {url: find_in_mirror(url) for url in TOKENIZER_URLS.values()}
    if any(path is None for path in sources.values()):
        return False
    cache = tiktoken_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    for url, source in sources.items():
        target = cache / hashlib.sha1(url.encode()).hexdigest()
        if target.is_file() and sha256_of(target) == KNOWN_SHA256[url]:
            continue
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cache))
    return True


def get_gpt2_tokenizer():
    """``tiktoken.get_encoding("gpt2")``, served from the offline mirror when available."""
    import tiktoken

    seed_tiktoken_cache_from_mirror()
    return tiktoken.get_encoding("gpt2")
