"""The layers import one way: ``lib`` (the model) <- ``service`` (the web layer) <- the root's entry
points (``flaskapp.py``, ``preprocess_input_json.py``, ``gunicorn.conf.py``); ``bench`` and
``deploy`` sit on top. Checked on every module's syntax tree, with the checker itself shown to catch
a forbidden import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.live_server import PROJECT_DIR

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
    ("import numpy as np, service.errors", {"numpy", "service"}),
])
def test_the_checker_sees_every_form_of_import(source, found):
    assert imported_names(source) == found


def test_the_checker_catches_a_forbidden_import():
    sneaky = "from lib.schema import COLUMNS\n\ndef later():\n    from service.errors import error_payload\n"
    assert imported_names(sneaky) & FORBIDDEN["lib"] == {"service"}
    assert reads_environment("import os\nlevel = os.environ.get('LOG_LEVEL')\n")


def test_the_root_holds_only_the_entry_points():
    python_files = {path.name for path in PROJECT_DIR.glob("*.py")}
    assert python_files == {"flaskapp.py", "preprocess_input_json.py", "gunicorn.conf.py"}
    packages = {path.name for path in PROJECT_DIR.iterdir() if path.is_dir() and not path.name.startswith((".", "__"))}
    assert packages <= {"lib", "service", "bench", "deploy", "docs", "scripts", "tests", "wheels"}
