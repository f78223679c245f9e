"""Every notebook teaches the same way (issue 17): a header box, "Try it" exercises whose knobs
exist, "Check your understanding" with collapsed answers, and the closing. Reads the JSON only;
nothing is executed."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
HEADINGS = ("What you will learn", "Prerequisites", "Time")
TRY_IT = "**Try it:**"
# A knob written in backticks: `NAME` (a variable) or `name=` (a keyword argument).
KNOB = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(=?)")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell: dict) -> str:
    return "".join(cell["source"])


def _markdown(path: Path) -> list[str]:
    return [_text(c) for c in _cells(path) if c["cell_type"] == "markdown"]


def _code(path: Path) -> str:
    return "\n".join(_text(c) for c in _cells(path) if c["cell_type"] == "code")


def _heading(name: str) -> re.Pattern:
    """``name`` as a heading: **bold**, <b>/<strong>/<hN> HTML, or a Markdown ``#`` heading."""
    return re.compile(rf"(\*\*\s*|<(?:b|strong|h\d)>\s*|^[>\s]*#+\s*){re.escape(name)}\b",
                      re.M | re.I)


def _index(texts: list[str], pattern: re.Pattern) -> int:
    return next((i for i, text in enumerate(texts) if pattern.search(text)), -1)


def knobs(text: str) -> list[tuple[str, bool]]:
    """(name, is_keyword) for every backticked `NAME` or `name=` in ``text``."""
    spans = re.findall(r"`([^`\n]+)`", text)
    return [(m[1], bool(m[2])) for m in map(KNOB.fullmatch, spans) if m]


def defines(code: str, name: str, keyword: bool) -> bool:
    pattern = rf"\b{re.escape(name)}\s*=(?!=)" if keyword else rf"\b{re.escape(name)}\b"
    return re.search(pattern, code) is not None


def test_notebooks_are_found():
    assert len(NOTEBOOKS) == 9, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_cell_ids_are_unique(path):
    ids = [c.get("id") for c in _cells(path)]
    assert all(i and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids), ids
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_header_box_says_what_you_learn_what_you_need_and_how_long(path):
    cells = _cells(path)
    first_code = next(i for i, c in enumerate(cells) if c["cell_type"] == "code")
    opening = [_text(c) for c in cells[:first_code] if c["cell_type"] == "markdown"]
    boxes = [t for t in opening if all(_heading(h).search(t) for h in HEADINGS)]
    assert boxes, (f"no header box with {HEADINGS} right after the title (before the set-up "
                   f"cell)")
    box = boxes[0]
    if 'class="alert' not in box:  # a Markdown blockquote: every heading is inside it
        for name in HEADINGS:
            line = box[:_heading(name).search(box).end()].rsplit("\n", 1)[-1]
            assert line.lstrip().startswith(">"), f"{name!r} is outside the blockquote"
    time = box[_heading("Time").search(box).end():]
    assert "CPU" in time and "GPU" in time, "the time is given for a CPU and for a GPU"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_try_it_exercises_name_knobs_that_exist(path):
    exercises = [t for t in _markdown(path) if t.lstrip().startswith(TRY_IT)]
    assert len(exercises) >= 2, f"{len(exercises)} markdown cells headed {TRY_IT}, need 2 or 3"
    code = _code(path)
    for text in exercises:
        head = text.strip().splitlines()[0]
        assert re.search(r"\bcells?\b", text), f"does not say which cell it changes: {head}"
        found = knobs(text)
        assert found, f"names no knob in backticks (`NAME` or `name=`): {head}"
        missing = [name + "=" * kw for name, kw in found if not defines(code, name, kw)]
        assert not missing, f"not in any code cell of {path.name}: {missing} ({head})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_check_your_understanding_has_collapsed_answers(path):
    cells = [t for t in _markdown(path) if _heading("Check your understanding").search(t)]
    assert cells, "no 'Check your understanding' cell"
    text = cells[0]
    match = re.search(r"<details>\s*<summary>\s*Answers\s*</summary>(.*?)</details>", text, re.S)
    assert match, "answers are not in a <details><summary>Answers</summary> block"
    questions = text[_heading("Check your understanding").search(text).end():match.start()]
    asked = len(re.findall(r"^\s*\d+\.\s", questions, re.M))
    answered = len(re.findall(r"^\s*\d+\.\s", match[1], re.M))
    assert asked >= 3, f"{asked} numbered questions, need 3"
    assert answered >= asked, f"{asked} questions, {answered} numbered answers"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_closing_has_results_recap_references_and_next(path):
    cells = _cells(path)
    texts = [_text(c) if c["cell_type"] == "markdown" else "" for c in cells]
    results = _index(texts, _heading("Results"))
    recap = _index(texts, _heading("Recap"))
    references = _index(texts, _heading("References"))
    following = [t for t in texts if "**Next:**" in t]
    assert results >= 0, "no 'Results' cell"
    table = "".join(_text(c) for c in cells[results:results + 2])
    assert re.search(r"\|\s*:?-{3,}", table), "the Results cell is not followed by a table"
    assert recap > results, "no 'Recap' after the results"
    assert references >= recap, "no 'References' in or after the recap"
    assert following, "no **Next:** line"
    line = following[-1].split("**Next:**", 1)[1].split("\n", 1)[0]
    position = NOTEBOOKS.index(path)
    if position + 1 < len(NOTEBOOKS):
        following_name = NOTEBOOKS[position + 1].name[:2]
        assert following_name in line, f"Next should name notebook {following_name}: {line}"
    else:
        assert re.search(r"none|README", line, re.I), f"the last notebook's Next: {line}"


def test_knob_extraction():
    text = "set `EPOCHS` to 3, `gate_reduction=` to 8, not `kdna.convert(model)` or `x static`"
    assert knobs(text) == [("EPOCHS", False), ("gate_reduction", True)]
    code = "EPOCHS = 2\nchild = parent.child(gate_reduction=4)\nif a == b: pass"
    assert defines(code, "EPOCHS", False) and defines(code, "gate_reduction", True)
    assert not defines(code, "EPOCH", False) and not defines(code, "a", True)
