"""Where the tests find the real public files (dataset, tokenizer, judge references).

In CI and on the developers' machines they lie in ``../shared/data`` beside the repository.
On any other machine the tests fetch the same public files once, through the package's own
downloader (verified by sha256 where known), into ``~/.cache/llmdefinitions/dados-de-teste``,
laid out like the offline mirror. With neither the folder nor internet the tests fail with
a message saying so.
"""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BESIDE_REPO = REPO.parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "llmdefinitions" / "dados-de-teste"
_BOOK = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07"
_JUDGE_FILES = ["eval-example-data.json"] + [
    f"scores/{judge}-model-{n}-response.json" for judge in ("gpt4", "llama3-8b") for n in (1, 2)]


def _files():
    from llmdefinitions.downloads import DATASET_URL, DATASET_WITH_RESPONSE_URL, TOKENIZER_URLS

    files = {"instruction-data.json": DATASET_URL,
             "instruction-data-with-response.json": DATASET_WITH_RESPONSE_URL}
    files.update({f"gpt2-tokenizer/{name}": url for name, url in TOKENIZER_URLS.items()})
    files.update({f"judge-reference/{Path(f).name}": f"{_BOOK}/03_model-evaluation/{f}" for f in _JUDGE_FILES})
    return files


def locate() -> Path:
    """The folder with the real files (``../shared/data``, else a downloaded copy)."""
    if (BESIDE_REPO / "instruction-data.json").is_file():
        return BESIDE_REPO
    import os

    from llmdefinitions.downloads import MIRROR_ENV, download_file

    saved = os.environ.pop(MIRROR_ENV, None)        # a download, not a mirror lookup
    try:
        for relative, url in _files().items():
            download_file(url, CACHE / relative, progress=False)
    except Exception as exc:
        raise RuntimeError(
            f"Os testes precisam dos arquivos públicos do curso: não estão em {BESIDE_REPO} "
            f"e não foi possível baixá-los para {CACHE} ({exc})."
        ) from exc
    finally:
        if saved is not None:
            os.environ[MIRROR_ENV] = saved
    return CACHE
