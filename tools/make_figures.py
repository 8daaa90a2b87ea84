"""Draw the course's diagrams into ``assets/`` as SVG, with matplotlib only.

The lecture hot-links third-party images; we redraw the diagrams we teach with instead
(published numbers are redrawn and credited). Every figure is drawn on a canvas measured
in tenths of an inch (a 10 x 5 in figure is 100 x 50 units), so sizes read as layout.

* Text stays text (``svg.fonttype = "none"``): searchable, read by screen readers, with a
  font fallback list (DejaVu, Liberation, Arial/Helvetica, then the generic family).
  DejaVu is the widest of them, so text laid out with it fits with any fallback.
* Readable at slide size: shown ``DISPLAY_WIDTH_PX`` (900 px) wide, no text is smaller
  than ``MIN_TEXT_PX`` (14 px); ``tests/test_figures.py`` checks it in the SVGs.
* Each SVG carries a ``<title>`` and a ``<desc>`` (the alt text, with the credit where the
  figure redraws someone else's work); the same wording is in ``FIGURES`` and in
  ``assets/figuras.json`` for the notebooks' captions.
* Self-contained (no external reference) and deterministic: ``svg.hashsalt`` fixes the
  ids and no date is written, so running this twice gives identical files.

Usage::

    python tools/make_figures.py                  # every figure into assets/
    python tools/make_figures.py lora padding     # only these (names without .svg)
    python tools/make_figures.py --png /tmp/prev  # also write PNG previews there
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import textwrap
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Callable, Optional
from xml.sax.saxutils import escape

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon, Rectangle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
CATALOG = ASSETS / "figuras.json"
sys.path.insert(0, str(ROOT))

DISPLAY_WIDTH_PX = 900     # a figure on a slide (reveal's canvas is 960 px wide)
MIN_TEXT_PX = 14           # smallest text at that width

# Fallbacks are only names in the SVG; layout uses DejaVu (shipped with matplotlib).
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
plt.rcParams.update({
    "svg.hashsalt": "llmdefinitions",
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.monospace": ["DejaVu Sans Mono", "Liberation Mono", "Consolas", "Menlo"],
    "font.size": 12.5,
    "hatch.linewidth": 0.8,
})

# Font sizes in points. A 10 in (720 pt) wide figure shown 900 px wide scales by 1.25,
# so 11.3 pt is 14.1 px: nothing is drawn smaller than SMALL.
SMALL = 11.3
BODY = 12.5
HEAD = 13.5
TITLE = 16

# One palette for every figure: (fill, edge/text) per role.
PAL = {
    "instrucao": ("#DCE9F7", "#2E5A88"),      # instruction / generic tokens: blue
    "entrada": ("#DDF0E2", "#2F7D4F"),        # input / context: green
    "resposta": ("#FCE5D2", "#B85A1A"),       # response: orange
    "preench": ("#ECECEC", "#6A6A6A"),        # padding: gray
    "ignorado": ("#F7D6D3", "#A93226"),       # -100 / ignored: red
    "fim": ("#FFF1B8", "#8A6400"),            # end-of-text kept: yellow
    "modelo": ("#E8E0F4", "#5E4391"),         # models, LLMs: purple
    "neutro": ("#F6F6F6", "#444444"),         # plain boxes
}
INK = "#222222"
SOFT = "#555555"
MONO = "monospace"
PAD_ID = 50256


# ---------------------------------------------------------------------------
# Drawing helpers (all coordinates in tenths of an inch)


def canvas(width: float = 10.0, height: float = 5.0):
    """A figure whose single axes spans it, in units of 0.1 in."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, width * 10)
    ax.set_ylim(0, height * 10)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def keep_spaces(s: str) -> str:
    """Indents and runs of spaces as no-break spaces: SVG text collapses plain ones."""
    return re.sub(r"(?m)^ +| {2,}", lambda m: "\u00a0" * len(m.group()), s)


def box(ax, x, y, w, h, text="", role="neutro", fontsize=BODY, weight="normal",
        family=None, radius=0.8, lw=1.4, ha="center", va="center", text_color=None,
        fill=None, edge=None, hatch=None, linestyle="-", pad=1.0, zorder=2):
    """A rounded box with (x, y) its lower-left corner, and optional centered text."""
    fc, ec = PAL[role]
    patch = FancyBboxPatch((x, y), w, h, boxstyle=f"round,pad=0,rounding_size={radius}",
                           fc=fill or fc, ec=edge or ec, lw=lw, hatch=hatch,
                           linestyle=linestyle, zorder=zorder)
    ax.add_patch(patch)
    if text:
        tx = {"center": x + w / 2, "left": x + pad, "right": x + w - pad}[ha]
        ty = {"center": y + h / 2, "top": y + h - pad, "bottom": y + pad}[va]
        ax.text(tx, ty, keep_spaces(text), ha=ha, va=va, fontsize=fontsize, weight=weight,
                family=family, color=text_color or (edge or ec), zorder=zorder + 1,
                linespacing=1.3)
    return patch


def arrow(ax, start, end, color=SOFT, lw=1.6, style="-|>", mutation=14, rad=0.0,
          linestyle="-", zorder=1, shrink=0.0):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=mutation,
                                 color=color, lw=lw, linestyle=linestyle, zorder=zorder,
                                 connectionstyle=f"arc3,rad={rad}",
                                 shrinkA=shrink, shrinkB=shrink))


def text(ax, x, y, s, size=BODY, color=INK, ha="left", va="center", weight="normal",
         family=None, style="normal", zorder=5, **kwargs):
    return ax.text(x, y, keep_spaces(s), fontsize=size, color=color, ha=ha, va=va, weight=weight,
                   family=family, style=style, zorder=zorder, linespacing=1.3, **kwargs)


def token_role(value) -> str:
    if value == -100:
        return "ignorado"
    if value == PAD_ID:
        return "preench"
    return "instrucao"


def target_roles(row) -> list:
    """Roles of a target row: the first end-of-text is the kept one ("fim"), the rest by value."""
    out, seen = [], False
    for v in row:
        if v == PAD_ID and not seen:
            out.append("fim")
            seen = True
        else:
            out.append(token_role(v))
    return out


def tiles(ax, x, y, values, w=5.2, h=3.2, gap=0.35, fontsize=SMALL, roles=None):
    """A row of token tiles starting at (x, y); ``roles`` overrides the colors."""
    for i, value in enumerate(values):
        role = roles[i] if roles else token_role(value)
        if value is None:
            continue
        box(ax, x + i * (w + gap), y, w, h, str(value), role=role, fontsize=fontsize,
            family=MONO, radius=0.35, lw=1.1, weight="bold" if role == "fim" else "normal")
    return x + len(values) * (w + gap) - gap


def legend(ax, x, y, items, size=SMALL, step=None):
    """Colored squares with labels, in a row from (x, y)."""
    for role, label in items:
        box(ax, x, y - 1.0, 2.0, 2.0, role=role, radius=0.3, lw=1.0)
        text(ax, x + 2.7, y, label, size=size, color=INK)
        x += step if step else 2.7 + 0.6 * size / 7.2 * len(label) + 3.5


def title(ax, s, y, x=None, size=TITLE):
    x = ax.get_xlim()[1] / 2 if x is None else x
    text(ax, x, y, s, size=size, weight="bold", ha="center")


# ---------------------------------------------------------------------------
# The example entry shown in several figures (data[50] of the course's data set)

ENTRY = {
    "instruction": "Identify the correct spelling of the following word.",
    "input": "Ocassion",
    "output": "The correct spelling is 'Occasion.'",
}

# Each style as (text, role) segments; checked against llmdefinitions.prompts below.
ALPACA_SEGMENTS = [
    ("Below is an instruction that describes a task. Write a response that "
     "appropriately completes the request.", "fixo"),
    ("\n\n### Instruction:\n", "fixo"),
    (ENTRY["instruction"], "instrucao"),
    ("\n\n### Input:\n", "fixo"),
    (ENTRY["input"], "entrada"),
    ("\n\n### Response:\n", "fixo"),
    (ENTRY["output"], "resposta"),
]
PHI3_SEGMENTS = [
    ("<|user|>\n", "fixo"),
    (ENTRY["instruction"], "instrucao"),
    ("\n", "fixo"),
    (ENTRY["input"], "entrada"),
    ("\n<|assistant|>:\n", "fixo"),
    (ENTRY["output"], "resposta"),
]


def _check_segments_against_package() -> None:
    """The figure must show exactly what the package's prompt styles produce."""
    try:
        sys.path.insert(0, str(ROOT))
        from llmdefinitions.prompts import get_prompt_style
    except ImportError:  # drawing does not need the package
        return
    for name, segments in (("alpaca", ALPACA_SEGMENTS), ("phi3", PHI3_SEGMENTS)):
        drawn = "".join(s for s, _ in segments)
        expected = get_prompt_style(name).full_text(ENTRY)
        if drawn != expected:
            raise SystemExit(f"estilos_de_prompt: o texto de {name!r} difere de "
                             f"llmdefinitions.prompts:\n{drawn!r}\n!=\n{expected!r}")


def _segment_lines(segments, width):
    """Lines of (text, role) after splitting on newlines and wrapping at ``width``."""
    lines, current = [], []
    for chunk, role in segments:
        parts = chunk.split("\n")
        for i, part in enumerate(parts):
            if i > 0:
                lines.append(current)
                current = []
            if part:
                current.append((part, role))
    lines.append(current)
    wrapped = []
    for line in lines:
        joined = "".join(p for p, _ in line)
        if len(joined) <= width or len(line) != 1:
            wrapped.append(line)
        else:
            role = line[0][1]
            wrapped.extend([[(piece, role)] for piece in textwrap.wrap(joined, width)])
    return wrapped


# ---------------------------------------------------------------------------
# Figures


def fig_estilos_de_prompt():
    _check_segments_against_package()
    fig, ax = canvas(10, 5.4)
    title(ax, "A mesma amostra em dois estilos de prompt", 51.3)
    colors = {"fixo": INK, "instrucao": PAL["instrucao"][1], "entrada": PAL["entrada"][1],
              "resposta": PAL["resposta"][1]}
    panels = [("Alpaca", ALPACA_SEGMENTS, 1.0, 55.5, 46), ("Phi-3", PHI3_SEGMENTS, 58.5, 40.5, 33)]
    size = SMALL
    char_w = 0.602 * size / 7.2
    for name, segments, x0, width, wrap in panels:
        top, bottom = 47.5, 7.0
        box(ax, x0, bottom, width, top - bottom, role="neutro", fill="#FBFBFB", radius=1.2)
        box(ax, x0, top - 4.4, width, 4.4, f"Estilo {name}", role="modelo", fontsize=HEAD,
            weight="bold", radius=1.2)
        y = top - 7.2
        for line in _segment_lines(segments, wrap):
            x = x0 + 1.4
            for piece, role in line:
                weight = "bold" if role == "fixo" and piece.startswith(("#", "<|")) else "normal"
                text(ax, x, y, piece, size=size, family=MONO, color=colors[role], weight=weight)
                x += char_w * len(piece)
            y -= 2.45
    text(ax, 78.75, 12.0, "tokens especiais em vez\nde cabeçalhos ###", size=SMALL, color=SOFT,
         ha="center", style="italic")
    legend(ax, 2, 3.0, [("neutro", "texto fixo do estilo"), ("instrucao", "instrução"),
                        ("entrada", "entrada (contexto)"), ("resposta", "resposta de referência")])
    return fig


def fig_etapas_collate():
    fig, ax = canvas(10, 6.6)
    title(ax, "Montagem dos lotes em cinco passos", 63.4)
    rows = [  # (step, label, top y, height)
        ("2.1", "Formatar com o\nestilo de prompt", 60.5, 9.5),
        ("2.2", "Tokenizar:\ntexto → IDs", 50.0, 5.5),
        ("2.3", "Preencher com\n50256 até o maior\ndo lote (+1)", 43.5, 12.0),
        ("2.4", "Alvos: a entrada\ndeslocada uma\nposição", 30.5, 12.0),
        ("2.5", "Preenchimento\nvira -100, menos\no 1º fim de texto", 17.5, 12.0),
    ]
    for step, label, top, height in rows:
        box(ax, 0.8, top - height, 26.5, height, role="neutro", fill="#FAFAFA", lw=1.0)
        box(ax, 1.6, top - height / 2 - 2.0, 6.2, 4.0, step, role="modelo", fontsize=HEAD,
            weight="bold", radius=1.0)
        text(ax, 8.8, top - height / 2, label, size=SMALL)
    for (_, _, top, height), (_, _, next_top, _) in zip(rows, rows[1:]):
        arrow(ax, (4.7, top - height / 2 - 2.1), (4.7, next_top - 3.3), color=PAL["modelo"][1],
              lw=1.2, mutation=10)

    # 2.1: formatted text
    x0 = 29
    fmt = [("Below is an instruction that describes a …", INK),
           ("### Instruction: ", INK), ("Identify the correct spelling …", PAL["instrucao"][1]),
           ("### Input: ", INK), ("Ocassion", PAL["entrada"][1]),
           ("### Response: ", INK), ("The correct spelling is 'Occasion.'", PAL["resposta"][1])]
    box(ax, x0, 51.0, 70, 9.5, role="neutro", fill="#FBFBFB", lw=1.0)
    cw = 0.602 * SMALL / 7.2
    y = 58.6
    text(ax, x0 + 1.2, y, fmt[0][0], size=SMALL, family=MONO, color=INK)
    for head, (body, color) in zip(fmt[1::2], fmt[2::2]):
        y -= 2.2
        text(ax, x0 + 1.2, y, head[0], size=SMALL, family=MONO, color=INK, weight="bold")
        text(ax, x0 + 1.2 + cw * len(head[0]), y, body, size=SMALL, family=MONO, color=color)

    # 2.2: token ids of that text (GPT-2 BPE)
    ids = [21106, 318, 281, 12064, 326, 8477, 257, "…", 4247, 2637]
    tiles(ax, x0, 45.7, ids, w=6.3, h=3.0, gap=0.7)

    batch = [[0, 1, 2], [3], [4, 5]]
    padded = [s + [PAD_ID] * (4 - len(s)) for s in batch]
    inputs = [p[:-1] for p in padded]
    targets = [p[1:] for p in padded]
    masked = [[v if v != PAD_ID or i == r.index(PAD_ID) else -100 for i, v in enumerate(r)]
              for r in targets]

    w, h, gap = 5.9, 2.7, 0.35
    left, right = 30.0, 68.0

    def block(x, top, rows_, caption, roles_fn=None):
        text(ax, x, top - 1.4, caption, size=SMALL, color=SOFT, style="italic")
        for i, r in enumerate(rows_):
            roles = roles_fn(r) if roles_fn else None
            tiles(ax, x, top - 5.4 - i * 3.1, r, w=w, h=h, gap=gap, roles=roles)

    block(left, 43.5, batch, "amostras tokenizadas")
    block(right, 43.5, padded, "preenchidas até 3 + 1 = 4")
    block(left, 30.5, inputs, "entradas = preenchidas[:-1]")
    block(right, 30.5, targets, "alvos = preenchidas[1:]")
    block(left, 17.5, targets, "alvos do passo 2.4", target_roles)
    block(right, 17.5, masked, "alvos finais", target_roles)
    for top in (43.5, 30.5, 17.5):
        arrow(ax, (left + 4 * (w + gap) + 1.0, top - 7.4), (right - 1.5, top - 7.4), color=SOFT)
    legend(ax, 1.5, 2.2, [("instrucao", "token"), ("preench", "preenchimento 50256"),
                          ("fim", "fim de texto mantido"), ("ignorado", "-100 (fora da perda)")])
    return fig


def fig_padding():
    fig, ax = canvas(10, 5)
    title(ax, "Preenchimento até a maior sequência de cada lote", 47.5)
    batches = [("Lote 1", [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]], 1.0),
               ("Lote 2", [[10, 11, 12], [13, 14, 15, 16, 17, 18, 19], [20, 21, 22, 23]], 43.0)]
    w, gap = 5.4, 0.35
    for name, samples, x0, in batches:
        longest = max(map(len, samples))
        width = longest * (w + gap) - gap
        bx = x0 + 12
        box(ax, x0, 11, width + 14, 32, role="neutro", fill="#FAFAFA", lw=1.0)
        text(ax, x0 + 1.5, 40, name, size=HEAD, weight="bold")
        for i, s in enumerate(samples):
            y = 31.5 - i * 6.3
            text(ax, x0 + 1.5, y + 1.6, f"amostra {i + 1}", size=SMALL, color=SOFT)
            padded = s + [PAD_ID] * (longest - len(s))
            tiles(ax, bx, y, padded, w=w, h=3.2, gap=gap)
        yb = 16.0
        ax.plot([bx, bx, bx + width, bx + width], [yb + 1, yb, yb, yb + 1], color=SOFT, lw=1.2)
        text(ax, bx + width / 2, yb - 2.3, f"comprimento do lote = {longest}", size=SMALL,
             color=SOFT, ha="center")
    text(ax, 50, 7.0, "Cada lote tem o seu comprimento (no curso, ex.: 8 × 61 e 8 × 76):\n"
         "menos preenchimento do que igualar tudo ao maior exemplo.",
         size=SMALL, ha="center", color=INK)
    legend(ax, 18, 1.8, [("instrucao", "ID de token da amostra"),
                         ("preench", "preenchimento: 50256 = <|endoftext|>")])
    return fig


def fig_entrada_alvo():
    fig, ax = canvas(10, 5)
    title(ax, "Entrada e alvo: o mesmo texto deslocado uma posição", 47.5)
    rows_y = {"entrada": 32.0, "seq": 20.5, "alvo": 9.0}
    labels = {"seq": "sequência\npreenchida", "entrada": "entrada\n= seq[:-1]",
              "alvo": "alvo\n= seq[1:]"}
    for key, y in rows_y.items():
        text(ax, 0.8, y + 1.6, labels[key], size=BODY, weight="bold" if key != "seq" else "normal")
    w, gap = 5.4, 0.5
    samples = [("amostra 1: [0, 1, 2, 3, 4]", [0, 1, 2, 3, 4, PAD_ID], 15.0),
               ("amostra 2: [5, 6]", [5, 6, PAD_ID, PAD_ID, PAD_ID, PAD_ID], 56.5)]
    for caption, seq, x0 in samples:
        text(ax, x0, 41.0, caption, size=BODY, color=SOFT)
        tiles(ax, x0, rows_y["seq"], seq, w=w, h=3.2, gap=gap)
        tiles(ax, x0, rows_y["entrada"], seq[:-1], w=w, h=3.2, gap=gap)
        tiles(ax, x0, rows_y["alvo"], seq[1:], w=w, h=3.2, gap=gap,
              roles=["resposta" if v != PAD_ID else "preench" for v in seq[1:]])
        for i in range(len(seq)):
            cx = x0 + i * (w + gap) + w / 2
            if i < len(seq) - 1:  # straight up to the input
                arrow(ax, (cx, rows_y["seq"] + 3.4), (cx, rows_y["entrada"] - 0.2),
                      color=PAL["instrucao"][1], lw=1.0, mutation=9)
            if i > 0:  # diagonal to the target one column to the left
                tx = x0 + (i - 1) * (w + gap) + w / 2
                arrow(ax, (cx, rows_y["seq"] - 0.2), (tx, rows_y["alvo"] + 3.4),
                      color=PAL["resposta"][1], lw=0.9, mutation=9, linestyle=(0, (3, 2)))
        lx = x0 + 5 * (w + gap) + w / 2
        text(ax, lx, rows_y["entrada"] + 1.6, "✗", size=HEAD, color=PAL["ignorado"][1], ha="center")
        text(ax, lx + 3.2, rows_y["entrada"] + 5.6, "sai da entrada", size=SMALL, color=SOFT,
             ha="right")
    text(ax, 50, 3.0, "Na posição i, o alvo é o token i + 1: o modelo aprende a prever o "
         "próximo token,\ncomo no pré-treinamento.", size=BODY, ha="center")
    return fig


def fig_mascara():
    fig, ax = canvas(10, 5.4)
    title(ax, "Alvos: o preenchimento vira -100, menos o primeiro 50256", 51.5)
    before = [[1, 2, 3, 4, PAD_ID], [6, PAD_ID, PAD_ID, PAD_ID, PAD_ID], [8, 9, PAD_ID, PAD_ID, PAD_ID]]
    after = [[1, 2, 3, 4, PAD_ID], [6, PAD_ID, -100, -100, -100], [8, 9, PAD_ID, -100, -100]]

    w, gap = 5.8, 0.5
    xl, xr = 11.5, 59.5
    text(ax, xl, 45.5, "alvos do passo 2.4", size=BODY, color=SOFT, style="italic")
    text(ax, xr, 45.5, "alvos finais (passo 2.5)", size=BODY, color=SOFT, style="italic")
    for i, (b, a) in enumerate(zip(before, after)):
        y = 38 - i * 6
        text(ax, 0.8, y + 1.6, f"amostra {i + 1}", size=SMALL, color=SOFT)
        tiles(ax, xl, y, b, w=w, h=3.2, gap=gap, roles=[token_role(v) for v in b])
        tiles(ax, xr, y, a, w=w, h=3.2, gap=gap, roles=target_roles(a))
        arrow(ax, (xl + 5 * (w + gap) + 0.6, y + 1.6), (xr - 1.2, y + 1.6), color=SOFT)
    kx = xr + 2 * (w + gap) + w / 2
    box(ax, 34, 9.5, 31, 9.6, "50256 mantido uma vez:\no modelo aprende a gerar o\n"
        "fim de texto e a parar", role="fim", fontsize=SMALL, radius=0.8)
    arrow(ax, (55.5, 19.3), (kx, 25.8), color=PAL["fim"][1], lw=1.2, rad=0.1)
    ix = xr + 3 * (w + gap) + w / 2
    box(ax, 67.5, 9.5, 31.5, 9.6, "-100 = ignore_index: a\nentropia cruzada ignora\n"
        "estas posições", role="ignorado", fontsize=SMALL, radius=0.8)
    arrow(ax, (86, 19.3), (ix + 3, 25.8), color=PAL["ignorado"][1], lw=1.2, rad=-0.1)
    legend(ax, 1.5, 17.0, [("instrucao", "token"), ("preench", "preenchimento")], step=11.0)
    legend(ax, 1.5, 12.5, [("fim", "fim de texto"), ("ignorado", "-100")], step=17.0)
    text(ax, 1.5, 4.5, "F.cross_entropy(logits, alvos)  # ignore_index=-100 é o padrão",
         size=SMALL, family=MONO, color=INK)
    return fig


def fig_mascaramento_instrucao():
    fig, ax = canvas(10, 5.4)
    title(ax, "Mascaramento de instrução × modelagem de instrução", 51.5)
    segs = [("instrução", "instrucao", 30), ("entrada", "entrada", 14),
            ("resposta", "resposta", 26), ("50256", "fim", 8)]
    x0 = 21
    text(ax, 1.0, 42.6, "sequência\nde treino", size=BODY)
    x = x0
    for label, role, width in segs:
        box(ax, x, 40.5, width - 0.5, 4.4, label, role=role, fontsize=SMALL, radius=0.5,
            family=MONO if role == "fim" else None)
        x += width
    rows = [("Mascaramento\nde instrução", 29.5, True,
             "perda só na resposta: alvos do prompt viram -100"),
            ("Modelagem de\ninstrução (o\npadrão do curso)", 17.0, False,
             "perda em todos os tokens: instrução, entrada e resposta")]
    for label, y, masked, note in rows:
        text(ax, 1.0, y + 2.2, label, size=BODY, weight="bold")
        x = x0
        for seg_label, role, width in segs:
            if masked and role in ("instrucao", "entrada"):
                box(ax, x, y, width - 0.5, 4.4, "-100 -100 …" if width > 20 else "-100 …",
                    role="ignorado", fontsize=SMALL, radius=0.5, hatch="///", family=MONO,
                    fill="#FBECEA")
            else:
                box(ax, x, y, width - 0.5, 4.4, "✓ na perda" if width > 20 else "✓", role=role,
                    fontsize=SMALL, radius=0.5)
            x += width
        text(ax, x0, y - 2.2, note, size=SMALL, color=SOFT, style="italic")
    box(ax, 1, 1.0, 98, 10.0, "", role="modelo", fill="#F5F1FB", radius=1.0)
    text(ax, 2.5, 8.3, "Shi et al. (2024), arXiv 2405.14394, Instruction Tuning With Loss Over "
         "Instructions:", size=SMALL, weight="bold", color=PAL["modelo"][1])
    text(ax, 2.5, 4.2, "não mascarar a instrução muitas vezes dá respostas melhores, sobretudo "
         "com\ninstruções longas e respostas curtas, ou com poucos exemplos; reduz o sobreajuste.",
         size=SMALL, color=INK)
    return fig


def fig_empacotamento():
    fig, ax = canvas(10, 6.2)
    title(ax, "Empacotamento: várias amostras em uma sequência", 59.5)
    samples = [("A", 3), ("B", 2), ("C", 4)]
    roles = {"A": "instrucao", "B": "resposta", "C": "entrada"}
    n = sum(k for _, k in samples)
    w, gap = 3.9, 0.35

    text(ax, 1.0, 54.0, "(a) com preenchimento", size=BODY, weight="bold")
    for i, (name, k) in enumerate(samples):
        y = 48.0 - i * 4.0
        vals = [f"{name}{j}" for j in range(k)] + ["pad"] * (4 - k)
        rs = [roles[name]] * k + ["preench"] * (4 - k)
        for j, (v, r) in enumerate(zip(vals, rs)):
            box(ax, 1.5 + j * (w + gap), y, w, 3.2, v, role=r, fontsize=SMALL, radius=0.3, lw=1.0)
    text(ax, 1.5, 37.0, "12 posições, 3 de preenchimento", size=SMALL, color=SOFT)

    text(ax, 26, 54.0, "(b) empacotada: uma linha, sem preenchimento", size=BODY, weight="bold")
    arrow(ax, (19.4, 44.0), (24.4, 44.0), color=SOFT)
    x = 25
    seq = []
    for name, k in samples:
        for j in range(k):
            seq.append((name, j))
            box(ax, x, 44.0, w, 3.2, f"{name}{j}", role=roles[name], fontsize=SMALL, radius=0.3,
                lw=1.0)
            x += w + gap
    text(ax, 25, 40.0, "cada amostra termina com <|endoftext|>", size=SMALL, color=SOFT)

    def mask_panel(x0, y0, caption, aware):
        cell = 2.45
        text(ax, x0 - 5.5, y0 + n * cell + 4.3, caption, size=BODY, weight="bold")
        for i, (qi, _) in enumerate(seq):          # query row
            for j, (kj, _) in enumerate(seq):      # key column
                if j > i:
                    fc, ec = "#FFFFFF", "#D0D0D0"
                elif qi == kj:
                    fc, ec = PAL[roles[qi]][1], "#FFFFFF"
                elif aware:
                    fc, ec = "#FFFFFF", "#D0D0D0"
                else:
                    fc, ec = PAL["ignorado"][1], "#FFFFFF"
                ax.add_patch(Rectangle((x0 + j * cell, y0 + (n - 1 - i) * cell), cell, cell,
                                       fc=fc, ec=ec, lw=0.6, alpha=0.85 if fc != "#FFFFFF" else 1))
        for i, (name, j) in enumerate(seq):
            text(ax, x0 - 0.5, y0 + (n - 1 - i) * cell + cell / 2, f"{name}{j}", size=SMALL,
                 ha="right", color=SOFT)
        pos = list(range(n)) if not aware else [j for _, j in seq]
        text(ax, x0 - 0.5, y0 - 1.9, "posição", size=SMALL, ha="right", color=INK)
        for i, p in enumerate(pos):
            text(ax, x0 + i * cell + cell / 2, y0 - 1.9, str(p), size=SMALL, ha="center",
                 family=MONO, weight="bold", color=INK if not aware or p else PAL["entrada"][1])

    mask_panel(7.0, 4.5, "(c) ingênuo: máscara causal", aware=False)
    mask_panel(40.5, 4.5, "(d) com fronteiras", aware=True)
    box(ax, 67.5, 1.0, 31.5, 35.0, "", role="ignorado", fill="#FDF3F2", radius=1.0)
    text(ax, 68.8, 33.3, "O que dá errado em (c)", size=BODY, weight="bold", color=PAL["ignorado"][1])
    text(ax, 68.8, 17.5,
         "• B e C “enxergam” tokens de\n   outras amostras (vermelho)\n"
         "• posições seguem 0…8: C\n   começa na posição 5\n"
         "• o 1º token de cada amostra\n   é previsto a partir da\n   anterior\n\n"
         "Correção (d): máscara por\namostra e posições que\nrecomeçam em 0.",
         size=SMALL, color=INK)
    return fig


def fig_lora():
    fig, ax = canvas(10, 5.2)
    title(ax, "LoRA: pesos congelados + atualização de baixo posto", 49.5)
    text(ax, 2, 43.5, "Ajuste fino completo", size=HEAD, weight="bold")
    box(ax, 5, 3, 22, 4.4, "x  (d = 1024)", role="neutro", fontsize=BODY)
    box(ax, 2, 14, 28, 19, "W + ΔW  (d × d)\ntodos os pesos\natualizados", role="resposta",
        fontsize=BODY)
    box(ax, 5, 37, 22, 4.4, "h", role="neutro", fontsize=BODY)
    arrow(ax, (16, 7.6), (16, 13.8))
    arrow(ax, (16, 33.2), (16, 36.8))
    text(ax, 17.2, 10.6, "1.048.576 treináveis", size=SMALL, color=SOFT, ha="left")
    ax.plot([33, 33], [2, 45], color="#D0D0D0", lw=1.2)

    text(ax, 36, 43.5, "LoRA (r = 16)", size=HEAD, weight="bold")
    box(ax, 47, 3, 22, 4.4, "x  (d = 1024)", role="neutro", fontsize=BODY)
    box(ax, 35.5, 14, 21, 15, "W  (d × d)\ncongelado ❄\n1.048.576 pesos", role="instrucao",
        fontsize=BODY)
    ax.add_patch(Polygon([(60, 12.0), (78, 12.0), (72.5, 19.5), (65.5, 19.5)], closed=True,
                         fc=PAL["resposta"][0], ec=PAL["resposta"][1], lw=1.4))
    text(ax, 69, 15.4, "A  (d × r)", size=BODY, ha="center", color=PAL["resposta"][1])
    ax.add_patch(Polygon([(65.5, 21.0), (72.5, 21.0), (78, 28.5), (60, 28.5)], closed=True,
                         fc=PAL["resposta"][0], ec=PAL["resposta"][1], lw=1.4))
    text(ax, 69, 25.0, "B  (r × d)", size=BODY, ha="center", color=PAL["resposta"][1])
    text(ax, 74.5, 20.25, "r", size=HEAD, weight="bold", color=PAL["resposta"][1], ha="left")
    box(ax, 58, 33, 8, 4.4, "+", role="neutro", fontsize=TITLE, weight="bold", radius=2.0)
    box(ax, 56, 40, 12, 4.4, "h", role="neutro", fontsize=BODY)
    arrow(ax, (55, 7.6), (47, 13.8))
    arrow(ax, (61, 7.6), (67, 11.8))
    arrow(ax, (46, 29.2), (58.8, 33.2))
    arrow(ax, (69, 28.7), (64.5, 32.8))
    text(ax, 69.0, 31.6, "× α/r", size=BODY, color=PAL["resposta"][1], weight="bold")
    arrow(ax, (62, 37.6), (62, 39.8))
    box(ax, 80, 2, 19.5, 43, "", role="neutro", fill="#FAFAFA", lw=1.0)
    text(ax, 81.2, 23.5, "h = xW + (α/r)·xAB\n\nB começa em zero:\nno início, a saída\n"
         "é a do modelo\npré-treinado\n\nr = 16, α = 16\n(notebook 09)\n\n"
         "treináveis:\n2·d·r = 32.768\n(3,1% de W)", size=SMALL, color=INK)
    return fig


def fig_fluxo_juiz():
    fig, ax = canvas(10, 5.4)
    title(ax, "LLM como juiz: pontuar cada resposta de 0 a 100", 51.5)
    inputs = [("Instrução + entrada\nformat_input(entry)", "instrucao", 36.0),
              ("Resposta de referência\nentry['output']", "entrada", 25.5),
              ("Resposta do modelo\nentry['model_response']", "resposta", 15.0)]
    for label, role, y in inputs:
        box(ax, 0.8, y, 24.5, 8.0, label, role=role, fontsize=SMALL)
        arrow(ax, (25.6, y + 4.0), (29.3, 28.5), color=PAL[role][1], lw=1.3)
    box(ax, 29.5, 15.0, 29.5, 27.0, "", role="neutro", fill="#FBFBFB")
    text(ax, 44.25, 39.6, "Prompt do juiz (inglês)", size=SMALL, weight="bold", ha="center")
    text(ax, 30.6, 27.3,
         "Given the input `…`\nand correct output `…`,\nscore the model\nresponse `…` on a\n"
         "scale from 0 to 100,\nwhere 100 is the best\nscore. Respond with the\n"
         "integer number only.", size=SMALL, family=MONO, color=INK)
    arrow(ax, (59.2, 28.5), (62.3, 28.5))
    box(ax, 62.5, 20.0, 16, 17, "LLM juiz\nLlama 3 8B\nInstruct\nvia Ollama", role="modelo",
        fontsize=BODY, weight="bold")
    arrow(ax, (78.7, 28.5), (81.3, 28.5))
    box(ax, 81.5, 22.5, 17.5, 12, "pontuação\n0 – 100\n(ex.: 85)", role="fim", fontsize=BODY,
        weight="bold")
    arrow(ax, (90, 22.3), (90, 14.2))
    box(ax, 75, 2.0, 24, 12, "média sobre as 110\namostras de teste\n≈ 50 (GPT-2 355M)",
        role="entrada", fontsize=SMALL, weight="bold")
    ax.plot([74.8, 12.5], [9.0, 9.0], color=SOFT, linestyle=(0, (4, 3)), lw=1.2)
    arrow(ax, (12.5, 9.0), (12.5, 14.8), color=SOFT, linestyle=(0, (4, 3)), lw=1.2)
    text(ax, 43.5, 11.0, "repete para cada amostra do conjunto de teste", size=SMALL, color=SOFT,
         ha="center", style="italic")
    text(ax, 43.5, 4.5, "o livro cita, sem dizer como mediu:\nLlama 3 8B base 58,51; Instruct 82,65",
         size=SMALL, color=SOFT, ha="center")
    return fig


def fig_visao_geral():
    fig, ax = canvas(10, 5.4)
    title(ax, "Ajuste fino de instruções: as três etapas do capítulo", 51.5)
    stages = [
        ("Etapa 1\nPreparar o conjunto de dados", "instrucao",
         [("1", "Baixar e formatar\nos dados", "01"), ("2", "Montar os lotes\n(agrupamento)", "02"),
          ("3", "Criar os\ncarregadores", "03")]),
        ("Etapa 2\nAjuste fino do LLM", "resposta",
         [("4", "Carregar o GPT-2\npré-treinado", "04"), ("5", "Ajuste fino de\ninstruções", "05"),
          ("6", "Inspecionar a perda\n(treino × validação)", "05")]),
        ("Etapa 3\nAvaliar o LLM", "entrada",
         [("7", "Extrair as respostas\ndo teste", "06"),
          ("8", "Ler as respostas\n(qualitativa)", "06"),
          ("9", "Pontuar com um\nLLM como juiz", "07")]),
    ]
    x0, col_w, col_gap = 1.0, 31.0, 2.0
    for s, (stage, role, steps) in enumerate(stages):
        x = x0 + s * (col_w + col_gap)
        fc, ec = PAL[role]
        box(ax, x, 1.5, col_w, 45.0, "", role=role, fill="#FCFCFC", lw=1.6, radius=1.2)
        box(ax, x, 38.5, col_w, 8.0, stage, role=role, fontsize=BODY, weight="bold", radius=1.2)
        for k, (num, label, nb) in enumerate(steps):
            y = 27.5 - k * 12.5
            box(ax, x + 1.2, y, col_w - 2.4, 9.5, "", role=role, radius=0.8, lw=1.2)
            ax.add_patch(plt.Circle((x + 4.6, y + 4.75), 2.5, fc=ec, ec=ec, zorder=3))
            text(ax, x + 4.6, y + 4.75, num, size=HEAD, weight="bold", color="white", ha="center")
            text(ax, x + 8.0, y + 5.6, label, size=SMALL, color=INK)
            text(ax, x + col_w - 2.0, y + 1.3, f"notebook {nb}", size=SMALL, color=ec, ha="right",
                 style="italic")
            if k < len(steps) - 1:
                arrow(ax, (x + 4.6, y - 0.1), (x + 4.6, y - 2.9), color=ec, lw=1.2, mutation=9)
        if s < len(stages) - 1:
            arrow(ax, (x + col_w + 0.2, 42.5), (x + col_w + col_gap - 0.2, 42.5), color=SOFT,
                  lw=2.0)
    return fig


def fig_coleta():
    fig, ax = canvas(10, 6.0)
    title(ax, "De onde vêm os dados de ajuste fino de instruções", 57.5)
    box(ax, 33, 46.5, 34, 6, "pares instrução–resposta", role="modelo", fontsize=HEAD,
        weight="bold")
    branches = [
        ("1. Criados por humanos", "entrada", 0.8,
         "• Databricks Dolly:\n   15 mil amostras,\n   7 tipos de tarefa\n"
         "• LIMA (Meta): 1.000\n   exemplos escolhidos",
         "+ qualidade\n− lento e caro"),
        ("2. Convertidos de\n    conjuntos de PLN", "instrucao", 34.2,
         "• templates viram\n   tarefas (NLI,\n   sentimento) em pares\n"
         "• FLAN: 62 benchmarks\n• P3: 170 conjuntos",
         "+ muitas tarefas\n− textos pouco naturais"),
        ("3. Sintéticos\n    (gerados por LLM)", "resposta", 67.6,
         "• Self-Instruct → Alpaca:\n   52 mil pares\n"
         "• Bonito: texto sem\n   rótulo → tarefas\n"
         "• Magpie: template de\n   pré-consulta",
         "+ escala barata\n− herda vieses e erros"),
    ]
    for name, role, x, body, verdict in branches:
        w = 31.6
        arrow(ax, (50, 46.3), (x + w / 2, 40.6), color=SOFT, lw=1.3)
        box(ax, x, 33.0, w, 7.5, name, role=role, fontsize=BODY, weight="bold", ha="left", pad=1.2)
        box(ax, x, 1.0, w, 31, "", role=role, fill="#FCFCFC", lw=1.2)
        text(ax, x + 1.2, 30.5, body, size=SMALL, color=INK, va="top")
        text(ax, x + 1.2, 6.2, verdict, size=SMALL, color=PAL[role][1])
    return fig


def chain(ax, y, h, items, gap_arrow=0.4, fontsize=SMALL, weight="normal"):
    """Boxes (x, w, text, role) on one row, joined left to right by arrows."""
    for x, w, label, role in items:
        box(ax, x, y, w, h, label, role=role, fontsize=fontsize, weight=weight)
    for (x, w, _, _), (nx, _, _, _) in zip(items, items[1:]):
        arrow(ax, (x + w + gap_arrow, y + h / 2), (nx - gap_arrow, y + h / 2))


def fig_alpaca_self_instruct():
    fig, ax = canvas(10, 4.6)
    title(ax, "Alpaca: dados gerados com Self-Instruct", 43.0)
    chain(ax, 18.0, 16.0, [
        (0.8, 19.5, "175 tarefas-\nsemente escritas\npor pessoas\n(instrução +\nexemplo)", "entrada"),
        (24.5, 22.0, "text-davinci-003\n(OpenAI) gera\nnovas instruções\ne respostas", "modelo"),
        (50.7, 19.0, "52 mil pares\ninstrução–\nresposta\n(formato Alpaca)", "resposta"),
        (74.0, 25.2, "ajuste fino\nsupervisionado do\nLLaMA 7B (Meta)\n→ Alpaca 7B", "instrucao"),
    ])
    text(ax, 35.5, 13.8, "Self-Instruct: exemplos das sementes no prompt;\n"
         "filtra duplicatas e pares ruins", size=SMALL, color=SOFT, ha="center", style="italic")
    text(ax, 50, 4.0, "Custo relatado: menos de 600 dólares (dados + treino). Qualidade parecida "
         "com a do\nmodelo que gerou os dados, herdando também seus erros e vieses.",
         size=SMALL, ha="center")
    return fig


def fig_bonito():
    fig, ax = canvas(10, 4.6)
    title(ax, "Bonito: texto sem anotação → tarefas de AFI", 43.0)
    box(ax, 0.8, 25.0, 23, 11.5, "texto sem anotação\ndo seu domínio\n(p. ex. um parágrafo)",
        role="entrada", fontsize=SMALL)
    box(ax, 0.8, 10.5, 23, 11.5, "tipo de tarefa\n(p. ex. pergunta e\nresposta extrativa)",
        role="instrucao", fontsize=SMALL)
    box(ax, 32, 15.5, 24, 16, "Bonito\n(ajuste fino do\nMistral-7B)", role="modelo", fontsize=BODY,
        weight="bold")
    arrow(ax, (24.2, 30.75), (31.6, 25.5))
    arrow(ax, (24.2, 16.25), (31.6, 21.5))
    box(ax, 64.5, 15.5, 34.5, 16, "pares instrução–resposta\nda tarefa pedida, sobre\n"
        "aquele texto", role="resposta", fontsize=SMALL)
    arrow(ax, (56.4, 23.5), (64.1, 23.5))
    text(ax, 50, 4.5, "Uso: ajustar um modelo a um domínio novo sem anotar nada à mão "
         "(adaptação\nde tarefa zero-shot); o tipo de tarefa decide o formato dos pares.",
         size=SMALL, ha="center")
    return fig


def fig_magpie():
    fig, ax = canvas(10, 5.2)
    title(ax, "Magpie: o LLM alinhado escreve a instrução e a resposta", 49.0)
    tpl = PAL["neutro"][1]
    text(ax, 0.8, 41.5, "Passo 1", size=HEAD, weight="bold", color=PAL["modelo"][1])
    box(ax, 0.8, 29.5, 37, 9.0, "só o template de pré-consulta:\n<|start_header_id|>user\n"
        "<|end_header_id|>", role="neutro", fontsize=SMALL, family=MONO, text_color=tpl)
    box(ax, 43.5, 29.5, 19, 9.0, "LLM alinhado\n(Llama 3 8B\nInstruct)", role="modelo",
        fontsize=SMALL, weight="bold")
    box(ax, 68.5, 29.5, 30.5, 9.0, "completa com uma\ninstrução plausível", role="instrucao",
        fontsize=SMALL)
    arrow(ax, (38.2, 34), (43.1, 34))
    arrow(ax, (62.9, 34), (68.1, 34))
    text(ax, 0.8, 23.0, "Passo 2", size=HEAD, weight="bold", color=PAL["modelo"][1])
    box(ax, 0.8, 6.5, 37, 14.0, "pré-consulta + instrução\n+ template de pós-consulta:\n"
        "<|eot_id|><|start_header_\nid|>assistant<|end_header_id|>", role="neutro",
        fontsize=SMALL, family=MONO, text_color=tpl)
    box(ax, 43.5, 9.0, 19, 9.0, "o mesmo\nLLM", role="modelo", fontsize=SMALL, weight="bold")
    box(ax, 68.5, 9.0, 30.5, 9.0, "responde: a resposta\ndo par", role="resposta", fontsize=SMALL)
    arrow(ax, (38.2, 13.5), (43.1, 13.5))
    arrow(ax, (62.9, 13.5), (68.1, 13.5))
    arrow(ax, (83.75, 29.3), (30, 20.8), color=PAL["instrucao"][1], rad=-0.08)
    text(ax, 50, 1.8, "Nenhuma semente nem prompt escrito à mão: o formato de chat basta.",
         size=SMALL, ha="center", style="italic", color=SOFT)
    return fig


def fig_sintetico_local():
    fig, ax = canvas(10, 5.4)
    title(ax, "Self-Instruct × Magpie com um modelo pequeno local", 51.5)
    model = "SmolLM2-135M-\nInstruct\n(servidor\nllama-cpp-python)"
    for x0, name in ((0.8, "Self-Instruct"), (50.8, "Magpie")):
        box(ax, x0, 1.0, 48.4, 45.0, "", role="neutro", fill="#FCFCFC", lw=1.0)
        text(ax, x0 + 24.2, 43.3, name, size=HEAD, weight="bold", ha="center")
    # Self-Instruct
    box(ax, 2.0, 29.0, 21.5, 11.5, "prompt com\nalgumas tarefas\ndo conjunto", role="entrada",
        fontsize=SMALL)
    box(ax, 27.0, 29.0, 20.8, 11.5, model, role="modelo", fontsize=SMALL, weight="bold")
    box(ax, 2.0, 13.5, 21.5, 11.0, "nova instrução;\noutra chamada\nescreve a resposta",
        role="instrucao", fontsize=SMALL)
    box(ax, 27.0, 13.5, 20.8, 11.0, "filtros: vazio,\ntemplate, recusa,\ntamanho, duplicatas,\nROUGE-L ≥ 0,7",
        role="ignorado", fontsize=SMALL)
    for start, end, rad in (((23.8, 34.75), (26.7, 34.75), 0), ((37.4, 28.7), (12.75, 24.8), 0.1),
                            ((23.8, 19.0), (26.7, 19.0), 0)):
        arrow(ax, start, end, rad=rad, zorder=4)
    text(ax, 25.0, 6.5, "precisa de exemplos escritos\nà mão (as sementes)", size=SMALL,
         ha="center", color=SOFT, style="italic")
    # Magpie
    box(ax, 52.0, 29.0, 21.5, 11.5, "[sistema, opcional]\n<|im_start|>user\n(só o template)", role="neutro",
        fontsize=SMALL, family=MONO)
    box(ax, 77.0, 29.0, 20.8, 11.5, model, role="modelo", fontsize=SMALL, weight="bold")
    box(ax, 52.0, 13.5, 21.5, 11.0, "instrução; a resposta\nvem pela rota de chat\n(ou template\ncompleto, raw)",
        role="instrucao", fontsize=SMALL)
    box(ax, 77.0, 13.5, 20.8, 11.0, "filtros: vazio,\ntemplate, recusa,\ntamanho, duplicatas,\nROUGE-L ≥ 0,7",
        role="ignorado", fontsize=SMALL)
    for start, end, rad in (((73.8, 34.75), (76.7, 34.75), 0), ((87.4, 28.7), (62.75, 24.8), 0.1),
                            ((73.8, 19.0), (76.7, 19.0), 0)):
        arrow(ax, start, end, rad=rad, zorder=4)
    text(ax, 75.0, 6.5, "nada escrito à mão: só o formato\nde chat (ChatML) do modelo",
         size=SMALL, ha="center", color=SOFT, style="italic")
    return fig


def fig_rlhf_dpo():
    fig, ax = canvas(10, 5.4)
    title(ax, "Depois do AFI: alinhar por preferência com RLHF ou DPO", 51.5)
    text(ax, 0.8, 44.0, "RLHF", size=HEAD, weight="bold", color=PAL["modelo"][1])
    box(ax, 0.8, 30.0, 19, 10.5, "pares de\npreferência\n(escolhida ×\nrejeitada)", role="entrada",
        fontsize=SMALL)
    box(ax, 24.0, 30.0, 21, 10.5, "modelo de\nrecompensa\n(treinado nos pares)", role="fim",
        fontsize=SMALL)
    box(ax, 50.0, 30.0, 23, 10.5, "PPO: o modelo gera\nrespostas, a recom-\npensa pontua,\no modelo se ajusta",
        role="resposta", fontsize=SMALL)
    box(ax, 78.0, 30.0, 21, 10.5, "penalidade KL:\nnão se afastar do\nmodelo de\nreferência (SFT)",
        role="neutro", fontsize=SMALL)
    arrow(ax, (20.2, 35.25), (23.6, 35.25))
    arrow(ax, (45.4, 35.25), (49.6, 35.25))
    arrow(ax, (77.6, 35.25), (73.4, 35.25))
    text(ax, 61.5, 27.0, "laço de amostragem: caro e instável", size=SMALL, color=SOFT,
         ha="center", style="italic")
    ax.plot([0.8, 99], [23.5, 23.5], color="#D0D0D0", lw=1.2)
    text(ax, 0.8, 19.5, "DPO", size=HEAD, weight="bold", color=PAL["modelo"][1])
    box(ax, 0.8, 4.5, 19, 11.0, "modelo SFT +\npares de\npreferência", role="entrada",
        fontsize=SMALL)
    box(ax, 24.0, 4.5, 49, 11.0, "uma perda de classificação: aumentar\nlog p(escolhida) − log p(rejeitada)"
        "\nem relação ao modelo de referência\n(congelado)", role="resposta", fontsize=SMALL)
    box(ax, 78.0, 4.5, 21, 11.0, "modelo\nalinhado", role="modelo", fontsize=BODY, weight="bold")
    arrow(ax, (20.2, 10.0), (23.6, 10.0))
    arrow(ax, (73.4, 10.0), (77.6, 10.0))
    text(ax, 48.5, 1.6, "sem modelo de recompensa, sem gerar respostas durante o treino",
         size=SMALL, color=SOFT, ha="center", style="italic")
    return fig


def fig_ddp_fsdp():
    fig, ax = canvas(10, 5.6)
    title(ax, "Treino em várias GPUs: DDP × FSDP", 53.5)
    parts = [("parâmetros", "instrucao"), ("gradientes", "resposta"), ("otimizador", "entrada")]
    short = {"parâmetros": "parâm.", "gradientes": "grad.", "otimizador": "otim."}
    for x0, name, sharded in ((0.8, "DDP: cópia completa em cada GPU", False),
                              (50.8, "FSDP: cada GPU guarda 1/N", True)):
        text(ax, x0 + 24.2, 47.5, name, size=HEAD, weight="bold", ha="center")
        for g in range(2):
            gx = x0 + g * 24.6
            box(ax, gx, 14.0, 23.6, 30.0, "", role="neutro", fill="#FBFBFB", lw=1.2)
            text(ax, gx + 11.8, 41.6, f"GPU {g}", size=BODY, weight="bold", ha="center")
            for k, (label, role) in enumerate(parts):
                y = 32.0 - k * 7.0
                if sharded:  # its own half filled, the other GPU's half dashed
                    own, other = (gx + 1.2, gx + 12.4) if g == 0 else (gx + 12.4, gx + 1.2)
                    box(ax, own, y, 10.0, 5.5, f"½ {short[label]}", role=role, fontsize=SMALL)
                    box(ax, other, y, 10.0, 5.5, "", role=role, fill="#FFFFFF",
                        linestyle=(0, (3, 2)), lw=1.0)
                else:
                    box(ax, gx + 1.2, y, 21.2, 5.5, f"{label} (todos)", role=role, fontsize=SMALL)
            text(ax, gx + 11.8, 16.5, f"lote: fatia {g + 1}/2", size=SMALL, ha="center", color=SOFT)
    box(ax, 0.8, 1.0, 48.4, 10.5, "depois do backward: all-reduce\nsoma os gradientes entre as "
        "GPUs;\ncada uma dá o mesmo passo", role="modelo", fontsize=SMALL)
    box(ax, 50.8, 1.0, 48.4, 10.5, "all-gather junta os parâmetros da\ncamada antes de usá-la; "
        "reduce-scatter\ndivide os gradientes depois", role="modelo", fontsize=SMALL)
    return fig


# Hu et al. (2021), LoRA, arXiv 2106.09685 v2, Table 4 (GPT-3 175B): method, trainable
# parameters (millions), WikiSQL acc. (%), MNLI-m acc. (%), SAMSum ROUGE-1/2/L.
LORA_TABLE4 = [
    ("ajuste fino completo", 175_255.8, 73.8, 89.5, (52.0, 28.0, 44.5)),
    ("LoRA", 4.7, 73.4, 91.7, (53.8, 29.8, 45.9)),
    ("LoRA", 37.7, 74.0, 91.6, (53.4, 29.2, 45.1)),
]
LORA_CREDIT = ("Dados: Hu et al. (2021), LoRA: Low-Rank Adaptation of Large Language Models, "
               "arXiv 2106.09685 (v2), Tabela 4 (GPT-3 175B).")


def _millions(value: float) -> str:
    whole, _, frac = f"{value:,.1f}".partition(".")
    return f"{whole.replace(',', '.')},{frac} mi"


def fig_lora_resultados():
    fig = plt.figure(figsize=(10, 5.2))
    fig.text(0.5, 0.95, "LoRA no GPT-3 175B: o mesmo desempenho com muito menos treináveis",
             ha="center", va="center", fontsize=TITLE, weight="bold", color=INK)
    ax = fig.add_axes([0.08, 0.2, 0.56, 0.63])
    metrics = ["WikiSQL\n(acurácia)", "MNLI-m\n(acurácia)", "SAMSum\n(ROUGE-1)"]
    colors = [PAL["resposta"][1], PAL["instrucao"][1], PAL["entrada"][1]]
    width = 0.26
    for k, (name, params, wikisql, mnli, samsum) in enumerate(LORA_TABLE4):
        values = [wikisql, mnli, samsum[0]]
        xs = [i + (k - 1) * width for i in range(3)]
        bars = ax.bar(xs, values, width * 0.92, color=colors[k], label=f"{name}\n({_millions(params)})")
        for bar, v in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, v + 1.0, f"{v:.1f}".replace(".", ","),
                    ha="center", va="bottom", fontsize=SMALL, color=INK, rotation=90)
    ax.set_xticks(range(3), metrics, fontsize=SMALL)
    ax.set_ylim(0, 115)
    ax.set_yticks([0, 20, 40, 60, 80, 100], ["0", "20", "40", "60", "80", "100"], fontsize=SMALL)
    ax.set_ylabel("pontuação (%)", fontsize=SMALL)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=SMALL, frameon=False,
              title="parâmetros treináveis", title_fontsize=SMALL)
    fig.text(0.7, 0.36, "4,7 mi são cerca de\n1/37.000 dos 175 bi\ndo ajuste completo",
             fontsize=BODY, color=INK, va="center")
    fig.text(0.5, 0.04, LORA_CREDIT.replace(", arXiv", ",\narXiv"), ha="center", va="center",
             fontsize=SMALL, color=SOFT)
    return fig


def fig_treino_livro():
    from llmdefinitions import book_reference as book

    steps, train, val = book.training_curve()
    fig = plt.figure(figsize=(10, 5.2))
    fig.text(0.5, 0.94, "Execução publicada do livro (GPT-2 medium, 2 épocas)", ha="center",
             va="center", fontsize=TITLE, weight="bold", color=INK)
    ax = fig.add_axes([0.09, 0.22, 0.88, 0.64])
    ax.plot(steps, train, color=PAL["instrucao"][1], lw=2.2, label="perda de treino")
    ax.plot(steps, val, color=PAL["resposta"][1], lw=2.2, linestyle="--", label="perda de validação")
    epoch2 = next(r.step for r in book.TRAINING_LOG if r.epoch == 2)
    last1 = max(r.step for r in book.TRAINING_LOG if r.epoch == 1)
    boundary = (epoch2 + last1) / 2
    ax.axvline(boundary, color=SOFT, lw=1.0, linestyle=":")
    ax.text(boundary + 3, 2.45, "época 2", fontsize=SMALL, color=SOFT)
    ax.text(boundary - 3, 2.45, "época 1", fontsize=SMALL, color=SOFT, ha="right")
    ax.set_xlabel("passo de treino (lotes de 8)", fontsize=SMALL)
    ax.set_ylabel("perda (entropia cruzada)", fontsize=SMALL)
    ax.set_xlim(0, 235)
    ax.set_ylim(0, 2.8)
    ax.set_yticks([0, 0.5, 1.0, 1.5, 2.0, 2.5], ["0", "0,5", "1,0", "1,5", "2,0", "2,5"])
    ax.tick_params(labelsize=SMALL)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(fontsize=SMALL, frameon=False, loc="upper right")
    fig.text(0.5, 0.06, f"{book.HEADER}.\nRaschka, {book.SOURCE_REPO}, ch07/01_main-chapter-code "
             f"(commit {book.SOURCE_COMMIT[:7]}), Apache-2.0.", ha="center", va="center",
             fontsize=SMALL, color=SOFT)
    return fig


# ---------------------------------------------------------------------------
# The catalog: what each figure shows, in words (SVG <title>/<desc>, notebook captions)

BOOK_CREDIT = ("Execução publicada do livro: Raschka, rasbt/LLMs-from-scratch, "
               "ch07/01_main-chapter-code/ch07.ipynb (commit 28c65cd), Apache-2.0.")


@dataclass(frozen=True)
class Figure:
    draw: Callable[[], "plt.Figure"]
    title: str
    alt: str                       # what a reader who cannot see it needs to know
    credit: Optional[str] = None   # source of redrawn work or published numbers

    @property
    def description(self) -> str:
        return f"{self.alt} {self.credit}" if self.credit else self.alt


FIGURES = {
    "visao_geral_afi": Figure(
        fig_visao_geral, "Ajuste fino de instruções: as três etapas do capítulo",
        "Três colunas. Etapa 1, preparar o conjunto de dados: baixar e formatar (notebook 01), "
        "montar os lotes (02), criar os carregadores (03). Etapa 2, ajuste fino: carregar o "
        "GPT-2 (04), ajuste fino de instruções e inspeção da perda (05). Etapa 3, avaliar: "
        "extrair as respostas do teste e lê-las (06), pontuar com um LLM como juiz (07)."),
    "estilos_de_prompt": Figure(
        fig_estilos_de_prompt, "A mesma amostra em dois estilos de prompt",
        "A amostra 'Identify the correct spelling of the following word.', entrada 'Ocassion', "
        "resposta 'The correct spelling is 'Occasion.'' escrita no estilo Alpaca (preâmbulo e "
        "cabeçalhos ### Instruction, ### Input, ### Response) e no estilo Phi-3 (tokens "
        "especiais <|user|> e <|assistant|>). Cores: instrução azul, entrada verde, resposta "
        "laranja."),
    "coleta_de_dados": Figure(
        fig_coleta, "De onde vêm os dados de ajuste fino de instruções",
        "Três fontes de pares instrução–resposta: criados por humanos (Dolly, 15 mil amostras; "
        "LIMA, 1.000 exemplos), com mais qualidade e mais custo; convertidos de conjuntos de "
        "PLN anotados por templates (FLAN, P3), com muitas tarefas e textos pouco naturais; e "
        "sintéticos, gerados por um LLM (Self-Instruct e Alpaca, Bonito, Magpie), baratos em "
        "escala mas herdando vieses."),
    "etapas_collate": Figure(
        fig_etapas_collate, "Montagem dos lotes em cinco passos",
        "Passo 2.1 formata a amostra com o estilo Alpaca; 2.2 tokeniza o texto em IDs; 2.3 "
        "preenche o lote [0, 1, 2], [3], [4, 5] com 50256 até 3 + 1 = 4 posições; 2.4 cria as "
        "entradas (sem a última posição) e os alvos (sem a primeira); 2.5 troca nos alvos o "
        "preenchimento por -100, mantendo o primeiro 50256 de cada linha."),
    "padding": Figure(
        fig_padding, "Preenchimento até a maior sequência de cada lote",
        "Dois lotes de três amostras. No lote 1 a maior tem 5 tokens e as outras recebem 50256 "
        "até 5; no lote 2 a maior tem 7. Cada lote tem o seu comprimento, o que gasta menos "
        "preenchimento do que igualar tudo ao maior exemplo do conjunto."),
    "entrada_alvo_deslocamento": Figure(
        fig_entrada_alvo, "Entrada e alvo: o mesmo texto deslocado uma posição",
        "Para a sequência preenchida [0, 1, 2, 3, 4, 50256], a entrada são as cinco primeiras "
        "posições e o alvo as cinco últimas; setas mostram que o alvo da posição i é o token "
        "i + 1. O mesmo para [5, 6] preenchida com 50256."),
    "mascara_menos_100": Figure(
        fig_mascara, "Alvos: o preenchimento vira -100, menos o primeiro 50256",
        "Três linhas de alvos antes e depois: cada 50256 de preenchimento vira -100, exceto o "
        "primeiro de cada linha, que fica para o modelo aprender a terminar a resposta. -100 é "
        "o ignore_index padrão da entropia cruzada do PyTorch."),
    "mascaramento_instrucao": Figure(
        fig_mascaramento_instrucao, "Mascaramento de instrução × modelagem de instrução",
        "Uma sequência de treino com instrução, entrada, resposta e 50256. No mascaramento de "
        "instrução, os alvos da instrução e da entrada viram -100 e a perda conta só a resposta; "
        "na modelagem de instrução (padrão do curso) a perda conta todos os tokens. Shi et al. "
        "(2024), arXiv 2405.14394, acham que não mascarar muitas vezes ajuda."),
    "empacotamento": Figure(
        fig_empacotamento, "Empacotamento: várias amostras em uma sequência",
        "Três amostras A (3 tokens), B (2) e C (4): com preenchimento ocupam 12 posições; "
        "empacotadas, 9 posições em uma linha. Duas máscaras de atenção 9 × 9: a causal ingênua "
        "deixa B e C verem tokens de outras amostras e numera as posições de 0 a 8; a versão com "
        "fronteiras é bloco-diagonal e recomeça as posições em 0 a cada amostra."),
    "lora": Figure(
        fig_lora, "LoRA: pesos congelados + atualização de baixo posto",
        "À esquerda, o ajuste fino completo atualiza toda a matriz W de 1024 × 1024 (1.048.576 "
        "pesos). À direita, o LoRA congela W e soma (α/r)·xAB, com A de d × r e B de r × d; com "
        "r = 16 e α = 16, como no notebook 09, são 2·d·r = 32.768 pesos treináveis (3,1% de W). "
        "B começa em zero, então no início a saída é a do modelo pré-treinado."),
    "fluxo_juiz": Figure(
        fig_fluxo_juiz, "LLM como juiz: pontuar cada resposta de 0 a 100",
        "A instrução com a entrada, a resposta de referência e a resposta do modelo entram num "
        "prompt em inglês que pede uma nota inteira de 0 a 100; o juiz (Llama 3 8B Instruct via "
        "Ollama) devolve a nota, e o laço se repete para as 110 amostras de teste. A média do "
        "GPT-2 355M ajustado fica perto de 50 (49,45 no livro). O livro cita ainda, sem dizer com que "
        "juiz nem sobre quais respostas, 58,51 para o Llama 3 8B base e 82,65 para o Instruct."),
    "alpaca_self_instruct": Figure(
        fig_alpaca_self_instruct, "Alpaca: dados gerados com Self-Instruct",
        "175 tarefas-semente escritas por pessoas entram, como exemplos, em prompts ao "
        "text-davinci-003, que gera novas instruções e respostas; o resultado são 52 mil pares "
        "no formato Alpaca, usados no ajuste fino supervisionado do LLaMA 7B, que vira o "
        "Alpaca 7B.",
        "Redesenhado a partir de Taori et al. (2023), Stanford Alpaca "
        "(crfm.stanford.edu/2023/03/13/alpaca.html), e Wang et al. (2023), Self-Instruct, "
        "arXiv 2212.10560."),
    "bonito": Figure(
        fig_bonito, "Bonito: texto sem anotação → tarefas de AFI",
        "Um texto sem anotação do domínio e um tipo de tarefa (por exemplo, pergunta e resposta "
        "extrativa) entram no Bonito, um ajuste fino do Mistral-7B, que devolve pares "
        "instrução–resposta daquela tarefa sobre aquele texto, para ajustar um modelo ao domínio "
        "sem anotação manual.",
        "Redesenhado a partir de Nayak et al. (2024), Learning to Generate Instruction Tuning "
        "Datasets for Zero-Shot Task Adaptation, arXiv 2402.18334."),
    "magpie": Figure(
        fig_magpie, "Magpie: o LLM alinhado escreve a instrução e a resposta",
        "Passo 1: só o template de pré-consulta do formato de chat (no Llama 3, o cabeçalho do "
        "usuário) entra no LLM alinhado, que o completa com uma instrução plausível. Passo 2: "
        "pré-consulta, instrução e template de pós-consulta (o cabeçalho do assistente) entram "
        "no mesmo LLM, que escreve a resposta. Nenhuma semente nem prompt escrito à mão.",
        "Redesenhado a partir de Xu et al. (2024), Magpie: Alignment Data Synthesis from Scratch "
        "by Prompting Aligned LLMs with Nothing, arXiv 2406.08464."),
    "sintetico_local": Figure(
        fig_sintetico_local, "Self-Instruct × Magpie com um modelo pequeno local",
        "Lado a lado, como o curso roda os dois métodos com o SmolLM2-135M-Instruct servido "
        "pelo servidor do llama-cpp-python: no Self-Instruct, um prompt com algumas tarefas do "
        "conjunto de dados gera uma nova instrução e outra chamada escreve a resposta; no Magpie, "
        "só o template de usuário do ChatML (<|im_start|>user), com um turno de sistema opcional "
        "antes, gera a instrução, e a resposta vem pela rota de chat (ou pelo template completo, "
        "raw). Nos dois, filtros: vazio, vazamento de template, recusa, tamanho, duplicatas e "
        "ROUGE-L ≥ 0,7 contra o que já existe."),
    "lora_resultados": Figure(
        fig_lora_resultados, "LoRA no GPT-3 175B: o mesmo desempenho com muito menos treináveis",
        "Barras do GPT-3 175B com ajuste fino completo (175.255,8 milhões de parâmetros "
        "treináveis), LoRA com 4,7 milhões e LoRA com 37,7 milhões. WikiSQL: 73,8, 73,4 e 74,0; "
        "MNLI-m: 89,5, 91,7 e 91,6; SAMSum ROUGE-1: 52,0, 53,8 e 53,4.",
        LORA_CREDIT),
    "treino_livro": Figure(
        fig_treino_livro, "Execução publicada do livro (GPT-2 medium, 2 épocas)",
        "Perda de treino e de validação a cada 5 passos, do passo 0 ao 230. As duas caem de "
        "cerca de 2,6 para menos de 0,8 nos primeiros 50 passos; no fim, a de treino chega a "
        "0,30 e a de validação fica perto de 0,66, estável desde a primeira época.",
        BOOK_CREDIT),
    "rlhf_dpo": Figure(
        fig_rlhf_dpo, "Depois do AFI: alinhar por preferência com RLHF ou DPO",
        "RLHF: pares de preferência treinam um modelo de recompensa; o PPO faz o modelo gerar "
        "respostas, pontuá-las com a recompensa e se ajustar, com uma penalidade KL para não se "
        "afastar do modelo de referência (SFT). DPO: o modelo SFT e os pares de preferência "
        "entram numa só perda de classificação sobre log p(escolhida) − log p(rejeitada) em "
        "relação à referência congelada, sem modelo de recompensa e sem laço de amostragem."),
    "ddp_fsdp": Figure(
        fig_ddp_fsdp, "Treino em várias GPUs: DDP × FSDP",
        "DDP: cada GPU guarda o modelo inteiro, os gradientes e o estado do otimizador, e "
        "processa a sua fatia do lote; depois do backward, um all-reduce soma os gradientes. "
        "FSDP: cada GPU guarda só metade (1/N) dos parâmetros, gradientes e estado do "
        "otimizador; um all-gather junta os parâmetros de cada camada antes de usá-la e um "
        "reduce-scatter divide os gradientes depois."),
}


def catalog() -> dict:
    """What ``assets/figuras.json`` holds: title, alt text and credit of each figure."""
    return {name: {"arquivo": f"{name}.svg", "titulo": f.title, "alt": f.alt,
                   "credito": f.credit} for name, f in FIGURES.items()}


def svg_text(fig, figure: Figure) -> str:
    """The SVG of ``fig`` with ``<title>`` and ``<desc>`` (accessible name and description)."""
    buffer = StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    start = svg.index("<svg ")
    end = svg.index(">", start) + 1
    labels = (f"\n <title>{escape(figure.title)}</title>"
              f"\n <desc>{escape(figure.description)}</desc>")
    return svg[:start] + svg[start:end - 1] + ' role="img"' + svg[end - 1:end] + labels + svg[end:]


def save(name: str, out: Path, png_dir: Optional[Path] = None) -> Path:
    from llmdefinitions.io import write_text_atomic

    figure = FIGURES[name]
    fig = figure.draw()
    target = write_text_atomic(Path(out) / f"{name}.svg", svg_text(fig, figure))
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(png_dir / f"{name}.png", format="png", dpi=90)
    plt.close(fig)
    return target


def main(argv=None) -> int:
    from llmdefinitions.io import write_json_atomic

    parser = argparse.ArgumentParser(description="Desenha as figuras do curso em assets/.")
    parser.add_argument("names", nargs="*", help=f"figuras (padrão: todas): {', '.join(FIGURES)}")
    parser.add_argument("--out", type=Path, default=ASSETS, help="pasta de saída (padrão: assets/)")
    parser.add_argument("--png", type=Path, default=None, help="pasta para prévias em PNG")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in FIGURES]
    if unknown:
        parser.error(f"figura desconhecida: {', '.join(unknown)}. Opções: {', '.join(FIGURES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or FIGURES:
        target = save(name, args.out, args.png)
        print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}"
              f"  {target.stat().st_size / 1024:.0f} KB")
    write_json_atomic(args.out / CATALOG.name, catalog(), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
