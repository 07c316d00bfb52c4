"""Reading and writing grids as power-grid-model JSON input datasets.

The file is power-grid-model's own serialisation format (version 1.0, ``type: "input"``), produced
by :func:`power_grid_model.utils.json_serialize`, so power-grid-model's
:func:`~power_grid_model.utils.json_deserialize` reads it as it is. OpenDSO adds what the format
does not model in the two places power-grid-model's deserialiser skips on purpose:

- **per element**, extra keys in the element's object ("extra info", as power-grid-model-io's
  ``PgmJsonConverter`` writes it; power-grid-model's deserialiser skips unknown keys of an
  element object "for additional user info"): ``name`` (the element's name in its source),
  ``kind`` (``cable``, ``pv``, ...) where the grid has one, and ``x``/``y`` for node coordinates;
- **per file**, a root key ``opendso`` (unknown root keys are skipped too) holding the grid's
  ``frequency_hz``, which the line capacitances depend on.

Elements are therefore always written as objects (``use_compact_list=False``), never as compact
lists, which cannot carry extra keys.

Reading accepts any power-grid-model JSON input dataset. An element without a ``name`` is named
by its id. Unknown components and attributes are errors that name the component, the element and
the field, except the extra-info keys above and those power-grid-model-io writes
(``id_reference``, ``pgm_input``, ``pp_input``); pass ``strict=False`` to accept any extra key.
The physics are not checked here (see the validation module).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from power_grid_model import DatasetType, power_grid_meta_data
from power_grid_model.errors import PowerGridError
from power_grid_model.utils import json_deserialize, json_serialize

from opendso.errors import GridSourceError, InputError
from opendso.grid.io.atomic import write_atomically
from opendso.grid.model import PGM_COMPONENTS, SENSOR_COMPONENTS, Grid

#: Root key holding OpenDSO's per-file data (power-grid-model skips unknown root keys).
ROOT_KEY = "opendso"

#: Extra-info keys OpenDSO writes into element objects.
OPENDSO_EXTRA_KEYS: tuple[str, ...] = ("name", "kind", "x", "y")

#: Extra-info keys power-grid-model-io's converters write; accepted and ignored.
PGM_IO_EXTRA_KEYS: tuple[str, ...] = ("id_reference", "pgm_input", "pp_input")

_POSITION = re.compile(r"Position of error:\s*(\S+)")


# -- writing -------------------------------------------------------------------------------------


def pgm_json_text(grid: Grid) -> str:
    """Return the grid as power-grid-model JSON text, names and coordinates as extra info."""
    dataset = grid.pgm_input(with_sensors=True)
    try:
        text = json_serialize(dataset, dataset_type=DatasetType.input, use_compact_list=False, indent=-1)
    except (PowerGridError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"grid {grid.name}: cannot serialise as power-grid-model JSON: {exc}") from exc
    root = json.loads(text)
    data: dict[str, list[dict[str, Any]]] = root["data"]
    for component, elements in data.items():
        extras = _extra_info(grid, component, len(elements))
        for key, values in extras.items():
            for element, value in zip(elements, values, strict=True):
                if value is not None:
                    element[key] = value
    root[ROOT_KEY] = {"frequency_hz": float(grid.frequency_hz)}
    return _dump(root)


def _extra_info(grid: Grid, component: str, n: int) -> dict[str, list[Any]]:
    """Per-element extra-info values of a component (None where there is nothing to write)."""
    out: dict[str, list[Any]] = {}
    names = grid.names.get(component)
    if names is not None and len(names) == n:
        out["name"] = [None if _missing(v) else str(v) for v in names]
    kinds = grid.extra.get(component, {}).get("kind")
    if kinds is not None and len(kinds) == n:
        out["kind"] = [None if _missing(v) else str(v) for v in kinds]
    if component == "node" and grid.node_xy.shape == (n, 2):
        xy = np.asarray(grid.node_xy, dtype=np.float64)
        finite = [bool(v) for v in np.all(np.isfinite(xy), axis=1, keepdims=False).ravel()]
        out["x"] = [float(v) if ok else None for v, ok in zip(xy[:, 0], finite, strict=True)]
        out["y"] = [float(v) if ok else None for v, ok in zip(xy[:, 1], finite, strict=True)]
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _dump(root: Mapping[str, Any]) -> str:
    """JSON text with one element per line, as power-grid-model writes it."""
    head = {k: v for k, v in root.items() if k != "data"}
    lines = ["{"]
    for key, value in head.items():
        lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},")
    lines.append('  "data": {')
    blocks = []
    for component, elements in root["data"].items():
        body = ",\n".join(f"      {json.dumps(e, ensure_ascii=False, allow_nan=False)}" for e in elements)
        blocks.append(f"    {json.dumps(component)}: [\n{body}\n    ]")
    lines.append(",\n".join(blocks))
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_pgm_json(grid: Grid, path: Path) -> None:
    """Write the grid's power-grid-model input dataset (sensors included) as power-grid-model JSON.

    Names, kinds and node coordinates travel as per-element extra info, the frequency under the
    root key ``opendso``. The file is written atomically. Raises
    :class:`~opendso.errors.InputError` when the grid cannot be serialised or the file cannot be
    written; an existing file is then left as it was.
    """
    text = pgm_json_text(grid)
    try:
        write_atomically(Path(path), text)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc


# -- reading -------------------------------------------------------------------------------------


def read_pgm_json(path: Path, source: str, *, strict: bool = True) -> Grid:
    """Return the grid stored in a power-grid-model JSON input file.

    ``source`` names the file in error messages (``pgm:<file>``). Names come from the elements'
    ``name`` extra info, else the id; node coordinates from ``x``/``y``. Links stay links (the
    switch table is empty) and sensors go to ``grid.sensors``. With ``strict`` (the default)
    an element key that is neither a power-grid-model attribute nor known extra info is an error.
    Raises :class:`~opendso.errors.GridSourceError` for a file that cannot be read, is not JSON,
    or is not a power-grid-model input dataset.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GridSourceError(source, f"cannot read file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
        root = json.loads(text)
    except UnicodeDecodeError as exc:
        raise GridSourceError(source, f"not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise GridSourceError(source, f"malformed JSON: {exc}") from None

    data = _check_root(root, source)
    attributes = root.get("attributes") or {}
    meta = power_grid_meta_data[DatasetType.input]
    allowed_extra = set(OPENDSO_EXTRA_KEYS) | set(PGM_IO_EXTRA_KEYS)
    extras: dict[str, dict[str, list[Any]]] = {}
    for component, elements in data.items():
        if component not in meta:
            raise GridSourceError(source, "unknown power-grid-model component", element=component)
        if component not in PGM_COMPONENTS and component not in SENSOR_COMPONENTS:
            raise GridSourceError(source, "component type not supported in OpenDSO grids", element=component)
        if not isinstance(elements, list):
            raise GridSourceError(source, "component data must be a list of elements", element=component)
        known = set(meta[component].dtype.names or ())
        listed = attributes.get(component, []) if isinstance(attributes, dict) else []
        if not isinstance(listed, list):
            raise GridSourceError(source, "attribute list must be a list", element=component, field="attributes")
        for name in listed:
            if name not in known:
                raise GridSourceError(source, "unknown attribute", element=component, field=str(name))
        extras[component] = _element_extras(
            source, component, elements, known, allowed_extra if strict else None, len(listed)
        )

    try:
        dataset = json_deserialize(text)
    except PowerGridError as exc:
        raise _located_error(source, str(exc), data) from None

    input_arrays: dict[str, np.ndarray] = {}
    sensors: dict[str, np.ndarray] = {}
    names: dict[str, np.ndarray] = {}
    extra: dict[str, dict[str, np.ndarray]] = {}
    node_xy = np.zeros((0, 2))
    for component, data_array in dataset.items():
        name = str(component)
        array = np.asarray(data_array)
        (sensors if name in SENSOR_COMPONENTS else input_arrays)[name] = array
        ex = extras.get(name, {})
        given = ex.get("name", [None] * array.size)
        ids = array["id"]
        names[name] = np.array(
            [str(n) if isinstance(n, str) else str(int(i)) for n, i in zip(given, ids, strict=True)], dtype=object
        )
        kinds = ex.get("kind")
        if kinds is not None and any(k is not None for k in kinds):
            extra[name] = {"kind": np.array([k if isinstance(k, str) else None for k in kinds], dtype=object)}
        if name == "node":
            node_xy = np.column_stack([_floats(ex.get("x"), array.size), _floats(ex.get("y"), array.size)])

    meta_root = root.get(ROOT_KEY)
    frequency = 50.0
    if isinstance(meta_root, dict) and "frequency_hz" in meta_root:
        value = meta_root["frequency_hz"]
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise GridSourceError(source, "frequency must be a positive number", element=ROOT_KEY, field="frequency_hz")
        frequency = float(value)
    return Grid(
        name=source,
        input=input_arrays,
        names=names,
        extra=extra,
        node_xy=node_xy if node_xy.shape[0] == input_arrays.get("node", np.zeros(0)).size else np.zeros((0, 2)),
        sensors=sensors,
        frequency_hz=frequency,
    )


def _check_root(root: Any, source: str) -> dict[str, Any]:
    """Return the ``data`` object of a power-grid-model input dataset, or raise a named error."""
    if not isinstance(root, dict):
        raise GridSourceError(source, "not a power-grid-model dataset (the JSON root is not an object)")
    for key in ("version", "type", "is_batch", "attributes", "data"):
        if key not in root:
            raise GridSourceError(source, f"not a power-grid-model dataset (no '{key}' key)", field=key)
    if root["type"] != "input":
        raise GridSourceError(source, f"dataset type is {root['type']!r}, expected 'input'", field="type")
    if root["is_batch"] is not False:
        raise GridSourceError(source, "a batch dataset is not a grid; expected is_batch false", field="is_batch")
    data = root["data"]
    if not isinstance(data, dict):
        raise GridSourceError(source, "'data' must be an object of components", field="data")
    return data


def _element_extras(
    source: str,
    component: str,
    elements: list[Any],
    known: set[str],
    allowed_extra: set[str] | None,
    n_listed: int,
) -> dict[str, list[Any]]:
    """Check each element's keys and collect OpenDSO's extra info (None where absent)."""
    collected: dict[str, list[Any]] = {key: [None] * len(elements) for key in OPENDSO_EXTRA_KEYS}
    for k, element in enumerate(elements):
        if isinstance(element, list):
            if len(element) != n_listed:
                raise GridSourceError(
                    source,
                    f"element has {len(element)} values but the attribute list has {n_listed}",
                    element=f"{component} #{k}",
                )
            continue
        if not isinstance(element, dict):
            raise GridSourceError(source, "an element must be an object or a list", element=f"{component} #{k}")
        for key, value in element.items():
            if key in known:
                continue
            if key in collected:
                collected[key][k] = value
                continue
            if allowed_extra is not None and key not in allowed_extra:
                raise GridSourceError(
                    source, "unknown attribute", element=_element_label(component, k, element), field=key
                )
    for key in ("x", "y"):
        for k, value in enumerate(collected[key]):
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
                raise GridSourceError(
                    source, "coordinate must be a number", element=_element_label(component, k, elements[k]), field=key
                )
    return {key: values for key, values in collected.items() if any(v is not None for v in values)}


def _element_label(component: str, index: int, element: Any) -> str:
    if isinstance(element, dict) and isinstance(element.get("id"), int):
        return f"{component} {element['id']}"
    return f"{component} #{index}"


def _floats(values: list[Any] | None, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _located_error(source: str, message: str, data: Mapping[str, Any]) -> GridSourceError:
    """Turn power-grid-model's deserialisation message into an error naming element and field."""
    text = " ".join(message.split())
    match = _POSITION.search(text)
    if match is None:
        return GridSourceError(source, f"not a valid power-grid-model dataset: {text}")
    parts = match.group(1).split("/")
    reason = text[: match.start()].strip()
    if len(parts) >= 2 and parts[0] == "data":
        component = parts[1]
        element: str | None = component
        fld: str | None = None
        if len(parts) >= 3 and parts[2].isdigit():
            index = int(parts[2])
            elements = data.get(component)
            item = elements[index] if isinstance(elements, list) and index < len(elements) else None
            element = _element_label(component, index, item)
        if len(parts) >= 4:
            fld = parts[3]
        return GridSourceError(source, reason or text, element=element, field=fld)
    return GridSourceError(source, reason or text, field="/".join(parts))
