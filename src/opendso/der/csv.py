"""The DER registry CSV: one row per asset, with its connection request when it has one.

Columns (a header row names them; order free; ``*`` required)::

    asset_id*            id of the asset (letters, digits, - _ .; at most 64)
    name*                the asset's name
    kind*                pv | wind | battery | ev_hub | heat_pumps | flexible_load
    node*                connection point: the name of a node of the grid
    owner*               owner of the asset
    aggregator           aggregator that operates it (empty: none)
    export_kw*           export capacity, kW (>= 0)
    import_kw*           import capacity, kW (>= 0)
    storage_kwh          storage capacity, kWh (battery: required; ev_hub: optional; else 0)
    control_protocol     modbus | iec104 | mqtt | openadr | none (default none)
    control_address      the point or address on that protocol (e.g. 10.0.0.7:502/unit1/40100)
    agreement            firm | flexible (default firm)
    principle            lifo | pro_rata | technical_best (flexible only)
    curtailment_cap_pct  most curtailment allowed, % of annual energy (flexible only)
    export_limit_kw      export limit when curtailed or out of contact, kW (flexible only)
    request_id           id of the connection request (empty: an existing asset without one)
    received_at          when the DSO received the request, ISO 8601 with a zone (with request_id)
    status               received | studied | offered | accepted | connected | withdrawn | rejected
                         (default received)

:func:`read_der_csv` reads the whole file and checks every row (against the grid's node names
and the ids already stored, when given) before anything is stored: every problem is named in one
:class:`~opendso.errors.DerFileError` with the file, the data row (1-based) and the field.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from opendso.der.model import (
    AccessPrinciple,
    Agreement,
    AgreementKind,
    AssetKind,
    ConnectionRequest,
    Control,
    ControlProtocol,
    DerAsset,
    RequestStatus,
    Transition,
)
from opendso.errors import DerFileError, InputError
from opendso.timeutil import parse_time

__all__ = ["COLUMNS", "MAX_BYTES", "REQUIRED", "DerTable", "Problem", "csv_rows", "read_der_csv"]

#: Every column the file may have, in the documented order.
COLUMNS = (
    "asset_id",
    "name",
    "kind",
    "node",
    "owner",
    "aggregator",
    "export_kw",
    "import_kw",
    "storage_kwh",
    "control_protocol",
    "control_address",
    "agreement",
    "principle",
    "curtailment_cap_pct",
    "export_limit_kw",
    "request_id",
    "received_at",
    "status",
)
#: The columns every file must have.
REQUIRED = ("asset_id", "name", "kind", "node", "owner", "export_kw", "import_kw")
#: The largest file accepted (bytes).
MAX_BYTES = 20_000_000

# which column a model check's message is about, by the message's first words
_FIELD_OF_MESSAGE = {
    "asset id": "asset_id",
    "request id": "request_id",
    "capacity": "export_kw",
    "export limit": "export_limit_kw",
    "curtailment cap": "curtailment_cap_pct",
    "control address": "control_address",
    "control": "control_address",
    "received_at": "received_at",
}


@dataclass(frozen=True, slots=True)
class DerTable:
    """What a registry CSV holds: its assets and its connection requests."""

    assets: tuple[DerAsset, ...]
    requests: tuple[ConnectionRequest, ...]


Problem = tuple[int | None, str | None, str]


def csv_rows(
    path: Path,
    *,
    columns: Sequence[str],
    required: Sequence[str],
    error: Callable[[Path, list[Problem]], InputError],
    max_bytes: int = MAX_BYTES,
) -> tuple[list[tuple[int, dict[str, str]]], list[Problem]]:
    """The data rows of a CSV file with a header row: (1-based row number, stripped cells by column), problems.

    The file must be UTF-8 (a BOM is allowed), at most ``max_bytes``, with a header naming only
    ``columns`` (each once) and every one of ``required``; otherwise ``error(path, problems)`` is
    raised at once. Rows with more values than columns, or malformed CSV, are left out and named
    in the returned problems, to which the caller adds its own before raising.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(path, [(None, None, f"cannot be read ({exc.strerror or exc})")]) from None
    if len(raw) > max_bytes:
        raise error(path, [(None, None, f"is larger than {max_bytes} bytes")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(path, [(None, None, f"is not UTF-8 text (byte {exc.start})")]) from None
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise error(path, [(0, None, f"malformed CSV ({exc})")]) from None
    problems: list[Problem] = []
    if not header:
        raise error(path, [(None, None, "is empty: a header row is required")])
    unknown = [h for h in header if h not in columns]
    problems += [(0, h, f"unknown column (known: {', '.join(columns)})") for h in unknown]
    problems += [(0, c, "required column is missing") for c in required if c not in header]
    if len(set(header)) != len(header):
        problems.append((0, None, "a column is named twice"))
    if problems:
        raise error(path, problems)
    reader.fieldnames = header
    rows: list[tuple[int, dict[str, str]]] = []
    row_number = 0
    try:
        for row_number, row in enumerate(reader, start=1):
            if None in row:
                problems.append((row_number, None, "more values than columns"))
                continue
            rows.append((row_number, {k: (v or "").strip() for k, v in row.items()}))
    except csv.Error as exc:
        problems.append((row_number + 1, None, f"malformed CSV ({exc})"))
    return rows, problems


def read_der_csv(
    path: Path | str,
    *,
    nodes: Collection[str] | None = None,
    stored_assets: Collection[str] = (),
    stored_requests: Collection[str] = (),
    actor: str = "import",
) -> DerTable:
    """Read and check a registry CSV; every problem in one :class:`DerFileError` (file, row, field).

    ``nodes`` are the grid's node names (None: not checked); ``stored_assets`` and
    ``stored_requests`` the ids already in the registry (an import adds, it never overwrites).
    """
    path = Path(path)
    rows, problems = csv_rows(path, columns=COLUMNS, required=REQUIRED, error=DerFileError, max_bytes=MAX_BYTES)
    assets: list[DerAsset] = []
    requests: list[ConnectionRequest] = []
    seen_assets: set[str] = set()
    seen_requests: set[str] = set()
    for row_number, cells in rows:
        asset, request = _row(cells, row_number, problems, nodes, actor)
        if asset is not None:
            if asset.id in seen_assets:
                problems.append((row_number, "asset_id", f"asset {asset.id} is in the file twice"))
            elif asset.id in stored_assets:
                problems.append((row_number, "asset_id", f"asset {asset.id} is in the registry already"))
            seen_assets.add(asset.id)
            assets.append(asset)
        if request is not None:
            if request.id in seen_requests:
                problems.append((row_number, "request_id", f"request {request.id} is in the file twice"))
            elif request.id in stored_requests:
                problems.append((row_number, "request_id", f"request {request.id} is in the registry already"))
            seen_requests.add(request.id)
            requests.append(request)
    if not problems and not assets:
        problems.append((None, None, "has no data rows"))
    if problems:
        raise DerFileError(path, problems)
    return DerTable(tuple(assets), tuple(requests))


def _row(
    cells: dict[str, str],
    n: int,
    problems: list[tuple[int | None, str | None, str]],
    nodes: Collection[str] | None,
    actor: str,
) -> tuple[DerAsset | None, ConnectionRequest | None]:
    before = len(problems)

    def number(column: str, default: float | None) -> float | None:
        text = cells.get(column, "")
        if not text:
            if default is None and column in REQUIRED:
                problems.append((n, column, "is empty"))
            return default
        try:
            return float(text)
        except ValueError:
            problems.append((n, column, f"{text!r} is not a number"))
            return None

    def choice[E: StrEnum](column: str, cls: type[E], default: E | None) -> E | None:
        text = cells.get(column, "")
        if not text:
            if default is None and column in REQUIRED:
                problems.append((n, column, "is empty"))
            return default
        try:
            return cls(text.lower())
        except ValueError:
            problems.append((n, column, f"{text!r} is not one of {', '.join(m.value for m in cls)}"))
            return None

    for column in ("asset_id", "name", "node", "owner"):
        if not cells.get(column):
            problems.append((n, column, "is empty"))
    kind = choice("kind", AssetKind, None)
    export_kw = number("export_kw", None)
    import_kw = number("import_kw", None)
    storage = number("storage_kwh", 0.0)
    protocol = choice("control_protocol", ControlProtocol, ControlProtocol.NONE)
    agreement_kind = choice("agreement", AgreementKind, AgreementKind.FIRM)
    principle = choice("principle", AccessPrinciple, None) if cells.get("principle") else None
    cap = number("curtailment_cap_pct", None) if cells.get("curtailment_cap_pct") else None
    limit = number("export_limit_kw", None) if cells.get("export_limit_kw") else None
    node = cells.get("node", "")
    if node and nodes is not None and node not in nodes:
        problems.append((n, "node", f"{node!r} is not a node of the grid"))
    if len(problems) > before:
        return None, None
    if kind is None or export_kw is None or import_kw is None or storage is None:  # reported above
        return None, None
    if protocol is None or agreement_kind is None:
        return None, None
    try:
        asset = DerAsset(
            id=cells["asset_id"],
            name=cells["name"],
            kind=kind,
            node=node,
            owner=cells["owner"],
            aggregator=cells.get("aggregator", ""),
            export_kw=export_kw,
            import_kw=import_kw,
            storage_kwh=storage,
            control=Control(protocol, cells.get("control_address", "")),
            agreement=Agreement(agreement_kind, principle, cap, limit),
        )
    except InputError as exc:
        problems.append((n, _field_of(str(exc)), str(exc)))
        return None, None
    request_id = cells.get("request_id", "")
    if not request_id:
        for column in ("received_at", "status"):
            if cells.get(column):
                problems.append((n, column, "is given without a request_id"))
        return asset, None
    status = choice("status", RequestStatus, RequestStatus.RECEIVED)
    if status is None:
        return asset, None
    if not cells.get("received_at"):
        problems.append((n, "received_at", "is required with a request_id"))
        return asset, None
    try:
        received = parse_time(cells["received_at"], "received_at")
        request = ConnectionRequest(
            request_id,
            asset.id,
            received,
            status,
            (Transition(None, status, received, actor, "imported"),),
        )
    except InputError as exc:
        problems.append((n, _field_of(str(exc)) or "request_id", str(exc)))
        return asset, None
    return asset, request


def _field_of(message: str) -> str | None:
    head = message.split(":", 1)[0].strip()
    if head in COLUMNS:
        return head
    return _FIELD_OF_MESSAGE.get(head)
