"""The exception tree: every error OpenDSO raises on purpose lives in ``opendso.errors`` under one root.

The test imports every module of the package, collects every exception class defined in it,
and checks that each one is defined in :mod:`opendso.errors`, derives from
:class:`~opendso.errors.OpenDSOError`, and appears in the tree drawn in that module's docstring
(so the picture a reader sees is the tree the code has).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import opendso
from opendso import errors
from opendso.errors import InputError, OpenDSOError


def _all_modules() -> list[str]:
    names = ["opendso"]
    for info in pkgutil.walk_packages(opendso.__path__, prefix="opendso."):
        if ".migrations." in info.name or info.name.endswith("__main__"):
            continue  # Alembic's environment runs only inside a migration; __main__ runs the command
        names.append(info.name)
    return names


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _all_modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("opendso"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_exception_lives_in_errors_under_one_root() -> None:
    classes = _exception_classes()
    assert len(classes) >= 18  # the tree the issue counted, at least
    misplaced = sorted(q for q, c in classes.items() if c.__module__ != "opendso.errors")
    assert misplaced == [], f"exception classes outside opendso.errors: {misplaced}"
    unrooted = sorted(q for q, c in classes.items() if not issubclass(c, OpenDSOError))
    assert unrooted == [], f"exception classes not derived from OpenDSOError: {unrooted}"


def test_the_docstring_draws_the_tree_the_code_has() -> None:
    doc = errors.__doc__ or ""
    drawn = {m.group(1): len(m.group(0)) - len(m.group(1)) for m in re.finditer(r"^[\s│├└─]*(\w+Error)\b", doc, re.M)}
    classes = {c.__name__: c for c in _exception_classes().values()}
    assert set(drawn) == set(classes), (
        f"drawn but missing: {set(drawn) - set(classes)}; missing from the drawing: {set(classes) - set(drawn)}"
    )
    # each class is drawn deeper than its parent
    for name, cls in classes.items():
        parent = cls.__mro__[1]
        if parent.__name__ in drawn:
            assert drawn[name] > drawn[parent.__name__], f"{name} is not drawn under {parent.__name__}"


@pytest.mark.parametrize(
    "cls", [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, OpenDSOError)]
)
def test_exit_codes(cls: type[OpenDSOError]) -> None:
    # bad input exits 2 on the command line, everything else 1
    assert cls.exit_code == (2 if issubclass(cls, InputError) else 1)
