"""The notebooks read as one course (issue 26): a numbered title, the KernelDNA variant each one
uses, navigation to the notebooks before and after, glossary links that resolve, a coding exercise
with a collapsed solution and a check, no stored outputs and no text addressed to maintainers.
Reads the JSON and docs/glossary.md only; nothing is executed."""

import json
import re
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
GLOSSARY = ROOT / "docs" / "glossary.md"
VARIANT = "**KernelDNA variant:**"
SOLUTION_LINE = "# Solution: run this cell to check the exercise without doing it"
# Text for maintainers, not students (a file outside the repository, the test machine's load).
FORBIDDEN = ("KERNELDNA.md", "load average", " CI ")
# The terms every notebook may link (NOTEBOOK_SPEC.md, section 2), as they are written.
TERMS = ("parent", "child", "adapter", "static scales", "filter scale", "tap scale", "gate",
         "identity gate", "fold", "adapters in place", "sharing", "eligible layer",
         "depthwise convolution", "pointwise convolution", "forward pass", "linear probe",
         "norms + head", "LoRA", "task file", "KL divergence", "top-1 agreement", "CKA", "HSIC",
         "null", "permutation test", "proposal network", "atrous convolution", "routing",
         "class-specific child", "throughput", "MACs", "frozen BatchNorm")
GLOSSARY_LINK = re.compile(r"\]\(\.\./docs/glossary\.md#([^)\s]+)\)")
NOTEBOOK_LINK = re.compile(r"\[(\d\d) · [^\]]+\]\((\d\d)_[A-Za-z0-9_]+\.ipynb\)")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell: dict) -> str:
    return "".join(cell["source"])


def _header(cells: list[dict]) -> str:
    """The markdown before the first code cell (the generated Colab set-up cell)."""
    first_code = next(i for i, c in enumerate(cells) if c["cell_type"] == "code")
    return "\n".join(_text(c) for c in cells[:first_code] if c["cell_type"] == "markdown")


def _nav_lines(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if line.startswith(("**Previous:**", "**Next:**"))]


def anchors(markdown: str) -> set[str]:
    """The anchors mkdocs gives the headings of ``markdown`` (its toc extension's slugify)."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.M)
    return {slugify(h, "-") for h in headings}


def _number(path: Path) -> int:
    return int(path.name[:2])


def test_notebooks_are_found():
    assert NOTEBOOKS and _number(NOTEBOOKS[0]) == 1, [p.name for p in NOTEBOOKS]


def test_glossary_has_an_entry_for_every_term_and_links_existing_notebooks():
    text = GLOSSARY.read_text(encoding="utf-8")
    missing = [t for t in TERMS if slugify(t, "-") not in anchors(text)]
    assert not missing, f"docs/glossary.md has no heading for {missing}"
    for target in re.findall(r"\]\(\.\./notebooks/([^)#\s]+)", text):
        assert (ROOT / "notebooks" / target).is_file(), f"the glossary links {target}"


def test_anchors_follow_mkdocs():
    assert anchors("# Glossary\n## KL divergence\n## Top-1 agreement\n## Norms + head\n") == {
        "glossary", "kl-divergence", "top-1-agreement", "norms-head"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_header_has_title_variant_and_navigation(path):
    cells = _cells(path)
    number = f"{_number(path):02d}"
    assert _text(cells[0]).startswith(f"# {number} · "), _text(cells[0]).splitlines()[0]
    header = _header(cells)
    assert any(line.startswith(VARIANT) for line in header.splitlines()), (
        f"no line starting {VARIANT} before the set-up cell")
    nav = _nav_lines(header)
    assert len(nav) == 1, f"one navigation line in the header, found {nav}"
    closing = _nav_lines("\n".join(_text(c) for c in cells[-2:] if c["cell_type"] == "markdown"))
    assert closing == nav, f"the closing repeats the header's navigation line: {closing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_navigation_links_the_neighbours_that_exist(path):
    nav = _nav_lines(_header(_cells(path)))
    assert nav, "no **Previous:** / **Next:** line in the header"
    line = nav[0]
    number = _number(path)
    links = NOTEBOOK_LINK.findall(line)
    assert links, f"no [NN · Title](NN_file.ipynb) link in {line}"
    for shown, target in links:
        assert shown == target, f"the title says {shown}, the link goes to {target}: {line}"
        assert list((ROOT / "notebooks").glob(f"{target}_*.ipynb")), f"no notebook {target}"
    targets = re.findall(r"\]\(([^)]+\.ipynb)\)", line)
    assert all((ROOT / "notebooks" / t).is_file() for t in targets), targets
    previous = re.search(r"\*\*Previous:\*\* \[(\d\d)", line)
    following = re.search(r"\*\*Next:\*\* \[(\d\d)", line)
    if number == 1:
        assert previous is None, "the first notebook has no Previous"
    else:
        assert previous and int(previous[1]) == number - 1, f"Previous should be {number - 1}"
    if following:
        assert int(following[1]) == number + 1, f"Next should be {number + 1}: {line}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_glossary_links_resolve(path):
    known = anchors(GLOSSARY.read_text(encoding="utf-8"))
    text = "\n".join(_text(c) for c in _cells(path) if c["cell_type"] == "markdown")
    links = GLOSSARY_LINK.findall(text)
    assert links, "no term linked to ../docs/glossary.md"
    unknown = sorted(set(links) - known)
    assert not unknown, f"no heading in docs/glossary.md for #{unknown}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_an_exercise_has_a_collapsed_solution_and_a_check(path):
    cells = _cells(path)
    tags = [c["metadata"].get("tags", []) for c in cells]
    starts = [i for i, t in enumerate(tags) if "exercise" in t]
    assert starts, "no code cell tagged exercise"
    for i in starts:
        assert i + 2 < len(cells), "the exercise is not followed by a solution and a check"
        exercise, solution, check = cells[i], cells[i + 1], cells[i + 2]
        # the last markdown cell before it states the exercise (a set-up cell may come between)
        before = next(c for c in reversed(cells[:i]) if c["cell_type"] == "markdown")
        assert re.search(r"^### Exercise: \S", _text(before), re.M), (
            "the last markdown cell before the exercise is not its '### Exercise: ...'")
        assert exercise["cell_type"] == solution["cell_type"] == check["cell_type"] == "code"
        assert "solution" in tags[i + 1] and "check" in tags[i + 2], tags[i:i + 3]
        assert solution["metadata"].get("jupyter", {}).get("source_hidden") is True, (
            "the solution is not collapsed (metadata jupyter.source_hidden)")
        assert _text(solution).splitlines()[0] == SOLUTION_LINE, _text(solution)[:80]
        assert re.search(r"^\s*assert\b|assert_close", _text(check), re.M), "the check asserts"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    stored = [c.get("id") for c in _cells(path) if c["cell_type"] == "code"
              and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not stored, f"cells stored with outputs: {stored} (jupyter nbconvert --clear-output)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_text_for_maintainers(path):
    for cell in _cells(path):
        found = [word for word in FORBIDDEN if word in _text(cell)]
        assert not found, f"cell {cell.get('id')} mentions {found}"
