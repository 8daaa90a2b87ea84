"""Draw the course's diagrams into ``assets/`` as SVG, with matplotlib only.

The seed lecture hot-links third-party images; we redraw the diagrams we teach with
instead. Every figure is drawn on a canvas measured in tenths of an inch (a 10 x 5 in
figure is 100 x 50 units), so sizes in the code read directly as layout.

Output is deterministic: ``svg.hashsalt`` fixes the ids matplotlib writes and the
``Date`` metadata is left out, so running this script twice gives identical files.
Text is stored as glyph outlines (``svg.fonttype = "path"``), so the figures look the
same in every browser, with or without the DejaVu fonts installed.

Usage::

    python tools/make_figures.py                  # every figure into assets/
    python tools/make_figures.py lora padding     # only these (names without .svg)
    python tools/make_figures.py --png /tmp/prev  # also write PNG previews there
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"

plt.rcParams.update({
    "svg.hashsalt": "llmdefinitions",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 11,
    "hatch.linewidth": 0.8,
})

# One palette for every figure: (fill, edge/text) per role.
PAL = {
    "instrucao": ("#DCE9F7", "#2E5A88"),      # instruction / generic tokens: blue
    "entrada": ("#DDF0E2", "#2F7D4F"),        # input / context: green
    "resposta": ("#FCE5D2", "#B85A1A"),       # response: orange
    "preench": ("#ECECEC", "#7A7A7A"),        # padding: gray
    "ignorado": ("#F7D6D3", "#A93226"),       # -100 / ignored: red
    "fim": ("#FFF1B8", "#9A7000"),            # end-of-text kept: yellow
    "modelo": ("#E8E0F4", "#5E4391"),         # models, LLMs: purple
    "neutro": ("#F6F6F6", "#444444"),         # plain boxes
}
INK = "#222222"
SOFT = "#5A5A5A"
MONO = "DejaVu Sans Mono"
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


def box(ax, x, y, w, h, text="", role="neutro", fontsize=11, weight="normal",
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
        ax.text(tx, ty, text, ha=ha, va=va, fontsize=fontsize, weight=weight,
                family=family, color=text_color or (edge or ec), zorder=zorder + 1,
                linespacing=1.35)
    return patch


def arrow(ax, start, end, color=SOFT, lw=1.6, style="-|>", mutation=14, rad=0.0,
          linestyle="-", zorder=1, shrink=0.0):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=mutation,
                                 color=color, lw=lw, linestyle=linestyle, zorder=zorder,
                                 connectionstyle=f"arc3,rad={rad}",
                                 shrinkA=shrink, shrinkB=shrink))


def text(ax, x, y, s, size=11, color=INK, ha="left", va="center", weight="normal",
         family=None, style="normal", zorder=5, **kwargs):
    return ax.text(x, y, s, fontsize=size, color=color, ha=ha, va=va, weight=weight,
                   family=family, style=style, zorder=zorder, linespacing=1.35, **kwargs)


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


def tiles(ax, x, y, values, w=4.6, h=2.6, gap=0.35, fontsize=9.5, roles=None):
    """A row of token tiles starting at (x, y); ``roles`` overrides the colors."""
    for i, value in enumerate(values):
        role = roles[i] if roles else token_role(value)
        if value is None:
            continue
        box(ax, x + i * (w + gap), y, w, h, str(value), role=role, fontsize=fontsize,
            family=MONO, radius=0.35, lw=1.1, weight="bold" if role == "fim" else "normal")
    return x + len(values) * (w + gap) - gap


def legend(ax, x, y, items, size=9.5, step=None):
    """Colored squares with labels, in a row from (x, y)."""
    for role, label in items:
        box(ax, x, y - 0.9, 1.8, 1.8, role=role, radius=0.3, lw=1.0)
        t = text(ax, x + 2.5, y, label, size=size, color=INK)
        x += step if step else 2.5 + 0.62 * size / 7.2 * len(label) + 3.5
    return t


def title(ax, s, y, x=None, size=15):
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
    fig, ax = canvas(10, 5)
    title(ax, "A mesma amostra em dois estilos de prompt", 47.5)
    colors = {"fixo": INK, "instrucao": PAL["instrucao"][1], "entrada": PAL["entrada"][1],
              "resposta": PAL["resposta"][1]}
    panels = [("Alpaca", ALPACA_SEGMENTS, 2, 50, 56),
              ("Phi-3", PHI3_SEGMENTS, 54, 44, 56)]
    size = 9.2
    char_w = 0.602 * size / 7.2
    for name, segments, x0, width, wrap in panels:
        top, bottom = 43.5, 8.5
        box(ax, x0, bottom, width, top - bottom, role="neutro", fill="#FBFBFB", radius=1.2)
        box(ax, x0, top - 4, width, 4, f"Estilo {name}", role="modelo", fontsize=12.5,
            weight="bold", radius=1.2)
        y = top - 7
        for line in _segment_lines(segments, wrap):
            x = x0 + 1.8
            for piece, role in line:
                weight = "bold" if role == "fixo" and piece.startswith(("#", "<|")) else "normal"
                text(ax, x, y, piece, size=size, family=MONO, color=colors[role], weight=weight)
                x += char_w * len(piece)
            y -= 2.45
    text(ax, 80, 12.5, "tokens especiais em vez\nde cabeçalhos ###", size=9.5, color=SOFT,
         ha="center", style="italic")
    legend(ax, 4, 4.5, [("neutro", "texto fixo do estilo"), ("instrucao", "instrução"),
                        ("entrada", "entrada (contexto)"), ("resposta", "resposta de referência")],
           size=10)
    return fig


def fig_etapas_collate():
    fig, ax = canvas(10, 6.8)
    title(ax, "Montagem dos lotes em cinco passos", 65.5)
    rows = [  # (step, label, top y, height)
        ("2.1", "Formatar a amostra com\no estilo de prompt", 62.0, 9.5),
        ("2.2", "Tokenizar: texto → IDs\n(57 nesta amostra)", 51.0, 5.5),
        ("2.3", "Preencher com 50256\naté o maior do lote (+1)", 43.5, 11.5),
        ("2.4", "Criar os alvos: a\nentrada deslocada\numa posição", 30.5, 11.5),
        ("2.5", "Trocar o preenchimento\npor -100, menos o 1º\nfim de texto", 17.5, 11.5),
    ]
    for step, label, top, height in rows:
        box(ax, 1, top - height, 31, height, role="neutro", fill="#FAFAFA", lw=1.0)
        box(ax, 2, top - height / 2 - 1.8, 6.4, 3.6, step, role="modelo", fontsize=11.5,
            weight="bold", radius=1.0)
        text(ax, 9.6, top - height / 2, label, size=10.3)
    for (_, _, top, height), (_, _, next_top, _) in zip(rows, rows[1:]):
        arrow(ax, (5.2, top - height / 2 - 1.9), (5.2, next_top - 3.0), color=PAL["modelo"][1],
              lw=1.2, mutation=10)

    # 2.1: formatted text
    x0 = 35
    fmt = [("Below is an instruction that describes a task. Write a …", INK),
           ("### Instruction:  ", INK), ("Identify the correct spelling of …", PAL["instrucao"][1]),
           ("### Input:  ", INK), ("Ocassion", PAL["entrada"][1]),
           ("### Response:  ", INK), ("The correct spelling is 'Occasion.'", PAL["resposta"][1])]
    box(ax, x0, 52.5, 63, 9.5, role="neutro", fill="#FBFBFB", lw=1.0)
    size = 8.8
    cw = 0.602 * size / 7.2
    y = 60.2
    text(ax, x0 + 1.5, y, fmt[0][0], size=size, family=MONO, color=INK)
    for head, (body, color) in zip(fmt[1::2], fmt[2::2]):
        y -= 2.2
        text(ax, x0 + 1.5, y, head[0], size=size, family=MONO, color=INK, weight="bold")
        text(ax, x0 + 1.5 + cw * len(head[0]), y, body, size=size, family=MONO, color=color)

    # 2.2: token ids of that text (GPT-2 BPE)
    ids = [21106, 318, 281, 12064, 326, 8477, 257, 4876, 13, "…", 4247, 2637]
    tiles(ax, x0, 46.9, ids, w=4.95, h=2.7, gap=0.33, fontsize=9)

    batch = [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]
    padded = [s + [PAD_ID] * (6 - len(s)) for s in batch]
    inputs = [p[:-1] for p in padded]
    targets = [p[1:] for p in padded]
    masked = []
    for t in targets:
        seen, row = False, []
        for v in t:
            if v == PAD_ID and seen:
                row.append(-100)
            else:
                seen = seen or v == PAD_ID
                row.append(v)
        masked.append(row)

    w, h, gap, fs = 4.4, 2.6, 0.3, 8.6
    left, right = 35.5, 69.8

    def block(x, top, rows_, caption, roles_fn=None):
        text(ax, x, top - 1.4, caption, size=9.2, color=SOFT, style="italic")
        for i, r in enumerate(rows_):
            roles = roles_fn(r) if roles_fn else None
            tiles(ax, x, top - 5.0 - i * 3.1, r, w=w, h=h, gap=gap, fontsize=fs, roles=roles)

    block(left, 43.5, batch, "amostras tokenizadas")
    block(right, 43.5, padded, "preenchidas até 5 + 1 = 6")
    block(left, 30.5, inputs, "entradas = preenchidas[:-1]")
    block(right, 30.5, targets, "alvos = preenchidas[1:]")
    block(left, 17.5, targets, "alvos do passo 2.4", target_roles)
    block(right, 17.5, masked, "alvos finais", target_roles)
    for top in (43.5, 30.5, 17.5):
        arrow(ax, (left + 6 * (w + gap) + 0.3, top - 6.8), (right - 0.8, top - 6.8), color=SOFT)
    legend(ax, 6, 2.6, [("instrucao", "token"), ("preench", "preenchimento 50256"),
                        ("fim", "fim de texto mantido nos alvos"),
                        ("ignorado", "-100 (ignorado na perda)")], size=9.4)
    return fig


def fig_padding():
    fig, ax = canvas(10, 5)
    title(ax, "Preenchimento até a maior sequência de cada lote", 47.5)
    batches = [("Lote 1", [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]], 1.5),
               ("Lote 2", [[10, 11, 12], [13, 14, 15, 16, 17, 18, 19], [20, 21, 22, 23]], 46.5)]
    w, gap = 5.2, 0.35
    for name, samples, x0, in batches:
        longest = max(map(len, samples))
        width = longest * (w + gap) - gap
        bx = x0 + 10
        box(ax, x0, 9, width + 13, 33, role="neutro", fill="#FAFAFA", lw=1.0)
        text(ax, x0 + 1.5, 39, name, size=13, weight="bold")
        for i, s in enumerate(samples):
            y = 31 - i * 6.5
            text(ax, x0 + 1.5, y + 1.6, f"amostra {i + 1}", size=9.5, color=SOFT)
            padded = s + [PAD_ID] * (longest - len(s))
            tiles(ax, bx, y, padded, w=w, h=3.2, gap=gap, fontsize=9.5)
        # bracket with the batch length
        yb = 13.5
        ax.plot([bx, bx, bx + width, bx + width], [yb + 1, yb, yb, yb + 1], color=SOFT, lw=1.2)
        text(ax, bx + width / 2, yb - 2.0, f"comprimento do lote = {longest}", size=10,
             color=SOFT, ha="center")
    text(ax, 50, 5.0, "Cada lote tem o seu comprimento (no curso, ex.: 8 × 61 e 8 × 76): "
         "menos preenchimento do que igualar tudo ao maior exemplo.",
         size=10, ha="center", color=INK)
    legend(ax, 26, 1.5, [("instrucao", "ID de token da amostra"),
                         ("preench", "preenchimento: 50256 = <|endoftext|>")], size=9.5)
    return fig


def fig_entrada_alvo():
    fig, ax = canvas(10, 5)
    title(ax, "Entrada e alvo: o mesmo texto deslocado uma posição", 47.5)
    rows_y = {"entrada": 33.0, "seq": 21.0, "alvo": 9.0}
    labels = {"seq": "sequência\npreenchida", "entrada": "entrada\n= seq[:-1]",
              "alvo": "alvo\n= seq[1:]"}
    for key, y in rows_y.items():
        text(ax, 1.0, y + 1.5, labels[key], size=10.5, weight="bold" if key != "seq" else "normal")
    w, gap = 5.2, 0.6
    samples = [("amostra 1: [0, 1, 2, 3, 4]", [0, 1, 2, 3, 4, PAD_ID], 15.5),
               ("amostra 2: [5, 6]", [5, 6, PAD_ID, PAD_ID, PAD_ID, PAD_ID], 58.5)]
    for caption, seq, x0 in samples:
        text(ax, x0, 41.0, caption, size=10.5, color=SOFT)
        tiles(ax, x0, rows_y["seq"], seq, w=w, h=3.0, gap=gap, fontsize=9.5)
        tiles(ax, x0, rows_y["entrada"], seq[:-1], w=w, h=3.0, gap=gap, fontsize=9.5)
        tiles(ax, x0, rows_y["alvo"], seq[1:], w=w, h=3.0, gap=gap, fontsize=9.5,
              roles=["resposta" if v != PAD_ID else "preench" for v in seq[1:]])
        for i in range(len(seq)):
            cx = x0 + i * (w + gap) + w / 2
            if i < len(seq) - 1:  # straight up to the input
                arrow(ax, (cx, rows_y["seq"] + 3.2), (cx, rows_y["entrada"] - 0.2),
                      color=PAL["instrucao"][1], lw=1.0, mutation=9)
            if i > 0:  # diagonal to the target one column to the left
                tx = x0 + (i - 1) * (w + gap) + w / 2
                arrow(ax, (cx, rows_y["seq"] - 0.2), (tx, rows_y["alvo"] + 3.2),
                      color=PAL["resposta"][1], lw=0.9, mutation=9, linestyle=(0, (3, 2)))
        # last column: the token the input drops
        lx = x0 + 5 * (w + gap) + w / 2
        text(ax, lx, rows_y["entrada"] + 1.5, "✗", size=13, color=PAL["ignorado"][1], ha="center")
        text(ax, lx, rows_y["entrada"] - 1.6, "sai da\nentrada", size=8, color=SOFT, ha="center",
             va="top")
    text(ax, 50, 2.5, "Na posição i, o alvo é o token i + 1: o modelo aprende a prever o "
         "próximo token, como no pré-treinamento.", size=10.5, ha="center")
    return fig


def fig_mascara():
    fig, ax = canvas(10, 5)
    title(ax, "Alvos: trocar o preenchimento por -100, menos o primeiro 50256", 47.5)
    before = [[1, 2, 3, 4, PAD_ID], [6, PAD_ID, PAD_ID, PAD_ID, PAD_ID], [8, 9, PAD_ID, PAD_ID, PAD_ID]]
    after = [[1, 2, 3, 4, PAD_ID], [6, PAD_ID, -100, -100, -100], [8, 9, PAD_ID, -100, -100]]

    w, gap = 5.6, 0.5
    xl, xr = 12.0, 60.0
    text(ax, xl, 41.5, "alvos do passo 2.4", size=11, color=SOFT, style="italic")
    text(ax, xr, 41.5, "alvos do passo 2.5 (finais)", size=11, color=SOFT, style="italic")
    for i, (b, a) in enumerate(zip(before, after)):
        y = 34 - i * 6
        text(ax, 1.5, y + 1.5, f"amostra {i + 1}", size=10, color=SOFT)
        tiles(ax, xl, y, b, w=w, h=3.2, gap=gap, roles=[token_role(v) for v in b])
        tiles(ax, xr, y, a, w=w, h=3.2, gap=gap, roles=target_roles(a))
        arrow(ax, (xl + 5 * (w + gap) + 1.0, y + 1.6), (xr - 1.5, y + 1.6), color=SOFT)
    # callouts
    kx = xr + 2 * (w + gap) + w / 2
    box(ax, 41.5, 7.5, 28, 7.6, "50256 mantido uma vez: o modelo\naprende a gerar o fim de "
        "texto\ne a terminar a resposta", role="fim", fontsize=9.6, radius=0.8)
    arrow(ax, (55.5, 15.1), (kx, 21.8), color=PAL["fim"][1], lw=1.2, rad=0.1)
    ix = xr + 3 * (w + gap) + w / 2
    box(ax, 71, 7.5, 27, 7.6, "-100 = ignore_index: a\nentropia cruzada ignora estas\n"
        "posições (preenchimento)", role="ignorado", fontsize=9.6, radius=0.8)
    arrow(ax, (86, 15.1), (ix + 3, 21.8), color=PAL["ignorado"][1], lw=1.2, rad=-0.1)
    text(ax, 2, 3.0, "torch.nn.functional.cross_entropy(logits, alvos)   "
         "# ignore_index=-100 é o padrão do PyTorch", size=9.6, family=MONO, color=INK)
    legend(ax, 2, 13.0, [("instrucao", "token"), ("preench", "preenchimento 50256")], size=9.4,
           step=10.5)
    legend(ax, 2, 8.8, [("fim", "fim de texto"), ("ignorado", "-100")], size=9.4, step=16.0)
    return fig


def fig_mascaramento_instrucao():
    fig, ax = canvas(10, 5)
    title(ax, "Mascaramento de instrução × modelagem de instrução", 47.5)
    # proportional segments of one training sequence
    segs = [("Below is an instruction … ### Instruction: …", "instrucao", 36),
            ("### Input: …", "entrada", 11),
            ("### Response: …", "resposta", 25),
            ("50256", "fim", 6)]
    x0 = 21
    text(ax, 1.5, 39.5, "sequência de\ntreino", size=10.5)
    x = x0
    for label, role, width in segs:
        box(ax, x, 37.5, width - 0.5, 4.2, label, role=role, fontsize=9.2, radius=0.5,
            family=MONO if role == "fim" else None)
        x += width
    rows = [("Mascaramento de\ninstrução", 26.0, True,
             "perda só na resposta: alvos do prompt viram -100"),
            ("Modelagem de\ninstrução (sem\nmáscara, o padrão\ndo curso)", 14.0, False,
             "perda em todos os tokens (instrução, entrada e resposta)")]
    for label, y, masked, note in rows:
        text(ax, 1.5, y + 2.1, label, size=10.5, weight="bold")
        x = x0
        for seg_label, role, width in segs:
            if masked and role in ("instrucao", "entrada"):
                box(ax, x, y, width - 0.5, 4.2, "-100 -100 -100 …" if role == "instrucao" else "-100 …",
                    role="ignorado", fontsize=9.2, radius=0.5, hatch="///", family=MONO,
                    fill="#FBECEA")
            else:
                label = "✓ entra na perda" if width > 20 else "✓"
                box(ax, x, y, width - 0.5, 4.2, label, role=role, fontsize=9.2, radius=0.5)
            x += width
        text(ax, x0, y - 1.9, note, size=9.4, color=SOFT, style="italic")
    box(ax, 2, 1.5, 96, 8.2, "", role="modelo", fill="#F5F1FB", radius=1.0)
    text(ax, 4, 7.5, "Shi et al. (2024), arXiv 2405.14394 — Instruction Tuning With Loss Over "
         "Instructions:", size=10, weight="bold", color=PAL["modelo"][1])
    text(ax, 4, 4.0, "não mascarar a instrução muitas vezes dá respostas melhores, sobretudo "
         "com instruções longas e\nrespostas curtas, ou com poucos exemplos de treino; "
         "também reduz o sobreajuste.", size=10, color=INK)
    return fig


def fig_empacotamento():
    fig, ax = canvas(10, 5.6)
    title(ax, "Empacotamento: várias amostras em uma sequência", 53.0)
    samples = [("A", 3), ("B", 2), ("C", 4)]
    roles = {"A": "instrucao", "B": "resposta", "C": "entrada"}
    n = sum(k for _, k in samples)
    w, gap = 3.4, 0.35

    # (a) padded batch
    text(ax, 1.5, 47.5, "(a) com preenchimento", size=11, weight="bold")
    for i, (name, k) in enumerate(samples):
        y = 42 - i * 4.2
        vals = [f"{name}{j}" for j in range(k)] + [""] * (4 - k)
        rs = [roles[name]] * k + ["preench"] * (4 - k)
        for j, (v, r) in enumerate(zip(vals, rs)):
            box(ax, 3 + j * (w + gap), y, w, 3.2, v or "pad", role=r, fontsize=8.6, radius=0.3,
                lw=1.0)
    text(ax, 3, 31.0, "12 posições, 3 de preenchimento", size=9.2, color=SOFT)

    # packed row
    text(ax, 25, 47.5, "(b) empacotada: uma linha só, sem preenchimento", size=11, weight="bold")
    arrow(ax, (18.5, 38), (22, 38), color=SOFT)
    x = 23
    seq = []
    for name, k in samples:
        for j in range(k):
            seq.append((name, j))
            box(ax, x, 36.5, w, 3.2, f"{name}{j}", role=roles[name], fontsize=8.6, radius=0.3,
                lw=1.0)
            x += w + gap
    text(ax, x + 1, 38.1, "← cada amostra termina\n    com <|endoftext|>", size=9.2, color=SOFT)

    def mask_panel(x0, y0, caption, aware):
        cell = 1.9
        text(ax, x0 - 4, y0 + n * cell + 2.6, caption, size=10, weight="bold")
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
            text(ax, x0 - 0.6, y0 + (n - 1 - i) * cell + cell / 2, f"{name}{j}", size=7.2,
                 ha="right", color=SOFT)
            text(ax, x0 + i * cell + cell / 2, y0 + n * cell + 0.8, f"{name}{j}", size=7.2,
                 ha="center", color=SOFT)
        pos = list(range(n)) if not aware else [j for _, j in seq]
        text(ax, x0 - 0.6, y0 - 1.6, "posição", size=8.2, ha="right", color=INK)
        for i, p in enumerate(pos):
            text(ax, x0 + i * cell + cell / 2, y0 - 1.6, str(p), size=8.6, ha="center",
                 family=MONO, weight="bold", color=INK if not aware or p else PAL["entrada"][1])

    mask_panel(6, 6.0, "(c) ingênuo: máscara causal", aware=False)
    mask_panel(38, 6.0, "(d) com fronteiras: bloco-diagonal", aware=True)
    # what goes wrong
    box(ax, 67, 3.0, 31.5, 28.5, "", role="ignorado", fill="#FDF3F2", radius=1.0)
    text(ax, 68.3, 29.0, "O que dá errado no ingênuo", size=10.5, weight="bold",
         color=PAL["ignorado"][1])
    text(ax, 68.3, 16.5,
         "• B e C “enxergam” tokens de outras\n   amostras (células vermelhas):\n"
         "   contexto falso contamina a previsão\n"
         "• posições seguem 0…8: a amostra C\n   começa na posição 5, não em 0\n"
         "• a perda no 1º token de cada amostra\n   é prevista a partir da anterior\n\n"
         "Correção (d): máscara por amostra e\nIDs de posição que recomeçam em 0.",
         size=9.0, color=INK)
    return fig


def fig_lora():
    fig, ax = canvas(10, 5)
    title(ax, "LoRA: pesos congelados + atualização de baixo posto", 47.5)
    # left: full finetuning
    text(ax, 3, 41.5, "Ajuste fino completo", size=12, weight="bold")
    box(ax, 9, 4, 16, 4, "x  (d = 1024)", role="neutro", fontsize=10)
    box(ax, 4, 15, 26, 17, "W + ΔW\n(d × d)\ntodos os pesos\natualizados", role="resposta",
        fontsize=10.5)
    box(ax, 9, 36, 16, 4, "h", role="neutro", fontsize=11)
    arrow(ax, (17, 8.2), (17, 14.8))
    arrow(ax, (17, 32.2), (17, 35.8))
    text(ax, 18.2, 11.5, "1.048.576\ntreináveis", size=9, color=SOFT, ha="left")
    ax.plot([36, 36], [3, 43], color="#D0D0D0", lw=1.2)

    # right: LoRA
    text(ax, 40, 41.5, "LoRA", size=12, weight="bold")
    box(ax, 52, 4, 16, 4, "x  (d = 1024)", role="neutro", fontsize=10)
    box(ax, 40, 15, 20, 14, "W  (d × d)\ncongelado ❄\n1.048.576 pesos", role="instrucao",
        fontsize=10.5)
    # A: d -> r (trapezoid), B: r -> d
    from matplotlib.patches import Polygon
    ax.add_patch(Polygon([(64, 12.5), (80, 12.5), (75, 19.5), (69, 19.5)], closed=True,
                         fc=PAL["resposta"][0], ec=PAL["resposta"][1], lw=1.4))
    text(ax, 72, 15.5, "A  (d × r)", size=10, ha="center", color=PAL["resposta"][1])
    ax.add_patch(Polygon([(69, 21.0), (75, 21.0), (80, 28.0), (64, 28.0)], closed=True,
                         fc=PAL["resposta"][0], ec=PAL["resposta"][1], lw=1.4))
    text(ax, 72, 25.0, "B  (r × d)", size=10, ha="center", color=PAL["resposta"][1])
    text(ax, 77.0, 20.25, "r", size=11, weight="bold", color=PAL["resposta"][1], ha="left")
    box(ax, 56, 33, 8, 4, "+", role="neutro", fontsize=14, weight="bold", radius=2.0)
    box(ax, 52, 40, 16, 4, "h", role="neutro", fontsize=11)
    arrow(ax, (58, 8.2), (52, 14.8))
    arrow(ax, (62, 8.2), (70, 12.3))
    arrow(ax, (50, 29.2), (57, 32.8))
    arrow(ax, (72, 28.2), (63, 32.8))
    text(ax, 71.5, 31.5, "× α/r", size=10.5, color=PAL["resposta"][1], weight="bold")
    arrow(ax, (60, 37.2), (60, 39.8))
    # notes
    box(ax, 82, 4, 17, 38, "", role="neutro", fill="#FAFAFA", lw=1.0)
    text(ax, 83.2, 23, "h = xW + (α/r)·xAB\n\nB começa em zero:\nno início, a saída\n"
         "é a do modelo\npré-treinado\n\nr = posto (ex.: 8)\nα = escala\n\n"
         "treináveis:\n2·d·r = 16.384\n(1,6% de W)", size=9.2, color=INK)
    text(ax, 59, 1.3, "O código do livro multiplica por α; o pacote usa α/r por padrão "
         "(como o artigo do LoRA).", size=8.6, color=SOFT, ha="center", style="italic")
    return fig


def fig_fluxo_juiz():
    fig, ax = canvas(10, 5)
    title(ax, "LLM como juiz: pontuar cada resposta de 0 a 100", 47.5)
    inputs = [("Instrução + entrada\nformat_input(entry)", "instrucao", 33.0),
              ("Resposta de referência\nentry['output']", "entrada", 22.0),
              ("Resposta do modelo\nentry['model_response']", "resposta", 11.0)]
    for label, role, y in inputs:
        box(ax, 1.5, y, 22, 7.5, label, role=role, fontsize=9.8)
        arrow(ax, (23.8, y + 3.75), (29.3, 25.0), color=PAL[role][1], lw=1.3)
    box(ax, 29.5, 13.5, 25, 23, "", role="neutro", fill="#FBFBFB")
    text(ax, 42, 34.0, "Prompt do juiz", size=10.5, weight="bold", ha="center")
    text(ax, 30.7, 23.5,
         "Given the input `…`\nand correct output `…`,\nscore the model response\n"
         "`…` on a scale from 0 to\n100, where 100 is the\nbest score. Respond with\n"
         "the integer number only.", size=8.4, family=MONO, color=INK)
    arrow(ax, (54.8, 25), (59.3, 25))
    box(ax, 59.5, 17.5, 16, 15, "LLM juiz\nLlama 3 8B\nInstruct\nvia Ollama", role="modelo",
        fontsize=10.5, weight="bold")
    arrow(ax, (75.8, 25), (80.3, 25))
    box(ax, 80.5, 20, 17, 10, "pontuação\n0 – 100\n(ex.: 85)", role="fim", fontsize=10.5,
        weight="bold")
    arrow(ax, (89, 19.8), (89, 12.2))
    box(ax, 77, 2.5, 21, 9.5, "média sobre as 110\namostras de teste\n≈ 50 (GPT-2 355M)",
        role="entrada", fontsize=9.8, weight="bold")
    # the loop
    ax.plot([76.8, 12.5], [7.0, 7.0], color=SOFT, linestyle=(0, (4, 3)), lw=1.2)
    arrow(ax, (12.5, 7.0), (12.5, 10.8), color=SOFT, linestyle=(0, (4, 3)), lw=1.2)
    text(ax, 44, 8.6, "repete para cada amostra do conjunto de teste", size=9.2, color=SOFT,
         ha="center", style="italic")
    text(ax, 44, 3.2, "referência: Llama 3 8B base 58,51 · Llama 3 8B Instruct 82,65",
         size=9.2, color=SOFT, ha="center")
    return fig


def fig_visao_geral():
    fig, ax = canvas(10, 5)
    title(ax, "Ajuste fino de instruções: as três etapas do capítulo", 47.5)
    stages = [
        ("Etapa 1\nPreparar o conjunto de dados", "instrucao",
         [("1", "Baixar e formatar\nos dados", "01"), ("2", "Montar os lotes\n(função de agrupamento)", "02"),
          ("3", "Criar os carregadores\nde dados", "03")]),
        ("Etapa 2\nAjuste fino do LLM", "resposta",
         [("4", "Carregar o LLM\npré-treinado (GPT-2)", "04"), ("5", "Ajuste fino de\ninstruções", "05"),
          ("6", "Inspecionar a perda\n(treino × validação)", "05")]),
        ("Etapa 3\nAvaliar o LLM", "entrada",
         [("7", "Extrair as respostas\ndo conjunto de teste", "06"),
          ("8", "Avaliação qualitativa\n(ler as respostas)", "06"),
          ("9", "Pontuar as respostas\n(LLM como juiz)", "07")]),
    ]
    x0, col_w, col_gap = 2, 30.0, 3.0
    for s, (stage, role, steps) in enumerate(stages):
        x = x0 + s * (col_w + col_gap)
        fc, ec = PAL[role]
        box(ax, x, 3, col_w, 39.5, "", role=role, fill="#FCFCFC", lw=1.6, radius=1.2)
        box(ax, x, 35.0, col_w, 7.5, stage, role=role, fontsize=11.2, weight="bold",
            radius=1.2)
        for k, (num, label, nb) in enumerate(steps):
            y = 25.0 - k * 10.5
            box(ax, x + 1.5, y, col_w - 3, 8.2, "", role=role, radius=0.8, lw=1.2)
            ax.add_patch(plt.Circle((x + 5.0, y + 4.1), 2.4, fc=ec, ec=ec, zorder=3))
            text(ax, x + 5.0, y + 4.1, num, size=12, weight="bold", color="white", ha="center")
            text(ax, x + 8.8, y + 4.1, label, size=9.8, color=INK)
            text(ax, x + col_w - 2.3, y + 1.4, f"nb {nb}", size=8, color=ec, ha="right",
                 style="italic")
            if k < len(steps) - 1:
                arrow(ax, (x + 5.0, y - 0.1), (x + 5.0, y - 2.2), color=ec, lw=1.2, mutation=9)
        if s < len(stages) - 1:
            arrow(ax, (x + col_w + 0.3, 38.7), (x + col_w + col_gap - 0.3, 38.7), color=SOFT,
                  lw=2.0)
    return fig


def fig_coleta():
    fig, ax = canvas(10, 5)
    title(ax, "De onde vêm os dados de ajuste fino de instruções", 47.5)
    box(ax, 35, 36.5, 30, 6, "pares instrução–resposta", role="modelo", fontsize=12,
        weight="bold")
    branches = [
        ("1. Criados por humanos", "entrada", 1.5,
         "• Databricks Dolly: 15 mil amostras,\n   7 tipos de tarefa (QA, escrita\n"
         "   criativa, resumo, …)\n• LIMA (Meta): 1.000 exemplos\n   escolhidos a dedo",
         "+ qualidade e consistência\n− lento e caro em escala"),
        ("2. Convertidos de conjuntos\n    de PLN anotados", "instrucao", 34.5,
         "• templates transformam tarefas\n   (NLI, sentimento, …) em pares\n"
         "   instrução–resposta\n• FLAN: 62 benchmarks de PLN\n• P3: 170 conjuntos de PLN",
         "+ muitas tarefas, formato único\n   (sequence-to-sequence)\n− textos de benchmark, pouco naturais"),
        ("3. Sintéticos (gerados\n    por um LLM)", "resposta", 67.5,
         "• Self-Instruct: sementes → LLM\n   cria instruções e respostas\n"
         "   → Alpaca: 52 mil pares\n• Bonito (Mistral-7B): texto sem\n   rótulo → tarefas de AFI\n"
         "• Magpie (Llama 3 8B Instruct):\n   template de pré-consulta",
         "+ escala barata, automática\n− pode herdar vieses e erros"),
    ]
    for name, role, x, body, verdict in branches:
        w = 31
        arrow(ax, (50, 36.3), (x + w / 2, 30.6), color=SOFT, lw=1.3)
        box(ax, x, 24.5, w, 6, name, role=role, fontsize=10.5, weight="bold", ha="left", pad=1.4)
        box(ax, x, 1.5, w, 22, "", role=role, fill="#FCFCFC", lw=1.2)
        text(ax, x + 1.2, 21.8, body, size=9.0, color=INK, va="top")
        text(ax, x + 1.2, 4.8, verdict, size=8.8, color=PAL[role][1])
    return fig


FIGURES = {
    "visao_geral_afi": fig_visao_geral,
    "estilos_de_prompt": fig_estilos_de_prompt,
    "coleta_de_dados": fig_coleta,
    "etapas_collate": fig_etapas_collate,
    "padding": fig_padding,
    "entrada_alvo_deslocamento": fig_entrada_alvo,
    "mascara_menos_100": fig_mascara,
    "mascaramento_instrucao": fig_mascaramento_instrucao,
    "empacotamento": fig_empacotamento,
    "lora": fig_lora,
    "fluxo_juiz": fig_fluxo_juiz,
}


def save(fig, name: str, out: Path, png_dir: Path | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.svg"
    fig.savefig(target, format="svg", metadata={"Date": None})
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(png_dir / f"{name}.png", format="png", dpi=110)
    plt.close(fig)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Desenha as figuras do curso em assets/.")
    parser.add_argument("names", nargs="*", help=f"figuras (padrão: todas): {', '.join(FIGURES)}")
    parser.add_argument("--out", type=Path, default=ASSETS, help="pasta de saída (padrão: assets/)")
    parser.add_argument("--png", type=Path, default=None, help="pasta para prévias em PNG")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in FIGURES]
    if unknown:
        parser.error(f"figura desconhecida: {', '.join(unknown)}. Opções: {', '.join(FIGURES)}")
    for name in args.names or FIGURES:
        target = save(FIGURES[name](), name, args.out, args.png)
        print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}"
              f"  {target.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
