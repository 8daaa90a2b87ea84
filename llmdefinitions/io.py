"""Files: atomic UTF-8 writes, JSON reading, pt-BR text for OS errors, a lock per folder.

A file is written next to its destination under a temporary name and renamed only
when complete, so an interruption (or a full disk) never leaves a half-written file
behind. Every error of the operating system that reaches the user goes through
:func:`os_error_pt`, the one table of pt-BR reasons (``errno`` -> text).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

PathLike = Union[str, os.PathLike]

OS_ERRORS_PT = {
    errno.EACCES: "permissão negada",
    errno.EPERM: "operação não permitida",
    errno.ENOENT: "o arquivo ou a pasta não existe",
    errno.ENOTDIR: "parte do caminho é um arquivo, não uma pasta",
    errno.EISDIR: "o caminho é uma pasta, não um arquivo",
    errno.EEXIST: "já existe um arquivo com esse nome",
    errno.EROFS: "o sistema de arquivos é somente leitura",
    errno.ENOSPC: "não há espaço no disco",
    errno.EDQUOT: "a cota de disco do usuário acabou",
    errno.EFBIG: "o arquivo ficou grande demais para o sistema de arquivos",
    errno.EIO: "erro de entrada/saída no disco",
    errno.ENAMETOOLONG: "o nome do arquivo é longo demais",
}

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def os_error_pt(exc: BaseException) -> str:
    """The pt-BR reason of an ``OSError`` (by ``errno``), else its own text."""
    code = getattr(exc, "errno", None)
    if code in OS_ERRORS_PT:
        return OS_ERRORS_PT[code]
    return getattr(exc, "strerror", None) or str(exc)


class FileWriteError(OSError):
    """A file could not be written (disk full, no permission, ...); the message is pt-BR.

    An ``OSError`` (with the original ``errno``), so code that catches ``OSError``
    still catches it; ``str()`` is the pt-BR sentence alone, naming the destination.
    """

    def __init__(self, path: PathLike, code: Optional[int], message: str):
        super().__init__(code, message)
        self.path = Path(path)

    def __str__(self) -> str:
        return self.strerror


def write_error(path: PathLike, exc: BaseException) -> FileWriteError:
    """The :class:`FileWriteError` for an error met while writing ``path``.

    ``exc`` may be an ``OSError`` or an error that a library raised *because of*
    one (``torch.save`` turns a full disk into ``RuntimeError: ... unexpected pos``
    with the ``OSError`` as its context): the chain is searched for the ``OSError``.
    """
    found = _os_error_in_chain(exc)
    code = getattr(found, "errno", None)
    if code in _DISK_FULL:
        message = (f"não há espaço no disco para gravar '{path}' ({OS_ERRORS_PT[code]}); "
                   "nada foi gravado. Libere espaço ou escolha outra pasta.")
    else:
        reason = os_error_pt(found) if found is not None else str(exc)
        message = f"Não foi possível gravar '{path}': {reason}. Nada foi gravado."
    return FileWriteError(path, code, message)


def _os_error_in_chain(exc: Optional[BaseException]) -> Optional[OSError]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and not isinstance(exc, FileWriteError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def atomic_write(path: PathLike, write: Callable[[Any], None], mode: str = "w") -> Path:
    """Call ``write(file)`` on a temporary file and rename it to ``path`` when done.

    ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``. On any error the temporary file is
    removed and ``path`` is left as it was. An error of the disk (full, read-only,
    no permission), also one a library wrapped in its own exception, becomes a
    :class:`FileWriteError` naming ``path`` (never the temporary name).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise FileWriteError(path, exc.errno, (
            f"Não foi possível escrever em '{directory}': {os_error_pt(exc)}. "
            "Verifique se a pasta existe e se você tem permissão de escrita."
        )) from exc
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
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, Exception) and _os_error_in_chain(exc) is not None:
            raise write_error(path, exc) from exc
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
    """Read a UTF-8 JSON file, with a pt-BR error naming the file and the position.

    A byte-order mark (as some Windows editors write) is accepted; nesting too deep
    for Python's parser is reported as an error of the file, not as a ``RecursionError``.
    """
    path = Path(path)
    try:
        with open(path, "r", encoding="utf-8-sig") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"O arquivo '{path}' não é um JSON válido (linha {exc.lineno}, coluna {exc.colno}): {exc.msg}."
        ) from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"O arquivo '{path}' não está em UTF-8: {exc}.") from exc
    except RecursionError:
        raise ValueError(
            f"O arquivo '{path}' tem listas/objetos aninhados em profundidade grande demais "
            f"para ler (mais de ~{sys.getrecursionlimit()} níveis); não parece um arquivo de dados."
        ) from None


# --------------------------------------------------------------------------- folder lock
LOCK_NAME = ".lock"


class FolderLockedError(RuntimeError):
    """Another process holds the lock of an output folder (message in pt-BR)."""


@contextlib.contextmanager
def folder_lock(folder: PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (its file ``.lock``) while the block runs.

    Two runs on the same output folder would do the same work twice and overwrite
    each other's files; the second one fails at once with :class:`FolderLockedError`
    naming the folder and the holder's pid. The lock is the operating system's
    (``fcntl.flock`` on Linux/macOS, ``msvcrt.locking`` on Windows): it is released
    when the holder's process ends, even by a crash, so a stale ``.lock`` file left
    behind never blocks the next run. The file itself stays (it only holds the pid).
    On a file system without locks (some network shares) it warns and runs unlocked.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_NAME, "a+", encoding="utf-8")
    except OSError as exc:
        raise write_error(folder / LOCK_NAME, exc) from exc
    try:
        locked = _try_lock(handle)
        if locked is None:
            warnings.warn(f"O sistema de arquivos de '{folder}' não aceita travas: duas execuções "
                          "nesta pasta ao mesmo tempo não serão impedidas.", RuntimeWarning, stacklevel=3)
            yield folder
            return
        if not locked:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise FolderLockedError(
                f"Outra execução está usando a pasta '{folder}' (processo {holder}, que "
                f"tem o arquivo de trava '{folder / LOCK_NAME}'). Espere ela terminar ou "
                "use outra pasta de saída (--saida)."
            )
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield folder
        finally:
            _unlock(handle)
    finally:
        handle.close()


_WINDOWS_LOCK_OFFSET = 1 << 20   # Windows: lock a byte far from the pid text, which stays readable
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


def _try_lock(handle) -> Optional[bool]:
    """Take the lock without waiting; False if another process holds it, None if unsupported."""
    if sys.platform == "win32":
        import msvcrt

        handle.seek(_WINDOWS_LOCK_OFFSET)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except PermissionError:                # EACCES: another process holds the byte
            return False
        except OSError:                        # the file system does not lock
            return None
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in _NO_LOCKS:
            return None
        raise
    return True


def _unlock(handle) -> None:
    if sys.platform == "win32":
        import msvcrt

        handle.seek(_WINDOWS_LOCK_OFFSET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
