"""examples/agent.py against a real server: every Intent is claimed, worked on and
resolved by the agent's key, with the right result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import Server
from nexus_client import Client, KeyFile, records

AGENT = Path(__file__).resolve().parents[1] / "examples" / "agent.py"


def test_agent_loop(server: Server, tmp_path: Path, topic: str, alice: KeyFile) -> None:
    agent_key = KeyFile.generate()
    key_path = agent_key.save(tmp_path / "agent-key")
    jobs = {"a": [1, 2, 3], "b": [10, -4], "c": []}
    with Client(server.url) as c:
        before = records.propose(alice, f"{topic}/a", {"numbers": jobs["a"]})
        c.propose(before)  # in the backlog when the agent starts
        proc = subprocess.Popen(
            [sys.executable, str(AGENT), "--server", server.url, "--key", str(key_path), "--topic", f"{topic}/**", "--max", "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            later = [records.propose(alice, f"{topic}/{n}", {"numbers": jobs[n]}) for n in ("b", "c")]
            bad = records.propose(alice, f"{topic}/bad", {"numbers": "three"})
            for r in [*later, bad]:
                c.propose(r)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        assert out.count("resolved ") == 4, out
        results = {}
        for item in c.all_intents(topic=topic, state="resolved"):
            assert item.state.by == agent_key.author
            fact = c.record(item.state.fact or "").record
            assert fact.author == agent_key.author and fact.resolves == (item.record.hash, item.state.token)
            results[item.record.topic] = fact.body
        assert results == {
            f"{topic}/a": {"status": "ok", "sum": 6},
            f"{topic}/b": {"status": "ok", "sum": 6},
            f"{topic}/c": {"status": "ok", "sum": 0},
            f"{topic}/bad": {"status": "failed", "error": "the body has no list of integers `numbers`"},
        }


def test_agent_reports_a_missing_key(server: Server, tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(AGENT), "--server", server.url, "--key", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 1 and "no key file here" in r.stderr
