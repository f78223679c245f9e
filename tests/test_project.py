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


EXTRAS = PYPROJECT["optional-dependencies"]
OPTIONAL = ("viz", "analysis", "export", "dense", "peft", "lab")  # `all` is their union


def _requirements(lines):
    return {(r := Requirement(line)).name.lower(): r for line in lines}


def _specifiers(lines):
    return {name: str(r.specifier) for name, r in _requirements(lines).items()}


def test_extras_split_the_optional_dependencies_from_a_light_core():
    assert set(EXTRAS) == {*OPTIONAL, "all", "dev"}
    core = _specifiers(PYPROJECT["dependencies"])
    union: dict[str, str] = {}
    for extra in OPTIONAL:
        for name, spec in _specifiers(EXTRAS[extra]).items():
            assert name not in core, f"{name} is core and also in the {extra!r} extra"
            assert union.setdefault(name, spec) == spec, f"{name} has two ranges in the extras"
    assert _specifiers(EXTRAS["all"]) == union
    assert not {"plotly", "ipywidgets", "captum", "scipy", "onnx", "onnxruntime", "peft",
                "torchmetrics", "pycocotools", "jupyterlab"} & set(core)
    for req in map(Requirement, PYPROJECT["dependencies"] + EXTRAS["all"]):
        assert req.specifier and all(s.operator == ">=" for s in req.specifier), (
            f"{req}: pyproject declares loose lower bounds (name>=version); pins go in "
            f"requirements-ci.txt")


def test_environment_yml_lists_the_package_with_every_extra():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = _specifiers(line for line in pip_section if not line.startswith("-e"))
    assert listed == _specifiers(PYPROJECT["dependencies"] + EXTRAS["all"])
    assert "-e ." in pip_section


def test_ci_pins_every_declared_requirement_within_its_range():
    lines = (ROOT / "requirements-ci.txt").read_text().splitlines()
    assert "-e .[all,dev]" in lines
    pins = _requirements(line for line in lines if line and not line.startswith(("#", "-")))
    assert str(pins["torch"].specifier) == "==2.14.1"
    assert str(pins["torchvision"].specifier) == "==0.29.1"
    declared = [PYPROJECT["dependencies"], *EXTRAS.values()]
    names = set()
    for req in (Requirement(line) for group in declared for line in group):
        name = req.name.lower()
        names.add(name)
        assert name in pins, f"{name} is not pinned in requirements-ci.txt"
        assert str(pins[name].specifier).startswith("=="), f"{pins[name]} is not a pin"
        version = str(pins[name].specifier).removeprefix("==")
        assert req.specifier.contains(version), f"{name}=={version} is outside {req.specifier}"
    assert set(pins) == names, f"pinned but not declared: {sorted(set(pins) - names)}"


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


def _readme_photo_folder(root: Path) -> None:
    """The README's placeholders made real: ``path/to/photos`` (a small digits folder) and
    ``my_photo.jpg`` (one of its images) under ``root``."""
    from PIL import Image

    from kdna.data.examples import write_example_folder

    folder = write_example_folder(root, "digits", per_class=4, test_per_class=2, image_size=32)
    (root / "path" / "to").mkdir(parents=True)
    folder.rename(root / "path" / "to" / "photos")
    first = next((root / "path" / "to" / "photos" / "test").glob("*/*.png"))
    Image.open(first).convert("RGB").save(root / "my_photo.jpg")


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """Every Python block of the README runs as written, in a folder that holds the photos it
    names; only the fine-tuning example's step count is cut (its default takes minutes)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    _readme_photo_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    short = '"path/to/photos", steps=2)'
    for block in blocks:
        assert "path/to/" not in block or '"path/to/photos")' in block, block
        block = block.replace('"path/to/photos")', short)
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "photos" / "adapters").is_dir()


def test_colab_installs_declared_extras_covering_what_the_notebooks_import():
    sys.path.insert(0, str(ROOT / "tools"))
    from notebook_links import COLAB_EXTRAS

    extras = PYPROJECT["optional-dependencies"]
    colab = {Requirement(r).name.lower() for e in COLAB_EXTRAS.split(",") for r in extras[e]}
    needed = {Requirement(r).name.lower() for r in extras["lab"]} - {"jupyterlab"}
    assert needed <= colab, f"Colab would lack {needed - colab}"


def test_every_page_of_the_site_nav_exists():
    """mkdocs only warns about a nav entry with no file: a renamed results table would silently
    drop out of the site."""
    def pages(entries):
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from pages(value) if isinstance(value, list) else [value]

    class Loader(yaml.SafeLoader):  # mkdocs.yml's !!python/name tags are not ours to run
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    nav = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)["nav"]
    paths = [p for p in pages(nav) if not p.startswith(("api/", "index.md"))]
    assert len(paths) > 10
    missing = [p for p in paths if not (ROOT / p).is_file()]
    assert not missing, f"mkdocs.yml's nav names files that do not exist: {missing}"
