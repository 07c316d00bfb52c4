"""IEC 60870-5-104 on the wire: APCI framing, ASDU coding, and the controlled station's link.

Pure Python, no third-party code: the RTU simulator (:class:`~opendso.telemetry.iec104.Iec104Server`)
needs to decide every confirmation it sends (select and execute, deactivation, negative
confirmations, COT 44-47 mirrors), which the c104 server decides itself.

APCI (IEC 60870-5-104 clause 5.1): start octet 0x68, length of the rest (4..253), four control
octets. I format (bit 1 of octet 1 = 0) carries an ASDU and the send and receive sequence
numbers N(S), N(R) (15 bits each); S format (octet 1 = 0x01) acknowledges with N(R) only;
U format (bits 1-2 = 11) is STARTDT, STOPDT or TESTFR, act or con.

ASDU (IEC 60870-5-101 clause 7.1, with the field lengths IEC 60870-5-104 clause 9 fixes): type
identification (1 octet), variable structure qualifier (SQ bit and number of objects), cause of
transmission (2 octets: cause in bits 1-6, P/N bit 7, T bit 8; originator address), common
address (2 octets), then information objects of a 3-octet address and the type's element.

:class:`LinkConnection` is one connection of a controlled station (clause 5.2-5.3): it starts
in the stopped state and sends I frames only after STARTDT act; it checks every received N(S)
against its V(R) and every N(R) against the frames outstanding, and closes the connection on a
sequence error (clause 5.2); it sends at most ``k`` unacknowledged I frames, acknowledges at the
latest after ``w`` received I frames or ``t2``, closes when a sent I or U frame stays
unacknowledged for ``t1``, and sends TESTFR act after ``t3`` of silence. Received ASDUs go,
in order, to the ``on_asdu`` coroutine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import c104

log = logging.getLogger(__name__)

__all__ = [
    "CP56_SIZE",
    "ELEMENT_SIZE",
    "TYPE_ID",
    "Asdu",
    "AsduError",
    "Cot",
    "LinkConnection",
    "LinkParameters",
    "cp56time2a",
    "encode_asdu",
    "objects_per_asdu",
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


class AsduError(ValueError):
    """Octets that do not form an ASDU of a known structure."""


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


def cp56time2a(stamp: datetime) -> bytes:
    """Return the seven-octet time tag CP56Time2a (IEC 60870-5-101 clause 7.2.6.18) of ``stamp`` in UTC."""
    t = stamp.astimezone(UTC)
    ms = t.second * 1000 + t.microsecond // 1000
    return struct.pack("<HBBBBB", ms, t.minute, t.hour, t.day | (t.isoweekday() << 5), t.month, t.year % 100)


# -- link parameters ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkParameters:
    """IEC 60870-5-104 link parameters; the defaults are the standard's (IEC 60870-5-104 9.6).

    ``t0_s`` connection establishment, ``t1_s`` acknowledgement of a sent APDU, ``t2_s``
    acknowledgement without data, ``t3_s`` test frame on an idle link; ``k`` unacknowledged
    APDUs sent, ``w`` received APDUs before acknowledging. Times are whole seconds (>= 1).
    """

    t0_s: int = 30
    t1_s: int = 15
    t2_s: int = 10
    t3_s: int = 20
    k: int = 12
    w: int = 8

    def __post_init__(self) -> None:
        for name in ("t0_s", "t1_s", "t2_s", "t3_s", "k", "w"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"IEC 104 link parameter {name} must be an integer >= 1, got {value!r}")
        if self.t2_s >= self.t1_s:
            raise ValueError(f"IEC 104 link parameters: t2 ({self.t2_s} s) must be below t1 ({self.t1_s} s)")
        if self.w > self.k:
            raise ValueError(f"IEC 104 link parameters: w ({self.w}) must not exceed k ({self.k})")

    def apply(self, params: c104.ProtocolParameters) -> None:
        """Write these parameters into a c104 connection's protocol parameters (the client side)."""
        params.connection_timeout = self.t0_s
        params.message_timeout = self.t1_s
        params.confirm_interval = self.t2_s
        params.keep_alive_interval = self.t3_s
        params.send_window_size = self.k
        params.receive_window_size = self.w


# -- the link ---------------------------------------------------------------------------------
_STARTDT_ACT, _STARTDT_CON = 0x07, 0x0B
_STOPDT_ACT, _STOPDT_CON = 0x13, 0x23
_TESTFR_ACT, _TESTFR_CON = 0x43, 0x83
_MOD = 1 << 15
#: ASDUs queued beyond the window before the peer is taken for dead (t1 closes it sooner).
_MAX_PENDING = 100_000
_TICK_S = 0.1


class LinkConnection:
    """One controlled-station connection (see the module docstring); created by the server per client."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: LinkParameters,
        on_asdu: Callable[[LinkConnection, bytes], Awaitable[None]],
        *,
        name: str = "iec104",
    ) -> None:
        self.reader, self.writer, self.link, self.on_asdu = reader, writer, link, on_asdu
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.name = name
        self.started = False
        self.closed = False
        self.close_reason = ""
        self._vs = 0  # next N(S) to send
        self._vr = 0  # next N(S) expected
        self._acked = 0  # oldest of our I frames not yet acknowledged
        self._sent: collections.deque[tuple[int, float]] = collections.deque()  # (N(S), monotonic)
        self._pending: collections.deque[bytes] = collections.deque()
        self._unacked_rx = 0
        self._first_unacked_rx = 0.0
        self._last_rx = time.monotonic()
        self._testfr_since: float | None = None
        self.received = 0
        self.sent = 0

    # -- sending ------------------------------------------------------------------------------
    def send_asdu(self, asdu: bytes) -> bool:
        """Send (or queue behind the window) one ASDU; False when data transfer is not started."""
        if self.closed or not self.started:
            return False
        if len(self._sent) < self.link.k and not self._pending:
            self._send_i(asdu)
        else:
            if len(self._pending) >= _MAX_PENDING:
                self.close("send_queue_full")
                return False
            self._pending.append(asdu)
        return True

    def _send_i(self, asdu: bytes) -> None:
        control = struct.pack("<HH", self._vs << 1, self._vr << 1)
        self._write(bytes([0x68, 4 + len(asdu)]) + control + asdu)
        self._sent.append((self._vs, time.monotonic()))
        self._vs = (self._vs + 1) % _MOD
        self._unacked_rx = 0  # an I frame acknowledges what was received (clause 5.2)
        self.sent += 1

    def _send_s(self) -> None:
        self._write(bytes([0x68, 4, 0x01, 0x00]) + struct.pack("<H", self._vr << 1))
        self._unacked_rx = 0

    def _send_u(self, code: int) -> None:
        self._write(bytes([0x68, 4, code, 0, 0, 0]))

    def _write(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)

    # -- receiving ----------------------------------------------------------------------------
    async def serve(self) -> None:
        """Read frames until the peer leaves or the link fails; then close."""
        timers = asyncio.create_task(self._timers(), name=f"iec104-timers-{self.peer}")
        try:
            while not self.closed:
                head = await self.reader.readexactly(2)
                if head[0] != 0x68 or not 4 <= head[1] <= 253:
                    self.close(f"bad_apci start=0x{head[0]:02x} length={head[1]}")
                    break
                frame = await self.reader.readexactly(head[1])
                self._last_rx = time.monotonic()
                await self._on_frame(frame)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close("peer_closed")
        finally:
            timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timers
            self.close(self.close_reason or "done")

    async def _on_frame(self, frame: bytes) -> None:
        c1 = frame[0]
        if c1 & 0x01 == 0:  # I format
            if len(frame) < 4:
                self.close("short_i_frame")
                return
            ns, nr = (frame[0] | frame[1] << 8) >> 1, (frame[2] | frame[3] << 8) >> 1
            if ns != self._vr:
                self.close(f"sequence_error expected_ns={self._vr} got={ns}")
                return
            self._vr = (self._vr + 1) % _MOD
            if not self._acknowledge(nr):
                return
            self.received += 1
            if self._unacked_rx == 0:
                self._first_unacked_rx = time.monotonic()
            self._unacked_rx += 1
            if self._unacked_rx >= self.link.w:
                self._send_s()
            if self.started:
                await self.on_asdu(self, frame[4:])
            else:
                log.warning("event=iec104_rtu_i_frame_while_stopped peer=%s", self.peer)
        elif c1 & 0x03 == 0x01:  # S format
            self._acknowledge((frame[2] | frame[3] << 8) >> 1)
        elif c1 == _STARTDT_ACT:
            self.started = True
            self._send_u(_STARTDT_CON)
        elif c1 == _STOPDT_ACT:
            self.started = False
            self._pending.clear()
            if self._unacked_rx:
                self._send_s()
            self._send_u(_STOPDT_CON)
        elif c1 == _TESTFR_ACT:
            self._send_u(_TESTFR_CON)
        elif c1 == _TESTFR_CON:
            self._testfr_since = None
        else:
            self.close(f"unknown_u_frame 0x{c1:02x}")

    def _acknowledge(self, nr: int) -> bool:
        """Take N(R) from the peer: drop our frames it confirms; close on a number we never sent."""
        outstanding = (self._vs - self._acked) % _MOD
        confirmed = (nr - self._acked) % _MOD
        if confirmed > outstanding:
            self.close(f"sequence_error ack={nr} outstanding={self._acked}..{self._vs}")
            return False
        for _ in range(confirmed):
            self._sent.popleft()
        self._acked = nr
        while self._pending and len(self._sent) < self.link.k and self.started:
            self._send_i(self._pending.popleft())
        return True

    async def _timers(self) -> None:
        link = self.link
        while not self.closed:
            await asyncio.sleep(_TICK_S)
            now = time.monotonic()
            if self._sent and now - self._sent[0][1] > link.t1_s:
                self.close("t1_expired")
            elif self._testfr_since is not None and now - self._testfr_since > link.t1_s:
                self.close("t1_expired_testfr")
            elif self._unacked_rx and now - self._first_unacked_rx >= link.t2_s:
                self._send_s()
            elif self._testfr_since is None and now - self._last_rx >= link.t3_s:
                self._testfr_since = now
                self._send_u(_TESTFR_ACT)

    def close(self, reason: str) -> None:
        """Close the connection (idempotent); ``reason`` goes to the log."""
        if self.closed:
            return
        self.closed, self.close_reason = True, reason
        self.started = False
        self._pending.clear()
        if reason not in ("peer_closed", "server_stop"):
            log.warning("event=iec104_rtu_link_closed server=%s peer=%s reason=%s", self.name, self.peer, reason)
        self.writer.close()
