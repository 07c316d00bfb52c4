"""Quality flags (defined once, in :mod:`opendso.quality`)."""

from opendso.quality import ALL_QUALITY_BITS, Quality

__all__ = ["ALL_QUALITY_BITS", "Quality"]
