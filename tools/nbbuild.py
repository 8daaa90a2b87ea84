"""Build the notebooks from their readable sources in ``notebooks/src/``.

A source file ``notebooks/src/NN_nome.md`` is a list of cells, each introduced by a
header line::

    ---- markdown slide          (kind, then optional slide type and flags)
    ## Título
    ---- code check
    print(len(train_data))
    ---- notes
    Observação para quem apresenta.

* kind: ``markdown``, ``code`` or ``notes`` (a markdown cell with slide type "notes");
* slide type: ``slide``, ``subslide``, ``fragment``, ``skip`` or ``-``; by default a
  markdown cell whose first line is a ``#``/``##`` title starts a slide, ``###`` a
  subslide, and every other cell continues the current one (``-``);
* flags: ``check`` (tag ``nbval-check-output``: the output is stored and verified by
  nbval), ``solution`` (an exercise's solution: tagged and collapsed), ``raises``
  (tag ``raises-exception``: the cell shows an error on purpose).

``{{REPO_URL}}`` and ``{{PIP_SPEC}}`` are replaced by the values in
``llmdefinitions/_project.py``. Notebooks with ``check`` cells are executed in the
``teste`` profile so those outputs are stored; every other output is left out.

Usage: ``python tools/nbbuild.py [NN ...] [--no-exec]``
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
OUT = ROOT / "notebooks"
SLIDE_TYPES = {"slide", "subslide", "fragment", "skip", "-", "notes"}
FLAGS = {"check": "nbval-check-output", "solution": "solucao", "raises": "raises-exception"}
HEADER = re.compile(r"^---- (markdown|code|notes)((?: [\w-]+)*)\s*$")


def project_values() -> dict:
    namespace: dict = {}
    exec((ROOT / "llmdefinitions" / "_project.py").read_text(encoding="utf-8"), namespace)
    return {"REPO_URL": namespace["REPO_URL"], "PIP_SPEC": namespace["PIP_SPEC"]}


def parse_source(text: str) -> list:
    """Cells (dicts with kind, slide_type, tags, source) of a notebook source."""
    values = project_values()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    cells, current = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = HEADER.match(line)
        if match:
            current = {"kind": match.group(1), "words": match.group(2).split(), "lines": [], "line": number}
            cells.append(current)
        elif current is None:
            if line.strip():
                raise ValueError(f"linha {number}: texto antes do primeiro cabeçalho '---- '")
        else:
            current["lines"].append(line)
    return [_finish(cell) for cell in cells]


def _finish(cell: dict) -> dict:
    source = "\n".join(cell["lines"]).strip("\n")
    slide_type, tags = None, []
    for word in cell["words"]:
        if word in SLIDE_TYPES:
            slide_type = word
        elif word in FLAGS:
            tags.append(FLAGS[word])
        else:
            raise ValueError(f"linha {cell['line']}: palavra desconhecida no cabeçalho: {word!r}")
    if cell["kind"] == "notes":
        slide_type = "notes"
    elif slide_type is None:
        first = source.lstrip().split("\n", 1)[0] if source else ""
        if cell["kind"] == "markdown" and re.match(r"^#{1,2} ", first):
            slide_type = "slide"
        elif cell["kind"] == "markdown" and first.startswith("### "):
            slide_type = "subslide"
        else:
            slide_type = "-"
    return {"kind": cell["kind"], "slide_type": slide_type, "tags": tags, "source": source}


def to_notebook(cells: list):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for index, cell in enumerate(cells):
        metadata = {"slideshow": {"slide_type": cell["slide_type"]}}
        if cell["tags"]:
            metadata["tags"] = list(cell["tags"])
        if "solucao" in cell["tags"]:
            metadata["jupyter"] = {"source_hidden": True}
        if cell["kind"] == "code":
            new = nbformat.v4.new_code_cell(cell["source"], metadata=metadata)
        else:
            new = nbformat.v4.new_markdown_cell(cell["source"], metadata=metadata)
        new["id"] = f"c{index:03d}"
        nb.cells.append(new)
    return nb


def execute(nb, timeout: int = 900):
    """Run the notebook in the ``teste`` profile, from the notebooks folder."""
    from nbclient import NotebookClient

    os.environ.setdefault("LLMDEF_PERFIL", "teste")
    mirror = ROOT.parent / "shared" / "data"
    if mirror.is_dir():
        os.environ.setdefault("LLMDEF_MIRROR", str(mirror))
    os.environ.setdefault("MPLBACKEND", "Agg")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(OUT)}})
    client.execute()
    return nb


def keep_checked_outputs(nb) -> None:
    """Only ``nbval-check-output`` cells keep their outputs (numbered 1, 2, ...)."""
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "nbval-check-output" in cell.metadata.get("tags", []):
            cell.outputs = _merge_streams(cell.outputs)
            count += 1
            cell.execution_count = count
            for output in cell.outputs:
                if "execution_count" in output:
                    output["execution_count"] = count
                output.pop("metadata", None) if output.get("output_type") == "stream" else None
        else:
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)


def _merge_streams(outputs: list) -> list:
    """Join consecutive chunks of the same stream (a print may arrive in pieces)."""
    merged: list = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (output.get("output_type") == "stream" and previous is not None
                and previous.get("output_type") == "stream" and previous.get("name") == output.get("name")):
            previous["text"] = "".join(previous["text"]) + "".join(output["text"])
        else:
            merged.append(output)
    return merged


def build(name: str, run: bool = True) -> Path:
    import nbformat

    source = SRC / f"{name}.md"
    cells = parse_source(source.read_text(encoding="utf-8"))
    nb = to_notebook(cells)
    if run and any("nbval-check-output" in c["tags"] for c in cells):
        execute(nb)
    keep_checked_outputs(nb)
    target = OUT / f"{name}.ipynb"
    text = json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    nbformat.validate(nbformat.reads(text, as_version=4))
    target.write_text(text, encoding="utf-8")
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="prefixos (ex.: 01 02); padrão: todos")
    parser.add_argument("--no-exec", action="store_true", help="não executar (saídas vazias)")
    args = parser.parse_args(argv)
    sources = sorted(p.stem for p in SRC.glob("[0-9][0-9]_*.md"))
    chosen = [s for s in sources if not args.names or any(s.startswith(n) for n in args.names)]
    if not chosen:
        print("Nenhuma fonte encontrada em", SRC, file=sys.stderr)
        return 1
    for name in chosen:
        print("construindo", build(name, run=not args.no_exec).relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
