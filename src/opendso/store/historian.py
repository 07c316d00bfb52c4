"""The historian: append-only measurements with idempotent batch writes and trend queries.

Writes are idempotent on (point, time): a measurement already stored is ignored, so a batch
sent twice (a retry, a replayed buffer) stores nothing new. While the database cannot be reached,
batches go to a :class:`~opendso.store.buffer.DiskBuffer` on local disk and are sent, oldest
first, as soon as a later write or :meth:`Historian.flush` finds the database back.

Unknown point names are rejected (:class:`UnknownPointError` lists them), not registered on the
fly: a typo in a point map must not create a new, silently empty trend. Register points with
:meth:`Historian.register_points`. Non-finite values (NaN, ±inf) are stored without a value and
with quality ``INVALID`` (``±inf`` also ``OVERFLOW``), never dropped. A naive datetime is
rejected. A rejected batch stores nothing.

One :class:`Historian` is meant for one writer; its methods are serialised by a lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from opendso.errors import StoreInputError, StoreUnavailableError, UnknownPointError
from opendso.measurement import Measurement
from opendso.store.buffer import NO_SEQ, ROW_DTYPE, DiskBuffer
from opendso.store.engine import UNAVAILABLE_ERRORS, create_engine, data_dir, default_database_url, safe_url
from opendso.store.events import EventLog
from opendso.store.integrity import open_sealer, private_folder, register
from opendso.store.migrate import upgrade as upgrade_schema
from opendso.store.quality import ALL_QUALITY_BITS, Quality
from opendso.store.schema import measurements, points
from opendso.timeutil import EPOCH, to_epoch_us

log = logging.getLogger(__name__)

_ONE_US = timedelta(microseconds=1)  # the write path's inline conversion (timeutil.to_epoch_us, unrolled)
_INT64_MAX = np.iinfo(np.int64).max
_INVALID = int(Quality.INVALID)
_INF_FLAGS = int(Quality.INVALID | Quality.OVERFLOW)

_SQLITE_INSERT = (
    "INSERT INTO measurements (point_id, ts_us, value, quality, seq) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_PG_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS opendso_measurement_stage "
    "(point_id integer, ts_us bigint, value double precision, quality integer, seq bigint) ON COMMIT DELETE ROWS"
)
_PG_COPY = "COPY opendso_measurement_stage (point_id, ts_us, value, quality, seq) FROM STDIN (FORMAT BINARY)"
_PG_MERGE = (
    "INSERT INTO measurements (point_id, ts_us, value, quality, seq) "
    "SELECT point_id, ts_us, value, quality, seq FROM opendso_measurement_stage ON CONFLICT DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: ``inserted`` new rows (duplicates not counted), or ``buffered`` on disk."""

    received: int
    inserted: int | None
    buffered: bool


def to_us(ts: datetime) -> int:
    """Return microseconds since the epoch of a timezone-aware datetime; reject a naive one."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise StoreInputError(f"naive datetime {ts.isoformat()}: give a timezone-aware time (UTC)")
    return to_epoch_us(ts)


class Historian:
    """Measurements in SQLite or PostgreSQL, with a store-and-forward buffer on disk.

    Build one with :meth:`open`. ``events`` is the event log in the same database.
    """

    def __init__(
        self, engine: sa.Engine, *, buffer_path: str | Path, retry_interval_s: float = 1.0, url: str | None = None
    ) -> None:
        self.engine = engine
        self.url = safe_url(url) if url is not None else safe_url(engine.url)
        self.buffer = DiskBuffer(buffer_path)
        self.retry_interval_s = retry_interval_s
        self.events = EventLog(engine)
        self._lock = threading.RLock()
        self._ids: dict[str, int] = {}
        self._down_since: float | None = None
        self._last_attempt = -math.inf
        self._reload_points()

    # -- opening and closing -------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        buffer_path: str | Path | None = None,
        retry_interval_s: float = 1.0,
        sqlite_busy_timeout_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        key_path: str | Path | None = None,
        must_exist: bool = False,
    ) -> Historian:
        """Open the database at ``url`` (default: :func:`default_database_url`), creating or upgrading its schema.

        ``buffer_path`` is the store-and-forward file (default: beside a SQLite database, or in
        the data folder, one per database URL). ``key_path`` is the integrity key file (default:
        :func:`~opendso.store.integrity.default_key_path`); a new database gets a new key (see
        :mod:`opendso.store.integrity`). ``must_exist``: a SQLite file that does not exist is an
        :class:`StoreInputError` instead of a new, empty database (for commands that inspect one),
        and no key is made. Raises :class:`StoreUnavailableError` when the database cannot be
        reached now, and :class:`~opendso.store.integrity.IntegrityKeyMissingError` when its key
        is missing.
        """
        url = url or default_database_url()
        sqlite_file = sqlite_path(url)
        if must_exist and sqlite_file is not None and not sqlite_file.exists():
            raise StoreInputError(f"no database at {sqlite_file} (give --data-dir or --database-url)")
        if sqlite_file is not None and not sqlite_file.exists():
            # a new database is private from its first byte: folder 700 (when we make it), file 600;
            # SQLite gives its -wal and -shm files the database file's mode
            if not sqlite_file.parent.exists():
                private_folder(sqlite_file.parent)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(sqlite_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        engine = create_engine(url, sqlite_busy_timeout_s=sqlite_busy_timeout_s, connect_timeout_s=connect_timeout_s)
        try:
            upgrade_schema(engine)
            sealer = open_sealer(engine, url, Path(key_path) if key_path is not None else None, create=not must_exist)
        except UNAVAILABLE_ERRORS as exc:
            engine.dispose()
            reason = getattr(exc, "orig", None) or exc
            raise StoreUnavailableError(f"database {safe_url(url)} cannot be reached: {reason}") from exc
        except BaseException:
            engine.dispose()
            raise
        register(engine, sealer)
        if sqlite_file is not None:
            restrict_files(sqlite_file)
        path = Path(buffer_path) if buffer_path is not None else default_buffer_path(url)
        historian = cls(engine, buffer_path=path, retry_interval_s=retry_interval_s, url=url)
        log.info(
            "event=historian_opened url=%s buffer=%s pending=%d",
            safe_url(url),
            path,
            historian.buffer.pending_rows,
        )
        return historian

    def close(self) -> None:
        """Try to send what is buffered, then release the database connections."""
        with self._lock:
            if self.buffer.pending_records:
                self._last_attempt = -math.inf
                self._try_flush()
            self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    # -- points --------------------------------------------------------------------------------

    def register_points(self, names: Iterable[str] | Mapping[str, str | None]) -> dict[str, int]:
        """Register points (names, or name -> unit); return the ids of every point. Existing names are kept."""
        items = dict(names) if isinstance(names, Mapping) else dict.fromkeys(names)
        bad = [n for n in items if not isinstance(n, str) or not n.strip() or len(n) > 200]
        if bad:
            raise StoreInputError(f"point names must be non-empty strings of at most 200 characters: {bad[:10]!r}")
        new = [{"name": n, "unit": u} for n, u in items.items() if n not in self._ids]
        if new:
            with self._lock:
                with self.engine.begin() as conn:
                    conn.execute(_insert_ignore(conn, points), new)
                self._reload_points()
                log.info("event=points_registered count=%d", len(new))
        return dict(self._ids)

    def point_ids(self) -> dict[str, int]:
        """Return every registered point name with its id."""
        return dict(self._ids)

    def _reload_points(self) -> None:
        with self.engine.connect() as conn:
            self._ids = {name: pid for pid, name in conn.execute(sa.select(points.c.id, points.c.name))}
        self._names = {pid: name for name, pid in self._ids.items()}

    # -- writing -------------------------------------------------------------------------------

    def write(self, batch: Iterable[Measurement]) -> WriteResult:
        """Store a batch; duplicates of stored (point, time) pairs are ignored.

        The whole batch is checked first: an unknown point, a naive time, a value that is not a
        number or an undefined quality bit raises :class:`StoreInputError` and stores nothing.
        When the database is unreachable the batch is appended to the disk buffer
        (``buffered=True``) and sent later, in order.
        """
        rows = self._to_rows(batch)
        with self._lock:
            if self.buffer.pending_records and not self._try_flush():
                self.buffer.append(rows)
                return WriteResult(len(rows), None, True)
            try:
                inserted = self._insert(rows)
            except UNAVAILABLE_ERRORS as exc:
                self._went_down(exc)
                self.buffer.append(rows)
                return WriteResult(len(rows), None, True)
            self._came_back()
            return WriteResult(len(rows), inserted, False)

    def flush(self) -> int:
        """Send what the disk buffer holds now; return how many measurements are still waiting."""
        with self._lock:
            self._last_attempt = -math.inf
            self._try_flush()
            return self.buffer.pending_rows

    @property
    def pending(self) -> int:
        """Measurements waiting in the disk buffer for the database."""
        return self.buffer.pending_rows

    def _try_flush(self) -> bool:
        """Send the buffer if the retry interval has passed; True when it is empty afterwards."""
        now = time.monotonic()
        if now - self._last_attempt < self.retry_interval_s:
            return False
        self._last_attempt = now
        try:
            self.buffer.flush(self._insert)
        except UNAVAILABLE_ERRORS as exc:
            self._went_down(exc)
            return False
        self._came_back()
        return True

    def _went_down(self, exc: BaseException) -> None:
        self._last_attempt = time.monotonic()
        if self._down_since is None:
            self._down_since = self._last_attempt
            log.warning(
                "event=database_unavailable backend=%s error=%r buffer=%s",
                self.engine.dialect.name,
                (str(getattr(exc, "orig", None) or exc).splitlines() or [""])[0],
                self.buffer.path,
            )

    def _came_back(self) -> None:
        if self._down_since is not None:
            log.info("event=database_available outage_s=%.3f", time.monotonic() - self._down_since)
            self._down_since = None

    def _to_rows(self, batch: Iterable[Measurement]) -> np.ndarray:
        """Check a batch and return it as buffer rows; raise before anything is stored."""
        items = batch if isinstance(batch, Sequence) else list(batch)
        rows = np.empty(len(items), dtype=ROW_DTYPE)
        ids = self._ids
        pid = [0] * len(items)
        ts_us = [0] * len(items)
        values = [0.0] * len(items)
        quality = [0] * len(items)
        seqs = [NO_SEQ] * len(items)
        unknown: set[str] = set()
        non_finite = 0
        for i, m in enumerate(items):
            point_id = ids.get(m.point)
            if point_id is None:
                unknown.add(str(m.point))
                continue
            pid[i] = point_id
            ts = m.time
            if not isinstance(ts, datetime):
                raise StoreInputError(f"measurement {i} (point {m.point!r}): time {ts!r} is not a datetime")
            if ts.tzinfo is None or ts.utcoffset() is None:
                raise StoreInputError(
                    f"measurement {i} (point {m.point!r}): naive datetime {ts.isoformat()}; "
                    "give a timezone-aware time (UTC); nothing of the batch was stored"
                )
            ts_us[i] = (ts - EPOCH) // _ONE_US
            q = m.quality
            if type(q) is not int:
                if not isinstance(q, int | np.integer):
                    raise StoreInputError(f"measurement {i} (point {m.point!r}): quality {q!r} is not an integer")
                q = int(q)
            if q < 0 or q & ~ALL_QUALITY_BITS:
                raise StoreInputError(
                    f"measurement {i} (point {m.point!r}): quality {q:#x} has bits outside the defined flags "
                    f"({ALL_QUALITY_BITS:#x})"
                )
            try:
                v = float(m.value)
            except (TypeError, ValueError):
                raise StoreInputError(
                    f"measurement {i} (point {m.point!r}): value {m.value!r} is not a number"
                ) from None
            if not math.isfinite(v):
                non_finite += 1
                q |= _INVALID if math.isnan(v) else _INF_FLAGS
                v = math.nan
            values[i] = v
            quality[i] = q
            s = m.sequence
            if s is not None:
                if not isinstance(s, int | np.integer) or not (NO_SEQ < s <= _INT64_MAX):
                    raise StoreInputError(
                        f"measurement {i} (point {m.point!r}): sequence number {s!r} is not a 64-bit integer"
                    )
                seqs[i] = int(s)
        if unknown:
            raise UnknownPointError(unknown)
        if non_finite:
            log.warning("event=non_finite_values count=%d stored_as=invalid", non_finite)
        rows["point_id"] = pid
        rows["ts_us"] = ts_us
        rows["value"] = values
        rows["quality"] = quality
        rows["seq"] = seqs
        return rows

    def _insert(self, rows: np.ndarray) -> int:
        """Insert rows idempotently; return how many were new."""
        if len(rows) == 0:
            return 0
        values: list[float | None] = rows["value"].tolist()
        null_values = bool(np.isnan(rows["value"]).any())
        null_seqs = bool((rows["seq"] == NO_SEQ).any())
        has_nulls = null_values or null_seqs
        if null_values:
            values = [None if math.isnan(v) else v for v in values]  # type: ignore[arg-type]
        seqs: list[int | None] = rows["seq"].tolist()
        if null_seqs:
            seqs = [None if s == NO_SEQ else s for s in seqs]
        columns = (rows["point_id"].tolist(), rows["ts_us"].tolist(), values, rows["quality"].tolist(), seqs)
        params = list(zip(*columns, strict=True))
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                raw: Any = conn.connection.driver_connection
                with raw.cursor() as cur:
                    cur.execute(_PG_STAGE)
                    with cur.copy(_PG_COPY) as copy:
                        if has_nulls:
                            copy.set_types(["int4", "int8", "float8", "int4", "int8"])
                            for row in params:
                                copy.write_row(row)
                        else:
                            copy.write(_pg_binary_copy(rows))
                    cur.execute(_PG_MERGE)
                    return int(cur.rowcount)
            if conn.dialect.name == "sqlite":
                result = conn.exec_driver_sql(_SQLITE_INSERT, params)
                return int(result.rowcount)
            stmt = _insert_ignore(conn, measurements)
            keys = ("point_id", "ts_us", "value", "quality", "seq")
            return int(conn.execute(stmt, [dict(zip(keys, p, strict=True)) for p in params]).rowcount)

    # -- reading -------------------------------------------------------------------------------

    def read_range(
        self, points_: str | Sequence[str], start: datetime, end: datetime, *, include_invalid: bool = True
    ) -> pd.DataFrame:
        """Return the measurements of ``points_`` with ``start <= ts < end``, in time order.

        Columns: ``point``, ``ts`` (UTC), ``value`` (NaN where none was stored), ``quality``, ``seq``.
        """
        ids = self._resolve(points_)
        m = measurements
        query = (
            sa.select(m.c.point_id, m.c.ts_us, m.c.value, m.c.quality, m.c.seq)
            .where(m.c.point_id.in_(ids), m.c.ts_us >= to_us(start), m.c.ts_us < to_us(end))
            .order_by(m.c.ts_us, m.c.point_id)
        )
        if not include_invalid:
            query = query.where(m.c.quality.op("&")(_INVALID) == 0)
        with self.engine.connect() as conn:
            fetched = [tuple(r) for r in conn.execute(query)]
        return self._frame(fetched)

    def last_values(self, points_: Sequence[str] | None = None, *, valid_only: bool = False) -> pd.DataFrame:
        """Return the newest measurement of each point (all registered points by default), by point name.

        ``valid_only`` skips measurements flagged ``INVALID``. Points without a measurement are left out.
        """
        m = measurements
        newer = m.alias("newer")
        inner = sa.select(sa.func.max(newer.c.ts_us)).where(newer.c.point_id == points.c.id).correlate(points)
        if valid_only:
            inner = inner.where(newer.c.quality.op("&")(_INVALID) == 0)
        query = (
            sa.select(m.c.point_id, m.c.ts_us, m.c.value, m.c.quality, m.c.seq)
            .select_from(points.join(m, m.c.point_id == points.c.id))
            .where(m.c.ts_us == inner.scalar_subquery())
            .order_by(points.c.name)
        )
        if points_ is not None:
            query = query.where(points.c.id.in_(self._resolve(points_)))
        with self.engine.connect() as conn:
            fetched = [tuple(r) for r in conn.execute(query)]
        return self._frame(fetched).set_index("point")

    def aggregate(
        self,
        point: str,
        start: datetime,
        end: datetime,
        interval: timedelta,
        *,
        include_invalid: bool = False,
    ) -> pd.DataFrame:
        """Return min, max, mean and count of ``point`` per ``interval`` from ``start`` (inclusive) to ``end``.

        Intervals are aligned on ``start``; intervals without a value are left out. Measurements
        flagged ``INVALID`` are left out unless ``include_invalid``; stored non-finite values never
        count. Columns: ``start`` (UTC, the interval's start), ``min``, ``max``, ``mean``, ``count``.
        """
        step = interval // _ONE_US
        if step <= 0:
            raise StoreInputError(f"aggregate interval {interval} must be positive")
        (pid,) = self._resolve(point)
        t0, t1 = to_us(start), to_us(end)
        m = measurements
        bucket = ((m.c.ts_us - t0) // sa.literal(step, sa.BigInteger)).label("bucket")
        query = (
            sa.select(
                bucket,
                sa.func.min(m.c.value),
                sa.func.max(m.c.value),
                sa.func.avg(m.c.value),
                sa.func.count(m.c.value),
            )
            .where(m.c.point_id == pid, m.c.ts_us >= t0, m.c.ts_us < t1, m.c.value.is_not(None))
            .group_by(bucket)
            .order_by(bucket)
        )
        if not include_invalid:
            query = query.where(m.c.quality.op("&")(_INVALID) == 0)
        with self.engine.connect() as conn:
            fetched = conn.execute(query).all()
        buckets = np.array([int(r[0]) for r in fetched], dtype=np.int64)
        return pd.DataFrame(
            {
                "start": _utc(t0 + buckets * step),
                "min": np.array([r[1] for r in fetched], dtype=float),
                "max": np.array([r[2] for r in fetched], dtype=float),
                "mean": np.array([float(r[3]) for r in fetched], dtype=float),
                "count": np.array([r[4] for r in fetched], dtype=np.int64),
            }
        )

    def count(self, point: str | None = None) -> int:
        """Return how many measurements are stored (of one point, or in all)."""
        query = sa.select(sa.func.count()).select_from(measurements)
        if point is not None:
            query = query.where(measurements.c.point_id == self._resolve(point)[0])
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def _resolve(self, names: str | Sequence[str]) -> list[int]:
        wanted = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in wanted if n not in self._ids]
        if unknown:
            raise UnknownPointError(unknown)
        return [self._ids[n] for n in wanted]

    def _frame(self, fetched: Sequence[tuple[Any, ...]]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "point": pd.Series([self._names[r[0]] for r in fetched], dtype=object),
                "ts": _utc(np.array([r[1] for r in fetched], dtype=np.int64)),
                "value": np.array([np.nan if r[2] is None else r[2] for r in fetched], dtype=float),
                "quality": np.array([r[3] for r in fetched], dtype=np.int64),
                "seq": pd.Series([r[4] for r in fetched], dtype="Int64"),
            }
        )


def _utc(us: np.ndarray) -> pd.DatetimeIndex:
    """Return microseconds since the epoch as UTC timestamps."""
    return pd.DatetimeIndex(us.astype("datetime64[us]")).tz_localize("UTC")


#: One row of PostgreSQL's binary COPY format for the stage table: a field count, then a length
#: and a big-endian value per column (rows without NULLs only: a NULL has no value bytes).
_PG_BINARY_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("point_id_len", ">i4"),
        ("point_id", ">i4"),
        ("ts_us_len", ">i4"),
        ("ts_us", ">i8"),
        ("value_len", ">i4"),
        ("value", ">f8"),
        ("quality_len", ">i4"),
        ("quality", ">i4"),
        ("seq_len", ">i4"),
        ("seq", ">i8"),
    ]
)
_PG_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_PG_BINARY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def _pg_binary_copy(rows: np.ndarray) -> bytes:
    """Return rows without NULLs as one PostgreSQL binary COPY stream (built by numpy, no Python loop)."""
    out = np.empty(len(rows), dtype=_PG_BINARY_ROW)
    out["fields"] = 5
    for name, size in (("point_id", 4), ("ts_us", 8), ("value", 8), ("quality", 4), ("seq", 8)):
        out[f"{name}_len"] = size
        out[name] = rows[name]
    return _PG_BINARY_HEADER + out.tobytes() + _PG_BINARY_TRAILER


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite database URL (None for other databases and in-memory ones)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()


def restrict_files(database: Path) -> None:
    """Make a SQLite database and its WAL and shared-memory files readable by their owner only (600)."""
    for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)


def default_buffer_path(url: str) -> Path:
    """Return the default buffer file of a database: beside a SQLite file, else in the data folder."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return Path(parsed.database).expanduser().with_suffix(".buffer")
    digest = hashlib.sha256(safe_url(url).encode()).hexdigest()[:12]
    return data_dir() / f"historian-buffer-{digest}.bin"


def _insert_ignore(conn: sa.Connection, table: sa.Table) -> Any:
    """Return ``INSERT ... ON CONFLICT DO NOTHING`` for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise StoreInputError(f"unsupported database backend {conn.dialect.name!r}: use SQLite or PostgreSQL")
