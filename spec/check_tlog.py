#!/usr/bin/env python3
"""An independent check of the neXus transparency log (spec/tlog.md).

Written from the prose of spec/tlog.md, RFC 6962 / RFC 9162 and C2SP signed-note /
tlog-checkpoint alone (no Rust code, not the Python client): it rebuilds each log
entry's leaf data from an export line, hashes leaves and nodes, computes MTH roots and
the RFC 6962 audit paths and consistency proofs, runs the RFC 9162 verification
algorithms on proofs it is given, and parses and verifies signed checkpoints (key id,
verifier key, Ed25519 through the PyPI package `cryptography`, see requirements.txt).

    python3 spec/check_tlog.py [VECTORS] [-v]
        checks spec/tlog_vectors.json (default), including its negative vectors, which
        must be refused.
    python3 spec/check_tlog.py --server URL [--token T] [--log-key VKEY] [-v]
        fetches the server's checkpoint and its commit log (GET /v1/log), recomputes
        the root of the checkpoint's size from the log, checks the signature against
        the server's published verifier key (`log_key`, or VKEY instead), and checks
        inclusion proofs of a sample of entries and consistency proofs from a few
        earlier sizes.

Exits 0 when everything checks, 1 on any failure (each one printed), 2 when the input
cannot be read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

EM_DASH = "\u2014"
ALG_ED25519 = 0x01
KINDS = ("intent", "fact", "hint")
HEX = "0123456789abcdef"


class CheckError(Exception):
    """A check failed; the message says which and why, `code` what kind of failure it
    is (the `error` of the vectors' invalid cases)."""

    def __init__(self, message: str, code: str = "mismatch") -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------
# Leaf data (spec/tlog.md, "Leaves").


def _json_string(s: str) -> str:
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\r":
            out.append("\\r")
        elif c < 0x20:
            out.append("\\u00" + HEX[c >> 4] + HEX[c & 15])
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def action_json(v: Any) -> str:
    """An action's wire JSON as the leaf holds it: object keys sorted by (UTF-8) byte
    order, no whitespace, integers in decimal, strings escaping only `"`, `\\` and
    control characters."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _json_string(v)
    if isinstance(v, list):
        return "[" + ",".join(action_json(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-8"))
        return "{" + ",".join(_json_string(k) + ":" + action_json(v[k]) for k in keys) + "}"
    raise CheckError(f"an action holds a {type(v).__name__} ({v!r}); the log has integers only", "bad_entry")


def _no_float(s: str) -> Any:
    raise CheckError(f"the number {s} is not an integer", "bad_entry")


def parse_line(text: str) -> dict[str, Any]:
    """One export line (`{"seq","at","record"}` or `{"seq","at","action"}`)."""
    try:
        v = json.loads(text, parse_float=_no_float, parse_constant=_no_float)
    except json.JSONDecodeError as e:
        raise CheckError(f"not JSON: {e}", "bad_entry") from None
    if not isinstance(v, dict):
        raise CheckError("an export line is a JSON object", "bad_entry")
    return v


def leaf_data(line: dict[str, Any]) -> bytes:
    """The entry's stored bytes, rebuilt from its export line."""
    at = line.get("at")
    if type(at) is not int or at < 0:
        raise CheckError(f"`at` is not a non-negative integer: {at!r}", "bad_entry")
    if ("record" in line) == ("action" in line):
        raise CheckError("an export line has exactly one of `record` and `action`", "bad_entry")
    if "record" in line:
        rec = line["record"]
        h = rec.get("hash") if isinstance(rec, dict) else None
        kind = rec.get("kind") if isinstance(rec, dict) else None
        if not (isinstance(h, str) and len(h) == 64 and all(c in HEX for c in h)):
            raise CheckError(f"the record's hash is not 64 lowercase hex digits: {h!r}", "bad_entry")
        if kind not in KINDS:
            raise CheckError(f"the record's kind is not one of {KINDS}: {kind!r}", "bad_entry")
        return f'{{"type":"record","hash":"{h}","kind":"{kind}","at":{at}}}'.encode()
    return ('{"type":"action","action":' + action_json(line["action"]) + f',"at":{at}}}').encode()


# ---------------------------------------------------------------------------------
# The Merkle tree (RFC 6962 §2.1).


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes], lo: int = 0, hi: int | None = None) -> bytes:
    """MTH of leaf hashes leaves[lo:hi]."""
    hi = len(leaves) if hi is None else hi
    n = hi - lo
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[lo]
    k = _split(n)
    return node_hash(mth(leaves, lo, lo + k), mth(leaves, lo + k, hi))


def path(m: int, leaves: list[bytes], lo: int, hi: int) -> list[bytes]:
    """RFC 6962 PATH(m, D[lo:hi]), leaf side first."""
    n = hi - lo
    if n <= 1:
        return []
    k = _split(n)
    if m < k:
        return path(m, leaves, lo, lo + k) + [mth(leaves, lo + k, hi)]
    return path(m - k, leaves, lo + k, hi) + [mth(leaves, lo, lo + k)]


def _subproof(m: int, leaves: list[bytes], lo: int, hi: int, whole: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if whole else [mth(leaves, lo, hi)]
    k = _split(n)
    if m <= k:
        return _subproof(m, leaves, lo, lo + k, whole) + [mth(leaves, lo + k, hi)]
    return _subproof(m - k, leaves, lo + k, hi, False) + [mth(leaves, lo, lo + k)]


def consistency(m: int, leaves: list[bytes], n: int) -> list[bytes]:
    """RFC 6962 PROOF(m, D[0:n]); empty for m == 0 or m == n."""
    if m == 0 or m == n:
        return []
    return _subproof(m, leaves, 0, n, True)


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        raise CheckError(f"leaf {index} is not in a tree of {size} leaves", "invalid_proof")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise CheckError("the inclusion proof is too long", "invalid_proof")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise CheckError("the inclusion proof is too short", "invalid_proof")
    if r != root:
        raise CheckError("the inclusion proof does not lead to the root", "invalid_proof")


def verify_consistency(m: int, n: int, old: bytes, new: bytes, proof: list[bytes]) -> None:
    """RFC 9162 §2.1.4.2 (and: every tree extends the empty one, with an empty proof)."""
    if m > n:
        raise CheckError(f"a tree of {m} leaves is not a prefix of one of {n}", "invalid_proof")
    if m == 0 or m == n:
        if proof:
            raise CheckError(f"a consistency proof from {m} to {n} leaves must be empty", "invalid_proof")
        expected = hashlib.sha256(b"").digest() if m == 0 else new
        if old != expected:
            raise CheckError("the old root is not the expected one", "invalid_proof")
        return
    if not proof:
        raise CheckError("the consistency proof is empty", "invalid_proof")
    if m & (m - 1) == 0:
        proof = [old, *proof]
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise CheckError("the consistency proof is too long", "invalid_proof")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise CheckError("the consistency proof is too short", "invalid_proof")
    if fr != old:
        raise CheckError("the consistency proof does not lead to the old root", "invalid_proof")
    if sr != new:
        raise CheckError("the consistency proof does not lead to the new root", "invalid_proof")


def b64_hash(s: Any, what: str) -> bytes:
    """A standard base64 hash of 32 bytes."""
    if not isinstance(s, str):
        raise CheckError(f"{what} is not a string")
    try:
        raw = base64.b64decode(s, validate=True)
    except binascii.Error:
        raise CheckError(f"{what} is not standard base64: {s!r}") from None
    if len(raw) != 32 or base64.b64encode(raw).decode() != s:
        raise CheckError(f"{what} is not the base64 of 32 bytes: {s!r}")
    return raw


def b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def proof_hashes(v: Any, what: str) -> list[bytes]:
    if not isinstance(v, list):
        raise CheckError(f"{what} is not a list")
    return [b64_hash(x, f"{what}[{i}]") for i, x in enumerate(v)]


# ---------------------------------------------------------------------------------
# Signed checkpoints (C2SP signed-note, tlog-checkpoint).


def _key_name_ok(name: str) -> bool:
    return bool(name) and not any(c.isspace() or c == "+" for c in name)


def key_id(name: str, encoded_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + encoded_key).digest()[:4]


def parse_verifier_key(vkey: str) -> tuple[str, bytes, bytes]:
    """`<name>+<8 hex key id>+<base64(0x01 || key)>` → name, key id, public key."""
    parts = vkey.split("+", 2)  # base64 may hold '+'
    if len(parts) != 3:
        raise CheckError(f"malformed verifier key {vkey!r}: expected <name>+<key id>+<base64 key>", "bad_key")
    name, hexid, kb64 = parts
    if not _key_name_ok(name):
        raise CheckError(f"verifier key {vkey!r}: bad key name {name!r}", "bad_key")
    if len(hexid) != 8 or any(c not in HEX for c in hexid):
        raise CheckError(f"verifier key {vkey!r}: the key id is not 8 lowercase hex digits", "bad_key")
    try:
        enc = base64.b64decode(kb64, validate=True)
    except binascii.Error:
        raise CheckError(f"verifier key {vkey!r}: the key is not base64", "bad_key") from None
    if len(enc) != 33 or enc[0] != ALG_ED25519:
        raise CheckError(f"verifier key {vkey!r}: not an Ed25519 key (0x01 || 32 bytes)", "bad_key")
    if key_id(name, enc) != bytes.fromhex(hexid):
        raise CheckError(f"verifier key {vkey!r}: the key id does not match the name and key", "bad_key")
    return name, bytes.fromhex(hexid), enc[1:]


def verify_checkpoint(note: str, vkey: str) -> tuple[str, int, bytes]:
    """Verifies signed checkpoint `note` against verifier key `vkey`; answers its
    origin, size and root."""
    name, kid, pub = parse_verifier_key(vkey)
    if not note.endswith("\n"):
        raise CheckError("malformed signed note: it does not end in a newline", "malformed")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise CheckError("malformed signed note: no blank line before the signatures", "malformed")
    text, sig_block = note[: cut + 1], note[cut + 2 :]
    found_key = False
    verified = False
    for line in sig_block[:-1].split("\n"):
        if not line.startswith(EM_DASH + " "):
            raise CheckError(f"malformed signature line {line!r}", "malformed")
        fields = line[2:].split(" ")
        if len(fields) != 2:
            raise CheckError(f"malformed signature line {line!r}", "malformed")
        sname, sb64 = fields
        try:
            blob = base64.b64decode(sb64, validate=True)
        except binascii.Error:
            raise CheckError(f"signature line {line!r}: not base64", "malformed") from None
        if len(blob) < 5:
            raise CheckError(f"signature line {line!r}: too short", "malformed")
        if sname != name or blob[:4] != kid:
            continue  # another key's signature: ignored, as signed-note says
        found_key = True
        try:
            Ed25519PublicKey.from_public_bytes(pub).verify(blob[4:], text.encode())
            verified = True
        except InvalidSignature:
            pass
    if not found_key:
        raise CheckError(f"the checkpoint is not signed by log key {vkey}", "not_signed")
    if not verified:
        raise CheckError(f"the checkpoint's signature by {vkey} does not verify", "bad_signature")
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise CheckError("the note is not a checkpoint: it has fewer than three lines", "bad_body")
    origin, size_s, root_s = lines[:3]
    if origin != name:
        raise CheckError(f"the checkpoint is for origin {origin!r}, the key is {name!r}", "bad_body")
    if not size_s.isdigit() or (size_s != "0" and size_s.startswith("0")) or not size_s.isascii():
        raise CheckError(f"the checkpoint's size is not a decimal number: {size_s!r}", "bad_body")
    return origin, int(size_s), b64_hash(root_s, "the checkpoint's root")


# ---------------------------------------------------------------------------------
# Mode 1: the vectors.


class Tally:
    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.count = 0
        self.failures: list[str] = []

    def check(self, where: str, run: Callable[[], None]) -> None:
        self.count += 1
        try:
            run()
        except CheckError as e:
            self.failures.append(f"{where}: {e}")
            return
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            self.failures.append(f"{where}: malformed vector ({type(e).__name__}: {e})")
            return
        if self.verbose:
            print(f"ok   {where}")

    def refused(self, where: str, error: str, run: Callable[[], None]) -> None:
        """A negative vector: `run` must raise CheckError of code `error`."""
        self.count += 1
        try:
            run()
        except CheckError as e:
            if e.code != error:
                self.failures.append(f"{where}: refused as {e.code} ({e}), the vector says {error}")
            elif self.verbose:
                print(f"ok   {where} (refused: {e})")
            return
        self.failures.append(f"{where}: accepted, but must be refused ({error})")

    def report(self, what: str) -> int:
        for f in self.failures:
            print(f"FAIL {f}")
        if self.failures:
            print(f"{what}: {len(self.failures)} of {self.count} checks failed")
            return 1
        print(f"{what}: {self.count} checks, all pass")
        return 0


def _equal(what: str, got: Any, want: Any) -> None:
    if got != want:
        raise CheckError(f"{what}: computed {got!r}, the vector says {want!r}")


def check_vectors(doc: dict[str, Any], t: Tally) -> None:
    if doc.get("version") != 1:
        t.failures.append(f"header: unsupported version {doc.get('version')!r}")
        return
    leaves: list[bytes] = []
    for i, e in enumerate(doc["entries"]):

        def entry(e: dict[str, Any] = e, i: int = i) -> None:
            line = parse_line(e["line"])
            _equal("seq", line.get("seq"), i + 1)
            data = leaf_data(line)
            _equal("leaf data", data.decode(), e["leaf_data"])
            _equal("leaf hash", b64(leaf_hash(data)), e["leaf_hash"])

        t.check(f"entry {i + 1} ({e.get('name')})", entry)
        leaves.append(leaf_hash(e["leaf_data"].encode()))
    for r in doc["roots"]:
        t.check(f"root of size {r['size']}", lambda r=r: _equal("root", b64(mth(leaves[: r["size"]])), r["root"]))
    for p in doc["inclusion"]:

        def incl(p: dict[str, Any] = p) -> None:
            seq, size = p["seq"], p["size"]
            proof = proof_hashes(p["proof"], "proof")
            _equal("leaf hash", b64(leaves[seq - 1]), p["leaf_hash"])
            _equal("root", b64(mth(leaves[:size])), p["root"])
            _equal("proof", [b64(h) for h in path(seq - 1, leaves, 0, size)], p["proof"])
            verify_inclusion(seq - 1, size, b64_hash(p["leaf_hash"], "leaf_hash"), proof, b64_hash(p["root"], "root"))

        t.check(f"inclusion of seq {p['seq']} in size {p['size']}", incl)
    for p in doc["consistency"]:

        def cons(p: dict[str, Any] = p) -> None:
            m, n = p["from"], p["to"]
            _equal("from_root", b64(mth(leaves[:m])), p["from_root"])
            _equal("to_root", b64(mth(leaves[:n])), p["to_root"])
            _equal("proof", [b64(h) for h in consistency(m, leaves, n)], p["proof"])
            verify_consistency(m, n, b64_hash(p["from_root"], "from_root"), b64_hash(p["to_root"], "to_root"), proof_hashes(p["proof"], "proof"))

        t.check(f"consistency from {p['from']} to {p['to']}", cons)
    for c in doc["checkpoints"]:

        def cp(c: dict[str, Any] = c) -> None:
            origin, size, root = verify_checkpoint(c["note"], c["log_key"])
            _equal("origin", origin, c["origin"])
            _equal("size", size, c["size"])
            _equal("root", b64(root), b64(mth(leaves[:size])))
            if "seed_hex" in c:
                sk = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(c["seed_hex"]))
                pub = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                enc = bytes([ALG_ED25519]) + pub
                vkey = f"{origin}+{key_id(origin, enc).hex()}+{b64(enc)}"
                _equal("verifier key of the seed", vkey, c["log_key"])
                body = f"{origin}\n{size}\n{b64(root)}\n"
                blob = key_id(origin, enc) + sk.sign(body.encode())
                _equal("note signed with the seed", f"{body}\n{EM_DASH} {origin} {b64(blob)}\n", c["note"])

        t.check(f"checkpoint {c['name']}", cp)
    for neg in doc["invalid"]:
        where = f"invalid {neg['name']}"
        kind = neg["check"]
        if kind == "checkpoint":
            t.refused(where, neg["error"], lambda n=neg: _checkpoint_matches(n, leaves))
        elif kind == "inclusion":
            t.refused(
                where,
                neg["error"],
                lambda n=neg: verify_inclusion(
                    n["seq"] - 1, n["size"], b64_hash(n["leaf_hash"], "leaf_hash"), proof_hashes(n["proof"], "proof"), b64_hash(n["root"], "root")
                ),
            )
        elif kind == "consistency":
            t.refused(
                where,
                neg["error"],
                lambda n=neg: verify_consistency(
                    n["from"], n["to"], b64_hash(n["from_root"], "from_root"), b64_hash(n["to_root"], "to_root"), proof_hashes(n["proof"], "proof")
                ),
            )
        elif kind == "leaf":
            t.refused(where, neg["error"], lambda n=neg: leaf_data(parse_line(n["line"])))
        else:
            t.failures.append(f"{where}: unknown check {kind!r}")


def _checkpoint_matches(c: dict[str, Any], leaves: list[bytes]) -> None:
    origin, size, root = verify_checkpoint(c["note"], c["log_key"])
    if size > len(leaves) or root != mth(leaves[:size]):
        raise CheckError(f"the checkpoint's root is not the root of the first {size} entries", "root_mismatch")


# ---------------------------------------------------------------------------------
# Mode 2: a live server.


class Server:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def get(self, path: str, **params: Any) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        req = urllib.request.Request(url, headers={"accept": "application/json"})
        if self.token:
            req.add_header("authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            raise CheckError(f"GET {url}: {e.code} {e.read()[:300].decode(errors='replace')}", "root_mismatch") from None
        except (urllib.error.URLError, OSError) as e:
            raise CheckError(f"GET {url}: {e}", "root_mismatch") from None
        try:
            return json.loads(body)
        except json.JSONDecodeError as e:
            raise CheckError(f"GET {url}: the answer is not JSON: {e}", "root_mismatch") from None


def _sample(size: int) -> list[int]:
    picks = {1, size, (size + 1) // 2, max(1, size // 3), max(1, size - 1)}
    return sorted(s for s in picks if 1 <= s <= size)


def check_server(url: str, token: str | None, log_key: str | None, t: Tally) -> None:
    srv = Server(url, token)
    cp = srv.get("/v1/checkpoint")
    if not isinstance(cp, dict):
        raise CheckError("GET /v1/checkpoint: the answer is not an object")
    vkey = log_key or cp.get("log_key")
    if not isinstance(vkey, str):
        raise CheckError("GET /v1/checkpoint: no `log_key`")
    note = cp.get("checkpoint")
    if not isinstance(note, str):
        raise CheckError("GET /v1/checkpoint: no `checkpoint` note")
    origin, size, root = verify_checkpoint(note, vkey)
    t.count += 1
    print(f"checkpoint: {origin}, {size} entries, root {b64(root)}, signed by {vkey}")
    for field, want in (("origin", origin), ("size", size), ("root", b64(root))):
        t.check(f"checkpoint field `{field}`", lambda f=field, w=want: _equal(f"`{f}` beside the note", cp.get(f), w))

    # The log, page by page, up to the checkpoint's size.
    leaves: list[bytes] = []
    while len(leaves) < size:
        page = srv.get("/v1/log", **{"from": len(leaves) + 1, "limit": 1000})
        entries = page.get("entries") if isinstance(page, dict) else None
        if not isinstance(entries, list) or not entries:
            raise CheckError(f"GET /v1/log?from={len(leaves) + 1}: no entries, but the checkpoint has {size}")
        for e in entries:
            if len(leaves) == size:
                break
            seq = len(leaves) + 1
            if not isinstance(e, dict) or e.get("seq") != seq:
                raise CheckError(f"GET /v1/log: expected entry {seq}, got {str(e)[:120]}")
            try:
                leaves.append(leaf_hash(leaf_data(e)))
            except CheckError as err:
                raise CheckError(f"log entry {seq}: {err}") from None
    print(f"log: read {size} entries")
    t.check(f"root of the first {size} entries", lambda: _equal("root of the log", b64(mth(leaves)), b64(root)))

    for seq in _sample(size):

        def incl(seq: int = seq) -> None:
            p = srv.get("/v1/proof/inclusion", seq=seq, size=size)
            _equal("leaf_hash", p.get("leaf_hash"), b64(leaves[seq - 1]))
            _equal("root", p.get("root"), b64(root))
            proof = proof_hashes(p.get("proof"), "proof")
            verify_inclusion(seq - 1, size, leaves[seq - 1], proof, root)
            _equal("proof", p.get("proof"), [b64(h) for h in path(seq - 1, leaves, 0, size)])

        t.check(f"inclusion of entry {seq} in the tree of {size}", incl)
    for m in sorted({0, 1, size // 2, size - 1, size} & set(range(size + 1))):

        def cons(m: int = m) -> None:
            p = srv.get("/v1/proof/consistency", **{"from": m, "to": size})
            old = mth(leaves[:m])
            _equal("from_root", p.get("from_root"), b64(old))
            _equal("to_root", p.get("to_root"), b64(root))
            verify_consistency(m, size, old, root, proof_hashes(p.get("proof"), "proof"))
            _equal("proof", p.get("proof"), [b64(h) for h in consistency(m, leaves, size)])

        t.check(f"consistency from {m} to {size}", cons)


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    args = [a for a in argv if a != "-v"]
    opts: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in ("--server", "--token", "--log-key"):
            if i + 1 >= len(args):
                print(f"{args[i]} needs a value", file=sys.stderr)
                return 2
            opts[args[i]] = args[i + 1]
            i += 2
        elif args[i].startswith("--"):
            print(f"unknown option {args[i]}\n{__doc__}", file=sys.stderr)
            return 2
        else:
            rest.append(args[i])
            i += 1
    t = Tally(verbose)
    if "--server" in opts:
        try:
            check_server(opts["--server"], opts.get("--token"), opts.get("--log-key"), t)
        except CheckError as e:
            t.count += 1
            t.failures.append(str(e))
        return t.report(f"server {opts['--server']}")
    path_ = Path(rest[0]) if rest else Path(__file__).with_name("tlog_vectors.json")
    try:
        doc = json.loads(path_.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        print(f"cannot read {path_}: {e}", file=sys.stderr)
        return 2
    check_vectors(doc, t)
    return t.report(str(path_))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
