"""A whole generation run: candidates from the LLM, the filters, and files that account for every item.

:func:`generate_dataset` asks the model for ``n`` candidates (Magpie or
Self-Instruct) through a reply cache, filters them against a pool (the seed tasks
or the course's dataset), and — with ``output_dir`` — writes, atomically:

* ``sinteticos-<método>.json`` — the kept items, in the Alpaca format
  (``instruction``, ``input``, ``output``), checked by ``data.validate_entries``;
* ``sinteticos-<método>-contas.json`` — **every** candidate: what the model wrote,
  ``kept``, and for the rest the rule and the reason;
* ``sinteticos-<método>-resumo.json`` — the counts by reason, requests asked and
  reused, time, model, URL;
* ``sinteticos-<método>-cache.jsonl`` — the replies; run the same command again
  after an interruption and nothing is asked twice.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ..io import PathLike, write_json_atomic
from ..judge.cache import ReplyCache
from ..judge.clients import JudgeClient, make_client
from ..judge.defaults import DEFAULT_MODEL, DEFAULT_URL
from ..stats import format_decimal
from .candidates import Candidate
from .filters import RULES, FilterConfig, Verdict, filter_entries
from .magpie import generate_magpie
from .requests import CachedRequests
from .self_instruct import NUM_EXAMPLES, generate_self_instruct
from .templates import ChatTemplate

METHODS = ("magpie", "self-instruct")


@dataclass(frozen=True)
class DatagenPaths:
    """The files of one method's run in ``folder``."""

    folder: Path
    method: str

    def _file(self, suffix: str) -> Path:
        return self.folder / f"sinteticos-{self.method}{suffix}"

    kept = property(lambda self: self._file(".json"))
    accounts = property(lambda self: self._file("-contas.json"))
    summary = property(lambda self: self._file("-resumo.json"))
    cache = property(lambda self: self._file("-cache.jsonl"))


@dataclass
class DatagenReport:
    """How many items were asked for, kept, and dropped by each rule; ``str()`` gives it in pt-BR."""

    method: str
    model: str
    n_requested: int
    n_kept: int
    dropped: Dict[str, int]
    requests_asked: int
    requests_reused: int
    seconds: float

    @property
    def share_kept(self) -> float:
        return self.n_kept / self.n_requested if self.n_requested else 0.0

    @property
    def items_per_minute(self) -> Optional[float]:
        """Candidates per minute of this run (``None`` when nothing was asked: all from the cache).

        Replies reused from the cache make it faster than the model: see ``requests_reused``.
        """
        if self.requests_asked == 0 or self.seconds <= 0:
            return None
        return 60.0 * self.n_requested / self.seconds

    @property
    def n_failed(self) -> int:
        return self.dropped.get("error", 0) + self.dropped.get("not_attempted", 0)

    def to_dict(self) -> Dict[str, Any]:
        return {"method": self.method, "model": self.model, "n_requested": self.n_requested,
                "n_kept": self.n_kept, "share_kept": self.share_kept, "dropped": dict(self.dropped),
                "requests_asked": self.requests_asked, "requests_reused": self.requests_reused,
                "seconds": self.seconds, "items_per_minute": self.items_per_minute}

    def table(self) -> str:
        """Kept and dropped, one line per reason, with counts and shares (pt-BR numbers)."""
        rows = [("mantidos", self.n_kept)] + [(RULES.get(rule, rule), count)
                                              for rule, count in sorted(self.dropped.items(), key=lambda x: -x[1])]
        width = max(len(label) for label, _ in rows)
        lines = [f"{'destino':<{width}}  itens  parcela", "-" * (width + 16)]
        for label, count in rows:
            share = format_decimal(100 * count / self.n_requested, 1) if self.n_requested else "—"
            lines.append(f"{label:<{width}}  {count:>5}  {share:>6} %")
        return "\n".join(lines)

    def __str__(self) -> str:
        speed = self.items_per_minute
        timing = (f"{format_decimal(self.seconds, 1)} s, {format_decimal(speed, 1)} itens por minuto"
                  if speed is not None else "todas as respostas vieram do cache")
        return (f"{self.method} com {self.model}: {self.n_kept} de {self.n_requested} itens mantidos "
                f"({format_decimal(100 * self.share_kept, 1)} %). Pedidos ao modelo: {self.requests_asked} "
                f"feitos, {self.requests_reused} respondidos pelo cache; {timing}.\n" + self.table())


@dataclass
class DatagenResult:
    """Everything a run produced: candidates, one verdict each, the kept items and the report."""

    candidates: List[Candidate]
    verdicts: List[Verdict]
    report: DatagenReport
    paths: Optional[DatagenPaths] = None
    kept: List[Dict[str, str]] = field(default_factory=list)

    def accounts(self) -> List[Dict[str, Any]]:
        """One record per candidate: what the model wrote and what happened to it."""
        return [{**c.to_dict(), **{k: v for k, v in v.to_dict().items() if k != "index"}}
                for c, v in zip(self.candidates, self.verdicts)]


def verdicts_for(candidates: Sequence[Candidate], pool: Sequence[Mapping[str, str]] = (),
                   config: FilterConfig = FilterConfig()) -> List[Verdict]:
    """One verdict per candidate: failed requests keep their reason; the rest go through the filters."""
    generated = [c for c in candidates if c.status == "generated"]
    filtered = filter_entries([c.entry() for c in generated], pool, config, indices=[c.index for c in generated])
    by_index = {v.index: v for v in filtered}
    return [by_index.get(c.index) or Verdict(c.index, False, c.status, c.reason) for c in candidates]


def generate_dataset(
    method: str,
    n: int,
    *,
    client: Optional[JudgeClient] = None,
    model: str = DEFAULT_MODEL,
    url: str = DEFAULT_URL,
    api: Optional[str] = None,
    seed_tasks: Sequence[Mapping[str, str]] = (),
    pool: Optional[Sequence[Mapping[str, str]]] = None,
    template: Union[str, ChatTemplate, None] = None,
    response_mode: str = "chat",
    system: Optional[str] = None,
    num_examples: int = NUM_EXAMPLES,
    seed: int = 123,
    instruction_options: Optional[Mapping[str, Any]] = None,
    response_options: Optional[Mapping[str, Any]] = None,
    config: FilterConfig = FilterConfig(),
    output_dir: Optional[PathLike] = None,
    redo: bool = False,
    progress: bool = True,
    **client_kwargs: Any,
) -> DatagenResult:
    """Generate ``n`` candidates with ``method`` (``"magpie"`` or ``"self-instruct"``), filter, and account.

    * ``client`` or (``model``, ``url``, ``api`` and client keywords): the LLM, as for
      the judge (:func:`~llmdefinitions.judge.make_client`).
    * ``seed_tasks``: Self-Instruct's examples (required for it); ``pool``: the items
      generated ones must not repeat (default: ``seed_tasks``).
    * ``template``/``response_mode``/``system``: Magpie's chat template (default: from
      the model's name), how it asks for the response (``"chat"`` or ``"raw"``) and an
      optional system turn before the user's.
    * ``instruction_options``/``response_options``: request options on top of each
      method's (e.g. ``{"num_predict": 64}``); item *i*'s instruction keeps seed ``seed + i``.
    * ``output_dir``: where the files go (see the module docstring) and the reply cache
      lives; ``redo`` clears the cache first.
    """
    if method not in METHODS:
        raise ValueError(f"Método desconhecido: {method!r}. Use um destes: {', '.join(METHODS)}.")
    if n < 1:
        raise ValueError(f"O número de itens pedidos deve ser pelo menos 1 (recebido: {n}).")
    if method == "self-instruct" and not seed_tasks:
        raise ValueError("O Self-Instruct precisa de tarefas-semente (seed_tasks): nenhuma foi passada.")
    client = client or make_client(model, url, api=api, **client_kwargs)
    paths = DatagenPaths(Path(output_dir), method) if output_dir is not None else None
    cache = ReplyCache(paths.cache) if paths is not None else None
    if cache is not None and redo:
        cache.clear()
    requests = CachedRequests(client, cache)
    start = time.perf_counter()
    if method == "magpie":
        candidates = generate_magpie(requests, n, template=template, response_mode=response_mode, system=system,
                                     seed=seed, instruction_options=instruction_options,
                                     response_options=response_options, progress=progress)
    else:
        candidates = generate_self_instruct(requests, seed_tasks, n, num_examples=num_examples, seed=seed,
                                            instruction_options=instruction_options,
                                            response_options=response_options, progress=progress)
    seconds = time.perf_counter() - start
    verdicts = verdicts_for(candidates, seed_tasks if pool is None else pool, config)
    kept = [c.entry() for c, v in zip(candidates, verdicts) if v.kept]
    dropped = Counter(v.rule for v in verdicts if not v.kept)
    report = DatagenReport(method, client.model, n, len(kept), dict(dropped), requests.asked, requests.reused,
                           seconds)
    result = DatagenResult(candidates, verdicts, report, paths, kept)
    if paths is not None:
        save_result(result)
    return result


def save_result(result: DatagenResult) -> None:
    """Write the kept items (checked as a dataset), the accounts and the summary, each atomically."""
    from ..data import validate_entries

    paths = result.paths
    if paths is None:
        raise ValueError("Este resultado não tem pasta de saída (output_dir).")
    if result.kept:
        validate_entries(result.kept, str(paths.kept))
    write_json_atomic(paths.kept, result.kept)
    write_json_atomic(paths.accounts, result.accounts())
    write_json_atomic(paths.summary, result.report.to_dict())


__all__ = ["METHODS", "DatagenPaths", "DatagenReport", "DatagenResult", "verdicts_for", "generate_dataset",
           "save_result"]
