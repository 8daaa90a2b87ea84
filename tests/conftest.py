"""Shared fixtures: the offline mirror (../shared/data) and the real GPT-2 tokenizer from it."""
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder with the real dataset and tokenizer files (CI keeps it beside the repo)."""
    if not (SHARED_DATA / "instruction-data.json").is_file():
        pytest.fail(f"Pasta de dados compartilhada não encontrada em {SHARED_DATA} "
                    "(o CI a coloca ao lado do repositório como ../shared/data).")
    return SHARED_DATA


@pytest.fixture()
def mirror(shared_data, monkeypatch, tmp_path):
    """LLMDEF_MIRROR pointing at the shared data, and a private tiktoken cache."""
    monkeypatch.setenv("LLMDEF_MIRROR", str(shared_data))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    return shared_data


@pytest.fixture(scope="session")
def gpt2_tokenizer(shared_data, tmp_path_factory):
    """The real tiktoken GPT-2 encoding, served from the mirror (no network)."""
    import os

    from llmdefinitions.tokenizer import get_gpt2_tokenizer

    old = {k: os.environ.get(k) for k in ("LLMDEF_MIRROR", "TIKTOKEN_CACHE_DIR")}
    os.environ["LLMDEF_MIRROR"] = str(shared_data)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(tmp_path_factory.mktemp("tiktoken"))
    try:
        return get_gpt2_tokenizer()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
