"""Clients of a judge (or of any LLM): chat with messages, or raw completion of a prompt string.

One interface, :class:`JudgeClient`, with four implementations:

* :class:`OllamaClient` — ``/api/chat`` (the book's route; NDJSON stream) and
  ``/api/generate`` with ``"raw": true``;
* :class:`OpenAIClient` — ``/v1/chat/completions`` and ``/v1/completions``
  (llama.cpp's server, vLLM, LM Studio, Ollama's ``/v1``; JSON or SSE stream);
* :class:`LlamaServerClient` — llama.cpp's ``llama-server``: its OpenAI chat route
  and its own ``/completion``;
* :class:`LlamaCppClient` — ``llama_cpp.Llama`` in this process (no server: e.g. Colab).

Request options use Ollama's names as the common vocabulary, and each client
translates them: ``seed``, ``temperature``, ``top_p``, ``stop`` (a string or a
list), ``num_ctx`` (Ollama only: the other servers fix the context at start-up)
and the maximum of new tokens under any of its three names, ``num_predict``
(Ollama), ``max_tokens`` (OpenAI) or ``n_predict`` (llama.cpp). Other keys go to
the server as they are. By default every request carries the book's
deterministic options (:data:`DEFAULT_OPTIONS`: ``seed=123``, ``temperature=0``).

``schema`` (a JSON schema) asks for structured output: Ollama's ``format``, or
``response_format`` on OpenAI-compatible servers (``schema_style="json_schema"``,
OpenAI's form, or ``"json_object"`` for llama-cpp-python's server).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..io import PathLike
from .defaults import (
    DEFAULT_BACKOFF, DEFAULT_DEADLINE, DEFAULT_MAX_REPLY_BYTES, DEFAULT_MODEL, DEFAULT_OPTIONS,
    DEFAULT_RETRIES, DEFAULT_TIMEOUT, DEFAULT_URL,
)
from .errors import JudgeDependencyError, JudgeHTTPError, JudgeProtocolError, JudgeServerError, JudgeStreamError
from .servers import API_NAMES, detect_api, route_url, server_base_url
from .transport import Exchange, Limits, error_detail, json_object, post_json, with_retries

Messages = Sequence[Mapping[str, str]]
ROLES = ("system", "user", "assistant")
MAX_TOKENS_NAMES = ("num_predict", "max_tokens", "n_predict")
SCHEMA_STYLES = ("json_schema", "json_object")


def normalize_options(options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``options`` in the common vocabulary: ``max_tokens``/``n_predict`` become ``num_predict``."""
    out: Dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key in MAX_TOKENS_NAMES:
            if "num_predict" in out and out["num_predict"] != value:
                raise ValueError(f"Duas quantidades máximas de tokens diferentes nas opções: "
                                 f"{out['num_predict']!r} e {key}={value!r}. Use só uma.")
            key = "num_predict"
        out[key] = value
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    return out


def as_messages(prompt: Union[str, Messages]) -> List[Dict[str, str]]:
    """A prompt string as one user message; a list of messages checked and copied."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = []
    for number, message in enumerate(prompt):
        if not isinstance(message, Mapping) or message.get("role") not in ROLES \
                or not isinstance(message.get("content"), str):
            raise ValueError(f"Mensagem {number} inválida: {message!r}. Cada mensagem é um dict com "
                             f"'role' ({', '.join(ROLES)}) e 'content' (texto).")
        messages.append({"role": message["role"], "content": message["content"]})
    if not messages:
        raise ValueError("A lista de mensagens está vazia.")
    return messages


def _renamed(options: Mapping[str, Any], max_tokens_name: str) -> Dict[str, Any]:
    """Options for a server with a fixed context: ``num_ctx`` dropped, ``num_predict`` renamed."""
    params = {k: v for k, v in options.items() if k not in ("num_ctx", "num_predict")}
    if "num_predict" in options:
        params[max_tokens_name] = options["num_predict"]
    return params


class JudgeClient:
    """Sends chat messages or a raw prompt to one model and returns the reply text.

    :meth:`chat` and :meth:`complete` add the retries; subclasses implement
    :meth:`_chat_once` and :meth:`_complete_once`. ``timeout``, ``deadline`` and
    ``max_reply_bytes`` bound every attempt (see :class:`~.transport.Limits`).
    ``model`` is part of the cache key of :func:`~.scoring.score_responses`.
    """

    api = "base"

    def __init__(self, model: str, *, options: Optional[Mapping[str, Any]] = None,
                 timeout: float = DEFAULT_TIMEOUT, deadline: float = DEFAULT_DEADLINE,
                 max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
                 retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF):
        self.model = model
        self.options = {**DEFAULT_OPTIONS, **normalize_options(options)}
        self.limits = Limits(timeout=timeout, deadline=deadline, max_reply_bytes=max_reply_bytes)
        self.retries = retries
        self.backoff = backoff

    @property
    def timeout(self) -> float:
        return self.limits.timeout

    def chat(self, prompt: Union[str, Messages], *, options: Optional[Mapping[str, Any]] = None,
             schema: Optional[Mapping[str, Any]] = None) -> str:
        """The reply to ``prompt`` (a user message) or to a list of messages (system/user/assistant).

        ``options`` override the client's for this call; ``schema`` asks for JSON
        that follows it. Transient failures are retried.
        """
        messages = as_messages(prompt)
        merged = self.request_options(options)
        return with_retries(lambda: self._chat_once(messages, merged, schema), self.retries, self.backoff)

    def complete(self, prompt: str, *, options: Optional[Mapping[str, Any]] = None) -> str:
        """The continuation of ``prompt`` sent as is, with no chat template (raw completion)."""
        if not isinstance(prompt, str):
            raise TypeError(f"complete() recebe o texto do prompt; recebi {type(prompt).__name__}.")
        merged = self.request_options(options)
        return with_retries(lambda: self._complete_once(prompt, merged), self.retries, self.backoff)

    def request_options(self, options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """The client's options with ``options`` on top (common vocabulary)."""
        return {**self.options, **normalize_options(options)}

    def _chat_once(self, messages: List[Dict[str, str]], options: Dict[str, Any],
                   schema: Optional[Mapping[str, Any]]) -> str:
        raise NotImplementedError

    def _complete_once(self, prompt: str, options: Dict[str, Any]) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"


# --------------------------------------------------------------------------- Ollama

class OllamaClient(JudgeClient):
    """Ollama's native API: ``/api/chat`` (the book's route) and raw ``/api/generate``.

    Streams NDJSON by default, as the book's ``query_model`` reads it; every
    option goes inside ``"options"``.
    """

    api = "ollama"

    def __init__(self, model: str = DEFAULT_MODEL, url: str = DEFAULT_URL, *,
                 stream: bool = True, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.url = route_url(url, "ollama", "chat")
        self.generate_url = route_url(url, "ollama", "complete")
        self.stream = stream

    def _chat_once(self, messages, options, schema) -> str:
        payload: Dict[str, Any] = {"model": self.model, "messages": messages, "options": options,
                                   "stream": self.stream}
        if schema is not None:
            payload["format"] = dict(schema)
        return self._ask(self.url, payload, self._message_content)

    def _complete_once(self, prompt, options) -> str:
        payload = {"model": self.model, "prompt": prompt, "raw": True, "options": options,
                   "stream": self.stream}
        return self._ask(self.generate_url, payload, self._response_field)

    def _ask(self, url: str, payload: Mapping[str, Any],
             content: Callable[[str, Mapping[str, Any], int], str]) -> str:
        with post_json(url, payload, self.limits, self.api) as exchange:
            if not self.stream:
                return content(url, exchange.read_json(), 1)
            parts: List[str] = []
            for number, line in exchange.lines():
                data = json_object(line, number, url)
                parts.append(content(url, data, number))
                if data.get("done"):
                    return "".join(parts)
        raise JudgeStreamError(
            f"A resposta de {url} terminou sem a mensagem final (\"done\": true): "
            "a conexão caiu no meio do streaming.")

    @staticmethod
    def _message_content(url: str, data: Mapping[str, Any], number: int) -> str:
        _raise_ollama_error(url, data, number)
        message = data.get("message")
        if message is None and data.get("done"):
            return ""  # the final line of some versions carries only statistics
        if not isinstance(message, dict) or not isinstance(message.get("content", ""), str):
            raise JudgeProtocolError(
                f"A linha {number} da resposta de {url} não tem o campo message.content: {str(data)[:200]}")
        return message.get("content", "")

    @staticmethod
    def _response_field(url: str, data: Mapping[str, Any], number: int) -> str:
        _raise_ollama_error(url, data, number)
        text = data.get("response", "" if data.get("done") else None)
        if not isinstance(text, str):
            raise JudgeProtocolError(
                f"A linha {number} da resposta de {url} não tem o campo response: {str(data)[:200]}")
        return text


def _raise_ollama_error(url: str, data: Mapping[str, Any], number: int) -> None:
    if "error" in data:
        raise JudgeServerError(f"O servidor {url} informou um erro (linha {number}): {data['error']}")


# --------------------------------------------------------------------------- OpenAI-compatible

class OpenAIClient(JudgeClient):
    """OpenAI-compatible ``/v1/chat/completions`` and ``/v1/completions``.

    For llama.cpp's server, vLLM, LM Studio, Ollama's ``/v1``. ``stream=True``
    reads server-sent events. ``schema_style`` picks how a JSON schema is sent
    (see the module docstring); ``api_key`` becomes a Bearer header.
    """

    api = "openai"

    def __init__(self, model: str = DEFAULT_MODEL, url: str = "http://localhost:8080/v1/chat/completions", *,
                 stream: bool = False, api_key: Optional[str] = None, schema_style: str = "json_schema",
                 **kwargs: Any):
        super().__init__(model, **kwargs)
        if schema_style not in SCHEMA_STYLES:
            raise ValueError(f"schema_style deve ser um de {SCHEMA_STYLES}; recebi {schema_style!r}.")
        self.url = route_url(url, self.api, "chat")
        self.complete_url = route_url(url, self.api, "complete")
        self.stream = stream
        self.schema_style = schema_style
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _chat_once(self, messages, options, schema) -> str:
        payload: Dict[str, Any] = {"model": self.model, "messages": messages,
                                   **_renamed(options, "max_tokens"), "stream": self.stream}
        if schema is None:
            return self._ask(self.url, payload, "message", "delta")
        payload["response_format"] = self._response_format(schema)
        try:
            return self._ask(self.url, payload, "message", "delta")
        except JudgeHTTPError as exc:
            if self.schema_style == "json_schema" and "json_schema" in str(exc):
                raise JudgeServerError(
                    f"{exc} Este servidor não aceita response_format do tipo json_schema (o formato da "
                    "OpenAI); o do llama-cpp-python, por exemplo, aceita schema_style='json_object'.") from None
            raise

    def _response_format(self, schema: Mapping[str, Any]) -> Dict[str, Any]:
        if self.schema_style == "json_object":
            return {"type": "json_object", "schema": dict(schema)}
        return {"type": "json_schema", "json_schema": {"name": "reply", "strict": True, "schema": dict(schema)}}

    def _complete_once(self, prompt, options) -> str:
        payload = {"model": self.model, "prompt": prompt, **_renamed(options, "max_tokens"),
                   "stream": self.stream}
        return self._ask(self.complete_url, payload, "text", "text")

    def _ask(self, url: str, payload: Mapping[str, Any], whole_key: str, chunk_key: str) -> str:
        with post_json(url, payload, self.limits, self.api, self.headers) as exchange:
            if not self.stream:
                return self._choice_text(url, exchange.read_json(), 1, whole_key)[0]
            return self._read_sse(url, exchange, chunk_key)

    def _read_sse(self, url: str, exchange: Exchange, key: str) -> str:
        parts: List[str] = []
        finished = False
        for number, data_text in sse_data(exchange):
            if data_text == "[DONE]":
                break
            text, finish = self._choice_text(url, json_object(data_text, number, url), number, key)
            parts.append(text)
            finished = finished or finish
        else:
            if finished:  # some servers end after finish_reason without "[DONE]"
                return "".join(parts)
            raise JudgeStreamError(
                f"O streaming de {url} terminou sem 'data: [DONE]': a conexão caiu no meio da resposta.")
        if not finished:
            # llama-cpp-python's server does this to a stream when another request arrives.
            raise JudgeStreamError(
                f"O streaming de {url} terminou com [DONE] sem finish_reason: o servidor interrompeu a "
                "geração. Com o servidor do llama-cpp-python use max_workers=1, stream=False ou inicie-o "
                "com --interrupt_requests False.")
        return "".join(parts)

    @staticmethod
    def _choice_text(url: str, data: Mapping[str, Any], number: int, key: str) -> Tuple[str, bool]:
        """``(text, finished)`` of ``choices[0]``: ``key`` is message, delta (chat) or text (completions)."""
        if "error" in data:
            raise JudgeServerError(f"O servidor {url} informou um erro: {error_detail(json.dumps(data))}")
        try:
            choice = data["choices"][0]
            value = choice[key]
            text = value if key == "text" else value.get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise JudgeProtocolError(
                f"A linha {number} da resposta de {url} não tem choices[0].{key}: {str(data)[:200]}") from None
        return text or "", bool(choice.get("finish_reason"))


def sse_data(exchange: Exchange):
    """``(line number, data)`` of each ``data:`` field of a server-sent event stream."""
    for number, line in exchange.lines():
        if line.startswith("data:"):   # other fields (event:, id:) and ": comments" are skipped
            yield number, line[len("data:"):].strip()


# --------------------------------------------------------------------------- llama.cpp server

class LlamaServerClient(OpenAIClient):
    """llama.cpp's ``llama-server``: OpenAI chat route, and its own ``/completion`` for raw prompts.

    ``/completion`` takes ``n_predict`` and answers ``{"content", "stop"}``; streamed,
    each event is such an object and the last one has ``"stop": true``.
    """

    api = "llama_server"

    def _complete_once(self, prompt, options) -> str:
        payload = {"prompt": prompt, **_renamed(options, "n_predict"), "stream": self.stream}
        url = self.complete_url
        with post_json(url, payload, self.limits, self.api, self.headers) as exchange:
            if not self.stream:
                return self._content(url, exchange.read_json(), 1)[0]
            parts: List[str] = []
            for number, data_text in sse_data(exchange):
                text, stop = self._content(url, json_object(data_text, number, url), number)
                parts.append(text)
                if stop:
                    return "".join(parts)
        raise JudgeStreamError(
            f"O streaming de {url} terminou sem o evento final (\"stop\": true): "
            "a conexão caiu no meio da resposta.")

    @staticmethod
    def _content(url: str, data: Mapping[str, Any], number: int) -> Tuple[str, bool]:
        if "error" in data:
            raise JudgeServerError(f"O servidor {url} informou um erro: {error_detail(json.dumps(data))}")
        if not isinstance(data.get("content"), str):
            raise JudgeProtocolError(
                f"A linha {number} da resposta de {url} não tem o campo content: {str(data)[:200]}")
        return data["content"], bool(data.get("stop"))


# --------------------------------------------------------------------------- in process

class LlamaCppClient(JudgeClient):
    """A judge in this process with ``llama_cpp.Llama`` (no server: e.g. Colab without Ollama).

    ``model_path`` is a GGUF file. Calls are serialized (a ``Llama`` object is not
    thread-safe), so ``max_workers`` above 1 gains nothing here. ``deadline`` and
    ``max_reply_bytes`` do not apply (nothing goes over a network); ``num_predict``
    bounds the reply.
    """

    api = "llama_cpp"

    def __init__(self, model_path: PathLike, *, verbose: bool = False, **kwargs: Any):
        kwargs.setdefault("retries", 0)
        super().__init__(Path(model_path).name, **kwargs)
        self.model_path = Path(model_path)
        self.n_ctx = int(self.options["num_ctx"])
        self._lock = threading.Lock()
        self._llm = self._load(verbose)

    def _load(self, verbose: bool):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise JudgeDependencyError(
                "O juiz local precisa do pacote llama-cpp-python: rode `pip install llama-cpp-python` "
                "(ou use um servidor: Ollama ou llama.cpp).") from None
        if not self.model_path.is_file():
            raise FileNotFoundError(f"Arquivo de modelo GGUF não encontrado: '{self.model_path}'.")
        return Llama(model_path=str(self.model_path), n_ctx=self.n_ctx,
                     seed=self.options.get("seed", DEFAULT_OPTIONS["seed"]), verbose=verbose)

    def _chat_once(self, messages, options, schema) -> str:
        params = _renamed(options, "max_tokens")
        if schema is not None:
            params["response_format"] = {"type": "json_object", "schema": dict(schema)}
        with self._lock:
            out = self._llm.create_chat_completion(messages=messages, **params)
        return out["choices"][0]["message"].get("content") or ""

    def _complete_once(self, prompt, options) -> str:
        with self._lock:
            out = self._llm.create_completion(prompt=prompt, **_renamed(options, "max_tokens"))
        return out["choices"][0].get("text") or ""


CLIENTS = {"ollama": OllamaClient, "openai": OpenAIClient, "llama_server": LlamaServerClient}


def make_client(
    model: str = DEFAULT_MODEL,
    url: str = DEFAULT_URL,
    *,
    api: Optional[str] = None,
    **kwargs: Any,
) -> JudgeClient:
    """A :class:`JudgeClient` for ``url``; ``api`` is one of ``ollama``, ``openai``, ``llama_server``, ``llama_cpp``.

    Without ``api`` the protocol comes from the URL (``/api/chat`` or a bare host:
    Ollama; ``/v1/...``: OpenAI; ``/completion``: llama.cpp). For ``"llama_cpp"``
    pass ``model_path=`` (a GGUF file). Other keywords go to the client:
    ``options``, ``timeout``, ``deadline``, ``max_reply_bytes``, ``retries``,
    ``backoff``, ``stream``, ``api_key``, ``schema_style``.
    """
    api = api or detect_api(url)
    if api == "llama_cpp":
        if "model_path" not in kwargs:
            raise ValueError("api='llama_cpp' precisa de model_path= (o caminho de um arquivo .gguf).")
        return LlamaCppClient(kwargs.pop("model_path"), **kwargs)
    if api not in CLIENTS:
        raise ValueError(f"api desconhecida: {api!r}. Use uma destas: {', '.join(API_NAMES)}.")
    return CLIENTS[api](model, url, **kwargs)


__all__ = ["JudgeClient", "OllamaClient", "OpenAIClient", "LlamaServerClient", "LlamaCppClient",
           "make_client", "normalize_options", "as_messages", "server_base_url"]
