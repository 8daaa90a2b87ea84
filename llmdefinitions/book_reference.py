"""The book's published run of chapter 7, as data, to show beside cells that need the real weights.

The notebooks cannot finetune GPT-2 medium in CI, so where a cell needs the real weights
the course shows what the book's own run printed instead, labelled as such. These are the
facts (numbers and texts) from the outputs stored in the book's notebook, written here in
our own form; every helper prints a header saying they were not computed here.
``tests/test_book_reference.py`` checks each value against the course's offline copy
(``book-reference/ch07-run.json`` in the shared data folder).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from .stats import format_decimal

SOURCE_REPO = "rasbt/LLMs-from-scratch"
SOURCE_PATH = "ch07/01_main-chapter-code/ch07.ipynb"
SOURCE_COMMIT = "28c65cdfbc3338e2e040016eea4b7fdf556e4d57"
SOURCE_LICENSE = "Apache-2.0"
CREDIT = (f"Fonte: Raschka, {SOURCE_REPO}, {SOURCE_PATH} "
          f"(saídas da execução publicada, commit {SOURCE_COMMIT[:7]}), {SOURCE_LICENSE}.")
HEADER = "Resultado publicado pelo livro (não executado aqui)"

# How the book ran it (its notebook's settings and the machine it printed).
SETUP = {
    "model": "gpt2-medium (355M)",
    "device": "mps (Apple M3)",
    "torch": "2.9.0",
    "optimizer": "AdamW lr=5e-5 weight_decay=0.1",
    "batch_size": 8,
    "num_epochs": 2,
    "eval_freq": 5,
    "eval_iter": 5,
    "seed": 123,
}

# calc_loss_loader on 5 batches before training.
INITIAL_TRAIN_LOSS = 3.8259105682373047
INITIAL_VAL_LOSS = 3.7619349479675295


@dataclass(frozen=True)
class LogRow:
    """One line of the book's training log (printed every ``eval_freq`` steps)."""

    epoch: int
    step: int
    train_loss: float
    val_loss: float


# (epoch, step, train loss, val loss) as printed, 3 decimals.
_LOG = [
    (1, 0, 2.637, 2.626), (1, 5, 1.174, 1.103), (1, 10, 0.872, 0.944), (1, 15, 0.857, 0.906),
    (1, 20, 0.776, 0.881), (1, 25, 0.754, 0.859), (1, 30, 0.800, 0.836), (1, 35, 0.714, 0.809),
    (1, 40, 0.672, 0.806), (1, 45, 0.633, 0.789), (1, 50, 0.663, 0.783), (1, 55, 0.760, 0.763),
    (1, 60, 0.719, 0.743), (1, 65, 0.653, 0.735), (1, 70, 0.535, 0.732), (1, 75, 0.567, 0.736),
    (1, 80, 0.602, 0.731), (1, 85, 0.513, 0.715), (1, 90, 0.571, 0.696), (1, 95, 0.504, 0.687),
    (1, 100, 0.507, 0.682), (1, 105, 0.568, 0.674), (1, 110, 0.562, 0.669), (1, 115, 0.519, 0.665),
    (2, 120, 0.437, 0.670), (2, 125, 0.454, 0.686), (2, 130, 0.447, 0.681), (2, 135, 0.406, 0.677),
    (2, 140, 0.407, 0.676), (2, 145, 0.373, 0.677), (2, 150, 0.381, 0.674), (2, 155, 0.419, 0.676),
    (2, 160, 0.414, 0.686), (2, 165, 0.380, 0.688), (2, 170, 0.327, 0.679), (2, 175, 0.338, 0.668),
    (2, 180, 0.390, 0.657), (2, 185, 0.417, 0.659), (2, 190, 0.340, 0.650), (2, 195, 0.326, 0.635),
    (2, 200, 0.310, 0.632), (2, 205, 0.353, 0.628), (2, 210, 0.367, 0.628), (2, 215, 0.393, 0.635),
    (2, 220, 0.300, 0.648), (2, 225, 0.346, 0.663), (2, 230, 0.299, 0.657),
]
TRAINING_LOG: Tuple[LogRow, ...] = tuple(LogRow(*row) for row in _LOG)
TRAINING_MINUTES = 3.35

# The untuned GPT-2 medium on val_data[0] (notebook 04's instruction): it repeats the prompt.
UNTUNED_INSTRUCTION_ENTRY = "val_data[0]"
UNTUNED_RESPONSE = ("The chef cooks the meal every day.\n\n### Instruction:\n\n"
                    "Convert the active sentence to passive: 'The chef cooks the")


@dataclass(frozen=True)
class TestResponse:
    """A test-set prompt, its reference answer and what the finetuned model answered."""

    prompt: str
    correct_response: str
    model_response: str


_ALPACA_HEAD = ("Below is an instruction that describes a task. Write a response that "
                "appropriately completes the request.\n\n### Instruction:\n")
FIRST_TEST_RESPONSES: Tuple[TestResponse, ...] = (
    TestResponse(_ALPACA_HEAD + "Rewrite the sentence using a simile.\n\n### Input:\n"
                 "The car is very fast.",
                 "The car is as fast as lightning.",
                 "The car is as fast as a bullet."),
    TestResponse(_ALPACA_HEAD + "What type of cloud is typically associated with thunderstorms?",
                 "The type of cloud typically associated with thunderstorms is cumulonimbus.",
                 "The type of cloud associated with thunderstorms is a cumulus cloud."),
    TestResponse(_ALPACA_HEAD + "Name the author of 'Pride and Prejudice'.",
                 "Jane Austen.",
                 "The author of 'Pride and Prejudice' is Jane Austen."),
)

JUDGE_MODEL = "llama3 (8B) via Ollama"
JUDGE_SCORED = 110
JUDGE_TOTAL = 110
JUDGE_AVERAGE = 49.45


def _header(what: str) -> str:
    return f"{HEADER}: {what}\n{CREDIT}"


def initial_losses() -> Tuple[float, float]:
    """(train, validation) loss of the pretrained model before finetuning; prints them."""
    print(_header("perdas antes do ajuste fino (GPT-2 medium, 5 lotes)"))
    print(f"Perda de treino: {format_decimal(INITIAL_TRAIN_LOSS, 3)}")
    print(f"Perda de validação: {format_decimal(INITIAL_VAL_LOSS, 3)}")
    return INITIAL_TRAIN_LOSS, INITIAL_VAL_LOSS


def training_log_table(rows: Optional[List[LogRow]] = None) -> str:
    """The training log as a Markdown table with pt-BR numbers (all 47 rows by default)."""
    rows = list(TRAINING_LOG if rows is None else rows)
    lines = ["| época | passo | perda de treino | perda de validação |", "|---:|---:|---:|---:|"]
    lines += [f"| {r.epoch} | {r.step} | {format_decimal(r.train_loss, 3)} | "
              f"{format_decimal(r.val_loss, 3)} |" for r in rows]
    return "\n".join(lines)


def print_training_log(every: int = 1) -> None:
    """Print the log like the book's ``Ep 1 (Step 000005): ...`` lines, in pt-BR; one row in ``every``."""
    if every < 1:
        raise ValueError(f"every deve ser 1 ou mais (recebido: {every}).")
    print(_header(f"registro do treino ({SETUP['num_epochs']} épocas, avaliação a cada "
                  f"{SETUP['eval_freq']} passos)"))
    for row in TRAINING_LOG[::every]:
        print(f"Época {row.epoch} (passo {row.step:06d}): perda de treino "
              f"{format_decimal(row.train_loss, 3)}, perda de validação {format_decimal(row.val_loss, 3)}")
    print(f"Treino concluído em {format_decimal(TRAINING_MINUTES, 2)} minutos (dispositivo do livro: {SETUP['device']}).")


def training_curve() -> Tuple[List[int], List[float], List[float]]:
    """(steps, train losses, validation losses) of the log, for plots."""
    return ([r.step for r in TRAINING_LOG], [r.train_loss for r in TRAINING_LOG],
            [r.val_loss for r in TRAINING_LOG])


def untuned_response() -> str:
    """What GPT-2 medium answered before finetuning (val_data[0]); prints it."""
    print(_header(f"resposta do modelo antes do ajuste fino ({UNTUNED_INSTRUCTION_ENTRY})"))
    print(UNTUNED_RESPONSE)
    return UNTUNED_RESPONSE


def first_test_responses(compact: bool = False) -> Tuple[TestResponse, ...]:
    """The first three test entries with the finetuned model's answers; prints them.

    ``compact=True`` prints only the instruction (not the whole Alpaca prompt), for a slide.
    """
    print(_header("as três primeiras respostas do conjunto de teste"))
    for item in FIRST_TEST_RESPONSES:
        if compact:
            instruction = item.prompt.split("### Instruction:\n", 1)[-1].replace("\n\n### Input:\n", " | ")
            print(f"Instrução: {instruction}\n  correta: {item.correct_response}\n  modelo:  {item.model_response}")
            continue
        print(item.prompt)
        print(f"\nResposta correta:\n>> {item.correct_response}")
        print(f"\nResposta do modelo:\n>> {item.model_response}")
        print("-" * 40)
    return FIRST_TEST_RESPONSES


def judge_average() -> float:
    """The judge's average score over the test set (0–100); prints it."""
    print(_header(f"média do juiz ({JUDGE_MODEL})"))
    print(f"Respostas pontuadas: {JUDGE_SCORED} de {JUDGE_TOTAL}")
    print(f"Pontuação média: {format_decimal(JUDGE_AVERAGE, 2)}")
    return JUDGE_AVERAGE
