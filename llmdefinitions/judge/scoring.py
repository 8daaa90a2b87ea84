"""Scoring a whole file with the judge: one result per item, never dropped, and a report of the run.

:func:`score_responses` asks the judge about every item, a few at a time, and
returns one :class:`ScoreResult` per item in input order: a score, or the reason
there is none. Around that loop:

* **Cache** (:class:`~.cache.ReplyCache`): replies are written as they arrive;
  a rerun asks only for the items that have no reply yet (the failed ones).
* **No endless waits.** Every attempt is bounded (``timeout``, ``deadline``,
  ``max_reply_bytes`` of the client), and after ``max_consecutive_failures``
  items in a row fail the same way (a judge that hangs or answers 500) the
  remaining items are not sent; they are marked ``not_attempted`` with the
  reason. Errors that would repeat for every item (server down, model not
  pulled, package missing) stop the run at once with their :class:`JudgeError`.
* **A report** (:class:`ScoringReport`, ``results.report``): how many items were
  scored, unparsable, failed, not attempted, and whether the judge answered at
  all, so that a command line can exit with an error when it did not.
"""
from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ..io import PathLike, read_json, write_json_atomic
from .cache import ReplyCache, cache_key
from .clients import JudgeClient, make_client
from .core import build_score_prompt, explain_score
from .defaults import DEFAULT_MAX_CONSECUTIVE_FAILURES, DEFAULT_MODEL, DEFAULT_OPTIONS, DEFAULT_URL
from .errors import FATAL_ERRORS, JudgeError, JudgeHTTPError
from .structured import SCORE_SCHEMA, explain_json_score
from .summary import Repeatability, ScoreSummary, repeatability, summarize_scores

STATUSES = ("scored", "empty_response", "unparsable", "error", "missing_field", "not_attempted")
ReplyParser = Callable[[str], Tuple[Optional[int], Optional[str], Optional[str]]]
PromptBuilder = Callable[[Mapping[str, Any], str], str]


@dataclass
class ScoreResult:
    """One item's outcome: ``score`` or the ``reason`` there is none, and the judge's ``reply``.

    ``status``: ``"scored"``; ``"empty_response"`` (scored without asking, see
    :func:`score_responses`); ``"unparsable"`` (a reply without a valid score);
    ``"error"`` (the request failed: unreachable, timeout, server error);
    ``"missing_field"``; ``"not_attempted"`` (the run stopped before this item).
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


@dataclass
class ScoringReport:
    """What happened to the items of one run; ``str()`` gives it in pt-BR."""

    n_total: int
    n_scored: int             # the judge's reply gave a score
    n_empty_response: int     # scored without asking: the model's response was empty
    n_unparsable: int         # the judge replied, without a valid score
    n_failed: int             # the request failed (unreachable, timeout, server error)
    n_missing_field: int
    n_not_attempted: int      # not sent: the run stopped early
    n_cached: int             # replies read from the cache instead of asked
    stopped_reason: Optional[str] = None
    cache_skipped_lines: int = 0

    @classmethod
    def from_results(cls, results: Sequence[ScoreResult], stopped_reason: Optional[str] = None,
                     cache_skipped_lines: int = 0) -> "ScoringReport":
        count = {status: 0 for status in STATUSES}
        for r in results:
            count[r.status] = count.get(r.status, 0) + 1
        return cls(len(results), count["scored"], count["empty_response"], count["unparsable"],
                   count["error"], count["missing_field"], count["not_attempted"],
                   sum(r.cached for r in results), stopped_reason, cache_skipped_lines)

    @property
    def n_with_score(self) -> int:
        return self.n_scored + self.n_empty_response

    @property
    def n_replies(self) -> int:
        """Items with a reply from the judge (asked now or read from the cache)."""
        return self.n_scored + self.n_unparsable

    @property
    def judge_never_answered(self) -> bool:
        """The judge was needed and not one reply came back: a command should exit with an error."""
        return self.n_replies == 0 and self.n_failed + self.n_not_attempted > 0

    @property
    def complete(self) -> bool:
        """Every item has a score or a final reason (nothing failed or left unsent)."""
        return self.n_failed == 0 and self.n_not_attempted == 0

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "n_with_score": self.n_with_score, "n_replies": self.n_replies,
                "judge_never_answered": self.judge_never_answered, "complete": self.complete}

    def __str__(self) -> str:
        parts = [f"{self.n_with_score} com nota"
                 + (f" ({self.n_empty_response} sem consultar o juiz: resposta vazia)"
                    if self.n_empty_response else "")]
        for count, text in ((self.n_unparsable, "sem nota legível na resposta do juiz"),
                            (self.n_failed, "com falha ao falar com o juiz"),
                            (self.n_missing_field, "sem o campo da resposta"),
                            (self.n_not_attempted, "não enviados ao juiz")):
            if count:
                parts.append(f"{count} {text}")
        text = f"{self.n_total} itens: " + "; ".join(parts) + "."
        if self.n_cached:
            text += f" {self.n_cached} respostas vieram do cache."
        if self.cache_skipped_lines:
            text += f" {self.cache_skipped_lines} linha(s) ilegível(is) do cache ignorada(s)."
        if self.judge_never_answered:
            text += " O juiz não respondeu a nenhum item."
        if self.stopped_reason:
            text += f" A avaliação parou antes do fim: {self.stopped_reason}"
        return text


class ScoreResults(list):
    """One :class:`ScoreResult` per item, in input order, with the run's ``report``."""

    def __init__(self, results: Iterable[ScoreResult] = (), report: Optional[ScoringReport] = None):
        super().__init__(results)
        self.report = report or ScoringReport.from_results(self)


class ScoreList(list):
    """The book's list of int scores, plus ``results`` (one per item), ``failures`` and ``report``.

    ``len(scores)`` counts scored items only, as in the book; ``scores.n_total``
    is the number of items and ``scores.failures`` says why the rest have no score.
    """

    def __init__(self, results: Sequence[ScoreResult]):
        self.results: List[ScoreResult] = list(results)
        self.report: ScoringReport = getattr(results, "report", None) or ScoringReport.from_results(self.results)
        super().__init__(r.score for r in self.results if r.score is not None)

    @property
    def failures(self) -> List[ScoreResult]:
        return [r for r in self.results if r.score is None]

    @property
    def n_total(self) -> int:
        return len(self.results)

    def summary(self) -> ScoreSummary:
        return summarize_scores(self.results)


# --------------------------------------------------------------------------- parsers

def parse_0_100(reply: str) -> Tuple[Optional[int], Optional[str], Optional[str]]:
    """``(score, feedback, reason)`` of a free-text reply (the book's prompt)."""
    score, reason = explain_score(reply)
    return score, None, reason


def parse_json_0_100(reply: str) -> Tuple[Optional[int], Optional[str], Optional[str]]:
    """``(score, feedback, reason)`` of a structured reply ``{"score": N}``."""
    score, reason = explain_json_score(reply)
    return score, None, reason


# --------------------------------------------------------------------------- the run

def score_responses(
    json_data: Union[Sequence[Mapping[str, Any]], PathLike],
    json_key: str,
    model: str = DEFAULT_MODEL,
    *,
    url: str = DEFAULT_URL,
    api: Optional[str] = None,
    client: Optional[JudgeClient] = None,
    prompt_builder: PromptBuilder = build_score_prompt,
    parser: Optional[ReplyParser] = None,
    structured: Union[bool, Mapping[str, Any]] = False,
    empty_response_score: Optional[int] = 0,
    max_workers: int = 4,
    cache_path: Optional[PathLike] = None,
    max_consecutive_failures: Optional[int] = DEFAULT_MAX_CONSECUTIVE_FAILURES,
    progress: bool = True,
    **client_kwargs: Any,
) -> ScoreResults:
    """Ask the judge to score ``entry[json_key]`` for every entry; one :class:`ScoreResult` per item.

    * ``json_data``: the list of entries, or the path of a JSON file with it.
    * ``client`` or (``url``, ``api``, and client keywords: ``timeout``,
      ``deadline``, ``max_reply_bytes``, ``retries``, ``backoff``, ``options``,
      ``stream``...): the judge; see :func:`~.clients.make_client`.
    * ``structured``: ``True`` asks for ``{"score": N}`` with a JSON schema
      (:data:`~.structured.SCORE_SCHEMA`) and reads the reply as JSON; a dict is
      another schema (use it with a matching ``parser``).
    * Empty responses (``""`` or only spaces) get ``empty_response_score`` (0)
      without asking the judge, with ``status="empty_response"`` and the reason
      recorded; pass ``None`` to send them to the judge like any other.
    * Per-item failures (timeout, 5xx after the retries, malformed or dropped
      reply, unparsable score, missing field) are recorded, never dropped. After
      ``max_consecutive_failures`` items in a row fail the same way, the rest are
      marked ``not_attempted`` (``None`` or 0: never stop). Failures that would
      repeat for every item (server down, model not pulled, package missing)
      stop the run with their :class:`JudgeError`; with ``cache_path`` the
      replies already received are kept.
    * ``max_workers`` requests run at once; results are in input order.
    * ``cache_path``: JSONL reply cache (see :class:`~.cache.ReplyCache`); a
      rerun asks only for the items without a reply.

    Returns a :class:`ScoreResults` (a list) whose ``report`` counts the outcomes.
    """
    entries = read_json(json_data) if isinstance(json_data, (str, os.PathLike)) else json_data
    _require_key(entries, json_key)
    client = client or make_client(model, url, api=api, **client_kwargs)
    schema = SCORE_SCHEMA if structured is True else (dict(structured) if structured else None)
    parser = parser or (parse_json_0_100 if structured is True else parse_0_100)
    cache = ReplyCache(cache_path) if cache_path is not None else None
    return _score_all(entries, json_key, client, prompt_builder=prompt_builder, parser=parser, schema=schema,
                      empty_response_score=empty_response_score, max_workers=max_workers, cache=cache,
                      max_consecutive_failures=max_consecutive_failures, progress=progress)


def _require_key(entries: Sequence[Mapping[str, Any]], json_key: str) -> None:
    if entries and not any(isinstance(e, Mapping) and json_key in e for e in entries):
        keys = sorted(entries[0].keys()) if isinstance(entries[0], Mapping) else []
        raise KeyError(
            f"Nenhum item tem o campo {json_key!r} com a resposta a avaliar. "
            f"Campos do primeiro item: {', '.join(keys) or 'nenhum'}.")


def request_variant(options: Mapping[str, Any], schema: Optional[Mapping[str, Any]], extra: str = "") -> str:
    """What, besides model and prompt, changes the judge's reply: the cache key's ``variant``.

    Empty for the default request, so caches written before these options existed stay valid.
    """
    parts: Dict[str, Any] = {}
    changed = {k: v for k, v in options.items() if DEFAULT_OPTIONS.get(k, object()) != v}
    if changed:
        parts["options"] = dict(options)
    if schema is not None:
        parts["schema"] = schema
    if extra:
        parts["variant"] = extra
    return json.dumps(parts, sort_keys=True, ensure_ascii=False) if parts else ""


class FailureBreaker:
    """Counts items in a row that failed the same way; at ``limit`` the run stops sending."""

    def __init__(self, limit: Optional[int]):
        self.limit = limit or 0
        self.reason: Optional[str] = None
        self._kind: Optional[str] = None
        self._count = 0
        self._lock = threading.Lock()

    def success(self) -> None:
        with self._lock:
            self._kind, self._count = None, 0

    def failure(self, exc: JudgeError) -> None:
        kind = type(exc).__name__ + (f" {exc.status}" if isinstance(exc, JudgeHTTPError) else "")
        with self._lock:
            self._count = self._count + 1 if kind == self._kind else 1
            self._kind = kind
            if self.limit and self._count >= self.limit and self.reason is None:
                self.reason = f"{self._count} itens seguidos falharam do mesmo jeito; o último: {exc}"


def _score_all(entries: Sequence[Mapping[str, Any]], json_key: str, client: JudgeClient, *,
               prompt_builder: PromptBuilder, parser: ReplyParser, schema: Optional[Mapping[str, Any]],
               empty_response_score: Optional[int], max_workers: int, cache: Optional[ReplyCache],
               max_consecutive_failures: Optional[int], progress: bool,
               call_options: Optional[Mapping[str, Any]] = None, variant: str = "",
               desc: Optional[str] = None) -> ScoreResults:
    """The loop of :func:`score_responses` for a ready client and cache."""
    breaker = FailureBreaker(max_consecutive_failures)
    key_variant = request_variant(client.request_options(call_options), schema, variant)

    def work(index: int) -> ScoreResult:
        entry = entries[index]
        try:
            response = entry[json_key]
            prompt = prompt_builder(entry, json_key)
        except KeyError as exc:
            return ScoreResult(index, None, "missing_field", reason=f"o item {index} não tem o campo {exc.args[0]!r}")
        if empty_response_score is not None and not str(response or "").strip():
            return ScoreResult(index, empty_response_score, "empty_response",
                               reason=f"resposta do modelo vazia: nota {empty_response_score} sem consultar o juiz")
        key = cache_key(client.model, prompt, key_variant)
        reply = cache.get(key) if cache is not None else None
        cached = reply is not None
        if reply is None:
            if breaker.reason:
                return ScoreResult(index, None, "not_attempted",
                                   reason=f"item {index} não foi enviado ao juiz: {breaker.reason}")
            try:
                reply = client.chat(prompt, options=call_options, schema=schema)
            except FATAL_ERRORS:
                raise
            except JudgeError as exc:
                breaker.failure(exc)
                return ScoreResult(index, None, "error", reason=f"item {index}: {exc}")
            breaker.success()
            if cache is not None:
                cache.put(key, client.model, reply)
        score, feedback, reason = parser(reply)
        status = "scored" if score is not None else "unparsable"
        reason = f"item {index}: {reason}" if reason else None
        return ScoreResult(index, score, status, reason=reason, reply=reply, feedback=feedback, cached=cached)

    results = _run_in_order(len(entries), work, max_workers, progress, desc or f"Avaliando ({client.model})")
    report = ScoringReport.from_results(results, breaker.reason, cache.skipped_lines if cache is not None else 0)
    return ScoreResults(results, report)


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


# --------------------------------------------------------------------------- repeatability

def measure_repeatability(
    json_data: Union[Sequence[Mapping[str, Any]], PathLike],
    json_key: str,
    model: str = DEFAULT_MODEL,
    *,
    repeats: int = 3,
    vary_seed: bool = False,
    url: str = DEFAULT_URL,
    api: Optional[str] = None,
    client: Optional[JudgeClient] = None,
    structured: bool = False,
    max_workers: int = 4,
    cache_path: Optional[PathLike] = None,
    progress: bool = True,
    **client_kwargs: Any,
) -> Repeatability:
    """Score every item ``repeats`` times and measure how much the judge's score moves.

    The same request is sent each time; with ``vary_seed`` repeat *r* uses seed
    ``seed + r`` (how much the score depends on the sampling). Every item goes to
    the judge, empty responses too (a fixed 0 would look perfectly stable). Replies are cached
    per repeat (``cache_path``), apart from a normal run's. Returns
    :class:`~.summary.Repeatability` (per-item range and SD, share of items whose
    score changed, mean absolute change with its interval).
    """
    if repeats < 2:
        raise ValueError(f"Repetibilidade precisa de ao menos 2 repetições; recebi repeats={repeats}.")
    entries = read_json(json_data) if isinstance(json_data, (str, os.PathLike)) else json_data
    _require_key(entries, json_key)
    client = client or make_client(model, url, api=api, **client_kwargs)
    cache = ReplyCache(cache_path) if cache_path is not None else None
    runs = []
    for r in range(repeats):
        call_options = {"seed": int(client.options.get("seed", 0)) + r} if vary_seed else None
        runs.append(_score_all(
            entries, json_key, client, prompt_builder=build_score_prompt,
            parser=parse_json_0_100 if structured else parse_0_100,
            schema=SCORE_SCHEMA if structured else None, empty_response_score=None,
            max_workers=max_workers, cache=cache, max_consecutive_failures=DEFAULT_MAX_CONSECUTIVE_FAILURES,
            progress=progress, call_options=call_options, variant=f"repeat {r}",
            desc=f"Repetição {r + 1}/{repeats} ({client.model})"))
    return repeatability(runs)


# --------------------------------------------------------------------------- files

def save_score_results(results: Sequence[ScoreResult], path: PathLike) -> Path:
    """Write results as a JSON list (UTF-8, atomic)."""
    return write_json_atomic(path, [asdict(r) for r in results])


def load_score_results(path: PathLike) -> List[ScoreResult]:
    """Results written by :func:`save_score_results`."""
    return [ScoreResult(**record) for record in read_json(path)]


__all__ = ["ScoreResult", "ScoreResults", "ScoreList", "ScoringReport", "STATUSES", "score_responses",
           "measure_repeatability", "save_score_results", "load_score_results", "parse_0_100",
           "parse_json_0_100", "request_variant", "ReplyParser"]
