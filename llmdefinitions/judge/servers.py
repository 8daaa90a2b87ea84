"""Where the judge is: which protocol a URL speaks, its routes, and whether the server answers.

Three HTTP protocols, each with a chat route and a raw-completion route
(a prompt string sent as is, with no chat template):

=================  ===========================  ======================
``api``            chat                         raw completion
=================  ===========================  ======================
``"ollama"``       ``/api/chat``                ``/api/generate`` (``"raw": true``)
``"openai"``       ``/v1/chat/completions``     ``/v1/completions``
``"llama_server"`` ``/v1/chat/completions``     ``/completion`` (llama.cpp's own)
=================  ===========================  ======================

``"llama_cpp"`` (a ``llama_cpp.Llama`` in this process) needs no URL.
"""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .defaults import DEFAULT_MODEL, DEFAULT_URL
from .errors import JudgeConnectionError, JudgeError, ModelNotFoundError
from .transport import Limits, get_json

API_NAMES = ("ollama", "openai", "llama_server", "llama_cpp")
ROUTES: Dict[str, Dict[str, str]] = {
    "ollama": {"chat": "/api/chat", "complete": "/api/generate"},
    "openai": {"chat": "/v1/chat/completions", "complete": "/v1/completions"},
    "llama_server": {"chat": "/v1/chat/completions", "complete": "/completion"},
}
OLLAMA_CHAT_PATH = ROUTES["ollama"]["chat"]
OPENAI_CHAT_PATH = ROUTES["openai"]["chat"]


def detect_api(url: str) -> str:
    """The protocol of ``url`` from its path; a bare host means Ollama (the book's server)."""
    path = urllib.parse.urlsplit(url).path.rstrip("/")
    if path in ("", "/api") or path.endswith(("/api/chat", "/api/generate")):
        return "ollama"
    if path.endswith(("/v1", "/chat/completions", "/v1/completions")):
        return "openai"
    if path.endswith("/completion"):
        return "llama_server"
    raise ValueError(
        f"Não sei qual protocolo a URL '{url}' usa. Use .../api/chat (Ollama), "
        ".../v1/chat/completions (OpenAI: llama.cpp, vLLM, LM Studio) ou .../completion (llama.cpp), "
        "ou passe api='ollama', 'openai' ou 'llama_server'.")


def server_base_url(url: str) -> str:
    """``scheme://host:port`` plus any prefix before ``/api``, ``/v1`` or ``/completion``."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rstrip("/") + "/"
    for marker in ("/api/", "/v1/", "/completion/"):
        if marker in path:
            path = path[: path.index(marker)]
            break
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path.rstrip("/"), "", ""))


def route_url(url: str, api: str, kind: str) -> str:
    """The URL of route ``kind`` (``"chat"`` or ``"complete"``): ``url`` itself if it is that route."""
    route = ROUTES[api][kind]
    if urllib.parse.urlsplit(url).path.rstrip("/").endswith(route):
        return url
    return server_base_url(url) + route


# --------------------------------------------------------------------------- checks

def check_if_running(process_name: str) -> bool:
    """True if a local process whose name contains ``process_name`` is running (as in the book).

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
    ``/api/tags``; OpenAI-compatible and llama.cpp: ``/v1/models`` (servers such as
    llama.cpp ignore the model name, so a model missing from that list is only a note).
    ``timeout`` bounds each check request in all. Returns a :class:`ServerStatus`;
    raises :class:`JudgeError` only if ``raise_error`` and the check failed.
    """
    api = api or detect_api(url)
    if api == "llama_cpp":
        raise ValueError("check_server verifica servidores HTTP; api='llama_cpp' roda no próprio processo.")
    base = server_base_url(url)
    limits = Limits(timeout=timeout, deadline=timeout)
    status = ServerStatus(url=url, api=api, reachable=False, model=model)
    try:
        if api == "ollama":
            _check_ollama(base, model, limits, status)
        else:
            _check_openai(base, model, limits, status)
    except JudgeError as exc:
        status.message = str(exc) + _process_hint(api)
    if raise_error and not status.ok:
        raise JudgeConnectionError(status.message) if not status.reachable else ModelNotFoundError(status.message, 404)
    return status


def _check_ollama(base: str, model: str, limits: Limits, status: ServerStatus) -> None:
    version = get_json(base + "/api/version", limits, api="ollama")
    status.reachable = True
    status.version = str(version.get("version", "?"))
    tags = get_json(base + "/api/tags", limits, api="ollama")
    status.models = [m.get("name") or m.get("model", "") for m in tags.get("models", [])]
    status.model_available = _ollama_has_model(status.models, model)
    if status.model_available:
        status.message = f"Ollama {status.version} respondendo em {base}; modelo '{model}' disponível."
    else:
        listed = ", ".join(status.models) or "nenhum"
        status.message = (
            f"Ollama {status.version} respondendo em {base}, mas o modelo '{model}' não foi baixado "
            f"(modelos presentes: {listed}). Rode `ollama pull {model}` e tente de novo.")


def _ollama_has_model(names: Sequence[str], model: str) -> bool:
    """Ollama's rule: a name without a tag means ``:latest``."""
    wanted = model if ":" in model else model + ":latest"
    return any(n == model or n == wanted for n in names)


def _check_openai(base: str, model: str, limits: Limits, status: ServerStatus) -> None:
    listing = get_json(base + "/v1/models", limits, api="openai")
    status.reachable = True
    status.models = [m.get("id", "") for m in listing.get("data", [])]
    status.model_available = True if model in status.models else None
    status.message = f"Servidor compatível com a OpenAI respondendo em {base}."
    if status.model_available is None:
        status.message += (
            f" O modelo '{model}' não está na lista ({', '.join(status.models) or 'vazia'}); "
            "servidores como o llama.cpp ignoram o nome, outros (vLLM) recusam o pedido.")


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
