"""MQTT: a subscriber that turns JSON messages into measurements, and a publisher for simulators.

A message carries several points of one source (one device or sensor group) as JSON::

    {"seq": 17, "time": "2026-11-23T08:00:00Z", "values": {"u": 10012.5, "p": 120000.0}}

``values`` maps the points' ``key`` (within the message's topic) to numbers (a switch state may
be true/false); ``seq`` is the source's message counter (optional; per topic, and per
``"source"`` field when a message carries one); ``time`` is ISO 8601 with a zone or seconds
since the epoch (optional; the receipt time otherwise).

The subscriber never raises on bad input and never drops a good value because a neighbour in
the same message was bad. It counts (:class:`~opendso.telemetry.base.AdapterCounters`) and logs:
messages that are not JSON objects with a ``values`` object or have a bad ``time`` (``invalid``;
every point of a known topic is handed out with quality IV), values of the wrong type, NaN or
outside the point's range (handed out with IV, OV|IV for out of range), keys and topics not in
the point map (``unknown``), sequence numbers seen before (``duplicate``, the message is dropped:
its values were handed out already), missed sequence numbers (``gaps``) and late arrivals
(``late``). Each message gives one batch. The connection is retried with exponential back-off;
points not heard from within the source's ``stale_after_s`` are handed out once with quality NT.

Commands: MQTT here carries measurements only. The message format above has no command
direction (no command topic, no confirmation, no feedback contract), and the field simulator's
MQTT sources take none, so :class:`MqttSubscriber` refuses every command
(:attr:`~opendso.telemetry.commands.CommandOutcome.REFUSED`, saying so) and publishes nothing;
a command path over MQTT needs a protocol that defines one (e.g. Sparkplug B's NCMD/DCMD with
the device's birth certificate), not an invented topic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from opendso.errors import InputError
from opendso.settings import get_settings
from opendso.telemetry.base import Measurement, TelemetryAdapter, utc_now
from opendso.telemetry.commands import CommandAttempt, CommandRequest, CommandResult
from opendso.telemetry.points import Connection, Point, PointMap
from opendso.telemetry.quality import Quality
from opendso.timeutil import Backoff, from_epoch_us, parse_time

__all__ = ["DEFAULT_BROKER_URL", "MqttPublisher", "MqttSubscriber", "broker_address", "mqtt_subscribers"]

log = logging.getLogger(__name__)

#: Broker used when none is given: ``OPENDSO_MQTT_URL`` or a local Mosquitto.
DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"
#: Sequence numbers remembered per source to tell duplicates from late arrivals.
SEQUENCE_WINDOW = 4096


def broker_address(url: str | None = None) -> tuple[str, int]:
    """Return (host, port) of a broker URL ``mqtt://host[:port]`` (default: ``OPENDSO_MQTT_URL``)."""
    url = url or get_settings().mqtt.url or DEFAULT_BROKER_URL
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ValueError(f"broker URL must look like mqtt://host:port, got {url!r}")
    return parts.hostname, parts.port or 1883


class _Sequence:
    """Sequence numbers of one source: gaps, duplicates, late arrivals and restarts."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.seen: set[int] = set()
        self.order: deque[int] = deque()

    def check(self, seq: int) -> tuple[str, int]:
        """Return (verdict, missed): verdict is "ok", "gap", "duplicate", "late" or "restart"."""
        if seq in self.seen:
            return "duplicate", 0
        verdict, missed = "ok", 0
        if self.last is None:
            self.last = seq
        elif seq > self.last:
            missed = seq - self.last - 1
            verdict = "gap" if missed else "ok"
            self.last = seq
        elif seq < self.last - SEQUENCE_WINDOW:
            verdict = "restart"
            self.seen.clear()
            self.order.clear()
            self.last = seq
        else:
            verdict = "late"
        self.seen.add(seq)
        self.order.append(seq)
        if len(self.order) > SEQUENCE_WINDOW:
            self.seen.discard(self.order.popleft())
        return verdict, missed


@dataclass
class MqttSubscriber(TelemetryAdapter):
    """Subscribe to one MQTT source of a point map; see the module docstring for the behaviour."""

    point_map: PointMap | None = None
    source: str = ""
    broker_url: str | None = None
    topic_prefix: str | None = None  # overrides the source's (tests use a unique one per run)
    qos: int = 1
    backoff_s: float = 0.2
    backoff_max_s: float = 10.0
    _src: Connection = field(init=False, repr=False)
    _by_topic: dict[str, dict[str, Point]] = field(default_factory=dict, init=False, repr=False)
    _sequences: dict[tuple[str, str], _Sequence] = field(default_factory=dict, init=False, repr=False)
    _updated: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _stale: set[str] = field(default_factory=set, init=False, repr=False)
    _last_value: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _subscribed: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.point_map is None or self.source not in self.point_map.sources:
            raise ValueError(f"mqtt subscriber {self.name}: unknown source {self.source!r}")
        self._src = self.point_map.sources[self.source]
        if self._src.protocol != "mqtt":
            raise ValueError(f"mqtt subscriber {self.name}: source {self.source!r} uses {self._src.protocol}")
        self.prefix = self._src.topic_prefix if self.topic_prefix is None else self.topic_prefix
        self._points = self.point_map.points_of(self.source)
        for p in self._points:
            assert p.topic is not None
            assert p.key is not None
            self._by_topic.setdefault(self.prefix + p.topic, {})[p.key] = p
        self.host, self.port = broker_address(self.broker_url)

    async def wait_subscribed(self, timeout: float = 5.0) -> None:
        """Return once the subscription is in place (TimeoutError after ``timeout`` seconds)."""
        await asyncio.wait_for(self._subscribed.wait(), timeout)

    # -- loop ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        now = time.monotonic()
        self._updated = {p.name: now for p in self._points}
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._receive_forever())
            tg.create_task(self._watch_stale())

    async def _receive_forever(self) -> None:
        backoff = Backoff(self.backoff_s, self.backoff_max_s)
        ever_connected = False
        topics = [self.prefix + "#"] if self.prefix else sorted(self._by_topic)
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, timeout=5.0) as client:
                    for topic in topics:
                        await client.subscribe(topic, qos=self.qos)
                    log.info(
                        "event=mqtt_subscribed adapter=%s broker=%s:%d topics=%s",
                        self.name,
                        self.host,
                        self.port,
                        topics,
                    )
                    if ever_connected:
                        self.counters.reconnects += 1
                    ever_connected = True
                    backoff.reset()
                    self._subscribed.set()
                    async for message in client.messages:
                        await self._publish(self.handle(message.topic.value, message.payload))
            except aiomqtt.MqttError as exc:
                self._subscribed.clear()
                self.counters.errors += 1
                delay = backoff.next()
                log.warning(
                    "event=mqtt_connection_lost adapter=%s error=%r retry_in_s=%.3f", self.name, str(exc), delay
                )
                await asyncio.sleep(delay)

    # -- decoding ------------------------------------------------------------------------------
    def handle(self, topic: str, payload: Any) -> list[Measurement]:
        """Return the measurements of one message (counting and logging what is wrong with it)."""
        self.counters.messages += 1
        received = utc_now()
        points = self._by_topic.get(topic)
        if points is None:
            self.counters.unknown += 1
            log.warning("event=mqtt_unknown_topic adapter=%s topic=%s", self.name, topic)
            return []
        data, problem = _decode(payload)
        stamp = received
        if data is not None:
            stamp, time_problem = _message_time(data.get("time"), received)
            problem = problem or time_problem
        if data is None or problem:
            self.counters.invalid += 1  # the message itself; each point's IV is counted on publish
            log.warning("event=mqtt_bad_message adapter=%s topic=%s problem=%r", self.name, topic, problem)
            return [self._mark(p, math.nan, received, Quality.IV, None) for p in points.values()]
        seq = data.get("seq")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
            log.warning("event=mqtt_bad_sequence adapter=%s topic=%s seq=%r", self.name, topic, seq)
            seq = None
        if seq is not None:
            source_id = str(data.get("source", ""))
            verdict, missed = self._sequences.setdefault((topic, source_id), _Sequence()).check(seq)
            if verdict == "duplicate":
                self.counters.duplicate += 1
                log.info("event=mqtt_duplicate adapter=%s topic=%s seq=%d", self.name, topic, seq)
                return []
            if verdict == "gap":
                self.counters.gaps += missed
                log.warning(
                    "event=mqtt_sequence_gap adapter=%s topic=%s seq=%d missed=%d", self.name, topic, seq, missed
                )
            elif verdict == "late":
                self.counters.late += 1
                self.counters.gaps = max(self.counters.gaps - 1, 0)
                log.info("event=mqtt_late adapter=%s topic=%s seq=%d", self.name, topic, seq)
            elif verdict == "restart":
                log.warning("event=mqtt_sequence_restart adapter=%s topic=%s seq=%d", self.name, topic, seq)
        batch: list[Measurement] = []
        for key, raw in data["values"].items():
            p = points.get(key)
            if p is None:
                self.counters.unknown += 1
                log.warning("event=mqtt_unknown_point adapter=%s topic=%s key=%s", self.name, topic, key)
                continue
            batch.append(self._value(p, raw, stamp, seq, topic))
        return batch

    def _value(self, p: Point, raw: Any, stamp: datetime, seq: int | None, topic: str) -> Measurement:
        if isinstance(raw, bool) and p.quantity == "switch":
            raw = float(raw)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            log.warning("event=mqtt_bad_value adapter=%s topic=%s point=%s value=%r", self.name, topic, p.name, raw)
            return self._mark(p, math.nan, stamp, Quality.IV, seq)
        value = p.to_value(float(raw))
        if not math.isfinite(value):
            log.warning("event=mqtt_bad_value adapter=%s topic=%s point=%s value=%r", self.name, topic, p.name, raw)
            return self._mark(p, math.nan, stamp, Quality.IV, seq)
        if not p.in_range(value):
            log.warning(
                "event=mqtt_out_of_range adapter=%s topic=%s point=%s value=%r", self.name, topic, p.name, value
            )
            return self._mark(p, value, stamp, Quality.OV | Quality.IV, seq)
        self._last_value[p.name] = value
        return self._mark(p, value, stamp, Quality.GOOD, seq)

    def _mark(self, p: Point, value: float, stamp: datetime, quality: Quality, seq: int | None) -> Measurement:
        self._updated[p.name] = time.monotonic()
        self._stale.discard(p.name)
        return Measurement(p.name, stamp, value, quality, seq)

    async def _command(self, request: CommandRequest, attempt: CommandAttempt) -> CommandResult:
        """Refuse: MQTT carries measurements only here (see the module docstring)."""
        if not any(p.name == request.point for p in self._points):
            return attempt.refused(f"no point {request.point!r} on MQTT source {self.source!r}")
        return attempt.refused(
            f"MQTT source {self.source!r} carries measurements only: the message format has no command "
            "direction (no command topic, confirmation or feedback), so no command is published"
        )

    async def _watch_stale(self) -> None:
        limit = self._src.stale_after_s
        while True:
            await asyncio.sleep(min(limit / 4, 1.0))
            now = time.monotonic()
            stamp = utc_now()
            batch = []
            for p in self._points:
                if p.name not in self._stale and now - self._updated[p.name] > limit:
                    self._stale.add(p.name)
                    batch.append(Measurement(p.name, stamp, self._last_value.get(p.name, math.nan), Quality.NT))
            if batch:
                log.warning("event=mqtt_points_stale adapter=%s points=%d", self.name, len(batch))
                await self._publish(batch)


def _decode(payload: Any) -> tuple[dict[str, Any] | None, str | None]:
    if isinstance(payload, bytes | bytearray):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            return None, "payload is not UTF-8"
    if not isinstance(payload, str):
        return None, f"payload is {type(payload).__name__}, not JSON text"
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at {exc.pos}"
    if not isinstance(data, dict):
        return None, f"JSON {type(data).__name__}, not an object"
    if not isinstance(data.get("values"), dict):
        return None, "no 'values' object"
    return data, None


def _message_time(raw: Any, received: datetime) -> tuple[datetime, str | None]:
    if raw is None:
        return received, None
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        try:
            return from_epoch_us(round(raw * 1_000_000)), None
        except (OverflowError, ValueError):
            return received, f"time {raw!r} out of range"
    if isinstance(raw, str):
        try:
            return parse_time(raw, "time"), None
        except InputError as exc:
            return received, str(exc)
    return received, f"time {raw!r} is neither ISO 8601 text nor epoch seconds"


def mqtt_subscribers(point_map: PointMap, **options: Any) -> list[MqttSubscriber]:
    """Return one :class:`MqttSubscriber` per MQTT source of ``point_map``."""
    return [
        MqttSubscriber(name=f"mqtt:{s.name}", point_map=point_map, source=s.name, **options)
        for s in point_map.sources_of("mqtt")
    ]


class MqttPublisher:
    """Publish point values the way :class:`MqttSubscriber` reads them (for simulators and tests).

    Sequence numbers count per topic from 1. Use as ``async with MqttPublisher(...) as pub:``.
    """

    def __init__(self, broker_url: str | None = None, *, topic_prefix: str = "", qos: int = 1) -> None:
        self.host, self.port = broker_address(broker_url)
        self.topic_prefix, self.qos = topic_prefix, qos
        self._client: aiomqtt.Client | None = None
        self._seq: dict[str, int] = {}

    async def __aenter__(self) -> MqttPublisher:
        self._client = aiomqtt.Client(self.host, self.port, timeout=5.0)
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.__aexit__(None, None, None)

    def next_sequence(self, topic: str) -> int:
        """Return the next sequence number of ``topic`` (and count it as used)."""
        self._seq[topic] = self._seq.get(topic, 0) + 1
        return self._seq[topic]

    async def publish(
        self,
        topic: str,
        values: Mapping[str, float | bool],
        *,
        at: datetime | None = None,
        seq: int | None = None,
    ) -> int:
        """Publish ``values`` (by point key) on ``topic`` (below the prefix); return the sequence used."""
        seq = self.next_sequence(topic) if seq is None else seq
        body: dict[str, Any] = {"seq": seq, "values": dict(values)}
        if at is not None:
            body["time"] = at.astimezone(UTC).isoformat()
        await self.publish_raw(topic, json.dumps(body, allow_nan=True))
        return seq

    async def publish_raw(self, topic: str, payload: str | bytes) -> None:
        """Publish a payload as it is (tests use it for malformed messages)."""
        if self._client is None:
            raise RuntimeError("MqttPublisher is not connected; use 'async with'")
        await self._client.publish(self.topic_prefix + topic, payload, qos=self.qos)
