"""Store-and-forward buffer: an append-only file of checksummed records on local disk.

While the database cannot be reached the historian appends each batch here, flushed to disk
(``fsync``) before the write returns, and sends the records in order when the database is
back. Each record is framed as::

    magic b"ODB1" | payload length (uint32 LE) | CRC-32 of the payload (uint32 LE) | payload

and the payload is the batch as a numpy structured array (:data:`ROW_DTYPE`, little endian).
A record cut short by a crash, or whose checksum does not match, is never read as data: a torn
last record is dropped (logged), and anything after a damaged record in the middle of the file
is moved aside to ``<file>.corrupt-<n>`` for inspection rather than guessed at.

Sending a record twice is harmless because the historian's writes are idempotent on
(point, time), which is what makes the flush free of duplicates even when it is cut short.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAGIC = b"ODB1"
_HEADER = struct.Struct("<4sII")

#: One buffered measurement: point id, microseconds since the epoch (UTC), value (NaN for none),
#: quality bits and source sequence number (:data:`NO_SEQ` for none).
ROW_DTYPE = np.dtype([("point_id", "<i4"), ("ts_us", "<i8"), ("value", "<f8"), ("quality", "<i4"), ("seq", "<i8")])

#: Sequence number stored for "no sequence number".
NO_SEQ = np.iinfo(np.int64).min


class DiskBuffer:
    """An append-only file of measurement batches that survives a crash of this process."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records = 0
        self._rows = 0
        for rows in self._scan(repair=True):
            self._records += 1
            self._rows += len(rows)

    @property
    def pending_rows(self) -> int:
        """Measurements waiting in the buffer."""
        return self._rows

    @property
    def pending_records(self) -> int:
        """Batches waiting in the buffer."""
        return self._records

    def append(self, rows: np.ndarray) -> None:
        """Append one batch and make it durable (fsync) before returning."""
        payload = np.ascontiguousarray(rows, dtype=ROW_DTYPE).tobytes()
        frame = _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
        with open(self.path, "ab") as fh:
            fh.write(frame)
            fh.flush()
            os.fsync(fh.fileno())
        self._records += 1
        self._rows += len(rows)

    def flush(self, send: Callable[[np.ndarray], object]) -> int:
        """Send every buffered batch, oldest first, with ``send``; return the measurements sent.

        ``send`` must be idempotent. When it raises, the batches already sent are removed from
        the file and the rest stay, in order, for the next flush; the exception propagates.
        """
        if self._records == 0:
            return 0
        sent_rows = 0
        sent_records = 0
        try:
            for rows in self._scan(repair=True):
                send(rows)
                sent_rows += len(rows)
                sent_records += 1
        except BaseException:
            self._drop_first(sent_records)
            raise
        self.path.unlink(missing_ok=True)
        self._records = 0
        self._rows = 0
        log.info("event=buffer_flushed rows=%d records=%d path=%s", sent_rows, sent_records, self.path)
        return sent_rows

    # -- internals ---------------------------------------------------------------------------

    def _scan(self, *, repair: bool) -> Iterator[np.ndarray]:
        """Yield the good records in file order; cut off a torn tail (``repair``)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            data = fh.read()
        offset = 0
        end = len(data)
        while offset < end:
            bad = self._check(data, offset)
            if bad is not None:
                if repair:
                    self._cut(data, offset, bad)
                return
            (_, length, _) = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            yield np.frombuffer(data[start : start + length], dtype=ROW_DTYPE).copy()
            offset = start + length

    @staticmethod
    def _check(data: bytes, offset: int) -> str | None:
        """Return why the record at ``offset`` is unusable, or None when it is good."""
        if offset + _HEADER.size > len(data):
            return "truncated header"
        magic, length, crc = _HEADER.unpack_from(data, offset)
        if magic != MAGIC:
            return "bad magic"
        start = offset + _HEADER.size
        if start + length > len(data):
            return "truncated payload"
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            return "checksum mismatch"
        if length % ROW_DTYPE.itemsize:
            return "payload length not a whole number of rows"
        return None

    def _cut(self, data: bytes, offset: int, reason: str) -> None:
        """Keep the good records before ``offset``; drop a torn tail or move damaged bytes aside."""
        tail = data[offset:]
        last = self._is_last_record(data, offset)
        if last:
            log.warning(
                "event=buffer_torn_record_dropped path=%s offset=%d bytes=%d reason=%s",
                self.path,
                offset,
                len(tail),
                reason,
            )
        else:
            n = 0
            while (aside := self.path.with_name(f"{self.path.name}.corrupt-{n}")).exists():
                n += 1
            aside.write_bytes(tail)
            log.error(
                "event=buffer_corrupt_record path=%s offset=%d bytes=%d reason=%s moved_to=%s",
                self.path,
                offset,
                len(tail),
                reason,
                aside,
            )
        with open(self.path, "r+b") as fh:
            fh.truncate(offset)
            fh.flush()
            os.fsync(fh.fileno())

    @staticmethod
    def _is_last_record(data: bytes, offset: int) -> bool:
        """True when no other record starts after ``offset`` (a crash can only tear the last one)."""
        return data.find(MAGIC, offset + 1) < 0

    def _drop_first(self, count: int) -> None:
        """Remove the first ``count`` good records from the file, atomically."""
        if count == 0:
            return
        kept = list(self._scan(repair=False))[count:]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as fh:
            for rows in kept:
                payload = rows.tobytes()
                fh.write(_HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._records = len(kept)
        self._rows = sum(len(r) for r in kept)
