"""Keep each notebook and its readable source in step, both ways; store the outputs that teach.

Every ``notebooks/NN_nome.ipynb`` is paired by **Jupytext** with ``notebooks/src/NN_nome.md``
(solutions: ``notebooks/solucoes/NN_nome_solucoes.ipynb`` with ``notebooks/solucoes/src/…``)
(MyST Markdown: prose as Markdown, code in ``{code-cell}`` blocks, slide types and tags as cell
metadata). Edit either one:

* in Jupyter (with ``jupytext`` installed, JupyterLab saves the ``.md`` with the notebook), or
  the ``.md`` in any editor, then ``python tools/notebooks.py sync``: the newer file updates the
  other, keeping the stored outputs — a prose edit needs no kernel;
* ``python tools/notebooks.py executar 05`` runs a notebook in the ``teste`` profile and stores
  the outputs of the cells tagged ``nbval-check-output`` (the ones that do not depend on model
  weights; nbval checks them in CI); every other output is left out;
* ``python tools/notebooks.py figuras`` embeds the figures a cell shows as
  ``![texto](attachment:nome.svg)`` from ``assets/nome.svg``, so they render on GitHub, in
  JupyterLab, in Colab and in the slides, offline;
* ``python tools/notebooks.py verificar`` exits 1 when a pair is out of step or a figure is stale
  (the tests run the same check).
"""
from __future__ import annotations

import argparse
import base64
import os
import re
import sys
from pathlib import Path
from typing import Iterable, List

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = NOTEBOOKS / "src"
ASSETS = ROOT / "assets"
PAIRING = "ipynb,src//md:myst"
CHECKED = "nbval-check-output"
ATTACHMENT = re.compile(r"\(attachment:([\w.-]+)\)")
FIGURE = re.compile(r"!\[(.*?)\]\(attachment:([\w.-]+)\)", re.S)


def notebook_paths(prefixes: Iterable[str] = ()) -> List[Path]:
    """The course's notebooks (lessons ``NN_*``, appendices ``AN_*``, then their solutions in
    ``solucoes/``), or those whose name starts with one of ``prefixes``."""
    prefixes = list(prefixes)
    paths = [p for folder in (NOTEBOOKS, NOTEBOOKS / "solucoes")
             for p in sorted(folder.glob("[0-9A][0-9]_*.ipynb"))]
    return [p for p in paths if not prefixes or any(p.name.startswith(x) for x in prefixes)]


def source_of(notebook: Path) -> Path:
    """The paired source: ``<folder>/src/<name>.md`` next to ``<folder>/<name>.ipynb``."""
    return notebook.parent / "src" / f"{notebook.stem}.md"


def sync(notebook: Path) -> None:
    """Jupytext ``--sync``: the newer of the pair updates the other (outputs are kept)."""
    from jupytext.cli import jupytext as jupytext_cli

    target = notebook if notebook.is_file() else source_of(notebook)
    jupytext_cli(["--sync", "--quiet", str(target)])


def _cells_differ(nb, text_nb) -> List[str]:
    problems = []
    if len(nb.cells) != len(text_nb.cells):
        return [f"{len(nb.cells)} células no .ipynb, {len(text_nb.cells)} no .md"]
    for index, (cell, text_cell) in enumerate(zip(nb.cells, text_nb.cells)):
        if cell.cell_type != text_cell.cell_type or cell.source != text_cell.source:
            problems.append(f"célula {index}: o conteúdo difere")
        for key in ("slideshow", "tags"):
            if cell.metadata.get(key) != text_cell.metadata.get(key):
                problems.append(f"célula {index}: metadado '{key}' difere")
    return problems


def check_pair(notebook: Path) -> List[str]:
    """Why ``notebook`` and its ``.md`` are out of step (empty list: in step)."""
    import jupytext

    source = source_of(notebook)
    if not source.is_file():
        return [f"falta {source}"]
    nb = jupytext.read(notebook)
    problems = _cells_differ(nb, jupytext.read(source))
    if nb.metadata.get("jupytext", {}).get("formats") != PAIRING:
        problems.append(f"o notebook não está pareado como '{PAIRING}'")
    return problems


def figure_problems(notebook: Path) -> List[str]:
    """Figures referenced as attachments that are missing or differ from ``assets/``."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    problems = []
    for index, cell in enumerate(nb.cells):
        for name in ATTACHMENT.findall(cell.source if cell.cell_type == "markdown" else ""):
            asset = ASSETS / name
            stored = cell.get("attachments", {}).get(name)
            if not asset.is_file():
                problems.append(f"célula {index}: assets/{name} não existe")
            elif stored is None or _decoded(stored) != asset.read_bytes():
                problems.append(f"célula {index}: a figura {name} não está embutida ou está desatualizada")
        for alt, name in FIGURE.findall(cell.source if cell.cell_type == "markdown" else ""):
            wanted = _alt_texts().get(name.rsplit(".", 1)[0])
            if wanted is not None and alt != wanted:
                problems.append(f"célula {index}: o texto alternativo de {name} difere do de assets/figuras.json")
    return problems


def _alt_texts() -> dict:
    """Alt text of every figure, as ``tools/make_figures.py`` wrote it (one wording everywhere)."""
    import json

    listing = ASSETS / "figuras.json"
    figures = json.loads(listing.read_text(encoding="utf-8")) if listing.is_file() else {}
    return {name: info["alt"] for name, info in figures.items()}


def _decoded(bundle: dict) -> bytes:
    data = next(iter(bundle.values()))
    return base64.b64decode("".join(data) if isinstance(data, list) else data)


def _mime(name: str) -> str:
    return {"svg": "image/svg+xml", "png": "image/png", "jpg": "image/jpeg"}[name.rsplit(".", 1)[-1]]


def embed_figures(notebook: Path) -> bool:
    """Store every ``attachment:nome`` figure of ``notebook`` from ``assets/``; True if it changed."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        names = ATTACHMENT.findall(cell.source)
        wanted = {name: {_mime(name): base64.b64encode((ASSETS / name).read_bytes()).decode("ascii")}
                  for name in names}
        if cell.get("attachments", {}) != wanted:
            if wanted:
                cell["attachments"] = wanted
            else:
                cell.pop("attachments", None)
            changed = True
    if changed:
        _write(nb, notebook)
    return changed


def execute(notebook: Path, timeout: int = 900) -> None:
    """Run ``notebook`` in the ``teste`` profile from its folder; keep only checked outputs."""
    import nbformat
    from nbclient import NotebookClient

    os.environ["LLMDEF_PERFIL"] = "teste"
    mirror = ROOT.parent / "shared" / "data"
    if mirror.is_dir():
        os.environ.setdefault("LLMDEF_MIRROR", str(mirror))
    os.environ.setdefault("MPLBACKEND", "Agg")
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    keep_checked_outputs(nb)
    _write(nb, notebook)


def keep_checked_outputs(nb) -> None:
    """Only cells tagged ``nbval-check-output`` keep outputs, numbered 1, 2, ... in order."""
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if CHECKED in cell.metadata.get("tags", []):
            count += 1
            cell.outputs = _merge_streams(cell.outputs)
            cell.execution_count = count
            for output in cell.outputs:
                if "execution_count" in output:
                    output["execution_count"] = count
                if output.get("output_type") == "stream":
                    output.pop("metadata", None)
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


def _write(nb, notebook: Path) -> None:
    """Write the notebook, then let Jupytext bring its ``.md`` in step."""
    import nbformat

    nbformat.validate(nb)
    nbformat.write(nb, notebook)
    sync(notebook)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("acao", choices=["sync", "executar", "figuras", "verificar"])
    parser.add_argument("nomes", nargs="*", help="prefixos (ex.: 01 05); padrão: todos")
    args = parser.parse_args(argv)
    chosen = notebook_paths(args.nomes)
    if not chosen:
        print(f"Nenhum notebook encontrado em {NOTEBOOKS}", file=sys.stderr)
        return 1
    failures = 0
    for notebook in chosen:
        name = notebook.relative_to(ROOT)
        if args.acao == "sync":
            sync(notebook)
        elif args.acao == "figuras":
            print(name, "atualizado" if embed_figures(notebook) else "sem mudança")
        elif args.acao == "executar":
            sync(notebook)
            embed_figures(notebook)
            execute(notebook)
            print("executado:", name)
        else:
            problems = check_pair(notebook) + figure_problems(notebook)
            failures += bool(problems)
            for problem in problems:
                print(f"{name}: {problem}")
    if args.acao == "verificar" and failures:
        print("Rode: python tools/notebooks.py sync (e figuras)", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
