"""Optional dependencies: `import kdna` stays light, and a missing extra says what to install.

Absence is simulated in a fresh interpreter by ``sys.modules[name] = None``, which makes
``import name`` (and of any submodule) raise ImportError, as when the package is not installed.
"""

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from kdna._extras import require

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# the import names of every optional dependency, and of the core ones kdna imports lazily
OPTIONAL = ("plotly", "ipywidgets", "captum", "scipy", "onnx", "onnxscript", "onnxruntime",
            "peft", "pycocotools", "torchmetrics")
LAZY_CORE = ("tensorboard", "mlxtend", "sklearn", "skimage")
# import name -> distribution, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn", "skimage": "scikit-image"}


def _run(code: str, *, missing: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which the ``missing`` packages cannot be imported."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in missing)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _loaded_after(imports: str) -> list[str]:
    done = _run(f"""
        {imports}
        names = {OPTIONAL + LAZY_CORE!r}
        print(" ".join(n for n in names if n in sys.modules))
    """)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_import_kdna_and_its_core_loads_no_optional_dependency():
    loaded = _loaded_after("import kdna, kdna.nn, kdna.conversion, kdna.models, kdna.train, "
                           "kdna.data")
    assert loaded == []


def test_the_other_subpackages_load_their_extras_only_when_used():
    loaded = _loaded_after("import kdna.analysis, kdna.analysis.attribution, kdna.deploy, "
                           "kdna.dense, kdna.data.shapes, kdna.bench, kdna.cli, kdna.cli.demo")
    assert loaded == []


def _error(code: str, missing: str) -> str:
    done = _run(code, missing=(missing,))
    assert done.returncode != 0, f"ran although {missing} is missing:\n{done.stdout}"
    return done.stderr.strip().splitlines()[-1]


def test_kdna_viz_without_plotly_names_the_viz_extra():
    message = _error("import kdna.viz", "plotly")
    assert message == ("ImportError: kdna.viz needs plotly, which is not installed: "
                       "pip install 'kdna[viz]'")


def test_widgets_without_ipywidgets_name_the_viz_extra():
    message = _error("import kdna.viz.widgets", "ipywidgets")
    assert "kdna.viz.widgets needs ipywidgets" in message and "kdna[viz]" in message


def test_attribution_without_captum_names_the_analysis_extra():
    code = """
        import torch
        from torch import nn
        from kdna.analysis.attribution import attribute_prediction  # imports without captum
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 2))
        attribute_prediction(model, torch.randn(2, 3, 8, 8), method="saliency")
    """
    message = _error(code, "captum")
    assert "captum" in message and "kdna[analysis]" in message


def test_aligned_kernel_similarity_without_scipy_names_the_analysis_extra():
    code = """
        from torch import nn
        from kdna.analysis import kernel_similarity
        model = nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3))
        kernel_similarity(model)  # works without scipy
        kernel_similarity(model, align=True)
    """
    message = _error(code, "scipy")
    assert "needs scipy" in message and "kdna[analysis]" in message


def test_dense_metrics_without_torchmetrics_name_the_dense_extra():
    code = """
        import torch
        from torch import nn
        from kdna.dense import evaluate_segmentation
        batch = (torch.randn(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long))
        evaluate_segmentation(nn.Conv2d(3, 2, 1), [batch], 2)
    """
    message = _error(code, "torchmetrics")
    assert "evaluate_segmentation needs torchmetrics" in message and "kdna[dense]" in message


def test_detection_metrics_without_pycocotools_name_the_dense_extra():
    code = """
        from torch import nn
        from kdna.dense import evaluate_detection
        evaluate_detection(nn.Conv2d(3, 2, 1), [])
    """
    message = _error(code, "pycocotools")
    assert "evaluate_detection needs pycocotools" in message and "kdna[dense]" in message


def test_check_onnx_without_onnxruntime_names_the_export_extra():
    code = """
        import torch
        from torch import nn
        from kdna.deploy import check_onnx
        check_onnx(nn.Conv2d(3, 2, 1), "model.onnx", torch.randn(1, 3, 4, 4))
    """
    message = _error(code, "onnxruntime")
    assert "check_onnx needs onnxruntime" in message and "kdna[export]" in message


def test_export_onnx_without_onnxscript_names_the_export_extra(tmp_path):
    code = f"""
        import torch
        from torch import nn
        from kdna.deploy import export_onnx
        export_onnx(nn.Conv2d(3, 2, 1), {str(tmp_path / "model.onnx")!r},
                    torch.randn(1, 3, 4, 4))
    """
    message = _error(code, "onnxscript")
    assert "export_onnx needs onnxscript" in message and "kdna[export]" in message
    assert not any(tmp_path.iterdir())


def test_a_missing_core_dependency_says_to_install_it():
    message = _error("from kdna.data import load_data; load_data('faces')", "skimage")
    assert message == ("ImportError: load_data('faces') needs scikit-image, which is not "
                       "installed: pip install scikit-image (kdna depends on it)")


def test_require_returns_the_module_and_chains_the_original_error():
    import json

    assert require("json", "viz", "a feature") is json
    with pytest.raises(ImportError, match=r"^thing needs no_such_pkg_kdna, which is not "
                                          r"installed: pip install 'kdna\[viz\]'$") as caught:
        require("no_such_pkg_kdna.sub", "viz", "thing")
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_require_tells_a_broken_install_from_a_missing_one(tmp_path):
    (tmp_path / "broken_pkg_kdna.py").write_text("import no_such_dependency_kdna\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ImportError, match=r"which failed to import \(No module named "
                                              r"'no_such_dependency_kdna'\)"):
            require("broken_pkg_kdna", "export", "thing")
    finally:
        sys.path.remove(str(tmp_path))


def test_every_lazy_import_names_an_extra_that_declares_it():
    extras = {name: {Requirement(r).name.lower() for r in reqs}
              for name, reqs in PYPROJECT["optional-dependencies"].items()}
    core = {Requirement(r).name.lower() for r in PYPROJECT["dependencies"]}
    calls = [match for path in sorted((ROOT / "kdna").rglob("*.py"))
             for match in re.findall(r'require\(\s*"([\w.]+)",\s*(None|"\w+")',
                                     path.read_text())]
    assert len(calls) >= 10, calls
    for module, extra in calls:
        top = module.partition(".")[0]
        distribution = DISTRIBUTIONS.get(top, top)
        where = core if extra == "None" else extras[extra.strip('"')]
        assert distribution in where, f"require({module!r}, {extra}): {distribution} is not there"


def test_readme_names_every_extra():
    readme = (ROOT / "README.md").read_text()
    for extra in PYPROJECT["optional-dependencies"]:
        if extra != "dev":
            assert f"kdna[{extra}]" in readme, extra


def test_the_demo_without_plotly_skips_its_page_and_says_why(tmp_path):
    code = f"""
        from pathlib import Path
        from kdna.cli.demo import run_demo
        run_demo(Path({str(tmp_path)!r}), steps=2, image_size=32, progress=False)
        print((Path({str(tmp_path)!r}) / "report.md").read_text())
    """
    done = _run(code, missing=("plotly",))
    assert done.returncode == 0, done.stderr
    assert "routing.html was not written" in done.stdout and "kdna[viz]" in done.stdout
    assert (tmp_path / "report.md").exists() and not (tmp_path / "routing.html").exists()
