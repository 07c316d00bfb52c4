"""The VENs the DSO has enrolled: name, certificate fingerprint, party and the registry assets each controls.

A VEN may register with the VTN only after the DSO has enrolled it (out of band, as the OpenADR
2.0b Profile Specification's security section expects certificate fingerprints to be exchanged):
:meth:`VenEnrollments.enroll` checks that every asset named is in the DER registry and may be
controlled by this VEN (its control protocol is ``openadr``, or its owner or aggregator is the
VEN's party) and that no other VEN holds it, and gives the VEN its ``ven_id``.

The fingerprint is OpenADR's: the last ten bytes of the SHA-256 of the certificate (DER), as
upper-case hex pairs joined by ``:`` (``openleadr.utils.certificate_fingerprint``).

The enrollment list is kept in memory (a dict guarded by the event loop that serves the VTN);
storing it in the database beside the DER registry is a later step.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from opendso.der.model import ControlProtocol, DerAsset, check_id
from opendso.errors import ConflictError, ForbiddenError, InputError, NotFoundError
from opendso.text import check_text

__all__ = ["FINGERPRINT_PATTERN", "AssetSource", "VenEnrollment", "VenEnrollments", "check_fingerprint", "controls"]

#: An OpenADR certificate fingerprint: ten upper-case hex pairs joined by ':'.
FINGERPRINT_PATTERN = r"^[0-9A-F]{2}(:[0-9A-F]{2}){9}$"
_FINGERPRINT = re.compile(FINGERPRINT_PATTERN)
_MAX_ASSETS = 10_000


class AssetSource(Protocol):
    """Where assets are read (:class:`~opendso.der.registry.DerRegistry` fits): unknown ids raise NotFoundError."""

    def asset(self, asset_id: str) -> tuple[DerAsset, int]: ...


def check_fingerprint(value: object, what: str = "fingerprint") -> str:
    """Return ``value`` as an OpenADR fingerprint (upper case), or raise :class:`InputError` naming ``what``."""
    text = value.strip().upper() if isinstance(value, str) else ""
    if not _FINGERPRINT.match(text):
        raise InputError(f"{what}: {value!r} is not an OpenADR certificate fingerprint (10 hex pairs joined by ':')")
    return text


@dataclass(frozen=True, slots=True)
class VenEnrollment:
    """One enrolled VEN: its name, the ``ven_id`` the VTN gives it, its fingerprint, party and assets."""

    ven_name: str
    ven_id: str
    fingerprint: str
    party: str
    assets: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The enrollment as JSON."""
        return {
            "ven_name": self.ven_name,
            "ven_id": self.ven_id,
            "fingerprint": self.fingerprint,
            "party": self.party,
            "assets": list(self.assets),
        }


def controls(asset: DerAsset, party: str) -> bool:
    """True when a VEN of ``party`` may control ``asset`` (OpenADR control, or its owner or aggregator)."""
    return asset.control.protocol is ControlProtocol.OPENADR or party in (asset.owner, asset.aggregator)


class VenEnrollments:
    """The enrolled VENs, by name and by ``ven_id`` (in memory; see the module docstring)."""

    def __init__(self, registry: AssetSource) -> None:
        self.registry = registry
        self._by_name: dict[str, VenEnrollment] = {}
        self._by_id: dict[str, VenEnrollment] = {}
        self._asset_owner: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_name)

    def enroll(self, ven_name: str, fingerprint: str, assets: Iterable[str], *, party: str) -> VenEnrollment:
        """Enroll a VEN; return its enrollment with a new ``ven_id``.

        Raises :class:`InputError` for a bad name, fingerprint or asset id, or no assets;
        :class:`NotFoundError` for an asset not in the registry; :class:`ForbiddenError` for an
        asset this VEN may not control; :class:`ConflictError` for a name enrolled already or an
        asset another VEN holds.
        """
        name = check_text("VEN name", ven_name, max_len=200)
        fp = check_fingerprint(fingerprint, f"VEN {name!r} fingerprint")
        who = check_text(f"VEN {name!r} party", party, max_len=200)
        ids = tuple(check_id(f"VEN {name!r} asset", a) for a in assets)
        if not ids:
            raise InputError(f"VEN {name!r}: no assets: a VEN is enrolled for the registry assets it controls")
        if len(ids) > _MAX_ASSETS or len(set(ids)) != len(ids):
            raise InputError(f"VEN {name!r}: assets must be distinct and at most {_MAX_ASSETS}")
        if name in self._by_name:
            raise ConflictError(f"VEN {name!r} is enrolled already")
        for asset_id in ids:
            self.check_asset(name, asset_id, who)
            holder = self._asset_owner.get(asset_id)
            if holder is not None:
                raise ConflictError(f"VEN {name!r}: asset {asset_id} is enrolled for VEN {holder!r}")
        enrollment = VenEnrollment(name, f"ven-{secrets.token_hex(8)}", fp, who, ids)
        self._by_name[name] = enrollment
        self._by_id[enrollment.ven_id] = enrollment
        for asset_id in ids:
            self._asset_owner[asset_id] = name
        return enrollment

    def check_asset(self, ven_name: str, asset_id: str, party: str) -> DerAsset:
        """The asset, if it is in the registry and a VEN of ``party`` may control it; else NotFound/Forbidden."""
        try:
            asset, _ = self.registry.asset(asset_id)
        except NotFoundError:
            raise NotFoundError(f"VEN {ven_name!r}: asset {asset_id} is not in the DER registry") from None
        if not controls(asset, party):
            raise ForbiddenError(
                f"VEN {ven_name!r}: asset {asset_id} is not controlled over OpenADR and its owner "
                f"({asset.owner!r}) and aggregator ({asset.aggregator!r}) are not the VEN's party ({party!r})"
            )
        return asset

    def withdraw(self, ven_name: str) -> VenEnrollment:
        """Remove a VEN's enrollment (it can no longer register or be reached); unknown: NotFoundError."""
        enrollment = self.get(ven_name)
        del self._by_name[enrollment.ven_name]
        del self._by_id[enrollment.ven_id]
        for asset_id in enrollment.assets:
            self._asset_owner.pop(asset_id, None)
        return enrollment

    def get(self, ven_name: str) -> VenEnrollment:
        """The enrollment of ``ven_name``; unknown: :class:`NotFoundError`."""
        found = self._by_name.get(ven_name)
        if found is None:
            raise NotFoundError(f"VEN {ven_name!r} is not enrolled")
        return found

    def find(self, ven_name: str) -> VenEnrollment | None:
        """The enrollment of ``ven_name``, or None."""
        return self._by_name.get(ven_name)

    def by_ven_id(self, ven_id: str | None) -> VenEnrollment | None:
        """The enrollment with ``ven_id``, or None."""
        return self._by_id.get(ven_id) if ven_id is not None else None

    def holder_of(self, asset_id: str) -> VenEnrollment | None:
        """The VEN enrolled for ``asset_id``, or None."""
        name = self._asset_owner.get(asset_id)
        return self._by_name.get(name) if name is not None else None

    def all(self) -> list[VenEnrollment]:
        """Every enrollment, by name."""
        return [self._by_name[n] for n in sorted(self._by_name)]
