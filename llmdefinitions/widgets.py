"""Interactive notebook widgets (ipywidgets): browse the dataset, try the model, read the scores.

Each widget is a thin shell around plain functions that return text or HTML, so the
logic is tested without a browser and can be used without widgets too:

* :func:`dataset_browser` -> :func:`render_entry` (prompt + response and its tokens);
* :func:`generation_playground` -> :func:`run_generation` (nothing runs until the
  "Gerar" button is clicked);
* :func:`scored_answers_browser` -> :func:`render_scored_item` (model vs reference vs score).

Each function returns an ``ipywidgets.VBox``; its parts are also attributes of the box
(``browser.slider``, ``playground.button``, ``box.view``...), handy in exercises and tests.
ipywidgets is imported only here, inside the functions that need it.
"""
from __future__ import annotations

import html
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from .prompts import get_prompt_style
from .tokenizer import END_OF_TEXT_ID

PIECE_SYMBOLS = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5"}   # ␣ ↵ ⇥
_BOX = "font-family: monospace; white-space: pre-wrap; padding: 6px; border-radius: 4px;"
_PROMPT_STYLE = "color: #555;"
_RESPONSE_STYLE = "color: #0b6e2a; font-weight: bold;"


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError(
            "Os widgets interativos precisam do ipywidgets: pip install ipywidgets "
            "(ou pip install \"llmdefinitions[notebooks]\"); no Colab ele já vem instalado."
        ) from exc
    return ipywidgets


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


# --------------------------------------------------------------------------- dataset

def visible_piece(piece: str) -> str:
    """A token's text with spaces, newlines and tabs made visible (␣ ↵ ⇥)."""
    return "".join(PIECE_SYMBOLS.get(ch, ch) for ch in piece)


def entry_tokens(entry: Mapping[str, str], tokenizer, style: str = "alpaca") -> Tuple[List[int], int]:
    """Token ids of the entry's training text and how many of them are the prompt.

    Uses :class:`~llmdefinitions.data.InstructionDataset`, so the ids are exactly the
    ones training sees.
    """
    from .data import InstructionDataset

    ids, prompt_length = InstructionDataset([entry], tokenizer, prompt_style=style,
                                            return_prompt_length=True)[0]
    return list(ids), prompt_length


def render_entry(entry: Mapping[str, str], tokenizer, index: Optional[int] = None,
                 style: str = "alpaca", total: Optional[int] = None) -> str:
    """HTML of one entry: the formatted prompt + response, then its tokens (id and piece).

    Prompt tokens are grey, response tokens green (those are the ones a model with
    instruction masking learns from).
    """
    prompt_style = get_prompt_style(style)
    prompt_text = prompt_style.prompt(entry)       # what instruction masking hides
    ids, prompt_length = entry_tokens(entry, tokenizer, style)
    title = "Amostra" if index is None else f"Amostra {index}" + (f" (de {total}, contando do 0)" if total else "")
    chips = []
    for position, token_id in enumerate(ids):
        piece = tokenizer.decode([token_id])
        colour = "#eee" if position < prompt_length else "#d8f5dd"
        chips.append(
            f'<span title="posição {position}, id {token_id}" style="display:inline-block; '
            f'margin:1px; padding:1px 3px; background:{colour}; border-radius:3px; '
            f'font-family:monospace; text-align:center;">{_esc(visible_piece(piece))}'
            f'<br><small style="color:#777">{token_id}</small></span>')
    return (
        f"<h4>{_esc(title)} — estilo '{_esc(prompt_style.name)}'</h4>"
        f'<div style="{_BOX} background:#fafafa; border:1px solid #ddd;">'
        f'<span style="{_PROMPT_STYLE}">{_esc(prompt_text)}</span>'
        f'<span style="{_RESPONSE_STYLE}">{_esc(prompt_style.response_prefix + entry["output"])}</span></div>'
        f"<p><b>{len(ids)} tokens</b>: {prompt_length} do prompt (cinza), "
        f"{len(ids) - prompt_length} da resposta (verde). "
        "Cada quadro mostra o pedaço de texto e, embaixo, o id do token.</p>"
        f"<div>{''.join(chips)}</div>"
    )


def dataset_browser(data: Sequence[Mapping[str, str]], tokenizer, prompt_style: str = "alpaca"):
    """A slider over ``data``; shows each entry formatted and tokenized (:func:`render_entry`).

    Returns a ``VBox`` with the attributes ``slider`` and ``view`` (an ``HTML`` widget).
    """
    from .data import validate_entries

    widgets = _ipywidgets()
    validate_entries(list(data), "dataset_browser")
    get_prompt_style(prompt_style)                       # fail now, with the list of styles
    slider = widgets.IntSlider(value=0, min=0, max=len(data) - 1, description="Amostra",
                               continuous_update=False,
                               layout=widgets.Layout(width="60%"))
    view = widgets.HTML()

    def show(change=None) -> None:
        view.value = render_entry(data[slider.value], tokenizer, slider.value, prompt_style,
                                  total=len(data))

    slider.observe(show, names="value")
    show()
    box = widgets.VBox([slider, view])
    box.slider, box.view = slider, view
    return box


# --------------------------------------------------------------------------- generation

def instruction_prompt(instruction: str, input_text: str = "", style: str = "alpaca") -> str:
    """The prompt the finetuned model expects for ``instruction`` (as in ``generate_responses``)."""
    return get_prompt_style(style).prompt({"instruction": instruction, "input": input_text})


def run_generation(model, tokenizer, prompt: str, temperature: float = 0.0,
                   top_k: Optional[int] = None, max_new_tokens: int = 50, device=None,
                   eos_id: Optional[int] = END_OF_TEXT_ID, seed: Optional[int] = None) -> str:
    """The text the model writes after ``prompt`` (the prompt itself not included).

    ``temperature=0`` is greedy; ``top_k`` of ``None`` or 0 keeps every token; stops
    at ``eos_id``. ``device`` defaults to the model's. ``seed`` makes sampling repeatable.
    """
    import torch

    from .generation import generate, text_to_token_ids

    if not prompt or not prompt.strip():
        raise ValueError("O prompt está vazio: escreva um texto antes de gerar.")
    if temperature < 0:
        raise ValueError(f"A temperatura deve ser >= 0 (recebi {temperature}).")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens deve ser >= 1 (recebi {max_new_tokens}).")
    device = device or next(model.parameters()).device
    top_k = int(top_k) if top_k else None
    if top_k is not None:
        top_k = min(top_k, model.out_head.out_features) if hasattr(model, "out_head") else top_k
    if seed is not None:
        torch.manual_seed(seed)
    ids = text_to_token_ids(prompt, tokenizer).to(device)
    context = getattr(model, "context_length", ids.shape[1] + max_new_tokens)
    out = generate(model, ids, max_new_tokens=max_new_tokens, context_size=context,
                   temperature=float(temperature), top_k=top_k, eos_id=eos_id)
    return tokenizer.decode(out[0, ids.shape[1]:].tolist())


def render_generation(prompt: str, answer: str) -> str:
    """HTML of a generation: the answer, and the exact prompt sent (collapsed)."""
    return (f'<div style="{_BOX} background:#f3faf4; border:1px solid #b9e0c1;">'
            f"{_esc(answer) if answer.strip() else '<i>(resposta vazia)</i>'}</div>"
            f"<details><summary>Prompt enviado ao modelo</summary>"
            f'<div style="{_BOX} background:#fafafa;">{_esc(prompt)}</div></details>')


def generation_playground(model, tokenizer, device=None, prompt_style: str = "alpaca",
                          default_prompt: str = "Rewrite the sentence using a simile: The car is very fast.",
                          max_new_tokens: int = 50):
    """Prompt box, temperature, top-k, max tokens and a "Gerar" button; nothing runs before the click.

    With "Formato de instrução" checked the text is the instruction, wrapped in the
    prompt style (as in ``generate_responses``) and the response header is removed from
    the answer. Returns a ``VBox`` with the attributes ``prompt``, ``instruction_format``,
    ``temperature``, ``top_k``, ``max_new_tokens``, ``button`` and ``view``.
    """
    from .generation import extract_response

    widgets = _ipywidgets()
    get_prompt_style(prompt_style)
    wide = widgets.Layout(width="80%")
    prompt = widgets.Textarea(value=default_prompt, description="Prompt", rows=4, layout=wide)
    instruction_format = widgets.Checkbox(value=True, description=f"Formato de instrução ({prompt_style})")
    temperature = widgets.FloatSlider(value=0.0, min=0.0, max=2.0, step=0.05, description="Temperatura",
                                      readout_format=".2f")
    top_k = widgets.IntSlider(value=0, min=0, max=200, description="Top-k (0=todos)")
    limit = getattr(model, "context_length", 1024) - 1
    max_tokens = widgets.IntSlider(value=min(max_new_tokens, limit), min=1, max=max(1, min(512, limit)),
                                   description="Máx. tokens")
    button = widgets.Button(description="Gerar", button_style="primary", icon="play")
    view = widgets.HTML("<i>Escreva um prompt e clique em Gerar.</i>")

    def on_click(_button=None) -> None:
        text = prompt.value
        sent = instruction_prompt(text, style=prompt_style) if instruction_format.value else text
        button.disabled = True
        view.value = "<i>Gerando…</i>"
        try:
            if not text.strip():
                raise ValueError("O prompt está vazio: escreva um texto antes de gerar.")
            answer = run_generation(model, tokenizer, sent, temperature.value, top_k.value,
                                    max_tokens.value, device)
            if instruction_format.value:
                answer = extract_response(answer, prompt_style)
            view.value = render_generation(sent, answer)
        except (ValueError, RuntimeError) as exc:
            view.value = f'<p style="color:#b00020"><b>Erro:</b> {_esc(exc)}</p>'
        finally:
            button.disabled = False

    button.on_click(on_click)
    box = widgets.VBox([prompt, instruction_format, widgets.HBox([temperature, top_k]), max_tokens,
                        button, view])
    box.prompt, box.instruction_format = prompt, instruction_format
    box.temperature, box.top_k, box.max_new_tokens = temperature, top_k, max_tokens
    box.button, box.view = button, view
    return box


# --------------------------------------------------------------------------- scores

def score_fields(score: Any) -> dict:
    """``score``, ``reason``, ``reply``, ``feedback`` of a score given as a number, ``None``,
    a ``judge.ScoreResult`` or a dict (as read back from ``pontuacoes.json``)."""
    if isinstance(score, Mapping):
        get = score.get
    elif hasattr(score, "score"):
        def get(key, default=None):
            return getattr(score, key, default)
    else:
        return {"score": score, "reason": None if score is not None else "sem nota",
                "reply": None, "feedback": None}
    return {key: get(key) for key in ("score", "reason", "reply", "feedback")}


def _score_colour(value: float, scale: int) -> str:
    fraction = value / scale if scale else 0.0
    return "#0b6e2a" if fraction >= 0.7 else "#b36b00" if fraction >= 0.4 else "#b00020"


def render_scored_item(item: Mapping[str, Any], score: Any, index: Optional[int] = None,
                       total: Optional[int] = None, scale: int = 100,
                       key: str = "model_response") -> str:
    """HTML of one judged item: instruction (and input), reference, the model's answer, the score.

    ``score`` is a number, ``None``, a ``ScoreResult`` or its dict; an item without a
    score shows the reason. ``scale`` is the top of the scale (100, or 5 for the rubric).
    """
    fields = score_fields(score)
    value = fields["score"]
    title = "Item" if index is None else f"Item {index}" + (f" (de {total}, contando do 0)" if total else "")
    if value is None:
        badge = (f'<span style="color:#b00020"><b>sem nota</b></span>'
                 f"{': ' + _esc(fields['reason']) if fields['reason'] else ''}")
    else:
        badge = (f'<span style="font-size:1.4em; font-weight:bold; '
                 f'color:{_score_colour(float(value), scale)}">{_esc(value)}</span> / {scale}')
    parts = [f"<h4>{_esc(title)}</h4>", f"<p><b>Nota do juiz:</b> {badge}</p>",
             f"<p><b>Instrução:</b> {_esc(item.get('instruction', ''))}</p>"]
    if item.get("input"):
        parts.append(f"<p><b>Entrada:</b> {_esc(item['input'])}</p>")
    parts.append(f'<p><b>Resposta de referência:</b></p><div style="{_BOX} background:#f4f6fb; '
                 f'border:1px solid #c9d3ea;">{_esc(item.get("output", ""))}</div>')
    answer = item.get(key)
    shown = _esc(answer) if answer and str(answer).strip() else "<i>(resposta vazia)</i>"
    parts.append(f'<p><b>Resposta do modelo:</b></p><div style="{_BOX} background:#f3faf4; '
                 f'border:1px solid #b9e0c1;">{shown}</div>')
    if fields["feedback"]:
        parts.append(f"<p><b>Comentário do juiz:</b> {_esc(fields['feedback'])}</p>")
    if fields["reply"]:
        parts.append(f"<details><summary>Resposta completa do juiz</summary>"
                     f'<div style="{_BOX} background:#fafafa;">{_esc(fields["reply"])}</div></details>')
    return "".join(parts)


ORDERS = {"ordem original": None, "nota crescente": False, "nota decrescente": True}


def score_order(values: Sequence[Optional[float]], order: str = "ordem original") -> List[int]:
    """Indices of the items in ``order``; items without a score go last."""
    if order not in ORDERS:
        raise ValueError(f"Ordem desconhecida: {order!r}. Use uma destas: {', '.join(ORDERS)}.")
    indices = list(range(len(values)))
    descending = ORDERS[order]
    if descending is None:
        return indices
    scored = sorted((i for i in indices if values[i] is not None), key=lambda i: values[i],
                    reverse=descending)
    return scored + [i for i in indices if values[i] is None]


def scored_answers_browser(items: Sequence[Mapping[str, Any]], scores: Sequence[Any],
                           key: str = "model_response", scale: Optional[int] = None):
    """Browse the judged answers: model vs reference vs score, with previous/next and sorting.

    ``items``: the entries with the model's answers (``instruction-data-with-response.json``);
    ``scores``: one per item, in the same order (``judge.load_score_results(paths.scores)``,
    a ``ScoreList`` or a list of numbers with ``None``). Returns a ``VBox`` with the
    attributes ``slider``, ``previous``, ``next``, ``order`` and ``view``.
    """
    widgets = _ipywidgets()
    scores = list(getattr(scores, "results", scores))
    if len(items) != len(scores):
        raise ValueError(
            f"{len(items)} itens mas {len(scores)} notas: cada item precisa da sua nota, na mesma "
            "ordem (uma lista de notas sem os itens que falharam perde o alinhamento).")
    if not items:
        raise ValueError("Não há itens para mostrar.")
    values = [score_fields(s)["score"] for s in scores]
    if scale is None:
        present = [v for v in values if v is not None]
        scale = 5 if present and min(present) >= 1 and max(present) <= 5 else 100
    order = widgets.Dropdown(options=list(ORDERS), value="ordem original", description="Ordem")
    slider = widgets.IntSlider(value=0, min=0, max=len(items) - 1, description="Posição",
                               continuous_update=False)
    previous = widgets.Button(description="Anterior", icon="arrow-left")
    next_ = widgets.Button(description="Próximo", icon="arrow-right")
    view = widgets.HTML()
    state = {"order": score_order(values)}

    def show(change=None) -> None:
        index = state["order"][slider.value]
        view.value = render_scored_item(items[index], scores[index], index, len(items), scale, key)
        previous.disabled = slider.value == 0
        next_.disabled = slider.value == len(items) - 1

    def reorder(change=None) -> None:
        state["order"] = score_order(values, order.value)
        if slider.value == 0:
            show()
        else:
            slider.value = 0          # triggers show()

    def step(delta: int) -> None:
        slider.value = min(max(slider.value + delta, 0), len(items) - 1)

    slider.observe(show, names="value")
    order.observe(reorder, names="value")
    previous.on_click(lambda _b: step(-1))
    next_.on_click(lambda _b: step(1))
    show()
    box = widgets.VBox([widgets.HBox([previous, slider, next_, order]), view])
    box.slider, box.previous, box.next, box.order, box.view = slider, previous, next_, order, view
    return box


__all__ = ["dataset_browser", "render_entry", "entry_tokens", "visible_piece",
           "generation_playground", "run_generation", "instruction_prompt", "render_generation",
           "scored_answers_browser", "render_scored_item", "score_fields", "score_order"]
