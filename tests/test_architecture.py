"""The shape of the package: one layer per job, imports pointing down, no private names crossing
modules, no torchvision internals, explicit public names, and modules and functions kept small."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kdna"
sys.path.insert(0, str(ROOT / "tools"))
from code_size import oversized  # noqa: E402  (tools/, not kdna)

# The layers, lowest first: a module may import its own layer and the layers before it.
LAYERS = ("_checks", "_extras", "_files", "_tables", "nn", "conversion", "data", "models", "train",
          "finetune", "analysis", "viz", "deploy", "bench", "scratch", "dense", "cli")
# The private modules every layer may use: the bottom of the list.
SHARED_PRIVATE = tuple(f"kdna.{layer}" for layer in LAYERS if layer.startswith("_"))
SUBPACKAGES = ("nn", "conversion", "data", "models", "train", "finetune", "analysis", "viz",
               "bench", "scratch", "dense", "cli")
MODULES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` for every import in ``path``, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = _module_name(path).split(".")
                base = base[:len(base) - node.level + (path.name == "__init__.py")]
                module = ".".join([*base, module] if module else base)
            found.append((module, [alias.name for alias in node.names], node.lineno))
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "kdna" and len(parts) > 1 else None


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_no_private_name_is_imported_from_another_module():
    offences = []
    for path in MODULES:
        for module, names, line in _imports(path):
            private_module = any(part.startswith("_") and part not in ("__future__",)
                                 for part in module.split(".")[1:])
            if module.startswith("kdna") and private_module and module not in SHARED_PRIVATE:
                offences.append(f"{_where(path, line)} imports the private module {module}")
            for name in names:
                if name.startswith("_") and module != "__future__":
                    offences.append(f"{_where(path, line)} imports {module}.{name}")
    assert not offences, "\n".join(offences)


def test_no_torchvision_internals():
    offences = []
    for path in MODULES:
        for module, names, line in _imports(path):
            if module.startswith("torchvision") and any(
                    part.startswith("_") for part in module.split(".") + names):
                offences.append(f"{_where(path, line)}: {module} {names}")
        tree = ast.parse(path.read_text())
        aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   and (n.module or "").startswith("torchvision") for a in n.names}
        for node in ast.walk(tree):  # datasets.Flowers102._download_url_prefix and the like
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                root = node.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(root, ast.Name) and (root.id in aliases or root.id == "torchvision"):
                    offences.append(f"{_where(path, node.lineno)}: .{node.attr}")
    assert not offences, "\n".join(offences)


def test_imports_point_down_the_layers():
    offences = []
    for path in MODULES:
        own = _layer(_module_name(path))
        if own is None:  # kdna/__init__.py and __main__.py sit above everything
            continue
        for module, _, line in _imports(path):
            other = _layer(module)
            if other is not None and own in LAYERS and LAYERS.index(other) > LAYERS.index(own):
                offences.append(f"{_where(path, line)}: {own} imports {module} (a higher layer)")
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_names_its_public_api(name):
    package = importlib.import_module(f"kdna.{name}")
    assert isinstance(package.__all__, list) and package.__all__
    missing = [n for n in package.__all__ if not hasattr(package, n)]
    assert not missing, f"kdna.{name}.__all__ names {missing}, which it does not define"
    assert package.__doc__, f"kdna.{name} has no docstring"


def test_every_module_has_an_explicit_all():
    missing = [str(p.relative_to(ROOT)) for p in MODULES if p.name != "__main__.py"
               and "__all__" not in p.read_text()]
    assert not missing


def test_the_short_import_paths_people_use_keep_working():
    import kdna
    import kdna.bench
    import kdna.data
    import kdna.dense
    import kdna.train
    import kdna.viz

    assert callable(kdna.train.train_classifier) and callable(kdna.data.load_data)
    assert callable(kdna.bench.compare) and callable(kdna.bench.measure)
    assert callable(kdna.dense.faster_rcnn) and callable(kdna.dense.train_dense)
    assert callable(kdna.viz.routing_heatmap)
    assert callable(kdna.convert) and callable(kdna.fold)  # functions, not modules
    assert all(hasattr(kdna, n) for n in kdna.__all__)


def test_the_measuring_package_defines_no_layer():
    """kdna.bench measures; the layers it measures (KernelDNA's, CondConv, DY-Conv, ODConv)
    live in kdna.nn."""
    from torch import nn

    offences = []
    for path in sorted((PACKAGE / "bench").rglob("*.py")):
        module = importlib.import_module(_module_name(path))
        for name, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, nn.Module)
                    and (value.__module__ == module.__name__
                         or name in getattr(module, "__all__", ()))):
                offences.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offences, "kdna.bench defines or exports nn.Module layers:\n" + "\n".join(offences)


def test_modules_and_functions_stay_small():
    assert not oversized(PACKAGE), "\n".join(oversized(PACKAGE))


def test_the_architecture_map_names_every_module():
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = [str(p.relative_to(ROOT)) for p in MODULES
               if f"`{p.relative_to(ROOT)}`" not in text and p.name != "__main__.py"]
    assert not missing, f"docs/architecture.md does not describe {missing}"
