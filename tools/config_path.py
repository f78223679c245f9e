"""Follow a conversion config from ``kdna.convert`` to the modules it builds.

Usage: python tools/config_path.py

Converts EfficientNet-Lite0 (random weights, offline) twice, so that every setting is used:
sharing with a new parent and a residual (``parent_init="lsq", residual_rank=2``), and adapters
in place. For each it prints how often ``resolve_config`` runs and the config object's path
(every kdna function called with a ``ConvertConfig``: where the settings are read); then, over
both, every call between kdna functions (module forwards and what runs inside them left out),
the files visited, the moves between files, and the calls the apply step makes into the other
conversion modules (reading the plan, or asking the planning side again).
"""

from __future__ import annotations

import collections
import itertools
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import kdna  # noqa: E402  (this checkout's kdna, not an installed one)

PACKAGE = os.path.join(ROOT, "kdna")
SKIP = {"forward", "hook", "record", "__repr__", "__str__", "__hash__", "__eq__"}
APPLY = {"apply_plan", "_share", "_adopt", "_make_child", "_new_parent", "_adapt_in_place",
         "_check_fits"}


def _where(code) -> tuple[str, str]:
    return os.path.relpath(code.co_filename, ROOT), code.co_name


def _converted(config, profile) -> None:
    model = kdna.create_model("efficientnet_lite0", kernel_dna=False)
    sys.setprofile(profile)
    try:
        kdna.convert(model, config, example_inputs=torch.zeros(1, 3, 224, 224))
    finally:
        sys.setprofile(None)


def calls(config) -> tuple[list[tuple], collections.Counter]:
    """Every (caller, callee) pair of kdna functions outside forward passes, and call counts."""
    edges, counts, stack = [], collections.Counter(), []

    def profile(frame, event, arg):
        code = frame.f_code
        inside = code.co_filename.startswith(PACKAGE)
        if event == "call":
            in_forward = any(s is None for s in stack)
            if not inside or code.co_name.startswith("<") or code.co_name in SKIP or in_forward:
                stack.append(None if (inside and code.co_name in SKIP) or in_forward else "out")
                return
            me = _where(code)
            counts[me] += 1
            caller = next((s for s in reversed(stack) if s not in (None, "out")), None)
            if caller is not None:
                edges.append((caller, me))
            stack.append(me)
        elif event == "return" and stack:
            stack.pop()

    _converted(config, profile)
    return edges, counts


def config_path(config) -> list[tuple[str, str]]:
    """The kdna functions called with a ``ConvertConfig`` argument, in first-call order."""
    seen = []

    def profile(frame, event, arg):
        code = frame.f_code
        if event != "call" or not code.co_filename.startswith(PACKAGE) or code.co_name in (
                "__post_init__", "__eq__", "__repr__", "__hash__"):
            return
        args = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        if any(isinstance(frame.f_locals.get(a), kdna.ConvertConfig) for a in args):
            if _where(code) not in seen:
                seen.append(_where(code))

    _converted(config, profile)
    return seen


def main() -> None:
    edges = []
    for config in (kdna.ConvertConfig.pretrained(parent_init="lsq", residual_rank=2, fit_steps=1),
                   kdna.ConvertConfig.adapters()):
        found, counts = calls(config)
        edges += found
        path = config_path(config)
        files = [f for f, _ in path]
        moves = sum(a != b for a, b in itertools.pairwise(files))
        print(f"{'sharing' if config.share else 'adapters in place'}: resolve_config runs "
              f"{counts[('kdna/conversion/config.py', 'resolve_config')]} time(s); the config "
              f"reaches {len(path)} functions in {len(set(files))} files ({moves} moves): "
              + " -> ".join(f"{os.path.basename(f)}:{name}" for f, name in path))
    unique = list(dict.fromkeys(edges))
    moves = [(a, b) for a, b in unique if a[0] != b[0]]
    files = sorted({f for a, b in unique for f, _ in (a, b)})
    print(f"\nall calls: {len(files)} files, {len(moves)} distinct moves between files")
    back = sorted({f"{os.path.basename(b[0])}:{b[1]}" for a, b in unique
                   if a[0] == "kdna/conversion/convert.py" and a[1] in APPLY
                   and b[0].startswith("kdna/conversion/") and b[0] != a[0]})
    print("apply's calls into other conversion modules:", ", ".join(back))


if __name__ == "__main__":
    main()
