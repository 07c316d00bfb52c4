"""The point map: which protocol address carries which quantity of which grid element.

One TOML file holds the connections (:class:`Connection`: a Modbus device, an IEC 104 RTU, an
MQTT topic tree) and the points. In the file, and in the ``source`` attribute of a point and the
``sources`` of a map, a connection is called a *source* (the file format of version 1, kept as
it is so existing files read unchanged)::

    version = 1

    [sources.rtu-1]                 # a Modbus TCP device
    protocol = "modbus"
    host = "127.0.0.1"
    port = 5020
    unit_id = 1
    stale_after_s = 10.0
    poll_groups = { fast = 1.0, slow = 10.0 }   # group name -> period in seconds

    [sources.meters]                # an MQTT topic tree
    protocol = "mqtt"
    topic_prefix = "opendso/field/"
    stale_after_s = 60.0

    [sources.sub-a]                 # an IEC 60870-5-104 RTU
    protocol = "iec104"
    host = "127.0.0.1"
    port = 2404
    common_address = 1

    [[points]]
    name = "MV2.101 Measurement 3/p"   # unique: the historian's key
    element = "MV2.101 Measurement 3"  # the grid element's source name (grid.names / grid.switch_names)
    quantity = "p"                     # see QUANTITIES
    unit = "W"                         # SI unit of the value after scaling
    source = "rtu-1"
    scale = 1.0                        # value = raw * scale + offset
    offset = 0.0
    deadband = 100.0                   # absolute, in ``unit``; polled values within it are not re-sent
    register = 0                       # modbus: first register
    table = "holding"                  # modbus: holding | input
    data_type = "float32"              # modbus: int16 uint16 int32 uint32 float32 float64
    word_order = "big"                 # modbus: big (high word first) | little
    byte_order = "big"                 # modbus: big (high byte first in a register) | little
    poll_group = "fast"                # modbus: one of the source's poll groups
    # coil = 12                        # modbus, switch points only: the coil (FC 1 read, FC 5/15 write:
    #                                  # ON closes, OFF opens); a device answers coil requests only for
    #                                  # declared coils (see ModbusPointServer), none are by default
    # mqtt:   topic = "meters/1"  key = "p"      (full topic = topic_prefix + topic)
    # iec104: ioa = 1001  type = "M_ME_NC_1"  (common_address defaults to the source's)

:func:`read_point_map` validates everything and raises one :class:`PointMapError` listing
every problem with file, point and field; :func:`validate_against_grid` checks element names
against a :class:`~opendso.grid.Grid` through the one binding of points to a grid
(:mod:`opendso.telemetry.binding`, which also says which element and field each point is bound
to). :func:`point_map_for_grid` builds the map a field simulator serves for a grid's sensor
placements and switches; :func:`write_point_map` writes a map as TOML (with tomli-w).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import tomli_w

from opendso.errors import PointMapError

if TYPE_CHECKING:
    from opendso.grid.model import Grid

__all__ = [
    "DATA_TYPES",
    "IEC104_TYPES",
    "PROTOCOLS",
    "QUANTITIES",
    "Connection",
    "Point",
    "PointMap",
    "PointMapError",
    "PointMapFinding",
    "ProtocolName",
    "parse_point_map",
    "point_map_for_grid",
    "read_point_map",
    "write_point_map",
]

#: The protocol a connection speaks.
ProtocolName = Literal["modbus", "mqtt", "iec104"]
PROTOCOLS: tuple[str, ...] = ("modbus", "mqtt", "iec104")

#: Quantities a point can carry, with the SI unit of its value.
QUANTITIES: Mapping[str, str] = {
    "u": "V",
    "u_angle": "rad",
    "p": "W",
    "q": "var",
    "i": "A",
    "i_angle": "rad",
    "switch": "",  # 1 closed, 0 open
    "fpi": "",  # fault-passage indicator: 1 picked up, 0 not
    "tap": "",
    "f": "Hz",
    "soc": "",  # state of charge, fraction
    "p_limit": "W",  # a generator's export limit in force; commandable (the set-point of the DER's limit)
    "p_available": "W",  # a generator's available power (before its export limit); read-only
}

#: Sensor placement components points can name, each with the quantities it measures (in this order).
SENSOR_QUANTITIES: Mapping[str, tuple[str, ...]] = {
    "sym_voltage_sensor": ("u",),
    "sym_power_sensor": ("p", "q"),
    "sym_current_sensor": ("i",),
}
#: Modbus register data types and their register count.
DATA_TYPES: Mapping[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}

#: IEC 60870-5-104 monitoring type identifiers a point may use.
IEC104_TYPES: tuple[str, ...] = (
    "M_SP_NA_1",
    "M_SP_TB_1",
    "M_DP_NA_1",
    "M_DP_TB_1",
    "M_ST_NA_1",
    "M_ST_TB_1",
    "M_ME_NA_1",
    "M_ME_TD_1",
    "M_ME_NB_1",
    "M_ME_TE_1",
    "M_ME_NC_1",
    "M_ME_TF_1",
)

_ORDERS = ("big", "little")
_TABLES = ("holding", "input")


@dataclass(frozen=True)
class PointMapFinding:
    """One problem in a point map: where (file, point, field) and what."""

    file: str
    point: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.point is not None:
            where += f", point {self.point!r}"
        if self.field is not None:
            where += f", field {self.field}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Connection:
    """A connection points are read over: one Modbus device, one IEC 104 RTU or one MQTT topic tree.

    A point map's file calls it a *source* (``[sources.<name>]``, a point's ``source``).
    """

    name: str
    protocol: ProtocolName
    host: str = "127.0.0.1"
    port: int = 0
    unit_id: int = 1
    common_address: int = 1
    topic_prefix: str = ""
    stale_after_s: float = 30.0
    poll_groups: Mapping[str, float] = field(default_factory=dict)


#: The former name of :class:`Connection`, kept only while modules of other owners move over; not exported.
Source = Connection


@dataclass(frozen=True)
class Point:
    """One measured quantity of one grid element at one protocol address."""

    name: str
    element: str
    quantity: str
    unit: str
    source: str  # the name of the Connection the point is read over
    scale: float = 1.0
    offset: float = 0.0
    deadband: float = 0.0
    min_value: float | None = None  # plausible range of the value; outside it the value gets OV|IV
    max_value: float | None = None
    # modbus
    register: int | None = None
    table: str = "holding"
    data_type: str = "float32"
    word_order: str = "big"
    byte_order: str = "big"
    poll_group: str = "default"
    coil: int | None = None  # a switch point's coil address (a command output: ON closes, OFF opens)
    # mqtt
    topic: str | None = None
    key: str | None = None
    # iec104
    common_address: int | None = None
    ioa: int | None = None
    type: str | None = None

    def in_range(self, value: float) -> bool:
        """True when ``value`` lies in the point's plausible range (a switch state is 0 or 1)."""
        if self.quantity == "switch" and value not in (0.0, 1.0):
            return False
        if self.min_value is not None and value < self.min_value:
            return False
        return not (self.max_value is not None and value > self.max_value)

    def to_value(self, raw: float) -> float:
        """Return the engineering value (in ``unit``) of a raw protocol value."""
        return raw * self.scale + self.offset

    def to_raw(self, value: float) -> float:
        """Return the raw protocol value that reads back as ``value``."""
        return (value - self.offset) / self.scale

    @property
    def register_count(self) -> int:
        """Number of Modbus registers the point spans."""
        return DATA_TYPES[self.data_type]


@dataclass(frozen=True)
class PointMap:
    """A validated point map: connections by name (``sources``, as the file calls them) and points in file order."""

    file: str
    sources: Mapping[str, Connection]
    points: tuple[Point, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.name: p for p in self.points})

    def __len__(self) -> int:
        return len(self.points)

    def point(self, name: str) -> Point:
        """Return the point called ``name`` (KeyError when unknown)."""
        by_name: dict[str, Point] = self._by_name  # type: ignore[attr-defined]
        return by_name[name]

    def points_of(self, source: str) -> tuple[Point, ...]:
        """Return the points read over one connection (by its name)."""
        return tuple(p for p in self.points if p.source == source)

    def sources_of(self, protocol: str) -> tuple[Connection, ...]:
        """Return the connections using one protocol."""
        return tuple(s for s in self.sources.values() if s.protocol == protocol)


# -- reading ----------------------------------------------------------------------------------
def read_point_map(path: str | Path) -> PointMap:
    """Return the validated point map in a TOML file; raise :class:`PointMapError` listing all problems."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PointMapError(
            str(path), [PointMapFinding(str(path), None, None, f"cannot read: {exc.strerror}")]
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PointMapError(str(path), [PointMapFinding(str(path), None, None, f"not valid TOML: {exc}")]) from exc
    return parse_point_map(data, file=str(path))


class _Checker:
    def __init__(self, file: str) -> None:
        self.file = file
        self.findings: list[PointMapFinding] = []

    def add(self, point: str | None, fld: str | None, message: str) -> None:
        self.findings.append(PointMapFinding(self.file, point, fld, message))

    def get(
        self,
        table: Mapping[str, Any],
        key: str,
        kind: type | tuple[type, ...],
        where: str | None,
        *,
        required: bool = False,
        default: Any = None,
        prefix: str = "",
    ) -> Any:
        fld = prefix + key
        if key not in table:
            if required:
                self.add(where, fld, "missing")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            self.add(where, fld, f"must be {names}, got {type(value).__name__} {value!r}")
            return default
        if isinstance(value, float) and not math.isfinite(value):
            self.add(where, fld, f"must be finite, got {value!r}")
            return default
        return value


_SOURCE_KEYS = {"protocol", "host", "port", "unit_id", "common_address", "topic_prefix", "stale_after_s", "poll_groups"}
_POINT_KEYS = set(Point.__dataclass_fields__)


def parse_point_map(data: Mapping[str, Any], *, file: str = "<point map>") -> PointMap:
    """Return the validated point map of already parsed TOML data (see :func:`read_point_map`)."""
    check = _Checker(file)
    version = data.get("version", 1)
    if version != 1:
        check.add(None, "version", f"unsupported version {version!r} (expected 1)")
    for key in data:
        if key not in {"version", "sources", "points"}:
            check.add(None, key, "unknown top-level key")
    sources = _parse_sources(data.get("sources", {}), check)
    raw_points = data.get("points", [])
    points: list[Point] = []
    if not isinstance(raw_points, list):
        check.add(None, "points", "must be an array of tables ([[points]])")
        raw_points = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_points):
        label = str(raw["name"]) if isinstance(raw, dict) and isinstance(raw.get("name"), str) else f"#{index + 1}"
        if not isinstance(raw, dict):
            check.add(label, None, "must be a table")
            continue
        point = _parse_point(raw, label, sources, check)
        if point is None:
            continue
        if point.name in seen:
            check.add(point.name, "name", f"duplicate point name (also point #{seen[point.name] + 1})")
            continue
        seen[point.name] = index
        points.append(point)
    _check_addresses(points, sources, check)
    if check.findings:
        raise PointMapError(file, check.findings)
    return PointMap(file=file, sources=sources, points=tuple(points))


def _parse_sources(raw_sources: Any, check: _Checker) -> dict[str, Connection]:
    sources: dict[str, Connection] = {}
    if not isinstance(raw_sources, dict):
        check.add(None, "sources", "must be a table of sources")
        return sources
    for name, raw in raw_sources.items():
        pre = f"sources.{name}."
        if not isinstance(raw, dict):
            check.add(None, f"sources.{name}", "must be a table")
            continue
        for key in raw:
            if key not in _SOURCE_KEYS:
                check.add(None, pre + key, "unknown field")
        protocol = check.get(raw, "protocol", str, None, required=True, prefix=pre)
        if protocol is not None and protocol not in PROTOCOLS:
            check.add(None, pre + "protocol", f"unknown protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
            protocol = None
        port = check.get(raw, "port", int, None, default=0, prefix=pre)
        if protocol in ("modbus", "iec104") and "port" not in raw:
            check.add(None, pre + "port", "missing")
        if port is not None and not 0 <= port <= 65535:
            check.add(None, pre + "port", f"must be 0..65535, got {port}")
        unit_id = check.get(raw, "unit_id", int, None, default=1, prefix=pre)
        if unit_id is not None and not 0 <= unit_id <= 255:
            check.add(None, pre + "unit_id", f"must be 0..255, got {unit_id}")
        stale = check.get(raw, "stale_after_s", (int, float), None, default=30.0, prefix=pre)
        if stale is not None and stale <= 0:
            check.add(None, pre + "stale_after_s", f"must be > 0, got {stale}")
        groups_raw = check.get(raw, "poll_groups", dict, None, default={}, prefix=pre) or {}
        groups: dict[str, float] = {}
        for group, period in groups_raw.items():
            if isinstance(period, bool) or not isinstance(period, int | float) or not period > 0:
                check.add(None, f"{pre}poll_groups.{group}", f"must be a period > 0 in seconds, got {period!r}")
            else:
                groups[group] = float(period)
        if protocol is None:
            continue
        sources[name] = Connection(
            name=name,
            protocol=protocol,
            host=check.get(raw, "host", str, None, default="127.0.0.1", prefix=pre) or "127.0.0.1",
            port=port or 0,
            unit_id=unit_id if unit_id is not None else 1,
            common_address=check.get(raw, "common_address", int, None, default=1, prefix=pre) or 1,
            topic_prefix=check.get(raw, "topic_prefix", str, None, default="", prefix=pre) or "",
            stale_after_s=float(stale if stale is not None and stale > 0 else 30.0),
            poll_groups=groups or ({"default": 1.0} if protocol == "modbus" else {}),
        )
    return sources


def _parse_point(
    raw: Mapping[str, Any], label: str, sources: Mapping[str, Connection], check: _Checker
) -> Point | None:
    before = len(check.findings)
    for key in raw:
        if key not in _POINT_KEYS:
            check.add(label, key, "unknown field")
    name = check.get(raw, "name", str, label, required=True)
    element = check.get(raw, "element", str, label, required=True)
    quantity = check.get(raw, "quantity", str, label, required=True)
    if quantity is not None and quantity not in QUANTITIES:
        check.add(label, "quantity", f"unknown quantity {quantity!r} (one of {', '.join(QUANTITIES)})")
    unit = check.get(raw, "unit", str, label, default=None)
    if quantity in QUANTITIES:
        expected = QUANTITIES[quantity]
        if unit is None:
            unit = expected
        elif unit != expected:
            check.add(label, "unit", f"quantity {quantity} is stored in {expected!r} (SI), got {unit!r}; use scale")
    source_name = check.get(raw, "source", str, label, required=True)
    source = sources.get(source_name) if source_name is not None else None
    if source_name is not None and source is None:
        check.add(label, "source", f"unknown source {source_name!r}")
    scale = check.get(raw, "scale", (int, float), label, default=1.0)
    if scale is not None and scale == 0:
        check.add(label, "scale", "must not be 0")
    offset = check.get(raw, "offset", (int, float), label, default=0.0)
    deadband = check.get(raw, "deadband", (int, float), label, default=0.0)
    if deadband is not None and deadband < 0:
        check.add(label, "deadband", f"must be >= 0, got {deadband}")
    min_value = check.get(raw, "min_value", (int, float), label)
    max_value = check.get(raw, "max_value", (int, float), label)
    if min_value is not None and max_value is not None and min_value >= max_value:
        check.add(label, "max_value", f"must be > min_value ({min_value}), got {max_value}")
    extra: dict[str, Any] = {}
    if min_value is not None:
        extra["min_value"] = float(min_value)
    if max_value is not None:
        extra["max_value"] = float(max_value)
    protocol = source.protocol if source is not None else None
    modbus_keys = ("register", "table", "data_type", "word_order", "byte_order", "poll_group", "coil")
    mqtt_keys = ("topic", "key")
    iec_keys = ("common_address", "ioa", "type")
    for proto, keys in (("modbus", modbus_keys), ("mqtt", mqtt_keys), ("iec104", iec_keys)):
        if protocol is not None and protocol != proto:
            for key in keys:
                if key in raw:
                    check.add(label, key, f"is a {proto} field but source {source_name!r} uses {protocol}")
    if protocol == "modbus":
        register = check.get(raw, "register", int, label, required=True)
        if register is not None and not 0 <= register <= 65535:
            check.add(label, "register", f"must be 0..65535, got {register}")
        for key, allowed, default in (
            ("table", _TABLES, "holding"),
            ("data_type", tuple(DATA_TYPES), "float32"),
            ("word_order", _ORDERS, "big"),
            ("byte_order", _ORDERS, "big"),
        ):
            value = check.get(raw, key, str, label, default=default)
            if value is not None and value not in allowed:
                check.add(label, key, f"unknown {key} {value!r} (one of {', '.join(allowed)})")
            extra[key] = value
        group = check.get(raw, "poll_group", str, label, default=next(iter(source.poll_groups)) if source else "")
        if source is not None and group is not None and group not in source.poll_groups:
            check.add(label, "poll_group", f"unknown poll group {group!r} of source {source_name!r}")
        extra.update(register=register, poll_group=group)
        coil = check.get(raw, "coil", int, label)
        if coil is not None:
            if not 0 <= coil <= 65535:
                check.add(label, "coil", f"must be 0..65535, got {coil}")
            elif quantity != "switch":
                check.add(label, "coil", f"a coil is a switch's command output; quantity {quantity!r} takes none")
            else:
                extra["coil"] = coil
    elif protocol == "mqtt":
        extra["topic"] = check.get(raw, "topic", str, label, required=True)
        extra["key"] = check.get(raw, "key", str, label, required=True)
        if extra["topic"] is not None and any(c in extra["topic"] for c in "#+"):
            check.add(label, "topic", f"must be a plain topic without wildcards, got {extra['topic']!r}")
    elif protocol == "iec104":
        ca = check.get(raw, "common_address", int, label, default=source.common_address if source else 1)
        if ca is not None and not 0 <= ca <= 65535:
            check.add(label, "common_address", f"must be 0..65535, got {ca}")
        ioa = check.get(raw, "ioa", int, label, required=True)
        if ioa is not None and not 0 <= ioa <= 0xFFFFFF:
            check.add(label, "ioa", f"must be 0..16777215, got {ioa}")
        type_id = check.get(raw, "type", str, label, required=True)
        if type_id is not None and type_id not in IEC104_TYPES:
            check.add(label, "type", f"unknown type {type_id!r} (one of {', '.join(IEC104_TYPES)})")
        extra.update(common_address=ca, ioa=ioa, type=type_id)
    if len(check.findings) > before:
        return None
    return Point(
        name=name,
        element=element,
        quantity=quantity,
        unit=unit or "",
        source=source_name,
        scale=float(scale),
        offset=float(offset),
        deadband=float(deadband),
        **extra,
    )


def _check_addresses(points: list[Point], sources: Mapping[str, Connection], check: _Checker) -> None:
    used: dict[tuple[Any, ...], str] = {}
    for p in points:
        protocol = sources[p.source].protocol
        keys: list[tuple[Any, ...]]
        if protocol == "modbus":
            assert p.register is not None
            keys = [(p.source, p.table, r) for r in range(p.register, p.register + p.register_count)]
            if p.register + p.register_count - 1 > 65535:
                check.add(p.name, "register", "spans beyond register 65535")
            if p.coil is not None:
                other = used.get((p.source, "coil", p.coil))
                if other is not None:
                    check.add(p.name, "coil", f"coil {p.coil} is also point {other!r}'s")
                used[(p.source, "coil", p.coil)] = p.name
        elif protocol == "mqtt":
            keys = [(p.source, p.topic, p.key)]
        else:
            keys = [(p.source, p.common_address, p.ioa)]
        for key in keys:
            other = used.get(key)
            if other is not None:
                check.add(p.name, "register" if protocol == "modbus" else "address", f"overlaps point {other!r}")
                break
            used[key] = p.name


# -- building and writing ---------------------------------------------------------------------
def point_map_for_grid(
    grid: Grid,
    *,
    protocol: ProtocolName = "modbus",
    host: str = "127.0.0.1",
    port: int = 5020,
    topic_prefix: str = "opendso/",
    stale_after_s: float = 30.0,
    poll_period_s: float = 1.0,
    switches: bool = True,
) -> PointMap:
    """Return the point map for a grid's sensor placements (and switches) over one protocol.

    One point per measured quantity: ``<sensor name>/u`` for voltage sensors, ``/p`` and ``/q``
    for power sensors (only what ``grid.extra["sym_power_sensor"]["has_p"/"has_q"]`` says is
    measured, when given), ``/i`` for current sensors and ``<switch name>/switch`` for switches.
    Modbus: one device, float32 holding registers for values, uint16 for switch states, in
    grid order. MQTT: one topic per sensor or switch name. IEC 104: M_ME_NC_1 from IOA 1001,
    M_DP_NA_1 from IOA 1 for switches, common address 1.
    """
    source = Connection(
        name="field",
        protocol=protocol,
        host=host,
        port=port if protocol != "mqtt" else 0,  # the broker comes from the subscriber's settings
        topic_prefix=topic_prefix if protocol == "mqtt" else "",
        stale_after_s=stale_after_s,
        poll_groups={"default": poll_period_s} if protocol == "modbus" else {},
    )
    points: list[Point] = []
    register, ioa_value, ioa_switch = 0, 1001, 1
    for component, quantities in SENSOR_QUANTITIES.items():
        array = grid.sensors.get(component)
        if array is None or not array.size:
            continue
        names = grid.names.get(component)
        extra = grid.extra.get(component, {})
        for row in range(array.size):
            element = str(names[row]) if names is not None else f"{component} {int(array['id'][row])}"
            for quantity in quantities:
                has = extra.get(f"has_{quantity}")
                if has is not None and not bool(has[row]):
                    continue
                kw: dict[str, Any]
                if protocol == "modbus":
                    kw = {"register": register, "data_type": "float32", "poll_group": "default"}
                    register += 2
                elif protocol == "mqtt":
                    kw = {"topic": _topic_part(element), "key": quantity}
                else:
                    kw = {"common_address": 1, "ioa": ioa_value, "type": "M_ME_NC_1"}
                    ioa_value += 1
                points.append(Point(f"{element}/{quantity}", element, quantity, QUANTITIES[quantity], "field", **kw))
    if switches:
        for name in grid.switch_names:
            element = str(name)
            if protocol == "modbus":
                kw = {"register": register, "data_type": "uint16", "poll_group": "default"}
                register += 1
            elif protocol == "mqtt":
                kw = {"topic": _topic_part(element), "key": "switch"}
            else:
                kw = {"common_address": 1, "ioa": ioa_switch, "type": "M_DP_NA_1"}
                ioa_switch += 1
            points.append(Point(f"{element}/switch", element, "switch", "", "field", **kw))
    return PointMap(file=f"<point map of {grid.name}>", sources={"field": source}, points=tuple(points))


def _topic_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "element"


def write_point_map(point_map: PointMap, path: str | Path) -> Path:
    """Write ``point_map`` as TOML that :func:`read_point_map` reads back to an equal map (atomically)."""
    sources: dict[str, dict[str, Any]] = {}
    for source in point_map.sources.values():
        table: dict[str, Any] = {"protocol": source.protocol}
        if source.protocol in ("modbus", "iec104"):
            table.update(host=source.host, port=source.port)
        if source.protocol == "modbus":
            table.update(unit_id=source.unit_id, poll_groups=dict(source.poll_groups))
        if source.protocol == "iec104":
            table["common_address"] = source.common_address
        if source.protocol == "mqtt":
            table["topic_prefix"] = source.topic_prefix
        table["stale_after_s"] = source.stale_after_s
        sources[source.name] = table
    defaults = Point("", "", "", "", "")
    points: list[dict[str, Any]] = []
    for p in point_map.points:
        protocol = point_map.sources[p.source].protocol
        fields = ["name", "element", "quantity", "unit", "source"]
        fields += [
            f
            for f in ("scale", "offset", "deadband", "min_value", "max_value")
            if getattr(p, f) != getattr(defaults, f)
        ]
        if protocol == "modbus":
            fields += ["register", "table", "data_type", "word_order", "byte_order", "poll_group"]
            fields += ["coil"] if p.coil is not None else []
        elif protocol == "mqtt":
            fields += ["topic", "key"]
        else:
            fields += ["common_address", "ioa", "type"]
        points.append({f: getattr(p, f) for f in fields})
    text = "# OpenDSO point map\n" + tomli_w.dumps({"version": 1, "sources": sources, "points": points})
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
