"""Shared fixtures: the real public files (see shared_data.py) and the GPT-2 tokenizer from them."""
from pathlib import Path

import pytest
import torch

import shared_data as _shared


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder with the real dataset, tokenizer and judge files, laid out as the mirror."""
    try:
        return _shared.locate()
    except RuntimeError as exc:
        pytest.fail(str(exc))


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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is faster, and far faster when other processes share the CPU.

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def entries(shared_data):
    """The course's 1,100 real instruction entries."""
    from llmdefinitions.data import download_and_load_file

    return download_and_load_file(shared_data / "instruction-data.json")
