#!/usr/bin/env python3
"""Independent checker for spec/vectors.json (neXus FihHash and signature vectors).

Re-implements, from the prose in spec/README.md and without any Rust code, the
canonical JSON encoding (RFC 8785 restricted to i53 integers), the FihHash (BLAKE3
derive_key), the record/action wire rules and strict Ed25519 verification, then checks
every vector. Needs Python >= 3.11 and the PyPI packages `blake3` and `cryptography`
(see requirements.txt).

    python3 spec/check_vectors.py [path/to/vectors.json] [-v]

Exits 0 when every vector passes, 1 on any mismatch (each one is printed), 2 when the
file cannot be read.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

HASH_CONTEXT = "neXus 2026-11 FihHash v1"
SIG_DOMAIN = b"neXus sig v1\x00"
MAX_SAFE_INTEGER = 2**53 - 1
U64_MAX = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1

# Default limits (nexus_core::record::Limits::default()).
MAX_BODY_BYTES = 64 * 1024
MAX_PARENTS = 64
MAX_JSON_DEPTH = 32
MAX_REASON_BYTES = 1024
MAX_SELECTOR_BYTES = 4096
MAX_TOPIC_DEPTH = 16
MAX_TOPIC_BYTES = 256


class Refused(Exception):
    """A value or record is refused; `code` is the vector error code."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


# --------------------------------------------------------------------------------
# JSON parsing that keeps what canonicalisation needs to see.


class NonInteger:
    """A JSON number that is not an integer literal (fraction, exponent or -0)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"NonInteger({self.text})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NonInteger) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _parse_int(text: str):
    # Python's json hands integer literals (no fraction, no exponent) to parse_int;
    # "-0" is one of them, but it is not an integer neXus accepts.
    return NonInteger(text) if text == "-0" else int(text)


def _refuse_constant(text: str):
    raise Refused("invalid_json", f"{text} is not JSON")


def _no_duplicates(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise Refused("invalid_json", f"duplicate member name {k!r}")
        obj[k] = v
    return obj


def parse_json(text: str):
    """Parses JSON text; floats / exponents / -0 become NonInteger (never rounded)."""
    try:
        return json.loads(
            text,
            parse_float=NonInteger,
            parse_int=_parse_int,
            parse_constant=_refuse_constant,
            object_pairs_hook=_no_duplicates,
        )
    except json.JSONDecodeError as e:
        raise Refused("invalid_json", str(e)) from None


# --------------------------------------------------------------------------------
# Canonical JSON: RFC 8785 restricted to i53 integers.

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def canon_str(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)  # everything else literal, including / U+007F U+2028
    out.append('"')
    return "".join(out)


def utf16_key(s: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly as the sequence of UTF-16 code units.
    return s.encode("utf-16-be", "surrogatepass")


def canon(value, max_depth: int | None = None, depth: int = 0) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, NonInteger):
        raise Refused("not_an_integer", value.text)
    if type(value) is int:
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise Refused("out_of_range", str(value))
        return str(value)
    if isinstance(value, float):  # only reachable for values built in Python
        raise Refused("not_an_integer", repr(value))
    if isinstance(value, str):
        return canon_str(value)
    if isinstance(value, (list, dict)):
        if max_depth is not None and depth >= max_depth:
            raise Refused("too_deep", f"deeper than {max_depth}")
        if isinstance(value, list):
            return "[" + ",".join(canon(v, max_depth, depth + 1) for v in value) + "]"
        members = sorted(value.items(), key=lambda kv: utf16_key(kv[0]))
        return "{" + ",".join(canon_str(k) + ":" + canon(v, max_depth, depth + 1) for k, v in members) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def canon_bytes(value, max_depth: int | None = None) -> bytes:
    try:
        return canon(value, max_depth).encode("utf-8")
    except UnicodeEncodeError:
        raise Refused("invalid_json", "lone surrogate in a string") from None


def fih_hash(canonical: bytes) -> str:
    return blake3.blake3(canonical, derive_key_context=HASH_CONTEXT).hexdigest()


# --------------------------------------------------------------------------------
# Ed25519 point arithmetic, only for the small-order checks of strict verification
# (OpenSSL, behind `cryptography`, does not refuse small-order keys or R).

_P = 2**255 - 19
_D = (-121665 * pow(121666, -1, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
L = 2**252 + 27742317777372353535851937790883648493


def decompress(enc: bytes):
    """Affine (x, y) of a compressed Edwards point, or None if it is not on the curve."""
    y = int.from_bytes(enc, "little") & ((1 << 255) - 1)
    sign = enc[31] >> 7
    y %= _P
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = (u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P)) % _P
    if (v * x * x - u) % _P != 0:
        x = x * _SQRT_M1 % _P
        if (v * x * x - u) % _P != 0:
            return None
    if (x & 1) != sign:
        x = (-x) % _P
    return (x, y)


def _add(p1, p2):
    (x1, y1), (x2, y2) = p1, p2
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, -1, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, _P) % _P
    return (x3, y3)


def is_small_order(point) -> bool:
    q = point
    for _ in range(3):
        q = _add(q, q)
    return q == (0, 1)


def verify_strict(author: bytes, hash_hex: str, sig: bytes) -> bool:
    a = decompress(author)
    r = decompress(sig[:32])
    if a is None or r is None or is_small_order(a) or is_small_order(r):
        return False
    if int.from_bytes(sig[32:], "little") >= L:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(author).verify(sig, SIG_DOMAIN + bytes.fromhex(hash_hex))
        return True
    except InvalidSignature:
        return False


def sign(seed: bytes, hash_hex: str) -> str:
    return Ed25519PrivateKey.from_private_bytes(seed).sign(SIG_DOMAIN + bytes.fromhex(hash_hex)).hex()


def public_key(seed: bytes) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


# --------------------------------------------------------------------------------
# Wire forms: shape checks and normalisation (what the hash is computed over).

_HEX = re.compile(r"[0-9a-f]*")
_SEGMENT = re.compile(r"[A-Za-z0-9\-_.~:+=,]+")


def malformed(detail: str):
    raise Refused("malformed", detail)


def lower_hex(value, n_bytes: int, what: str) -> str:
    if not isinstance(value, str) or len(value) != 2 * n_bytes or not _HEX.fullmatch(value):
        malformed(f"{what} must be {2 * n_bytes} lowercase hex digits, got {value!r}")
    return value


def author_key(value) -> str:
    lower_hex(value, 32, "author")
    if decompress(bytes.fromhex(value)) is None:
        malformed(f"author {value} is not an Ed25519 point")
    return value


_DEPLOYMENT = re.compile(r"[A-Za-z0-9._-]{1,64}")


def deployment(value) -> str:
    """A deployment id: 1..=64 bytes of [A-Za-z0-9._-]."""
    if not isinstance(value, str) or not _DEPLOYMENT.fullmatch(value):
        malformed(f"deployment must be 1..=64 of [A-Za-z0-9._-], got {value!r}")
    return value


def u64(value, what: str) -> int:
    if type(value) is not int or not 0 <= value <= U64_MAX:
        malformed(f"{what} must be a non-negative integer, got {value!r}")
    return value


def u53(value: int, what: str) -> int:
    if value > MAX_SAFE_INTEGER:
        raise Refused("out_of_range", f"{what} = {value}")
    return value


def topic(value, glob: bool, what: str) -> str:
    if not isinstance(value, str):
        malformed(f"{what} must be a string")
    segs = value.split("/")
    bad = not value or len(value.encode()) > MAX_TOPIC_BYTES or len(segs) > MAX_TOPIC_DEPTH
    for i, seg in enumerate(segs):
        if glob and seg in ("*", "**"):
            bad |= seg == "**" and i + 1 != len(segs)
            continue
        bad |= seg in (".", "..") or not _SEGMENT.fullmatch(seg)
    if bad:
        malformed(f"invalid {what} {value!r}")
    return value


def obj(value, what: str, allowed: set[str], required: set[str]) -> dict:
    if not isinstance(value, dict):
        malformed(f"{what} must be an object")
    unknown = set(value) - allowed
    if unknown:
        malformed(f"unknown field(s) {sorted(unknown)} in {what}")
    missing = required - set(value)
    if missing:
        malformed(f"missing field(s) {sorted(missing)} in {what}")
    return value


def hashes(value, what: str) -> list:
    if not isinstance(value, list):
        malformed(f"{what} must be an array")
    return [lower_hex(h, 32, what) for h in value]


def present(d: dict, key: str) -> bool:
    """Optional members: absent or null (null is then refused as not normal)."""
    return d.get(key) is not None


def check_parents(parents: list, what: str):
    if len(parents) > MAX_PARENTS:
        raise Refused("too_many_parents", f"{len(parents)} {what}")
    if len(set(parents)) != len(parents):
        raise Refused("duplicate_parent", f"a hash is listed twice in {what}")


def body_canon(body, what: str):
    size = len(canon_bytes(body, MAX_JSON_DEPTH))
    if size > MAX_BODY_BYTES:
        raise Refused("body_too_large", f"{what} is {size} bytes")


def normal_content(content: dict, ty: str) -> dict:
    """Checks a wire form (minus hash and sig) as the Rust code does, in its order, and
    returns the normal form whose canonical encoding is hashed."""
    kind = content.get("kind")
    kinds = ("fact", "intent", "hint") if ty == "record" else ("claim", "renew", "withdraw", "retract")
    if kind not in kinds:
        malformed(f"kind must be one of {kinds}, got {kind!r}")
    c = dict(content)
    # 1. Shape (serde): fields, types, topics, keys.
    if kind in ("fact", "intent"):
        fields = {"kind", "topic", "body", "parents", "author", "time"} | ({"resolves"} if kind == "fact" else set())
        obj(c, kind, fields, {"kind", "topic", "body", "author", "time"})
        topic(c["topic"], False, "topic")
        c["parents"] = hashes(c.get("parents", []), "parents")
        if kind == "fact" and present(c, "resolves"):
            r = obj(c["resolves"], "resolves", {"intent", "token"}, {"intent", "token"})
            lower_hex(r["intent"], 32, "resolves.intent")
            u64(r["token"], "resolves.token")
        else:
            c.pop("resolves", None)
    elif kind == "hint":
        fields = {"kind", "selector", "effect", "reason", "source", "expires", "author", "time"}
        obj(c, "hint", fields, {"kind", "selector", "effect", "reason", "author", "time"})
        sel = dict(obj(c["selector"], "selector", {"topic", "body"}, set()))
        for k in ("topic", "body"):
            if not present(sel, k):
                sel.pop(k, None)
        if "topic" in sel:
            topic(sel["topic"], True, "selector.topic")
        if "body" in sel and not isinstance(sel["body"], dict):
            malformed("selector.body must be an object")
        c["selector"] = sel
        eff = c["effect"]
        if isinstance(eff, dict):
            obj(eff, "effect", {"priority"}, {"priority"})
            p = eff["priority"]
            if type(p) is not int or not I64_MIN <= p <= I64_MAX:
                malformed(f"effect.priority must be an i64, got {p!r}")
        elif eff not in ("deny", "allow"):
            malformed(f"effect must be \"deny\", \"allow\" or {{\"priority\": n}}, got {eff!r}")
        if not isinstance(c["reason"], str):
            malformed("reason must be a string")
        if present(c, "source"):
            src = dict(obj(c["source"], "source", {"contract", "rule", "facts"}, set()))
            for k in ("contract", "rule"):
                if not present(src, k):
                    src.pop(k, None)
            if "contract" in src:
                lower_hex(src["contract"], 32, "source.contract")
            if "rule" in src and not isinstance(src["rule"], str):
                malformed("source.rule must be a string")
            src["facts"] = hashes(src.get("facts", []), "source.facts")
            c["source"] = src
        else:
            c.pop("source", None)
        if present(c, "expires"):
            u64(c["expires"], "expires")
        else:
            c.pop("expires", None)
    else:
        target = "hint" if kind == "retract" else "intent"
        required = {"kind", target, "author", "time"} | {"claim": {"lease_ms"}, "renew": {"lease_ms", "token"}, "withdraw": set(), "retract": set()}[kind]
        # Wire format v2 adds `deployment` (absent: a version 1 action of an old log).
        obj(c, kind, required | {"deployment"}, required)
        if present(c, "deployment"):
            deployment(c["deployment"])
        else:
            c.pop("deployment", None)
        lower_hex(c[target], 32, target)
        for k in ("lease_ms", "token"):
            if k in c:
                u64(c[k], k)
    author_key(c["author"])
    u64(c["time"], "time")

    # 2. Content rules, in the order the Rust encoder meets them.
    if kind in ("fact", "intent"):
        check_parents(c["parents"], "parents")
        body_canon(c["body"], "body")
        if "resolves" in c:
            u53(c["resolves"]["token"], "resolves.token")
    elif kind == "hint":
        if not 1 <= len(c["reason"].encode()) <= MAX_REASON_BYTES:
            raise Refused("reason", f"reason is {len(c['reason'].encode())} bytes")
        if isinstance(c["effect"], dict) and abs(c["effect"]["priority"]) > MAX_SAFE_INTEGER:
            raise Refused("out_of_range", f"effect.priority = {c['effect']['priority']}")
        if "expires" in c:
            u53(c["expires"], "expires")
        if "body" in c["selector"]:
            body_canon(c["selector"]["body"], "selector.body")
        size = len(canon_bytes(c["selector"], MAX_JSON_DEPTH))
        if size > MAX_SELECTOR_BYTES:
            raise Refused("selector_too_large", f"selector is {size} bytes")
        if "source" in c:
            check_parents(c["source"]["facts"], "source.facts")
    else:
        u53(c.get("lease_ms", 0), "lease_ms")
    u53(c["time"], "time")
    if kind == "renew":
        u53(c["token"], "token")
    return c


def check_wire(record, ty: str):
    """Returns (error code or None, canonical text or None, computed hash or None)."""
    if not isinstance(record, dict):
        return "malformed", None, None
    content = {k: v for k, v in record.items() if k not in ("hash", "sig")}
    try:
        canonical = canon_bytes(normal_content(content, ty)).decode()
        computed = fih_hash(canonical.encode())
        content_error = None
        # One wire form per hash: what was sent, canonicalised, must be what is hashed
        # (no null for an absent member, `parents`/`source.facts` present, no extras).
        if canon_bytes(content).decode() != canonical:
            content_error = "malformed"
    except Refused as e:
        canonical = computed = None
        content_error = e.code
    try:  # the wire's own hash and sig are read first
        stated = lower_hex(record.get("hash"), 32, "hash")
        sig = lower_hex(record.get("sig"), 64, "sig")
    except Refused as e:
        return e.code, canonical, computed
    if content_error:
        return content_error, canonical, computed
    if stated != computed:
        return "hash_mismatch", canonical, computed
    if not verify_strict(bytes.fromhex(record["author"]), stated, bytes.fromhex(sig)):
        return "bad_signature", canonical, computed
    return None, canonical, computed


# --------------------------------------------------------------------------------
# The checks.


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    args = [a for a in argv if a != "-v"]
    path = Path(args[0]) if args else Path(__file__).with_name("vectors.json")
    try:
        doc = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, Refused) as e:
        print(f"cannot read {path}: {e}", file=sys.stderr)
        return 2

    failures: list[str] = []
    count = 0

    def fail(where: str, msg: str):
        failures.append(f"{where}: {msg}")

    if doc.get("version") != 2:
        fail("header", f"unsupported version {doc.get('version')!r}")
    if doc.get("hash_context") != HASH_CONTEXT:
        fail("header", f"hash_context {doc.get('hash_context')!r} != {HASH_CONTEXT!r}")
    if doc.get("sig_domain_hex") != SIG_DOMAIN.hex():
        fail("header", f"sig_domain_hex {doc.get('sig_domain_hex')!r} != {SIG_DOMAIN.hex()!r}")
    if doc.get("max_safe_integer") != MAX_SAFE_INTEGER:
        fail("header", "max_safe_integer differs")
    expected_limits = {"max_body_bytes": MAX_BODY_BYTES, "max_parents": MAX_PARENTS, "max_json_depth": MAX_JSON_DEPTH, "max_reason_bytes": MAX_REASON_BYTES, "max_selector_bytes": MAX_SELECTOR_BYTES}
    if doc.get("limits") != expected_limits:
        fail("header", f"limits {doc.get('limits')!r} != {expected_limits!r}")

    for v in doc.get("canonical", []):
        count += 1
        where = f"canonical/{v['name']}"
        try:
            got = canon_bytes(parse_json(v["input"])).decode()
            got_error = None
        except Refused as e:
            got, got_error = None, e.code
        want, want_error = v.get("canonical"), v.get("error")
        if (want is None) == (want_error is None):
            fail(where, "needs exactly one of `canonical` and `error`")
        elif want_error is not None:
            if got_error != want_error:
                fail(where, f"expected error {want_error!r}, got " + (f"error {got_error!r}" if got_error else f"canonical {got!r}"))
        elif got_error is not None:
            fail(where, f"expected canonical {want!r}, got error {got_error!r}")
        elif got != want:
            fail(where, f"canonical mismatch:\n    expected {want!r}\n    got      {got!r}")
        elif v.get("hash") != fih_hash(got.encode()):
            fail(where, f"hash mismatch: expected {v.get('hash')}, computed {fih_hash(got.encode())}")
        if verbose:
            print(f"  {where}: {got_error or got!r}")

    for v in doc.get("records", []):
        count += 1
        where = f"records/{v['name']}"
        rec = v["record"]
        error, canonical, computed = check_wire(rec, v["type"])
        want_error = None if v["valid"] else v.get("error")
        if not v["valid"] and want_error is None:
            fail(where, "invalid vector without `error`")
        if error != want_error:
            fail(where, f"expected {'valid' if want_error is None else 'error ' + repr(want_error)}, got {'valid' if error is None else 'error ' + repr(error)}")
        if canonical != v.get("canonical"):
            fail(where, f"canonical content mismatch:\n    expected {v.get('canonical')!r}\n    got      {canonical!r}")
        elif computed != v.get("hash"):
            fail(where, f"hash mismatch: expected {v.get('hash')}, computed {computed}")
        seed = v.get("seed_hex")
        if v["valid"] and seed:
            seed_bytes = bytes.fromhex(seed)
            if public_key(seed_bytes) != rec["author"]:
                fail(where, f"seed_hex {seed} is not the key of author {rec['author']}")
            resigned = sign(seed_bytes, rec["hash"])
            if resigned != rec["sig"]:
                fail(where, f"signing the hash with seed_hex gives {resigned}, the vector has {rec['sig']}")
        if verbose:
            print(f"  {where}: {error or 'valid'}")

    if failures:
        for f in failures:
            print(f"FAIL {f}")
        print(f"checked {count} vectors: {len(failures)} FAILED")
        return 1
    print(f"checked {count} vectors: all pass")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
