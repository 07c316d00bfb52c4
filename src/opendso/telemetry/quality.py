"""Quality flags (defined once, in :mod:`opendso.quality`)."""

from opendso.quality import Quality

__all__ = ["Quality"]
