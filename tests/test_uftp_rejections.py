"""Every UFTP rejection the DSO's endpoint gives, each asserted as the other party receives it.

Transport refusals are HTTP status codes (Shapeshifter specification, appendix "Message transport
mechanism", "Error handling"); functional ones are the response message with Result="Rejected" and
the RejectionReason of the chapter "Message validation" (the texts of shapeshifter_uftp.exceptions).
Real library clients and services over loopback; waits are bounded, never sleeps.
"""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from shapeshifter_uftp import (
    DPrognosis,
    DPrognosisISP,
    FlexOffer,
    FlexOfferOption,
    FlexOfferOptionISP,
    FlexOfferRevocation,
    FlexOrder,
    FlexOrderISP,
    FlexOrderResponse,
    FlexSettlementResponse,
    ShapeshifterAgrDsoClient,
    ShapeshifterCroDsoClient,
    SignedMessage,
    transport,
)
from shapeshifter_uftp.exceptions import ClientTransportException
from shapeshifter_uftp.uftp import AcceptedDisputed, FlexOrderSettlementStatus
from uftp_world import AGR, AGR2, CP1, CRO, DEADLINE_S, DSO, World, cheapest_full, uftp_world
from xsdata.models.datatype import XmlDate, XmlDuration

from opendso.errors import RemoteError
from opendso.markets.uftp import Participant, connection_address, new_keypair


@pytest.fixture
def world() -> World:
    with uftp_world() as w:
        yield w


def _xml_date(d: Any) -> XmlDate:
    return XmlDate(d.year, d.month, d.day)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_offer(world: World, **overrides: Any) -> FlexOffer:
    """An unsolicited FlexOffer at CP1 for ISPs 33..36 tomorrow, valid for an hour; ``overrides`` replace fields."""
    fields: dict[str, Any] = {
        "message_id": str(uuid.uuid4()),
        "isp_duration": XmlDuration("PT15M"),
        "time_zone": "Europe/Amsterdam",
        "period": _xml_date(world.tomorrow),
        "congestion_point": CP1.id,
        "expiration_date_time": _iso(world.clock.now + timedelta(hours=1)),
        "unsolicited": True,
        "offer_options": [
            FlexOfferOption(
                option_reference="full",
                isps=[FlexOfferOptionISP(power=-50_000, start=33, duration=4)],
                price=Decimal("4.0"),
            )
        ],
        "currency": "EUR",
    }
    fields.update(overrides)
    return FlexOffer(**fields)


def answer_to(world: World, message_id: str) -> Any:
    assert world.agr.wait_for(lambda a: a.response_to(message_id) is not None, DEADLINE_S), "no answer"
    return world.agr.response_to(message_id)


def assert_rejected(world: World, message: Any, reason: str) -> None:
    sent = world.agr.send(DSO, "DSO", message)
    answer = answer_to(world, sent)
    assert (str(answer.result), answer.rejection_reason) == ("Rejected", reason)


def agr_client(world: World, *, key: str | None = None, domain: str = AGR, recipient: str = DSO) -> Any:
    return ShapeshifterAgrDsoClient(
        sender_domain=domain,
        signing_key=key or world.agr.keypair.private_key,
        recipient_domain=recipient,
        recipient_endpoint=world.directory.endpoint(DSO, "DSO"),
    )


def fill(message: Any, sender: str, recipient: str = DSO) -> Any:
    message.sender_domain = sender
    message.recipient_domain = recipient
    message.time_stamp = _iso(datetime.now(UTC))
    message.message_id = message.message_id or str(uuid.uuid4())
    message.conversation_id = message.conversation_id or str(uuid.uuid4())
    return message


def signed_xml(message: Any, *, envelope_domain: str, role: str, key: str) -> bytes:
    body = transport.seal_message(message, key)
    return transport.to_xml(SignedMessage(sender_domain=envelope_domain, sender_role=role, body=body)).encode()


def post(world: World, body: bytes, content_type: str = "text/xml; charset=utf-8") -> requests.Response:
    return requests.post(
        world.directory.endpoint(DSO, "DSO"), data=body, headers={"Content-Type": content_type}, timeout=DEADLINE_S
    )


# --------------------------------------------------------------------------- transport: HTTP status codes


def test_signature_made_with_the_wrong_key_is_401(world: World) -> None:
    with pytest.raises(ClientTransportException) as caught:
        agr_client(world, key=new_keypair().private_key).send_flex_offer(make_offer(world))
    assert caught.value.response.status_code == 401
    assert world.dso.open_offers() == ()


def test_forged_sender_signed_by_another_participant_is_401(world: World) -> None:
    # AGR signs, but the envelope claims AGR2 (known, with its own key)
    body = signed_xml(
        fill(make_offer(world), AGR2), envelope_domain=AGR2, role="AGR", key=world.agr.keypair.private_key
    )
    assert post(world, body).status_code == 401


def test_unknown_sender_is_419(world: World) -> None:
    stranger = new_keypair()
    with pytest.raises(ClientTransportException) as caught:
        agr_client(world, key=stranger.private_key, domain="stranger.example.com").send_flex_offer(make_offer(world))
    assert caught.value.response.status_code == 419


def test_malformed_xml_is_400(world: World) -> None:
    assert post(world, b"<SignedMessage SenderDomain='agr-one.example.com'").status_code == 400
    assert post(world, b"\x00\xff not xml at all").status_code == 400


def test_sealed_body_that_is_not_a_uftp_message_is_400(world: World) -> None:
    from base64 import b64decode

    from nacl.bindings import crypto_sign

    sealed = crypto_sign(b"<NotUftp/>", b64decode(world.agr.keypair.private_key))
    xml = transport.to_xml(SignedMessage(sender_domain=AGR, sender_role="AGR", body=sealed)).encode()
    assert post(world, xml).status_code == 400


def test_wrong_content_type_is_400(world: World) -> None:
    body = signed_xml(fill(make_offer(world), AGR), envelope_domain=AGR, role="AGR", key=world.agr.keypair.private_key)
    assert post(world, body, content_type="application/json").status_code == 400
    assert post(world, body, content_type="text/xml; charset=latin-1").status_code == 400


def test_oversized_body_is_413_without_reading_it(world: World) -> None:
    assert post(world, b"<" + b"x" * 300_000 + b"/>").status_code == 413


def test_missing_content_length_is_411(world: World) -> None:
    url = urlsplit(world.directory.endpoint(DSO, "DSO"))
    with socket.create_connection((url.hostname, url.port), timeout=DEADLINE_S) as s:
        s.sendall(f"POST {url.path} HTTP/1.0\r\nHost: x\r\nContent-Type: text/xml\r\n\r\n".encode())
        s.shutdown(socket.SHUT_WR)
        reply = s.makefile("rb").readline()
    assert reply.split()[1] == b"411"


def test_flood_from_one_address_is_429() -> None:
    with uftp_world(gate_kwargs={"rate_limit": 5, "rate_window_s": 60.0}, ready=False) as w:
        codes = [post(w, b"<junk/>").status_code for _ in range(8)]
    assert codes[:5] == [400] * 5  # taken (and refused as malformed)
    assert codes[5:] == [429] * 3  # over the policy: not even parsed


# --------------------------------------------------------------------------- generic rejection reasons


def test_barred_sender(world: World) -> None:
    world.directory.bar(AGR, "AGR")
    assert_rejected(world, make_offer(world), "Barred Sender")


def test_unknown_recipient(world: World) -> None:
    offer = make_offer(world)
    agr_client(world, recipient="other-dso.example.com").send_flex_offer(offer)
    answer = answer_to(world, offer.message_id)
    assert (str(answer.result), answer.rejection_reason) == ("Rejected", "Unknown Recipient")


def test_invalid_sender_envelope_and_message_disagree(world: World) -> None:
    # AGR2 signs and sends, but the inner message says it comes from AGR: the answer goes to AGR2
    offer = fill(make_offer(world), AGR)
    body = signed_xml(offer, envelope_domain=AGR2, role="AGR", key=world.agr2.keypair.private_key)
    assert post(world, body).status_code == 200
    assert world.agr2.wait_for(lambda a: a.response_to(offer.message_id) is not None, DEADLINE_S)
    assert world.agr2.response_to(offer.message_id).rejection_reason == "Invalid Sender"


def test_invalid_sender_role_for_the_message_type(world: World) -> None:
    # a CRO may not send a FlexOffer
    rogue = new_keypair()
    world.directory.register(Participant("rogue-cro.example.com", "CRO", rogue.public_key, "http://127.0.0.1:9/x"))
    client = ShapeshifterCroDsoClient(
        sender_domain="rogue-cro.example.com",
        signing_key=rogue.private_key,
        recipient_domain=DSO,
        recipient_endpoint=world.directory.endpoint(DSO, "DSO"),
    )
    client._send_message(make_offer(world))
    assert world.dso.wait_for(
        lambda d: any(e.direction == "in" and e.reason == "Invalid Sender" for e in d.log.entries()), DEADLINE_S
    )


def test_invalid_message_type_the_dso_does_not_receive(world: World) -> None:
    order = FlexOrder(
        isp_duration=XmlDuration("PT15M"),
        period=_xml_date(world.tomorrow),
        congestion_point=CP1.id,
        isps=[FlexOrderISP(power=-1, start=33)],
        price=Decimal(1),
        currency="EUR",
        order_reference="X",
        unsolicited=True,
    )
    agr_client(world)._send_message(order)
    assert world.dso.wait_for(
        lambda d: any(
            e.kind == "FlexOrderResponse" and e.reason == "Invalid Message: 'FlexOrder'" for e in d.log.entries()
        ),
        DEADLINE_S,
    )


def test_duplicate_identifier_with_other_content(world: World) -> None:
    first = make_offer(world)
    world.agr.send(DSO, "DSO", first)
    assert str(answer_to(world, first.message_id).result) == "Accepted"
    again = make_offer(world, message_id=first.message_id, congestion_point="ea1.2020-01.org.opendso:cp-2")
    agr_client(world)._send_message(again)
    assert world.agr.wait_for(
        lambda a: any(m.rejection_reason == "Duplicate Identifier" for m in a.received("FlexOfferResponse")), DEADLINE_S
    )
    assert len(world.dso.open_offers()) == 1


def test_replayed_message_is_already_submitted_and_not_processed_twice(world: World) -> None:
    offer = fill(make_offer(world), AGR)
    body = signed_xml(offer, envelope_domain=AGR, role="AGR", key=world.agr.keypair.private_key)
    assert post(world, body).status_code == 200
    assert world.agr.wait_for(lambda a: len(a.received("FlexOfferResponse")) == 1, DEADLINE_S)
    assert post(world, body).status_code == 200  # the very same signed bytes, replayed
    assert world.agr.wait_for(lambda a: len(a.received("FlexOfferResponse")) == 2, DEADLINE_S)
    results = [(str(m.result), m.rejection_reason) for m in world.agr.received("FlexOfferResponse")]
    assert results == [("Accepted", None), ("Rejected", "Already Submitted")]
    assert len(world.dso.open_offers()) == 1


# --------------------------------------------------------------------------- FlexOffer


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"isp_duration": XmlDuration("PT30M")}, "ISP Duration Rejected"),
        ({"time_zone": "America/New_York"}, "TimeZone Rejected"),
        ({"congestion_point": "ea1.2020-01.org.opendso:cp-9"}, "Invalid Congestion Point"),
        (
            {
                "offer_options": [
                    FlexOfferOption(
                        option_reference="a", isps=[FlexOfferOptionISP(power=-1, start=97)], price=Decimal(1)
                    )
                ]
            },
            "ISPs Out Of Bounds",
        ),
        (
            {
                "offer_options": [
                    FlexOfferOption(
                        option_reference="a",
                        isps=[
                            FlexOfferOptionISP(power=-1, start=33, duration=4),
                            FlexOfferOptionISP(power=-1, start=34),
                        ],
                        price=Decimal(1),
                    )
                ]
            },
            "ISP Conflict",
        ),
        ({"unsolicited": None, "flex_request_message_id": str(uuid.uuid4())}, "Unknown Reference"),
        ({"d_prognosis_message_id": str(uuid.uuid4())}, "Unknown Reference"),
    ],
    ids=[
        "isp-duration",
        "time-zone",
        "congestion-point",
        "isps-out-of-bounds",
        "isp-conflict",
        "unknown-request",
        "unknown-prognosis",
    ],
)
def test_flex_offer_rejection(world: World, change: dict[str, Any], reason: str) -> None:
    assert_rejected(world, make_offer(world, **change), reason)


def test_flex_offer_period_out_of_bounds(world: World) -> None:
    yesterday = world.tomorrow - timedelta(days=2)
    assert_rejected(world, make_offer(world, period=_xml_date(yesterday)), "Period Out Of Bounds")


def test_flex_offer_expiration_out_of_bounds(world: World) -> None:
    past = _iso(world.clock.now - timedelta(minutes=1))
    assert_rejected(world, make_offer(world, expiration_date_time=past), "Expiration DateTime Out Of Bounds")


def _solicited(world: World, request_id: str, **change: Any) -> FlexOffer:
    return make_offer(world, unsolicited=None, flex_request_message_id=request_id, **change)


def _request(world: World) -> str:
    (request_id,) = world.dso.request_flex(
        CP1.id, world.needs(4), [-50_000.0] * 4, expires=world.clock.now + timedelta(minutes=30), aggregators=[AGR]
    )
    assert world.dso.wait_for(lambda d: len(d.open_offers()) == 1, DEADLINE_S)  # the AGR's own answer
    return request_id


def test_flex_offer_for_a_request_to_another_aggregator_is_unknown_reference(world: World) -> None:
    request_id = _request(world)
    other = _solicited(world, request_id)
    sent = world.agr2.send(DSO, "DSO", other)
    assert world.agr2.wait_for(lambda a: a.response_to(sent) is not None, DEADLINE_S)
    assert world.agr2.response_to(sent).rejection_reason == "Unknown Reference"


def test_flex_offer_reference_period_mismatch(world: World) -> None:
    request_id = _request(world)
    later = _xml_date(world.tomorrow + timedelta(days=1))
    assert_rejected(world, _solicited(world, request_id, period=later), "Reference Period Mismatch")


def test_flex_offer_after_the_request_expired(world: World) -> None:
    request_id = _request(world)
    world.clock.now += timedelta(minutes=31)
    offer = _solicited(world, request_id, expiration_date_time=_iso(world.clock.now + timedelta(hours=1)))
    assert_rejected(world, offer, "Reference Message Expired")


def test_flex_offer_for_a_superseded_request_is_revoked_reference(world: World) -> None:
    request_id = _request(world)
    world.dso.request_flex(
        CP1.id, world.needs(4), [-40_000.0] * 4, expires=world.clock.now + timedelta(minutes=30), aggregators=[AGR]
    )
    assert_rejected(world, _solicited(world, request_id), "Reference Message Revoked")


# --------------------------------------------------------------------------- FlexOfferRevocation


def test_revocation_of_unknown_revoked_and_ordered_offers(world: World) -> None:
    assert_rejected(world, FlexOfferRevocation(flex_offer_message_id=str(uuid.uuid4())), "Unknown Reference")
    offer = make_offer(world)
    world.agr.send(DSO, "DSO", offer)
    assert str(answer_to(world, offer.message_id).result) == "Accepted"
    first = world.agr.send(DSO, "DSO", FlexOfferRevocation(flex_offer_message_id=offer.message_id))
    assert str(answer_to(world, first).result) == "Accepted"
    assert world.dso.offer_status(offer.message_id).revoked
    assert world.dso.open_offers() == ()
    assert_rejected(world, FlexOfferRevocation(flex_offer_message_id=offer.message_id), "Reference Message Revoked")
    # an ordered offer cannot be revoked
    _request(world)
    world.dso.place_orders(cheapest_full)
    ordered = world.dso.orders()[0].offer_id
    assert_rejected(
        world,
        FlexOfferRevocation(flex_offer_message_id=ordered),
        "Invalid Message: the offered flexibility has already been ordered",
    )


def test_revocation_of_an_expired_offer(world: World) -> None:
    offer = make_offer(world)
    world.agr.send(DSO, "DSO", offer)
    assert str(answer_to(world, offer.message_id).result) == "Accepted"
    world.clock.now += timedelta(hours=2)
    assert_rejected(world, FlexOfferRevocation(flex_offer_message_id=offer.message_id), "Reference Message Expired")


# --------------------------------------------------------------------------- responses and D-Prognosis


def test_responses_to_messages_never_sent_are_refused(world: World) -> None:
    client = agr_client(world)
    client._send_message(FlexOrderResponse(flex_order_message_id=str(uuid.uuid4())))
    client._send_message(
        FlexSettlementResponse(
            flex_settlement_message_id=str(uuid.uuid4()),
            flex_order_settlement_statuses=[
                FlexOrderSettlementStatus(order_reference="X", disposition=AcceptedDisputed.ACCEPTED)
            ],
        )
    )
    assert world.dso.wait_for(
        lambda d: sum(1 for e in d.log.entries() if e.direction == "in" and e.reason == "Unknown Reference") == 2,
        DEADLINE_S,
    )
    assert world.dso.orders() == ()


def test_d_prognosis_checks_and_acceptance(world: World) -> None:
    def prognosis(**change: Any) -> DPrognosis:
        fields: dict[str, Any] = {
            "isp_duration": XmlDuration("PT15M"),
            "period": _xml_date(world.tomorrow),
            "congestion_point": CP1.id,
            "revision": 1,
            "isps": [DPrognosisISP(power=150_000, start=1, duration=96)],
        }
        fields.update(change)
        return DPrognosis(**fields)

    ok = world.agr.send(DSO, "DSO", prognosis())
    assert str(answer_to(world, ok).result) == "Accepted"
    assert_rejected(world, prognosis(congestion_point="ea1.2020-01.org.opendso:cp-9"), "Invalid Congestion Point")
    assert_rejected(world, prognosis(isps=[DPrognosisISP(power=1, start=1, duration=97)]), "ISPs Out Of Bounds")


# --------------------------------------------------------------------------- the CRO


def test_cro_refuses_a_connection_at_two_congestion_points_and_an_unknown_point(world: World) -> None:
    from opendso.markets.model import CongestionPoint

    twice = CongestionPoint(id="ea1.2020-01.org.opendso:cp-3", name="overlapping", nodes=("node 5",))
    update = world.dso.publish_congestion_points([twice], cro=CRO, start=world.clock.now.date())
    query = world.dso.query_congestion_point("ea1.2020-01.org.opendso:cp-9", cro=CRO, period=world.tomorrow)

    def answer(entries: tuple[Any, ...], ref: str) -> Any:
        return next((e for e in entries if e.direction == "in" and e.reference == ref), None)

    assert world.dso.log.wait_for(
        lambda es: answer(es, update) is not None and answer(es, query) is not None, DEADLINE_S
    )
    entries = world.dso.log.entries()
    taken = connection_address(DSO, "node 5")
    assert (answer(entries, update).outcome, answer(entries, update).reason) == (
        "rejected",
        f"Connection conflict: {taken} at {CP1.id}",
    )
    assert (answer(entries, query).outcome, answer(entries, query).reason) == ("rejected", "Invalid Congestion Point")
    assert twice.id not in world.cro.congestion_points()
    assert world.dso.wait_for(lambda d: twice.id not in d.published(), DEADLINE_S)


def test_sending_to_a_party_that_refuses_is_a_remote_error(world: World) -> None:
    # the aggregators now hold another key for the DSO: they refuse its signature
    world.directory.register(Participant(DSO, "DSO", new_keypair().public_key, world.directory.endpoint(DSO, "DSO")))
    with pytest.raises(RemoteError, match="HTTP 401"):
        world.dso.request_flex(
            CP1.id, world.needs(1), [-1_000.0], expires=world.clock.now + timedelta(hours=1), aggregators=[AGR2]
        )
    assert world.dso.requests() == ()  # a request that never arrived is not kept
