"""What the safety gate reads: the request, the field's safety state, the configuration, the decision.

Plain frozen records, no behaviour beyond small queries, so a request or a decision can be logged,
audited and sent over the API as it is. Names are the names of the source (switch names as in
``Grid.switch_names``, node names as in ``Grid.names_of("node")``), because an operator reads
them and the audit trail records them.

- :class:`SwitchingRequest`: one open/close of one switch by one actor, with the overrides of
  caution tags, the confirmations of rules an operator may accept, and the second person's
  approval when the configuration marks the operation as critical.
- :class:`SwitchingState`: what the field and the control room know beyond the grid's switch
  states: tags, safety documents, earths, the quality of the states the decision depends on,
  and the sections flagged faulted.
- :class:`GateConfig`: the limits, the feeder pairs allowed to parallel, the critical switches.
- :class:`GateDecision`: allowed or not; when not, the one rule that refused (:class:`GateRule`,
  in the order the gate checks them), the reason in words naming the switch, tag, document,
  node or state concerned, and what a confirmation or an override could lift.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from opendso.quality import Quality

__all__ = [
    "UNTRUSTED_QUALITY",
    "Confirmation",
    "DeviceClass",
    "DocumentKind",
    "DocumentState",
    "Earth",
    "EarthKind",
    "GateConfig",
    "GateDecision",
    "GateRule",
    "Override",
    "SafetyDocument",
    "SwitchAction",
    "SwitchingRequest",
    "SwitchingState",
    "Tag",
    "TagKind",
]


class GateRule(enum.StrEnum):
    """The gate's rules, in the order it checks them (issue 10, item 1)."""

    TAGS = "tags"
    SAFETY_DOCUMENTS = "safety_documents"
    EARTHING = "earthing"
    DEVICE_CAPABILITY = "device_capability"
    TRUSTWORTHY_STATE = "trustworthy_state"
    FAULTED_SECTION = "faulted_section"
    PARALLELING = "paralleling"
    LIMITS = "limits"
    TWO_PERSON_APPROVAL = "two_person_approval"


class SwitchAction(enum.StrEnum):
    """What the request does to the switch."""

    OPEN = "open"
    CLOSE = "close"


class TagKind(enum.StrEnum):
    """Operating tags: do-not-operate blocks; caution needs an override with a reason."""

    DO_NOT_OPERATE = "do_not_operate"
    CAUTION = "caution"


class DocumentKind(enum.StrEnum):
    """Safety documents."""

    PERMIT_TO_WORK = "permit_to_work"
    SANCTION_FOR_TEST = "sanction_for_test"


class DocumentState(enum.StrEnum):
    """States of a safety document; issued and in work are the open ones."""

    DRAFT = "draft"
    ISSUED = "issued"
    IN_WORK = "in_work"
    CLEARED = "cleared"
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        """True while the document holds its devices and earths (issued or in work)."""
        return self in (DocumentState.ISSUED, DocumentState.IN_WORK)


class EarthKind(enum.StrEnum):
    """How a node is earthed."""

    EARTH_SWITCH = "earth_switch"
    PORTABLE = "portable"


class DeviceClass(enum.StrEnum):
    """What a switching device may make or break, from its kind in the model."""

    BREAKER = "breaker"  # makes and breaks load and fault current
    LOAD_BREAK = "load_break"  # makes and breaks load current, never closes onto a fault
    DISCONNECTOR = "disconnector"  # makes and breaks no more than a small current, never opens a loop


#: Quality flags that make a state untrustworthy for switching: invalid, intermediate (an
#: inconsistent double point), stale, manually entered (substituted), or not from the field.
UNTRUSTED_QUALITY = (
    Quality.INVALID
    | Quality.INCONSISTENT
    | Quality.STALE
    | Quality.SUBSTITUTED
    | Quality.FAILURE
    | Quality.OSCILLATORY
    | Quality.ESTIMATED
)


@dataclass(frozen=True)
class Tag:
    """An operating tag placed on a switch."""

    id: str
    switch: str
    kind: TagKind
    text: str = ""


@dataclass(frozen=True)
class SafetyDocument:
    """A permit to work or sanction for test: the devices it isolates and the nodes it earths."""

    id: str
    kind: DocumentKind
    state: DocumentState
    devices: frozenset[str] = frozenset()
    earths: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Earth:
    """An earth applied on a node: a closed earth switch or portable earths recorded there."""

    node: str
    kind: EarthKind = EarthKind.PORTABLE
    reference: str = ""


@dataclass(frozen=True)
class Override:
    """The operator's explicit override of a caution tag, with the reason (audited)."""

    tag: str
    reason: str


@dataclass(frozen=True)
class Confirmation:
    """The operator's confirmation of what a rule asked to confirm, with the reason (audited)."""

    rule: GateRule
    reason: str


@dataclass(frozen=True)
class SwitchingRequest:
    """One open/close of one switch, by ``actor`` holding ``roles``."""

    switch: str
    action: SwitchAction
    actor: str
    roles: frozenset[str] = frozenset()
    overrides: tuple[Override, ...] = ()
    confirmations: tuple[Confirmation, ...] = ()
    approver: str | None = None

    def override_of(self, tag_id: str) -> Override | None:
        """Return the override of a tag that gives a reason, if the request carries one."""
        return next((o for o in self.overrides if o.tag == tag_id and o.reason.strip()), None)

    def confirmation_of(self, rule: GateRule) -> Confirmation | None:
        """Return the confirmation of a rule that gives a reason, if the request carries one."""
        return next((c for c in self.confirmations if c.rule is rule and c.reason.strip()), None)


@dataclass(frozen=True)
class SwitchingState:
    """What the gate knows beyond the grid's switch states.

    ``qualities`` maps switch names and node names (the element a point measures) to their
    quality flags; ``None`` means a study on the model's own states, which are then trusted. When
    given, a state the decision depends on that the mapping lacks is refused as unknown.
    """

    tags: tuple[Tag, ...] = ()
    documents: tuple[SafetyDocument, ...] = ()
    earths: tuple[Earth, ...] = ()
    qualities: Mapping[str, Quality] | None = None
    faulted: frozenset[str] = frozenset()

    def earthed_nodes(self) -> dict[str, str]:
        """Return node name -> what earths it (recorded earths, and the earths of open documents)."""
        out = {e.node: f"{e.kind.value} earth {e.reference}".rstrip() for e in self.earths}
        for doc in self.documents:
            if doc.state.is_open:
                for node in doc.earths:
                    out.setdefault(node, f"earth of {doc.kind.value} {doc.id}")
        return out


@dataclass(frozen=True)
class GateConfig:
    """Limits and configuration of the gate.

    ``parallel_pairs`` holds the pairs of feeder names (or busbar node names, for a section not
    in a feeder) allowed to be paralleled. ``critical_switches`` need a second person's approval.
    ``device_classes`` maps switch kinds of the model to what they may make or break; a kind not
    in it is taken as ``default_device`` (sources that do not say are mostly load-break switches
    on distribution feeders).
    """

    u_min_pu: float = 0.9
    u_max_pu: float = 1.1
    loading_max: float = 1.0
    disconnector_max_current_a: float = 1.0
    parallel_pairs: frozenset[frozenset[str]] = frozenset()
    critical_switches: frozenset[str] = frozenset()
    device_classes: Mapping[str, DeviceClass] = field(
        default_factory=lambda: {
            "CB": DeviceClass.BREAKER,
            "LBS": DeviceClass.LOAD_BREAK,
            "LS": DeviceClass.LOAD_BREAK,
            "DS": DeviceClass.DISCONNECTOR,
        }
    )
    default_device: DeviceClass = DeviceClass.LOAD_BREAK

    def device_class(self, kind: object) -> DeviceClass:
        """Return the class of a switch of the given kind."""
        return self.device_classes.get(str(kind).strip().upper(), self.default_device)


@dataclass(frozen=True)
class GateDecision:
    """The gate's answer to one request.

    ``rule`` is the rule that refused (None when allowed), ``reason`` says why in words.
    ``confirm`` lists what an override or confirmation would have to accept for the refusal to
    be lifted (empty when nothing can lift it); ``overrides`` and ``confirmations`` are the ones
    the allowed request used, for the audit; ``passed`` the rules checked and passed.
    """

    switch: str
    action: SwitchAction
    allowed: bool
    rule: GateRule | None = None
    reason: str = ""
    confirm: tuple[str, ...] = ()
    overrides: tuple[Override, ...] = ()
    confirmations: tuple[Confirmation, ...] = ()
    passed: tuple[GateRule, ...] = ()
