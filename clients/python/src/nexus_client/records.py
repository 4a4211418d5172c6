"""Records (Intent, Fact, Hint) and actions (claim, renew, withdraw, retract).

Building: :func:`propose`, :func:`fact`, :func:`hint`, :func:`claim`, :func:`renew`,
:func:`withdraw` and :func:`retract` validate their input against the default
:class:`Limits`, put the content in normal form, hash it (FihHash of the canonical
encoding) and sign it, exactly as the Rust builders (``nexus_client::builders``) do.
Actions are wire format v2: signed for one deployment (``Client.deployment()``).

Reading: :func:`parse_record`, :func:`parse_action` (and :func:`parse_wire` for either)
check a wire form in the order of ``spec/README.md`` ("Validation order") and raise
:class:`~nexus_client.errors.WireError` with the code of the first rule it breaks;
:func:`check_wire` reports the code, canonical content and computed hash instead.
"""

from __future__ import annotations

import re
import time as _time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, Protocol

from .canonical import MAX_SAFE_INTEGER, JsonValue, canonical_bytes, canonical_text, parse_json
from .crypto import fih_hash, is_author_key, verify_strict
from .errors import WireError

U64_MAX = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1

RECORD_KINDS = ("fact", "intent", "hint")
ACTION_KINDS = ("claim", "renew", "withdraw", "retract")
WireType = Literal["record", "action"]


@dataclass(frozen=True)
class Limits:
    """The limits records are checked against (``nexus_core::record::Limits::default()``:
    what every host accepts unless configured otherwise)."""

    max_body_bytes: int = 64 * 1024
    max_parents: int = 64
    max_json_depth: int = 32
    max_reason_bytes: int = 1024
    max_selector_bytes: int = 4096
    max_topic_depth: int = 16
    max_topic_bytes: int = 256


DEFAULT_LIMITS = Limits()


def now_ms() -> int:
    """The current time in ms since the Unix epoch."""
    return _time.time_ns() // 1_000_000


# --------------------------------------------------------------------------------
# Shape checks and normal form.

_HEX = re.compile(r"[0-9a-f]*")
_SEGMENT = re.compile(r"[A-Za-z0-9\-_.~:+=,]+")
_DEPLOYMENT = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _malformed(detail: str) -> NoReturn:
    raise WireError("malformed", detail)


def _lower_hex(value: Any, n_bytes: int, what: str) -> str:
    if not isinstance(value, str) or len(value) != 2 * n_bytes or not _HEX.fullmatch(value):
        _malformed(f"{what} must be {2 * n_bytes} lowercase hex digits, got {value!r}")
    return value


def check_hash(value: Any, what: str = "hash") -> str:
    """``value`` if it is a FihHash (64 lowercase hex digits), else ``malformed``."""
    return _lower_hex(value, 32, what)


def check_author(value: Any, what: str = "author") -> str:
    """``value`` if it is an author key (64 lowercase hex digits of a curve point)."""
    _lower_hex(value, 32, what)
    if not is_author_key(bytes.fromhex(value)):
        _malformed(f"{what} {value} is not an Ed25519 point")
    return str(value)


def check_deployment(value: Any) -> str:
    """``value`` if it is a deployment id: 1..=64 bytes of ``[A-Za-z0-9._-]``."""
    if not isinstance(value, str) or not _DEPLOYMENT.fullmatch(value):
        _malformed(f"deployment must be 1..=64 of [A-Za-z0-9._-], got {value!r}")
    return value


def _u64(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= U64_MAX:
        _malformed(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _u53(value: int, what: str) -> int:
    if value > MAX_SAFE_INTEGER:
        raise WireError("out_of_range", f"{what} = {value}")
    return value


def check_topic(value: Any, glob: bool = False, what: str = "topic", limits: Limits = DEFAULT_LIMITS) -> str:
    """``value`` if it is a topic (or, with ``glob``, a topic glob), else ``malformed``."""
    if not isinstance(value, str):
        _malformed(f"{what} must be a string, got {value!r}")
    segs = value.split("/")
    bad = not value or len(value.encode()) > limits.max_topic_bytes or len(segs) > limits.max_topic_depth
    for i, seg in enumerate(segs):
        if glob and seg in ("*", "**"):
            bad |= seg == "**" and i + 1 != len(segs)
            continue
        bad |= seg in (".", "..") or not _SEGMENT.fullmatch(seg)
    if bad:
        _malformed(f"invalid {what} {value!r}")
    return value


def _obj(value: Any, what: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        _malformed(f"{what} must be an object")
    unknown = set(value) - allowed
    if unknown:
        _malformed(f"unknown field(s) {sorted(unknown)} in {what}")
    missing = required - set(value)
    if missing:
        _malformed(f"missing field(s) {sorted(missing)} in {what}")
    return value


def _hashes(value: Any, what: str) -> list[str]:
    if not isinstance(value, list):
        _malformed(f"{what} must be an array")
    return [_lower_hex(h, 32, what) for h in value]


def _present(d: Mapping[str, Any], key: str) -> bool:
    """Optional members: absent or null (null is then refused as not normal)."""
    return d.get(key) is not None


def _check_parents(parents: list[str], what: str, limits: Limits) -> None:
    if len(parents) > limits.max_parents:
        raise WireError("too_many_parents", f"{len(parents)} {what}, at most {limits.max_parents}")
    if len(set(parents)) != len(parents):
        raise WireError("duplicate_parent", f"a hash is listed twice in {what}")


def _body_canon(body: JsonValue, what: str, limits: Limits) -> None:
    size = len(canonical_bytes(body, limits.max_json_depth))
    if size > limits.max_body_bytes:
        raise WireError("body_too_large", f"{what} is {size} bytes, at most {limits.max_body_bytes}")


def _shape_hint(c: dict[str, Any], limits: Limits) -> None:
    fields = {"kind", "selector", "effect", "reason", "source", "expires", "author", "time"}
    _obj(c, "hint", fields, {"kind", "selector", "effect", "reason", "author", "time"})
    sel = dict(_obj(c["selector"], "selector", {"topic", "body"}, set()))
    for k in ("topic", "body"):
        if not _present(sel, k):
            sel.pop(k, None)
    if "topic" in sel:
        check_topic(sel["topic"], True, "selector.topic", limits)
    if "body" in sel and not isinstance(sel["body"], dict):
        _malformed("selector.body must be an object")
    c["selector"] = sel
    eff = c["effect"]
    if isinstance(eff, dict):
        _obj(eff, "effect", {"priority"}, {"priority"})
        p = eff["priority"]
        if type(p) is not int or not I64_MIN <= p <= I64_MAX:
            _malformed(f"effect.priority must be an i64, got {p!r}")
    elif eff not in ("deny", "allow"):
        _malformed(f'effect must be "deny", "allow" or {{"priority": n}}, got {eff!r}')
    if not isinstance(c["reason"], str):
        _malformed("reason must be a string")
    if _present(c, "source"):
        src = dict(_obj(c["source"], "source", {"contract", "rule", "facts"}, set()))
        for k in ("contract", "rule"):
            if not _present(src, k):
                src.pop(k, None)
        if "contract" in src:
            _lower_hex(src["contract"], 32, "source.contract")
        if "rule" in src and not isinstance(src["rule"], str):
            _malformed("source.rule must be a string")
        src["facts"] = _hashes(src.get("facts", []), "source.facts")
        c["source"] = src
    else:
        c.pop("source", None)
    if _present(c, "expires"):
        _u64(c["expires"], "expires")
    else:
        c.pop("expires", None)


def normal_content(content: Mapping[str, Any], ty: WireType, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Checks a wire form's content (without ``hash`` and ``sig``) as the Rust core does,
    in its order, and returns its normal form: what is canonically encoded and hashed."""
    if not isinstance(content, Mapping):
        _malformed(f"a {ty} must be a JSON object")
    kind = content.get("kind")
    kinds = RECORD_KINDS if ty == "record" else ACTION_KINDS
    if not isinstance(kind, str) or kind not in kinds:
        _malformed(f"kind must be one of {kinds}, got {kind!r}")
    c = dict(content)
    # 1. Shape: fields, types, topics, keys.
    if kind in ("fact", "intent"):
        fields = {"kind", "topic", "body", "parents", "author", "time"} | ({"resolves"} if kind == "fact" else set())
        _obj(c, kind, fields, {"kind", "topic", "body", "author", "time"})
        check_topic(c["topic"], False, "topic", limits)
        c["parents"] = _hashes(c.get("parents", []), "parents")
        if kind == "fact" and _present(c, "resolves"):
            r = _obj(c["resolves"], "resolves", {"intent", "token"}, {"intent", "token"})
            _lower_hex(r["intent"], 32, "resolves.intent")
            _u64(r["token"], "resolves.token")
        else:
            c.pop("resolves", None)
    elif kind == "hint":
        _shape_hint(c, limits)
    else:
        target = "hint" if kind == "retract" else "intent"
        extra = {"claim": {"lease_ms"}, "renew": {"lease_ms", "token"}, "withdraw": set(), "retract": set()}[kind]
        required = {"kind", target, "author", "time"} | extra
        # Wire format v2 adds `deployment` (absent: a version 1 action of an old log).
        _obj(c, kind, required | {"deployment"}, required)
        if _present(c, "deployment"):
            check_deployment(c["deployment"])
        else:
            c.pop("deployment", None)
        _lower_hex(c[target], 32, target)
        for k in ("lease_ms", "token"):
            if k in c:
                _u64(c[k], k)
    check_author(c["author"])
    _u64(c["time"], "time")

    # 2. Content rules, in the order the Rust encoder meets them.
    if kind in ("fact", "intent"):
        _check_parents(c["parents"], "parents", limits)
        _body_canon(c["body"], "body", limits)
        if "resolves" in c:
            _u53(c["resolves"]["token"], "resolves.token")
    elif kind == "hint":
        n = len(c["reason"].encode())
        if not 1 <= n <= limits.max_reason_bytes:
            raise WireError("reason", f"reason is {n} bytes, must be 1..={limits.max_reason_bytes}")
        if isinstance(c["effect"], dict) and abs(c["effect"]["priority"]) > MAX_SAFE_INTEGER:
            raise WireError("out_of_range", f"effect.priority = {c['effect']['priority']}")
        if "expires" in c:
            _u53(c["expires"], "expires")
        if "body" in c["selector"]:
            _body_canon(c["selector"]["body"], "selector.body", limits)
        size = len(canonical_bytes(c["selector"], limits.max_json_depth))
        if size > limits.max_selector_bytes:
            raise WireError("selector_too_large", f"selector is {size} bytes, at most {limits.max_selector_bytes}")
        if "source" in c:
            _check_parents(c["source"]["facts"], "source.facts", limits)
    else:
        _u53(c.get("lease_ms", 0), "lease_ms")
    _u53(c["time"], "time")
    if kind == "renew":
        _u53(c["token"], "token")
    return c


# --------------------------------------------------------------------------------
# Signed wire forms.


@dataclass(frozen=True)
class Signed:
    """A verified record or action: its wire form (normal form plus ``hash`` and
    ``sig``). Build one with the builders below or read one with :func:`parse_wire`."""

    wire: dict[str, Any] = field(repr=False)

    @property
    def hash(self) -> str:
        """Its FihHash."""
        return str(self.wire["hash"])

    @property
    def sig(self) -> str:
        """Its signature."""
        return str(self.wire["sig"])

    @property
    def kind(self) -> str:
        """``intent``, ``fact``, ``hint``, ``claim``, ``renew``, ``withdraw`` or ``retract``."""
        return str(self.wire["kind"])

    @property
    def author(self) -> str:
        """The author key."""
        return str(self.wire["author"])

    @property
    def time(self) -> int:
        """The author's stated time, ms since the Unix epoch."""
        return int(self.wire["time"])

    @property
    def content(self) -> dict[str, Any]:
        """The content: the wire form without ``hash`` and ``sig``."""
        return {k: v for k, v in self.wire.items() if k not in ("hash", "sig")}

    def to_json(self) -> bytes:
        """The wire form as JSON (canonically encoded)."""
        return canonical_bytes(self.wire)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind} {self.hash})"


class Record(Signed):
    """An Intent, Fact or Hint."""

    @property
    def topic(self) -> str | None:
        """The topic of an Intent or Fact (``None`` for a Hint)."""
        t = self.wire.get("topic")
        return t if isinstance(t, str) else None

    @property
    def body(self) -> JsonValue:
        """The body of an Intent or Fact (``None`` for a Hint)."""
        return self.wire.get("body")

    @property
    def parents(self) -> list[str]:
        """Its parents (``[]`` for a Hint)."""
        return list(self.wire.get("parents", []))

    @property
    def resolves(self) -> tuple[str, int] | None:
        """``(intent, token)`` of a Fact that resolves an Intent."""
        r = self.wire.get("resolves")
        return (r["intent"], r["token"]) if r else None

    def links(self) -> list[str]:
        """Every record it links to: parents, the resolved Intent, a Hint's source Facts."""
        out = self.parents
        if (r := self.resolves) is not None:
            out.append(r[0])
        src = self.wire.get("source")
        if isinstance(src, dict):
            out.extend(src.get("facts", []))
        return out


class Action(Signed):
    """A claim, renewal, withdrawal or retraction."""

    @property
    def target(self) -> str:
        """The Intent it acts on (the Hint for a retraction)."""
        return str(self.wire["hint" if self.kind == "retract" else "intent"])

    @property
    def deployment(self) -> str | None:
        """The deployment it is signed for (``None``: a version 1 action)."""
        d = self.wire.get("deployment")
        return d if isinstance(d, str) else None


@dataclass(frozen=True)
class WireCheck:
    """What :func:`check_wire` found: the first error (or ``None``), the canonical
    content and its FihHash (whenever the content has a canonical form)."""

    error: WireError | None
    canonical: str | None
    hash: str | None


def check_wire(wire: Any, ty: WireType, limits: Limits = DEFAULT_LIMITS) -> WireCheck:
    """Checks a wire form in the order of ``spec/README.md`` and reports, rather than
    raises, what is wrong."""
    if not isinstance(wire, dict):
        return WireCheck(WireError("malformed", f"a {ty} must be a JSON object"), None, None)
    content = {k: v for k, v in wire.items() if k not in ("hash", "sig")}
    content_error: WireError | None = None
    canonical: str | None = None
    computed: str | None = None
    try:
        canonical = canonical_text(normal_content(content, ty, limits))
        computed = fih_hash(canonical.encode())
        # One wire form per hash: what was sent, canonicalised, must be what is hashed.
        if canonical_text(content) != canonical:
            content_error = WireError("malformed", "not in normal form (a null member, a missing `parents`, …)")
    except WireError as e:
        content_error = e
    try:  # the wire's own hash and sig are read first
        stated = _lower_hex(wire.get("hash"), 32, "hash")
        sig = _lower_hex(wire.get("sig"), 64, "sig")
    except WireError as e:
        return WireCheck(e, canonical, computed)
    if content_error is not None:
        return WireCheck(content_error, canonical, computed)
    if stated != computed:
        return WireCheck(WireError("hash_mismatch", f"stated {stated}, computed {computed}"), canonical, computed)
    if not verify_strict(bytes.fromhex(wire["author"]), stated, bytes.fromhex(sig)):
        return WireCheck(WireError("bad_signature", f"does not verify for author {wire['author']}"), canonical, computed)
    return WireCheck(None, canonical, computed)


def parse_wire(value: Any, ty: WireType, limits: Limits = DEFAULT_LIMITS) -> Record | Action:
    """A verified :class:`Record` or :class:`Action` from its wire form (a parsed JSON
    object, or JSON text); :class:`WireError` when it does not verify."""
    if isinstance(value, (str, bytes)):
        value = parse_json(value)
    check = check_wire(value, ty, limits)
    if check.error is not None:
        raise check.error
    return Record(dict(value)) if ty == "record" else Action(dict(value))


def parse_record(value: Any, limits: Limits = DEFAULT_LIMITS) -> Record:
    """A verified Intent, Fact or Hint (see :func:`parse_wire`)."""
    r = parse_wire(value, "record", limits)
    assert isinstance(r, Record)
    return r


def parse_action(value: Any, limits: Limits = DEFAULT_LIMITS) -> Action:
    """A verified claim, renewal, withdrawal or retraction (see :func:`parse_wire`)."""
    a = parse_wire(value, "action", limits)
    assert isinstance(a, Action)
    return a


# --------------------------------------------------------------------------------
# Builders.


class Signer(Protocol):
    """What signs: an author key and a signature over a hash (:class:`~nexus_client.keys.KeyFile`)."""

    @property
    def author(self) -> str: ...

    def sign(self, hash_hex: str) -> str: ...


def _sign(key: Signer, content: dict[str, Any], ty: WireType) -> dict[str, Any]:
    normal = normal_content(content, ty)
    canonical = canonical_bytes(normal)
    if canonical_bytes(content) != canonical:
        _malformed("the content is not in normal form")
    h = fih_hash(canonical)
    return {**normal, "hash": h, "sig": key.sign(h)}


def sign_record(key: Signer, content: dict[str, Any]) -> Record:
    """Signs any record content with ``key`` (which must be its author)."""
    return Record(_sign(key, content, "record"))


def sign_action(key: Signer, content: dict[str, Any]) -> Action:
    """Signs any action content with ``key`` (which must be its author)."""
    return Action(_sign(key, content, "action"))


def _hash_list(hashes: Iterable[str | Signed] | None, what: str) -> list[str]:
    if hashes is None:
        return []
    if isinstance(hashes, (str, bytes)):
        raise WireError("malformed", f"{what} must be a list of hashes, not one string")
    return [h.hash if isinstance(h, Signed) else h for h in hashes]


def _ref(target: str | Signed) -> str:
    return target.hash if isinstance(target, Signed) else target


def propose(
    key: Signer, topic: str, body: JsonValue, parents: Iterable[str | Signed] | None = None, *, time: int | None = None
) -> Record:
    """An Intent (proposed now, or at ``time`` ms)."""
    return sign_record(
        key,
        {
            "kind": "intent",
            "topic": topic,
            "body": body,
            "parents": _hash_list(parents, "parents"),
            "author": key.author,
            "time": now_ms() if time is None else time,
        },
    )


def fact(
    key: Signer,
    topic: str,
    body: JsonValue,
    parents: Iterable[str | Signed] | None = None,
    resolves: tuple[str | Signed, int] | None = None,
    *,
    time: int | None = None,
) -> Record:
    """A Fact; ``resolves=(intent, token)`` resolves that Intent with the fencing token
    of the author's claim."""
    content: dict[str, Any] = {
        "kind": "fact",
        "topic": topic,
        "body": body,
        "parents": _hash_list(parents, "parents"),
        "author": key.author,
        "time": now_ms() if time is None else time,
    }
    if resolves is not None:
        if not isinstance(resolves, tuple) or len(resolves) != 2:
            raise WireError("malformed", "resolves must be a pair (intent, token)")
        content["resolves"] = {"intent": _ref(resolves[0]), "token": resolves[1]}
    return sign_record(key, content)


def selector(topic: str | None = None, body: Mapping[str, JsonValue] | None = None) -> dict[str, Any]:
    """A Hint selector: a topic glob (``*`` one segment, a final ``**`` any number) and/or
    top-level body members that must be equal."""
    sel: dict[str, Any] = {}
    if topic is not None:
        sel["topic"] = check_topic(topic, glob=True, what="selector topic")
    if body is not None:
        if not isinstance(body, Mapping):
            raise WireError("malformed", "a selector body must be a JSON object")
        sel["body"] = dict(body)
    return sel


Effect = Literal["deny", "allow"] | dict[str, int]


def priority(n: int) -> dict[str, int]:
    """The effect ``{"priority": n}``."""
    return {"priority": n}


def hint(
    key: Signer,
    selector: Mapping[str, Any],
    effect: Effect,
    reason: str,
    *,
    source: Mapping[str, Any] | None = None,
    expires: int | None = None,
    time: int | None = None,
) -> Record:
    """A Hint: ``effect`` is ``"deny"``, ``"allow"`` or :func:`priority`; ``source``
    (``{"contract"?, "rule"?, "facts": [...]}``) and ``expires`` (ms) are optional."""
    content: dict[str, Any] = {
        "kind": "hint",
        "selector": dict(selector),
        "effect": effect,
        "reason": reason,
        "author": key.author,
        "time": now_ms() if time is None else time,
    }
    if source is not None:
        content["source"] = {**source, "facts": _hash_list(source.get("facts"), "source.facts")}
    if expires is not None:
        content["expires"] = expires
    return sign_record(key, content)


def _action(key: Signer, kind: str, deployment: str, target: tuple[str, str | Signed], time: int | None, **extra: Any) -> Action:
    return sign_action(
        key,
        {
            "kind": kind,
            target[0]: _ref(target[1]),
            **extra,
            "author": key.author,
            "deployment": check_deployment(deployment),
            "time": now_ms() if time is None else time,
        },
    )


def claim(key: Signer, deployment: str, intent: str | Signed, lease_ms: int, *, time: int | None = None) -> Action:
    """A claim on ``intent`` for ``lease_ms``, signed for ``deployment``."""
    return _action(key, "claim", deployment, ("intent", intent), time, lease_ms=lease_ms)


def renew(
    key: Signer, deployment: str, intent: str | Signed, token: int, lease_ms: int, *, time: int | None = None
) -> Action:
    """A renewal of the claim with fencing ``token`` for another ``lease_ms`` from now."""
    return _action(key, "renew", deployment, ("intent", intent), time, token=token, lease_ms=lease_ms)


def withdraw(key: Signer, deployment: str, intent: str | Signed, *, time: int | None = None) -> Action:
    """A withdrawal of ``intent`` (by its proposer)."""
    return _action(key, "withdraw", deployment, ("intent", intent), time)


def retract(key: Signer, deployment: str, hint: str | Signed, *, time: int | None = None) -> Action:
    """A retraction of Hint ``hint`` (by its author, or an operator key)."""
    return _action(key, "retract", deployment, ("hint", hint), time)




CONTRACT_DEPLOY_TOPIC = "nexus/contract"


def contract_deployment(key: Signer, source: str, expected: str | None = None, *, time: int | None = None) -> Record:
    """The Fact that deploys a contract (``POST /v1/contract``): its ``source``
    (``contract.nex``) and the hash of the version it replaces (``None`` for the first)."""
    if not isinstance(source, str) or not source:
        raise WireError("malformed", "a contract source is a non-empty string")
    if expected is not None:
        check_hash(expected, "expected")
    return fact(key, CONTRACT_DEPLOY_TOPIC, {"source": source, "expected": expected}, time=time)


__all__: Sequence[str] = [
    "Action",
    "DEFAULT_LIMITS",
    "Limits",
    "Record",
    "Signed",
    "Signer",
    "WireCheck",
    "check_wire",
    "claim",
    "contract_deployment",
    "fact",
    "hint",
    "normal_content",
    "now_ms",
    "parse_action",
    "parse_record",
    "parse_wire",
    "priority",
    "propose",
    "renew",
    "retract",
    "selector",
    "sign_action",
    "sign_record",
    "withdraw",
]
