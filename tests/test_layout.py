"""The layers import one way: ``lib`` (the model) <- ``service`` (the web layer) <- the root's entry
points (``flaskapp.py``, ``preprocess_input_json.py``, ``gunicorn.conf.py``); ``bench`` and
``deploy`` sit on top. Inside ``lib`` and ``service`` the subpackages are layers too (``LAYERS``).
Checked on every module's syntax tree, with the checker itself shown to catch a forbidden import;
and modules and functions stay short enough to read."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.live_server import PROJECT_DIR, without_service_settings

#: The root's entry points: its only Python files, held to the same lengths as the packages' modules.
ROOT_FILES = ("flaskapp.py", "gunicorn.conf.py", "preprocess_input_json.py")
ROOT_MODULES = {"flaskapp", "preprocess_input_json"}
WEB_FRAMEWORKS = {"flask", "werkzeug", "gunicorn", "flask_swagger_ui"}
ABOVE_SERVICE = ROOT_MODULES | {"bench", "deploy", "tests"}
#: package -> top-level names its modules must not import.
FORBIDDEN = {
    "lib": WEB_FRAMEWORKS | ABOVE_SERVICE | {"service"},
    "service": ABOVE_SERVICE,
}


def imported_names(source: str) -> set[str]:
    """Top-level names of every module that ``source`` imports, at any depth of the code."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def reads_environment(source: str) -> bool:
    """Whether ``source`` touches ``os.environ`` or calls ``os.getenv``."""
    return any(isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}
               for node in ast.walk(ast.parse(source)))


def modules_of(package: str) -> list[Path]:
    return sorted((PROJECT_DIR / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_downwards(package):
    offences = {
        str(path.relative_to(PROJECT_DIR)): sorted(imported_names(path.read_text()) & FORBIDDEN[package])
        for path in modules_of(package)
    }
    assert modules_of(package), f"{package}/ has no modules"
    assert {path: names for path, names in offences.items() if names} == {}


def test_lib_reads_no_environment():
    assert [str(p.relative_to(PROJECT_DIR)) for p in modules_of("lib") if reads_environment(p.read_text())] == []


@pytest.mark.parametrize(("source", "found"), [
    ("import flask", {"flask"}),
    ("from werkzeug.exceptions import NotFound", {"werkzeug"}),
    ("def f():\n    from flaskapp import create_app\n", {"flaskapp"}),
    ("from . import sibling", set()),
    ("import numpy as np, service.http.errors", {"numpy", "service"}),
])
def test_the_checker_sees_every_form_of_import(source, found):
    assert imported_names(source) == found


def test_the_checker_catches_a_forbidden_import():
    sneaky = "from lib.core.schema import COLUMNS\n\ndef later():\n    from service.http.errors import error_payload\n"
    assert imported_names(sneaky) & FORBIDDEN["lib"] == {"service"}
    assert reads_environment("import os\nlevel = os.environ.get('LOG_LEVEL')\n")


def test_the_root_holds_only_the_entry_points():
    python_files = {path.name for path in PROJECT_DIR.glob("*.py")}
    assert python_files == set(ROOT_FILES)
    packages = {path.name for path in PROJECT_DIR.iterdir() if path.is_dir() and not path.name.startswith((".", "__"))}
    assert packages <= {"lib", "service", "bench", "deploy", "docs", "scripts", "tests", "wheels"}


def pinned_names(path) -> set[str]:
    """The distribution names pinned in a requirements file (its own lines, not those it includes)."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {line.split("==")[0].lower().replace("_", "-") for line in lines if line and not line.startswith("-")}


def test_serving_loads_no_training_only_package(model_dir):
    # The image holds only requirements.txt: the app and lib.store.cli must run without the rest.
    runtime = pinned_names(PROJECT_DIR / "requirements.txt")
    training_only = pinned_names(PROJECT_DIR / "requirements-train.txt") - runtime
    assert "matplotlib" in training_only
    code = ("import json, sys\n"
            "from importlib.metadata import packages_distributions\n"
            "import flaskapp, lib.store.cli\n"
            "flaskapp.create_app({'model_dir': sys.argv[1], 'access_log': False})\n"
            "owners = packages_distributions()\n"
            "loaded = {d.lower() for m in list(sys.modules) for d in owners.get(m.split('.')[0], [])}\n"
            "print(json.dumps(sorted(loaded)))")
    done = subprocess.run([sys.executable, "-c", code, str(model_dir)], cwd=PROJECT_DIR, capture_output=True,
                          text=True, timeout=120, env=without_service_settings(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "numpy" in loaded and loaded & training_only == set()


#: The subpackages of each package, lowest first. A module imports from its own subpackage and from
#: those of a lower rank, never from a higher one nor from another subpackage of its own rank.
LAYERS = {
    "lib": [("core",), ("codecs",), ("store",), ("training", "batch"), ("spark",)],
    "service": [("seams",), ("ops",), ("scoring",), ("http",), ("worker",)],
}


def layer_of(package: str, module: str) -> tuple[int, str] | None:
    """The rank and name of the subpackage of ``package`` that dotted ``module`` lies in."""
    parts = module.split(".")
    if parts[0] != package or len(parts) < 2:
        return None
    for rank, names in enumerate(LAYERS[package]):
        if parts[1] in names:
            return rank, parts[1]
    return None


def imported_modules(source: str) -> set[str]:
    """Every dotted module ``source`` imports (absolute imports), at any depth of the code."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def layer_offences(package: str, path: Path, source: str) -> list[str]:
    own = layer_of(package, ".".join(path.relative_to(PROJECT_DIR).with_suffix("").parts))
    if own is None:
        return []
    offences = []
    for module in sorted(imported_modules(source)):
        target = layer_of(package, module)
        if target is not None and target[1] != own[1] and target[0] >= own[0]:
            offences.append(f"{module} ({target[1]}, from {own[1]})")
    return offences


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_subpackages_import_only_downwards(package):
    subpackages = {name for names in LAYERS[package] for name in names}
    found = {path.name for path in (PROJECT_DIR / package).iterdir() if (path / "__init__.py").exists()}
    assert found <= subpackages | {"codecs", "figures"}, f"{package}/ has a subpackage the layers do not place"
    loose = sorted(p.name for p in (PROJECT_DIR / package).glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"{package}/ holds modules outside its subpackages: {loose}"
    offences = {str(path.relative_to(PROJECT_DIR)): layer_offences(package, path, path.read_text())
                for path in modules_of(package)}
    assert {path: found for path, found in offences.items() if found} == {}


def test_the_layer_checker_catches_an_upward_import():
    scorer = PROJECT_DIR / "lib" / "core" / "scorer.py"
    assert layer_offences("lib", scorer, "from lib.store.versions import ModelStore\n") \
        == ["lib.store.versions (store, from core)"]
    assert layer_offences("lib", scorer, "from lib.core.schema import COLUMNS\n") == []
    train = PROJECT_DIR / "lib" / "training" / "train.py"
    assert layer_offences("lib", train, "def later():\n    import lib.batch.command\n") \
        == ["lib.batch.command (batch, from training)"]
    endpoint = PROJECT_DIR / "service" / "http" / "endpoint.py"
    assert layer_offences("service", endpoint, "from service.worker.drain import Drain\n") \
        == ["service.worker.drain (worker, from http)"]


#: Longest module and function, in lines; a longer module says why in its docstring ("kept whole").
MODULE_LINES, FUNCTION_LINES = 300, 80


def test_modules_and_functions_stay_short():
    paths = [*modules_of("lib"), *modules_of("service"), *(PROJECT_DIR / name for name in ROOT_FILES)]
    long_modules, long_functions = [], []
    for path in paths:
        source = path.read_text()
        tree = ast.parse(source)
        name = str(path.relative_to(PROJECT_DIR))
        if source.count("\n") > MODULE_LINES and "kept whole" not in (ast.get_docstring(tree) or ""):
            long_modules.append(name)
        long_functions += [f"{name}:{node.name}" for node in ast.walk(tree)
                           if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                           and node.end_lineno - node.lineno + 1 > FUNCTION_LINES]
    assert (long_modules, long_functions) == ([], [])
