"""The collector's copy of the audit trail: read it back and compare it with the trail.

The forwarder (:mod:`opendso.service.syslog`) sends every audit record as an RFC 5424 message
whose structured data ``[opendso-audit@32473 seq=".." hash=".." prev=".." ...]`` carries the
record's sequence number and chained hash. :func:`parse_copy` reads those back from a
collector's file (other lines are skipped; PARAM-VALUE escapes undone) and
:func:`compare_with_copy` checks the trail against them (``opendso audit verify --syslog-copy``,
:func:`opendso.service.audit.integrity_report`). Nothing here imports the rest of the service,
so the audit trail can use it without a cycle.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from opendso.errors import InputError
from opendso.store.integrity import ChainProblem

__all__ = ["SD_ID", "ChainedRecord", "CopiedRecord", "CopyComparison", "compare_with_copy", "parse_copy"]

#: The structured-data id of OpenDSO's audit messages (32473: RFC 5612's documentation enterprise number).
SD_ID = "opendso-audit@32473"


class ChainedRecord(Protocol):
    """What the comparison needs of an audit record: its sequence number and chained hash."""

    @property
    def seq(self) -> int: ...

    @property
    def hash(self) -> str: ...


_SD_PARAM = re.compile(r'(\w+)="((?:[^"\\\]]|\\.)*)"')


@dataclass(frozen=True)
class CopiedRecord:
    """What the collector's copy says of one record."""

    seq: int
    hash: str
    prev: str


def parse_copy(lines: Iterable[str]) -> Iterator[CopiedRecord]:
    """The audit records in a collector's file of RFC 5424 messages (other lines are skipped)."""
    marker = "[" + SD_ID
    for line in lines:
        start = line.find(marker)
        if start < 0:
            continue
        end = start + len(marker)
        depth_end = line.find("]", end)
        while depth_end > 0 and line[depth_end - 1] == "\\":
            depth_end = line.find("]", depth_end + 1)
        params = {k: re.sub(r"\\(.)", r"\1", v) for k, v in _SD_PARAM.findall(line[end:depth_end])}
        try:
            yield CopiedRecord(int(params["seq"]), params["hash"], params.get("prev", ""))
        except (KeyError, ValueError):
            continue


@dataclass(frozen=True)
class CopyComparison:
    """What :func:`compare_with_copy` found."""

    records: int
    last_seq: int
    problems: list[ChainProblem]


def compare_with_copy(records: Iterable[ChainedRecord], copy: Path) -> CopyComparison:
    """Compare the audit trail with a collector's copy: every copied record must be in the trail, unchanged.

    Finds records deleted from the trail (``missing``), records whose hash differs (``rewritten``:
    the trail was re-chained, even with the key) and a trail shorter than the copy (``truncated``).
    Records newer than the copy are fine (the collector may lag).
    """
    try:
        with copy.open(encoding="utf-8", errors="replace") as fh:
            copied = {c.seq: c for c in parse_copy(fh)}
    except OSError as exc:
        raise InputError(f"syslog copy {copy}: cannot be read ({exc.strerror})") from None
    if not copied:
        raise InputError(f"syslog copy {copy}: no OpenDSO audit records in it")
    problems: list[ChainProblem] = []
    seen: set[int] = set()
    last = 0
    for rec in records:
        last = rec.seq
        c = copied.get(rec.seq)
        if c is None:
            continue
        seen.add(rec.seq)
        if c.hash != rec.hash:
            problems.append(ChainProblem(rec.seq, "rewritten", f"record {rec.seq} differs from the collector's copy"))
    newest = max(copied)
    for seq in sorted(set(copied) - seen):
        if seq <= last:
            problems.append(
                ChainProblem(seq, "missing", f"record {seq} is in the collector's copy but not in the trail")
            )
    if newest > last:
        problems.append(
            ChainProblem(
                last, "truncated", f"the trail ends at record {last}; the collector has records up to {newest}"
            )
        )
    return CopyComparison(len(copied), newest, problems)
