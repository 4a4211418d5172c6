"""The typed answers of :class:`~nexus_client.client.Client` (``nexus_wire::body``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .records import Action, Record


@dataclass(frozen=True)
class Submitted:
    """Answer to a record submission (``POST /v1/intents|facts|hints``)."""

    hash: str
    kind: str
    duplicate: bool
    seq: int | None


@dataclass(frozen=True)
class Lease:
    """Answer to a claim or renewal."""

    intent: str
    token: int
    lease_until: int
    takeover: bool


@dataclass(frozen=True)
class Withdrawn:
    """Answer to a withdrawal."""

    intent: str
    state: str


@dataclass(frozen=True)
class Retracted:
    """Answer to a Hint's retraction."""

    hint: str
    seq: int | None


@dataclass(frozen=True)
class IntentState:
    """An Intent's state: ``available``, ``claimed``, ``resolved`` or ``withdrawn``,
    with the members of that state (``token``; ``holder`` and ``lease_until`` when
    claimed; ``fact`` and ``by`` when resolved)."""

    state: str
    token: int
    holder: str | None = None
    lease_until: int | None = None
    fact: str | None = None
    by: str | None = None


@dataclass(frozen=True)
class IntentItem:
    """One Intent of a listing (its record verified)."""

    record: Record
    state: IntentState
    priority: int


@dataclass(frozen=True)
class IntentPage:
    """A page of ``GET /v1/intents``; ``next`` is the cursor of the next page."""

    intents: list[IntentItem]
    next: str | None


@dataclass(frozen=True)
class FactPage:
    """A page of ``GET /v1/facts`` (the Facts verified, oldest first)."""

    facts: list[Record]
    next: str | None


@dataclass(frozen=True)
class RecordInfo:
    """``GET /v1/records/{id}``: the record (verified), its kind and every link."""

    record: Record
    kind: str
    parents: list[str]


@dataclass(frozen=True)
class Provenance:
    """``GET /v1/records/{id}/provenance``: the root first, then its ancestors."""

    root: str
    records: list[Record]


@dataclass(frozen=True)
class HintItem:
    """An active Hint (``GET /v1/hints``)."""

    hash: str
    hint: Record


@dataclass(frozen=True)
class LogEntry:
    """One commit log entry: its ``seq``, commit time ``at``, and its record or action
    (verified). ``raw`` is the entry as the server sent it (what an export holds)."""

    seq: int
    at: int
    record: Record | None
    action: Action | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def item(self) -> Record | Action:
        """The record or the action."""
        item = self.record if self.record is not None else self.action
        assert item is not None
        return item


@dataclass(frozen=True)
class LogPage:
    """A page of ``GET /v1/log``: the head the server reported and the entries."""

    head: int
    entries: list[LogEntry]


@dataclass(frozen=True)
class Health:
    """``GET /v1/health``: ``status`` is ``ok`` or ``degraded`` (then ``reason`` and
    ``message`` say why)."""

    status: str
    log_head: int
    deployment: str | None
    reason: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        """True when the server is not degraded."""
        return self.status == "ok"


@dataclass(frozen=True)
class ContractRule:
    """One rule of the contract in force, as ``GET /v1/contract`` summarises it."""

    name: str
    topic: str
    threshold: int
    within_ms: int | None


@dataclass(frozen=True)
class Contract:
    """``GET /v1/contract``: the version in force."""

    version: int
    hash: str
    name: str
    source: str
    rules: list[ContractRule]
    upgrade_keys: list[str]
    upgrade_quorum: dict[str, Any] | None


@dataclass(frozen=True)
class ContractVersion:
    """One deployment of ``GET /v1/contract/history``."""

    version: int
    hash: str
    name: str
    deployer: str
    at: int
    deploy: str
    approvals: list[str]
    previous: str | None


@dataclass(frozen=True)
class Deployed:
    """Answer to ``POST /v1/contract``."""

    hash: str
    version: int
    name: str
    deploy: str
    previous: str | None
    approvals: list[str]
    duplicate: bool
    seq: int | None


__all__ = [
    "Contract",
    "ContractRule",
    "ContractVersion",
    "Deployed",
    "FactPage",
    "Health",
    "HintItem",
    "IntentItem",
    "IntentPage",
    "IntentState",
    "Lease",
    "LogEntry",
    "LogPage",
    "Provenance",
    "RecordInfo",
    "Retracted",
    "Submitted",
    "Withdrawn",
]
