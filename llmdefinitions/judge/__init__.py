"""LLM-as-a-judge (section 7 of the lecture): a bigger LLM scores our model's responses.

Start with :mod:`.core`: the book's prompt, ``query_model`` and
``generate_model_scores``, and how a score is read from a reply. The other
modules make that safe for a class of 30 students, one job each:

* :mod:`.defaults` — the default model, URL, request options and limits (once);
* :mod:`.errors` — one exception per way a request fails, pt-BR messages;
* :mod:`.transport` — HTTP with a timeout, an overall deadline and a size cap;
  NDJSON/SSE lines; retries;
* :mod:`.servers` — which protocol a URL speaks; ``check_server``, ``check_if_running``;
* :mod:`.clients` — Ollama, OpenAI-compatible, llama.cpp and in-process clients:
  chat with messages, raw completion, options, structured output;
* :mod:`.structured` — JSON schemas for the score, and reading a JSON reply;
* :mod:`.cache` — the JSONL reply cache (a rerun asks only for what is missing);
* :mod:`.scoring` — a whole file: one result per item, threads, early stop, report;
* :mod:`.rubric` — the 1–5 rubric mode with feedback;
* :mod:`.summary` — means with intervals, paired comparisons, agreement, repeatability.

Every public name is importable from ``llmdefinitions.judge``.
"""
from .cache import ReplyCache, cache_key
from .clients import (
    JudgeClient, LlamaCppClient, LlamaServerClient, OllamaClient, OpenAIClient, as_messages, make_client,
    normalize_options,
)
from .core import build_score_prompt, explain_score, generate_model_scores, parse_score, query_model, strip_thinking
from .defaults import (
    DEFAULT_BACKOFF, DEFAULT_DEADLINE, DEFAULT_MAX_CONSECUTIVE_FAILURES, DEFAULT_MAX_REPLY_BYTES, DEFAULT_MODEL,
    DEFAULT_OPTIONS, DEFAULT_RETRIES, DEFAULT_TIMEOUT, DEFAULT_URL,
)
from .errors import (
    FATAL_ERRORS, JudgeConnectionError, JudgeDeadlineError, JudgeDependencyError, JudgeError, JudgeHTTPError,
    JudgeProtocolError, JudgeReplyTooLargeError, JudgeServerError, JudgeStreamError, JudgeTimeoutError,
    ModelNotFoundError,
)
from .rubric import build_rubric_prompt, explain_rubric, parse_rubric, score_with_rubric
from .scoring import (
    STATUSES, ReplyParser, ScoreList, ScoreResult, ScoreResults, ScoringReport, load_score_results,
    measure_repeatability, save_score_results, score_responses,
)
from .servers import (
    API_NAMES, OLLAMA_CHAT_PATH, OPENAI_CHAT_PATH, ROUTES, ServerStatus, check_if_running, check_server, detect_api,
    route_url, server_base_url,
)
from .structured import RUBRIC_SCHEMA, SCORE_SCHEMA, explain_json_score
from .summary import (
    Agreement, Repeatability, ScoreComparison, ScoreLike, ScoreSummary, align_by_index, compare_scores,
    judge_agreement, repeatability, summarize_scores,
)
from .transport import Limits

__all__ = [
    # the book's functions (core)
    "build_score_prompt", "query_model", "generate_model_scores", "parse_score", "explain_score",
    "strip_thinking",
    # defaults
    "DEFAULT_MODEL", "DEFAULT_URL", "DEFAULT_OPTIONS", "DEFAULT_TIMEOUT", "DEFAULT_DEADLINE",
    "DEFAULT_MAX_REPLY_BYTES", "DEFAULT_RETRIES", "DEFAULT_BACKOFF", "DEFAULT_MAX_CONSECUTIVE_FAILURES",
    # errors
    "JudgeError", "JudgeConnectionError", "JudgeTimeoutError", "JudgeDeadlineError", "JudgeServerError",
    "JudgeHTTPError", "ModelNotFoundError", "JudgeProtocolError", "JudgeStreamError", "JudgeReplyTooLargeError",
    "JudgeDependencyError", "FATAL_ERRORS",
    # servers, transport and clients
    "API_NAMES", "ROUTES", "OLLAMA_CHAT_PATH", "OPENAI_CHAT_PATH", "detect_api", "server_base_url", "route_url",
    "check_if_running", "check_server", "ServerStatus", "Limits",
    "JudgeClient", "OllamaClient", "OpenAIClient", "LlamaServerClient", "LlamaCppClient", "make_client",
    "normalize_options", "as_messages",
    # structured output, cache, scoring, rubric
    "SCORE_SCHEMA", "RUBRIC_SCHEMA", "explain_json_score", "ReplyCache", "cache_key",
    "STATUSES", "ScoreResult", "ScoreResults", "ScoreList", "ScoringReport", "ReplyParser", "score_responses",
    "measure_repeatability", "save_score_results", "load_score_results",
    "build_rubric_prompt", "parse_rubric", "explain_rubric", "score_with_rubric",
    # summaries
    "ScoreLike", "ScoreSummary", "summarize_scores", "ScoreComparison", "compare_scores", "Agreement",
    "judge_agreement", "align_by_index", "Repeatability", "repeatability",
]
