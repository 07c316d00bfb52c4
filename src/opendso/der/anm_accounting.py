"""Curtailed energy per DER and per agreement: the account active network management keeps.

Every cycle, for every flexible DER, after the cycle's set-points were sent, the curtailed power is
``max(0, available - limit)`` while an export limit is in force (the limit the arbiter holds; none
in force: nothing is curtailed), with ``available`` the DER's own report of what it could export
(its ``p_available`` point). That power holds until the next cycle (the limit just sent and the
availability just reported are what the DER works with), so the energy is the sum of power x
interval, each interval counted at the next record; an interval longer than ``max_gap_s`` (the
cycle stopped, telemetry lost) counts only ``max_gap_s``, and a cycle without a good value of
``available`` counts nothing until the next.

The curtailment cap of a flexible agreement is a share of the asset's annual energy: with the
annual energy known (:attr:`DerAccount.annual_energy_mwh`), the account says how much of the cap
is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["CurtailmentLedger", "DerAccount"]


@dataclass
class DerAccount:
    """One DER's curtailed energy so far, with its agreement and cap."""

    asset_id: str
    owner: str
    principle: str | None
    cap_pct: float | None
    annual_energy_mwh: float | None
    curtailed_mwh: float = 0.0
    curtailed_by: dict[str, float] = field(default_factory=dict)  # source that owned the limit -> MWh
    last_time: datetime | None = None
    last_power_w: float = 0.0
    last_owner: str | None = None

    @property
    def cap_mwh(self) -> float | None:
        """The cap in MWh (cap % of the annual energy); None when either is unknown."""
        if self.cap_pct is None or self.annual_energy_mwh is None:
            return None
        return self.cap_pct / 100.0 * self.annual_energy_mwh

    @property
    def share_pct(self) -> float | None:
        """Curtailed energy as % of the annual energy; None when that is unknown."""
        if not self.annual_energy_mwh:
            return None
        return 100.0 * self.curtailed_mwh / self.annual_energy_mwh

    def to_json(self) -> dict[str, Any]:
        """The account as JSON."""
        cap = self.cap_mwh
        return {
            "asset": self.asset_id,
            "owner": self.owner,
            "principle": self.principle,
            "curtailed_mwh": self.curtailed_mwh,
            "curtailed_by": dict(self.curtailed_by),
            "curtailing_w": self.last_power_w,
            "annual_energy_mwh": self.annual_energy_mwh,
            "cap_pct": self.cap_pct,
            "cap_mwh": cap,
            "share_pct": self.share_pct,
            "over_cap": bool(cap is not None and self.curtailed_mwh > cap),
        }


class CurtailmentLedger:
    """The accounts of every DER (see the module docstring)."""

    def __init__(self, accounts: list[DerAccount], *, max_gap_s: float = 60.0) -> None:
        if not (math.isfinite(max_gap_s) and max_gap_s > 0):
            raise ValueError(f"max_gap_s must be > 0, got {max_gap_s!r}")
        self.max_gap_s = float(max_gap_s)
        self._accounts = {a.asset_id: a for a in accounts}

    @property
    def accounts(self) -> dict[str, DerAccount]:
        """Every account by asset id."""
        return dict(self._accounts)

    def account(self, asset_id: str) -> DerAccount:
        """One DER's account (KeyError when unknown)."""
        return self._accounts[asset_id]

    def record(
        self, asset_id: str, now: datetime, *, available_w: float | None, limit_w: float | None, owner: str | None
    ) -> float:
        """Count the interval since the last record at the power held then; hold the power seen now (W, returned)."""
        account = self._accounts[asset_id]
        if account.last_time is not None and now > account.last_time:
            dt = min((now - account.last_time).total_seconds(), self.max_gap_s)
            mwh = account.last_power_w * dt / 3600.0 / 1e6
            if mwh > 0.0:
                account.curtailed_mwh += mwh
                key = account.last_owner or "unknown"
                account.curtailed_by[key] = account.curtailed_by.get(key, 0.0) + mwh
        power = 0.0
        if available_w is not None and math.isfinite(available_w) and limit_w is not None:
            power = max(0.0, available_w - max(limit_w, 0.0))
        if account.last_time is None or now >= account.last_time:
            account.last_time = now
            account.last_power_w = power
            account.last_owner = owner
        return power

    def by_agreement(self) -> dict[str, float]:
        """Curtailed MWh summed per principle of access (the agreements' kind)."""
        out: dict[str, float] = {}
        for a in self._accounts.values():
            key = a.principle or "firm"
            out[key] = out.get(key, 0.0) + a.curtailed_mwh
        return out

    def to_json(self) -> dict[str, Any]:
        """Every account and the totals per agreement."""
        return {
            "ders": [a.to_json() for a in self._accounts.values()],
            "by_agreement_mwh": self.by_agreement(),
            "total_mwh": sum(a.curtailed_mwh for a in self._accounts.values()),
        }
