"""The one measurement record and the latest values of a point list, kept as arrays by point index."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from opendso.errors import InputError
from opendso.measurement import LatestValues, Measurement
from opendso.quality import Quality

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def test_the_latest_source_time_wins_per_point() -> None:
    latest = LatestValues(["a", "b", "c"])
    assert len(latest) == 0
    assert "a" not in latest
    latest.update([Measurement("a", T0, 1.0), Measurement("b", T0, 2.0, int(Quality.STALE), sequence=7)])
    latest.update([Measurement("a", T0 - timedelta(seconds=1), 99.0)])  # older: ignored
    latest.update([Measurement("b", T0, 3.0)])  # same time: the later arrival wins
    latest.update([Measurement("c", T0 + timedelta(seconds=1), 4.0), Measurement("c", T0, 5.0)])  # in one batch too
    assert latest.value.tolist() == [1.0, 3.0, 4.0]
    assert latest.quality.tolist() == [0, 0, 0]
    assert latest.received.all()
    assert latest.sequence.tolist() == [-1, -1, -1]
    assert latest["c"] == Measurement("c", T0 + timedelta(seconds=1), 4.0)
    assert list(latest) == ["a", "b", "c"]


def test_as_a_mapping_it_gives_back_the_records() -> None:
    other_zone = timezone(timedelta(hours=1))
    records = [
        Measurement("a", T0.astimezone(other_zone), 1.5, int(Quality.INVALID), sequence=3),
        Measurement("b", T0, float("nan")),
        Measurement("not listed", T0, 7.0, int(Quality.STALE)),
    ]
    latest = LatestValues(["a", "b", "c"])
    latest.update(records)
    assert len(latest) == 3
    assert set(latest) == {"a", "b", "not listed"}
    got = latest["a"]
    assert (got.point, got.time, got.value, got.quality, got.sequence) == ("a", T0, 1.5, int(Quality.INVALID), 3)
    assert got.time is records[0].time  # the source time as it came
    assert np.isnan(latest["b"].value)
    assert latest["not listed"] is records[2]  # a point outside the list is kept as its record
    with pytest.raises(KeyError):
        latest["c"]  # listed, never received
    assert latest.good().tolist() == [False, False, False]  # invalid, NaN, never received
    assert latest.counts() == (3, 1)  # held; good quality (the NaN's), the other point's stale


def test_a_snapshot_does_not_change_with_later_updates() -> None:
    latest = LatestValues(["a"])
    latest.update([Measurement("a", T0, 1.0)])
    snap = latest.snapshot()
    latest.update([Measurement("a", T0 + timedelta(seconds=1), 2.0), Measurement("x", T0, 0.0)])
    assert snap.value.tolist() == [1.0]
    assert "x" not in snap
    assert latest.value.tolist() == [2.0]
    latest.clear()
    assert len(latest) == 0
    assert snap["a"].value == 1.0


def test_a_mapping_files_each_record_under_its_key() -> None:
    latest = LatestValues.of(["a", "b"], {"a": Measurement("b", T0, 1.0)})
    assert latest["a"].point == "a"
    assert "b" not in latest
    assert LatestValues.of(["a"], [Measurement("a", T0, 2.0)])["a"].value == 2.0


def test_hostile_input_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        LatestValues(["a", "a"])
    latest = LatestValues(["a"])
    with pytest.raises(InputError, match="naive"):
        latest.update([Measurement("a", datetime(2026, 1, 1), 1.0)])  # a naive time
    assert object() not in latest
    empty = LatestValues([])
    empty.update([Measurement("\x00", T0, 1.0)])
    assert list(empty) == ["\x00"]


def test_updates_from_another_thread_never_tear_a_snapshot() -> None:
    names = [f"p{k}" for k in range(500)]
    latest = LatestValues(names)
    stop = threading.Event()

    def writer() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            latest.update(Measurement(n, T0 + timedelta(microseconds=k), float(k), k % 2) for n in names)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(200):
            snap = latest.snapshot()
            # a batch is applied under the lock: a snapshot holds one whole batch, value and quality alike
            assert len(set(snap.value[snap.received].tolist())) <= 1
            assert (snap.quality[snap.received] == snap.value[snap.received].astype(np.int64) % 2).all()
    finally:
        stop.set()
        thread.join()
