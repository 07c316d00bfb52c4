"""Quality flags of a measurement: one integer bit set, used from the field adapters to the historian.

A measurement whose quality is ``0`` (:attr:`Quality.GOOD`) is good; each set bit says what is
wrong or special about it. The validity bits follow IEC 61850-7-3 ``Quality`` (validity plus
detail quality); IEC 60870-5-104's quality descriptor (QDS: IV, NT, SB, BL, OV) maps onto them
with :meth:`Quality.from_qds` and back with :meth:`Quality.to_qds`, and the short IEC 104 names
are aliases of the same bits:

======================  ==================  =============================================
flag                    IEC 61850           IEC 60870-5-104 (alias)
======================  ==================  =============================================
``INVALID``             validity=invalid    IV (invalid)
``QUESTIONABLE``        validity=questionable
``OVERFLOW``            detailQual.overflow OV (overflow)
``OUT_OF_RANGE``        detailQual.outOfRange
``BAD_REFERENCE``       detailQual.badReference
``OSCILLATORY``         detailQual.oscillatory
``FAILURE``             detailQual.failure
``STALE``               detailQual.oldData  NT (not topical)
``INCONSISTENT``        detailQual.inconsistent
``INACCURATE``          detailQual.inaccurate
``SUBSTITUTED``         source=substituted  SB (substituted)
``TEST``                test                (cause of transmission: test)
``BLOCKED``             operatorBlocked     BL (blocked)
``ESTIMATED``           (OpenDSO: the value comes from state estimation, not the field)
======================  ==================  =============================================
"""

from __future__ import annotations

from enum import IntFlag

__all__ = ["ALL_QUALITY_BITS", "Quality"]

# IEC 60870-5-101 7.2.6.3: bits of the quality descriptor octet
_QDS = {0x01: "OVERFLOW", 0x10: "BLOCKED", 0x20: "SUBSTITUTED", 0x40: "STALE", 0x80: "INVALID"}


class Quality(IntFlag):
    """Quality of one measurement; ``GOOD`` (0) when no flag is set."""

    GOOD = 0
    INVALID = 1 << 0
    QUESTIONABLE = 1 << 1
    OVERFLOW = 1 << 2
    OUT_OF_RANGE = 1 << 3
    BAD_REFERENCE = 1 << 4
    OSCILLATORY = 1 << 5
    FAILURE = 1 << 6
    STALE = 1 << 7
    INCONSISTENT = 1 << 8
    INACCURATE = 1 << 9
    SUBSTITUTED = 1 << 10
    TEST = 1 << 11
    BLOCKED = 1 << 12
    ESTIMATED = 1 << 13

    # IEC 60870-5-104 names of the same bits
    IV = 1 << 0
    OV = 1 << 2
    NT = 1 << 7
    SB = 1 << 10
    BL = 1 << 12

    @property
    def is_good(self) -> bool:
        """True when no flag is set."""
        return self == 0

    @classmethod
    def from_qds(cls, qds: int) -> Quality:
        """Return the quality of an IEC 60870-5-104 quality descriptor octet (reserved bits dropped)."""
        out = cls.GOOD
        for bit, name in _QDS.items():
            if qds & bit:
                out |= cls[name]
        return out

    def to_qds(self) -> int:
        """Return the IEC 60870-5-104 quality descriptor octet (flags IEC 104 has no bit for are dropped)."""
        return sum(bit for bit, name in _QDS.items() if self & Quality[name])


#: Every defined bit; a quality with other bits set is rejected as bad input.
ALL_QUALITY_BITS = int(sum(int(q) for q in Quality))
