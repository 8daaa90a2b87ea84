"""Generated candidates: one per requested item, with what the model wrote or why nothing came back.

:func:`collect` runs a generator function for items ``0 .. n-1``, in order, with
a progress bar. A request that fails (after the client's retries) becomes a
candidate with ``status="error"`` and the reason; after a few items in a row
fail the same way the rest are marked ``not_attempted``; errors that would
repeat for every item (server down, model missing) stop the run at once. Replies
received before a stop stay in the cache, so a rerun asks only for what is missing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ..judge.defaults import DEFAULT_MAX_CONSECUTIVE_FAILURES
from ..judge.errors import FATAL_ERRORS, JudgeError
from ..judge.scoring import FailureBreaker

CANDIDATE_STATUSES = ("generated", "error", "not_attempted")


@dataclass
class Candidate:
    """Item ``index`` of a generation run, in the Alpaca fields, before any filter.

    ``raw`` keeps the model's replies as they came (e.g. ``{"instruction": ...}``),
    so a filter's decision can be checked against the text the model wrote.
    """

    index: int
    method: str
    instruction: str = ""
    input: str = ""
    output: str = ""
    status: str = "generated"
    reason: Optional[str] = None
    raw: Dict[str, str] = field(default_factory=dict)

    def entry(self) -> Dict[str, str]:
        """The item in the Alpaca format: ``instruction``, ``input``, ``output``."""
        return {"instruction": self.instruction, "input": self.input, "output": self.output}

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def collect(n: int, make_one: Callable[[int], Candidate], *, method: str,
            max_consecutive_failures: Optional[int] = DEFAULT_MAX_CONSECUTIVE_FAILURES,
            progress: bool = True, desc: str = "Gerando") -> List[Candidate]:
    """``[make_one(0), ..., make_one(n - 1)]``, with failures recorded instead of raised."""
    from tqdm.auto import tqdm

    breaker = FailureBreaker(max_consecutive_failures)
    candidates: List[Candidate] = []
    for index in tqdm(range(n), desc=desc, disable=not progress):
        if breaker.reason:
            candidates.append(Candidate(index, method, status="not_attempted",
                                        reason=f"item {index} não foi pedido: {breaker.reason}"))
            continue
        try:
            candidate = make_one(index)
        except FATAL_ERRORS:
            raise
        except JudgeError as exc:
            breaker.failure(exc)
            candidates.append(Candidate(index, method, status="error", reason=f"item {index}: {exc}"))
            continue
        breaker.success()
        candidates.append(candidate)
    return candidates


__all__ = ["Candidate", "CANDIDATE_STATUSES", "collect"]
