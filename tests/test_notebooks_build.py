"""Each notebook and its readable source (Jupytext pair) are in step, both ways, and present well.

(nbval runs the notebooks themselves: ``pytest notebooks --nbval-lax --nbval-current-env``.)
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import notebooks as nbtool  # noqa: E402  (tools/notebooks.py)

from llmdefinitions._project import PIP_SPEC, REPO_URL  # noqa: E402

NOTEBOOKS = nbtool.notebook_paths()
LESSONS = [p for p in NOTEBOOKS if p.parent.name == "notebooks"]


def test_every_notebook_has_a_source_and_vice_versa():
    assert LESSONS, "nenhum notebook em notebooks/"
    for folder in {p.parent for p in NOTEBOOKS}:
        sources = {p.stem for p in (folder / "src").glob("*.md")}
        assert sources == {p.stem for p in NOTEBOOKS if p.parent == folder}, folder


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_and_source_are_in_step_and_figures_embedded(notebook):
    problems = nbtool.check_pair(notebook) + nbtool.figure_problems(notebook)
    assert not problems, f"{problems} — rode: python tools/notebooks.py sync && python tools/notebooks.py figuras"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_only_checked_cells_keep_outputs(notebook):
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if nbtool.CHECKED in cell["metadata"].get("tags", []):
            assert cell["outputs"] and cell["execution_count"] is not None, f"célula {index} sem saída guardada"
        else:
            assert not cell["outputs"], f"célula {index} guarda saída sem a tag {nbtool.CHECKED}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_top_of_notebook_follows_the_convention(notebook):
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    text = ["".join(c["source"]) for c in nb["cells"][:8]]
    assert text[0].startswith("# "), "a primeira célula deve ser o título"
    if notebook in LESSONS:
        assert any("Objetivos" in t for t in text), "faltam os objetivos de aprendizagem"
    assert any("google.colab" in t and PIP_SPEC in t and REPO_URL in t for t in text), \
        "falta a célula de instalação no Colab (com o PIP_SPEC de llmdefinitions/_project.py)"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_cell_says_where_it_goes_in_the_slides(notebook):
    """A cell without a slide type lands wherever the exporter guesses; each one says it (``-`` continues)."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    missing = [index for index, cell in enumerate(nb["cells"])
               if "slide_type" not in cell["metadata"].get("slideshow", {})]
    assert not missing, f"células sem slideshow.slide_type: {missing}"


NOTE_LABEL = "> 🧑‍🏫 **Nota para o instrutor:**"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_instructor_notes_are_labelled_as_notes(notebook):
    """Speaker notes also show in the notebook, on GitHub and in HTML: there they must read as notes."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    unlabelled = [index for index, cell in enumerate(nb["cells"])
                  if cell["metadata"].get("slideshow", {}).get("slide_type") == "notes"
                  and not "".join(cell["source"]).startswith(NOTE_LABEL)]
    assert not unlabelled, f"células de notas sem o rótulo {NOTE_LABEL!r}: {unlabelled}"


def test_a_notebook_edited_in_jupyter_updates_its_source_and_back(tmp_path):
    """The round trip an instructor makes: edit the .ipynb, sync; edit the .md, sync; outputs kept."""
    notebook = next(p for p in NOTEBOOKS if any(nbtool.CHECKED in c.metadata.get("tags", [])
                                                 for c in nbformat.read(p, as_version=4).cells))
    copy = tmp_path / "notebooks" / notebook.name
    (copy.parent / "src").mkdir(parents=True)
    shutil.copy2(notebook, copy)
    shutil.copy2(nbtool.source_of(notebook), nbtool.source_of(copy))

    nb = nbformat.read(copy, as_version=4)
    first_markdown = next(c for c in nb.cells if c.cell_type == "markdown")
    first_markdown.source += "\n\nEditado no Jupyter."
    outputs = [c.outputs for c in nb.cells if c.cell_type == "code"]
    nbformat.write(nb, copy)
    _make_newer(copy, nbtool.source_of(copy))
    nbtool.sync(copy)
    assert "Editado no Jupyter." in nbtool.source_of(copy).read_text(encoding="utf-8")
    assert nbtool.check_pair(copy) == []

    source = nbtool.source_of(copy)
    source.write_text(source.read_text(encoding="utf-8").replace("Editado no Jupyter.", "Editado no .md."),
                      encoding="utf-8")
    _make_newer(source, copy)
    nbtool.sync(copy)
    again = nbformat.read(copy, as_version=4)
    assert "Editado no .md." in next(c for c in again.cells if c.cell_type == "markdown").source
    assert [c.outputs for c in again.cells if c.cell_type == "code"] == outputs    # no kernel needed
    assert nbtool.check_pair(copy) == []


def _make_newer(path: Path, than: Path) -> None:
    stamp = than.stat().st_mtime + 5
    os.utime(path, (stamp, stamp))


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
