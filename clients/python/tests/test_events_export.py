"""The event stream, exports and offline verification, and key files shared with the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import Server
from nexus_client import Client, KeyFile, LogEntry, VerifyError, records, verify_export


def populate(c: Client, key: KeyFile, topic: str, n: int) -> list[str]:
    """n Intents, each claimed: 2n log entries; answers their hashes in log order."""
    hashes = []
    for i in range(n):
        intent = records.propose(key, f"{topic}/{i}", {"i": i})
        c.propose(intent)
        claim = records.claim(key, c.deployment(), intent, 30_000)
        c.claim(claim)
        hashes += [intent.hash, claim.hash]
    return hashes


def test_event_stream_resumes_after_a_dropped_connection(fresh_server: Server, alice: KeyFile) -> None:
    with Client(fresh_server.url) as c:
        before = populate(c, alice, "ev", 3)
        got: list[LogEntry] = []
        with c.events(give_up_after=20) as stream:
            for entry in stream:
                got.append(entry)
                if len(got) == len(before):
                    break
            assert stream.connections == 1 and stream.last_seq == len(before)
            # The server goes away mid-stream (its stream ends) and comes back.
            fresh_server.restart()
            with Client(fresh_server.url) as c2:
                after = populate(c2, alice, "ev2", 2)
            for entry in stream:
                got.append(entry)
                if len(got) == len(before) + len(after):
                    break
            assert stream.connections >= 2, "the stream reconnected"
        assert [e.seq for e in got] == list(range(1, len(got) + 1)), "every entry once, in order"
        assert [e.item.hash for e in got] == before + after
        assert got[0].record is not None and got[1].action is not None and got[1].action.kind == "claim"


def test_event_stream_live_and_topic_filter(fresh_server: Server, alice: KeyFile) -> None:
    with Client(fresh_server.url) as c:
        populate(c, alice, "other", 1)
        got: list[LogEntry] = []
        stream = c.events(topic="wanted/**", reconnect=False)
        reader = threading.Thread(target=lambda: got.extend(e for _, e in zip(range(2), stream, strict=False)))
        reader.start()
        wanted = populate(c, alice, "wanted", 1)  # committed while the stream waits
        reader.join(20)
        stream.close()
        assert not reader.is_alive()
        assert [e.item.hash for e in got] == wanted
        assert [e.seq for e in got] == [3, 4], "the filter leaves gaps in seq"
        with pytest.raises(Exception, match="topic filter"):
            c.events(topic="bad topic")


def test_export_verifies_offline_and_names_the_first_bad_line(fresh_server: Server, alice: KeyFile, tmp_path: Path) -> None:
    with Client(fresh_server.url) as c:
        hashes = populate(c, alice, "ex", 3)
        intent = records.propose(alice, "ex/done", {})
        c.propose(intent)
        lease = c.claim(records.claim(alice, c.deployment(), intent, 30_000))
        c.submit_fact(records.fact(alice, "ex/done", {"ok": True}, [intent.hash], resolves=(intent, lease.token)))
        hint = records.hint(alice, records.selector("ex/**"), records.priority(2), "up")
        c.submit_hint(hint)
        c.retract(records.retract(alice, c.deployment(), hint))
        path = tmp_path / "export.jsonl"
        with open(path, "w") as f:
            n = c.export(f)
        assert n == len(hashes) + 5 == c.health().log_head
        # Paged reading gives the same entries.
        assert [e.raw for e in c.log_entries()] == [json.loads(line) for line in path.read_text().splitlines()]
        assert [len(p.entries) for p in c.log_pages(page_size=4)] == [4, 4, 3]

    report = verify_export(path)
    assert (report.lines, report.head, report.intents, report.facts, report.resolving_facts) == (n, n, 4, 1, 1)
    assert (report.claims, report.hints, report.retractions) == (4, 1, 1)
    cli = fresh_server.cli("verify", "--json", str(path))
    assert json.loads(cli.stdout)["ok"] is True

    lines = path.read_text().splitlines()
    bad = list(lines)
    bad[4] = bad[4].replace('"i":2', '"i":3')  # the third Intent's body
    bad_path = tmp_path / "bad.jsonl"
    bad_path.write_text("\n".join(bad) + "\n")
    with pytest.raises(VerifyError) as e:
        verify_export(bad_path)
    assert e.value.line == 5 and e.value.code == "hash_mismatch" and e.value.hash == hashes[4]
    assert str(e.value).startswith(f"line 5 (seq 5, {hashes[4]}): hash mismatch")
    cli_bad = fresh_server.cli("verify", "--json", str(bad_path), check=False)
    verdict = json.loads(cli_bad.stdout)
    assert cli_bad.returncode == 1 and verdict["line"] == 5, "the CLI names the same line"
    assert verdict["problem"] == e.value.problem, "and says the same"
    py = subprocess.run([sys.executable, "-m", "nexus_client", "verify", str(bad_path)], capture_output=True, text=True, timeout=30)
    assert py.returncode == 1 and f"line 5 (seq 5, {hashes[4]})" in py.stderr


def entries(key: KeyFile) -> list[dict[str, object]]:
    i = records.propose(key, "v/a", {}, time=1)
    j = records.propose(key, "v/b", {}, [i.hash], time=2)
    a = records.claim(key, "d", i, 1000, time=3)
    return [
        {"seq": 1, "at": 10, "record": i.wire},
        {"seq": 2, "at": 11, "record": j.wire},
        {"seq": 3, "at": 12, "action": a.wire},
    ]


@pytest.mark.parametrize(
    "mutate, line, code",
    [
        (lambda e: e.__setitem__(1, {**e[1], "seq": 3}), 2, "seq_gap"),
        (lambda e: e.insert(0, e.pop(1)), 1, "seq_gap"),
        (lambda e: e[0].update(seq=2) or e[1].update(seq=1) or e.insert(0, e.pop(1)), 1, "dangling_link"),
        (lambda e: e.append({"seq": 4, "at": 13, "record": e[0]["record"]}), 4, "duplicate_record"),
        (lambda e: e.append({"seq": 4, "at": 13, "action": e[2]["action"]}), 4, "duplicate_action"),
        (lambda e: e.__setitem__(2, {**e[2], "extra": 1}), 3, "bad_entry"),
        (lambda e: e.__setitem__(2, {"seq": 3, "at": 12}), 3, "bad_entry"),
        (lambda e: e.__setitem__(0, "{not json"), 1, "malformed_json"),
        (lambda e: e[2]["action"].update(sig="00" * 64), 3, "bad_signature"),
    ],
)
def test_offline_verification_rules(mutate: object, line: int, code: str, alice: KeyFile) -> None:
    good = entries(alice)
    assert verify_export([json.dumps(x) for x in good]).head == 3
    bad = entries(alice)
    mutate(bad)  # type: ignore[operator]
    with pytest.raises(VerifyError) as e:
        verify_export([x if isinstance(x, str) else json.dumps(x) for x in bad])
    assert (e.value.line, e.value.code) == (line, code), str(e.value)


def test_actions_must_name_an_earlier_intent_and_v1_actions_verify(alice: KeyFile) -> None:
    i = records.propose(alice, "v/a", {}, time=1)
    v1 = records.sign_action(alice, {"kind": "withdraw", "intent": i.hash, "author": alice.author, "time": 2})
    assert v1.deployment is None
    ok = [{"seq": 1, "at": 1, "record": i.wire}, {"seq": 2, "at": 2, "action": v1.wire}]
    assert verify_export(ok).withdrawals == 1
    with pytest.raises(VerifyError) as e:
        verify_export([{"seq": 1, "at": 2, "action": v1.wire}])
    assert e.value.code == "unknown_intent" and i.hash in str(e.value)
    r = records.retract(alice, "d", i, time=3)
    with pytest.raises(VerifyError) as e2:
        verify_export([*ok, {"seq": 3, "at": 3, "action": r.wire}])
    assert e2.value.code == "not_a_hint"


def test_python_key_files_work_in_the_cli_and_back(server: Server, tmp_path: Path, topic: str) -> None:
    py_key = KeyFile.generate()
    py_path = py_key.save(tmp_path / "py" / "key")
    out = server.cli("--key", str(py_path), "--json", "intent", "propose", topic, "--body", '{"from":"python"}')
    sub = json.loads(out.stdout)
    with Client(server.url) as c:
        assert c.record(sub["hash"]).record.author == py_key.author

    cli_path = tmp_path / "cli" / "key"
    server.cli("keygen", "--out", str(cli_path))
    cli_key = KeyFile.load(cli_path)
    assert json.loads(cli_path.read_text())["author"] == cli_key.author
    intent = records.propose(cli_key, topic, {"from": "python, with the CLI's key"})
    with Client(server.url) as c:
        c.propose(intent)
    shown = json.loads(server.cli("--json", "show", intent.hash).stdout)
    assert intent.author in json.dumps(shown)
