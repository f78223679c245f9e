"""The project's own promises: environments that agree, clean notebooks, true README commands."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

import kdna

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(lines):
    return {(r := Requirement(line)).name.lower(): r for line in lines}


def test_environment_yml_lists_the_package_dependencies():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    declared = _requirements(PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["lab"])
    listed = _requirements(line for line in pip_section if not line.startswith("-e"))
    assert {n: str(r.specifier) for n, r in listed.items()} == {
        n: str(r.specifier) for n, r in declared.items()}
    assert "-e ." in pip_section


def test_ci_pins_satisfy_the_declared_ranges():
    lines = (ROOT / "requirements-ci.txt").read_text().splitlines()
    pins = _requirements(line for line in lines if line and not line.startswith(("#", "-")))
    assert str(pins["torch"].specifier) == "==2.14.1"
    assert str(pins["torchvision"].specifier) == "==0.29.1"
    optional = PYPROJECT["optional-dependencies"]
    for req in map(Requirement, PYPROJECT["dependencies"] + optional["lab"] + optional["dev"]):
        name = req.name.lower()
        assert name in pins, f"{name} is not pinned in requirements-ci.txt"
        version = str(pins[name].specifier).removeprefix("==")
        assert req.specifier.contains(version), f"{name}=={version} is outside {req.specifier}"


def test_public_names_are_exported():
    for name in kdna.__all__:
        assert hasattr(kdna, name), name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_clean_and_opens_in_colab(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name)
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert "colab-badge.svg" in "".join(cells[0]["source"])
    assert '"google.colab" in sys.modules' in "".join(code[0]["source"])
    assert any("assert" in "".join(c["source"]) for c in code)


def test_notebook_links_derive_from_the_repository_url():
    assert NOTEBOOKS, "no notebooks found"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "notebook_links.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:15])
    assert "make demo" in head and "make test" in head
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_lab_listens_on_loopback_only():
    lab = (ROOT / "Makefile").read_text().split("\nlab:", 1)[1].split("\n\n", 1)[0]
    assert "--ServerApp.ip=127.0.0.1" in lab
    assert "token=''" not in lab and 'token=""' not in lab


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
