"""IEC 60870-5-104 coding: APCI frames, ASDUs, information elements and time tags (pure functions).

APCI (IEC 60870-5-104 clause 5.1): start octet 0x68, length of the rest (4..253), four control
octets. I format (bit 1 of octet 1 = 0) carries an ASDU and the send and receive sequence
numbers N(S), N(R) (15 bits each); S format (octet 1 = 0x01) acknowledges with N(R) only;
U format (bits 1-2 = 11) is STARTDT, STOPDT or TESTFR, act or con.

ASDU (IEC 60870-5-101 clause 7.1, with the field lengths IEC 60870-5-104 clause 9 fixes): type
identification (1 octet), variable structure qualifier (SQ bit and number of objects), cause of
transmission (2 octets: cause in bits 1-6, P/N bit 7, T bit 8; originator address), common
address (2 octets), then information objects of a 3-octet address and the type's element.

Information elements (IEC 60870-5-101 clause 7.2.6 and 7.3): :func:`encode_element` writes
the element of a monitored value (server side), :func:`decode_monitoring` reads every object of
a monitoring ASDU at once (client side: one :func:`struct.iter_unpack` per ASDU, no object per
field), :func:`decode_command` reads a command element. A quality descriptor (QDS) converts to
:class:`~opendso.quality.Quality` through the tables :data:`QUALITY_OF_QDS` and :func:`qds_of`.

Command objects: the command object of a monitored point sits at its address plus
:data:`COMMAND_IOA_OFFSET`; :data:`COMMAND_TYPE` gives the command type that operates a
monitoring type and :data:`DEFAULT_COMMAND_MODE` whether it is selected before it operates.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from opendso.errors import AsduError
from opendso.quality import Quality

__all__ = [
    "COMMAND_IOA_OFFSET",
    "COMMAND_MODES",
    "COMMAND_TYPE",
    "CP56_SIZE",
    "DEFAULT_COMMAND_MODE",
    "ELEMENT_SIZE",
    "MAX_ASDU",
    "QUALITY_OF_QDS",
    "TYPE_ID",
    "TYPE_NAME",
    "Asdu",
    "AsduError",
    "Cot",
    "U",
    "cp56time2a",
    "decode_command",
    "decode_cp56time2a",
    "decode_monitoring",
    "encode_asdu",
    "encode_element",
    "i_frame",
    "objects_per_asdu",
    "qds_of",
    "s_frame",
    "u_frame",
]

#: Type identifications (IEC 60870-5-101 clause 7.2.1.1) by name.
TYPE_ID: dict[str, int] = {
    "M_SP_NA_1": 1,
    "M_DP_NA_1": 3,
    "M_ST_NA_1": 5,
    "M_ME_NA_1": 9,
    "M_ME_NB_1": 11,
    "M_ME_NC_1": 13,
    "M_SP_TB_1": 30,
    "M_DP_TB_1": 31,
    "M_ST_TB_1": 32,
    "M_ME_TD_1": 34,
    "M_ME_TE_1": 35,
    "M_ME_TF_1": 36,
    "C_SC_NA_1": 45,
    "C_DC_NA_1": 46,
    "C_SE_NA_1": 48,
    "C_SE_NB_1": 49,
    "C_SE_NC_1": 50,
    "C_IC_NA_1": 100,
    "C_RD_NA_1": 102,
    "C_CS_NA_1": 103,
}
#: Type names by identification.
TYPE_NAME: dict[int, str] = {v: k for k, v in TYPE_ID.items()}
CP56_SIZE = 7
#: Octets of the information element (after the object address) per type identification.
ELEMENT_SIZE: dict[int, int] = {
    1: 1,
    3: 1,
    5: 2,
    9: 3,
    11: 3,
    13: 5,
    30: 1 + CP56_SIZE,
    31: 1 + CP56_SIZE,
    32: 2 + CP56_SIZE,
    34: 3 + CP56_SIZE,
    35: 3 + CP56_SIZE,
    36: 5 + CP56_SIZE,
    45: 1,
    46: 1,
    48: 3,
    49: 3,
    50: 5,
    100: 1,
    102: 0,
    103: CP56_SIZE,
}
_HEADER = 6  # type, VSQ, COT (2), CA (2)
_IOA = 3
#: Largest ASDU in an APDU (253 - 4 control octets).
MAX_ASDU = 249

FLOAT_TYPES = ("M_ME_NC_1", "M_ME_TF_1")
SCALED_TYPES = ("M_ME_NB_1", "M_ME_TE_1")
NORMALISED_TYPES = ("M_ME_NA_1", "M_ME_TD_1")
SINGLE_TYPES = ("M_SP_NA_1", "M_SP_TB_1")
DOUBLE_TYPES = ("M_DP_NA_1", "M_DP_TB_1")
STEP_TYPES = ("M_ST_NA_1", "M_ST_TB_1")
TIME_TAGGED = ("M_ME_TF_1", "M_ME_TE_1", "M_ME_TD_1", "M_SP_TB_1", "M_DP_TB_1", "M_ST_TB_1")
#: Monitoring type -> the command type that operates it.
COMMAND_TYPE: Mapping[str, str] = {
    **dict.fromkeys(FLOAT_TYPES, "C_SE_NC_1"),
    **dict.fromkeys(SCALED_TYPES, "C_SE_NB_1"),
    **dict.fromkeys(NORMALISED_TYPES, "C_SE_NA_1"),
    **dict.fromkeys(SINGLE_TYPES, "C_SC_NA_1"),
    **dict.fromkeys(DOUBLE_TYPES, "C_DC_NA_1"),
}
#: The command object of a point sits at the point's address plus this offset.
COMMAND_IOA_OFFSET = 100_000
#: Command modes of a command object: ``direct`` (execute at once) or ``select`` (select before operate).
COMMAND_MODES = ("direct", "select")
#: Default command mode per command type: switching commands are selected before they operate
#: (a breaker must not move on one corrupted or misaddressed telegram); set-points, which a
#: controller adjusts continuously and which move nothing irreversibly, operate directly.
DEFAULT_COMMAND_MODE: Mapping[str, str] = {
    "C_SC_NA_1": "select",
    "C_DC_NA_1": "select",
    "C_SE_NA_1": "direct",
    "C_SE_NB_1": "direct",
    "C_SE_NC_1": "direct",
}
COMMAND_TYPE_IDS = frozenset(TYPE_ID[t] for t in DEFAULT_COMMAND_MODE)
#: The S/E bit of a command qualifier (last octet of a command element): 1 select, 0 execute.
SELECT_BIT = 0x80


class Cot:
    """Causes of transmission used here (IEC 60870-5-101 clause 7.2.3)."""

    SPONTANEOUS = 3
    REQUEST = 5
    ACTIVATION = 6
    ACTIVATION_CON = 7
    DEACTIVATION = 8
    DEACTIVATION_CON = 9
    ACTIVATION_TERMINATION = 10
    RETURN_INFO_REMOTE = 11
    INTERROGATED_BY_STATION = 20
    UNKNOWN_TYPE_ID = 44
    UNKNOWN_COT = 45
    UNKNOWN_CA = 46
    UNKNOWN_IOA = 47


#: The negative mirrors of a command (P/N = 1) in words (IEC 60870-5-101 clause 7.2.3).
COT_TEXT: Mapping[int, str] = {
    Cot.ACTIVATION_CON: "activation confirmation",
    Cot.DEACTIVATION_CON: "deactivation confirmation",
    Cot.ACTIVATION_TERMINATION: "activation termination",
    Cot.UNKNOWN_TYPE_ID: "unknown type identification",
    Cot.UNKNOWN_COT: "unknown cause of transmission",
    Cot.UNKNOWN_CA: "unknown common address of ASDU",
    Cot.UNKNOWN_IOA: "unknown information object address",
}


@dataclass(frozen=True)
class Asdu:
    """A decoded ASDU header; ``body`` holds the information objects as received."""

    type_id: int
    sequence: bool
    count: int
    cause: int
    negative: bool
    test: bool
    originator: int
    common_address: int
    body: bytes
    raw: bytes

    @classmethod
    def decode(cls, data: bytes) -> Asdu:
        """Return the ASDU in ``data``; AsduError when the header is cut short."""
        if len(data) < _HEADER:
            raise AsduError(f"ASDU of {len(data)} octets is shorter than its {_HEADER}-octet header")
        return cls(
            type_id=data[0],
            sequence=bool(data[1] & 0x80),
            count=data[1] & 0x7F,
            cause=data[2] & 0x3F,
            negative=bool(data[2] & 0x40),
            test=bool(data[2] & 0x80),
            originator=data[3],
            common_address=data[4] | data[5] << 8,
            body=bytes(data[_HEADER:]),
            raw=bytes(data),
        )

    def objects(self) -> list[tuple[int, bytes]]:
        """Return the (address, element) pairs; AsduError when the type is unknown or the length is wrong."""
        size = ELEMENT_SIZE.get(self.type_id)
        if size is None:
            raise AsduError(f"unknown type identification {self.type_id}")
        if self.sequence:  # one address, then the elements of consecutive addresses
            if len(self.body) != _IOA + self.count * size:
                raise AsduError(f"type {self.type_id}: {len(self.body)} octets for {self.count} objects (sequence)")
            first = int.from_bytes(self.body[:_IOA], "little")
            return [(first + i, self.body[_IOA + i * size : _IOA + (i + 1) * size]) for i in range(self.count)]
        step = _IOA + size
        if self.count == 0 or len(self.body) != self.count * step:
            raise AsduError(f"type {self.type_id}: {len(self.body)} octets for {self.count} objects")
        return [
            (int.from_bytes(self.body[i : i + _IOA], "little"), self.body[i + _IOA : i + step])
            for i in range(0, len(self.body), step)
        ]

    def mirror(self, cause: int, *, negative: bool) -> bytes:
        """Return this ASDU as received with another cause and P/N bit (the T bit and everything else kept)."""
        cot = (cause & 0x3F) | (0x40 if negative else 0) | (0x80 if self.test else 0)
        return self.raw[:2] + bytes([cot]) + self.raw[3:]


def encode_asdu(
    type_id: int,
    cause: int,
    common_address: int,
    objects: list[tuple[int, bytes]],
    *,
    negative: bool = False,
    originator: int = 0,
) -> bytes:
    """Return an ASDU of ``objects`` ((address, element) pairs, SQ = 0)."""
    if not 0 < len(objects) <= 127:
        raise ValueError(f"an ASDU holds 1..127 objects, got {len(objects)}")
    head = bytes([type_id, len(objects), (cause & 0x3F) | (0x40 if negative else 0), originator])
    body = b"".join(ioa.to_bytes(_IOA, "little") + element for ioa, element in objects)
    data = head + struct.pack("<H", common_address) + body
    if len(data) > MAX_ASDU:
        raise ValueError(f"ASDU of {len(data)} octets exceeds {MAX_ASDU}")
    return data


def objects_per_asdu(type_id: int) -> int:
    """Return how many objects of ``type_id`` fit one ASDU."""
    return min(127, (MAX_ASDU - _HEADER) // (_IOA + ELEMENT_SIZE[type_id]))


# -- time tags -------------------------------------------------------------------------------------
def cp56time2a(stamp: datetime) -> bytes:
    """Return the seven-octet time tag CP56Time2a (IEC 60870-5-101 clause 7.2.6.18) of ``stamp`` in UTC."""
    t = stamp.astimezone(UTC)
    ms = t.second * 1000 + t.microsecond // 1000
    return struct.pack("<HBBBBB", ms, t.minute, t.hour, t.day | (t.isoweekday() << 5), t.month, t.year % 100)


def decode_cp56time2a(octets: bytes) -> datetime | None:
    """Return the UTC time of a CP56Time2a tag (read as UTC, as :func:`cp56time2a` writes it).

    None when the tag is flagged invalid (IV, bit 8 of the minutes) or names no real time; the
    year is taken in 2000-2099.
    """
    ms, minute, hour, day, month, year = struct.unpack("<HBBBBB", octets)
    if minute & 0x80:
        return None
    try:
        return datetime(
            2000 + (year & 0x7F),
            month & 0x0F,
            day & 0x1F,
            hour & 0x1F,
            minute & 0x3F,
            ms // 1000,
            (ms % 1000) * 1000,
            tzinfo=UTC,
        )
    except ValueError:
        return None


# -- APCI ------------------------------------------------------------------------------------------
class U:
    """Control octet 1 of the U-format frames (IEC 60870-5-104 clause 5.3)."""

    STARTDT_ACT, STARTDT_CON = 0x07, 0x0B
    STOPDT_ACT, STOPDT_CON = 0x13, 0x23
    TESTFR_ACT, TESTFR_CON = 0x43, 0x83


#: Sequence numbers count modulo 2^15.
SEQUENCE_MODULO = 1 << 15


def i_frame(send_seq: int, receive_seq: int, asdu: bytes) -> bytes:
    """Return the I-format APDU carrying ``asdu`` with N(S) and N(R)."""
    return bytes([0x68, 4 + len(asdu)]) + struct.pack("<HH", send_seq << 1, receive_seq << 1) + asdu


def s_frame(receive_seq: int) -> bytes:
    """Return the S-format APDU acknowledging up to N(R)."""
    return bytes([0x68, 4, 0x01, 0x00]) + struct.pack("<H", receive_seq << 1)


def u_frame(code: int) -> bytes:
    """Return the U-format APDU with control octet ``code`` (see :class:`U`)."""
    return bytes([0x68, 4, code, 0, 0, 0])


# -- quality ---------------------------------------------------------------------------------------
#: Quality of each quality-descriptor octet (QDS, or the quality bits of SIQ/DIQ), by octet value.
QUALITY_OF_QDS: tuple[Quality, ...] = tuple(Quality.from_qds(octet) for octet in range(256))
_QDS_OF: dict[int, int] = {}


def qds_of(quality: int) -> int:
    """Return the QDS octet of a quality (flags IEC 104 has no bit for are dropped); cached."""
    qds = _QDS_OF.get(quality)
    if qds is None:
        qds = _QDS_OF[quality] = Quality(quality).to_qds()
    return qds


# -- information elements --------------------------------------------------------------------------
def _fit(raw: float, low: int, high: int) -> tuple[int, int]:
    """Return (``raw`` rounded into [low, high], the OV bit 0x01 when it had to be clipped); NaN gives 0 and OV."""
    if not math.isfinite(raw):
        return 0, 0x01
    value = round(raw)
    return min(max(value, low), high), 0x01 if not low <= value <= high else 0


def encode_element(type_name: str, raw: float, qds: int, stamp: datetime | None = None) -> bytes:
    """Return the information element of a monitored value (IEC 60870-5-101 clause 7.3.1).

    ``raw`` is the protocol value (NaN when not known: a double point goes indeterminate, a
    number gets OV); ``qds`` the quality descriptor; ``stamp`` the time tag of a time-tagged type.
    Values beyond the type's range are clipped and flagged OV.
    """
    if type_name in SINGLE_TYPES:
        element = bytes([(1 if math.isfinite(raw) and raw != 0.0 else 0) | (qds & 0xF0)])
    elif type_name in DOUBLE_TYPES:
        dpi = 2 if raw == 1.0 else 1 if raw == 0.0 else 3  # ON, OFF, indeterminate
        element = bytes([dpi | (qds & 0xF0)])
    elif type_name in STEP_TYPES:
        step, over = _fit(raw, -64, 63)
        element = bytes([step & 0x7F, qds | over])
    elif type_name in SCALED_TYPES:
        sva, over = _fit(raw, -32768, 32767)
        element = struct.pack("<hB", sva, qds | over)
    elif type_name in NORMALISED_TYPES:
        nva, over = _fit(raw * 32768 if math.isfinite(raw) else raw, -32768, 32767)
        element = struct.pack("<hB", nva, qds | over)
    else:
        try:
            element = struct.pack("<fB", raw, qds)
        except OverflowError:  # beyond float32: the largest value, flagged overflow
            element = struct.pack("<fB", math.copysign(3.4e38, raw), qds | 0x01)
    if type_name in TIME_TAGGED:
        element += cp56time2a(stamp or datetime.now(UTC))
    return element


#: struct format of one monitoring object (without its address) by type identification, and
#: how its raw value is read: "float", "int" (scaled), "norm" (normalised), "single", "double", "step".
_MONITORING: dict[int, tuple[str, str]] = {
    1: ("B", "single"),
    3: ("B", "double"),
    5: ("BB", "step"),
    9: ("hB", "norm"),
    11: ("hB", "int"),
    13: ("fB", "float"),
    30: ("B7s", "single"),
    31: ("B7s", "double"),
    32: ("BB7s", "step"),
    34: ("hB7s", "norm"),
    35: ("hB7s", "int"),
    36: ("fB7s", "float"),
}
_NAN = math.nan


def decode_monitoring(type_id: int, sequence: bool, count: int, body: bytes) -> list[tuple[int, float, int, bytes]]:
    """Return (address, raw value, QDS octet, time tag octets or b"") of every object of a monitoring ASDU.

    Single points read 1.0 / 0.0; double points ON 1.0, OFF 0.0 and an intermediate or
    indeterminate state NaN with the IV bit (0x80) set in the returned QDS; steps the signed
    7-bit value; normalised values the fraction (-1 .. 1); scaled the integer; floats the float.
    AsduError when the type is not a monitoring type or the length does not fit ``count``.
    """
    known = _MONITORING.get(type_id)
    if known is None:
        raise AsduError(f"type {type_id} is not a monitoring type")
    element, kind = known
    size = ELEMENT_SIZE[type_id]
    if sequence:
        if count == 0 or len(body) != _IOA + count * size:
            raise AsduError(f"type {type_id}: {len(body)} octets for {count} objects (sequence)")
        first = int.from_bytes(body[:_IOA], "little")
        rows = [(first + i, *fields) for i, fields in enumerate(struct.iter_unpack("<" + element, body[_IOA:]))]
    else:
        if count == 0 or len(body) != count * (_IOA + size):
            raise AsduError(f"type {type_id}: {len(body)} octets for {count} objects")
        rows = [(lo | hi << 16, *fields) for lo, hi, *fields in struct.iter_unpack("<HB" + element, body)]
    timed = type_id >= 30
    if kind in ("float", "int"):
        return [(r[0], float(r[1]), r[2], r[3] if timed else b"") for r in rows]
    if kind == "norm":
        return [(r[0], r[1] / 32768, r[2], r[3] if timed else b"") for r in rows]
    if kind == "step":
        return [(r[0], float((r[1] & 0x7F) - ((r[1] & 0x40) << 1)), r[2], r[3] if timed else b"") for r in rows]
    if kind == "single":
        return [(r[0], float(r[1] & 0x01), r[1] & 0xF0, r[2] if timed else b"") for r in rows]
    out = []
    for r in rows:  # double point: DPI 2 ON, 1 OFF, 0 intermediate, 3 indeterminate
        dpi = r[1] & 0x03
        raw, qds = (1.0, r[1] & 0xF0) if dpi == 2 else (0.0, r[1] & 0xF0) if dpi == 1 else (_NAN, r[1] & 0xF0 | 0x80)
        out.append((r[0], raw, qds, r[2] if timed else b""))
    return out


def decode_command(type_name: str, element: bytes) -> float | None:
    """Return the raw value a command element (S/E bit cleared) asks for; None when it is not a valid command."""
    if type_name == "C_SC_NA_1":
        return float(element[0] & 0x01)
    if type_name == "C_DC_NA_1":
        dcs = element[0] & 0x03
        if dcs not in (1, 2):  # 0 and 3 are not permitted (IEC 60870-5-101 clause 7.2.6.16)
            return None
        return 1.0 if dcs == 2 else 0.0
    if type_name == "C_SE_NA_1":
        return float(struct.unpack("<h", element[:2])[0] / 32768)
    if type_name == "C_SE_NB_1":
        return float(struct.unpack("<h", element[:2])[0])
    raw = float(struct.unpack("<f", element[:4])[0])
    return raw if math.isfinite(raw) else None
