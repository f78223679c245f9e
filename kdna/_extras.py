"""Optional dependencies, imported when first used, with an error that says what to install.

kdna's core (the layer, conversion, models, training, the classification data sets and the
offline demo) installs with ``pip install kdna``; the rest comes with extras declared in
pyproject.toml: ``viz`` (plotly, ipywidgets), ``analysis`` (captum, scipy), ``export`` (onnx,
onnxscript, onnxruntime), ``dense`` (torchmetrics, pycocotools), ``peft``, ``lab`` and ``all``.
Every optional import goes through :func:`require`, so ``import kdna`` never loads them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]

# import name -> distribution name, where they differ
_PACKAGES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "PIL": "pillow"}


def require(module: str, extra: str | None, feature: str, *, package: str | None = None
            ) -> ModuleType:
    """Import and return ``module``; if it is missing, raise an ImportError naming the extra.

    Args:
        module: the dotted module to import, e.g. ``"plotly.graph_objects"``.
        extra: the kdna extra that installs it (``"viz"``, ``"export"``, ...), or ``None``
            for a core dependency (then the message says to install the package itself).
        feature: what needs it, as the user knows it (``"kdna.viz"``, ``"check_onnx"``).
        package: the distribution to name, when it differs from the top-level module
            (default: looked up for the usual cases, else the top-level module name).

    Raises:
        ImportError: chained from the original error, e.g. ``kdna.viz needs plotly, which is
            not installed: pip install 'kdna[viz]'``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.partition(".")[0]
        package = package or _PACKAGES.get(top, top)
        install = (f"pip install 'kdna[{extra}]'" if extra is not None
                   else f"pip install {package} (kdna depends on it)")
        name = getattr(error, "name", None) or ""
        missing = isinstance(error, ModuleNotFoundError) and (
            module == name or module.startswith(name + ".") or name.startswith(top + "."))
        state = "which is not installed" if missing else f"which failed to import ({error})"
        raise ImportError(f"{feature} needs {package}, {state}: {install}") from error
