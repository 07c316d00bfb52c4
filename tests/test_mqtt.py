"""MQTT subscriber against a real broker on loopback.

Broker policy: ``OPENDSO_TEST_MQTT_URL`` (default ``mqtt://127.0.0.1:1883``, the Mosquitto that
CI runs on this machine). When the broker is unreachable these tests fail under ``CI=true`` and
are skipped otherwise. Every test uses its own topic prefix, so runs never see each other.
"""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from leaks import assert_no_leaks

from opendso.telemetry import Measurement, MqttPublisher, MqttSubscriber, Quality
from opendso.telemetry.points import PointMap, parse_point_map

BROKER_URL = os.environ.get("OPENDSO_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    with assert_no_leaks():
        yield


def make_map(stale_after_s: float = 60.0) -> PointMap:
    points: list[dict[str, Any]] = []
    for meter in ("m1", "m2"):
        for key, quantity in (("u", "u"), ("p", "p"), ("q", "q")):
            point: dict[str, Any] = {
                "name": f"{meter}/{key}",
                "element": meter,
                "quantity": quantity,
                "source": "meters",
            }
            point |= {"topic": meter, "key": key}
            if quantity == "u":
                point |= {"min_value": 0.0, "max_value": 30_000.0}
            points.append(point)
    points.append(
        {"name": "m1/cb", "element": "cb", "quantity": "switch", "source": "meters", "topic": "m1", "key": "cb"}
    )
    data = {"sources": {"meters": {"protocol": "mqtt", "stale_after_s": stale_after_s}}, "points": points}
    return parse_point_map(data, file="test")


@pytest_asyncio.fixture
async def pair(broker_url: str) -> AsyncIterator[tuple[MqttSubscriber, MqttPublisher]]:
    prefix = f"opendso-test/{uuid.uuid4().hex}/"
    subscriber = MqttSubscriber(
        name="mqtt", point_map=make_map(), source="meters", broker_url=broker_url, topic_prefix=prefix
    )
    async with subscriber, MqttPublisher(broker_url, topic_prefix=prefix) as publisher:
        await subscriber.wait_subscribed()
        yield subscriber, publisher


async def gather(
    subscriber: MqttSubscriber, until: Callable[[list[Measurement]], bool], timeout: float = 5.0
) -> list[Measurement]:
    got: list[Measurement] = []
    async with asyncio.timeout(timeout):
        while not until(got):
            got.extend(await subscriber.next_batch())
    return got


@pytest.mark.asyncio
async def test_good_values_arrive_batched_per_message(pair: tuple[MqttSubscriber, MqttPublisher]) -> None:
    subscriber, publisher = pair
    at = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    await publisher.publish("m1", {"u": 10_050.0, "p": 1.5e5, "q": -2e4, "cb": True}, at=at)
    await publisher.publish("m2", {"u": 10_010.0, "p": 7e4})
    first = await subscriber.next_batch(5.0)
    second = await subscriber.next_batch(5.0)
    assert {m.point: m.value for m in first} == {"m1/u": 10_050.0, "m1/p": 1.5e5, "m1/q": -2e4, "m1/cb": 1.0}
    assert all(m.time == at and m.sequence == 1 and m.quality == Quality.GOOD for m in first)
    assert {m.point: m.value for m in second} == {"m2/u": 10_010.0, "m2/p": 7e4}
    assert second[0].time.tzinfo is not None
    c = subscriber.counters
    assert (c.received, c.invalid, c.unknown, c.duplicate, c.gaps) == (6, 0, 0, 0, 0)


@pytest.mark.asyncio
async def test_gaps_duplicates_and_late_messages(pair: tuple[MqttSubscriber, MqttPublisher]) -> None:
    subscriber, publisher = pair
    for seq, value in ((1, 1.0), (2, 2.0), (2, 2.0), (5, 5.0), (3, 3.0), (6, 6.0)):
        await publisher.publish("m1", {"p": value}, seq=seq)
    got = await gather(subscriber, lambda g: any(m.sequence == 6 for m in g))
    assert [m.sequence for m in got] == [1, 2, 5, 3, 6]  # the duplicate is handed out once
    assert [m.value for m in got] == [1.0, 2.0, 5.0, 3.0, 6.0]
    c = subscriber.counters
    assert (c.duplicate, c.gaps, c.late) == (1, 1, 1)  # 3 and 4 missed, 3 came late: 4 is still missing


@pytest.mark.asyncio
async def test_malformed_payloads_are_counted_and_good_values_kept(pair: tuple[MqttSubscriber, MqttPublisher]) -> None:
    subscriber, publisher = pair
    await publisher.publish_raw("m2", b"not json {")
    await publisher.publish_raw("m2", "[1, 2, 3]")
    await publisher.publish_raw("m2", '{"seq": 1, "values": {"u": 1.0}, "time": "yesterday"}')
    await publisher.publish_raw("nobody", '{"values": {"u": 1.0}}')
    # one message mixing good and bad values: NaN, a string, out of range, unknown key, bad switch state
    await publisher.publish_raw(
        "m1",
        '{"seq": 7, "values": {"u": 99999.0, "p": NaN, "q": "12", "zz": 1.0, "cb": 0.5}}',
    )
    await publisher.publish("m1", {"u": 10_000.0, "p": 1.0, "q": 2.0, "cb": False}, seq=8)
    got = await gather(subscriber, lambda g: any(m.sequence == 8 for m in g))
    by_point: dict[str, list[Measurement]] = {}
    for m in got:
        by_point.setdefault(m.point, []).append(m)
    # three unreadable messages on a known topic: each point of m2 handed out invalid three times
    assert [m.quality for m in by_point["m2/u"]] == [Quality.IV] * 3
    assert all(math.isnan(m.value) for m in by_point["m2/u"])
    u_bad, u_good = by_point["m1/u"]
    assert (u_bad.quality, u_bad.value) == (Quality.OV | Quality.IV, 99_999.0)
    assert (u_good.quality, u_good.value) == (Quality.GOOD, 10_000.0)
    assert by_point["m1/p"][0].quality == Quality.IV
    assert math.isnan(by_point["m1/p"][0].value)
    assert by_point["m1/q"][0].quality == Quality.IV
    assert by_point["m1/cb"][0].quality == Quality.OV | Quality.IV
    assert [m.value for m in got if m.sequence == 8] == [10_000.0, 1.0, 2.0, 0.0]
    c = subscriber.counters
    assert c.unknown == 2  # the unknown topic and the unknown key
    assert c.invalid == 3 + 3 * 3 + 4  # three bad messages + their 3 points each + 4 bad values
    assert c.messages == 6
    assert subscriber.running


@pytest.mark.asyncio
async def test_silent_points_go_stale_then_good(broker_url: str) -> None:
    prefix = f"opendso-test/{uuid.uuid4().hex}/"
    subscriber = MqttSubscriber(
        name="mqtt", point_map=make_map(stale_after_s=0.3), source="meters", broker_url=broker_url, topic_prefix=prefix
    )
    async with subscriber, MqttPublisher(broker_url, topic_prefix=prefix) as publisher:
        await subscriber.wait_subscribed()
        await publisher.publish("m1", {"u": 10_000.0})
        got = await gather(subscriber, lambda g: any(m.point == "m1/u" and m.quality & Quality.NT for m in g))
        stale = [m for m in got if m.point == "m1/u" and m.quality & Quality.NT]
        assert stale[0].value == 10_000.0  # last value, flagged not topical
        await publisher.publish("m1", {"u": 10_100.0})
        got = await gather(subscriber, lambda g: any(m.point == "m1/u" and m.quality == Quality.GOOD for m in g))
    assert [m.value for m in got if m.point == "m1/u" and m.quality == Quality.GOOD] == [10_100.0]
