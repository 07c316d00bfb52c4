"""Free text from people (notes, reasons): one check for every field that stores it.

Text that reaches the event log or the audit trail is read later by other people, often under
pressure. It must say what it looks like, so :func:`check_text` refuses what would make it say
something else or break a reader: NUL and other C0/C1 control characters (tab and line breaks
excepted), and the Unicode bidirectional embedding, override and isolate controls
(U+202A-U+202E, U+2066-U+2069), which can reorder what a screen shows ("Trojan Source",
CVE-2021-42574). Nothing is silently removed: bad text is refused whole with one message that
names the field and the character's position.
"""

from __future__ import annotations

import unicodedata

from opendso.errors import InputError

#: Bidirectional embedding/override (LRE, RLE, PDF, LRO, RLO) and isolate (LRI, RLI, FSI, PDI) controls.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def check_text(name: str, value: str, *, max_len: int = 10_000) -> str:
    """Return ``value`` stripped of surrounding whitespace; raise :class:`InputError` for bad text.

    Refused: a non-string, empty text, more than ``max_len`` characters, NUL and other control
    characters (except tab, line feed and carriage return), and bidirectional controls.
    """
    if not isinstance(value, str):
        raise InputError(f"{name} must be text, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise InputError(f"{name} needs text")
    if len(text) > max_len:
        raise InputError(f"{name} has at most {max_len} characters, got {len(text)}")
    for pos, char in enumerate(text):
        if char in BIDI_CONTROLS:
            raise InputError(
                f"{name}: bidirectional control character U+{ord(char):04X} at position {pos} is not allowed"
            )
        if char not in _ALLOWED_CONTROLS and unicodedata.category(char) == "Cc":
            raise InputError(f"{name}: control character U+{ord(char):04X} at position {pos} is not allowed")
    return text


__all__ = ["BIDI_CONTROLS", "check_text"]
