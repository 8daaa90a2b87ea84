"""Where the tests find the real public files (dataset, tokenizer, judge references, ...).

In this order, the first folder that holds the course's dataset:

1. ``$LLMDEF_MIRROR`` — the offline mirror the README documents (a relative path is
   resolved as the package resolves it: from the current folder or the repository root);
2. ``../shared/data`` beside the repository (CI and the developers' machines);
3. ``~/.cache/llmdefinitions/dados-de-teste``, filled once by downloading the same public
   files through the package's own downloader (verified by sha256 where known), staged
   in a temporary folder and moved into place only when every file arrived, so a failed
   attempt leaves nothing behind.

Nothing happens at import time: the tests call :func:`locate` through the ``shared_data``
fixture, and a failure is one line that says what to do.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BESIDE_REPO = REPO.parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "llmdefinitions" / "dados-de-teste"
_MARKER = "instruction-data.json"


class SharedDataMissing(RuntimeError):
    """The public files are nowhere to be found or fetched (a one-line pt-BR message)."""


def _files() -> dict:
    """Path in the data folder -> public URL, for every file the tests can download."""
    from llmdefinitions.downloads import (BOOK_EVALUATION_URL, DATASET_URL, DATASET_WITH_RESPONSE_URL,
                                          JUDGE_REFERENCE_FILES, PREFERENCE_DATASET_URL, TOKENIZER_URLS)

    files = {"instruction-data.json": DATASET_URL,
             "instruction-data-with-response.json": DATASET_WITH_RESPONSE_URL,
             "instruction-data-with-preference.json": PREFERENCE_DATASET_URL}
    files.update({f"gpt2-tokenizer/{name}": url for name, url in TOKENIZER_URLS.items()})
    files.update({f"judge-reference/{Path(f).name}": BOOK_EVALUATION_URL + f for f in JUDGE_REFERENCE_FILES})
    return files


def _mirror_from_environment():
    value = os.environ.get("LLMDEF_MIRROR", "").strip()
    if not value:
        return None
    for base in (Path.cwd(), REPO):
        candidate = (base / value).expanduser()
        if (candidate / _MARKER).is_file():
            return candidate.resolve()
    raise SharedDataMissing(
        f"LLMDEF_MIRROR={value!r} não tem '{_MARKER}' (procurado a partir de {Path.cwd()} e de {REPO}): "
        "aponte a variável para a pasta do espelho (veja a seção 'Sem internet' do README).")


def _download_into_cache() -> Path:
    from llmdefinitions.downloads import MIRROR_ENV, download_file

    CACHE.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".dados-de-teste-", dir=CACHE.parent))
    saved = os.environ.pop(MIRROR_ENV, None)           # a download, not a mirror lookup
    try:
        for relative, url in _files().items():
            download_file(url, staging / relative, progress=False)
        shutil.rmtree(CACHE, ignore_errors=True)
        os.replace(staging, CACHE)
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SharedDataMissing(
            f"Os testes precisam dos arquivos públicos do curso e não há espelho (LLMDEF_MIRROR), nem "
            f"{BESIDE_REPO}, nem internet para baixá-los ({first_line}). Defina LLMDEF_MIRROR como no README."
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if saved is not None:
            os.environ[MIRROR_ENV] = saved
    return CACHE


def locate() -> Path:
    """The folder with the real public files (see the module docstring for the order)."""
    mirror = _mirror_from_environment()
    if mirror is not None:
        return mirror
    if (BESIDE_REPO / _MARKER).is_file():
        return BESIDE_REPO
    if all((CACHE / relative).is_file() for relative in _files()):
        return CACHE
    return _download_into_cache()
