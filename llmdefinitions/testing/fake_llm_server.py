"""TEST DOUBLE — a stand-in HTTP server that speaks the Ollama and OpenAI chat protocols.

**This is not a judge and not a language model.** It answers with scripted text
so that tests (and notebook 07 in the ``teste`` profile, which has no Ollama)
can exercise ``llmdefinitions.judge`` over real HTTP: streaming, errors,
retries, timeouts. Any number it "scores" is a word-overlap heuristic, not an
evaluation of quality; never report it as a result.

Endpoints, with the wire format of Ollama's published API docs (docs/api.md)
and OpenAI's chat completions API:

* ``POST /api/chat`` — NDJSON stream when ``"stream"`` is absent or true: lines
  ``{"model", "created_at", "message": {"role": "assistant", "content"}, "done": false}``
  and a final line with ``"done": true, "done_reason": "stop"`` and the durations;
  one JSON object when ``"stream": false``. Unknown model: 404
  ``{"error": "model \\"x\\" not found, try pulling it first"}``.
* ``GET /api/tags``, ``GET /api/version``.
* ``POST /v1/chat/completions`` — ``choices[0].message.content``, or with
  ``"stream": true`` server-sent events ``data: {...}`` with
  ``choices[0].delta.content`` and a final ``data: [DONE]``. ``GET /v1/models``.

Replies are scripted (``script=``): ``None`` (the default word-overlap
"judge", :func:`overlap_judge`), a callable ``(prompt, body) -> str | Reply``,
a list of replies used one per chat request, or a dict from prompt (or a
substring of it) to reply. A :class:`Reply` can script failures: an HTTP error
(404, 500...), a delay, a malformed stream line, a connection dropped mid-stream.

Run it stand-alone (used by notebook 07 in the ``teste`` profile)::

    python -m llmdefinitions.testing.fake_llm_server --port 11434
"""
from __future__ import annotations

import argparse
import json
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

DEFAULT_MODELS = ("llama3:latest",)
VERSION = "0.5.7"


@dataclass
class Reply:
    """A scripted reply: text, or a failure mode.

    ``status``/``error``: answer with this HTTP status and error body instead.
    ``delay``: seconds to wait before answering (beyond the client's timeout = a slow server).
    ``chunk_delay``: seconds between streamed lines.
    ``malformed_line``: 1-based streamed line replaced by broken JSON.
    ``drop_after``: close the connection after this many streamed lines (no final line).
    ``interrupted``: OpenAI stream only: the role chunk then ``data: [DONE]`` with no
    ``finish_reason``, as llama-cpp-python's server does to a stream cut by a newer request.
    """

    content: str = ""
    status: int = 200
    error: Optional[str] = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    malformed_line: Optional[int] = None
    drop_after: Optional[int] = None
    interrupted: bool = False


Script = Union[None, Callable[[str, Dict[str, Any]], Union[str, Reply]],
               Sequence[Union[str, Reply]], Mapping[str, Union[str, Reply]]]


# --------------------------------------------------------------------------- default "judge"

_SEED_PROMPT = re.compile(
    r"and correct output `(?P<ref>.*?)`, score the model response `(?P<resp>.*)` on a scale from 0 to 100",
    re.DOTALL)
_RUBRIC_PROMPT = re.compile(r"Reference answer: `(?P<ref>.*?)`\nModel response: `(?P<resp>.*?)`\n", re.DOTALL)


def word_overlap(reference: str, response: str) -> float:
    """F1 of the words shared by two texts (case-insensitive), from 0 to 1."""
    ref, resp = Counter(re.findall(r"\w+", reference.lower())), Counter(re.findall(r"\w+", response.lower()))
    common = sum((ref & resp).values())
    if not common:
        return 0.0
    precision, recall = common / sum(resp.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def overlap_judge(prompt: str) -> str:
    """The default scripted reply: a deterministic score from word overlap (NOT a judgement).

    The seed's 0–100 prompt gets ``round(100 * overlap)``; the 1–5 rubric prompt
    gets a JSON object; any other prompt gets a fixed sentence.
    """
    match = _SEED_PROMPT.search(prompt)
    if match:
        return str(round(100 * word_overlap(match["ref"], match["resp"])))
    match = _RUBRIC_PROMPT.search(prompt)
    if match:
        overlap = word_overlap(match["ref"], match["resp"])
        return json.dumps({"score": 1 + round(4 * overlap),
                           "feedback": f"word overlap {overlap:.2f} (test double, not a judgement)"})
    return "This is a scripted reply from the test double server."


# --------------------------------------------------------------------------- wire formats

def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _pieces(text: str) -> List[str]:
    """Split text into token-like pieces that concatenate back to it."""
    return re.findall(r"\S+\s*|\s+", text)


def _ollama_stats() -> Dict[str, int]:
    return {"total_duration": 5191566416, "load_duration": 2154458, "prompt_eval_count": 26,
            "prompt_eval_duration": 383809000, "eval_count": 298, "eval_duration": 4799921000}


def ollama_chat_lines(model: str, content: str) -> List[Dict[str, Any]]:
    """The NDJSON objects of a streamed ``/api/chat`` reply."""
    lines: List[Dict[str, Any]] = [
        {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": piece},
         "done": False}
        for piece in _pieces(content)]
    lines.append({"model": model, "created_at": _now(), "message": {"role": "assistant", "content": ""},
                  "done_reason": "stop", "done": True, **_ollama_stats()})
    return lines


def ollama_chat_object(model: str, content: str) -> Dict[str, Any]:
    """The single JSON object of ``/api/chat`` with ``"stream": false``."""
    return {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": content},
            "done_reason": "stop", "done": True, **_ollama_stats()}


def openai_completion(model: str, content: str) -> Dict[str, Any]:
    """A non-streamed ``/v1/chat/completions`` reply."""
    tokens = len(_pieces(content))
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": "fp_test_double",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 26, "completion_tokens": tokens, "total_tokens": 26 + tokens}}


def openai_chunks(model: str, content: str) -> List[Dict[str, Any]]:
    """The ``data:`` objects of a streamed ``/v1/chat/completions`` reply (before ``[DONE]``)."""
    def chunk(delta: Dict[str, Any], finish: Optional[str]) -> Dict[str, Any]:
        return {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "system_fingerprint": "fp_test_double",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    pieces = _pieces(content)
    chunks = [chunk({"role": "assistant", "content": p}, None) for p in pieces]
    chunks.append(chunk({}, "stop"))
    return chunks


# --------------------------------------------------------------------------- server

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
        if self.server.fake.verbose:
            super().log_message(format, *args)

    # routing ---------------------------------------------------------------
    def do_GET(self) -> None:
        fake = self.server.fake
        fake._record("GET", self.path, None)
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
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        except ValueError:
            fake._record("POST", self.path, None)
            self._send_json(400, {"error": "invalid JSON body"})
            return
        fake._record("POST", self.path, body)
        if self.path == "/api/chat":
            self._chat(body, openai=False)
        elif self.path == "/v1/chat/completions":
            self._chat(body, openai=True)
        else:
            self._send_text(404, "404 page not found")

    # chat --------------------------------------------------------------------
    def _chat(self, body: Dict[str, Any], openai: bool) -> None:
        fake = self.server.fake
        model = str(body.get("model", ""))
        with fake._in_flight():
            if fake.check_model and not fake.has_model(model):
                message = f'model "{model}" not found, try pulling it first'
                self._send_error(404, message, openai)
                return
            reply = fake._reply_for(_prompt(body), body)
            if reply.delay and fake._stopping.wait(reply.delay):
                return
            if reply.status != 200:
                self._send_error(reply.status, reply.error or f"scripted error {reply.status}", openai)
                return
            stream = body.get("stream", not openai)  # Ollama streams by default, OpenAI does not
            if openai:
                self._openai_reply(model, reply, stream)
            else:
                self._ollama_reply(model, reply, stream)

    def _ollama_reply(self, model: str, reply: Reply, stream: bool) -> None:
        if not stream:
            self._send_json(200, ollama_chat_object(model, reply.content), compact=True)
            return
        objects = ollama_chat_lines(model, reply.content)
        lines = [json.dumps(obj, separators=(",", ":")) + "\n" for obj in objects]
        broken = '{"model": "' + model + '", "message": {"content": \n'
        self._stream("application/x-ndjson", lines, reply, broken)

    def _openai_reply(self, model: str, reply: Reply, stream: bool) -> None:
        if not stream:
            self._send_json(200, openai_completion(model, reply.content))
            return
        chunks = openai_chunks(model, reply.content)
        if reply.interrupted:
            chunks = [openai_chunks(model, "")[0]]
            chunks[0]["choices"][0]["delta"] = {"role": "assistant"}
            chunks[0]["choices"][0]["finish_reason"] = None
        events = [f"data: {json.dumps(obj)}\n\n" for obj in chunks]
        events.append("data: [DONE]\n\n")
        self._stream("text/event-stream", events, reply, 'data: {"id": "chatcmpl-test", "choices": [\n\n')

    def _stream(self, content_type: str, lines: List[str], reply: Reply, broken: str) -> None:
        """Send ``lines`` with chunked transfer encoding, applying the scripted failures."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for number, line in enumerate(lines, start=1):
            if reply.drop_after is not None and number > reply.drop_after:
                self._drop_connection()
                return
            if reply.chunk_delay and self.server.fake._stopping.wait(reply.chunk_delay):
                return
            self._write_chunk(broken if number == reply.malformed_line else line)
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
    def _send_error(self, status: int, message: str, openai: bool) -> None:
        if openai:
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


def _prompt(body: Mapping[str, Any]) -> str:
    """The text of the last user message of a chat request."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


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
    """One request the server received (``body`` is the parsed JSON of a POST)."""

    method: str
    path: str
    body: Optional[Dict[str, Any]]


class FakeLLMServer:
    """TEST DOUBLE server on 127.0.0.1 (port 0 = a free random port), in a background thread.

    Use as a context manager::

        with FakeLLMServer(["85"]) as server:
            query_model("...", url=server.ollama_url)

    ``requests`` lists what it received; ``chat_count()`` counts chat requests;
    ``max_in_flight`` is the most chat requests it served at once.
    """

    def __init__(self, script: Script = None, *, models: Sequence[str] = DEFAULT_MODELS,
                 host: str = "127.0.0.1", port: int = 0, version: str = VERSION,
                 check_model: bool = True, verbose: bool = False):
        self.script = script
        self.models = list(models)
        self.version = version
        self.check_model = check_model
        self.verbose = verbose
        self.requests: List[RequestRecord] = []
        self.max_in_flight = 0
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
        """Stop serving and close the socket (waiting requests are released)."""
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

    # bookkeeping ------------------------------------------------------------------
    def chat_count(self) -> int:
        """Number of chat requests received (both routes)."""
        return sum(r.path in ("/api/chat", "/v1/chat/completions") for r in self.requests)

    def has_model(self, name: str) -> bool:
        """Ollama's rule: a name without a tag means ``:latest``."""
        wanted = name if ":" in name else name + ":latest"
        return name in self.models or wanted in self.models

    def _record(self, method: str, path: str, body: Optional[Dict[str, Any]]) -> None:
        with self._lock:
            self.requests.append(RequestRecord(method, path, body))

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

    def _reply_for(self, prompt: str, body: Dict[str, Any]) -> Reply:
        reply = self._scripted(prompt, body)
        return reply if isinstance(reply, Reply) else Reply(str(reply))

    def _scripted(self, prompt: str, body: Dict[str, Any]) -> Union[str, Reply]:
        script = self.script
        if script is None:
            return overlap_judge(prompt)
        if callable(script):
            return script(prompt, body)
        if isinstance(script, Mapping):
            if prompt in script:
                return script[prompt]
            for key, value in script.items():
                if key in prompt:
                    return value
            return overlap_judge(prompt)
        with self._lock:
            position = self._script_position
            self._script_position += 1
        if position >= len(script):
            return Reply(status=500, error=f"test double: script exhausted after {len(script)} replies")
        return script[position]


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Serve the TEST DOUBLE until Ctrl+C."""
    parser = argparse.ArgumentParser(
        description="Servidor DUBLÊ DE TESTE com as APIs do Ollama e da OpenAI. Não é um juiz: "
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
