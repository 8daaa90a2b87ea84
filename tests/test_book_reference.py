"""Every fact in llmdefinitions.book_reference matches the course's copy of the book's run."""
import json

import pytest

from llmdefinitions import book_reference as ref

import shared_data as _shared  # tests/shared_data.py


@pytest.fixture(scope="module")
def run(shared_data):
    path = shared_data / "book-reference" / "ch07-run.json"
    if not path.is_file() and shared_data == _shared.CACHE:
        # Files downloaded from their public URLs: the course's copy of the book's run is not a
        # download (shared/data/README.md), so there is nothing to compare against on this machine.
        pytest.skip(f"sem a cópia do curso da execução do livro ({path.relative_to(shared_data)}): ela vem só "
                    "no espelho (LLMDEF_MIRROR ou ../shared/data), não dos downloads públicos.")
    if not path.is_file():
        pytest.fail(f"falta {path}: a cópia da execução publicada do livro (shared/data).")
    return json.loads(path.read_text(encoding="utf-8"))


def test_source_is_credited(run):
    for part in (ref.SOURCE_REPO, ref.SOURCE_PATH, ref.SOURCE_COMMIT, ref.SOURCE_LICENSE):
        assert part in run["source"]
    assert ref.SOURCE_COMMIT[:7] in ref.CREDIT and ref.SOURCE_REPO in ref.CREDIT


def test_setup(run):
    assert ref.SETUP == run["setup"]


def test_initial_losses(run, capsys):
    assert ref.initial_losses() == (run["initial_losses"]["train"], run["initial_losses"]["val"])
    out = capsys.readouterr().out
    assert out.startswith(ref.HEADER) and "3,826" in out and "3,762" in out


def test_training_log(run):
    expected = [(r["epoch"], r["step"], r["train_loss"], r["val_loss"]) for r in run["training_log"]]
    got = [(r.epoch, r.step, r.train_loss, r.val_loss) for r in ref.TRAINING_LOG]
    assert got == expected and len(got) == 47
    assert ref.TRAINING_MINUTES == run["training_minutes"]
    steps, train, val = ref.training_curve()
    assert steps == [r[1] for r in expected] and train == [r[2] for r in expected]
    assert val == [r[3] for r in expected]


def test_training_log_printed_and_table(run, capsys):
    ref.print_training_log()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(ref.HEADER) and lines[1] == ref.CREDIT
    assert len(lines) == 2 + 47 + 1
    assert lines[2] == "Época 1 (passo 000000): perda de treino 2,637, perda de validação 2,626"
    assert lines[-2] == "Época 2 (passo 000230): perda de treino 0,299, perda de validação 0,657"
    assert "3,35 minutos" in lines[-1]
    table = ref.training_log_table().splitlines()
    assert len(table) == 2 + 47 and table[-1] == "| 2 | 230 | 0,299 | 0,657 |"
    with pytest.raises(ValueError, match="every"):
        ref.print_training_log(every=0)


def test_untuned_response(run, capsys):
    assert ref.UNTUNED_INSTRUCTION_ENTRY == run["untuned_response"]["instruction_entry"]
    assert ref.untuned_response() == run["untuned_response"]["response_text"]
    assert capsys.readouterr().out.startswith(ref.HEADER)


def test_first_test_responses(run, capsys):
    got = [vars(r) for r in ref.first_test_responses()]
    assert got == run["first_test_responses"]
    out = capsys.readouterr().out
    assert out.startswith(ref.HEADER) and out.count("Resposta do modelo:") == 3


def test_judge_average(run, capsys):
    judge = run["judge"]
    assert ref.judge_average() == judge["average_score"]
    assert judge["model"] == ref.JUDGE_MODEL
    assert judge["scored"] == f"{ref.JUDGE_SCORED} of {ref.JUDGE_TOTAL}"
    out = capsys.readouterr().out
    assert out.startswith(ref.HEADER) and "49,45" in out and "110 de 110" in out


def test_first_test_responses_compact_fits_a_slide(capsys):
    ref.first_test_responses(compact=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 14 and not any("Below is an instruction" in line for line in lines)
