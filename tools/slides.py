"""Present the course's notebooks as reveal.js slides with no internet, and measure them.

* ``exportar``: each notebook (as stored, with its outputs) becomes ``NN_nome.slides.html``
  in a folder that also holds reveal.js (``tools/reveal/``, vendored) and MathJax (from the
  ``jupyter-server-mathjax`` package), so the folder works offline and can be copied as is;
  figures referenced by path are embedded in the HTML.
* ``apresentar``: exports one notebook and serves the folder on 127.0.0.1; open the printed
  URL. Key ``s`` opens the speaker view (notes, next slide, timer); ``Esc`` the overview.
* ``medir``: renders each deck in headless Chromium (Debian's ``chromium``, driven by
  Playwright) at reveal's 960 x 700 canvas with every fragment shown, and reports per slide
  its index (h/v, as in the URL ``#/h/v``), title and height; it lists the slides taller
  than the canvas, code blocks running past the right edge, images larger than the
  slide and any request that left the machine. ``--capturas DIR`` saves a PNG per slide.

Usage::

    python tools/slides.py apresentar notebooks/05_ajuste_fino.ipynb
    python tools/slides.py exportar notebooks/*.ipynb --saida /tmp/slides
    python tools/slides.py medir [notebooks/NN_nome.ipynb ...] [--problemas] [--capturas DIR] [--json ARQ]
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import http.server
import mimetypes
import os
import re
import shutil
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmdefinitions.io import write_json_atomic, write_text_atomic  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
DEFAULT_OUT = NOTEBOOKS / "saida" / "slides"      # git-ignored
REVEAL_VERSION = "6.0.2"
REVEAL_DIR = ROOT / "tools" / "reveal"
TEMPLATE_DIR = ROOT / "tools" / "slides_template"
REVEAL_URL = "reveal.js"                          # folders beside the HTML
MATHJAX_URL = "mathjax"
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
WIDTH, HEIGHT = 960, 700                          # reveal's default canvas (nbconvert's too)
CHROMIUM = os.environ.get("LLMDEF_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# ---------------------------------------------------------------------------
# Export


def mathjax_dir() -> Path:
    """MathJax 2's files, as shipped by the ``jupyter-server-mathjax`` package."""
    try:
        import jupyter_server_mathjax
    except ImportError as exc:
        raise SystemExit("Os slides usam o MathJax local do pacote jupyter-server-mathjax: "
                         "pip install jupyter-server-mathjax") from exc
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def slides_name(notebook: Path) -> str:
    return f"{Path(notebook).stem}.slides.html"


def copy_runtime(out_dir: Path) -> None:
    """reveal.js and MathJax into ``out_dir`` (what the HTML loads, by relative path)."""
    shutil.copytree(REVEAL_DIR, out_dir / REVEAL_URL, dirs_exist_ok=True)
    shutil.copytree(mathjax_dir(), out_dir / MATHJAX_URL, dirs_exist_ok=True)


def export_slides(notebook: Path, out_dir: Path) -> Path:
    """Write the notebook's deck (as stored, outputs included) into ``out_dir``; returns the HTML."""
    from nbconvert import SlidesExporter

    notebook = Path(notebook)
    if not notebook.is_file():
        raise SystemExit(f"Notebook não encontrado: {notebook}")
    exporter = SlidesExporter(
        template_file="offline.html.j2",
        extra_template_paths=[str(TEMPLATE_DIR)],
        reveal_url_prefix=REVEAL_URL,
        mathjax_url=f"{MATHJAX_URL}/MathJax.js?config={MATHJAX_CONFIG}",
        reveal_theme="white",     # the vendored one (its fonts are embedded)
        exclude_input_prompt=True,   # "In [3]:" columns cost 110 of the 960 px
        exclude_output_prompt=True,
    )
    resources = {"metadata": {"path": str(notebook.parent)}}
    try:
        html, _ = exporter.from_filename(str(notebook), resources=resources)
    except Exception as exc:  # nbformat/nbconvert errors name no file
        raise SystemExit(f"{notebook}: não foi possível exportar os slides ({exc})") from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_runtime(out_dir)
    html = embed_local_images(html, notebook.parent)
    return write_text_atomic(out_dir / slides_name(notebook), html)


_IMG_SRC = re.compile(r'(<img\b[^>]*?\bsrc=")([^"]+)(")')


def embed_local_images(html: str, base: Path) -> str:
    """Images referenced by a path inside the repository (``../assets/x.svg``) become data URIs.

    nbconvert embeds attachments but not paths outside the notebook's folder; embedding
    them here lets the exported folder be copied anywhere.
    """
    def embed(match: re.Match) -> str:
        src = unquote(match.group(2))
        path = (base / src).resolve()
        if ":" in src.split("/")[0] or not path.is_file() or not path.is_relative_to(ROOT):
            return match.group(0)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"{match.group(1)}data:{mime};base64,{data}{match.group(3)}"

    return _IMG_SRC.sub(embed, html)


@contextlib.contextmanager
def serve(directory: Path, port: int = 0) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (``port`` 0: any free one); yields the base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


# ---------------------------------------------------------------------------
# Measurement


@dataclass
class Slide:
    h: int
    v: int
    title: str
    height: int
    wide_code: List[str] = field(default_factory=list)     # first line of each block
    large_images: List[str] = field(default_factory=list)  # "alt: W x H"

    @property
    def index(self) -> str:
        return f"{self.h}/{self.v}"

    @property
    def too_tall(self) -> bool:
        return self.height > HEIGHT

    @property
    def problems(self) -> List[str]:
        out = [f"altura {self.height} px > {HEIGHT}"] if self.too_tall else []
        out += [f"código passa da borda direita: {line!r}" for line in self.wide_code]
        out += [f"imagem maior que o slide: {image}" for image in self.large_images]
        return out


@dataclass
class Deck:
    notebook: str
    slides: List[Slide]
    external_requests: List[str]

    @property
    def bad(self) -> List[Slide]:
        return [s for s in self.slides if s.problems]

    @property
    def tallest(self) -> int:
        return max((s.height for s in self.slides), default=0)


_LIST_SLIDES = """() => Reveal.getHorizontalSlides().map(
    s => Math.max(1, s.querySelectorAll(':scope > section').length))"""

# Height in reveal's layout pixels (the canvas is scaled as a whole, so these do not
# depend on the window); positions from getBoundingClientRect are divided by the scale.
_MEASURE = """([width, height]) => {
    const slide = Reveal.getCurrentSlide();
    const scale = Reveal.getScale();
    const box = slide.getBoundingClientRect();
    const heading = slide.querySelector('h1, h2, h3, h4');
    let text = slide.innerText || '';
    if (heading) {   // without MathJax's hidden copies of the formulas
        const copy = heading.cloneNode(true);
        copy.querySelectorAll('.MJX_Assistive_MathML, script, .MathJax_Preview').forEach(e => e.remove());
        text = copy.textContent;
    }
    text = text.trim();
    const title = text.split('\\n')[0].replace(/¶$/, '').trim().slice(0, 80);
    const wide = [];
    for (const pre of slide.querySelectorAll('pre')) {
        // the text itself past the slide's edge, or a block that scrolls sideways
        const range = document.createRange();
        range.selectNodeContents(pre);
        const right = (range.getBoundingClientRect().right - box.left) / scale;
        const edge = Math.min(width, (pre.getBoundingClientRect().right - box.left) / scale);
        if (pre.scrollWidth > pre.clientWidth + 1 || right > edge + 1) {
            const lines = pre.textContent.split('\\n');
            const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
            wide.push(longest.trim().slice(0, 60));
        }
    }
    const large = [];
    for (const img of slide.querySelectorAll('img, svg:not(svg svg)')) {
        const r = img.getBoundingClientRect();
        const w = Math.round(r.width / scale), h = Math.round(r.height / scale);
        if (w > width + 1 || h > height + 1) {
            const name = img.getAttribute('alt') || img.tagName.toLowerCase();
            large.push(`${name.slice(0, 50)}: ${w} x ${h}`);
        }
    }
    return {title, height: Math.round(slide.scrollHeight), wide_code: wide, large_images: large};
}"""


@contextlib.contextmanager
def chromium(playwright):
    """Debian's Chromium, headless, with a fresh profile that is removed afterwards."""
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"Chromium não encontrado em {CHROMIUM}: apt-get install -y chromium "
                         "(ou aponte LLMDEF_CHROMIUM para o executável).")
    user_dir = tempfile.mkdtemp(prefix="llmdef-chromium-")
    try:
        context = playwright.chromium.launch_persistent_context(
            user_dir, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": WIDTH, "height": HEIGHT})
        try:
            yield context
        finally:
            context.close()
    finally:
        shutil.rmtree(user_dir, ignore_errors=True)


def _measure_page(page, url: str, notebook: str, captures: Optional[Path]) -> Deck:
    external: List[str] = []

    def only_local(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(url)
    page.wait_for_function("window.Reveal && Reveal.isReady()")
    page.evaluate("""() => new Promise(done => {
        const mj = window.MathJax;
        if (mj && mj.Hub) { mj.Hub.Queue(done); } else { done(); }
    })""")
    page.evaluate("() => document.fonts.ready.then(() => true)")
    page.evaluate("() => Reveal.configure({transition: 'none', backgroundTransition: 'none', "
                  "fragments: false})")
    slides: List[Slide] = []
    for h, count in enumerate(page.evaluate(_LIST_SLIDES)):
        for v in range(count):
            page.evaluate(f"() => Reveal.slide({h}, {v})")
            slide = Slide(h=h, v=v, **page.evaluate(_MEASURE, [WIDTH, HEIGHT]))
            slides.append(slide)
            if captures is not None:
                captures.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(captures / f"{Path(notebook).stem}-{h:02d}-{v:02d}.png"))
    return Deck(notebook=notebook, slides=slides, external_requests=sorted(set(external)))


def measure(notebooks: Sequence[Path], captures: Optional[Path] = None) -> List[Deck]:
    """Export each notebook and measure every slide of its deck in headless Chromium."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise SystemExit("medir precisa do Playwright: pip install playwright "
                         "(o navegador é o chromium do sistema, não o do Playwright)") from exc
    decks = []
    with tempfile.TemporaryDirectory(prefix="llmdef-slides-") as tmp:
        for notebook in notebooks:
            export_slides(Path(notebook), Path(tmp))
        with serve(Path(tmp)) as base, sync_playwright() as playwright, \
                chromium(playwright) as context:
            for notebook in notebooks:
                page = context.new_page()
                decks.append(_measure_page(page, f"{base}/{slides_name(notebook)}",
                                           _display(Path(notebook)), captures))
                page.close()
    return decks


def _display(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def report(decks: Sequence[Deck], verbose: bool = False) -> str:
    """Plain-text report: one summary line per deck, then each slide with a problem."""
    lines = []
    for deck in decks:
        lines.append(f"{deck.notebook}: {len(deck.slides)} slides, {len(deck.bad)} com problema "
                     f"(mais alto: {deck.tallest} px; canvas {WIDTH} x {HEIGHT})")
        for slide in deck.slides if verbose else deck.bad:
            mark = "!" if slide.problems else " "
            lines.append(f"  {mark} {slide.index:>6}  {slide.height:5d} px  {slide.title}")
            lines += [f"             - {p}" for p in slide.problems]
        lines += [f"  ! requisição externa bloqueada: {url}" for url in deck.external_requests]
    total = sum(len(d.slides) for d in decks)
    bad = sum(len(d.bad) for d in decks)
    lines.append(f"Total: {total} slides, {bad} com problema, "
                 f"{sum(len(d.external_requests) for d in decks)} requisições externas.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command line


def _notebooks(paths: Sequence[str]) -> List[Path]:
    from notebooks import notebook_paths   # tools/notebooks.py: the one list of the course's notebooks

    found = [Path(p) for p in paths] if paths else notebook_paths()
    missing = [str(p) for p in found if not p.is_file()]
    if missing:
        raise SystemExit(f"Notebook não encontrado: {', '.join(missing)}")
    if not found:
        raise SystemExit(f"Nenhum notebook em {NOTEBOOKS}")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Slides dos notebooks (reveal.js local, sem internet).")
    sub = parser.add_subparsers(dest="command", required=True)
    p_exp = sub.add_parser("exportar", help="gera NN_nome.slides.html (pasta autocontida)")
    p_exp.add_argument("notebooks", nargs="*")
    p_exp.add_argument("--saida", type=Path, default=DEFAULT_OUT)
    p_show = sub.add_parser("apresentar", help="exporta e serve em 127.0.0.1")
    p_show.add_argument("notebook")
    p_show.add_argument("--saida", type=Path, default=DEFAULT_OUT)
    p_show.add_argument("--porta", type=int, default=8000)
    p_med = sub.add_parser("medir", help="mede cada slide no Chromium sem interface")
    p_med.add_argument("notebooks", nargs="*")
    p_med.add_argument("--capturas", type=Path, default=None, help="pasta para um PNG por slide")
    p_med.add_argument("--json", type=Path, default=None, help="grava as medidas em JSON")
    p_med.add_argument("--problemas", action="store_true", help="lista só os slides com problema")
    args = parser.parse_args(argv)

    if args.command == "exportar":
        for notebook in _notebooks(args.notebooks):
            print(_display(export_slides(notebook, args.saida)))
        return 0
    if args.command == "apresentar":
        html = export_slides(Path(args.notebook), args.saida)
        with serve(args.saida, args.porta) as base:
            print(f"Slides em {base}/{html.name}\n"
                  "Teclas: s = visão do apresentador (notas, próximo slide, relógio); "
                  "Esc = visão geral; f = tela cheia.\nCtrl+C encerra.", flush=True)
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                pass
        return 0
    decks = measure(_notebooks(args.notebooks), args.capturas)
    print(report(decks, verbose=not args.problemas))
    if args.json:
        write_json_atomic(args.json, [{"notebook": d.notebook, "external_requests": d.external_requests,
                                       "slides": [asdict(s) for s in d.slides]} for d in decks])
    return 1 if any(d.bad or d.external_requests for d in decks) else 0


if __name__ == "__main__":
    sys.exit(main())
