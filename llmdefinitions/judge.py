"""LLM-as-a-judge (section 7 of the seed): a bigger LLM scores our model's responses.

The seed's three functions are here with their signatures (``check_if_running``,
``query_model``, ``generate_model_scores``), made safe for a class of 30 students:

* **Servers.** One client abstraction, :class:`JudgeClient`, with three routes:
  Ollama's ``/api/chat`` (streaming NDJSON, the seed's route),
  the OpenAI-compatible ``/v1/chat/completions`` (llama.cpp's server, vLLM,
  LM Studio, Ollama's ``/v1``; plain JSON or SSE streaming), and an in-process
  ``llama_cpp.Llama`` for machines without a server (e.g. Colab).
  :func:`make_client` picks the route from the URL or from ``api=``.
* **Errors.** Only the standard library speaks HTTP (``urllib``). Failures raise
  :class:`JudgeError` subclasses with pt-BR messages that say what to do
  (``ollama serve``, ``ollama pull <model>``, which line was malformed).
  Connection errors, timeouts, 5xx and dropped streams are retried with
  exponential backoff; 404 and malformed replies are not.
* **Nothing dropped.** The seed skipped replies it could not turn into an int,
  so the score list silently lost its alignment with the items (the reference
  ``llama3-8b-model-2-response.json`` has 99 scores for 100 items).
  Here every item ends as a :class:`ScoreResult` holding a score *or* the
  reason there is none, plus the judge's raw reply. :func:`score_responses`
  returns those results; :func:`generate_model_scores` is a thin wrapper that
  returns a :class:`ScoreList` (a list of ints, like the seed) that also carries
  ``.results`` and ``.failures`` and warns when some item has no score.
* **Runs.** A few requests at once (results in input order), a JSONL reply cache
  so an interrupted run resumes without asking again, and a tqdm progress bar.
* **Statistics.** :func:`summarize_scores`, :func:`compare_scores` (two models,
  same items), :func:`judge_agreement` (two judges; refuses misaligned lists)
  and :func:`align_by_index`. The histogram is ``plotting.plot_score_histogram``.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import statistics
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import (
    Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union,
)

from .io import PathLike, read_json, write_json_atomic
from .prompts import format_input

DEFAULT_MODEL = "llama3"
DEFAULT_URL = "http://localhost:11434/api/chat"
OLLAMA_CHAT_PATH = "/api/chat"
OPENAI_CHAT_PATH = "/v1/chat/completions"
# As in the seed: required for deterministic replies.
DEFAULT_OPTIONS: Dict[str, Any] = {"seed": 123, "temperature": 0, "num_ctx": 2048}
DEFAULT_TIMEOUT = 120.0  # seconds per network operation; the first call may load the model
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF = 1.0  # seconds; doubled after each failed attempt
API_NAMES = ("ollama", "openai", "llama_cpp")


# --------------------------------------------------------------------------- errors

class JudgeError(RuntimeError):
    """Base class of the judge's errors; ``retryable`` says whether trying again may help."""

    retryable = False


class JudgeConnectionError(JudgeError):
    """The server could not be reached (refused, unknown host, reset before replying)."""

    retryable = True


class JudgeTimeoutError(JudgeError):
    """The server did not answer within ``timeout`` seconds."""

    retryable = True


class JudgeServerError(JudgeError):
    """The server answered with an error message."""


class JudgeHTTPError(JudgeServerError):
    """An HTTP error status; 5xx and 429 are retryable, other 4xx are not."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.status >= 500 or self.status == 429


class ModelNotFoundError(JudgeHTTPError):
    """404: the server does not have the model (Ollama: not pulled yet)."""


class JudgeProtocolError(JudgeError):
    """The reply does not follow the protocol (malformed line, missing field)."""


class JudgeStreamError(JudgeProtocolError):
    """The stream ended before its last message (connection dropped mid-reply)."""

    retryable = True


class JudgeDependencyError(JudgeError, ImportError):
    """An optional package (``llama-cpp-python``, ``scipy``) is missing."""


# Errors that would repeat for every item: scoring stops instead of recording them.
FATAL_ERRORS = (JudgeConnectionError, ModelNotFoundError, JudgeDependencyError)


# --------------------------------------------------------------------------- server checks

def check_if_running(process_name: str) -> bool:
    """True if a local process whose name contains ``process_name`` is running (as in the seed).

    Only sees this machine: an Ollama in a container or on another host is
    invisible here; use :func:`check_server` for that.
    """
    import psutil

    for proc in psutil.process_iter(["name"]):
        name = proc.info.get("name") or ""
        if process_name in name:
            return True
    return False


@dataclass
class ServerStatus:
    """What :func:`check_server` found; ``message`` says in pt-BR what to do next."""

    url: str
    api: str
    reachable: bool
    model: str
    model_available: Optional[bool] = None
    version: Optional[str] = None
    models: List[str] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        """Reachable, and the model is not known to be missing."""
        return self.reachable and self.model_available is not False

    def __bool__(self) -> bool:
        return self.ok


def check_server(
    url: str = DEFAULT_URL,
    model: str = DEFAULT_MODEL,
    *,
    api: Optional[str] = None,
    timeout: float = 5.0,
    raise_error: bool = False,
) -> ServerStatus:
    """Check over HTTP that the judge's server answers and has ``model``.

    Works for a local, remote or container server. Ollama: ``/api/version`` and
    ``/api/tags``; OpenAI-compatible: ``/v1/models`` (servers such as llama.cpp
    ignore the model name, so a model missing from that list is only a note).
    Returns a :class:`ServerStatus`; raises :class:`JudgeError` only if
    ``raise_error`` and the check failed.
    """
    api = api or detect_api(url)
    if api == "llama_cpp":
        raise ValueError("check_server verifica servidores HTTP; api='llama_cpp' roda no próprio processo.")
    base = server_base_url(url)
    status = ServerStatus(url=url, api=api, reachable=False, model=model)
    try:
        if api == "ollama":
            _check_ollama(base, model, timeout, status)
        else:
            _check_openai(base, model, timeout, status)
    except JudgeError as exc:
        status.message = str(exc) + _process_hint(api)
    if raise_error and not status.ok:
        raise JudgeConnectionError(status.message) if not status.reachable else ModelNotFoundError(status.message, 404)
    return status


def _check_ollama(base: str, model: str, timeout: float, status: ServerStatus) -> None:
    version = _get_json(base + "/api/version", timeout, api="ollama")
    status.reachable = True
    status.version = str(version.get("version", "?"))
    tags = _get_json(base + "/api/tags", timeout, api="ollama")
    status.models = [m.get("name") or m.get("model", "") for m in tags.get("models", [])]
    status.model_available = _ollama_has_model(status.models, model)
    if status.model_available:
        status.message = f"Ollama {status.version} respondendo em {base}; modelo '{model}' disponível."
    else:
        listed = ", ".join(status.models) or "nenhum"
        status.message = (
            f"Ollama {status.version} respondendo em {base}, mas o modelo '{model}' não foi baixado "
            f"(modelos presentes: {listed}). Rode `ollama pull {model}` e tente de novo."
        )


def _ollama_has_model(names: Sequence[str], model: str) -> bool:
    """Ollama's rule: a name without a tag means ``:latest``."""
    wanted = model if ":" in model else model + ":latest"
    return any(n == model or n == wanted for n in names)


def _check_openai(base: str, model: str, timeout: float, status: ServerStatus) -> None:
    listing = _get_json(base + "/v1/models", timeout, api="openai")
    status.reachable = True
    status.models = [m.get("id", "") for m in listing.get("data", [])]
    status.model_available = True if model in status.models else None
    status.message = f"Servidor compatível com a OpenAI respondendo em {base}."
    if status.model_available is None:
        status.message += (
            f" O modelo '{model}' não está na lista ({', '.join(status.models) or 'vazia'}); "
            "servidores como o llama.cpp ignoram o nome, outros (vLLM) recusam o pedido."
        )


def _process_hint(api: str) -> str:
    if api != "ollama":
        return ""
    try:
        running = check_if_running("ollama")
    except Exception:  # psutil missing or denied: the hint is optional
        return ""
    if running:
        return (" Há um processo 'ollama' rodando nesta máquina: confira a porta/host "
                "(variável OLLAMA_HOST) na URL.")
    return ""


# --------------------------------------------------------------------------- HTTP helpers

def detect_api(url: str) -> str:
    """``"ollama"`` or ``"openai"`` from the URL path; a bare host means Ollama."""
    path = urllib.parse.urlsplit(url).path.rstrip("/")
    if path.endswith("/chat/completions") or path.endswith("/v1"):
        return "openai"
    if path.endswith(OLLAMA_CHAT_PATH) or path in ("", "/api"):
        return "ollama"
    raise ValueError(
        f"Não sei qual protocolo a URL '{url}' usa. Use .../api/chat (Ollama) ou "
        f".../v1/chat/completions (OpenAI: llama.cpp, vLLM, LM Studio), ou passe api='ollama'/'openai'."
    )


def server_base_url(url: str) -> str:
    """``scheme://host:port`` plus any prefix before ``/api`` or ``/v1``."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path
    for marker in ("/api/", "/v1/"):
        if marker in path + "/":
            path = (path + "/")[: (path + "/").index(marker)]
            break
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path.rstrip("/"), "", ""))


def _chat_url(url: str, api: str) -> str:
    """``url`` itself, or the route's chat path appended when ``url`` is a bare server."""
    path = urllib.parse.urlsplit(url).path.rstrip("/")
    if api == "ollama" and path in ("", "/api"):
        return server_base_url(url) + OLLAMA_CHAT_PATH
    if api == "openai" and (path in ("", "/v1")):
        return server_base_url(url) + OPENAI_CHAT_PATH
    return url


def _open(request: urllib.request.Request, timeout: float, api: str):
    """``urlopen`` with every failure turned into a :class:`JudgeError` in pt-BR."""
    url = request.full_url
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise _http_error(exc, url, api) from None
    except urllib.error.URLError as exc:
        raise _network_error(exc.reason, url, api, timeout) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _network_error(exc, url, api, timeout) from None


def _network_error(reason: Any, url: str, api: str, timeout: float) -> JudgeError:
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return JudgeTimeoutError(
            f"O servidor em {url} não respondeu em {timeout:g} s. Ele pode estar carregando o "
            "modelo ou sobrecarregado: aumente `timeout=` ou tente de novo."
        )
    if isinstance(reason, ConnectionRefusedError):
        what = ("O Ollama está rodando? Inicie com `ollama serve` (ou abra o aplicativo Ollama) "
                "em outro terminal" if api == "ollama" else "O servidor está rodando nessa porta? Inicie-o")
        return JudgeConnectionError(f"Conexão recusada em {url}. {what} e tente de novo.")
    return JudgeConnectionError(
        f"Não foi possível falar com {url}: {reason}. Confira o endereço e se o servidor "
        + ("(`ollama serve`) " if api == "ollama" else "") + "está rodando."
    )


def _http_error(exc: urllib.error.HTTPError, url: str, api: str) -> JudgeHTTPError:
    try:
        body = exc.read().decode("utf-8", "replace")
    except Exception:  # the body is only used to improve the message
        body = ""
    detail = _error_detail(body)
    if exc.code == 404:
        model = _model_in_error(detail)
        if api == "ollama" and model:
            return ModelNotFoundError(
                f"O servidor {url} não tem o modelo '{model}' ({detail}). "
                f"Baixe-o com `ollama pull {model}` e tente de novo.", 404)
        return ModelNotFoundError(
            f"{url} respondeu 404 ({detail or 'não encontrado'}): confira a URL e o nome do modelo"
            + (" (no Ollama: `ollama pull <modelo>`)." if api == "ollama" else "."), 404)
    kind = "erro interno do servidor" if exc.code >= 500 else "pedido recusado"
    return JudgeHTTPError(f"{url} respondeu HTTP {exc.code} ({kind}): {detail or exc.reason}.", exc.code)


def _error_detail(body: str) -> str:
    """The ``error`` text of an Ollama (``{"error": "..."}``) or OpenAI error body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:200]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("message", err))
    return str(err) if err is not None else body.strip()[:200]


def _model_in_error(detail: str) -> Optional[str]:
    match = re.search(r'model "([^"]+)" not found', detail) or re.search(r"model [`']([^`']+)[`']", detail)
    return match.group(1) if match else None


def _get_json(url: str, timeout: float, api: str) -> Dict[str, Any]:
    request = urllib.request.Request(url, method="GET")
    with _open(request, timeout, api) as response:
        body = _read_body(response, url, timeout)
    try:
        return json.loads(body)
    except ValueError:
        raise JudgeProtocolError(f"{url} não devolveu JSON: {body[:200]!r}") from None


def _post(url: str, payload: Mapping[str, Any], timeout: float, api: str,
          headers: Optional[Mapping[str, str]] = None):
    request = urllib.request.Request(
        url, data=json.dumps(payload, ensure_ascii=False).encode("utf-8"), method="POST")
    request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    return _open(request, timeout, api)


def _read_body(response, url: str, timeout: float) -> str:
    try:
        return response.read().decode("utf-8")
    except (socket.timeout, TimeoutError):
        raise _network_error(TimeoutError(), url, "", timeout) from None
    except (http.client.IncompleteRead, ConnectionError, OSError) as exc:
        raise JudgeStreamError(f"A conexão com {url} caiu no meio da resposta ({exc!r}).") from None


def _iter_lines(response, url: str, timeout: float) -> Iterator[Tuple[int, str]]:
    """Non-empty lines of a streamed reply, numbered from 1; network failures become JudgeErrors."""
    number = 0
    while True:
        try:
            raw = response.readline()
        except (socket.timeout, TimeoutError):
            raise _network_error(TimeoutError(), url, "", timeout) from None
        except (http.client.IncompleteRead, ConnectionError, OSError, http.client.HTTPException) as exc:
            raise JudgeStreamError(
                f"A conexão com {url} caiu no meio da resposta, depois da linha {number} ({type(exc).__name__})."
            ) from None
        if not raw:
            return
        line = raw.decode("utf-8", "replace").strip()
        if line:
            number += 1
            yield number, line


def _json_line(number: int, line: str, url: str) -> Dict[str, Any]:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise JudgeProtocolError(
            f"A linha {number} da resposta de {url} não é um JSON válido ({exc.msg}): {line[:200]!r}"
        ) from None
    if not isinstance(data, dict):
        raise JudgeProtocolError(f"A linha {number} da resposta de {url} não é um objeto JSON: {line[:200]!r}")
    return data


def _with_retries(call: Callable[[], str], retries: int, backoff: float) -> str:
    """Run ``call``; retry retryable JudgeErrors with exponential backoff."""
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


# --------------------------------------------------------------------------- clients

class JudgeClient:
    """Sends one prompt as a user message and returns the reply text.

    Subclasses implement :meth:`_chat_once`; :meth:`chat` adds the retries.
    ``model`` is part of the cache key of :func:`score_responses`.
    """

    api = "base"

    def __init__(self, model: str, *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF):
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def chat(self, prompt: str) -> str:
        """The judge's reply to ``prompt`` (retrying transient failures)."""
        return _with_retries(lambda: self._chat_once(prompt), self.retries, self.backoff)

    def _chat_once(self, prompt: str) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"


class OllamaClient(JudgeClient):
    """Ollama's native ``POST /api/chat`` (the seed's route); streams NDJSON by default."""

    api = "ollama"

    def __init__(self, model: str = DEFAULT_MODEL, url: str = DEFAULT_URL, *,
                 options: Optional[Mapping[str, Any]] = None, stream: bool = True, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.url = _chat_url(url, "ollama")
        self.options = {**DEFAULT_OPTIONS, **(options or {})}
        self.stream = stream

    def _chat_once(self, prompt: str) -> str:
        payload = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                   "options": self.options, "stream": self.stream}
        with _post(self.url, payload, self.timeout, self.api) as response:
            if not self.stream:
                data = _json_line(1, _read_body(response, self.url, self.timeout), self.url)
                return self._content(data, 1)
            return self._read_stream(response)

    def _read_stream(self, response) -> str:
        parts: List[str] = []
        for number, line in _iter_lines(response, self.url, self.timeout):
            data = _json_line(number, line, self.url)
            parts.append(self._content(data, number))
            if data.get("done"):
                return "".join(parts)
        raise JudgeStreamError(
            f"A resposta de {self.url} terminou sem a mensagem final (\"done\": true): "
            "a conexão caiu no meio do streaming."
        )

    def _content(self, data: Mapping[str, Any], number: int) -> str:
        if "error" in data:
            raise JudgeServerError(f"O servidor {self.url} informou um erro (linha {number}): {data['error']}")
        message = data.get("message")
        if message is None and data.get("done"):
            return ""  # final line of some versions carries only statistics
        if not isinstance(message, dict) or not isinstance(message.get("content", ""), str):
            raise JudgeProtocolError(
                f"A linha {number} da resposta de {self.url} não tem o campo message.content: {str(data)[:200]}")
        return message.get("content", "")


class OpenAIClient(JudgeClient):
    """OpenAI-compatible ``POST /v1/chat/completions``: llama.cpp, vLLM, LM Studio, Ollama ``/v1``.

    ``options`` uses Ollama's names where they exist: ``seed`` and ``temperature``
    are sent as is, ``num_predict`` becomes ``max_tokens``, ``num_ctx`` is dropped
    (the server's context is fixed at start-up); other keys go into the request.
    """

    api = "openai"

    def __init__(self, model: str = DEFAULT_MODEL, url: str = "http://localhost:8080/v1/chat/completions", *,
                 options: Optional[Mapping[str, Any]] = None, stream: bool = False,
                 api_key: Optional[str] = None, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.url = _chat_url(url, "openai")
        self.params = _openai_params({**DEFAULT_OPTIONS, **(options or {})})
        self.stream = stream
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _chat_once(self, prompt: str) -> str:
        payload = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                   **self.params, "stream": self.stream}
        with _post(self.url, payload, self.timeout, self.api, self.headers) as response:
            if self.stream:
                return self._read_sse(response)
            data = _json_line(1, _read_body(response, self.url, self.timeout), self.url)
            return self._choice(data, 1, "message")

    def _read_sse(self, response) -> str:
        parts: List[str] = []
        finished = False
        for number, line in _iter_lines(response, self.url, self.timeout):
            if line.startswith(":") or not line.startswith("data:"):
                continue  # SSE comments and other fields (event:, id:)
            data_text = line[len("data:"):].strip()
            if data_text == "[DONE]":
                break
            data = _json_line(number, data_text, self.url)
            parts.append(self._choice(data, number, "delta"))
            finished = finished or bool((data.get("choices") or [{}])[0].get("finish_reason"))
        else:
            if finished:  # some servers end after finish_reason without "[DONE]"
                return "".join(parts)
            raise JudgeStreamError(
                f"O streaming de {self.url} terminou sem 'data: [DONE]': a conexão caiu no meio da resposta.")
        if not finished:
            # llama-cpp-python's server does this to a stream when another request arrives.
            raise JudgeStreamError(
                f"O streaming de {self.url} terminou com [DONE] sem finish_reason: o servidor interrompeu a "
                "geração. Com o servidor do llama-cpp-python use max_workers=1, stream=False ou inicie-o "
                "com --interrupt_requests False.")
        return "".join(parts)

    def _choice(self, data: Mapping[str, Any], number: int, key: str) -> str:
        if "error" in data:
            raise JudgeServerError(f"O servidor {self.url} informou um erro: {_error_detail(json.dumps(data))}")
        try:
            content = data["choices"][0][key].get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise JudgeProtocolError(
                f"A linha {number} da resposta de {self.url} não tem choices[0].{key}.content: {str(data)[:200]}"
            ) from None
        return content or ""


def _openai_params(options: Mapping[str, Any]) -> Dict[str, Any]:
    params = {k: v for k, v in options.items() if k not in ("num_ctx", "num_predict")}
    if "num_predict" in options:
        params["max_tokens"] = options["num_predict"]
    return params


class LlamaCppClient(JudgeClient):
    """In-process judge with ``llama_cpp.Llama`` (no server: e.g. Colab without Ollama).

    ``model_path`` is a GGUF file. Calls are serialized (a ``Llama`` object is not
    thread-safe), so ``max_workers`` above 1 gains nothing here.
    """

    api = "llama_cpp"

    def __init__(self, model_path: PathLike, *, options: Optional[Mapping[str, Any]] = None,
                 verbose: bool = False, **kwargs: Any):
        kwargs.setdefault("retries", 0)
        super().__init__(Path(model_path).name, **kwargs)
        self.model_path = Path(model_path)
        opts = {**DEFAULT_OPTIONS, **(options or {})}
        self.n_ctx = int(opts.pop("num_ctx"))
        self.params = _openai_params(opts)
        self._lock = threading.Lock()
        self._llm = self._load(verbose)

    def _load(self, verbose: bool):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise JudgeDependencyError(
                "O juiz local precisa do pacote llama-cpp-python: rode `pip install llama-cpp-python` "
                "(ou use um servidor: Ollama ou llama.cpp)."
            ) from None
        if not self.model_path.is_file():
            raise FileNotFoundError(f"Arquivo de modelo GGUF não encontrado: '{self.model_path}'.")
        return Llama(model_path=str(self.model_path), n_ctx=self.n_ctx,
                     seed=self.params.get("seed", 123), verbose=verbose)

    def _chat_once(self, prompt: str) -> str:
        with self._lock:
            out = self._llm.create_chat_completion(
                messages=[{"role": "user", "content": prompt}], **self.params)
        return out["choices"][0]["message"].get("content") or ""


def make_client(
    model: str = DEFAULT_MODEL,
    url: str = DEFAULT_URL,
    *,
    api: Optional[str] = None,
    **kwargs: Any,
) -> JudgeClient:
    """A :class:`JudgeClient` for ``url``; ``api`` is ``"ollama"``, ``"openai"`` or ``"llama_cpp"``.

    Without ``api`` the route comes from the URL (``/api/chat`` or a bare host:
    Ollama; ``/v1/chat/completions``: OpenAI). For ``"llama_cpp"`` pass
    ``model_path=`` (a GGUF file). Other keywords go to the client (``timeout``,
    ``retries``, ``backoff``, ``options``, ``stream``, ``api_key``).
    """
    api = api or detect_api(url)
    if api == "ollama":
        return OllamaClient(model, url, **kwargs)
    if api == "openai":
        return OpenAIClient(model, url, **kwargs)
    if api == "llama_cpp":
        if "model_path" not in kwargs:
            raise ValueError("api='llama_cpp' precisa de model_path= (o caminho de um arquivo .gguf).")
        return LlamaCppClient(kwargs.pop("model_path"), **kwargs)
    raise ValueError(f"api desconhecida: {api!r}. Use uma destas: {', '.join(API_NAMES)}.")


def query_model(
    prompt: str,
    model: str = DEFAULT_MODEL,
    url: str = DEFAULT_URL,
    *,
    client: Optional[JudgeClient] = None,
    **kwargs: Any,
) -> str:
    """The judge's reply to ``prompt``, as in the seed (Ollama ``/api/chat``, streaming).

    Keyword-only extras: ``client`` (reuse a :class:`JudgeClient`) or anything
    :func:`make_client` takes (``api``, ``timeout``, ``retries``, ``backoff``,
    ``options``, ``stream``). Raises a :class:`JudgeError` with a pt-BR message.
    """
    client = client or make_client(model, url, **kwargs)
    return client.chat(prompt)


# --------------------------------------------------------------------------- parsing

_NUMBER = r"[-+−]?\d+(?:[.,]\d+)?"
_SCORE_LABEL = re.compile(
    r"\b(?:score|rating|grade|nota|pontua[çc][ãa]o)\b[^\d\n+−-]{0,30}?(" + _NUMBER + r")", re.IGNORECASE)
_FRACTION = re.compile(r"(" + _NUMBER + r")\s*(?:/\s*100\b|out of 100\b|de 100\b)", re.IGNORECASE)
_BARE = re.compile(r"^(" + _NUMBER + r")\s*(?:/\s*100|out of 100|de 100|%)?$", re.IGNORECASE)


def parse_score(text: Optional[str]) -> Optional[int]:
    """The 0–100 score in a judge's reply, or ``None`` when there is no single valid one.

    Rules (each one is tested):

    1. A reply (or its first line) that is just a number is that number:
       ``"85"``, ``"85."``, ``"**85**"``, ``"85/100"``, ``"85 out of 100"``, ``"85%"``,
       ``"85\\n\\nThe response is..."``.
    2. Otherwise the score is a number after a label (``Score: 85``,
       ``score this response 85``, ``Rating = 85``, ``Nota: 85``) or a number
       written as a fraction of 100 anywhere (``I give it 85/100``).
    3. ``85.0`` counts as 85; a non-integer such as ``85.5`` is rejected (rounding
       would invent a score the judge did not give).
    4. Outside 0–100 (``150``, ``-5``) is rejected.
    5. Several *different* candidate scores (``Score: 80 ... Score: 90``) are
       rejected as ambiguous; the same score repeated is fine.
    6. Empty text, or text with no score in one of the forms above (e.g. the
       judge rewrote the answer, or loose numbers like ``80 or 90``) gives ``None``.

    :func:`explain_score` gives the same result with the reason in pt-BR.
    """
    return explain_score(text)[0]


def explain_score(text: Optional[str]) -> Tuple[Optional[int], Optional[str]]:
    """``(score, None)`` or ``(None, reason)`` following the rules of :func:`parse_score`."""
    cleaned = _clean_reply(text or "")
    if not cleaned:
        return None, "resposta do juiz vazia"
    candidates = _score_candidates(cleaned)
    if not candidates:
        loose = re.findall(_NUMBER, cleaned)
        extra = f" (números soltos: {', '.join(loose[:5])})" if loose else ""
        return None, "a resposta do juiz não contém uma nota reconhecível" + extra
    values = {_to_number(c) for c in candidates}
    if len(values) > 1:
        shown = ", ".join(_fmt(v) for v in sorted(values))
        return None, f"a resposta do juiz tem várias notas diferentes ({shown})"
    value = values.pop()
    if value != int(value):
        return None, f"a nota {_fmt(value)} não é um número inteiro"
    if not 0 <= value <= 100:
        return None, f"a nota {_fmt(value)} está fora da escala 0–100"
    return int(value), None


def _clean_reply(text: str) -> str:
    text = text.strip().strip("`\"'*#_ \t\n")
    return text.rstrip(".!").strip()


def _score_candidates(text: str) -> List[str]:
    first_line = _clean_reply(text.splitlines()[0])
    for candidate in (text, first_line):
        match = _BARE.match(candidate)
        if match:
            return [match.group(1)]
    return [m.group(1) for m in _SCORE_LABEL.finditer(text)] + [m.group(1) for m in _FRACTION.finditer(text)]


def _to_number(text: str) -> float:
    return float(text.replace("−", "-").replace(",", "."))


def _fmt(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def parse_rubric(text: Optional[str], low: int = 1, high: int = 5) -> Optional[Tuple[int, str]]:
    """``(score, feedback)`` from a rubric reply, or ``None``.

    Accepts a JSON object anywhere in the reply (also inside a ```json fence)
    with ``score`` (int, or integral float/str) and optional ``feedback``;
    or text ``Score: N`` followed by ``Feedback: ...``. The score must lie in
    ``low``–``high`` (1–5).
    """
    return explain_rubric(text, low, high)[0]


def explain_rubric(text: Optional[str], low: int = 1, high: int = 5
                   ) -> Tuple[Optional[Tuple[int, str]], Optional[str]]:
    """``((score, feedback), None)`` or ``(None, reason)`` as in :func:`parse_rubric`."""
    text = (text or "").strip()
    if not text:
        return None, "resposta do juiz vazia"
    found = _rubric_from_json(text) or _rubric_from_text(text)
    if found is None:
        return None, "a resposta do juiz não tem 'score' em JSON nem 'Score: N'"
    raw, feedback = found
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None, f"a nota {raw!r} não é um número"
    if value != int(value) or not low <= value <= high:
        return None, f"a nota {_fmt(value)} não é um inteiro de {low} a {high}"
    return (int(value), feedback.strip()), None


def _rubric_from_json(text: str) -> Optional[Tuple[Any, str]]:
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(obj, dict):
            lowered = {str(k).lower(): v for k, v in obj.items()}
            if "score" in lowered:
                feedback = lowered.get("feedback", lowered.get("explanation", ""))
                return lowered["score"], str(feedback or "")
    return None


def _rubric_from_text(text: str) -> Optional[Tuple[Any, str]]:
    score = re.search(r"\bscore\s*[:=]\s*(" + _NUMBER + r")(?:\s*/\s*\d+)?", text, re.IGNORECASE)
    if not score:
        return None
    feedback = re.search(r"\bfeedback\s*[:=]\s*(.*)", text, re.IGNORECASE | re.DOTALL)
    return score.group(1), feedback.group(1) if feedback else ""


# --------------------------------------------------------------------------- prompts

def build_score_prompt(entry: Mapping[str, Any], json_key: str) -> str:
    """The seed's 0–100 scoring prompt for ``entry`` and its response under ``json_key``."""
    return (
        f"Given the input `{format_input(entry)}` "
        f"and correct output `{entry['output']}`, "
        f"score the model response `{entry[json_key]}`"
        f" on a scale from 0 to 100, where 100 is the best score. "
        f"Respond with the integer number only."
    )


def build_rubric_prompt(entry: Mapping[str, Any], json_key: str) -> str:
    """A 1–5 rubric prompt asking for a JSON object with ``score`` and ``feedback``."""
    return (
        f"You are grading the answer of a small language model.\n"
        f"Instruction and input:\n`{format_input(entry)}`\n"
        f"Reference answer: `{entry['output']}`\n"
        f"Model response: `{entry[json_key]}`\n\n"
        "Rate the model response on a scale from 1 to 5:\n"
        "5 = correct and complete; 4 = correct with minor issues; 3 = partly correct;\n"
        "2 = mostly wrong but related; 1 = wrong, empty or irrelevant.\n"
        'Respond with a JSON object only, e.g. {"score": 4, "feedback": "one short sentence"}.'
    )


# --------------------------------------------------------------------------- cache

def cache_key(model: str, prompt: str) -> str:
    """SHA-256 of model and prompt: the key of a cached reply."""
    return hashlib.sha256(f"{model}\n{prompt}".encode("utf-8")).hexdigest()


class ReplyCache:
    """Append-only JSONL file of judge replies (one ``{"key", "model", "reply"}`` per line).

    Only successful replies are stored (failed items are asked again next time),
    and the raw reply is stored, not the score, so a change in the parsing rules
    applies to a resumed run. Unreadable lines (e.g. a last line cut short by an
    interruption) are skipped and counted in ``skipped_lines``.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.skipped_lines = 0
        self._replies: Dict[str, str] = {}
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    self._replies[record["key"]] = record["reply"]
                except (ValueError, KeyError, TypeError):
                    self.skipped_lines += line.strip() != ""

    def get(self, key: str) -> Optional[str]:
        return self._replies.get(key)

    def __len__(self) -> int:
        return len(self._replies)

    def put(self, key: str, model: str, reply: str) -> None:
        """Append one reply; a cut-off last line is closed with a newline first."""
        line = json.dumps({"key": key, "model": model, "reply": reply}, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as handle:
                if handle.tell() > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        handle.write(b"\n")
                handle.write(line.encode("utf-8"))
            self._replies[key] = reply


# --------------------------------------------------------------------------- scoring

@dataclass
class ScoreResult:
    """One item's outcome: ``score`` or the ``reason`` there is none, and the judge's ``reply``.

    ``status``: ``"scored"``, ``"empty_response"`` (scored without asking, see
    :func:`score_responses`), ``"unparsable"`` (reply without a valid score),
    ``"error"`` (the request failed) or ``"missing_field"``.
    """

    index: int
    score: Optional[int]
    status: str
    reason: Optional[str] = None
    reply: Optional[str] = None
    feedback: Optional[str] = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.score is not None


class ScoreList(list):
    """The seed's list of int scores, plus ``results`` (one per item) and ``failures``.

    ``len(scores)`` counts scored items only, as in the seed; ``scores.n_total``
    is the number of items and ``scores.failures`` says why the rest have no score.
    """

    def __init__(self, results: Sequence[ScoreResult]):
        self.results: List[ScoreResult] = list(results)
        super().__init__(r.score for r in self.results if r.score is not None)

    @property
    def failures(self) -> List[ScoreResult]:
        return [r for r in self.results if r.score is None]

    @property
    def n_total(self) -> int:
        return len(self.results)

    def summary(self) -> "ScoreSummary":
        return summarize_scores(self.results)


ReplyParser = Callable[[str], Tuple[Optional[int], Optional[str], Optional[str]]]


def _parse_0_100(reply: str) -> Tuple[Optional[int], Optional[str], Optional[str]]:
    score, reason = explain_score(reply)
    return score, None, reason


def _parse_1_5(reply: str) -> Tuple[Optional[int], Optional[str], Optional[str]]:
    found, reason = explain_rubric(reply)
    return (found[0], found[1], None) if found else (None, None, reason)


def score_responses(
    json_data: Union[Sequence[Mapping[str, Any]], PathLike],
    json_key: str,
    model: str = DEFAULT_MODEL,
    *,
    url: str = DEFAULT_URL,
    api: Optional[str] = None,
    client: Optional[JudgeClient] = None,
    prompt_builder: Callable[[Mapping[str, Any], str], str] = build_score_prompt,
    parser: ReplyParser = _parse_0_100,
    empty_response_score: Optional[int] = 0,
    max_workers: int = 4,
    cache_path: Optional[PathLike] = None,
    progress: bool = True,
    **client_kwargs: Any,
) -> List[ScoreResult]:
    """Ask the judge to score ``entry[json_key]`` for every entry; one :class:`ScoreResult` per item.

    * ``json_data``: the list of entries, or the path of a JSON file with it.
    * Empty responses (``""`` or only spaces) get ``empty_response_score``
      (0) without asking the judge, with ``status="empty_response"`` and the
      reason recorded; pass ``None`` to send them to the judge like any other.
    * Per-item failures (timeout, 5xx after the retries, malformed or dropped
      reply, unparsable score, missing field) are recorded, never dropped.
      Failures that would repeat for every item (server down, model not pulled,
      package missing) stop the run with their :class:`JudgeError`; with
      ``cache_path`` the replies already received are kept.
    * ``max_workers`` requests run at once; results are in input order.
    * ``cache_path``: JSONL reply cache (see :class:`ReplyCache`), so a rerun
      does not ask again for replies it already has.
    """
    entries = read_json(json_data) if isinstance(json_data, (str, os.PathLike)) else json_data
    _require_key(entries, json_key)
    client = client or make_client(model, url, api=api, **client_kwargs)
    cache = ReplyCache(cache_path) if cache_path is not None else None

    def work(index: int) -> ScoreResult:
        return _score_one(index, entries[index], json_key, client, prompt_builder, parser,
                          empty_response_score, cache)

    return _run_in_order(len(entries), work, max_workers, progress, desc=f"Avaliando ({client.model})")


def _require_key(entries: Sequence[Mapping[str, Any]], json_key: str) -> None:
    if entries and not any(isinstance(e, Mapping) and json_key in e for e in entries):
        keys = sorted(entries[0].keys()) if isinstance(entries[0], Mapping) else []
        raise KeyError(
            f"Nenhum item tem o campo {json_key!r} com a resposta a avaliar. "
            f"Campos do primeiro item: {', '.join(keys) or 'nenhum'}."
        )


def _score_one(index, entry, json_key, client, prompt_builder, parser, empty_score, cache) -> ScoreResult:
    try:
        response = entry[json_key]
        prompt = prompt_builder(entry, json_key)
    except KeyError as exc:
        return ScoreResult(index, None, "missing_field", reason=f"o item {index} não tem o campo {exc.args[0]!r}")
    if empty_score is not None and not str(response or "").strip():
        return ScoreResult(index, empty_score, "empty_response",
                           reason=f"resposta do modelo vazia: nota {empty_score} sem consultar o juiz")
    key = cache_key(client.model, prompt)
    reply = cache.get(key) if cache is not None else None
    cached = reply is not None
    if reply is None:
        try:
            reply = client.chat(prompt)
        except FATAL_ERRORS:
            raise
        except JudgeError as exc:
            return ScoreResult(index, None, "error", reason=f"item {index}: {exc}")
        if cache is not None:
            cache.put(key, client.model, reply)
    score, feedback, reason = parser(reply)
    status = "scored" if score is not None else "unparsable"
    reason = f"item {index}: {reason}" if reason else None
    return ScoreResult(index, score, status, reason=reason, reply=reply, feedback=feedback, cached=cached)


def _run_in_order(n: int, work: Callable[[int], ScoreResult], max_workers: int,
                  progress: bool, desc: str) -> List[ScoreResult]:
    """``[work(0), ..., work(n-1)]`` computed by a thread pool, with a progress bar."""
    from tqdm.auto import tqdm

    results: List[Optional[ScoreResult]] = [None] * n
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool, \
            tqdm(total=n, desc=desc, disable=not progress) as bar:
        futures = {pool.submit(work, i): i for i in range(n)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results  # type: ignore[return-value]


def generate_model_scores(
    json_data: Union[Sequence[Mapping[str, Any]], PathLike],
    json_key: str,
    model: str = DEFAULT_MODEL,
    **kwargs: Any,
) -> ScoreList:
    """The seed's function: a list of int scores, now a :class:`ScoreList`.

    Thin wrapper of :func:`score_responses` (same keywords). The list holds the
    scores of the scored items; ``.results`` has one :class:`ScoreResult` per
    item and ``.failures`` the ones without a score. A warning says how many
    items have no score, so none is lost in silence.
    """
    scores = ScoreList(score_responses(json_data, json_key, model, **kwargs))
    if scores.failures:
        first = scores.failures[0].reason
        warnings.warn(
            f"{len(scores.failures)} de {scores.n_total} itens ficaram sem nota (veja .failures); "
            f"primeiro motivo: {first}", stacklevel=2)
    return scores


def score_with_rubric(
    json_data: Union[Sequence[Mapping[str, Any]], PathLike],
    json_key: str,
    model: str = DEFAULT_MODEL,
    **kwargs: Any,
) -> List[ScoreResult]:
    """Rubric mode: scores 1–5 with a sentence of ``feedback`` per item.

    Uses :func:`build_rubric_prompt` and :func:`parse_rubric`; empty responses
    get 1 without asking. Other keywords as in :func:`score_responses`.
    """
    kwargs.setdefault("empty_response_score", 1)
    return score_responses(json_data, json_key, model, prompt_builder=build_rubric_prompt,
                           parser=_parse_1_5, **kwargs)


def save_score_results(results: Sequence[ScoreResult], path: PathLike) -> Path:
    """Write results as a JSON list (UTF-8, atomic)."""
    return write_json_atomic(path, [asdict(r) for r in results])


def load_score_results(path: PathLike) -> List[ScoreResult]:
    """Results written by :func:`save_score_results`."""
    return [ScoreResult(**record) for record in read_json(path)]


# --------------------------------------------------------------------------- statistics

ScoreLike = Union[Sequence[Optional[float]], Sequence[ScoreResult]]


def _values(scores: ScoreLike) -> List[Optional[float]]:
    """Scores as a list with ``None`` for unscored items (ScoreList: all its items)."""
    items = scores.results if isinstance(scores, ScoreList) else scores
    return [s.score if isinstance(s, ScoreResult) else s for s in items]


@dataclass
class ScoreSummary:
    """Scores of a run: how many, mean, median and (population) standard deviation."""

    n_scored: int
    n_total: int
    mean: Optional[float]
    median: Optional[float]
    std: Optional[float]

    @property
    def n_missing(self) -> int:
        return self.n_total - self.n_scored

    def __str__(self) -> str:
        if not self.n_scored:
            return f"Nenhuma nota em {self.n_total} itens."
        return (f"Notas: {self.n_scored} de {self.n_total} itens ({self.n_missing} sem nota); "
                f"média {self.mean:.2f}, mediana {self.median:.2f}, desvio padrão {self.std:.2f}")


def summarize_scores(scores: ScoreLike) -> ScoreSummary:
    """Summary of ``scores`` (ints with ``None`` for unscored items, or results).

    ``std`` is the population standard deviation (``numpy.std`` default, ddof=0).
    """
    values = _values(scores)
    present = [float(v) for v in values if v is not None]
    if not present:
        return ScoreSummary(0, len(values), None, None, None)
    return ScoreSummary(len(present), len(values), statistics.fmean(present),
                        statistics.median(present), statistics.pstdev(present))


def _check_aligned(a: Sequence[Any], b: Sequence[Any], what: str) -> None:
    if len(a) != len(b):
        raise ValueError(
            f"As duas listas de notas têm tamanhos diferentes ({len(a)} e {len(b)}): o alinhamento "
            f"item a item se perdeu, então {what} compararia notas de itens diferentes. Isso acontece "
            "quando uma resposta do juiz que não virou nota é descartada (o script original fazia isso). "
            "Guarde uma nota ou um motivo por item (score_responses) ou alinhe pelo índice com align_by_index."
        )


def _pairs(a: ScoreLike, b: ScoreLike, what: str) -> Tuple[List[float], List[float], int]:
    va, vb = _values(a), _values(b)
    _check_aligned(va, vb, what)
    kept = [(x, y) for x, y in zip(va, vb) if x is not None and y is not None]
    return [float(x) for x, _ in kept], [float(y) for _, y in kept], len(va) - len(kept)


@dataclass
class ScoreComparison:
    """Model A vs model B on the same items: ``diffs`` are A − B per item (``None`` if unscored)."""

    diffs: List[Optional[float]]
    wins: int
    ties: int
    losses: int
    mean_diff: Optional[float]
    n_skipped: int

    def __str__(self) -> str:
        mean = "—" if self.mean_diff is None else f"{self.mean_diff:+.2f}"
        return (f"A vence {self.wins}, empata {self.ties}, perde {self.losses}; diferença média (A − B) "
                f"{mean}; {self.n_skipped} itens sem nota em algum dos dois.")


def compare_scores(scores_a: ScoreLike, scores_b: ScoreLike) -> ScoreComparison:
    """Compare two models' scores item by item (same items, same order; refuses other lengths)."""
    va, vb = _values(scores_a), _values(scores_b)
    _check_aligned(va, vb, "a comparação")
    diffs = [None if x is None or y is None else float(x) - float(y) for x, y in zip(va, vb)]
    present = [d for d in diffs if d is not None]
    return ScoreComparison(
        diffs=diffs,
        wins=sum(d > 0 for d in present),
        ties=sum(d == 0 for d in present),
        losses=sum(d < 0 for d in present),
        mean_diff=statistics.fmean(present) if present else None,
        n_skipped=len(diffs) - len(present),
    )


@dataclass
class Agreement:
    """Agreement between two judges on the same items."""

    n: int
    pearson: float
    spearman: float
    kendall_tau_b: float
    n_skipped: int = 0

    def __str__(self) -> str:
        return (f"{self.n} itens: Pearson {self.pearson:.5f}, Spearman {self.spearman:.5f}, "
                f"Kendall tau-b {self.kendall_tau_b:.5f} ({self.n_skipped} itens sem nota ignorados)")


def judge_agreement(scores_a: ScoreLike, scores_b: ScoreLike) -> Agreement:
    """Pearson, Spearman and Kendall tau-b between two judges' scores of the same items.

    Lists of different lengths are refused (pt-BR ``ValueError``): their
    alignment was lost. Items without a score in either list (``None``) are left out.
    """
    try:
        from scipy import stats
    except ImportError:
        raise JudgeDependencyError("judge_agreement precisa do scipy: rode `pip install scipy`.") from None
    a, b, skipped = _pairs(scores_a, scores_b, "a concordância")
    if len(a) < 2:
        raise ValueError(f"São precisos ao menos 2 itens com nota nas duas listas; há {len(a)}.")
    return Agreement(
        n=len(a),
        pearson=float(stats.pearsonr(a, b)[0]),
        spearman=float(stats.spearmanr(a, b)[0]),
        kendall_tau_b=float(stats.kendalltau(a, b, variant="b")[0]),
        n_skipped=skipped,
    )


def align_by_index(
    results_a: Union[Sequence[ScoreResult], Mapping[int, Optional[float]]],
    results_b: Union[Sequence[ScoreResult], Mapping[int, Optional[float]]],
) -> Tuple[List[float], List[float], List[int]]:
    """Scores of the items scored in both runs, matched by item index.

    Takes results (with ``.index``) or ``{index: score}`` dicts; returns
    ``(scores_a, scores_b, indices)`` ready for :func:`judge_agreement` or
    :func:`compare_scores`.
    """
    map_a, map_b = _by_index(results_a), _by_index(results_b)
    indices = sorted(i for i in map_a.keys() & map_b.keys()
                     if map_a[i] is not None and map_b[i] is not None)
    return [map_a[i] for i in indices], [map_b[i] for i in indices], indices


def _by_index(results) -> Dict[int, Optional[float]]:
    if isinstance(results, Mapping):
        return dict(results)
    items = results.results if isinstance(results, ScoreList) else results
    mapping: Dict[int, Optional[float]] = {}
    for r in items:
        if r.index in mapping:
            raise ValueError(f"O índice {r.index} aparece duas vezes nos resultados.")
        mapping[r.index] = r.score
    return mapping

