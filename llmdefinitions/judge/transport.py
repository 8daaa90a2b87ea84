"""HTTP for the judge: one request that cannot hang or fill the memory, read as JSON or as lines.

Only the standard library speaks HTTP here (``http.client``). Every request runs
under three :class:`Limits`:

* ``timeout``: the longest silence (connecting, or waiting for the next bytes);
* ``deadline``: the whole request, first byte to last. A per-read timeout alone
  never ends a reply that drips one byte per second, or a stream with no end, so a
  watchdog timer shuts the socket when the deadline passes, whatever is blocking;
* ``max_reply_bytes``: the bytes read, for a JSON body as for an NDJSON or SSE
  stream; a reply larger than that is cut and reported, never accumulated.

Failures become :mod:`.errors` classes with pt-BR messages that say what to do.
:func:`with_retries` retries the retryable ones with exponential backoff.
"""
from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, TypeVar

from .defaults import DEFAULT_DEADLINE, DEFAULT_MAX_REPLY_BYTES, DEFAULT_TIMEOUT
from .errors import (
    JudgeConnectionError, JudgeDeadlineError, JudgeError, JudgeHTTPError, JudgeProtocolError,
    JudgeReplyTooLargeError, JudgeStreamError, JudgeTimeoutError, ModelNotFoundError,
)

READ_SIZE = 65536
ERROR_BODY_BYTES = 65536   # enough of an error body to quote the server's message
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """How long and how much one request may take (see the module docstring)."""

    timeout: float = DEFAULT_TIMEOUT
    deadline: float = DEFAULT_DEADLINE
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES

    def __post_init__(self) -> None:
        for name in ("timeout", "deadline", "max_reply_bytes"):
            value = getattr(self, name)
            if not value or value <= 0:
                raise ValueError(f"O limite {name} precisa ser um número positivo; recebi {value!r}.")


def seconds_text(value: float) -> str:
    """``0.3`` -> ``"0,3 s"`` (pt-BR decimal comma, as few digits as needed)."""
    return f"{value:g}".replace(".", ",") + " s"


def bytes_text(value: int) -> str:
    """``1000000`` -> ``"1.000.000 bytes"``."""
    return f"{value:,}".replace(",", ".") + " bytes"


class Exchange:
    """One HTTP request and its reply, read under ``limits``; use as a context manager.

    Entering sends the request and reads the status; an HTTP error status raises
    a :class:`JudgeHTTPError` with the server's message. Then read the body once,
    with :meth:`read_text`, :meth:`read_json` or :meth:`lines`.
    """

    def __init__(self, method: str, url: str, payload: Optional[Mapping[str, Any]] = None, *,
                 limits: Limits = Limits(), api: str = "", headers: Optional[Mapping[str, str]] = None):
        self.method, self.url, self.payload = method, url, payload
        self.limits, self.api = limits, api
        self.headers = dict(headers or {})
        self.received = 0          # body bytes read so far
        self.lines_read = 0
        self.response: Optional[http.client.HTTPResponse] = None
        self._conn: Optional[http.client.HTTPConnection] = None
        self._sock: Optional[socket.socket] = None   # kept: http.client forgets it on "Connection: close"
        self._start = 0.0
        self._bound = "timeout"    # which limit the current socket wait stops at
        self._expired = threading.Event()
        self._closed = False
        self._timer: Optional[threading.Timer] = None

    # opening ------------------------------------------------------------------------
    def __enter__(self) -> "Exchange":
        self._start = time.monotonic()
        self._timer = threading.Timer(self.limits.deadline, self._expire)
        self._timer.daemon = True
        self._timer.start()
        try:
            self._send()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _send(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"URL inválida para o juiz: '{self.url}' (use http://host:porta/...).")
        connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = None
        headers = {"Accept": "application/json, application/x-ndjson, text/event-stream", **self.headers}
        if self.payload is not None:
            body = json.dumps(self.payload, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            self._conn = connection(parts.hostname, parts.port, timeout=self._wait_time())
            self._conn.connect()
            self._sock = self._conn.sock
            self._conn.request(self.method, path, body=body, headers=headers)
            self._sock.settimeout(self._wait_time())
            self.response = self._conn.getresponse()
        except JudgeError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise self._failure(exc, during_reply=False) from None
        if self.response.status >= 400:
            raise http_error(self.response.status, self.response.reason, self._error_body(), self.url, self.api)

    def _error_body(self) -> str:
        try:
            self._sock.settimeout(self._wait_time())
            return self.response.read(ERROR_BODY_BYTES).decode("utf-8", "replace")
        except Exception:  # the body only improves the message
            return ""

    # limits -------------------------------------------------------------------------
    def _wait_time(self) -> float:
        """Seconds the next socket operation may wait: the timeout, or less if the deadline is near."""
        remaining = self.limits.deadline - (time.monotonic() - self._start)
        if remaining <= 0 or self._expired.is_set():
            raise self._deadline_error()
        self._bound = "deadline" if remaining < self.limits.timeout else "timeout"
        return min(self.limits.timeout, remaining)

    def _expire(self) -> None:
        """Watchdog: at the deadline, shut the socket so that any blocked read returns at once."""
        self._expired.set()
        if self._sock is not None and not self._closed:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _deadline_error(self) -> JudgeDeadlineError:
        got = f"depois de receber {bytes_text(self.received)}" if self.received else "sem receber a resposta"
        return JudgeDeadlineError(
            f"O pedido a {self.url} passou do prazo de {seconds_text(self.limits.deadline)} "
            f"(limite deadline) {got}. O servidor está lento demais ou mandando uma resposta sem fim: "
            "tente de novo ou aumente o limite.")

    def _timeout_error(self) -> JudgeTimeoutError:
        if self._bound == "deadline":
            return self._deadline_error()
        return JudgeTimeoutError(
            f"O servidor em {self.url} não respondeu em {seconds_text(self.limits.timeout)} (limite timeout). "
            "Ele pode estar carregando o modelo ou sobrecarregado: tente de novo ou aumente o limite.")

    def _failure(self, exc: BaseException, during_reply: bool) -> JudgeError:
        if self._expired.is_set():
            return self._deadline_error()
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return self._timeout_error()
        if during_reply:
            return JudgeStreamError(
                f"A conexão com {self.url} caiu no meio da resposta, depois da linha {self.lines_read} "
                f"({type(exc).__name__}).")
        return network_error(exc, self.url, self.api)

    # reading ------------------------------------------------------------------------
    def read_some(self, size: int = READ_SIZE) -> bytes:
        """The next bytes of the body (``b""`` at its end), under every limit."""
        try:
            self._sock.settimeout(self._wait_time())
            data = self.response.read1(size)
        except JudgeError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise self._failure(exc, during_reply=True) from None
        if not data and self._expired.is_set():
            raise self._deadline_error()
        self.received += len(data)
        if self.received > self.limits.max_reply_bytes:
            raise self._too_large()
        return data

    def _too_large(self) -> JudgeReplyTooLargeError:
        return JudgeReplyTooLargeError(
            f"A resposta de {self.url} passou de {bytes_text(self.limits.max_reply_bytes)} "
            "(limite max_reply_bytes) e a leitura foi interrompida. A resposta de um juiz tem poucas "
            "centenas de bytes: o servidor parece mandar uma resposta sem fim. Se ela for legítima, "
            "aumente o limite.")

    def read_text(self) -> str:
        """The whole body as text (refused up front when ``Content-Length`` is over the limit)."""
        declared = self.response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_reply_bytes:
            raise self._too_large()
        chunks = []
        while True:
            data = self.read_some()
            if not data:
                return b"".join(chunks).decode("utf-8", "replace")
            chunks.append(data)

    def read_json(self) -> Dict[str, Any]:
        """The body as one JSON object."""
        return json_object(self.read_text(), 1, self.url)

    def lines(self) -> Iterator[Tuple[int, str]]:
        """Non-empty lines of the body, numbered from 1 (NDJSON and SSE are line-based)."""
        pending = bytearray()
        while True:
            data = self.read_some()
            if not data:
                break
            pending += data
            while True:
                cut = pending.find(b"\n")
                if cut < 0:
                    break
                line = pending[:cut].decode("utf-8", "replace").strip()
                del pending[:cut + 1]
                if line:
                    self.lines_read += 1
                    yield self.lines_read, line
        tail = pending.decode("utf-8", "replace").strip()
        if tail:
            self.lines_read += 1
            yield self.lines_read, tail

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self.response is not None:
            self.response.close()
        if self._conn is not None:
            self._conn.close()


def post_json(url: str, payload: Mapping[str, Any], limits: Limits, api: str,
              headers: Optional[Mapping[str, str]] = None) -> Exchange:
    """An :class:`Exchange` that POSTs ``payload`` as JSON (enter it to send)."""
    return Exchange("POST", url, payload, limits=limits, api=api, headers=headers)


def get_json(url: str, limits: Limits, api: str) -> Dict[str, Any]:
    """GET ``url`` and return its JSON object."""
    with Exchange("GET", url, limits=limits, api=api) as exchange:
        return exchange.read_json()


def json_object(text: str, number: int, url: str) -> Dict[str, Any]:
    """``text`` (line ``number`` of the reply) as a JSON object, or a :class:`JudgeProtocolError`."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise JudgeProtocolError(
            f"A linha {number} da resposta de {url} não é um JSON válido ({exc.msg}): {text[:200]!r}"
        ) from None
    if not isinstance(data, dict):
        raise JudgeProtocolError(f"A linha {number} da resposta de {url} não é um objeto JSON: {text[:200]!r}")
    return data


# --------------------------------------------------------------------------- error messages

def network_error(reason: Any, url: str, api: str) -> JudgeError:
    """A connection failure as a :class:`JudgeConnectionError` that says what to start."""
    if isinstance(reason, ConnectionRefusedError):
        what = ("O Ollama está rodando? Inicie com `ollama serve` (ou abra o aplicativo Ollama) "
                "em outro terminal" if api == "ollama" else "O servidor está rodando nessa porta? Inicie-o")
        return JudgeConnectionError(f"Conexão recusada em {url}. {what} e tente de novo.")
    return JudgeConnectionError(
        f"Não foi possível falar com {url}: {reason}. Confira o endereço e se o servidor "
        + ("(`ollama serve`) " if api == "ollama" else "") + "está rodando.")


def http_error(status: int, reason: str, body: str, url: str, api: str) -> JudgeHTTPError:
    """An HTTP error status as a :class:`JudgeHTTPError`; 404 says which model to pull."""
    detail = error_detail(body)
    if status == 404:
        model = _model_in_error(detail)
        if api == "ollama" and model:
            return ModelNotFoundError(
                f"O servidor {url} não tem o modelo '{model}' ({detail}). "
                f"Baixe-o com `ollama pull {model}` e tente de novo.", 404)
        return ModelNotFoundError(
            f"{url} respondeu 404 ({detail or 'não encontrado'}): confira a URL e o nome do modelo"
            + (" (no Ollama: `ollama pull <modelo>`)." if api == "ollama" else "."), 404)
    kind = "erro interno do servidor" if status >= 500 else "pedido recusado"
    return JudgeHTTPError(f"{url} respondeu HTTP {status} ({kind}): {detail or reason}.", status)


def error_detail(body: str) -> str:
    """The ``error`` text of an Ollama (``{"error": "..."}``) or OpenAI error body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:200]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        err = err.get("message", err)
    elif err is None and isinstance(data, dict) and "detail" in data:   # FastAPI servers (llama-cpp-python)
        err = data["detail"]
    return str(err)[:300] if err is not None else body.strip()[:200]


def _model_in_error(detail: str) -> Optional[str]:
    match = re.search(r'model "([^"]+)" not found', detail) or re.search(r"model [`']([^`']+)[`']", detail)
    return match.group(1) if match else None


# --------------------------------------------------------------------------- retries

def with_retries(call: Callable[[], T], retries: int, backoff: float) -> T:
    """Run ``call``; retry retryable :class:`JudgeError` s with exponential backoff."""
    for attempt in range(retries + 1):
        try:
            return call()
        except JudgeError as exc:
            if not exc.retryable or attempt == retries:
                if attempt:
                    exc.args = (f"{exc.args[0]} (após {attempt + 1} tentativas)",)
                raise
            time.sleep(backoff * (2 ** attempt))
    raise AssertionError("unreachable")
