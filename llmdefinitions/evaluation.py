"""Everything ``avaliar`` reports about a responses file, in one JSON and one figure.

Three kinds of evidence, each with its uncertainty:

* **reference metrics** (:mod:`llmdefinitions.metrics`): need nothing but the file, so
  they are always computed;
* **verifiable instructions** (:mod:`llmdefinitions.verifiable`): when the model's
  answers to the course's bilingual prompts exist (``gerar`` writes them);
* **the LLM judge** (:mod:`llmdefinitions.judge`): when a judge answers. Its outcome is
  recorded as ``avaliado`` (scores), ``pulado`` (no judge was asked for and none
  answered: not an error) or ``falhou`` (the judge never answered).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .io import PathLike, read_json, write_json_atomic

JUDGED, SKIPPED, FAILED = "avaliado", "pulado", "falhou"


@dataclass
class JudgeOutcome:
    """What happened with the judge: ``status`` (avaliado, pulado, falhou) and its details."""

    status: str
    model: Optional[str] = None
    url: Optional[str] = None
    simulated: bool = False
    reason: Optional[str] = None                       # why skipped or failed
    summary: Optional[Dict[str, Any]] = None           # mean, interval, counts
    report: Optional[Dict[str, Any]] = None            # ScoringReport.to_dict()

    def to_dict(self) -> Dict[str, Any]:
        return {"status": self.status, "modelo": self.model, "url": self.url, "simulado": self.simulated,
                "motivo": self.reason, "resumo": self.summary, "relatorio": self.report}


@dataclass
class Evaluation:
    """The contents of ``avaliacao.json``."""

    responses_file: str
    n: int
    metrics: Any                                       # metrics.MetricsReport
    verifiable: Any = None                             # verifiable.VerifiableReport or None
    verifiable_note: Optional[str] = None
    judge: JudgeOutcome = field(default_factory=lambda: JudgeOutcome(SKIPPED))

    def to_dict(self) -> Dict[str, Any]:
        return {"respostas": self.responses_file, "n": self.n, "metricas": self.metrics.to_dict(),
                "verificaveis": self.verifiable.to_dict() if self.verifiable is not None else None,
                "verificaveis_nota": self.verifiable_note, "juiz": self.judge.to_dict()}

    def to_text(self) -> str:
        """The pt-BR tables a terminal shows."""
        parts = [f"Métricas de referência ({self.n} respostas de '{self.responses_file}'):",
                 self.metrics.to_table()]
        if self.verifiable is not None:
            parts += ["", "Instruções verificáveis (por tipo: no JSON):", self.verifiable.to_table(by_type=False)]
        elif self.verifiable_note:
            parts += ["", f"Instruções verificáveis: {self.verifiable_note}"]
        return "\n".join(parts)


def score_verifiable(responses_path: Path):
    """The verifiable-instruction report of a file ``gerar`` wrote (prompts in the package's order)."""
    from .verifiable import load_prompts, score

    rows = read_json(responses_path)
    prompts = load_prompts()
    if len(rows) != len(prompts):
        raise ValueError(f"'{responses_path}' tem {len(rows)} respostas para {len(prompts)} prompts "
                         "verificáveis: gere-as de novo (gerar --refazer).")
    return score(prompts, [row["model_response"] for row in rows])


def save_evaluation(evaluation: Evaluation, json_path: PathLike, png_path: PathLike) -> None:
    """Write ``avaliacao.json`` and the figure (metrics, verifiable accuracy and judge mean with intervals)."""
    import matplotlib.pyplot as plt

    write_json_atomic(json_path, evaluation.to_dict())
    fig = plot_evaluation(evaluation)
    fig.savefig(png_path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _bars(evaluation: Evaluation) -> List[tuple]:
    """``(label, estimate, low, high)`` on a 0–100 scale, for the figure."""
    from .metrics import METRIC_LABELS

    bars = []
    for key, label in METRIC_LABELS.items():
        interval = evaluation.metrics[key].interval
        bars.append((label, interval.estimate, interval.low, interval.high))
    if evaluation.verifiable is not None:
        for mode, label in (("strict", "estrito"), ("loose", "flexível")):
            interval = evaluation.verifiable.accuracy["prompt"][mode]
            bars.append((f"Verificáveis, prompt ({label})", interval.estimate, interval.low, interval.high))
    summary = evaluation.judge.summary
    if evaluation.judge.status == JUDGED and summary and summary.get("interval"):
        interval = summary["interval"]
        who = "dublê de teste" if evaluation.judge.simulated else f"juiz {evaluation.judge.model}"
        bars.append((f"Nota média ({who})", interval["estimate"], interval["low"], interval["high"]))
    return bars


def plot_evaluation(evaluation: Evaluation):
    """Horizontal bars with 95 % intervals: every number of the evaluation on one 0–100 axis."""
    import matplotlib.pyplot as plt

    bars = _bars(evaluation)
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(bars) + 1.2))
    labels = [b[0] for b in bars][::-1]
    values = [b[1] for b in bars][::-1]
    errors = [[b[1] - b[2] for b in bars][::-1], [b[3] - b[1] for b in bars][::-1]]
    ax.barh(labels, values, xerr=errors, capsize=3, color="#7BA7D9", edgecolor="#2E5A88")
    ax.set_xlim(0, 100)
    ax.set_xlabel("0 a 100 (barras: intervalo de confiança de 95 %, bootstrap)")
    ax.set_title(f"Avaliação de {evaluation.n} respostas")
    fig.tight_layout()
    return fig


__all__ = ["JUDGED", "SKIPPED", "FAILED", "JudgeOutcome", "Evaluation", "score_verifiable",
           "save_evaluation", "plot_evaluation"]
