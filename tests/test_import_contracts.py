"""The import-linter contracts of ``pyproject.toml`` catch what they are meant to catch.

``make lint`` runs ``lint-imports`` on the real package; these tests run the same contracts, read
from ``pyproject.toml``, on a small synthetic import graph with one module per layer, so a
misspelt layer, an optional layer that hides a real one or a contract that can never break shows
up here: each hostile import below must break its contract, and the clean graph must keep them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter.api import read_configuration
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract
from importlinter.domain.contract import Contract

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

_CONTRACT_TYPES: dict[str, type[Contract]] = {
    "layers": LayersContract,
    "forbidden": ForbiddenContract,
    "acyclic_siblings": AcyclicSiblingsContract,
}

#: One module in each top-level package or module of OpenDSO's layers.
_MODULES = {
    "cli": "opendso.cli.main",
    "runtime": "opendso.runtime",
    "demo": "opendso.demo",
    "service": "opendso.service.app",
    "markets": "opendso.markets.model",
    "planning": "opendso.planning.model",
    "der": "opendso.der.registry",
    "operations": "opendso.operations.cycle",
    "telemetry": "opendso.telemetry.points",
    "calc": "opendso.calc.estimation",
    "grid": "opendso.grid.model",
    "store": "opendso.store.historian",
    "settings": "opendso.settings",
    "measurement": "opendso.measurement",
    "timeutil": "opendso.timeutil",
    "quality": "opendso.quality",
    "text": "opendso.text",
    "errors": "opendso.errors",
}

#: Imports the architecture allows: each layer on the one below, the store from operations up.
_ALLOWED = [
    ("cli", "runtime"),
    ("runtime", "demo"),
    ("runtime", "service"),
    ("service", "markets"),
    ("markets", "planning"),
    ("markets", "der"),
    ("markets", "operations"),
    ("service", "planning"),
    ("planning", "der"),
    ("planning", "store"),
    ("planning", "calc"),
    ("service", "der"),
    ("service", "operations"),
    ("der", "operations"),
    ("der", "store"),
    ("der", "grid"),
    ("service", "store"),
    ("operations", "telemetry"),
    ("operations", "store"),
    ("telemetry", "calc"),
    ("calc", "grid"),
    ("grid", "settings"),
    ("store", "settings"),
    ("store", "measurement"),
    ("measurement", "timeutil"),
    ("measurement", "quality"),
    ("timeutil", "errors"),
    ("quality", "errors"),
    ("text", "errors"),
    ("operations", "text"),
    ("service", "text"),
]


def _graph(extra: Sequence[tuple[str, str]] = ()) -> grimp.ImportGraph:
    graph = grimp.ImportGraph()
    for module in ["opendso", *_MODULES.values()]:
        parent = module.rpartition(".")[0]
        if parent and parent != "opendso" and parent not in graph.modules:
            graph.add_module(parent)
        graph.add_module(module)
    for importer, imported in [*_ALLOWED, *extra]:
        source = _MODULES.get(importer, importer)
        target = _MODULES.get(imported, imported)
        for module in (source, target):
            if module not in graph.modules:
                graph.add_module(module)
        graph.add_import(importer=source, imported=target, line_number=1, line_contents=f"import {target}")
    return graph


@pytest.fixture(scope="module")
def contracts() -> dict[str, Contract]:
    config = read_configuration(str(PYPROJECT))
    session: dict[str, Any] = config["session_options"]
    found: dict[str, Contract] = {}
    for options in config["contracts_options"]:
        cls = _CONTRACT_TYPES[options["type"]]
        found[options["id"]] = cls(name=options["name"], session_options=session, contract_options=options)
    return found


def test_the_contracts_are_the_ones_the_architecture_names(contracts: dict[str, Contract]) -> None:
    assert set(contracts) == {"layers", "store-beside", "acyclic"}


def test_the_allowed_imports_keep_every_contract(contracts: dict[str, Contract]) -> None:
    for name, contract in contracts.items():
        assert contract.check(_graph(), verbose=False).kept, name


@pytest.mark.parametrize(
    ("importer", "imported", "contract"),
    [
        ("grid", "calc", "layers"),  # the chain runs one way
        ("calc", "telemetry", "layers"),
        ("operations", "service", "layers"),
        ("service", "runtime", "layers"),
        ("runtime", "cli", "layers"),
        ("service", "demo", "layers"),  # the service must not depend on the demo's content
        ("der", "service", "layers"),  # the registry does not know the web service
        ("operations", "der", "layers"),
        ("der", "planning", "layers"),  # the registry and ANM do not depend on forecasts
        ("planning", "service", "layers"),
        ("planning", "markets", "layers"),  # forecasts do not depend on what the markets buy
        ("der", "markets", "layers"),
        ("markets", "service", "layers"),
        ("grid", "store", "layers"),  # grid and store are independent siblings
        ("store", "grid", "layers"),
        ("store", "operations", "layers"),
        ("errors", "quality", "layers"),  # errors imports nothing of OpenDSO
        ("quality", "measurement", "layers"),
        ("text", "quality", "layers"),  # quality and text are independent siblings
        ("settings", "grid", "layers"),
        ("telemetry", "store", "store-beside"),  # calc and telemetry stay off the store
        ("calc", "store", "store-beside"),
        ("opendso.telemetry.points", "opendso.telemetry.base", "acyclic"),  # with base -> points below
    ],
)
def test_a_hostile_import_breaks_its_contract(
    contracts: dict[str, Contract], importer: str, imported: str, contract: str
) -> None:
    extra = [(importer, imported)]
    if contract == "acyclic":
        extra.append((imported, importer))
    assert not contracts[contract].check(_graph(extra), verbose=False).kept


def test_a_top_level_module_outside_every_layer_breaks_the_layers() -> None:
    """The layers are exhaustive: a new top-level module must be given its place."""
    config = read_configuration(str(PYPROJECT))
    options = next(o for o in config["contracts_options"] if o["id"] == "layers")
    contract = LayersContract(name=options["name"], session_options=config["session_options"], contract_options=options)
    graph = _graph()
    graph.add_module("opendso.newcomer")
    check = contract.check(graph, verbose=False)
    assert not check.kept
    assert check.metadata["undeclared_modules"] == {"opendso.newcomer"}
