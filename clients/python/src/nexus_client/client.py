"""A synchronous client for the neXus v1 HTTP+JSON API (``spec/api.md``), on ``httpx``.

Every route has a method with a typed answer (:mod:`nexus_client.answers`). Records and
actions in answers are verified (hash and strict signature) before they are handed out,
so a client never trusts the server for authorship. An error answer raises
:class:`~nexus_client.errors.ApiError` (status, stable ``code``, message, details).

>>> from nexus_client import Client, KeyFile, records
>>> key = KeyFile.load()                                    # doctest: +SKIP
>>> with Client("http://127.0.0.1:7878") as c:              # doctest: +SKIP
...     intent = records.propose(key, "chem/solubility", {"compound": "NaCl"})
...     c.propose(intent)
...     lease = c.claim(records.claim(key, c.deployment(), intent, 30_000))
...     c.submit_fact(records.fact(key, "chem/solubility", {"g_per_l": 360},
...                                [intent.hash], resolves=(intent.hash, lease.token)))
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import IO, Any, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx

from . import __version__
from .answers import (
    Contract,
    ContractRule,
    ContractVersion,
    Deployed,
    FactPage,
    Health,
    HintItem,
    IntentItem,
    IntentPage,
    IntentState,
    Lease,
    LogEntry,
    LogPage,
    Provenance,
    RecordInfo,
    Retracted,
    Submitted,
    Withdrawn,
)
from .canonical import canonical_text, parse_json
from .errors import (
    ApiError,
    InvalidRecordFromServer,
    NexusError,
    TransportError,
    UnexpectedAnswer,
    Unreachable,
    WireError,
)
from .records import DEFAULT_LIMITS, Action, Limits, Record, check_deployment, check_topic, parse_action, parse_record

DEFAULT_TIMEOUT = 30.0
"""Seconds each step of a request (connect, write, read) may take."""
MAX_RESPONSE_BYTES = 256 << 20
"""Largest answer body read."""
LOG_PAGE_SIZE = 1000
"""Entries asked for per ``GET /v1/log`` page by :meth:`Client.log_pages` (the server's maximum)."""
EVENT_IDLE_TIMEOUT = 60.0
"""Seconds of silence after which an event stream counts as dropped (the server sends a
heartbeat every 15 s)."""

T = TypeVar("T")


class IntentFilters(TypedDict, total=False):
    """Filters of ``GET /v1/intents``: ``state`` (available, claimed, resolved or
    withdrawn), ``topic`` (subtopics included), ``limit`` (page size, default 50, max 500)."""

    state: str
    topic: str
    limit: int


class FactFilters(TypedDict, total=False):
    """Filters of ``GET /v1/facts``: ``topic`` (subtopics included), ``since``
    (inclusive) and ``until`` (exclusive) in ms, ``limit`` (page size, default 50, max 500)."""

    topic: str
    since: int
    until: int
    limit: int


def _snippet(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    return text[:200] + ("…" if len(text) > 200 else "")


def _build(cls: type[T], obj: Any, where: tuple[str, str, int], **given: Any) -> T:
    """``cls`` (a dataclass) from the members of the JSON object ``obj``; ``given``
    overrides members. A missing required member is an :class:`UnexpectedAnswer`."""
    method, url, status = where
    if not isinstance(obj, dict):
        raise UnexpectedAnswer(method, url, status, f"expected a JSON object for {cls.__name__}, got {_snippet(str(obj).encode())}")
    args: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            args[f.name] = given[f.name]
        elif f.name in obj:
            args[f.name] = obj[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UnexpectedAnswer(method, url, status, f"the answer has no `{f.name}` ({cls.__name__})")
    return cls(**args)


def _api_error(method: str, url: str, status: int, body: bytes) -> ApiError | None:
    try:
        v = parse_json(body)
    except WireError:
        return None
    err = v.get("error") if isinstance(v, dict) else None
    if not isinstance(err, dict) or not isinstance(err.get("code"), str):
        return None
    details = {k: x for k, x in err.items() if k not in ("code", "message", "status")}
    message = err.get("message")
    return ApiError(method, url, status, err["code"], message if isinstance(message, str) else "", details)


def _raise_for(method: str, url: str, status: int, body: bytes) -> None:
    if 200 <= status < 300:
        return
    error = _api_error(method, url, status, body)
    if error is not None:
        raise error
    raise UnexpectedAnswer(method, url, status, f"not an API error body: {_snippet(body)}")


def _transport(method: str, url: str, e: httpx.HTTPError) -> TransportError:
    if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):
        return Unreachable(method, url, f"cannot reach the neXus server: {e}")
    return TransportError(method, url, f"{type(e).__name__}: {e}")


class Client:
    """A client for one neXus server at ``base_url`` (``http://host:port`` or
    ``https://…``, optionally with a path prefix). ``token`` is sent as
    ``Authorization: Bearer <token>`` (for a server whose reads need one); ``timeout``
    bounds each step of a request, in seconds; records in answers are verified against
    ``limits`` (the server's, when it was configured otherwise). ``verify_tls`` is
    httpx's (``False``, or a CA bundle path for a private CA); ``transport`` replaces
    httpx's (a proxy, or a mock in tests).

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        limits: Limits = DEFAULT_LIMITS,
        verify_tls: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(base_url, str):
            raise NexusError(f"invalid server URL {base_url!r}: it must be a string")
        base = base_url.rstrip("/")
        rest = base.removeprefix("http://") if base.startswith("http://") else base.removeprefix("https://")
        if rest == base:
            raise NexusError(f"invalid server URL {base_url!r}: it must start with http:// or https://")
        if not rest or rest.startswith("/"):
            raise NexusError(f"invalid server URL {base_url!r}: it names no host")
        if any(c in base for c in "?#") or any(c.isspace() for c in base):
            raise NexusError(f"invalid server URL {base_url!r}: it must not contain a query, fragment or spaces")
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise NexusError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.base_url = base
        self.timeout = float(timeout)
        self.limits = limits
        headers = {"user-agent": f"nexus-client-python/{__version__}"}
        if token is not None:
            if not token.strip():
                raise NexusError("the bearer token is empty")
            headers["authorization"] = f"Bearer {token.strip()}"
        self._http = httpx.Client(headers=headers, timeout=self.timeout, verify=verify_tls, transport=transport)
        self._deployment: str | None = None

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # ---- raw requests ----

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _send(
        self, method: str, path: str, body: bytes | None = None, params: dict[str, Any] | None = None
    ) -> tuple[str, int, bytes]:
        url = self._url(path)
        q = {k: str(v) for k, v in (params or {}).items() if v is not None}
        headers = {"content-type": "application/json"} if body is not None else {}
        full = str(httpx.URL(url, params=q)) if q else url
        try:
            with self._http.stream(method, url, params=q, content=body, headers=headers) as r:
                chunks, size = [], 0
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise TransportError(method, full, f"the answer is larger than {MAX_RESPONSE_BYTES} bytes")
                    chunks.append(chunk)
                return full, r.status_code, b"".join(chunks)
        except httpx.HTTPError as e:
            raise _transport(method, full, e) from e

    def _json(self, method: str, path: str, body: bytes | None = None, params: dict[str, Any] | None = None) -> tuple[tuple[str, str, int], Any]:
        url, status, data = self._send(method, path, body, params)
        _raise_for(method, url, status, data)
        try:
            return (method, url, status), parse_json(data)
        except WireError as e:
            raise UnexpectedAnswer(method, url, status, f"{e}: {_snippet(data)}") from None

    def get_json(self, path: str, **params: Any) -> Any:
        """``GET path`` with query ``params``: the JSON body of a 2xx answer (for routes
        the typed methods do not cover)."""
        return self._json("GET", path, params=params)[1]

    def post_json(self, path: str, body: bytes) -> Any:
        """``POST path`` with ``body`` as ``application/json`` (sent as given): the JSON
        body of a 2xx answer."""
        return self._json("POST", path, body)[1]

    def _verify(self, where: tuple[str, str, int], value: Any, parse: Callable[[Any, Limits], T]) -> T:
        try:
            return parse(value, self.limits)
        except WireError as e:
            raise InvalidRecordFromServer(where[0], where[1], e) from None

    def _record(self, where: tuple[str, str, int], value: Any) -> Record:
        return self._verify(where, value, parse_record)

    def _entry(self, where: tuple[str, str, int], value: Any) -> LogEntry:
        if not isinstance(value, dict) or type(value.get("seq")) is not int or type(value.get("at")) is not int:
            raise UnexpectedAnswer(where[0], where[1], where[2], f"not a log entry: {_snippet(str(value).encode())}")
        if "record" in value:
            return LogEntry(value["seq"], value["at"], self._record(where, value["record"]), None, value)
        if "action" in value:
            return LogEntry(value["seq"], value["at"], None, self._verify(where, value["action"], parse_action), value)
        raise UnexpectedAnswer(where[0], where[1], where[2], "a log entry with neither `record` nor `action`")

    # ---- health ----

    def health(self) -> Health:
        """``GET /v1/health``. A degraded server (``503`` with a health body) answers
        ``status="degraded"``; any other failure raises."""
        url, status, data = self._send("GET", "/v1/health")
        if status == 503:
            try:
                v = parse_json(data)
                if isinstance(v, dict) and v.get("status") == "degraded":
                    return _build(Health, v, ("GET", url, status))
            except WireError:
                pass
        _raise_for("GET", url, status, data)
        try:
            return _build(Health, parse_json(data), ("GET", url, status))
        except WireError as e:
            raise UnexpectedAnswer("GET", url, status, str(e)) from None

    def deployment(self) -> str:
        """The server's deployment id (from ``GET /v1/health``, read once per client):
        what the actions sent to it must be signed for."""
        if self._deployment is None:
            d = self.health().deployment
            try:
                self._deployment = check_deployment(d)
            except WireError:
                raise UnexpectedAnswer(
                    "GET", self._url("/v1/health"), 200, f"the answer names no valid deployment id ({d!r}): a server older than wire format v2?"
                ) from None
        return self._deployment

    # ---- writes ----

    def _submit(self, path: str, record: Record) -> Submitted:
        if not isinstance(record, Record):
            raise TypeError(f"expected a Record (see nexus_client.records), got {type(record).__name__}")
        where, v = self._json("POST", path, record.to_json())
        return _build(Submitted, v, where)

    def submit(self, record: Record) -> Submitted:
        """Submits a record to the route of its kind (``/v1/intents``, ``/v1/facts``,
        ``/v1/hints``)."""
        return self._submit({"intent": "/v1/intents", "fact": "/v1/facts", "hint": "/v1/hints"}[record.kind], record)

    def propose(self, intent: Record) -> Submitted:
        """``POST /v1/intents``: proposes an Intent."""
        return self._submit("/v1/intents", intent)

    def submit_fact(self, fact: Record) -> Submitted:
        """``POST /v1/facts`` (a Fact with ``resolves`` resolves its Intent atomically)."""
        return self._submit("/v1/facts", fact)

    def submit_hint(self, hint: Record) -> Submitted:
        """``POST /v1/hints`` (``deny`` and ``allow`` need an operator key)."""
        return self._submit("/v1/hints", hint)

    def _act(self, action: Action, verb: str) -> tuple[tuple[str, str, int], Any]:
        if not isinstance(action, Action):
            raise TypeError(f"expected an Action (see nexus_client.records), got {type(action).__name__}")
        expected = "retract" if verb == "retract" else verb
        if action.kind != expected:
            raise NexusError(f"a {action.kind} action cannot be sent to /{verb}")
        on = "hints" if verb == "retract" else "intents"
        return self._json("POST", f"/v1/{on}/{action.target}/{verb}", action.to_json())

    def claim(self, action: Action) -> Lease:
        """``POST /v1/intents/{intent}/claim``: the fencing token and the lease."""
        where, v = self._act(action, "claim")
        return _build(Lease, v, where)

    def renew(self, action: Action) -> Lease:
        """``POST /v1/intents/{intent}/renew``."""
        where, v = self._act(action, "renew")
        return _build(Lease, v, where)

    def withdraw(self, action: Action) -> Withdrawn:
        """``POST /v1/intents/{intent}/withdraw``."""
        where, v = self._act(action, "withdraw")
        return _build(Withdrawn, v, where)

    def retract(self, action: Action) -> Retracted:
        """``POST /v1/hints/{hint}/retract``."""
        where, v = self._act(action, "retract")
        return _build(Retracted, v, where)

    def act(self, action: Action) -> Lease | Withdrawn | Retracted:
        """Sends an action to the route of its kind."""
        if action.kind == "withdraw":
            return self.withdraw(action)
        if action.kind == "retract":
            return self.retract(action)
        return self.claim(action) if action.kind == "claim" else self.renew(action)

    def batch(self, items: list[Record | Action]) -> list[Submitted | Lease | Withdrawn | Retracted]:
        """``POST /v1/batch``: commits every item (records and actions, 1 to 64), in
        order, in one atomic commit (each item sees what the ones before it did: propose
        an Intent and claim it, or resolve one and propose follow-ups that derive from
        the Fact). Answers each item's result, as its own route would; if any item
        fails, nothing is stored and the :class:`ApiError` names it (``detail("item")``,
        from 0)."""
        wire: list[dict[str, Any]] = []
        for item in items:
            if isinstance(item, Record):
                wire.append({"record": item.wire})
            elif isinstance(item, Action):
                wire.append({"action": item.wire})
            else:
                raise TypeError(f"a batch item is a Record or an Action, got {type(item).__name__}")
        where, v = self._json("POST", "/v1/batch", canonical_text({"items": wire}).encode())
        results = v.get("results") if isinstance(v, dict) else None
        if not isinstance(results, list) or len(results) != len(items):
            raise UnexpectedAnswer(*where, f"expected {len(items)} results, got {_snippet(str(v).encode())}")
        kinds: dict[str, type[Any]] = {"record": Submitted, "lease": Lease, "withdrawn": Withdrawn, "retracted": Retracted}
        out: list[Submitted | Lease | Withdrawn | Retracted] = []
        for r in results:
            if not isinstance(r, dict) or len(r) != 1 or next(iter(r)) not in kinds:
                raise UnexpectedAnswer(*where, f"not a batch result: {_snippet(str(r).encode())}")
            [(name, body)] = r.items()
            out.append(_build(kinds[name], body, where))
        return out

    # ---- reads ----

    def intents(self, *, cursor: str | None = None, **filters: Unpack[IntentFilters]) -> IntentPage:
        """``GET /v1/intents`` (one page, from ``cursor``; see :class:`IntentFilters`)."""
        where, v = self._json("GET", "/v1/intents", params={**filters, "cursor": cursor})
        items = v.get("intents") if isinstance(v, dict) else None
        if not isinstance(items, list):
            raise UnexpectedAnswer(where[0], where[1], where[2], "the answer has no `intents` list")
        out = []
        for i in items:
            item = _build(IntentItem, i, where, record=self._record(where, i.get("record") if isinstance(i, dict) else None),
                          state=_build(IntentState, i.get("state") if isinstance(i, dict) else None, where))
            out.append(item)
        return IntentPage(out, v.get("next"))

    def facts(self, *, cursor: str | None = None, **filters: Unpack[FactFilters]) -> FactPage:
        """``GET /v1/facts`` (one page, oldest first, from ``cursor``; see :class:`FactFilters`)."""
        params = {**filters, "cursor": cursor}
        where, v = self._json("GET", "/v1/facts", params=params)
        facts = v.get("facts") if isinstance(v, dict) else None
        if not isinstance(facts, list):
            raise UnexpectedAnswer(where[0], where[1], where[2], "the answer has no `facts` list")
        return FactPage([self._record(where, f) for f in facts], v.get("next"))

    def _pages(self, fetch: Callable[[str | None], tuple[list[T], str | None]], cursor: str | None) -> Iterator[T]:
        while True:
            items, nxt = fetch(cursor)
            yield from items
            if nxt is None:
                return
            if nxt == cursor:
                raise UnexpectedAnswer("GET", self.base_url, 200, f"the server returned the same cursor {nxt!r} again")
            cursor = nxt

    def all_intents(self, *, cursor: str | None = None, **filters: Unpack[IntentFilters]) -> Iterator[IntentItem]:
        """Every Intent matching the filters, following ``next`` cursors page by page."""

        def fetch(c: str | None) -> tuple[list[IntentItem], str | None]:
            p = self.intents(cursor=c, **filters)
            return p.intents, p.next

        return self._pages(fetch, cursor)

    def all_facts(self, *, cursor: str | None = None, **filters: Unpack[FactFilters]) -> Iterator[Record]:
        """Every Fact matching the filters, following ``next`` cursors page by page."""

        def fetch(c: str | None) -> tuple[list[Record], str | None]:
            p = self.facts(cursor=c, **filters)
            return p.facts, p.next

        return self._pages(fetch, cursor)

    def record(self, id: str) -> RecordInfo:
        """``GET /v1/records/{id}`` (a full hash or a prefix of at least 8 hex digits)."""
        where, v = self._json("GET", f"/v1/records/{quote(id, safe='')}")
        return _build(RecordInfo, v, where, record=self._record(where, v.get("record") if isinstance(v, dict) else None))

    def provenance(self, id: str, depth: int | None = None) -> Provenance:
        """``GET /v1/records/{id}/provenance``: the DAG above the record, breadth first."""
        where, v = self._json("GET", f"/v1/records/{quote(id, safe='')}/provenance", params={"depth": depth})
        recs = v.get("records") if isinstance(v, dict) else None
        if not isinstance(recs, list):
            raise UnexpectedAnswer(where[0], where[1], where[2], "the answer has no `records` list")
        return _build(Provenance, v, where, records=[self._record(where, r) for r in recs])

    def hints(self) -> list[HintItem]:
        """``GET /v1/hints``: the Hints in force (each record verified, and checked to be
        the Hint it is listed as)."""
        where, v = self._json("GET", "/v1/hints")
        items = v.get("hints") if isinstance(v, dict) else None
        if not isinstance(items, list):
            raise UnexpectedAnswer(where[0], where[1], where[2], "the answer has no `hints` list")
        out = []
        for h in items:
            item = _build(HintItem, h, where, hint=self._record(where, h.get("hint") if isinstance(h, dict) else None))
            if item.hint.hash != item.hash or item.hint.kind != "hint":
                raise UnexpectedAnswer(where[0], where[1], where[2], f"hint {item.hash} is not the Hint record it lists")
            out.append(item)
        return out

    # ---- contract ----

    def contract(self) -> Contract | None:
        """``GET /v1/contract``: the version in force, ``None`` when none is deployed."""
        try:
            where, v = self._json("GET", "/v1/contract")
        except ApiError as e:
            if e.code == "not_found":
                return None
            raise
        rules = [_build(ContractRule, r, where) for r in (v.get("rules") or [])]
        return _build(Contract, v, where, rules=rules)

    def contract_history(self) -> list[ContractVersion]:
        """``GET /v1/contract/history``: every deployment, oldest first."""
        where, v = self._json("GET", "/v1/contract/history")
        versions = v.get("versions") if isinstance(v, dict) else None
        if not isinstance(versions, list):
            raise UnexpectedAnswer(where[0], where[1], where[2], "the answer has no `versions` list")
        return [_build(ContractVersion, x, where) for x in versions]

    def deploy_contract(self, deployment: Record) -> Deployed:
        """``POST /v1/contract`` with a deployment Fact (see
        :func:`nexus_client.records.contract_deployment`)."""
        if not isinstance(deployment, Record) or deployment.kind != "fact":
            raise TypeError("a contract deployment is a Fact record (records.contract_deployment)")
        where, v = self._json("POST", "/v1/contract", deployment.to_json())
        return _build(Deployed, v, where)

    # ---- the log ----

    def log(self, from_: int = 1, limit: int | None = None) -> LogPage:
        """``GET /v1/log``: one page of the commit log from ``from_`` (the first entry
        is 1), each entry's record or action verified."""
        where, v = self._json("GET", "/v1/log", params={"from": from_, "limit": limit})
        entries = v.get("entries") if isinstance(v, dict) else None
        if not isinstance(entries, list) or type(v.get("head")) is not int:
            raise UnexpectedAnswer(where[0], where[1], where[2], "the answer has no `head` and `entries`")
        return LogPage(v["head"], [self._entry(where, e) for e in entries])

    def log_pages(self, from_: int = 1, page_size: int = LOG_PAGE_SIZE) -> Iterator[LogPage]:
        """The commit log from ``from_`` on, page by page, until the head the server
        reports (when the first page was read)."""
        nxt = max(from_, 1)
        while True:
            page = self.log(nxt, page_size)
            if not page.entries:
                return
            last = page.entries[-1].seq
            if last < nxt:
                raise UnexpectedAnswer("GET", self._url(f"/v1/log?from={nxt}"), 200, f"the page ends at seq {last}, before `from`")
            yield page
            if last >= page.head:
                return
            nxt = last + 1

    def log_entries(self, from_: int = 1) -> Iterator[LogEntry]:
        """The commit log from ``from_`` on, entry by entry."""
        for page in self.log_pages(from_):
            yield from page.entries

    def export(self, out: IO[str], from_: int = 1) -> int:
        """Writes the commit log from ``from_`` on to ``out`` as an export (JSON lines,
        what ``nexus verify`` and :func:`nexus_client.verify.verify_export` check);
        answers how many entries were written."""
        n = 0
        for entry in self.log_entries(from_):
            out.write(canonical_text(entry.raw) + "\n")
            n += 1
        return n

    def events(
        self,
        from_: int = 1,
        topic: str | None = None,
        *,
        reconnect: bool = True,
        give_up_after: float = 30.0,
        idle_timeout: float = EVENT_IDLE_TIMEOUT,
    ) -> EventStream:
        """``GET /v1/events``: the log from ``from_``, then each entry as it commits
        (``spec/api.md``, "Live events"), as an iterator of :class:`LogEntry`.

        When the connection drops (or is silent for ``idle_timeout`` seconds), the stream
        reconnects with ``Last-Event-ID`` (the last ``seq`` it gave), so every entry
        comes once, in order; it raises the last error once it could not reconnect for
        ``give_up_after`` seconds. With ``reconnect=False`` it ends when the connection
        does."""
        if topic is not None:
            try:
                check_topic(topic, glob=True, what="topic filter")
            except WireError as e:
                raise NexusError(str(e)) from None
        return EventStream(self, from_, topic, reconnect, give_up_after, idle_timeout)


class EventStream(Iterator[LogEntry]):
    """The entries of ``GET /v1/events`` (see :meth:`Client.events`). Close it (or use it
    as a context manager) to drop the connection."""

    def __init__(
        self, client: Client, from_: int, topic: str | None, reconnect: bool, give_up_after: float, idle_timeout: float
    ) -> None:
        self._client = client
        self._params = {k: v for k, v in {"from": from_, "topic": topic}.items() if v is not None}
        self._reconnect = reconnect
        self._give_up_after = give_up_after
        self._idle_timeout = idle_timeout
        self._retry_s = 1.0
        self._cm: Any = None
        self._lines: Iterator[str] | None = None
        self._closed = False
        self.url = str(httpx.URL(client._url("/v1/events"), params=self._params))
        self.last_seq: int | None = None
        """The ``seq`` of the last entry given (what a reconnection resumes after)."""
        self.connections = 0
        """How many connections were made (1 + reconnections)."""

    def __iter__(self) -> EventStream:
        return self

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Drops the connection; the iterator ends."""
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        cm, self._cm, self._lines = self._cm, None, None
        if cm is not None:
            try:
                cm.__exit__(None, None, None)
            except httpx.HTTPError:
                pass

    def _open(self) -> None:
        headers = {"accept": "text/event-stream"}
        if self.last_seq is not None:
            headers["last-event-id"] = str(self.last_seq)
        timeout = httpx.Timeout(self._client.timeout, read=self._idle_timeout)
        cm = self._client._http.stream("GET", self._client._url("/v1/events"), params=self._params, headers=headers, timeout=timeout)
        try:
            r = cm.__enter__()
        except httpx.HTTPError as e:
            raise _transport("GET", self.url, e) from e
        if r.status_code != 200:
            try:
                body = r.read()
            except httpx.HTTPError as e:
                raise _transport("GET", self.url, e) from e
            finally:
                cm.__exit__(None, None, None)
            _raise_for("GET", self.url, r.status_code, body)
            raise UnexpectedAnswer("GET", self.url, r.status_code, "not an event stream")
        self._cm = cm
        self._lines = r.iter_lines()
        self.connections += 1

    def _connect(self) -> None:
        deadline = time.monotonic() + self._give_up_after
        while True:
            try:
                self._open()
                return
            except TransportError:
                if not self._reconnect or self.connections == 0 or time.monotonic() >= deadline:
                    raise
            time.sleep(self._retry_s)

    def __next__(self) -> LogEntry:
        data: list[str] = []
        event = ""
        while True:
            if self._closed:
                raise StopIteration
            if self._lines is None:
                self._connect()
            assert self._lines is not None
            try:
                line = next(self._lines)
            except (StopIteration, httpx.HTTPError):
                # The connection ended or broke: an event cut short is dropped.
                self._drop()
                data, event = [], ""
                if not self._reconnect:
                    self._closed = True
                    raise StopIteration from None
                continue
            if line == "":
                if not data:
                    continue  # a comment (heartbeat) or a `retry:` block ended
                text, kind = "\n".join(data), event or "message"
                data, event = [], ""
                if kind == "error":
                    err = _api_error("GET", self.url, 500, text.encode())
                    raise err if err is not None else UnexpectedAnswer("GET", self.url, 200, f"the stream failed: {text}")
                if kind != "entry":
                    continue
                try:
                    value = parse_json(text)
                except WireError as e:
                    raise UnexpectedAnswer("GET", self.url, 200, f"an event that is not JSON: {e}") from None
                entry = self._client._entry(("GET", self.url, 200), value)
                self.last_seq = entry.seq
                return entry
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value.strip()
            elif name == "retry" and value.isdigit():
                self._retry_s = int(value) / 1000
            # `id:` equals the entry's seq, comments need nothing.


__all__ = ["Client", "EventStream", "FactFilters", "IntentFilters", "DEFAULT_TIMEOUT", "LOG_PAGE_SIZE", "MAX_RESPONSE_BYTES"]
