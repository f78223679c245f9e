"""kdna.data.cache: one cache root, from $KDNA_CACHE or the per-user cache folder, never from
the working directory; the data sets that download default to it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from kdna.data import cache_root, load_data
from kdna.data.shapes import penn_fudan


def test_kdna_cache_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("KDNA_CACHE", str(tmp_path / "here"))
    assert cache_root() == tmp_path / "here"
    assert cache_root("08_dense", "a.pt") == tmp_path / "here" / "08_dense" / "a.pt"
    assert not (tmp_path / "here").exists()  # nothing is created


def test_the_per_user_folder_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("KDNA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "kdna"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "kdna"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == tmp_path / "home" / ".cache" / "kdna"


@pytest.mark.parametrize("env", [None, "relative/cache"])
def test_the_working_directory_does_not_move_it(monkeypatch, tmp_path, env):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    if env is None:
        monkeypatch.delenv("KDNA_CACHE", raising=False)
    else:
        monkeypatch.setenv("KDNA_CACHE", env)
    first = cache_root()
    assert first.is_absolute()
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    if env is None:  # a relative $KDNA_CACHE is made absolute where it is read
        assert cache_root() == first
    assert cache_root().is_absolute() and "data/cache" not in cache_root().as_posix()


def test_downloads_default_to_the_cache_root(monkeypatch, tmp_path):
    for function in (load_data, penn_fudan):
        assert inspect.signature(function).parameters["root"].default is None
    monkeypatch.setenv("KDNA_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "cache"))):
        load_data("cifar10", download=False)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "cache"))):
        penn_fudan(download=False)
    assert not Path("data").exists()
