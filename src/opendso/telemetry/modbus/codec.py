"""Modbus register and coil coding: engineering-free raw values to registers and back.

:func:`encode_value` / :func:`decode_registers`: ``word_order`` "big" puts the most significant
register first; ``byte_order`` "big" puts the most significant byte first within each register
(the Modbus default); "little" swaps the two bytes of every register. Integer types take the
raw value rounded to the nearest integer.

Coils (FC 5) carry 0xFF00 for ON and 0x0000 for OFF (MODBUS Application Protocol V1.1b3,
clause 6.5); :func:`exception_text` names the exception codes of its clause 7.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from opendso.telemetry.points import DATA_TYPES

__all__ = ["COIL_OFF", "COIL_ON", "decode_registers", "encode_value", "exception_text", "resolution"]

_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}
#: FC 5 values of a coil switched ON and OFF.
COIL_ON, COIL_OFF = 0xFF00, 0x0000

#: Exception codes (MODBUS Application Protocol V1.1b3 clause 7) in words.
_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


def encode_value(raw: float, data_type: str, word_order: str = "big", byte_order: str = "big") -> list[int]:
    """Return the registers that carry ``raw`` (a raw protocol value, before scaling).

    Integer types take ``raw`` rounded to the nearest integer; ValueError when it does not fit.
    """
    fmt = _STRUCT[data_type]
    try:
        data = struct.pack(">" + fmt, round(raw) if fmt in "hHiI" else raw)
    except (struct.error, OverflowError, ValueError) as exc:  # out of range, infinite, NaN for an integer
        raise ValueError(f"{raw!r} does not fit {data_type}") from exc
    registers = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if byte_order == "little":
        registers = [((r & 0xFF) << 8) | (r >> 8) for r in registers]
    if word_order == "little":
        registers.reverse()
    return registers


def decode_registers(
    registers: Sequence[int], data_type: str, word_order: str = "big", byte_order: str = "big"
) -> float:
    """Return the raw value carried by ``registers`` (inverse of :func:`encode_value`)."""
    regs = list(registers)
    if len(regs) != DATA_TYPES[data_type]:
        raise ValueError(f"{data_type} needs {DATA_TYPES[data_type]} registers, got {len(regs)}")
    if word_order == "little":
        regs.reverse()
    if byte_order == "little":
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    data = b"".join(r.to_bytes(2, "big") for r in regs)
    return float(struct.unpack(">" + _STRUCT[data_type], data)[0])


def resolution(data_type: str) -> float:
    """Return the smallest raw step ``data_type`` can carry (1 for integers, 0 for floats)."""
    return 0.0 if data_type.startswith("float") else 1.0


def exception_text(code: int) -> str:
    """Return a Modbus exception code in words, e.g. ``02 illegal data address``."""
    return f"{code:02d} {_EXCEPTIONS.get(code, 'unknown exception')}"
