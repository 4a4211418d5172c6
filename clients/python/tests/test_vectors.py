"""Every vector of spec/vectors.json through the package's own code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nexus_client import crypto
from nexus_client.canonical import MAX_SAFE_INTEGER, canonical_text, parse_json
from nexus_client.errors import WireError
from nexus_client.keys import KeyFile
from nexus_client.records import DEFAULT_LIMITS, check_wire, parse_wire

VECTORS_PATH = Path(__file__).resolve().parents[3] / "spec" / "vectors.json"
DOC: dict[str, Any] = parse_json(VECTORS_PATH.read_bytes())


def test_header_matches_the_package() -> None:
    assert DOC["version"] == 2
    assert DOC["hash_context"] == crypto.HASH_CONTEXT
    assert bytes.fromhex(DOC["sig_domain_hex"]) == crypto.SIG_DOMAIN
    assert DOC["max_safe_integer"] == MAX_SAFE_INTEGER
    limits = DEFAULT_LIMITS
    assert DOC["limits"] == {
        "max_body_bytes": limits.max_body_bytes,
        "max_parents": limits.max_parents,
        "max_json_depth": limits.max_json_depth,
        "max_reason_bytes": limits.max_reason_bytes,
        "max_selector_bytes": limits.max_selector_bytes,
    }
    assert len(DOC["canonical"]) > 10 and len(DOC["records"]) > 40


@pytest.mark.parametrize("v", DOC["canonical"], ids=[v["name"] for v in DOC["canonical"]])
def test_canonical(v: dict[str, Any]) -> None:
    if "error" in v:
        with pytest.raises(WireError) as e:
            canonical_text(parse_json(v["input"]))
        assert e.value.code == v["error"]
    else:
        got = canonical_text(parse_json(v["input"]))
        assert got == v["canonical"]
        assert crypto.fih_hash(got.encode()) == v["hash"]


@pytest.mark.parametrize("v", DOC["records"], ids=[v["name"] for v in DOC["records"]])
def test_record(v: dict[str, Any]) -> None:
    check = check_wire(v["record"], v["type"])
    assert check.canonical == v.get("canonical")
    assert check.hash == v.get("hash")
    if v["valid"]:
        assert check.error is None, check.error
        parsed = parse_wire(v["record"], v["type"])
        assert parsed.hash == v["record"]["hash"]
        assert parse_json(parsed.to_json()) == v["record"]
        if "seed_hex" in v:
            key = KeyFile.from_seed_hex(v["seed_hex"])
            assert key.author == v["record"]["author"]
            assert key.sign(v["record"]["hash"]) == v["record"]["sig"], "signing is deterministic"
    else:
        assert check.error is not None and check.error.code == v["error"]
        with pytest.raises(WireError) as e:
            parse_wire(v["record"], v["type"])
        assert e.value.code == v["error"]
