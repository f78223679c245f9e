"""kdna.data.results_files: the committed tables from a checkout, the cache, or the repository."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from kdna.data import results_files
from kdna.data.results_files import benchmark_results, repository_url

ROOT = Path(__file__).resolve().parents[1]
NAME = "finetune-amd-epyc-2-threads.csv"


def test_a_checkout_reads_its_own_tables():
    assert benchmark_results(NAME) == ROOT / "benchmarks" / "results" / NAME
    with pytest.raises(ValueError, match="a file name"):
        benchmark_results("../README.md")


def test_the_repository_comes_from_the_package_metadata():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert repository_url() and f'Repository = "{repository_url()}"' in pyproject


def test_elsewhere_it_downloads_once_into_the_cache(tmp_path, monkeypatch):
    fake = tmp_path / "site-packages" / "kdna" / "data" / "results_files.py"
    monkeypatch.setattr(results_files, "__file__", str(fake))  # an installed kdna: no checkout
    monkeypatch.setenv("KDNA_CACHE", str(tmp_path / "cache"))
    asked = []

    def urlopen(url, timeout):
        asked.append(url)
        return io.BytesIO(b"method,lr\nlora,0.003\n")

    monkeypatch.setattr(results_files, "require_online", lambda *a, **k: None)
    monkeypatch.setattr(results_files.urllib.request, "urlopen", urlopen)
    path = benchmark_results("table.csv")
    assert path == tmp_path / "cache" / "results" / "table.csv"
    assert path.read_text().startswith("method,lr")
    slug = repository_url().split("github.com/")[1]
    assert asked == [f"https://raw.githubusercontent.com/{slug}/main/benchmarks/results/table.csv"]
    assert benchmark_results("table.csv") == path and len(asked) == 1  # the cache, no download


def test_offline_and_without_a_checkout_it_is_none(tmp_path, monkeypatch):
    fake = tmp_path / "site-packages" / "kdna" / "data" / "results_files.py"
    monkeypatch.setattr(results_files, "__file__", str(fake))
    monkeypatch.setenv("KDNA_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(results_files, "require_online", offline)
    assert benchmark_results(NAME) is None
    assert benchmark_results(NAME, download=False) is None
