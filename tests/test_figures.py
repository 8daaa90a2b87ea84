"""The figures in assets/: text kept as text, readable at slide size, labelled, self-contained,
consistent with the course's numbers, and exactly what tools/make_figures.py draws."""
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_figures as mf  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"
NAMES = list(mf.FIGURES)


def _root(name):
    return ET.parse(mf.ASSETS / f"{name}.svg").getroot()


def _texts(root):
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def test_assets_hold_exactly_the_drawn_figures():
    assert sorted(p.stem for p in mf.ASSETS.glob("*.svg")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_text_is_text_and_readable_at_slide_size(name):
    root = _root(name)
    width = float(root.get("viewBox").split()[2])
    scale = mf.DISPLAY_WIDTH_PX / width
    assert not any(el.get("id", "").startswith("DejaVu") for el in root.iter()), \
        f"{name}: texto desenhado como contornos (glifos), não como texto"
    parents = {child: parent for parent in root.iter() for child in parent}
    small, count = [], 0
    for el in root.iter(f"{SVG}text"):
        count += 1
        style = el.get("style", "")
        size = float(re.search(r"font-size: ([\d.]+)px", style).group(1))
        assert "sans-serif" in style or "monospace" in style, f"{name}: sem família genérica: {style}"
        node = el
        while node is not None:   # a scale() would make the size above a lie
            assert "scale(" not in node.get("transform", ""), f"{name}: texto escalado"
            node = parents.get(node)
        content = "".join(el.itertext())
        assert not re.search(r"^ | {2}", content), f"{name}: espaços que o SVG colapsaria: {content!r}"
        if size * scale < mf.MIN_TEXT_PX - 1e-9:
            small.append(f"{''.join(el.itertext())!r}: {size * scale:.1f} px")
    assert count > 0, f"{name}: nenhum <text> no SVG"
    assert not small, (f"{name}: texto menor que {mf.MIN_TEXT_PX} px com a figura a "
                       f"{mf.DISPLAY_WIDTH_PX} px de largura: {small}")


@pytest.mark.parametrize("name", NAMES)
def test_title_and_description(name):
    root = _root(name)
    figure = mf.FIGURES[name]
    children = list(root)
    assert children[0].tag == f"{SVG}title" and children[0].text == figure.title
    assert children[1].tag == f"{SVG}desc" and children[1].text == figure.description
    assert root.get("role") == "img"
    assert len(figure.alt) > 80, f"{name}: o texto alternativo precisa descrever a figura"
    if figure.credit:
        assert figure.credit in figure.description


@pytest.mark.parametrize("name", NAMES)
def test_self_contained(name):
    source = (mf.ASSETS / f"{name}.svg").read_text(encoding="utf-8")
    root = ET.fromstring(source)
    for el in root.iter():
        for key, value in el.attrib.items():
            if key.endswith("href"):
                assert value.startswith("#"), f"{name}: referência externa {value}"
    assert not root.findall(f".//{SVG}image"), f"{name}: imagem embutida ou externa"
    assert "@import" not in source and not re.search(r"url\((?!#)", source)


def test_catalog_for_the_notebooks():
    data = json.loads(mf.CATALOG.read_text(encoding="utf-8"))
    assert data == mf.catalog()
    assert list(data) == NAMES and all(data[n]["arquivo"] == f"{n}.svg" for n in NAMES)


def test_lora_figure_uses_the_rank_of_notebook_09():
    notebook = (ROOT / "notebooks" / "src" / "09_lora.md").read_text(encoding="utf-8")
    assert "rank=16, alpha=16" in notebook
    d, r = 1024, 16
    texts = " ".join(_texts(_root("lora")))
    assert f"r = {r}, α = 16" in texts and "2·d·r = 32.768" in texts and f"{2 * d * r:,}" == "32,768"
    assert "3,1% de W" in texts and round(100 * 2 * d * r / d**2, 1) == 3.1
    assert "r = 16" in mf.FIGURES["lora"].alt and "32.768" in mf.FIGURES["lora"].alt


def test_lora_results_are_the_papers_table_4():
    # Hu et al. (2021), arXiv 2106.09685, Table 4 (GPT-3 175B): FT, LoRA 4.7M, LoRA 37.7M.
    assert [row[1:4] for row in mf.LORA_TABLE4] == [(175_255.8, 73.8, 89.5), (4.7, 73.4, 91.7),
                                                     (37.7, 74.0, 91.6)]
    assert [row[4] for row in mf.LORA_TABLE4] == [(52.0, 28.0, 44.5), (53.8, 29.8, 45.9),
                                                  (53.4, 29.2, 45.1)]
    alt = mf.FIGURES["lora_resultados"].alt
    for column in (2, 3):
        values = [f"{row[column]:.1f}".replace(".", ",") for row in mf.LORA_TABLE4]
        assert f"{values[0]}, {values[1]} e {values[2]}" in alt
    texts = _texts(_root("lora_resultados"))
    assert {"73,8", "91,7", "53,8"} <= set(texts)
    assert "Tabela 4" in mf.FIGURES["lora_resultados"].credit


def test_book_curve_is_drawn_from_book_reference():
    from llmdefinitions import book_reference as book

    figure = mf.FIGURES["treino_livro"]
    assert figure.title == "Execução publicada do livro (GPT-2 medium, 2 épocas)"
    assert book.SOURCE_COMMIT[:7] in figure.credit and book.SOURCE_REPO in figure.credit
    final = book.TRAINING_LOG[-1]
    assert f"{final.train_loss:.2f}".replace(".", ",") in figure.alt
    assert f"{final.val_loss:.2f}".replace(".", ",") in figure.alt


def _redraw(names, tmp_path):
    assert mf.main([*names, "--out", str(tmp_path)]) == 0
    for name in names:
        assert (tmp_path / f"{name}.svg").read_bytes() == (mf.ASSETS / f"{name}.svg").read_bytes(), \
            f"{name}.svg difere do que make_figures.py desenha: rode python tools/make_figures.py"


def test_make_figures_gives_the_committed_files(tmp_path):
    _redraw(["lora", "etapas_collate", "treino_livro"], tmp_path)
    assert (tmp_path / "figuras.json").read_bytes() == mf.CATALOG.read_bytes()


@pytest.mark.slow
def test_every_figure_is_byte_identical_when_redrawn(tmp_path):
    _redraw(NAMES, tmp_path)
