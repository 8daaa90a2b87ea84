"""The notebooks in notebooks/ are exactly what their sources build, and they present well.

(nbval runs the notebooks themselves: ``pytest notebooks --nbval-lax --nbval-current-env``.)
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbbuild  # noqa: E402

from llmdefinitions._project import REPO_URL  # noqa: E402

SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.md"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_every_notebook_has_a_source_and_vice_versa():
    assert NOTEBOOKS, "nenhum notebook em notebooks/"
    assert {p.stem for p in SOURCES} == {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_matches_its_source(source):
    expected = nbbuild.parse_source(source.read_text(encoding="utf-8"))
    nb = json.loads((ROOT / "notebooks" / f"{source.stem}.ipynb").read_text(encoding="utf-8"))
    assert len(nb["cells"]) == len(expected), "rode: python tools/nbbuild.py " + source.stem[:2]
    for index, (cell, want) in enumerate(zip(nb["cells"], expected)):
        kind = "code" if want["kind"] == "code" else "markdown"
        assert cell["cell_type"] == kind, index
        assert "".join(cell["source"]) == want["source"], f"célula {index} desatualizada"
        assert cell["metadata"]["slideshow"]["slide_type"] == want["slide_type"], index
        assert cell["metadata"].get("tags", []) == want["tags"], index


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_only_checked_cells_keep_outputs(notebook):
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        checked = "nbval-check-output" in cell["metadata"].get("tags", [])
        if checked:
            assert cell["outputs"] and cell["execution_count"] is not None, f"célula {index} sem saída guardada"
        else:
            assert not cell["outputs"], f"célula {index} guarda saída sem a tag nbval-check-output"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_top_of_notebook_follows_the_convention(notebook):
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    text = ["".join(c["source"]) for c in nb["cells"][:8]]
    assert text[0].startswith("# "), "a primeira célula deve ser o título"
    assert any("Objetivos" in t for t in text), "faltam os objetivos de aprendizagem"
    assert any("google.colab" in t and REPO_URL in t for t in text), "falta a célula de instalação no Colab"


def test_slides_export_keeps_speaker_notes(tmp_path):
    with_notes = [p for p in NOTEBOOKS if '"notes"' in p.read_text(encoding="utf-8")]
    assert with_notes, "nenhum notebook tem notas do apresentador"
    for notebook in NOTEBOOKS:
        result = subprocess.run(
            [sys.executable, "-m", "jupyter", "nbconvert", "--to", "slides", str(notebook),
             "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        html = (tmp_path / f"{notebook.stem}.slides.html").read_text(encoding="utf-8")
        assert html.count("<section") >= 2, notebook.name
        if notebook in with_notes:
            assert '<aside class="notes">' in html, f"{notebook.name}: notas perdidas nos slides"


def test_readme_uses_the_project_url():
    assert REPO_URL in (ROOT / "README.md").read_text(encoding="utf-8")
