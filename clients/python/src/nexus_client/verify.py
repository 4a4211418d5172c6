"""Offline verification of an export (what ``nexus verify FILE`` checks, without
``--replay``).

An export is JSON lines, one per commit log entry, in commit order — the entries of
``GET /v1/log``: ``{"seq":1,"at":…,"record":{…}}`` or ``{"seq":2,"at":…,"action":{…}}``.
:func:`verify_export` re-derives every hash and checks every signature (strictly), checks
that ``seq`` runs 1, 2, 3, … without gaps, that every record links (parents, resolved
Intent, Hint source Facts) only to records that appeared earlier, that no record appears
twice, that every action names an Intent (a retraction: a Hint) that appeared earlier and
is applied once, and that a Fact's ``resolves`` names an Intent. Version 1 actions (no
``deployment``) verify as they did. It stops at the first broken entry and raises
:class:`VerifyError` naming its line.

``python -m nexus_client verify FILE`` does the same from the command line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .answers import LogEntry
from .canonical import parse_json
from .errors import NexusError, WireError
from .records import DEFAULT_LIMITS, Action, Limits, Record, WireType, check_wire

MAX_LINE_BYTES = 4 << 20
"""Longest line accepted, in bytes."""


@dataclass
class VerifyReport:
    """What a verified export holds."""

    lines: int = 0
    records: int = 0
    facts: int = 0
    resolving_facts: int = 0
    intents: int = 0
    hints: int = 0
    actions: int = 0
    claims: int = 0
    renewals: int = 0
    withdrawals: int = 0
    retractions: int = 0
    head: int = 0
    """The last ``seq`` (0 for an empty export)."""


class VerifyError(NexusError):
    """The first broken entry: its 1-based ``line``, its ``seq`` and stated ``hash``
    when they could be read, a ``code`` naming the check (``malformed_json``,
    ``bad_entry``, ``seq_gap``, ``hash_mismatch``, ``bad_signature``, ``invalid``,
    ``duplicate_record``, ``duplicate_action``, ``dangling_link``, ``unknown_intent``,
    ``not_an_intent``, ``not_a_hint``, ``line_too_long``) and the ``problem``."""

    def __init__(self, line: int, code: str, problem: str, seq: int | None = None, hash: str | None = None) -> None:
        where = f"line {line}"
        if seq is not None and hash is not None:
            where += f" (seq {seq}, {hash})"
        elif seq is not None:
            where += f" (seq {seq})"
        elif hash is not None:
            where += f" ({hash})"
        super().__init__(f"{where}: {problem}")
        self.line = line
        self.code = code
        self.problem = problem
        self.seq = seq
        self.hash = hash


Line = str | bytes | dict[str, Any] | LogEntry
Source = str | os.PathLike[str] | IO[str] | IO[bytes] | Iterable[Line]


def _lines(source: Source) -> Iterator[Line]:
    if isinstance(source, (str, os.PathLike)):
        with open(Path(source), "rb") as f:
            yield from f
    else:
        yield from source


def _wire_problem(e: WireError, what: str, stated: str | None, computed: str | None) -> tuple[str, str]:
    if e.code == "hash_mismatch":
        return "hash_mismatch", f"hash mismatch: the entry states {stated} but its content hashes to {computed}"
    if e.code == "bad_signature":
        return "bad_signature", f"bad signature: {e.detail}"
    return "invalid", f"invalid {what}: {e}"


class _Checker:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.report = VerifyReport()
        self.seen: dict[str, tuple[str, int]] = {}  # hash -> (kind, line)
        self.applied: dict[str, int] = {}  # action hash -> line

    def check(self, raw: Line) -> None:
        line = self.report.lines = self.report.lines + 1

        def fail(code: str, problem: str, seq: int | None = None, hash: str | None = None) -> VerifyError:
            return VerifyError(line, code, problem, seq, hash)

        if isinstance(raw, LogEntry):
            raw = raw.raw
        if isinstance(raw, (str, bytes)):
            if len(raw) > MAX_LINE_BYTES + 2:
                raise fail("line_too_long", f"line is longer than {MAX_LINE_BYTES} bytes")
            try:
                entry = parse_json(raw)
            except WireError as e:
                raise fail("malformed_json", f"malformed JSON: {e.detail or e}") from None
        else:
            entry = raw
        if not isinstance(entry, dict):
            raise fail("bad_entry", "not a log entry: expected a JSON object")
        entry = dict(entry)
        seq = entry.pop("seq", None)
        if type(seq) is not int or seq < 0:
            raise fail("bad_entry", "not a log entry: " + ("missing `seq`" if seq is None else f"`seq` must be a non-negative integer, got {seq!r}"))
        if seq != self.report.head + 1:
            raise fail("seq_gap", f"gap in seq: expected {self.report.head + 1}, found {seq}", seq)
        at = entry.pop("at", None)
        if type(at) is not int or at < 0:
            raise fail("bad_entry", "not a log entry: " + ("missing `at`" if at is None else f"`at` must be a non-negative integer, got {at!r}"), seq)
        has_r, has_a = "record" in entry, "action" in entry
        if has_r == has_a:
            raise fail("bad_entry", "not a log entry: " + ("has both `record` and `action`" if has_r else "has neither `record` nor `action`"), seq)
        what: WireType = "record" if has_r else "action"
        body = entry.pop(what)
        if entry:
            raise fail("bad_entry", f"not a log entry: unexpected member `{next(iter(entry))}`", seq)
        stated = body.get("hash") if isinstance(body, dict) else None
        stated = stated if isinstance(stated, str) else None
        check = check_wire(body, what, self.limits)
        if check.error is not None:
            code, problem = _wire_problem(check.error, what, stated, check.hash)
            raise fail(code, problem, seq, stated)
        item = Record(dict(body)) if has_r else Action(dict(body))
        h = item.hash
        if isinstance(item, Record):
            if h in self.seen:
                raise fail("duplicate_record", f"record already appeared on line {self.seen[h][1]}", seq, h)
            for link in item.links():
                if link not in self.seen:
                    raise fail("dangling_link", f"dangling link: {link} does not appear earlier in the export", seq, h)
            r = self.report
            if item.kind == "fact":
                r.facts += 1
                if (res := item.resolves) is not None:
                    r.resolving_facts += 1
                    kind = self.seen[res[0]][0]
                    if kind != "intent":
                        raise fail("not_an_intent", f"resolves.intent names {res[0]}, which is a {kind}, not an intent", seq, h)
            elif item.kind == "intent":
                r.intents += 1
            else:
                r.hints += 1
            r.records += 1
            self.seen[h] = (item.kind, line)
        else:
            assert isinstance(item, Action)
            target, retract = item.target, item.kind == "retract"
            known = self.seen.get(target)
            if known is None:
                if retract:
                    raise fail("dangling_link", f"dangling link: {target} does not appear earlier in the export", seq, h)
                raise fail("unknown_intent", f"the action's intent {target} does not appear earlier in the export", seq, h)
            if retract and known[0] != "hint":
                raise fail("not_a_hint", f"the retraction names {target}, which is a {known[0]}, not a hint", seq, h)
            if not retract and known[0] != "intent":
                raise fail("not_an_intent", f"the action's intent names {target}, which is a {known[0]}, not an intent", seq, h)
            if h in self.applied:
                raise fail("duplicate_action", f"action already applied on line {self.applied[h]}", seq, h)
            self.applied[h] = line
            r = self.report
            r.actions += 1
            counter = {"claim": "claims", "renew": "renewals", "withdraw": "withdrawals", "retract": "retractions"}[item.kind]
            setattr(r, counter, getattr(r, counter) + 1)
        self.report.head = seq


def verify_export(source: Source, limits: Limits = DEFAULT_LIMITS) -> VerifyReport:
    """Verifies an export: a path, an open file, or an iterable of lines (text or bytes),
    parsed entries (dicts) or :class:`~nexus_client.answers.LogEntry`. Answers what it
    holds; raises :class:`VerifyError` at the first broken entry."""
    checker = _Checker(limits)
    for raw in _lines(source):
        checker.check(raw)
    return checker.report


def _n(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def main(argv: list[str]) -> int:
    """``python -m nexus_client verify FILE``: exit 0 when the export verifies, 1 when it
    does not (the first bad line is printed), 2 when it cannot be read."""
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m nexus_client verify EXPORT.jsonl", file=sys.stderr)
        return 2
    try:
        r = verify_export(argv[0])
    except VerifyError as e:
        print(f"error: {argv[0]} does not verify: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot read {argv[0]}: {e}", file=sys.stderr)
        return 2
    print(f"ok: {_n(r.lines, 'entry', 'entries')} verified (seq 1..{r.head})")
    print(f"  {_n(r.records, 'record')}: {_n(r.intents, 'intent')}, {_n(r.facts, 'fact')} ({r.resolving_facts} resolving), {_n(r.hints, 'hint')}")
    print(
        f"  {_n(r.actions, 'action')}: {_n(r.claims, 'claim')}, {_n(r.renewals, 'renewal')}, "
        f"{_n(r.withdrawals, 'withdrawal')}, {_n(r.retractions, 'retraction')}"
    )
    return 0
