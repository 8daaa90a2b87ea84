"""Where the tests find the public files (tests/shared_data.py): the mirror, relative paths,
one line when nothing is there, nothing left behind by a failed download, nothing at import time."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shared_data as finder

REPO = Path(__file__).resolve().parents[1]


def test_a_relative_mirror_is_read_from_the_repository_root(shared_data, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)                       # as when pytest runs from another folder
    monkeypatch.setenv("LLMDEF_MIRROR", os.path.relpath(shared_data, REPO))
    assert finder.locate() == shared_data.resolve()


def test_a_mirror_without_the_files_is_one_line_that_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMDEF_MIRROR", str(tmp_path))
    with pytest.raises(finder.SharedDataMissing) as error:
        finder.locate()
    message = str(error.value)
    assert "\n" not in message and "LLMDEF_MIRROR" in message and str(tmp_path) in message


def test_a_failed_download_leaves_nothing_behind(monkeypatch, tmp_path):
    import llmdefinitions.downloads as downloads

    def half_download(url, destination, **_):
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        Path(destination).write_text("{", encoding="utf-8")           # a partial file, then the failure
        raise OSError("sem rede\nsegunda linha")

    cache = tmp_path / "cache" / "dados-de-teste"
    monkeypatch.delenv("LLMDEF_MIRROR", raising=False)
    monkeypatch.setattr(finder, "BESIDE_REPO", tmp_path / "nada")
    monkeypatch.setattr(finder, "CACHE", cache)
    monkeypatch.setattr(downloads, "download_file", half_download)
    with pytest.raises(finder.SharedDataMissing) as error:
        finder.locate()
    assert "\n" not in str(error.value) and "LLMDEF_MIRROR" in str(error.value)
    assert list(tmp_path.iterdir()) == []                 # not even the folder made for the cache


@pytest.mark.slow
def test_collecting_the_tests_needs_no_data(tmp_path):
    """No test module looks for the files at import time: collection succeeds without them."""
    env = {**os.environ, "LLMDEF_MIRROR": str(tmp_path), "HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "tests"], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
