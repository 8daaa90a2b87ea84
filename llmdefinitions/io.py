"""Atomic, UTF-8 file writing shared by every module that saves something.

A file is written next to its destination under a temporary name and renamed only
when complete, so an interruption never leaves a half-written file behind.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[Any], None], mode: str = "w") -> Path:
    """Call ``write(file)`` on a temporary file and rename it to ``path`` when done.

    ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``. On any error the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OSError(
            f"Não foi possível escrever em '{directory}': {exc.strerror or exc}. "
            "Verifique se a pasta existe e se você tem permissão de escrita."
        ) from exc
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)   # mkstemp makes 0600; give the usual permissions
        kwargs = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` as UTF-8, atomically."""
    return atomic_write(path, lambda f: f.write(text))


def write_json_atomic(path: PathLike, data: Any, indent: int = 4) -> Path:
    """Write ``data`` as JSON (UTF-8, ``ensure_ascii=False``), atomically.

    The data is serialized before anything touches the disk, so a value that
    JSON cannot encode raises without creating or changing any file.
    """
    text = json.dumps(data, indent=indent, ensure_ascii=False) + "\n"
    return write_text_atomic(path, text)


def read_json(path: PathLike) -> Any:
    """Read a UTF-8 JSON file, with a pt-BR error naming the file and the position."""
    path = Path(path)
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"O arquivo '{path}' não é um JSON válido (linha {exc.lineno}, coluna {exc.colno}): {exc.msg}."
        ) from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"O arquivo '{path}' não está em UTF-8: {exc}.") from exc


_OS_ERRORS_PT = {
    errno.EACCES: "permissão negada",
    errno.EPERM: "operação não permitida",
    errno.ENOTDIR: "parte do caminho é um arquivo, não uma pasta",
    errno.EEXIST: "já existe um arquivo com esse nome",
    errno.EROFS: "o sistema de arquivos é somente leitura",
    errno.ENOSPC: "não há espaço no disco",
}


def describe_os_error(exc: OSError) -> str:
    """The reason of an ``OSError`` in pt-BR (e.g. ``"não há espaço no disco"``)."""
    return _OS_ERRORS_PT.get(exc.errno, exc.strerror or str(exc))
