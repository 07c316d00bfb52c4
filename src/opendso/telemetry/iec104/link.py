"""IEC 60870-5-104 link layer of a controlled station: link parameters and one connection's state machine.

Pure Python, no third-party code: the RTU simulator (:class:`~opendso.telemetry.iec104.Iec104Server`)
needs to decide every confirmation it sends (select and execute, deactivation, negative
confirmations, COT 44-47 mirrors), which the c104 server decides itself. Frames are built by
:mod:`opendso.telemetry.iec104.codec`.

:class:`LinkConnection` is one connection of a controlled station (clause 5.2-5.3): it starts
in the stopped state and sends I frames only after STARTDT act; it checks every received N(S)
against its V(R) and every N(R) against the frames outstanding, and closes the connection on a
sequence error (clause 5.2); it sends at most ``k`` unacknowledged I frames, acknowledges at the
latest after ``w`` received I frames or ``t2``, closes when a sent I or U frame stays
unacknowledged for ``t1``, and sends TESTFR act after ``t3`` of silence. Received ASDUs go,
in order, to the ``on_asdu`` coroutine. :meth:`LinkConnection.send_asdus` writes the I frames
of several ASDUs in one socket write.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opendso.telemetry.iec104.codec import SEQUENCE_MODULO, U, s_frame, u_frame

if TYPE_CHECKING:
    import c104

log = logging.getLogger(__name__)

__all__ = ["LinkConnection", "LinkParameters"]


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
_MOD = SEQUENCE_MODULO
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
        return self.send_asdus((asdu,))

    def send_asdus(self, asdus: Iterable[bytes]) -> bool:
        """Send (or queue behind the window) several ASDUs, in order, in one socket write.

        False when data transfer is not started, or the queue overflowed (the connection is closed then).
        """
        if self.closed or not self.started:
            return False
        pending = self._pending
        pending.extend(asdus)
        if len(pending) > _MAX_PENDING:
            self.close("send_queue_full")
            return False
        self._send_window()
        return True

    def _send_window(self) -> None:
        """Send queued ASDUs while the window (``k``) has room, as one write."""
        pending, sent, k = self._pending, self._sent, self.link.k
        if not pending or len(sent) >= k:
            return
        frames = []
        now = time.monotonic()
        vs, vr = self._vs, self._vr << 1
        while pending and len(sent) < k:
            asdu = pending.popleft()
            frames.append(bytes([0x68, 4 + len(asdu)]) + struct.pack("<HH", vs << 1, vr) + asdu)
            sent.append((vs, now))
            vs = (vs + 1) % _MOD
        self._vs = vs
        self._unacked_rx = 0  # an I frame acknowledges what was received (clause 5.2)
        self.sent += len(frames)
        self._write(b"".join(frames))

    def _send_s(self) -> None:
        self._write(s_frame(self._vr))
        self._unacked_rx = 0

    def _send_u(self, code: int) -> None:
        self._write(u_frame(code))

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
        elif c1 == U.STARTDT_ACT:
            self.started = True
            self._send_u(U.STARTDT_CON)
        elif c1 == U.STOPDT_ACT:
            self.started = False
            self._pending.clear()
            if self._unacked_rx:
                self._send_s()
            self._send_u(U.STOPDT_CON)
        elif c1 == U.TESTFR_ACT:
            self._send_u(U.TESTFR_CON)
        elif c1 == U.TESTFR_CON:
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
        if self.started:
            self._send_window()
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
                self._send_u(U.TESTFR_ACT)

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
