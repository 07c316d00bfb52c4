"""The participants' directory: public keys and endpoints by (domain, role), in place of DNS.

UFTP finds a participant's signing key and endpoint in DNS (Shapeshifter specification, appendix
"Message transport mechanism", section "Service discovery": ``_role._usef.domain`` TXT and
``_http._role._usef.domain`` CNAME), or through "a single authority that administers all the
relevant information" (same section, "Single authority"). OpenDSO keeps that address book itself:
:class:`Directory` is handed to the library's services and clients as their ``key_lookup_function``
and ``endpoint_lookup_function`` hooks (``shapeshifter_uftp.service.base_service``), so no DNS
lookup ever happens.

Keys follow the specification's cryptographic scheme CS1 (same appendix, "Cryptographic Scheme"):
NaCl ``crypto_sign`` (Ed25519) key pairs, Base-64 encoded; :func:`new_keypair` makes one.
"""

from __future__ import annotations

import logging
import threading
from base64 import b64decode, b64encode
from dataclasses import dataclass

from nacl.bindings import crypto_sign_keypair
from shapeshifter_uftp.exceptions import (  # type: ignore[import-untyped]
    AuthenticationTimeoutException,
    ServiceDiscoveryException,
)

from opendso.errors import InputError, NotFoundError
from opendso.markets.model import check_party_id

__all__ = ["ROLES", "Directory", "Keypair", "Participant", "new_keypair"]

log = logging.getLogger(__name__)

#: The UFTP roles OpenDSO deals with (``UsefRole``).
ROLES = ("AGR", "CRO", "DSO")


@dataclass(frozen=True)
class Keypair:
    """A CS1 signing key pair: ``private_key`` (64 bytes) and ``public_key`` (32 bytes), both Base-64."""

    private_key: str
    public_key: str

    def __repr__(self) -> str:
        return f"Keypair(public_key={self.public_key!r})"


def new_keypair() -> Keypair:
    """A new Ed25519 signing key pair (NaCl ``crypto_sign_keypair``), Base-64 encoded."""
    public, private = crypto_sign_keypair()
    return Keypair(private_key=b64encode(private).decode(), public_key=b64encode(public).decode())


@dataclass(frozen=True)
class Participant:
    """One UFTP participant in one role: its domain, role, public signing key and endpoint URL."""

    domain: str
    role: str
    public_key: str
    endpoint: str

    def __post_init__(self) -> None:
        check_party_id("participant domain", self.domain)
        if self.role not in ROLES:
            raise InputError(f"participant {self.domain}: role {self.role!r} is not one of {', '.join(ROLES)}")
        try:
            raw = b64decode(self.public_key, validate=True)
        except ValueError as exc:
            raise InputError(f"participant {self.domain}/{self.role}: public key is not Base-64") from exc
        if len(raw) != 32:
            raise InputError(f"participant {self.domain}/{self.role}: public key must be 32 bytes, got {len(raw)}")
        if not self.endpoint.startswith(("http://", "https://")):
            raise InputError(f"participant {self.domain}/{self.role}: endpoint {self.endpoint!r} is not an HTTP URL")


class Directory:
    """The address book of UFTP participants, safe to share between threads.

    ``key`` and ``endpoint`` are the library's lookup hooks: an unknown participant raises the
    library's own exceptions (``AuthenticationTimeoutException`` for a key, HTTP 419 in the
    specification's transport table; ``ServiceDiscoveryException`` for an endpoint), exactly as
    its DNS lookup does. ``bar`` marks a participant whose messages are refused with the
    rejection reason "Barred Sender".
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._participants: dict[tuple[str, str], Participant] = {}
        self._barred: set[tuple[str, str]] = set()

    def register(self, participant: Participant) -> None:
        """Add or replace ``participant`` (the same domain and role)."""
        with self._lock:
            self._participants[(participant.domain, participant.role)] = participant
        log.info("event=uftp_directory_register domain=%s role=%s", participant.domain, participant.role)

    def unregister(self, domain: str, role: str) -> None:
        """Remove a participant, or :class:`NotFoundError`."""
        with self._lock:
            if self._participants.pop((domain, role), None) is None:
                raise NotFoundError(f"UFTP directory: no participant {domain}/{role}")
            self._barred.discard((domain, role))

    def bar(self, domain: str, role: str) -> None:
        """Refuse every further message of a known participant ("Barred Sender")."""
        with self._lock:
            if (domain, role) not in self._participants:
                raise NotFoundError(f"UFTP directory: no participant {domain}/{role}")
            self._barred.add((domain, role))

    def is_barred(self, domain: str, role: str) -> bool:
        """Whether messages of the participant are refused."""
        with self._lock:
            return (domain, role) in self._barred

    def knows(self, domain: str, role: str) -> bool:
        """Whether the participant is in the directory."""
        with self._lock:
            return (domain, role) in self._participants

    def participant(self, domain: str, role: str) -> Participant:
        """The participant, or :class:`NotFoundError`."""
        with self._lock:
            found = self._participants.get((domain, role))
        if found is None:
            raise NotFoundError(f"UFTP directory: no participant {domain}/{role}")
        return found

    def domains(self, role: str) -> tuple[str, ...]:
        """The domains registered in ``role``, sorted."""
        with self._lock:
            return tuple(sorted(d for d, r in self._participants if r == role))

    def key(self, domain: str, role: str) -> str:
        """The participant's public signing key (library hook ``key_lookup_function``)."""
        with self._lock:
            found = self._participants.get((domain, str(role)))
        if found is None:
            raise AuthenticationTimeoutException(f"no public key for {domain}/{role} in the directory")
        return found.public_key

    def endpoint(self, domain: str, role: str) -> str:
        """The participant's endpoint URL (library hook ``endpoint_lookup_function``)."""
        with self._lock:
            found = self._participants.get((domain, str(role)))
        if found is None:
            raise ServiceDiscoveryException(f"no endpoint for {domain}/{role} in the directory")
        return found.endpoint
