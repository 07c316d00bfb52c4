"""The historian on SQLite and on the real PostgreSQL server: idempotence, order, queries, outages.

PostgreSQL tests use ``OPENDSO_TEST_POSTGRES_URL`` (default: the local server), a database
created for each test and dropped afterwards; they skip when the server is unreachable, except
under ``CI=true`` where they fail.
"""

from __future__ import annotations

import contextlib
import math
import socket
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import postgres_or_skip
from sqlalchemy.engine import make_url

from opendso.errors import StoreInputError, StoreUnavailableError, UnknownPointError
from opendso.store import DiskBuffer, Historian, Measurement, Quality, migrate
from opendso.store.buffer import NO_SEQ, ROW_DTYPE
from opendso.store.quality import ALL_QUALITY_BITS
from opendso.store.schema import metadata
from opendso.store.testing import TcpProxy, fresh_postgres_database

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def historian(db_url: str, tmp_path: Path) -> Iterator[Historian]:
    """A historian on a fresh database with points p0..p4 registered."""
    h = Historian.open(db_url, buffer_path=tmp_path / "buffer.bin", retry_interval_s=0.0)
    h.register_points([f"p{i}" for i in range(5)])
    yield h
    h.close()


def _batch(point: str, seconds: range | list[int], value_of: float = 1.0) -> list[Measurement]:
    return [Measurement(point, T0 + timedelta(seconds=s), value_of * s, sequence=s) for s in seconds]


# -- schema ------------------------------------------------------------------------------------


def test_open_creates_schema_that_matches_the_tables_and_is_idempotent(db_url: str, tmp_path: Path) -> None:
    Historian.open(db_url, buffer_path=tmp_path / "b").close()
    h = Historian.open(db_url, buffer_path=tmp_path / "b")  # second open: already at head, no change
    with h.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    h.close()
    assert diff == []
    assert version == migrate.head_revision()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    with Historian.open(f"sqlite:///{tmp_path / 'x.db'}") as h, h.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1


def test_unreachable_database_on_open_is_a_clear_error(tmp_path: Path) -> None:
    with socket_port() as port, pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
        Historian.open(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test", buffer_path=tmp_path / "b")


# -- idempotence and order -----------------------------------------------------------------------


def test_writing_the_same_batch_twice_stores_it_once(historian: Historian) -> None:
    batch = _batch("p0", range(1000)) + _batch("p1", range(500))
    first = historian.write(batch)
    second = historian.write(batch)
    assert (first.inserted, first.buffered) == (1500, False)
    assert (second.inserted, second.buffered) == (0, False)
    assert historian.count() == 1500
    assert historian.count("p1") == 500


def test_a_duplicate_keeps_the_first_value(historian: Historian) -> None:
    historian.write([Measurement("p0", T0, 1.0)])
    historian.write([Measurement("p0", T0, 2.0, quality=Quality.SUBSTITUTED)])
    got = historian.read_range("p0", T0, T0 + timedelta(seconds=1))
    assert got["value"].tolist() == [1.0]
    assert got["quality"].tolist() == [0]


def test_out_of_order_writes_come_back_in_time_order(historian: Historian) -> None:
    rng = np.random.default_rng(3)
    seconds = rng.permutation(2000).tolist()
    for chunk in np.array_split(np.array(seconds), 7):
        historian.write(_batch("p2", chunk.tolist()))
    got = historian.read_range("p2", T0, T0 + timedelta(hours=1))
    expected_ts = pd.to_datetime([T0 + timedelta(seconds=s) for s in range(2000)], utc=True)
    assert got["ts"].is_monotonic_increasing
    assert (got["ts"].to_numpy() == expected_ts.to_numpy()).all()
    assert got["value"].tolist() == [float(s) for s in range(2000)]
    assert got["seq"].tolist() == list(range(2000))


def test_other_timezones_are_stored_as_utc(historian: Historian) -> None:
    cet = timezone(timedelta(hours=1))
    historian.write([Measurement("p0", datetime(2026, 3, 1, 1, 0, tzinfo=cet), 5.0)])
    got = historian.read_range("p0", T0, T0 + timedelta(seconds=1))
    assert got["ts"].tolist() == [pd.Timestamp(T0)]


# -- queries against an independent reference ---------------------------------------------------


def _random_data(rng: np.random.Generator, n: int) -> pd.DataFrame:
    frames = []
    for point in ("p0", "p1", "p3"):
        offsets = np.sort(rng.choice(3 * 3600 * 1000, size=n, replace=False))  # distinct milliseconds
        quality = np.where(rng.random(n) < 0.1, int(Quality.INVALID), 0)
        quality = np.where(rng.random(n) < 0.05, quality | int(Quality.STALE), quality)
        frames.append(
            pd.DataFrame(
                {
                    "point": point,
                    "ts": pd.Timestamp(T0) + pd.to_timedelta(offsets, unit="ms"),
                    "value": rng.normal(230.0, 5.0, n),
                    "quality": quality,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _write_frame(historian: Historian, data: pd.DataFrame) -> None:
    shuffled = data.sample(frac=1.0, random_state=1)
    batch = [
        Measurement(r.point, r.ts.to_pydatetime(), r.value, int(r.quality)) for r in shuffled.itertuples(index=False)
    ]
    for start in range(0, len(batch), 1000):
        historian.write(batch[start : start + 1000])


def test_last_values_and_aggregates_match_pandas(historian: Historian) -> None:
    data = _random_data(np.random.default_rng(7), 3000)
    _write_frame(historian, data)

    last = historian.last_values()
    ref_last = data.loc[data.groupby("point")["ts"].idxmax()].set_index("point")
    assert list(last.index) == ["p0", "p1", "p3"]
    assert (last["ts"] == ref_last["ts"]).all()
    assert np.allclose(last["value"], ref_last["value"], rtol=0, atol=1e-12)
    assert (last["quality"] == ref_last["quality"]).all()

    valid = data[(data["quality"] & int(Quality.INVALID)) == 0]
    last_valid = historian.last_values(["p1"], valid_only=True)
    ref_valid = valid[valid["point"] == "p1"].sort_values("ts").iloc[-1]
    assert last_valid.loc["p1", "ts"] == ref_valid["ts"]
    assert last_valid.loc["p1", "value"] == pytest.approx(ref_valid["value"], abs=1e-12)

    start, end, interval = T0 + timedelta(minutes=7), T0 + timedelta(hours=2, minutes=50), timedelta(minutes=15)
    agg = historian.aggregate("p3", start, end, interval)
    sel = valid[(valid["point"] == "p3") & (valid["ts"] >= start) & (valid["ts"] < end)]
    bucket = (sel["ts"] - pd.Timestamp(start)) // pd.Timedelta(interval)
    ref = sel.groupby(bucket)["value"].agg(["min", "max", "mean", "count"])
    assert len(agg) == len(ref)
    assert (agg["start"].to_numpy() == (pd.Timestamp(start) + ref.index.to_numpy() * pd.Timedelta(interval))).all()
    for column in ("min", "max", "mean"):
        assert np.allclose(agg[column].to_numpy(), ref[column].to_numpy(), rtol=1e-12, atol=0), column
    assert (agg["count"].to_numpy() == ref["count"].to_numpy()).all()

    raw = historian.read_range(["p0", "p1"], T0, T0 + timedelta(hours=3), include_invalid=False)
    ref_raw = valid[valid["point"].isin(["p0", "p1"])].sort_values(["ts", "point"])
    assert len(raw) == len(ref_raw)
    assert raw["ts"].is_monotonic_increasing
    assert np.allclose(raw["value"].to_numpy(), ref_raw["value"].to_numpy(), rtol=0, atol=1e-12)


# -- bad input -----------------------------------------------------------------------------------


def test_non_finite_values_are_stored_invalid(historian: Historian) -> None:
    historian.write(
        [
            Measurement("p0", T0, math.nan),
            Measurement("p0", T0 + timedelta(seconds=1), math.inf, quality=Quality.STALE),
            Measurement("p0", T0 + timedelta(seconds=2), -math.inf),
            Measurement("p0", T0 + timedelta(seconds=3), 4.0),
        ]
    )
    got = historian.read_range("p0", T0, T0 + timedelta(seconds=10))
    assert len(got) == 4
    assert got["value"].isna().tolist() == [True, True, True, False]
    assert got["quality"].tolist() == [
        Quality.INVALID,
        Quality.INVALID | Quality.OVERFLOW | Quality.STALE,
        Quality.INVALID | Quality.OVERFLOW,
        Quality.GOOD,
    ]
    agg = historian.aggregate("p0", T0, T0 + timedelta(seconds=10), timedelta(seconds=10), include_invalid=True)
    assert agg["count"].tolist() == [1]
    assert agg["mean"].tolist() == [4.0]


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (Measurement("nope", T0, 1.0), UnknownPointError, "'nope'"),
        (Measurement("p0", datetime(2026, 3, 1, 12, 0), 1.0), StoreInputError, "measurement 2 .*naive datetime"),
        (Measurement("p0", T0, "abc"), StoreInputError, "measurement 2 .*'abc' is not a number"),  # type: ignore[arg-type]
        (Measurement("p0", T0, 1.0, quality=1 << 20), StoreInputError, "bits outside the defined flags"),
        (Measurement("p0", T0, 1.0, sequence=2**70), StoreInputError, "sequence number"),
    ],
)
def test_bad_input_is_named_and_stores_nothing(
    historian: Historian, bad: Measurement, error: type[Exception], message: str
) -> None:
    historian.write(_batch("p0", range(100, 110)))
    batch = [*_batch("p1", [1, 2]), bad, *_batch("p1", [3])]
    with pytest.raises(error, match=message):
        historian.write(batch)
    assert historian.count() == 10
    assert historian.pending == 0


def test_unknown_points_are_all_listed(historian: Historian) -> None:
    with pytest.raises(UnknownPointError) as info:
        historian.write([Measurement("x2", T0, 1.0), Measurement("p0", T0, 1.0), Measurement("x1", T0, 1.0)])
    assert info.value.names == ["x1", "x2"]
    with pytest.raises(UnknownPointError, match="'zz'"):
        historian.read_range("zz", T0, T0)
    assert historian.count() == 0


def test_naive_query_bounds_are_rejected(historian: Historian) -> None:
    with pytest.raises(StoreInputError, match="naive datetime"):
        historian.read_range("p0", datetime(2026, 1, 1), T0)


# -- the database going away in the middle of a stream ------------------------------------------


def _stream(n_batches: int, per_batch: int) -> list[list[Measurement]]:
    """Batches with duplicates across neighbours and shuffled order inside each batch."""
    rng = np.random.default_rng(11)
    batches = []
    for b in range(n_batches):
        seconds = list(range(b * per_batch - per_batch // 4, (b + 1) * per_batch))  # overlaps the previous batch
        seconds = [s for s in seconds if s >= 0]
        order = rng.permutation(len(seconds))
        batches.append(
            [
                Measurement(f"p{s % 3}", T0 + timedelta(seconds=s), float(s), sequence=s)
                for s in np.array(seconds)[order].tolist()
            ]
        )
    return batches


def _expected(batches: list[list[Measurement]]) -> set[tuple[str, float]]:
    return {(m.point, m.value) for batch in batches for m in batch}


def _check_stored(historian: Historian, expected: set[tuple[str, float]]) -> None:
    got = historian.read_range(["p0", "p1", "p2"], T0, T0 + timedelta(days=1))
    stored = list(zip(got["point"], got["value"], strict=True))
    assert len(stored) == len(expected), "lost or duplicated measurements"
    assert set(stored) == expected
    assert got["ts"].is_monotonic_increasing
    assert historian.count() == len(expected)


def test_sqlite_locked_mid_stream_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "opendso.db"
    buffer = tmp_path / "opendso.buffer"
    h = Historian.open(f"sqlite:///{db}", buffer_path=buffer, retry_interval_s=0.0, sqlite_busy_timeout_s=0.05)
    h.register_points(["p0", "p1", "p2"])
    batches = _stream(30, 200)
    blocker = sqlite3.connect(db, timeout=0.05)
    try:
        results = []
        for i, batch in enumerate(batches):
            if i == 10:
                blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database: every write fails
            if i == 20:
                blocker.rollback()
            results.append(h.write(batch))
            if i == 15:
                # the writing process dies while the database is out: its buffer stays on disk
                assert h.pending > 0
                h.engine.dispose()
                h = Historian.open(
                    f"sqlite:///{db}", buffer_path=buffer, retry_interval_s=0.0, sqlite_busy_timeout_s=0.05
                )
    finally:
        blocker.close()
    assert [r.buffered for r in results] == [False] * 10 + [True] * 10 + [False] * 10
    assert h.flush() == 0
    _check_stored(h, _expected(batches))
    h.close()
    assert not buffer.exists()


def test_postgres_cut_off_mid_stream_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    postgres_or_skip()
    with fresh_postgres_database() as url:
        target = make_url(url)
        proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
        proxy.start()
        proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        buffer = tmp_path / "pg.buffer"
        h = Historian.open(proxied, buffer_path=buffer, retry_interval_s=0.0, connect_timeout_s=1)
        try:
            h.register_points(["p0", "p1", "p2"])
            batches = _stream(30, 200)
            results = []
            for i, batch in enumerate(batches):
                if i == 10:
                    proxy.stop()  # the database becomes unreachable: connections cut, new ones refused
                if i == 20:
                    # the writer dies while the database is out; the database returns and a new
                    # writer starts on the same buffer file
                    assert h.pending > 0
                    h.engine.dispose()
                    proxy.start()
                    h = Historian.open(proxied, buffer_path=buffer, retry_interval_s=0.0, connect_timeout_s=1)
                    assert h.pending == sum(len(b) for b in batches[10:20])
                results.append(h.write(batch))
            assert [r.buffered for r in results] == [False] * 10 + [True] * 10 + [False] * 10
            assert h.flush() == 0
            _check_stored(h, _expected(batches))
        finally:
            h.close()
            proxy.stop()
    assert not buffer.exists()


# -- the disk buffer -----------------------------------------------------------------------------


def _rows(start: int, n: int) -> np.ndarray:
    rows = np.zeros(n, dtype=ROW_DTYPE)
    rows["point_id"] = 1
    rows["ts_us"] = np.arange(start, start + n)
    rows["value"] = np.arange(start, start + n, dtype=float)
    rows["seq"] = NO_SEQ
    return rows


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_torn_last_record_is_dropped_never_read(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "b.bin"
    buf = DiskBuffer(path)
    for k in range(3):
        buf.append(_rows(k * 100, 100))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-37]  # the crash cut the last record short
    else:
        data[-5] ^= 0xFF  # the last record's payload does not match its checksum
    path.write_bytes(bytes(data))

    reopened = DiskBuffer(path)
    assert (reopened.pending_records, reopened.pending_rows) == (2, 200)
    sent: list[np.ndarray] = []
    assert reopened.flush(sent.append) == 200
    assert np.concatenate(sent)["ts_us"].tolist() == list(range(200))
    assert not path.exists()


def test_a_damaged_record_in_the_middle_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "b.bin"
    buf = DiskBuffer(path)
    for k in range(3):
        buf.append(_rows(k * 10, 10))
    data = bytearray(path.read_bytes())
    record = len(data) // 3
    data[record + 20] ^= 0xFF  # inside the second record's payload
    path.write_bytes(bytes(data))
    reopened = DiskBuffer(path)
    assert reopened.pending_rows == 10
    aside = tmp_path / "b.bin.corrupt-0"
    assert aside.stat().st_size == 2 * record


def test_a_flush_cut_short_keeps_the_rest_in_order(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "b.bin")
    for k in range(4):
        buf.append(_rows(k * 10, 10))
    sent: list[int] = []

    def send(rows: np.ndarray) -> None:
        if len(sent) == 20:
            raise sa.exc.OperationalError("INSERT", {}, Exception("server went away"))
        sent.extend(rows["ts_us"].tolist())

    with pytest.raises(sa.exc.OperationalError):
        buf.flush(send)
    assert (buf.pending_records, buf.pending_rows) == (2, 20)
    assert DiskBuffer(tmp_path / "b.bin").pending_rows == 20
    buf.flush(lambda rows: sent.extend(rows["ts_us"].tolist()))
    assert sent == list(range(40))


# -- helpers -------------------------------------------------------------------------------------


@contextlib.contextmanager
def socket_port() -> Iterator[int]:
    """Yield a loopback port that nothing listens on, for the length of the block."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("seq", [2**62, None], ids=["binary-copy", "row-by-row"])
def test_extreme_values_round_trip(historian: Historian, seq: int | None) -> None:
    old = datetime(1960, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    batch = [
        Measurement("p4", old, -1e300, quality=ALL_QUALITY_BITS, sequence=seq),
        Measurement("p4", T0, 5e-324, quality=0, sequence=None if seq is None else -(2**62)),
    ]
    historian.write(batch)
    got = historian.read_range("p4", old, T0 + timedelta(seconds=1))
    assert got["ts"].tolist() == [pd.Timestamp(old), pd.Timestamp(T0)]
    assert got["value"].tolist() == [-1e300, 5e-324]
    assert got["quality"].tolist() == [ALL_QUALITY_BITS, 0]
    assert got["seq"].tolist() == ([2**62, -(2**62)] if seq is not None else [pd.NA, pd.NA])
