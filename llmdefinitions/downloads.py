"""One downloader for everything the course fetches, and the offline mirror.

``download_file`` shows a progress bar, resumes a partial file, writes to
``<destination>.part`` and renames it only when the file is complete and verified
(size, and sha256 where known), retries, and falls back to backup URLs.

The **offline mirror**: when the environment variable ``LLMDEF_MIRROR`` names a folder,
that folder is looked at first, and a file found there is copied without any
network request. Layout of the mirror (relative paths, see ``mirror_candidates``):

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
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import List, Optional, Sequence, Union
from urllib.parse import urlparse

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
# Stanford Alpaca's 52K instructions (exercise of notebook 12); no fixed hash is known.
ALPACA_URL = "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json"
GPT2_BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2"
GPT2_BACKUP_BASE_URL = "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2"
TOKENIZER_URLS = {
    "encoder.json": f"{GPT2_BASE_URL}/encodings/main/encoder.json",
    "vocab.bpe": f"{GPT2_BASE_URL}/encodings/main/vocab.bpe",
}

# sha256 of the files whose content is fixed and known.
KNOWN_SHA256 = {
    DATASET_URL: "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
    DATASET_WITH_RESPONSE_URL: "aced320504c77c98d957316eb9f3460945256226c36b5e9752bf7d49585eb943",
    TOKENIZER_URLS["encoder.json"]: "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    TOKENIZER_URLS["vocab.bpe"]: "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


class DownloadError(RuntimeError):
    """A file could not be fetched or verified (the message is in pt-BR)."""


def mirror_dir() -> Optional[Path]:
    """The offline mirror folder named by ``LLMDEF_MIRROR``, or ``None``."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    return Path(value).expanduser() if value else None


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
    """Path of ``url``'s file in the offline mirror, or ``None``."""
    root = mirror_dir()
    if root is None:
        return None
    for rel in mirror_candidates(url):
        path = root / rel
        if path.is_file():
            return path
    return None


def sha256_of(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, sha256: Optional[str], expected_size: Optional[int]) -> Optional[str]:
    """``None`` if ``path`` passes the checks, else the reason in pt-BR."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return f"tamanho {size} bytes, esperado {expected_size}"
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256.lower():
            return f"sha256 {actual}, esperado {sha256.lower()}"
    return None


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
                      expected_size: Optional[int]) -> Path:
    problem = _verify(source, sha256, expected_size)
    if problem:
        raise DownloadError(
            f"O arquivo do espelho offline '{source}' não confere ({problem}). "
            f"Substitua-o por uma cópia íntegra ou remova-o do espelho ({MIRROR_ENV})."
        )
    part = destination.with_name(destination.name + ".part")
    shutil.copyfile(source, part)
    os.replace(part, destination)
    return destination


def _fetch(url: str, part: Path, timeout: float, chunk_size: int, progress: bool,
           desc: str) -> Optional[int]:
    """Append ``url``'s bytes to ``part`` (resuming it); return the total size if known."""
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
        with open(part, mode) as handle, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=desc, disable=not progress,
        ) as bar:
            while True:
                chunk = response.read(chunk_size)
                if not chunk:
                    break
                handle.write(chunk)
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
    * ``sha256`` defaults to the known hash of the course's fixed files;
    * on a cut connection the ``.part`` file is kept and the next try resumes it;
    * a checksum mismatch removes the ``.part`` file and raises :class:`DownloadError`.
    """
    destination = Path(destination)
    sha256 = sha256 or KNOWN_SHA256.get(url)
    if destination.is_file() and _verify(destination, sha256, expected_size) is None:
        return destination
    _prepare_destination(destination)

    mirrored = find_in_mirror(url)
    if mirrored is not None:
        return _copy_from_mirror(mirrored, destination, sha256, expected_size)

    part = destination.with_name(destination.name + ".part")
    errors: List[str] = []
    for candidate in [url, *backup_urls]:
        for attempt in range(1, retries + 1):
            try:
                _fetch(candidate, part, timeout, chunk_size, progress, destination.name)
            except urllib.error.HTTPError as exc:
                errors.append(f"{candidate}: HTTP {exc.code}")
                if exc.code in (403, 404, 410):
                    break                      # this URL will not work: try the next one
            except (OSError, ConnectionError) as exc:  # URLError, timeouts, cut connections
                errors.append(f"{candidate}: {getattr(exc, 'reason', exc)}")
            else:
                problem = _verify(part, sha256, expected_size)
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
    hint = (f" Sem internet? Aponte {MIRROR_ENV} para uma pasta com uma cópia do arquivo."
            if mirror_dir() is None else
            f" O arquivo também não está no espelho offline '{mirror_dir()}'"
            f" (procurado em: {', '.join(mirror_candidates(url))}).")
    raise DownloadError(
        f"Não foi possível baixar {url} para '{destination}' após {retries} tentativa(s) "
        f"por endereço. Erros: {'; '.join(errors[-3:])}.{hint}"
    )
