"""The notebooks' slides fit reveal's 960 x 700 canvas and present with no internet.

Each notebook is exported as stored (with its outputs) by ``tools/slides.py`` and
rendered in headless Chromium (Debian's ``chromium`` through Playwright) with every
fragment shown; a failure names each slide: notebook, index h/v (the URL's ``#/h/v``),
title and height, plus code running past the right edge and images larger than the slide.
"""
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import slides  # noqa: E402
from notebooks import notebook_paths  # noqa: E402

NOTEBOOKS = notebook_paths()          # lessons, appendices and solutions


@pytest.fixture(scope="module")
def decks():
    try:
        measured = slides.measure(NOTEBOOKS)
    except SystemExit as exc:   # no chromium / playwright: say what to install
        pytest.fail(str(exc))
    return {Path(d.notebook).name: d for d in measured}


@pytest.mark.slow
@pytest.mark.parametrize("notebook", [p.name for p in NOTEBOOKS])
def test_every_slide_fits_the_canvas(decks, notebook):
    deck = decks[notebook]
    assert deck.slides, f"{notebook}: nenhum slide exportado"
    problems = [f"{notebook} slide {s.index} «{s.title}» ({s.height} px): {'; '.join(s.problems)}"
                for s in deck.bad]
    assert not problems, (f"{len(problems)} de {len(deck.slides)} slides não cabem em "
                          f"{slides.WIDTH} x {slides.HEIGHT}:\n" + "\n".join(problems))


@pytest.mark.slow
@pytest.mark.parametrize("notebook", [p.name for p in NOTEBOOKS])
def test_deck_requests_nothing_outside_the_machine(decks, notebook):
    assert decks[notebook].external_requests == []


class _Resources(HTMLParser):
    """Every URL the page loads by itself: scripts, style sheets, images, and CSS url()/@import."""

    def __init__(self):
        super().__init__()
        self.urls, self._in_style = [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.urls.append(attrs["src"])
        elif tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])
        elif tag in ("img", "source", "iframe") and attrs.get("src"):
            self.urls.append(attrs["src"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.urls += re.findall(r"""(?:@import\s+|url\()\s*['"]?([^'")\s;]+)""", data)


def _loaded_urls(html: str) -> list:
    parser = _Resources()
    parser.feed(html)
    return parser.urls


def test_exported_html_loads_only_local_files(tmp_path):
    notebook = NOTEBOOKS[0]
    html_path = slides.export_slides(notebook, tmp_path)
    urls = _loaded_urls(html_path.read_text(encoding="utf-8"))
    remote = [u for u in urls if re.match(r"(https?:)?//", u)]
    assert not remote, f"{notebook.name}: o HTML carrega da internet: {remote}"
    local = [u.split("?")[0] for u in urls if not u.startswith(("data:", "#"))]
    assert "reveal.js/dist/reveal.js" in local and "reveal.js/dist/plugin/notes.js" in local
    missing = [u for u in local if not (tmp_path / u).is_file()]
    assert not missing, f"arquivos que o HTML carrega e não estão na pasta: {missing}"
    for name in ("reveal.js/dist/theme/white.css", "reveal.js/dist/reveal.css"):
        assert not re.search(r"@import|url\(\s*['\"]?https?:", (tmp_path / name).read_text(encoding="utf-8"))


def test_images_are_embedded_so_the_folder_stands_alone(tmp_path):
    figure = ROOT / "assets" / "lora.svg"
    html = '<p><img src="../assets/lora.svg" alt="x"><img src="https://example.org/a.png"></p>'
    out = slides.embed_local_images(html, ROOT / "notebooks")
    assert 'src="data:image/svg+xml;base64,' in out and figure.is_file()
    assert 'src="https://example.org/a.png"' in out      # remote images are left to the checker
    outside = slides.embed_local_images('<img src="../../etc/passwd">', ROOT / "notebooks")
    assert outside == '<img src="../../etc/passwd">'


@pytest.mark.slow
def test_speaker_view_opens_offline_with_the_notes(tmp_path):
    """Key ``s`` opens reveal's speaker view, with the slide's notes, and nothing leaves the machine."""
    from playwright.sync_api import sync_playwright

    notebook = NOTEBOOKS[0]
    html = slides.export_slides(notebook, tmp_path)
    external = []

    def only_local(route):
        url = route.request.url
        if url.startswith(("data:", "blob:", "http://127.0.0.1")):
            route.continue_()
        else:
            external.append(url)
            route.abort()

    with slides.serve(tmp_path) as base, sync_playwright() as playwright, \
            slides.chromium(playwright) as context:
        context.route("**/*", only_local)
        page = context.new_page()
        page.goto(f"{base}/{html.name}#/1")
        page.wait_for_function("window.Reveal && Reveal.isReady()")
        notes = page.evaluate("Reveal.getCurrentSlide().querySelector('aside.notes').textContent")
        with context.expect_page() as opened:
            page.keyboard.press("s")
        speaker = opened.value
        speaker.wait_for_selector(".speaker-controls-notes", state="attached")
        speaker.wait_for_function(
            "document.querySelector('.speaker-controls-notes').innerText.length > 20")
        shown = speaker.evaluate("document.querySelector('.speaker-controls-notes').innerText")
    assert notes.split()[0] in shown
    assert external == []
