"""spec/check_tlog.py, the independent transparency-log checker: against the vectors
(also tampered copies, which it must refuse) and against a live `nexus serve`."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, Server
from nexus_client import Client, KeyFile, records

CHECKER = REPO / "spec" / "check_tlog.py"
VECTORS = REPO / "spec" / "tlog_vectors.json"


def run_checker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECKER), *args], capture_output=True, text=True, timeout=120)


def flip_b64(s: str) -> str:
    """The base64 string with its first character changed (one byte differs)."""
    return ("B" if s[0] == "A" else "A") + s[1:]


def test_the_vectors_pass() -> None:
    r = run_checker(str(VECTORS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all pass" in r.stdout


def _tamper(doc: dict[str, Any], what: str) -> None:
    if what == "leaf_hash":
        doc["entries"][3]["leaf_hash"] = flip_b64(doc["entries"][3]["leaf_hash"])
    elif what == "leaf_data":
        doc["entries"][7]["leaf_data"] = doc["entries"][7]["leaf_data"].replace('"z":1', '"z":2')
    elif what == "export_line":
        doc["entries"][1]["line"] = doc["entries"][1]["line"].replace('"at":', '"at":1', 1)
    elif what == "root":
        doc["roots"][5]["root"] = flip_b64(doc["roots"][5]["root"])
    elif what == "inclusion_proof":
        p = next(p for p in doc["inclusion"] if p["size"] == 13 and p["seq"] == 9)
        p["proof"][1] = flip_b64(p["proof"][1])
    elif what == "consistency_proof":
        p = next(p for p in doc["consistency"] if p["from"] == 3 and p["to"] == 13)
        p["proof"][0] = flip_b64(p["proof"][0])
    elif what == "checkpoint_note":
        c = doc["checkpoints"][2]
        c["note"] = c["note"].replace("\n8\n", "\n9\n", 1)
    elif what == "negative_made_valid":
        # A refused vector replaced by a valid checkpoint: "accepted, but must be refused".
        neg = doc["invalid"][0]
        neg["note"] = next(c["note"] for c in doc["checkpoints"] if c["log_key"] == neg["log_key"] and c["size"] == 13)
    else:
        raise AssertionError(what)


@pytest.mark.parametrize(
    "what",
    ["leaf_hash", "leaf_data", "export_line", "root", "inclusion_proof", "consistency_proof", "checkpoint_note", "negative_made_valid"],
)
def test_a_tampered_vector_file_fails(tmp_path: Path, what: str) -> None:
    doc = json.loads(VECTORS.read_text(encoding="utf-8"))
    bad = copy.deepcopy(doc)
    _tamper(bad, what)
    assert bad != doc
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    r = run_checker(str(path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout
    if what == "negative_made_valid":
        assert "accepted, but must be refused" in r.stdout


def _populate(c: Client, alice: KeyFile, bob: KeyFile, gov: KeyFile) -> None:
    """Records and actions of every kind, with strings that need escapes."""
    dep = c.deployment()
    for i in range(6):
        intent = records.propose(alice, f"tlog/check/{i}", {"i": i, "note": 'quote " backslash \\ tab \t nul \u0000 é 😀'})
        c.propose(intent)
        if i % 2 == 0:
            lease = c.claim(records.claim(bob, dep, intent, 60_000))
            if i == 0:
                c.renew(records.renew(bob, dep, intent, lease.token, 90_000))
                c.submit_fact(records.fact(bob, "tlog/check/0/done", {"ok": True}, [intent], resolves=(intent, lease.token)))
        elif i == 3:
            c.withdraw(records.withdraw(alice, dep, intent))
    hint = records.hint(gov, records.selector("tlog/**"), records.priority(2), "reason with\nnewline and \u0001")
    c.submit_hint(hint)
    c.retract(records.retract(gov, dep, hint))


def test_a_live_server_checks(fresh_server: Server, alice: KeyFile, bob: KeyFile) -> None:
    gov = KeyFile.generate()
    with Client(fresh_server.url) as c:
        _populate(c, alice, bob, gov)
        kinds = {e.action.kind if e.action else e.record.kind for e in c.log_entries() if e.action or e.record}
        head = c.health().log_head
    assert {"intent", "fact", "hint", "claim", "renew", "withdraw", "retract"} <= kinds, kinds
    r = run_checker("--server", fresh_server.url, "-v")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{head} entries" in r.stdout and "all pass" in r.stdout
    assert f"inclusion of entry {head} in the tree of {head}" in r.stdout


def test_a_live_server_checked_against_another_key_fails(fresh_server: Server, alice: KeyFile, bob: KeyFile) -> None:
    with Client(fresh_server.url) as c:
        _populate(c, alice, bob, KeyFile.generate())
        cp = c.get_json("/v1/checkpoint")
    # Another key of the same name (the vectors' seed 22..22 is not this server's key).
    doc = json.loads(VECTORS.read_text(encoding="utf-8"))
    other = next(n for n in doc["invalid"] if n["name"] == "checkpoint_checked_against_other_key")["log_key"]
    name = cp["origin"]
    other_for_name = _vkey_named(other, name)
    r = run_checker("--server", fresh_server.url, "--log-key", other_for_name)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "is not signed by log key" in r.stdout
    r = run_checker("--server", fresh_server.url, "--log-key", cp["log_key"][:-4] + "AAA=")
    assert r.returncode == 1, r.stdout + r.stderr


def test_a_server_whose_reads_need_a_token(tmp_path: Path, alice: KeyFile, bob: KeyFile) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret-read-token\n")
    srv = Server(tmp_path / "data", "--read-token-file", str(tokens)).start()
    try:
        with Client(srv.url, token="s3cret-read-token") as c:
            _populate(c, alice, bob, KeyFile.generate())
        r = run_checker("--server", srv.url)
        assert r.returncode == 1 and "401" in r.stdout, r.stdout + r.stderr
        r = run_checker("--server", srv.url, "--token", "s3cret-read-token")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        srv.stop()


def _vkey_named(vkey: str, name: str) -> str:
    """The verifier key of the same public key under another name (key id recomputed)."""
    import base64
    import hashlib

    enc = base64.b64decode(vkey.split("+", 2)[2])
    kid = hashlib.sha256(name.encode() + b"\n" + enc).digest()[:4].hex()
    return f"{name}+{kid}+{base64.b64encode(enc).decode()}"


def test_the_benchmarks_proof_lengths_are_the_checkers() -> None:
    """bench/tlog_proofs.py counts proof hashes without hashing; BENCHMARKS.md §13's
    sizes rest on its counts being the lengths of the checker's PATH and PROOF."""
    import hashlib
    import importlib.util

    def load(name: str, path: Path) -> Any:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    check = load("check_tlog", CHECKER)
    bench = load("tlog_proofs", REPO / "bench" / "tlog_proofs.py")
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(64)]
    for n in range(1, 65):
        for m in range(n):
            assert len(check.path(m, leaves, 0, n)) == bench.path_len(m, n), (m, n)
        for m in range(1, n):
            assert len(check.consistency(m, leaves, n)) == bench.subproof_len(m, n, True), (m, n)
