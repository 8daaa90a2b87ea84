"""TEST DOUBLE — a stand-in HTTP server that speaks the Ollama, OpenAI and llama.cpp protocols.

**This is not a judge and not a language model.** It answers with scripted text
so that tests (and notebook 07 in the ``teste`` profile, which has no Ollama)
can exercise ``llmdefinitions.judge`` over real HTTP: streaming, errors,
retries, timeouts, endless or dripping replies. Any number it "scores" is a
word-overlap heuristic, not an evaluation of quality; never report it as a result.

Routes, with the wire formats of the servers' published API docs:

* ``POST /api/chat`` (Ollama) — NDJSON stream when ``"stream"`` is absent or true:
  lines ``{"model", "created_at", "message": {"role": "assistant", "content"}, "done": false}``
  and a final line with ``"done": true, "done_reason"`` and the durations; one
  JSON object when ``"stream": false``. Unknown model: 404
  ``{"error": "model \\"x\\" not found, try pulling it first"}``.
* ``POST /api/generate`` (Ollama; ``"raw": true`` = no template) — the same with
  ``"response"`` instead of ``"message"``, and ``"context"`` on the last line.
* ``POST /v1/chat/completions`` and ``POST /v1/completions`` (OpenAI) —
  ``choices[0].message.content`` / ``choices[0].text``, or with ``"stream": true``
  server-sent events ``data: {...}`` (``delta.content`` / ``text``) and ``data: [DONE]``.
* ``POST /completion`` (llama.cpp's ``llama-server``) — ``{"content", "stop": true, ...}``,
  or events ``data: {"content", "stop": false}`` ending with ``"stop": true`` (no ``[DONE]``).
* ``GET /api/tags``, ``GET /api/version``, ``GET /v1/models``.

The options a real server honours are honoured: the stop strings (``stop``)
cut the reply, and the maximum of new tokens (``num_predict`` in Ollama's
``options``, ``max_tokens``, ``n_predict``) cuts it after that many pieces,
reported as ``"length"``. Structured output (Ollama's ``format``, OpenAI's
``response_format``) makes the default "judge" reply with JSON (``{"score": N}``).

Replies are scripted (``script=``): ``None`` (the default word-overlap "judge",
:func:`overlap_judge`; ``jitter=`` makes it non-deterministic), a callable
``(prompt, body) -> str | Reply``, a list of replies used one per generation
request, or a dict from prompt (or a substring of it) to reply. A :class:`Reply`
can script failures: an HTTP error, a delay, a malformed stream line, a
connection dropped mid-stream, a stream with no end, a reply padded to any
size, or a reply that drips byte by byte.

``requests`` records every request with its exact body bytes (``raw``) and the
parsed JSON (``body``), so tests can assert what a client sent.

Run it stand-alone (used by notebook 07 in the ``teste`` profile)::

    python -m llmdefinitions.testing.fake_llm_server --port 11434
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

DEFAULT_MODELS = ("llama3:latest",)
VERSION = "0.5.7"
FILLER = "a "   # the piece an endless stream repeats


@dataclass
class Reply:
    """A scripted reply: text, or a failure mode.

    ``status``/``error``: answer with this HTTP status and error body instead.
    ``delay``: seconds to wait before answering (beyond the client's timeout = a slow server).
    ``chunk_delay``: seconds between streamed lines.
    ``malformed_line``: 1-based streamed line replaced by broken JSON.
    ``drop_after``: close the connection after this many streamed lines (no final line).
    ``interrupted``: OpenAI stream only: an empty first chunk then ``data: [DONE]`` with no
    ``finish_reason``, as llama-cpp-python's server does to a stream cut by a newer request.
    ``endless``: the reply never ends: a stream repeats pieces forever; a non-streamed
    JSON body is sent chunked and never closed.
    ``padding``: non-streamed reply: a ``"padding"`` field of this many bytes (a huge JSON).
    ``byte_delay``: seconds between the bytes of the whole response, headers included (a drip).
    """

    content: str = ""
    status: int = 200
    error: Optional[str] = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    malformed_line: Optional[int] = None
    drop_after: Optional[int] = None
    interrupted: bool = False
    endless: bool = False
    padding: int = 0
    byte_delay: float = 0.0


Script = Union[None, Callable[[str, Dict[str, Any]], Union[str, Reply]],
               Sequence[Union[str, Reply]], Mapping[str, Union[str, Reply]]]


# --------------------------------------------------------------------------- default "judge"

_BOOK_PROMPT = re.compile(
    r"and correct output `(?P<ref>.*?)`, score the model response `(?P<resp>.*)` on a scale from 0 to 100",
    re.DOTALL)
_RUBRIC_PROMPT = re.compile(r"Reference answer: `(?P<ref>.*?)`\nModel response: `(?P<resp>.*?)`\n", re.DOTALL)
SCRIPTED_SENTENCE = "This is a scripted reply from the test double server."


def word_overlap(reference: str, response: str) -> float:
    """F1 of the words shared by two texts (case-insensitive), from 0 to 1."""
    ref, resp = Counter(re.findall(r"\w+", reference.lower())), Counter(re.findall(r"\w+", response.lower()))
    common = sum((ref & resp).values())
    if not common:
        return 0.0
    precision, recall = common / sum(resp.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def overlap_judge(prompt: str, structured: bool = False, noise: int = 0) -> str:
    """The default scripted reply: a deterministic score from word overlap (NOT a judgement).

    The book's 0–100 prompt gets ``round(100 * overlap)`` (plus ``noise``, kept in
    0–100), as ``{"score": N}`` when ``structured``; the 1–5 rubric prompt gets a
    JSON object; any other prompt gets a fixed sentence.
    """
    match = _BOOK_PROMPT.search(prompt)
    if match:
        score = min(100, max(0, round(100 * word_overlap(match["ref"], match["resp"])) + noise))
        return json.dumps({"score": score}) if structured else str(score)
    match = _RUBRIC_PROMPT.search(prompt)
    if match:
        overlap = word_overlap(match["ref"], match["resp"])
        return json.dumps({"score": 1 + round(4 * overlap),
                           "feedback": f"word overlap {overlap:.2f} (test double, not a judgement)"})
    return json.dumps({"text": SCRIPTED_SENTENCE}) if structured else SCRIPTED_SENTENCE


# --------------------------------------------------------------------------- wire formats

def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _pieces(text: str) -> List[str]:
    """Split text into token-like pieces that concatenate back to it."""
    return re.findall(r"\S+\s*|\s+", text)


def _ollama_stats() -> Dict[str, int]:
    return {"total_duration": 5191566416, "load_duration": 2154458, "prompt_eval_count": 26,
            "prompt_eval_duration": 383809000, "eval_count": 298, "eval_duration": 4799921000}


def ollama_chat_lines(model: str, content: str, done_reason: str = "stop") -> List[Dict[str, Any]]:
    """The NDJSON objects of a streamed ``/api/chat`` reply."""
    lines: List[Dict[str, Any]] = [
        {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": piece},
         "done": False}
        for piece in _pieces(content)]
    lines.append({"model": model, "created_at": _now(), "message": {"role": "assistant", "content": ""},
                  "done_reason": done_reason, "done": True, **_ollama_stats()})
    return lines


def ollama_chat_object(model: str, content: str, done_reason: str = "stop") -> Dict[str, Any]:
    """The single JSON object of ``/api/chat`` with ``"stream": false``."""
    return {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": content},
            "done_reason": done_reason, "done": True, **_ollama_stats()}


def ollama_generate_lines(model: str, content: str, done_reason: str = "stop") -> List[Dict[str, Any]]:
    """The NDJSON objects of a streamed ``/api/generate`` reply."""
    lines: List[Dict[str, Any]] = [{"model": model, "created_at": _now(), "response": piece, "done": False}
                                   for piece in _pieces(content)]
    lines.append(ollama_generate_object(model, "", done_reason))
    return lines


def ollama_generate_object(model: str, content: str, done_reason: str = "stop") -> Dict[str, Any]:
    """The single JSON object of ``/api/generate`` with ``"stream": false``."""
    return {"model": model, "created_at": _now(), "response": content, "done": True,
            "done_reason": done_reason, "context": [1, 2, 3], **_ollama_stats()}


def _usage(content: str) -> Dict[str, int]:
    tokens = len(_pieces(content))
    return {"prompt_tokens": 26, "completion_tokens": tokens, "total_tokens": 26 + tokens}


def openai_completion(model: str, content: str, finish: str = "stop") -> Dict[str, Any]:
    """A non-streamed ``/v1/chat/completions`` reply."""
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": "fp_test_double",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish}],
            "usage": _usage(content)}


def openai_chunks(model: str, content: str, finish: str = "stop") -> List[Dict[str, Any]]:
    """The ``data:`` objects of a streamed ``/v1/chat/completions`` reply (before ``[DONE]``)."""
    def chunk(delta: Dict[str, Any], reason: Optional[str]) -> Dict[str, Any]:
        return {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "system_fingerprint": "fp_test_double",
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
    chunks = [chunk({"role": "assistant", "content": p}, None) for p in _pieces(content)]
    chunks.append(chunk({}, finish))
    return chunks


def openai_text_completion(model: str, content: str, finish: str = "stop") -> Dict[str, Any]:
    """A non-streamed ``/v1/completions`` reply."""
    return {"id": "cmpl-test", "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"text": content, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": _usage(content)}


def openai_text_chunks(model: str, content: str, finish: str = "stop") -> List[Dict[str, Any]]:
    """The ``data:`` objects of a streamed ``/v1/completions`` reply (before ``[DONE]``)."""
    def chunk(text: str, reason: Optional[str]) -> Dict[str, Any]:
        return {"id": "cmpl-test", "object": "text_completion", "created": int(time.time()), "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": reason}]}
    return [chunk(p, None) for p in _pieces(content)] + [chunk("", finish)]


def llama_completion(model: str, content: str, finish: str = "stop") -> Dict[str, Any]:
    """The reply of llama.cpp's ``/completion`` (non-streamed, or the last streamed event)."""
    return {"index": 0, "content": content, "tokens": [], "id_slot": 0, "stop": True, "model": model,
            "tokens_predicted": len(_pieces(content)), "tokens_evaluated": 26,
            "stop_type": "limit" if finish == "length" else "eos", "stopping_word": "", "truncated": False,
            "timings": {"prompt_n": 26, "prompt_ms": 12.5, "predicted_n": len(_pieces(content)),
                        "predicted_ms": 80.0}}


def llama_completion_events(model: str, content: str, finish: str = "stop") -> List[Dict[str, Any]]:
    """The ``data:`` objects of a streamed ``/completion`` reply (the last has ``"stop": true``)."""
    events: List[Dict[str, Any]] = [{"index": 0, "content": p, "tokens": [], "stop": False, "id_slot": 0,
                                     "tokens_predicted": n + 1, "tokens_evaluated": 26}
                                    for n, p in enumerate(_pieces(content))]
    return events + [llama_completion(model, "", finish)]


@dataclass(frozen=True)
class _Route:
    """How one route names things: where its prompt is, how it formats whole and streamed replies."""

    path: str
    kind: str                              # "chat" or "complete"
    openai_errors: bool                    # error body {"error": {"message"...}} instead of {"error": "..."}
    checks_model: bool
    stream_default: bool
    stream_type: str                       # "ndjson" or "sse"
    whole: Callable[[str, str, str], Dict[str, Any]]
    stream: Callable[[str, str, str], List[Dict[str, Any]]]
    max_tokens_name: str                   # num_predict (inside Ollama's "options"), max_tokens, n_predict
    done_marker: bool = False              # SSE ends with "data: [DONE]"

    def limits(self, body: Mapping[str, Any]) -> Tuple[List[str], Optional[int]]:
        """The stop strings and the maximum of new tokens the request asks for."""
        source = (body.get("options") or {}) if self.max_tokens_name == "num_predict" else body
        stop = source.get("stop") or []
        limit = source.get(self.max_tokens_name)
        return ([stop] if isinstance(stop, str) else list(stop),
                limit if isinstance(limit, int) and limit >= 0 else None)

    def interrupted(self, model: str) -> Dict[str, Any]:
        """The lone chunk of a stream cut by llama-cpp-python's server: no content, no finish_reason."""
        chunk = self.stream(model, "", "stop")[-1]
        chunk["choices"][0]["finish_reason"] = None
        if self.kind == "chat":
            chunk["choices"][0]["delta"] = {"role": "assistant"}
        return chunk

    def wire(self, obj: Any) -> str:
        text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
        return f"data: {text}\n\n" if self.stream_type == "sse" else text + "\n"

    @property
    def content_type(self) -> str:
        return "text/event-stream" if self.stream_type == "sse" else "application/x-ndjson"

    def broken(self, model: str) -> str:
        return self.wire('{"model": "' + model + '", "choices": [') if self.stream_type == "sse" \
            else '{"model": "' + model + '", "message": {"content": \n'


ROUTES: Dict[str, _Route] = {route.path: route for route in (
    _Route("/api/chat", "chat", False, True, True, "ndjson", ollama_chat_object, ollama_chat_lines,
           "num_predict"),
    _Route("/api/generate", "complete", False, True, True, "ndjson", ollama_generate_object,
           ollama_generate_lines, "num_predict"),
    _Route("/v1/chat/completions", "chat", True, True, False, "sse", openai_completion, openai_chunks,
           "max_tokens", done_marker=True),
    _Route("/v1/completions", "complete", True, True, False, "sse", openai_text_completion,
           openai_text_chunks, "max_tokens", done_marker=True),
    _Route("/completion", "complete", True, False, False, "sse", llama_completion, llama_completion_events,
           "n_predict"),
)}
GENERATION_PATHS = tuple(ROUTES)
CHAT_PATHS = tuple(path for path, route in ROUTES.items() if route.kind == "chat")


def request_prompt(path: str, body: Mapping[str, Any]) -> str:
    """The prompt of a request: the last user message of a chat, or ``"prompt"`` of a completion."""
    if ROUTES[path].kind == "complete":
        return str(body.get("prompt", ""))
    for message in reversed(body.get("messages") or []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def apply_limits(content: str, stop: Sequence[str], max_tokens: Optional[int]) -> Tuple[str, str]:
    """``(content, finish)``: cut at the first stop string, then after ``max_tokens`` pieces."""
    cuts = [content.find(s) for s in stop if s and s in content]
    if cuts:
        return content[:min(cuts)], "stop"
    pieces = _pieces(content)
    if max_tokens is not None and len(pieces) > max_tokens:
        return "".join(pieces[:max_tokens]), "length"
    return content, "stop"


def wants_json(body: Mapping[str, Any]) -> bool:
    """Whether a request asks for structured output (Ollama ``format``, OpenAI ``response_format``)."""
    fmt = body.get("format")
    response_format = body.get("response_format")
    return bool(fmt) or (isinstance(response_format, Mapping)
                         and response_format.get("type") in ("json_object", "json_schema"))


# --------------------------------------------------------------------------- server

class _Drip:
    """A writer that sends one byte every ``delay`` seconds (the whole response, headers included)."""

    def __init__(self, raw: Any, delay: float, stopping: threading.Event):
        self.raw, self.delay, self.stopping = raw, delay, stopping

    def write(self, data: bytes) -> int:
        for i in range(len(data)):
            if self.stopping.wait(self.delay):
                raise ConnectionAbortedError("test double stopping")
            self.raw.write(data[i:i + 1])
            self.raw.flush()
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
        if self.server.fake.verbose:
            super().log_message(format, *args)

    # routing ---------------------------------------------------------------
    def do_GET(self) -> None:
        fake = self.server.fake
        fake._record("GET", self.path, None, b"", self.headers)
        if self.path == "/api/version":
            self._send_json(200, {"version": fake.version})
        elif self.path == "/api/tags":
            self._send_json(200, {"models": [_tag(name) for name in fake.models]})
        elif self.path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [
                {"id": name, "object": "model", "created": 1700000000, "owned_by": "library"}
                for name in fake.models]})
        elif self.path in ("/", ""):
            self._send_text(200, "Ollama is running")
        else:
            self._send_text(404, "404 page not found")

    def do_POST(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            fake._record("POST", self.path, None, raw, self.headers)
            self._send_json(400, {"error": "invalid JSON body"})
            return
        fake._record("POST", self.path, body, raw, self.headers)
        route = ROUTES.get(self.path)
        if route is None:
            self._send_text(404, "404 page not found")
            return
        with fake._in_flight():
            self._generate(route, body)

    # generation ----------------------------------------------------------------
    def _generate(self, route: _Route, body: Dict[str, Any]) -> None:
        fake = self.server.fake
        model = str(body.get("model", "")) or "test-double"
        if route.checks_model and fake.check_model and not fake.has_model(model):
            self._send_error(404, f'model "{model}" not found, try pulling it first', route)
            return
        reply = fake._reply_for(route.path, body)
        if reply.delay and fake._stopping.wait(reply.delay):
            return
        original = self.wfile
        if reply.byte_delay:
            self.wfile = _Drip(original, reply.byte_delay, fake._stopping)  # type: ignore[assignment]
        try:
            if reply.status != 200:
                self._send_error(reply.status, reply.error or f"scripted error {reply.status}", route)
            else:
                self._answer(route, model, body, reply)
        finally:
            self.wfile = original

    def _answer(self, route: _Route, model: str, body: Dict[str, Any], reply: Reply) -> None:
        content, finish = apply_limits(reply.content, *route.limits(body))
        stream = body.get("stream", route.stream_default)
        if not stream:
            if reply.endless:
                self._stream("application/json", self._endless_json(route, model), reply, route, model)
                return
            whole = route.whole(model, content, finish)
            if reply.padding:
                whole["padding"] = "x" * reply.padding
            self._send_json(200, whole, compact=True)
            return
        objects: Iterable[Any] = route.stream(model, content, finish)
        if reply.interrupted and route.done_marker:
            objects = [route.interrupted(model)]
        elif reply.endless:
            objects = itertools.chain(route.stream(model, content, finish)[:-1],
                                      itertools.repeat(route.stream(model, FILLER, finish)[0]))
        lines = (route.wire(obj) for obj in objects)
        if route.done_marker and not reply.endless:
            lines = itertools.chain(lines, [route.wire("[DONE]")])
        self._stream(route.content_type, lines, reply, route, model)

    @staticmethod
    def _endless_json(route: _Route, model: str) -> Iterator[str]:
        start = json.dumps(route.whole(model, "", "stop"))[:-1]
        return itertools.chain([start + ', "content": "'], itertools.repeat(FILLER * 64))

    def _stream(self, content_type: str, lines: Iterable[str], reply: Reply, route: _Route, model: str) -> None:
        """Send ``lines`` with chunked transfer encoding, applying the scripted failures."""
        stopping = self.server.fake._stopping
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for number, line in enumerate(lines, start=1):
            if stopping.is_set():
                return
            if reply.drop_after is not None and number > reply.drop_after:
                self._drop_connection()
                return
            if reply.chunk_delay and stopping.wait(reply.chunk_delay):
                return
            self._write_chunk(route.broken(model) if number == reply.malformed_line else line)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, text: str) -> None:
        data = text.encode("utf-8")
        self.wfile.write(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")
        self.wfile.flush()

    def _drop_connection(self) -> None:
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # plain responses -----------------------------------------------------------
    def _send_error(self, status: int, message: str, route: _Route) -> None:
        if route.openai_errors:
            kind = "invalid_request_error" if status < 500 else "api_error"
            self._send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})
        else:
            self._send_json(status, {"error": message})

    def _send_json(self, status: int, data: Any, compact: bool = False) -> None:
        text = json.dumps(data, separators=(",", ":") if compact else None)
        self._send_bytes(status, text.encode("utf-8"), "application/json; charset=utf-8")

    def _send_text(self, status: int, text: str) -> None:
        self._send_bytes(status, text.encode("utf-8"), "text/plain; charset=utf-8")

    def _send_bytes(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def _tag(name: str) -> Dict[str, Any]:
    return {"name": name, "model": name, "modified_at": "2024-05-01T10:00:00.000000000Z",
            "size": 4661224676, "digest": "365c0bd3c000a25d28ddbf732fe1c6add414de7275464c4e4d1c3b5fcb5d8ad1",
            "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                        "parameter_size": "8.0B", "quantization_level": "Q4_0"}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: "FakeLLMServer"

    def handle_error(self, request, client_address) -> None:
        # Clients that time out or hang up are part of the scripted scenarios.
        import sys
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


@dataclass
class RequestRecord:
    """One request the server received: ``raw`` body bytes, ``body`` their parsed JSON (POST)."""

    method: str
    path: str
    body: Optional[Dict[str, Any]]
    raw: bytes = b""
    headers: Dict[str, str] = field(default_factory=dict)


class FakeLLMServer:
    """TEST DOUBLE server on 127.0.0.1 (port 0 = a free random port), in a background thread.

    Use as a context manager::

        with FakeLLMServer(["85"]) as server:
            query_model("...", url=server.ollama_url)

    ``requests`` lists what it received; ``chat_count()`` counts chat requests and
    ``generation_count()`` every generation request; ``max_in_flight`` is the most
    it served at once. ``jitter=n`` adds a random integer in ``[-n, n]`` to the
    default judge's 0–100 scores (a non-deterministic judge; ``rng_seed`` fixes the draws).
    """

    def __init__(self, script: Script = None, *, models: Sequence[str] = DEFAULT_MODELS,
                 host: str = "127.0.0.1", port: int = 0, version: str = VERSION,
                 check_model: bool = True, verbose: bool = False, jitter: int = 0,
                 rng_seed: Optional[int] = None):
        self.script = script
        self.models = list(models)
        self.version = version
        self.check_model = check_model
        self.verbose = verbose
        self.jitter = jitter
        self.requests: List[RequestRecord] = []
        self.max_in_flight = 0
        self._rng = random.Random(rng_seed)
        self._address = (host, port)
        self._lock = threading.Lock()
        self._script_position = 0
        self._current = 0
        self._stopping = threading.Event()
        self._httpd: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # lifecycle -----------------------------------------------------------------
    def start(self) -> "FakeLLMServer":
        """Bind and serve in a daemon thread; returns ``self``."""
        self._stopping.clear()
        self._httpd = _Server(self._address, _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-llm-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (waiting, streaming and dripping requests are released)."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # addresses -----------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("O servidor de teste não foi iniciado (use start() ou 'with').")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self._address[0]
        return f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{self.port}"

    @property
    def ollama_url(self) -> str:
        return self.url + "/api/chat"

    @property
    def openai_url(self) -> str:
        return self.url + "/v1/chat/completions"

    @property
    def llama_server_url(self) -> str:
        """llama.cpp's own raw-completion route."""
        return self.url + "/completion"

    # bookkeeping ------------------------------------------------------------------
    def chat_count(self) -> int:
        """Number of chat requests received (both chat routes)."""
        return sum(r.path in CHAT_PATHS for r in self.requests)

    def generation_count(self) -> int:
        """Number of chat and completion requests received."""
        return sum(r.path in GENERATION_PATHS for r in self.requests)

    def has_model(self, name: str) -> bool:
        """Ollama's rule: a name without a tag means ``:latest``."""
        wanted = name if ":" in name else name + ":latest"
        return name in self.models or wanted in self.models

    def _record(self, method: str, path: str, body: Optional[Dict[str, Any]], raw: bytes, headers: Any) -> None:
        with self._lock:
            self.requests.append(RequestRecord(method, path, body, raw, dict(headers.items())))

    def _in_flight(self):
        fake = self

        class _Guard:
            def __enter__(self) -> None:
                with fake._lock:
                    fake._current += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake._current)

            def __exit__(self, *exc: Any) -> None:
                with fake._lock:
                    fake._current -= 1
        return _Guard()

    def _reply_for(self, path: str, body: Dict[str, Any]) -> Reply:
        reply = self._scripted(request_prompt(path, body), body)
        return reply if isinstance(reply, Reply) else Reply(str(reply))

    def _default(self, prompt: str, body: Dict[str, Any]) -> str:
        with self._lock:
            noise = self._rng.randint(-self.jitter, self.jitter) if self.jitter else 0
        return overlap_judge(prompt, structured=wants_json(body), noise=noise)

    def _scripted(self, prompt: str, body: Dict[str, Any]) -> Union[str, Reply]:
        script = self.script
        if script is None:
            return self._default(prompt, body)
        if callable(script):
            return script(prompt, body)
        if isinstance(script, Mapping):
            if prompt in script:
                return script[prompt]
            for key, value in script.items():
                if key in prompt:
                    return value
            return self._default(prompt, body)
        with self._lock:
            position = self._script_position
            self._script_position += 1
        if position >= len(script):
            return Reply(status=500, error=f"test double: script exhausted after {len(script)} replies")
        return script[position]


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Serve the TEST DOUBLE until Ctrl+C."""
    parser = argparse.ArgumentParser(
        description="Servidor DUBLÊ DE TESTE com as APIs do Ollama, da OpenAI e do llama.cpp. Não é um juiz: "
                    "as notas vêm de sobreposição de palavras.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--model", action="append", dest="models",
                        help="modelo anunciado (repetível; padrão llama3:latest)")
    parser.add_argument("--verbose", action="store_true", help="mostra cada pedido")
    args = parser.parse_args(argv)
    server = FakeLLMServer(models=args.models or DEFAULT_MODELS, host=args.host, port=args.port,
                           verbose=args.verbose)
    try:
        server.start()
    except OSError as exc:
        raise SystemExit(f"Não foi possível usar {args.host}:{args.port}: {exc.strerror or exc}. "
                         "Já há um servidor (Ollama?) nessa porta? Use --port.") from None
    print(f"Servidor DUBLÊ DE TESTE (não é um juiz) em http://{args.host}:{server.port} — Ctrl+C para parar.",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
