from __future__ import annotations

from typing import Any

import pytest

from nexus_client import records
from nexus_client.canonical import parse_json
from nexus_client.errors import WireError
from nexus_client.keys import KeyFile

ALICE = KeyFile.from_seed_hex("01" * 32)
DEP = "0123456789abcdef0123456789abcdef"


def test_builders_produce_verifiable_wire_forms() -> None:
    before = records.now_ms()
    i = records.propose(ALICE, "chem/solubility", {"c": "NaCl"})
    assert i.time >= before and i.kind == "intent" and i.parents == []
    f = records.fact(ALICE, "chem/solubility", 1, [i.hash], resolves=(i, 1))
    assert f.resolves == (i.hash, 1) and f.links() == [i.hash, i.hash]
    h = records.hint(ALICE, records.selector("chem/**", {"c": "NaCl"}), records.priority(3), "first")
    for r in (i, f, h):
        assert records.parse_record(r.to_json()) == r
        assert records.parse_record(parse_json(r.to_json())).wire == r.wire
    c = records.claim(ALICE, DEP, i, 30_000)
    rn = records.renew(ALICE, DEP, i.hash, 1, 30_000)
    w = records.withdraw(ALICE, DEP, i)
    x = records.retract(ALICE, DEP, h)
    for a in (c, rn, w, x):
        assert records.parse_action(a.to_json()) == a and a.deployment == DEP
    assert {c.target, rn.target, w.target} == {i.hash} and x.target == h.hash
    d = records.contract_deployment(ALICE, 'contract = "x"\n')
    assert d.topic == "nexus/contract" and d.body == {"source": 'contract = "x"\n', "expected": None}


def test_explicit_times_are_deterministic() -> None:
    x = records.propose(ALICE, "t", 1, time=5)
    y = records.propose(ALICE, "t", 1, time=5)
    assert x.hash == y.hash and x.sig == y.sig
    assert x.hash != records.propose(ALICE, "t", 1, time=6).hash


P = "ab" * 32


@pytest.mark.parametrize(
    "build, code, text",
    [
        (lambda: records.propose(ALICE, "bad topic", 1), "malformed", "invalid topic"),
        (lambda: records.propose(ALICE, "a/../b", 1), "malformed", "invalid topic"),
        (lambda: records.propose(ALICE, "t", 1.5), "not_an_integer", "1.5"),
        (lambda: records.propose(ALICE, "t", 2**53), "out_of_range", ""),
        (lambda: records.propose(ALICE, "t", {"s": {1, 2}}), "malformed", "not a JSON value"),
        (lambda: records.propose(ALICE, "t", 1, [P, P]), "duplicate_parent", "twice"),
        (lambda: records.propose(ALICE, "t", 1, ["AB" * 32]), "malformed", "lowercase hex"),
        (lambda: records.propose(ALICE, "t", 1, P), "malformed", "not one string"),
        (lambda: records.propose(ALICE, "t", "x" * 70_000), "body_too_large", "bytes"),
        (lambda: records.propose(ALICE, "t", 1, time=-1), "malformed", "time"),
        (lambda: records.selector("a/**/b"), "malformed", "selector topic"),
        (lambda: records.selector(None, [1]), "malformed", "must be a JSON object"),  # type: ignore[arg-type]
        (lambda: records.hint(ALICE, {}, "deny", ""), "reason", "0 bytes"),
        (lambda: records.hint(ALICE, {}, "maybe", "r"), "malformed", "effect"),  # type: ignore[arg-type]
        (lambda: records.claim(ALICE, "bad deployment!", P, 30_000), "malformed", "deployment"),
        (lambda: records.claim(ALICE, DEP, P, True), "malformed", "lease_ms"),
        (lambda: records.renew(ALICE, DEP, P, 2**53, 1000), "out_of_range", "token"),
        (lambda: records.fact(ALICE, "t", 1, resolves=(P,)), "malformed", "pair"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_is_a_clear_error(build: Any, code: str, text: str) -> None:
    with pytest.raises(WireError) as e:
        build()
    assert e.value.code == code
    assert text in str(e.value)


def test_parse_refuses_tampering() -> None:
    i = records.propose(ALICE, "t", {"n": 1})
    w = dict(i.wire, body={"n": 2})
    with pytest.raises(WireError, match="hash_mismatch"):
        records.parse_record(w)
    other = KeyFile.from_seed_hex("02" * 32)
    with pytest.raises(WireError, match="bad_signature"):
        records.parse_record(dict(i.wire, sig=other.sign(i.hash)))
    with pytest.raises(WireError, match="malformed"):
        records.parse_record(dict(i.wire, resolves=None))
    with pytest.raises(WireError, match="malformed"):
        records.parse_action(i.wire)
    with pytest.raises(WireError, match="invalid_json"):
        records.parse_record('{"kind":"intent","kind":"fact"}')
