"""Reference-based metrics for a responses file, each with a bootstrap 95 % interval.

The judge (``judge.py``) needs a server; these need nothing but the responses and
the dataset's reference answers (``output``). They measure *overlap with one
reference*, not correctness: a right answer worded differently scores low. That is
why each number comes with its interval (``stats.bootstrap_mean`` over the per-item
values) and why the course still reads the answers.

All scores are on a 0-100 scale (percent), so the table compares like with like.

* **Exact match (EM)** and **token F1**, SQuAD-style: both texts are normalized
  (:func:`normalize_answer`) and split on whitespace; F1 is the harmonic mean of
  the precision and recall of the shared tokens (a bag of words, counts clipped).
* **ROUGE-L**: F-measure of the longest common subsequence, computed by
  ``rouge-score`` with ``use_stemmer=False`` (:data:`ROUGE_USE_STEMMER`): the
  number is then reproducible by hand (the notebook writes the LCS itself) and no
  English stemmer is applied to other languages. Its default tokenizer lowercases
  and keeps only ``[a-z0-9]``: **letters with accents are dropped** ("ação" ->
  "a", "o"), fine for the book's English data, wrong for pt-BR text.
* **BLEU** and **chrF**: ``sacrebleu`` with its defaults (BLEU: 13a tokenizer,
  exponential smoothing; sentence BLEU with ``effective_order=True``, as sacrebleu
  recommends for single sentences).

Corpus BLEU (and corpus chrF) is **not** the mean of the sentence scores: it pools
n-gram counts over all items before taking the geometric mean and brevity penalty.
The report gives both; the interval is for the *mean sentence score* (what
``bootstrap_mean`` can resample item by item), and the corpus score is a single
number without interval.
"""
from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .data import validate_entries
from .tables import text_table
from .io import PathLike, read_json, write_json_atomic
from .stats import Interval, bootstrap_mean, format_decimal

RESPONSE_KEY = "model_response"
REFERENCE_KEY = "output"
ROUGE_USE_STEMMER = False
_ARTICLES = re.compile(r"\b(a|an|the)\b")

# metric key -> label in the pt-BR table, in the order the table shows them
METRIC_LABELS = {
    "exact_match": "Correspondência exata (EM)",
    "token_f1": "F1 de tokens",
    "rouge_l": "ROUGE-L (F)",
    "bleu": "BLEU (média por frase)",
    "chrf": "chrF (média por frase)",
}


# --------------------------------------------------------------------------- loading

def load_responses(path: PathLike, response_key: str = RESPONSE_KEY) -> list:
    """Read a responses file in the book's format and check every entry.

    The file is a JSON list of objects with ``instruction``, ``input``, ``output``
    and ``response_key``, all strings. Anything else raises a pt-BR ``ValueError``
    naming the file, the entry index and the field. Nothing is written.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"O arquivo de respostas '{path}' não existe.")
    if not path.read_bytes().strip():
        raise ValueError(f"O arquivo de respostas '{path}' está vazio.")
    return validate_responses(read_json(path), str(path), response_key)


def validate_responses(entries: Any, source: str = "respostas",
                       response_key: str = RESPONSE_KEY) -> list:
    """The dataset's checks (``data.validate_entries``) plus a string under ``response_key``."""
    validate_entries(entries, source)
    for index, entry in enumerate(entries):
        if response_key not in entry:
            raise ValueError(f"Entrada {index} de '{source}': falta o campo '{response_key}' "
                             "(a resposta do modelo).")
        if not isinstance(entry[response_key], str):
            raise ValueError(f"Entrada {index} de '{source}': o campo '{response_key}' deve ser "
                             f"texto (str), mas é {type(entry[response_key]).__name__}.")
    return entries


# --------------------------------------------------------------------------- per-item scores

def normalize_answer(text: str) -> str:
    """SQuAD's answer normalization: lowercase, drop punctuation and articles, collapse spaces.

    As in the SQuAD v1.1 script, with one change: punctuation is every Unicode
    punctuation character (``—``, ``“``, ``¿`` too), not only ASCII's. The articles
    removed are SQuAD's English ones (a, an, the).
    """
    text = text.lower()
    text = "".join(" " if _is_punctuation(ch) else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _is_punctuation(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def exact_match(prediction: str, reference: str) -> float:
    """100 if the normalized texts are equal, else 0."""
    return 100.0 if normalize_answer(prediction) == normalize_answer(reference) else 0.0


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token F1 (0-100) of the normalized texts; two empty texts score 100."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return 100.0 if pred == ref else 0.0
    shared = sum((Counter(pred) & Counter(ref)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(pred), shared / len(ref)
    return 100.0 * 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- report

@dataclass
class MetricResult:
    """One metric: its per-item values (0-100), their mean with interval, and the corpus score."""

    name: str
    values: List[float]
    interval: Interval
    corpus: Optional[float] = None      # BLEU/chrF pooled over all items; None for the others
    signature: Optional[str] = None     # sacrebleu's signature, to reproduce the number

    def to_dict(self) -> dict:
        return {"name": self.name, "label": METRIC_LABELS[self.name], "interval": self.interval.to_dict(),
                "corpus": self.corpus, "signature": self.signature, "values": list(self.values)}


@dataclass
class MetricsReport:
    """Every reference metric for one set of responses (see the module docstring)."""

    metrics: Dict[str, MetricResult]
    n: int
    response_key: str = RESPONSE_KEY
    settings: Dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> MetricResult:
        return self.metrics[name]

    def to_dict(self) -> dict:
        """JSON-able (per-item values included)."""
        return {"n": self.n, "response_key": self.response_key, "settings": dict(self.settings),
                "metrics": {name: m.to_dict() for name, m in self.metrics.items()}}

    def to_table(self) -> str:
        """A pt-BR text table: mean, 95 % interval and corpus score, decimal commas."""
        header = ("Métrica", "Média", "IC 95 %", "Corpus")
        rows = [(METRIC_LABELS[m.name], format_decimal(m.interval.estimate),
                 f"{format_decimal(m.interval.low)} a {format_decimal(m.interval.high)}",
                 "—" if m.corpus is None else format_decimal(m.corpus))
                for m in self.metrics.values()]
        lines = text_table(header, rows)
        lines.append(f"n = {self.n} respostas ('{self.response_key}'); escala 0 a 100; "
                     "IC bootstrap da média dos valores por item.")
        return "\n".join(lines)

    def save_json(self, path: PathLike) -> Path:
        """Write :meth:`to_dict` as UTF-8 JSON, atomically."""
        return write_json_atomic(path, self.to_dict())


def reference_metrics(entries: Sequence[Mapping[str, Any]], response_key: str = RESPONSE_KEY,
                      rouge_use_stemmer: bool = ROUGE_USE_STEMMER) -> MetricsReport:
    """EM, token F1, ROUGE-L, BLEU and chrF of ``entry[response_key]`` against ``entry["output"]``.

    Each metric has its per-item values (0-100) and a bootstrap 95 % interval of
    their mean; BLEU and chrF also carry the corpus score and sacrebleu's signature.
    """
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU, CHRF

    validate_responses(list(entries), "entradas", response_key)
    hypotheses = [e[response_key] for e in entries]
    references = [e[REFERENCE_KEY] for e in entries]
    pairs = list(zip(hypotheses, references))

    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=rouge_use_stemmer)
    per_item = {
        "exact_match": [exact_match(h, r) for h, r in pairs],
        "token_f1": [token_f1(h, r) for h, r in pairs],
        "rouge_l": [100.0 * rouge.score(r, h)["rougeL"].fmeasure for h, r in pairs],
    }
    corpus: Dict[str, Any] = {}
    for name, metric, sentence_metric in (("bleu", BLEU(), BLEU(effective_order=True)),
                                          ("chrf", CHRF(), CHRF())):
        per_item[name] = [sentence_metric.sentence_score(h, [r]).score for h, r in pairs]
        corpus[name] = (metric.corpus_score(hypotheses, [references]).score, str(metric.get_signature()))

    metrics = {}
    for name, values in per_item.items():
        pooled, signature = corpus.get(name, (None, None))
        metrics[name] = MetricResult(name, values, bootstrap_mean(values), pooled, signature)
    return MetricsReport(metrics, len(pairs), response_key, {"rouge_use_stemmer": rouge_use_stemmer})


__all__ = ["load_responses", "validate_responses", "reference_metrics", "normalize_answer",
           "exact_match", "token_f1", "MetricResult", "MetricsReport", "METRIC_LABELS",
           "ROUGE_USE_STEMMER"]
