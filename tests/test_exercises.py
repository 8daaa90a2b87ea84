"""Helpers of notebook 12 (exercises): the Alpaca 52K slice the ``teste`` profile reads.

Notebook 12 loads Stanford's Alpaca 52K (``alpaca_data.json``, about 22 MB) with
``download_and_load_file(paths.root / "alpaca_data.json", ALPACA_URL)``, which skips the
download when the file exists. CI has no internet and the offline mirror has no copy,
so in the ``teste`` profile the file is a small slice written beforehand: 60 entries
of the course's own dataset (``instruction-data.json``), which already has Alpaca 52K's
keys (``instruction``, ``input``, ``output``).

Write the slice by hand (e.g. before ``python tools/notebooks.py executar 12``)::

    python tests/test_exercises.py [destination]   # default: notebooks/saida/alpaca_data.json
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from llmdefinitions.downloads import ALPACA_URL  # noqa: E402
ALPACA_KEYS = ("instruction", "input", "output")   # the keys (and their order) of Alpaca 52K
ALPACA_SLICE_SIZE = 60


def make_alpaca_slice(entries, n: int = ALPACA_SLICE_SIZE) -> list:
    """``n`` entries spread evenly over ``entries``, each with exactly Alpaca 52K's keys."""
    if not 0 < n <= len(entries):
        raise ValueError(f"Não dá para tirar {n} entradas de uma lista com {len(entries)}.")
    step = len(entries) // n
    return [{key: entries[i * step][key] for key in ALPACA_KEYS} for i in range(n)]


def write_alpaca_slice(destination, source, n: int = ALPACA_SLICE_SIZE) -> Path:
    """Write the slice of the dataset file ``source`` to ``destination`` (UTF-8, atomic)."""
    from llmdefinitions.io import read_json, write_json_atomic

    return write_json_atomic(destination, make_alpaca_slice(read_json(source), n), indent=4)


def default_source() -> Path:
    """The course's dataset: in the offline mirror, else where tests/shared_data.py finds it."""
    mirror = os.environ.get("LLMDEF_MIRROR", "").strip()
    if mirror and (Path(mirror) / "instruction-data.json").is_file():
        return Path(mirror) / "instruction-data.json"
    import shared_data

    return shared_data.locate() / "instruction-data.json"


# ---------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def course_entries(shared_data):
    return json.loads((shared_data / "instruction-data.json").read_text(encoding="utf-8"))


def test_slice_has_alpaca_52k_format(course_entries):
    from llmdefinitions.data import validate_entries

    sliced = make_alpaca_slice(course_entries)
    assert len(sliced) == ALPACA_SLICE_SIZE
    assert all(list(entry) == list(ALPACA_KEYS) for entry in sliced)
    validate_entries(sliced, "fatia do Alpaca")
    assert len({json.dumps(e, sort_keys=True) for e in sliced}) == ALPACA_SLICE_SIZE
    assert sliced[0] == {k: course_entries[0][k] for k in ALPACA_KEYS}
    assert any(e["input"] for e in sliced) and any(not e["input"] for e in sliced)
    assert make_alpaca_slice(course_entries) == sliced                # deterministic


def test_slice_size_is_checked(course_entries):
    with pytest.raises(ValueError, match="Não dá"):
        make_alpaca_slice(course_entries[:10], n=11)
    with pytest.raises(ValueError):
        make_alpaca_slice(course_entries, n=0)


def test_notebook_reads_the_slice_without_network(shared_data, tmp_path, monkeypatch):
    """What notebook 12 does in the `teste` profile: the file exists, so nothing is downloaded."""
    import llmdefinitions.data as data
    from llmdefinitions.data import download_and_load_file, split_data
    from llmdefinitions.profiles import load_profile

    def no_network(*args, **kwargs):
        raise AssertionError("download_and_load_file tentou baixar o arquivo")

    monkeypatch.setattr(data, "download_file", no_network)
    path = write_alpaca_slice(tmp_path / "alpaca_data.json", shared_data / "instruction-data.json")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("[\n    {\n")                               # indented like the original
    entries = download_and_load_file(path, ALPACA_URL)
    assert entries == make_alpaca_slice(json.loads(
        (shared_data / "instruction-data.json").read_text(encoding="utf-8")))
    train, test, val = split_data(entries)
    assert (len(train), len(test), len(val)) == (51, 6, 3)
    profile = load_profile("teste")
    assert profile.train_items <= len(train)                           # the profile's share fits
    assert profile.subset(train, val, test)[0] == train[:profile.train_items]


def test_default_source_finds_the_dataset(shared_data, monkeypatch):
    monkeypatch.setenv("LLMDEF_MIRROR", str(shared_data))
    assert default_source() == shared_data / "instruction-data.json"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "notebooks" / "saida" / "alpaca_data.json"
    print("fatia do Alpaca escrita em", write_alpaca_slice(target, default_source()))
