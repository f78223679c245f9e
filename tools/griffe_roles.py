"""A griffe extension for the site's API reference: kdna's docstrings cross-reference with
Sphinx roles (``:class:`ParentKernel```), which Markdown does not know; they become code."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const):`~?([^`]+)`")

__all__ = ["SphinxRoles"]


class SphinxRoles(griffe.Extension):
    """Rewrites ``:role:`name``` as ```name``` in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
