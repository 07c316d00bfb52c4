"""IEC 60870-5-104 coding without a network: elements written by the RTU read back by the client's decoder.

The client decodes monitoring ASDUs itself (one ``struct.iter_unpack`` per ASDU); these tests
hold that decoder to the element encoder the RTU simulator uses, for every monitoring type, in
both object layouts (SQ = 0 and SQ = 1), and to hostile input (wrong lengths, unknown types).
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime

import pytest

from opendso.errors import AsduError
from opendso.quality import Quality
from opendso.telemetry.iec104.codec import (
    QUALITY_OF_QDS,
    TYPE_ID,
    cp56time2a,
    decode_command,
    decode_cp56time2a,
    decode_monitoring,
    encode_asdu,
    encode_element,
    i_frame,
    qds_of,
    s_frame,
    u_frame,
)

STAMP = datetime(2026, 11, 30, 17, 45, 12, 345_000, tzinfo=UTC)
#: type, raw values sent, raw values expected back
CASES = [
    ("M_ME_NC_1", [12.5, -3.25, 0.0], [12.5, -3.25, 0.0]),
    ("M_ME_TF_1", [1e6, -7.0], [1e6, -7.0]),
    ("M_ME_NB_1", [123.0, -32768.0, 40_000.0], [123.0, -32768.0, 32767.0]),  # clipped, flagged OV
    ("M_ME_TE_1", [5.0], [5.0]),
    ("M_ME_NA_1", [0.5, -1.0], [0.5, -1.0]),
    ("M_ME_TD_1", [0.25], [0.25]),
    ("M_SP_NA_1", [1.0, 0.0], [1.0, 0.0]),
    ("M_SP_TB_1", [1.0], [1.0]),
    ("M_DP_NA_1", [1.0, 0.0], [1.0, 0.0]),
    ("M_DP_TB_1", [0.0], [0.0]),
    ("M_ST_NA_1", [-5.0, 63.0], [-5.0, 63.0]),
    ("M_ST_TB_1", [-64.0], [-64.0]),
]


@pytest.mark.parametrize(("type_name", "sent", "expected"), CASES)
def test_decoder_reads_what_the_rtu_writes(type_name: str, sent: list[float], expected: list[float]) -> None:
    type_id = TYPE_ID[type_name]
    objects = [(1000 + 70_000 * i, encode_element(type_name, raw, 0, STAMP)) for i, raw in enumerate(sent)]
    asdu = encode_asdu(type_id, 3, 7, objects)
    decoded = decode_monitoring(asdu[0], bool(asdu[1] & 0x80), asdu[1] & 0x7F, asdu[6:])
    assert [ioa for ioa, *_ in decoded] == [ioa for ioa, _ in objects]
    assert [raw for _, raw, _, _ in decoded] == expected
    timed = type_name in ("M_ME_TF_1", "M_ME_TE_1", "M_ME_TD_1", "M_SP_TB_1", "M_DP_TB_1", "M_ST_TB_1")
    for _, raw, qds, tag in decoded:
        assert (tag != b"") == timed
        if timed:
            assert decode_cp56time2a(tag) == STAMP
        clipped = math.isnan(raw) or (type_name == "M_ME_NB_1" and abs(raw) == 32767.0)
        assert qds == (0x01 if clipped else 0)


def test_sequence_layout_and_quality_bits() -> None:
    # SQ = 1: one address, then consecutive elements
    body = (500).to_bytes(3, "little") + struct.pack("<fBfB", 1.5, 0x80, 2.5, 0x40)
    decoded = decode_monitoring(13, True, 2, body)
    assert [(ioa, raw, qds) for ioa, raw, qds, _ in decoded] == [(500, 1.5, 0x80), (501, 2.5, 0x40)]
    assert QUALITY_OF_QDS[0x80] == Quality.IV
    assert QUALITY_OF_QDS[0x40 | 0x01] == Quality.NT | Quality.OV
    assert qds_of(Quality.IV | Quality.NT | Quality.ESTIMATED) == 0xC0  # no QDS bit for ESTIMATED


def test_double_point_intermediate_and_indeterminate_are_invalid() -> None:
    body = b"".join(ioa.to_bytes(3, "little") + bytes([dpi | 0x20]) for ioa, dpi in ((1, 0), (2, 3), (3, 2)))
    decoded = decode_monitoring(3, False, 3, body)
    assert math.isnan(decoded[0][1])
    assert decoded[0][2] == 0xA0  # IV added, SB kept
    assert math.isnan(decoded[1][1])
    assert decoded[1][2] == 0xA0
    assert decoded[2][1:3] == (1.0, 0x20)


@pytest.mark.parametrize(
    ("type_id", "sequence", "count", "body"),
    [
        (13, False, 2, b"\x00" * 15),  # one octet short
        (13, False, 0, b""),  # no objects
        (13, True, 2, b"\x00" * 12),  # sequence, one octet short
        (45, False, 1, b"\x00" * 4),  # a command type is not monitoring data
        (200, False, 1, b"\x00" * 4),  # no such type
    ],
)
def test_malformed_monitoring_asdus_are_refused(type_id: int, sequence: bool, count: int, body: bytes) -> None:
    with pytest.raises(AsduError):
        decode_monitoring(type_id, sequence, count, body)


def test_time_tags() -> None:
    assert decode_cp56time2a(cp56time2a(STAMP)) == STAMP
    invalid = bytearray(cp56time2a(STAMP))
    invalid[2] |= 0x80  # IV bit of the minutes
    assert decode_cp56time2a(bytes(invalid)) is None
    assert decode_cp56time2a(bytes([0, 0, 0, 0, 0, 13, 26])) is None  # month 13, day 0


def test_command_elements_and_frames() -> None:
    assert decode_command("C_DC_NA_1", bytes([2])) == 1.0
    assert decode_command("C_DC_NA_1", bytes([1])) == 0.0
    assert decode_command("C_DC_NA_1", bytes([3])) is None  # not permitted
    assert decode_command("C_SE_NC_1", struct.pack("<fB", math.inf, 0)) is None
    assert decode_command("C_SE_NA_1", struct.pack("<hB", -16384, 0)) == -0.5
    assert i_frame(3, 5, b"\x01") == bytes([0x68, 5, 6, 0, 10, 0, 1])
    assert s_frame(5) == bytes([0x68, 4, 1, 0, 10, 0])
    assert u_frame(0x07) == bytes([0x68, 4, 7, 0, 0, 0])
