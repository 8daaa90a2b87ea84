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


@pytest.fixture(scope="session")
def server_url() -> str:
    """The real llama.cpp server's URL (``tools/start_llm_server.sh``); required where CI sets LLMDEF_REQUIRE_LLM_SERVER=1."""
    import os

    url = os.environ.get("LLMDEF_LLM_SERVER_URL")
    if not url:
        message = ("Servidor LLM real ausente: a variável LLMDEF_LLM_SERVER_URL não está definida. Inicie-o com "
                   "`bash tools/start_llm_server.sh` (instala llama-cpp-python e o SmolLM2-135M; a compilação "
                   "levou de 4 a 6 min em 2 núcleos na primeira vez) e rode o `export LLMDEF_LLM_SERVER_URL=...` "
                   "que ele imprime.")
        if os.environ.get("LLMDEF_REQUIRE_LLM_SERVER") == "1":
            pytest.fail(message + " (LLMDEF_REQUIRE_LLM_SERVER=1 exige o servidor.)")
        pytest.skip(message)
    return url
