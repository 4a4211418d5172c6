"""Against the real `nexus serve`."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from conftest import Server
from nexus_client import (
    ApiError,
    Client,
    ErrorCode,
    InvalidRecordFromServer,
    KeyFile,
    Lease,
    NexusError,
    Submitted,
    UnexpectedAnswer,
    Unreachable,
    records,
)


def test_health_and_deployment(client: Client) -> None:
    h = client.health()
    assert h.ok and h.status == "ok" and h.log_head >= 0
    d = client.deployment()
    assert d == h.deployment and len(d) == 32


def test_propose_claim_resolve(client: Client, alice: KeyFile, bob: KeyFile, topic: str) -> None:
    intent = records.propose(alice, topic, {"compound": "NaCl"})
    sub = client.propose(intent)
    assert sub.hash == intent.hash and sub.kind == "intent" and not sub.duplicate and sub.seq
    again = client.propose(intent)
    assert again.duplicate and again.seq is None
    [item] = client.intents(topic=topic).intents
    assert item.record == intent and item.state.state == "available" and item.state.token == 0

    lease = client.claim(records.claim(bob, client.deployment(), intent, 30_000))
    assert lease.intent == intent.hash and lease.token == 1 and not lease.takeover
    assert lease.lease_until > records.now_ms()
    renewed = client.renew(records.renew(bob, client.deployment(), intent, lease.token, 60_000))
    assert renewed.token == 1 and renewed.lease_until > lease.lease_until
    [item] = client.intents(topic=topic, state="claimed").intents
    assert item.state.holder == bob.author and item.state.token == 1

    answer = records.fact(bob, topic, {"g_per_l": 360}, [intent.hash], resolves=(intent, lease.token))
    assert client.submit_fact(answer).hash == answer.hash
    [item] = client.intents(topic=topic, state="resolved").intents
    assert item.state.fact == answer.hash and item.state.by == bob.author
    info = client.record(answer.hash[:12])
    assert info.record == answer and info.kind == "fact" and intent.hash in info.parents
    prov = client.provenance(answer.hash)
    assert prov.root == answer.hash and [r.hash for r in prov.records] == [answer.hash, intent.hash]
    assert client.facts(topic=topic).facts == [answer]
    with pytest.raises(ApiError) as e:
        client.claim(records.claim(alice, client.deployment(), intent, 30_000))
    assert e.value.code == ErrorCode.ALREADY_RESOLVED and e.value.status == 409


def test_lost_claim_race_names_the_holder(client: Client, alice: KeyFile, bob: KeyFile, topic: str) -> None:
    intent = records.propose(alice, topic, {})
    client.propose(intent)
    won = client.claim(records.claim(alice, client.deployment(), intent, 30_000))
    with pytest.raises(ApiError) as e:
        client.claim(records.claim(bob, client.deployment(), intent, 30_000))
    err = e.value
    assert err.status == 409 and err.code == "already_claimed" and err.error_code is ErrorCode.ALREADY_CLAIMED
    assert err.holder == alice.author and err.token == won.token and err.lease_until == won.lease_until
    assert "/claim" in err.url and "already_claimed" in str(err)


def test_stale_token_after_takeover(client: Client, alice: KeyFile, bob: KeyFile, topic: str) -> None:
    intent = records.propose(alice, topic, {})
    client.propose(intent)
    first = client.claim(records.claim(alice, client.deployment(), intent, 1_000))
    time.sleep(1.2)
    second = client.claim(records.claim(bob, client.deployment(), intent, 30_000))
    assert second.takeover and second.token == first.token + 1
    late = records.fact(bob, topic, {"late": True}, [intent.hash], resolves=(intent, first.token))
    with pytest.raises(ApiError) as e:
        client.submit_fact(late)
    assert e.value.code == ErrorCode.STALE_TOKEN, e.value
    with pytest.raises(ApiError) as e2:
        client.renew(records.renew(alice, client.deployment(), intent, first.token, 30_000))
    assert e2.value.status == 409


def test_deny_hint_refuses_proposals_until_retracted(client: Client, alice: KeyFile, topic: str) -> None:
    # In open mode without operator keys every key is an operator.
    deny = records.hint(alice, records.selector(f"{topic}/**"), "deny", "paused by pytest")
    assert client.submit_hint(deny).hash == deny.hash
    assert deny.hash in {h.hash for h in client.hints()}
    with pytest.raises(ApiError) as e:
        client.propose(records.propose(alice, f"{topic}/x", {}))
    assert e.value.code == ErrorCode.INADMISSIBLE and e.value.status == 403
    assert e.value.hint == deny.hash and e.value.reason == "paused by pytest"
    assert client.retract(records.retract(alice, client.deployment(), deny)).hint == deny.hash
    assert deny.hash not in {h.hash for h in client.hints()}
    assert not client.propose(records.propose(alice, f"{topic}/x", {})).duplicate


def test_deny_hint_needs_an_operator(tmp_path: Path, alice: KeyFile, bob: KeyFile) -> None:
    s = Server(tmp_path / "ops")
    (tmp_path / "ops").mkdir()
    s.cli("agents", "--data", str(s.data), "add", "--operator", alice.author)
    s.start()
    try:
        with Client(s.url) as c:
            with pytest.raises(ApiError) as e:
                c.submit_hint(records.hint(bob, records.selector("a/**"), "deny", "not mine to say"))
            assert e.value.code == ErrorCode.HINT_NOT_PERMITTED and e.value.detail("author") == bob.author
            # An agent may post priority Hints only.
            bump = records.hint(bob, records.selector("a/**"), records.priority(5), "bump")
            assert c.submit_hint(bump).hash == bump.hash
            ok = records.hint(alice, records.selector("a/**"), "deny", "operator says no")
            assert c.submit_hint(ok).hash == ok.hash
    finally:
        s.stop()


def test_pagination(client: Client, alice: KeyFile, topic: str) -> None:
    made = [records.propose(alice, topic, {"n": n}) for n in range(7)]
    for r in made:
        client.propose(r)
    pages, cursor = [], None
    while True:
        page = client.intents(topic=topic, limit=3, cursor=cursor)
        pages.append([i.record.hash for i in page.intents])
        if page.next is None:
            break
        cursor = page.next
    assert [len(p) for p in pages] == [3, 3, 1]
    flat = [h for p in pages for h in p]
    assert sorted(flat) == sorted(r.hash for r in made)
    assert [i.record.hash for i in client.all_intents(topic=topic, limit=2)] == flat

    facts = [records.fact(alice, topic, {"n": n}, time=records.now_ms() + n) for n in range(5)]
    for f in facts:
        client.submit_fact(f)
    assert [f.hash for f in client.all_facts(topic=topic, limit=2)] == [f.hash for f in facts]
    assert len(client.facts(topic=topic, limit=2).facts) == 2
    with pytest.raises(ApiError) as e:
        client.intents(limit=0)
    assert e.value.code == ErrorCode.BAD_REQUEST


def test_actions_signed_for_another_deployment_or_v1_are_refused(client: Client, alice: KeyFile, topic: str) -> None:
    intent = records.propose(alice, topic, {})
    client.propose(intent)
    with pytest.raises(ApiError) as e:
        client.claim(records.claim(alice, "another-deployment", intent, 30_000))
    assert e.value.code == ErrorCode.WRONG_DEPLOYMENT and e.value.detail("ours") == client.deployment()
    v1 = records.sign_action(
        alice, {"kind": "claim", "intent": intent.hash, "lease_ms": 30_000, "author": alice.author, "time": records.now_ms()}
    )
    with pytest.raises(ApiError) as e2:
        client.claim(v1)
    assert e2.value.code == ErrorCode.LEGACY_ACTION
    with pytest.raises(ApiError) as e3:
        client.propose(records.propose(alice, topic, {}, time=records.now_ms() - 3_600_000))
    assert e3.value.code == ErrorCode.CLOCK_SKEW


def test_reads_name_what_is_wrong(client: Client) -> None:
    with pytest.raises(ApiError) as e:
        client.record("00" * 32)
    assert e.value.code == ErrorCode.NOT_FOUND and e.value.status == 404
    with pytest.raises(ApiError) as e2:
        client.record("abc")
    assert e2.value.status == 400


def test_contract_deploy_get_history(fresh_server: Server, alice: KeyFile) -> None:
    with Client(fresh_server.url) as c:
        assert c.contract() is None and c.contract_history() == []
        src = 'contract = "py-test"\ndescription = "no rules"\n'
        d = c.deploy_contract(records.contract_deployment(alice, src))
        assert d.version == 1 and d.name == "py-test" and d.previous is None and not d.duplicate
        now = c.contract()
        assert now is not None and now.hash == d.hash and now.source == src and now.rules == []
        [v] = c.contract_history()
        assert v.hash == d.hash and v.deployer == alice.author and v.deploy == d.deploy
        with pytest.raises(ApiError) as e:
            c.deploy_contract(records.contract_deployment(alice, 'contract = "py-test-2"\n'))
        assert e.value.code == ErrorCode.STALE_CONTRACT
        with pytest.raises(ApiError) as e2:
            c.deploy_contract(records.contract_deployment(alice, "not toml [", d.hash))
        assert e2.value.code == ErrorCode.INVALID_CONTRACT


def test_client_refuses_bad_urls_and_reports_unreachable() -> None:
    for bad in ("ftp://x", "http://", "http://h/p?q=1", "localhost:7878"):
        with pytest.raises(NexusError, match="invalid server URL"):
            Client(bad)
    with Client("http://127.0.0.1:9", timeout=2) as c, pytest.raises(Unreachable) as e:
        c.health()
    assert "127.0.0.1:9/v1/health" in str(e.value)


def test_records_from_the_server_are_verified(alice: KeyFile) -> None:
    intent = records.propose(alice, "t", {"n": 1})
    tampered = dict(intent.wire, body={"n": 2})

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"record": tampered, "kind": "intent", "parents": []})

    with Client("http://nexus.test", transport=httpx.MockTransport(handler)) as c, pytest.raises(InvalidRecordFromServer) as e:
        c.record(intent.hash)
    assert e.value.cause.code == "hash_mismatch"

    def not_api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with Client("http://nexus.test", transport=httpx.MockTransport(not_api)) as c, pytest.raises(UnexpectedAnswer) as e2:
        c.hints()
    assert e2.value.status == 502 and "bad gateway" in str(e2.value)


def test_batch_commits_all_or_nothing(client: Client, alice: KeyFile, bob: KeyFile, topic: str) -> None:
    head = client.health().log_head
    intent = records.propose(alice, topic, {"n": 1})
    claim = records.claim(bob, client.deployment(), intent, 30_000)
    sub, lease = client.batch([intent, claim])
    assert isinstance(sub, Submitted) and sub.hash == intent.hash and sub.seq == head + 1
    assert isinstance(lease, Lease) and lease.intent == intent.hash and lease.token == 1
    fact = records.fact(bob, topic, {"g": 1}, [intent.hash], resolves=(intent, 1))
    follow = records.propose(bob, f"{topic}/next", {"n": 2}, [fact.hash])
    done = client.batch([fact, follow])
    assert [d.seq for d in done if isinstance(d, Submitted)] == [head + 3, head + 4]
    [item] = client.intents(topic=topic, state="resolved").intents
    assert item.state.fact == fact.hash
    # A failing item: nothing stored, the item named.
    fresh = records.propose(alice, topic, {"n": 3})
    again = records.claim(alice, client.deployment(), intent, 30_000)
    with pytest.raises(ApiError) as e:
        client.batch([fresh, again])
    assert e.value.code == ErrorCode.ALREADY_RESOLVED and e.value.detail("item") == 1
    assert client.health().log_head == head + 4
    with pytest.raises(TypeError):
        client.batch(["not a record"])  # type: ignore[list-item]
