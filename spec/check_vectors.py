#!/usr/bin/env python3
"""Checks spec/vectors.json (neXus FihHash and signature vectors) with the Python client.

The canonical JSON encoding (RFC 8785 restricted to i53 integers), the FihHash (BLAKE3
derive_key), the record/action wire rules and strict Ed25519 verification are implemented
from the prose in spec/README.md, without any Rust code, by the Python client's wire
modules (clients/python/src/nexus_client: canonical, crypto, records), which this script
imports from this checkout; they need Python >= 3.11 and the PyPI packages `blake3` and
`cryptography` (see requirements.txt), not the client's HTTP dependencies.

    python3 spec/check_vectors.py [path/to/vectors.json] [-v]

Exits 0 when every vector passes, 1 on any mismatch (each one is printed), 2 when the
file cannot be read.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This checkout's client, whatever else is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python" / "src"))

from nexus_client.canonical import MAX_SAFE_INTEGER, canonical_text, parse_json  # noqa: E402
from nexus_client.crypto import HASH_CONTEXT, SIG_DOMAIN, fih_hash, public_key, sign  # noqa: E402
from nexus_client.errors import WireError  # noqa: E402
from nexus_client.records import DEFAULT_LIMITS, check_wire  # noqa: E402


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    args = [a for a in argv if a != "-v"]
    path = Path(args[0]) if args else Path(__file__).with_name("vectors.json")
    try:
        doc = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, WireError) as e:
        print(f"cannot read {path}: {e}", file=sys.stderr)
        return 2

    failures: list[str] = []
    count = 0

    def fail(where: str, msg: str) -> None:
        failures.append(f"{where}: {msg}")

    if doc.get("version") != 2:
        fail("header", f"unsupported version {doc.get('version')!r}")
    if doc.get("hash_context") != HASH_CONTEXT:
        fail("header", f"hash_context {doc.get('hash_context')!r} != {HASH_CONTEXT!r}")
    if doc.get("sig_domain_hex") != SIG_DOMAIN.hex():
        fail("header", f"sig_domain_hex {doc.get('sig_domain_hex')!r} != {SIG_DOMAIN.hex()!r}")
    if doc.get("max_safe_integer") != MAX_SAFE_INTEGER:
        fail("header", "max_safe_integer differs")
    lim = DEFAULT_LIMITS
    expected_limits = {
        "max_body_bytes": lim.max_body_bytes,
        "max_parents": lim.max_parents,
        "max_json_depth": lim.max_json_depth,
        "max_reason_bytes": lim.max_reason_bytes,
        "max_selector_bytes": lim.max_selector_bytes,
    }
    if doc.get("limits") != expected_limits:
        fail("header", f"limits {doc.get('limits')!r} != {expected_limits!r}")

    for v in doc.get("canonical", []):
        count += 1
        where = f"canonical/{v['name']}"
        try:
            got = canonical_text(parse_json(v["input"]))
            got_error = None
        except WireError as e:
            got, got_error = None, e.code
        want, want_error = v.get("canonical"), v.get("error")
        if (want is None) == (want_error is None):
            fail(where, "needs exactly one of `canonical` and `error`")
        elif want_error is not None:
            if got_error != want_error:
                fail(where, f"expected error {want_error!r}, got " + (f"error {got_error!r}" if got_error else f"canonical {got!r}"))
        elif got is None:
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
        check = check_wire(rec, v["type"])
        error = check.error.code if check.error else None
        want_error = None if v["valid"] else v.get("error")
        if not v["valid"] and want_error is None:
            fail(where, "invalid vector without `error`")
        if error != want_error:
            fail(where, f"expected {'valid' if want_error is None else 'error ' + repr(want_error)}, got {'valid' if error is None else 'error ' + repr(error)}")
        if check.canonical != v.get("canonical"):
            fail(where, f"canonical content mismatch:\n    expected {v.get('canonical')!r}\n    got      {check.canonical!r}")
        elif check.hash != v.get("hash"):
            fail(where, f"hash mismatch: expected {v.get('hash')}, computed {check.hash}")
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
