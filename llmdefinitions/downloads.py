"""One downloader for everything the course fetches, and the offline mirror.

``download_file`` shows a progress bar, resumes a partial file, writes to
``<destination>.part`` and renames it only when the file is complete and verified
(size, and sha256 where known), retries, and falls back to backup URLs.

The **offline mirror**: when the environment variable ``LLMDEF_MIRROR`` names a folder,
that folder is looked at first, and a file found there is copied without any
network request, verified by its sha256 when it is known (a file with no known hash
is copied and reported as *não verificado*). A relative ``LLMDEF_MIRROR`` is looked
up from the current folder and then from the project's root (see :func:`mirror_dir`),
so ``../shared/data`` means the same folder in a terminal at the repository's root,
in a notebook kernel running in ``notebooks/`` and in the CLI. A ``LLMDEF_MIRROR`` that
names no folder is an error (:class:`MirrorError`), never silently ignored.
Layout of the mirror (relative paths, see ``mirror_candidates``):

==============================================================  ===============================
public URL                                                       path in the mirror
==============================================================  ===============================
``…/gpt-2/encodings/main/{encoder.json,vocab.bpe}``              ``gpt2-tokenizer/<file>``
``…/gpt-2/models/<size>/{encoder.json,vocab.bpe}``               ``gpt2-tokenizer/<file>`` or ``gpt2/<size>/<file>``
``…/gpt-2/models/<size>/<other file>``                           ``gpt2/<size>/<file>``
``huggingface.co/<org>/<repo>/resolve/<rev>/<file>``             ``hf/<org>/<repo>/<file>``
``…/ch07/03_model-evaluation/…/<file>``                          ``judge-reference/<file>``
any other URL                                                    ``<file name>`` (e.g. ``instruction-data.json``)
==============================================================  ===============================
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union
from urllib.parse import urlparse

from .io import FileWriteError, atomic_write, write_error

PathLike = Union[str, os.PathLike]

MIRROR_ENV = "LLMDEF_MIRROR"

DATASET_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch"
    "/main/ch07/01_main-chapter-code/instruction-data.json"
)
DATASET_WITH_RESPONSE_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch"
    "/main/ch07/01_main-chapter-code/instruction-data-with-response.json"
)
# The book's judge evaluation (notebooks 07 and 08): 100 items answered by two models, and the
# 0-100 scores GPT-4 and Llama 3 8B gave them.
BOOK_EVALUATION_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch"
                       "/main/ch07/03_model-evaluation/")
JUDGE_REFERENCE_FILES = {
    "eval-example-data.json": "90e9ceb4f1184f6b307fd76d0dd1e8b15bd3da200b1fc69ee897107394a775e0",
    "scores/gpt4-model-1-response.json": "705f24bf17878d5e29c5cb2daeae00a64a1688756192478f91f41bf1eff85689",
    "scores/gpt4-model-2-response.json": "2b10d2abdf1f71f4f8057c012be2bf6c777823adbadb597f4d1699e06129db5a",
    "scores/llama3-8b-model-1-response.json": "a6005211110bf3d9e30dbdb17638a1918004bc490c85b0b3520798a31d7fa5a4",
    "scores/llama3-8b-model-2-response.json": "18e501530c56085aca3e6c2d7da39edc03fd85fe205f17a65ab1a400c6d61125",
}
# The same 1,100 entries with a polite `chosen` and an impolite `rejected` answer (DPO, notebook 10).
PREFERENCE_DATASET_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch"
    "/main/ch07/04_preference-tuning-with-dpo/instruction-data-with-preference.json"
)
# Stanford Alpaca's 52K instructions (exercise of notebook 12); no fixed hash is known.
ALPACA_URL = "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json"
GPT2_BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2"
GPT2_BACKUP_BASE_URL = "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2"
TOKENIZER_URLS = {
    "encoder.json": f"{GPT2_BASE_URL}/encodings/main/encoder.json",
    "vocab.bpe": f"{GPT2_BASE_URL}/encodings/main/vocab.bpe",
}
HF_BASE_URL = "https://huggingface.co"


def hf_url(repo: str, filename: str, revision: str = "main") -> str:
    """Download URL of ``filename`` in the Hugging Face repository ``repo``."""
    return f"{HF_BASE_URL}/{repo}/resolve/{revision}/{filename}"


# sha256 of the files whose content is fixed and known.
KNOWN_SHA256 = {
    DATASET_URL: "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
    DATASET_WITH_RESPONSE_URL: "aced320504c77c98d957316eb9f3460945256226c36b5e9752bf7d49585eb943",
    PREFERENCE_DATASET_URL: "305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e",
    **{BOOK_EVALUATION_URL + name: sha256 for name, sha256 in JUDGE_REFERENCE_FILES.items()},
    TOKENIZER_URLS["encoder.json"]: "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    TOKENIZER_URLS["vocab.bpe"]: "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    # GPT-2 weights as safetensors: the Git LFS oid (= sha256) that Hugging Face shows under
    # "Large File Pointer Details" / "Git LFS Details" on each file's page. Each page names
    # the last commit that changed the file (in brackets), the merged pull request that
    # put it on `main`; a branch made after it shows the same file:
    # https://huggingface.co/openai-community/gpt2/blob/refs%2Fpr%2F129/model.safetensors  (commit 75e09b4, #12)
    # https://huggingface.co/openai-community/gpt2-medium/blob/refs%2Fpr%2F8/model.safetensors  (commit 425b0cc, #5)
    # https://huggingface.co/openai-community/gpt2-large/blob/main/model.safetensors  (commit 212095d, #3)
    # https://huggingface.co/openai-community/gpt2-xl/blob/refs%2Fpr%2F9/model.safetensors  (commit b81cf80, #5)
    hf_url("openai-community/gpt2", "model.safetensors"):
        "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707",
    hf_url("openai-community/gpt2-medium", "model.safetensors"):
        "fc5a354a19255ad494f3d71549390baca1ccf61d1d822b9408971705c687c9cd",
    hf_url("openai-community/gpt2-large", "model.safetensors"):
        "5f47f3e12f91cd33b662ce7e433b6150ad5512b5884a2cee961b50e9c3bbebce",
    hf_url("openai-community/gpt2-xl", "model.safetensors"):
        "0f8b28eb05a8075f48b61b6f35332978c74fc7763fa9fb4051a1c30511736a6a",
}

# Exact sizes in bytes, checked before the (slower) sha256.
KNOWN_SIZES = {
    TOKENIZER_URLS["encoder.json"]: 1_042_301,        # measured on the files of the sha256 above
    TOKENIZER_URLS["vocab.bpe"]: 456_318,
}

# Rounded sizes that Hugging Face shows on the pages cited above, only to tell a user how
# much to fetch (the sha256 checks the content; a download is also checked against the
# Content-Length the server sends).
APPROX_SIZES = {
    hf_url("openai-community/gpt2", "model.safetensors"): 548_000_000,
    hf_url("openai-community/gpt2-medium", "model.safetensors"): 1_520_000_000,
    hf_url("openai-community/gpt2-large", "model.safetensors"): 3_250_000_000,
    hf_url("openai-community/gpt2-xl", "model.safetensors"): 6_430_000_000,
}


class DownloadError(RuntimeError):
    """A file could not be fetched or verified (the message is in pt-BR).

    ``url`` is the file's primary address and ``tried`` maps each server tried to
    its last error, so a caller fetching several files can say more in one message.
    """

    def __init__(self, message: str, url: Optional[str] = None,
                 tried: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.url = url
        self.tried = dict(tried or {})


class MirrorError(DownloadError):
    """``LLMDEF_MIRROR`` is set but names no folder, or a file there is broken (pt-BR)."""


# --------------------------------------------------------------------------- the mirror
def project_root(start: Optional[PathLike] = None) -> Optional[Path]:
    """The folder holding this package's ``pyproject.toml``, or ``None``.

    Found by walking up from ``start`` (default: the current folder, e.g. ``notebooks/``:
    the checkout the user works in), else beside the imported package (an editable
    install, ``pip install -e .``, run from any folder).
    """
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents, Path(__file__).resolve().parent.parent):
        pyproject = folder / "pyproject.toml"
        try:
            text = pyproject.read_text(encoding="utf-8")
        except OSError:
            continue
        if re.search(r'^name\s*=\s*"llmdefinitions"', text, re.MULTILINE):
            return folder
    return None


def mirror_dir() -> Optional[Path]:
    """The offline mirror folder named by ``LLMDEF_MIRROR`` (absolute), or ``None`` if unset.

    A relative value is taken from the current folder if it exists there, else from
    the project's root (:func:`project_root`). A value that names no folder raises
    :class:`MirrorError` saying where it looked: a wrong mirror must not end, offline,
    in a confusing network error (and online, in a silent download of gigabytes).
    """
    value = os.environ.get(MIRROR_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    looked = [path] if path.is_absolute() else [(Path.cwd() / path).resolve()]
    root = project_root()
    if not path.is_absolute() and root is not None and (root / path).resolve() not in looked:
        looked.append((root / path).resolve())
    for place in looked:
        if place.is_dir():
            return place.resolve()
    raise MirrorError(
        f"{MIRROR_ENV}={value!r} não é uma pasta existente (procurada em: "
        f"{', '.join(repr(str(p)) for p in looked)}). Corrija a variável — um caminho relativo "
        "vale a partir da pasta atual ou da raiz do projeto — ou remova-a para baixar da internet."
    )


def mirror_candidates(url: str) -> List[str]:
    """Relative paths, in order, where ``url`` may lie in the mirror."""
    parsed = urlparse(url)
    parts = [p for p in parsed.path.split("/") if p]
    name = parts[-1] if parts else ""
    candidates: List[str] = []
    if "gpt-2" in parts or "gpt2" in parts:
        key = "gpt-2" if "gpt-2" in parts else "gpt2"
        rest = parts[parts.index(key) + 1:]
        if rest[:1] == ["models"] and len(rest) >= 3:
            size = rest[1]
            if name in ("encoder.json", "vocab.bpe"):
                candidates.append(f"gpt2-tokenizer/{name}")
            candidates.append(f"gpt2/{size}/{name}")
        elif rest[:1] == ["encodings"]:
            candidates.append(f"gpt2-tokenizer/{name}")
    if "03_model-evaluation" in parts:            # the book's judge scores and examples
        candidates.append(f"judge-reference/{name}")
    if parsed.netloc.endswith("huggingface.co") and "resolve" in parts:
        repo = parts[:parts.index("resolve")]
        candidates.append("hf/" + "/".join(repo) + "/" + name)
    candidates.append(name)
    return candidates


def find_in_mirror(url: str) -> Optional[Path]:
    """Path of ``url``'s file in the offline mirror, or ``None``.

    A link in the mirror that points nowhere raises :class:`MirrorError` naming both.
    """
    root = mirror_dir()
    if root is None:
        return None
    for rel in mirror_candidates(url):
        path = root / rel
        if path.is_file():
            return path
        if path.is_symlink():
            raise MirrorError(
                f"O arquivo do espelho offline '{path}' é um link para '{os.readlink(path)}', "
                "que não existe. Corrija o link ou remova-o do espelho."
            )
    return None


# --------------------------------------------------------------------------- checks
def sha256_of(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: PathLike, sha256: Optional[str] = None,
               expected_size: Optional[int] = None) -> Optional[str]:
    """``None`` if ``path`` has the expected size and sha256 (each where given), else why not (pt-BR)."""
    path = Path(path)
    if not path.is_file():
        return "arquivo ausente"
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return f"tamanho {size} bytes, esperado {expected_size}"
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256.lower():
            return f"sha256 {actual}, esperado {sha256.lower()}"
    return None


def format_bytes(size: float) -> str:
    """``1519984962`` -> ``"1,52 GB"`` (decimal units, decimal comma)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.2f}".replace(".", ",") + f" {unit}"
    return f"{int(size)} bytes"


def describe_size(url: str) -> str:
    """How large ``url``'s file is, as far as known: ``"1.042.301 bytes (1,04 MB)"``, ``"cerca de 1,52 GB"``."""
    if url in KNOWN_SIZES:
        exact = f"{KNOWN_SIZES[url]:,}".replace(",", ".")
        return f"{exact} bytes ({format_bytes(KNOWN_SIZES[url])})"
    if url in APPROX_SIZES:
        return f"cerca de {format_bytes(APPROX_SIZES[url])}"
    return "tamanho não informado"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _prepare_destination(destination: Path) -> None:
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"Não foi possível criar a pasta '{destination.parent}' para salvar "
            f"'{destination.name}': {exc.strerror or exc}. Escolha uma pasta com permissão de escrita."
        ) from exc
    if not os.access(destination.parent, os.W_OK):
        raise DownloadError(
            f"Sem permissão de escrita na pasta '{destination.parent}' (para salvar "
            f"'{destination.name}'). Escolha outra pasta."
        )


def _copy_from_mirror(source: Path, destination: Path, sha256: Optional[str],
                      expected_size: Optional[int], verbose: bool) -> Path:
    """Copy a mirror file (verified where a size or hash is known), atomically."""
    real = source.resolve()
    named = f"'{source}'" + (f" (link para '{real}')" if real != source.absolute() else "")
    problem = check_file(real, sha256, expected_size)
    if problem:
        raise MirrorError(
            f"O arquivo do espelho offline {named} não confere ({problem}). "
            f"Substitua-o por uma cópia íntegra ou remova-o do espelho ({MIRROR_ENV})."
        )
    with open(real, "rb") as src:
        atomic_write(destination, lambda f: shutil.copyfileobj(src, f, 1 << 20), mode="wb")
    if verbose and not sha256:
        # A verified copy is the normal case and says nothing; one that could not be verified says so.
        status = ("verificado só pelo tamanho" if expected_size else
                  "não verificado: nenhum sha256 conhecido para este arquivo")
        _say(f"espelho offline: {named} -> '{destination}' — {status}")
    return destination


# --------------------------------------------------------------------------- network
def _fetch(url: str, part: Path, destination: Path, timeout: float, chunk_size: int,
           progress: bool) -> Optional[int]:
    """Append ``url``'s bytes to ``part`` (resuming it); return the total size if known.

    Errors of the network propagate (the caller retries); an error writing the
    local file is a :class:`~llmdefinitions.io.FileWriteError` naming ``destination``.
    """
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "llmdefinitions"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:          # the part file is already complete
            return have
        raise
    with response:
        length = response.headers.get("Content-Length")
        if have and response.status == 206:
            total = have + int(length) if length is not None else None
            mode = "ab"
        else:                                  # the server ignored the range: start over
            have, mode = 0, "wb"
            total = int(length) if length is not None else None
        try:
            handle = open(part, mode)
        except OSError as exc:
            raise write_error(destination, exc) from exc
        with handle, tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=destination.name, disable=not progress) as bar:
            while True:
                chunk = response.read(chunk_size)
                if not chunk:
                    break
                try:
                    handle.write(chunk)
                except OSError as exc:
                    raise write_error(destination, exc) from exc
                bar.update(len(chunk))
    got = part.stat().st_size
    if total is not None and got != total:
        raise ConnectionError(f"conexão interrompida após {got} de {total} bytes")
    return total


def download_file(
    url: str,
    destination: PathLike,
    sha256: Optional[str] = None,
    expected_size: Optional[int] = None,
    backup_urls: Sequence[str] = (),
    retries: int = 3,
    timeout: float = 60.0,
    chunk_size: int = 1 << 16,
    progress: bool = True,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``destination`` (mirror first), verified, resumable; return the path.

    * an existing ``destination`` that passes the checks is kept (no request);
    * ``sha256``/``expected_size`` default to the known ones of the course's fixed files;
    * on a cut connection the ``.part`` file is kept and the next try resumes it;
    * a checksum mismatch removes the ``.part`` file and raises :class:`DownloadError`;
    * a full disk stops at once with a :class:`~llmdefinitions.io.FileWriteError`
      naming ``destination`` (the ``.part`` file is kept for a later resume);
    * ``progress=False`` also silences the line that reports a mirror copy.
    """
    destination = Path(destination)
    sha256 = sha256 or KNOWN_SHA256.get(url)
    expected_size = expected_size if expected_size is not None else KNOWN_SIZES.get(url)
    if destination.is_file() and check_file(destination, sha256, expected_size) is None:
        return destination
    _prepare_destination(destination)

    mirrored = find_in_mirror(url)
    if mirrored is not None:
        return _copy_from_mirror(mirrored, destination, sha256, expected_size, progress)

    part = destination.with_name(destination.name + ".part")
    errors: Dict[str, str] = {}
    for candidate in [url, *backup_urls]:
        for attempt in range(1, retries + 1):
            try:
                _fetch(candidate, part, destination, timeout, chunk_size, progress)
            except FileWriteError:
                raise
            except urllib.error.HTTPError as exc:
                errors[candidate] = f"HTTP {exc.code}"
                if exc.code in (403, 404, 410):
                    break                      # this URL will not work: try the next one
            except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, cuts
                errors[candidate] = str(getattr(exc, "reason", None) or exc or type(exc).__name__)
            else:
                problem = check_file(part, sha256, expected_size)
                if problem is None:
                    os.replace(part, destination)
                    return destination
                part.unlink(missing_ok=True)
                raise DownloadError(
                    f"O arquivo baixado de {candidate} para '{destination}' está corrompido "
                    f"({problem}); nada foi salvo. Tente de novo mais tarde."
                )
            if attempt < retries:
                time.sleep(backoff * 2 ** (attempt - 1))
    raise DownloadError(
        f"Não foi possível baixar '{destination.name}' para '{destination}' de {url} "
        f"({retries} tentativa(s) por endereço). Servidores tentados: {describe_tried(errors)}. "
        + mirror_hint([url]), url=url, tried=errors)


def describe_tried(tried: Dict[str, str]) -> str:
    """``"url1 (HTTP 404); url2 (Connection refused)"``."""
    return "; ".join(f"{address} ({reason})" for address, reason in tried.items())


def mirror_hint(urls: Sequence[str]) -> str:
    """pt-BR sentence: where the mirror must hold each of ``urls``, and how large each is."""
    root = mirror_dir()
    base = f"${MIRROR_ENV}" if root is None else str(root)
    needed = "; ".join(f"'{base}/{mirror_candidates(u)[0]}' ({describe_size(u)})" for u in urls)
    if root is None:
        return (f"Sem internet? Aponte {MIRROR_ENV} para uma pasta com uma cópia de cada arquivo, "
                f"em: {needed}.")
    return f"Também não está no espelho offline '{root}'; para usá-lo sem internet, copie para: {needed}."
