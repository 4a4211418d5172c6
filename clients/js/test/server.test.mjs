// Against the real `nexus serve`.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, before, test } from "node:test";
import {
  ApiError, Client, InvalidRecordFromServer, Key, NexusError, UnexpectedAnswer, Unreachable,
  claim, contractDeployment, fact, hint, nowMs, priority, propose, renew, retract, selector, signAction, withdraw,
} from "../dist/index.js";
import { Server, freshTopic } from "./helpers.mjs";

let server;
let client;
before(async () => {
  server = await Server.start("shared");
  client = new Client(server.url);
});
after(async () => server?.close());

async function rejects(promise, check) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof ApiError, `expected an ApiError, got ${e}`);
    check(e);
    return true;
  });
}

test("health and deployment", async () => {
  const h = await client.health();
  assert.ok(h.ok && h.status === "ok" && h.log_head >= 0);
  const d = await client.deployment();
  assert.equal(d, h.deployment);
  assert.equal(d.length, 32);
});

test("propose → claim → renew → resolve, then reads", async () => {
  const [alice, bob, topic] = [Key.generate(), Key.generate(), freshTopic()];
  const intent = propose(alice, topic, { compound: "NaCl" });
  const sub = await client.propose(intent);
  assert.deepEqual([sub.hash, sub.kind, sub.duplicate], [intent.hash, "intent", false]);
  assert.ok(sub.seq > 0);
  const again = await client.propose(intent);
  assert.ok(again.duplicate && again.seq === null);
  const [item] = (await client.intents({ topic })).intents;
  assert.equal(item.record.hash, intent.hash);
  assert.deepEqual([item.state.state, item.state.token], ["available", 0]);

  const dep = await client.deployment();
  const lease = await client.claim(claim(bob, dep, intent, 30_000));
  assert.deepEqual([lease.intent, lease.token, lease.takeover], [intent.hash, 1, false]);
  assert.ok(lease.lease_until > nowMs());
  const renewed = await client.renew(renew(bob, dep, intent, lease.token, 60_000));
  assert.ok(renewed.token === 1 && renewed.lease_until > lease.lease_until);
  const [claimed] = (await client.intents({ topic, state: "claimed" })).intents;
  assert.deepEqual([claimed.state.holder, claimed.state.token], [bob.author, 1]);

  const answer = fact(bob, topic, { g_per_l: 360 }, [intent], { resolves: { intent, token: lease.token } });
  assert.equal((await client.submitFact(answer)).hash, answer.hash);
  const [resolved] = (await client.intents({ topic, state: "resolved" })).intents;
  assert.deepEqual([resolved.state.fact, resolved.state.by], [answer.hash, bob.author]);
  const info = await client.record(answer.hash.slice(0, 12));
  assert.equal(info.record.hash, answer.hash);
  assert.equal(info.kind, "fact");
  assert.ok(info.parents.includes(intent.hash));
  const prov = await client.provenance(answer.hash);
  assert.equal(prov.root, answer.hash);
  assert.deepEqual(prov.records.map((r) => r.hash), [answer.hash, intent.hash]);
  assert.deepEqual((await client.facts({ topic })).facts.map((f) => f.hash), [answer.hash]);
  await rejects(client.claim(claim(alice, dep, intent, 30_000)), (e) => {
    assert.equal(e.code, "already_resolved");
    assert.equal(e.status, 409);
  });
});

test("a lost claim race gives already_claimed naming the holder", async () => {
  const [alice, bob, topic] = [Key.generate(), Key.generate(), freshTopic()];
  const intent = propose(alice, topic, {});
  await client.propose(intent);
  const dep = await client.deployment();
  // Both race at once: exactly one wins, the other is told who holds it.
  const results = await Promise.allSettled([alice, bob].map((k) => client.claim(claim(k, dep, intent, 30_000))));
  const won = results.filter((r) => r.status === "fulfilled");
  const lost = results.filter((r) => r.status === "rejected");
  assert.equal(won.length, 1);
  assert.equal(lost.length, 1);
  const winner = results[0].status === "fulfilled" ? alice : bob;
  const err = lost[0].reason;
  assert.ok(err instanceof ApiError, String(err));
  assert.deepEqual([err.status, err.code, err.known], [409, "already_claimed", true]);
  assert.equal(err.holder, winner.author);
  assert.equal(err.token, won[0].value.token);
  assert.equal(err.leaseUntil, won[0].value.lease_until);
  assert.match(err.url, /\/claim$/);
  assert.match(err.message, /already_claimed/);
});

test("a deny Hint makes a proposal inadmissible naming the Hint, until it is retracted", async () => {
  const [alice, topic] = [Key.generate(), freshTopic()];
  // In open mode without operator keys every key is an operator.
  const deny = hint(alice, selector(`${topic}/**`), "deny", "paused by node --test");
  assert.equal((await client.submitHint(deny)).hash, deny.hash);
  assert.ok((await client.hints()).some((h) => h.hash === deny.hash));
  await rejects(client.propose(propose(alice, `${topic}/x`, {})), (e) => {
    assert.deepEqual([e.code, e.status], ["inadmissible", 403]);
    assert.equal(e.hint, deny.hash);
    assert.equal(e.reason, "paused by node --test");
  });
  const dep = await client.deployment();
  assert.equal((await client.retract(retract(alice, dep, deny))).hint, deny.hash);
  assert.ok(!(await client.hints()).some((h) => h.hash === deny.hash));
  assert.equal((await client.propose(propose(alice, `${topic}/x`, {}))).duplicate, false);
});

test("pagination with cursors", async () => {
  const [alice, topic] = [Key.generate(), freshTopic()];
  const made = Array.from({ length: 7 }, (_, n) => propose(alice, topic, { n }));
  for (const r of made) await client.propose(r);
  const pages = [];
  let cursor;
  for (;;) {
    const page = await client.intents({ topic, limit: 3, cursor });
    pages.push(page.intents.map((i) => i.record.hash));
    if (page.next === null) break;
    cursor = page.next;
  }
  assert.deepEqual(pages.map((p) => p.length), [3, 3, 1]);
  const flat = pages.flat();
  assert.deepEqual([...flat].sort(), made.map((r) => r.hash).sort());
  const all = [];
  for await (const i of client.allIntents({ topic, limit: 2 })) all.push(i.record.hash);
  assert.deepEqual(all, flat);

  const t0 = nowMs();
  const facts = Array.from({ length: 5 }, (_, n) => fact(alice, topic, { n }, [], { time: t0 + n }));
  for (const f of facts) await client.submitFact(f);
  const got = [];
  for await (const f of client.allFacts({ topic, limit: 2 })) got.push(f.hash);
  assert.deepEqual(got, facts.map((f) => f.hash));
  await rejects(client.intents({ limit: 0 }), (e) => assert.equal(e.code, "bad_request"));
});

test("actions for another deployment, v1 actions and skewed clocks are refused", async () => {
  const [alice, topic] = [Key.generate(), freshTopic()];
  const intent = propose(alice, topic, {});
  await client.propose(intent);
  const dep = await client.deployment();
  await rejects(client.claim(claim(alice, "another-deployment", intent, 30_000)), (e) => {
    assert.equal(e.code, "wrong_deployment");
    assert.equal(e.details.signed, "another-deployment");
    assert.equal(e.details.ours, dep);
  });
  const v1 = signAction(alice, { kind: "claim", intent: intent.hash, lease_ms: 30_000, author: alice.author, time: nowMs() });
  await rejects(client.claim(v1), (e) => assert.equal(e.code, "legacy_action"));
  await rejects(client.propose(propose(alice, topic, {}, [], { time: nowMs() - 3_600_000 })), (e) => assert.equal(e.code, "clock_skew"));
});

test("reads name what is wrong", async () => {
  await rejects(client.record("00".repeat(32)), (e) => assert.deepEqual([e.code, e.status], ["not_found", 404]));
  await rejects(client.record("abc"), (e) => assert.equal(e.status, 400));
});

test("contract deploy, get and history", async () => {
  const s = await Server.start("contract");
  try {
    const c = new Client(s.url);
    const alice = Key.generate();
    assert.equal(await c.contract(), null);
    assert.deepEqual(await c.contractHistory(), []);
    const src = 'contract = "js-test"\ndescription = "no rules"\n';
    const d = await c.deployContract(contractDeployment(alice, src));
    assert.deepEqual([d.version, d.name, d.previous, d.duplicate], [1, "js-test", null, false]);
    const now = await c.contract();
    assert.deepEqual([now.hash, now.source, now.rules], [d.hash, src, []]);
    const [v] = await c.contractHistory();
    assert.deepEqual([v.hash, v.deployer, v.deploy], [d.hash, alice.author, d.deploy]);
    await rejects(c.deployContract(contractDeployment(alice, 'contract = "js-test-2"\n')), (e) => assert.equal(e.code, "stale_contract"));
    await rejects(c.deployContract(contractDeployment(alice, "not toml [", d.hash)), (e) => assert.equal(e.code, "invalid_contract"));
  } finally {
    await s.close();
  }
});

test("bad URLs are refused and an unreachable server is reported", async () => {
  for (const bad of ["ftp://x", "http://", "http://h/p?q=1", "localhost:7878", "http://h/ p"]) {
    assert.throws(() => new Client(bad), (e) => e instanceof NexusError && /invalid server URL/.test(e.message), bad);
  }
  assert.throws(() => new Client("http://h", { timeoutMs: 0 }), /timeoutMs/);
  assert.throws(() => new Client("http://h", { token: " " }), /token is empty/);
  // A port nothing listens on: one the system just handed out and took back.
  const probe = createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  const c = new Client(`http://127.0.0.1:${port}`, { timeoutMs: 2000 });
  await assert.rejects(c.health(), (e) => e instanceof Unreachable && e.message.includes(`127.0.0.1:${port}/v1/health`));
});

test("records from the server are verified; non-API answers are named", async () => {
  const alice = Key.generate();
  const intent = propose(alice, "t", { n: 1 });
  const tampered = { ...intent.wire, body: { n: 2 } };
  const fake = (status, body, type = "application/json") => async () => new Response(body, { status, headers: { "content-type": type } });
  const c = new Client("http://nexus.test", { fetch: fake(200, JSON.stringify({ record: tampered, kind: "intent", parents: [] })) });
  await assert.rejects(c.record(intent.hash), (e) => e instanceof InvalidRecordFromServer && e.cause.code === "hash_mismatch");
  const c2 = new Client("http://nexus.test", { fetch: fake(502, "<html>bad gateway</html>", "text/html") });
  await assert.rejects(c2.hints(), (e) => e instanceof UnexpectedAnswer && e.status === 502 && /bad gateway/.test(e.message));
  const c3 = new Client("http://nexus.test", { fetch: fake(200, JSON.stringify({ hash: intent.hash, kind: "intent" })) });
  await assert.rejects(c3.propose(intent), (e) => e instanceof UnexpectedAnswer && /`duplicate`/.test(e.message));
  // Hash verified, but listed as another Hint than it is.
  const h = hint(alice, selector("a/**"), priority(1), "r");
  const c4 = new Client("http://nexus.test", { fetch: fake(200, JSON.stringify({ hints: [{ hash: "00".repeat(32), hint: h.wire }] })) });
  await assert.rejects(c4.hints(), (e) => e instanceof UnexpectedAnswer && /is not the Hint record it lists/.test(e.message));
  await assert.rejects(async () => client.claim(intent), TypeError);
});

test("withdraw: only the proposer, then claims are refused; act() routes by kind", async () => {
  const [alice, bob, topic] = [Key.generate(), Key.generate(), freshTopic()];
  const intent = propose(alice, topic, {});
  await client.propose(intent);
  const dep = await client.deployment();
  await rejects(client.act(withdraw(bob, dep, intent)), (e) => assert.deepEqual([e.code, e.status], ["not_proposer", 403]));
  assert.deepEqual(await client.act(withdraw(alice, dep, intent)), { intent: intent.hash, state: "withdrawn" });
  await rejects(client.act(claim(bob, dep, intent, 30_000)), (e) => assert.equal(e.code, "withdrawn"));
  await rejects(client.act(withdraw(alice, dep, intent)), (e) => assert.equal(e.status, 409));
  await assert.rejects(client.renew(claim(bob, dep, intent, 1000)), /a claim action cannot be sent to \/renew/);
});

test("a batch commits all or nothing", async () => {
  const [alice, bob, topic] = [Key.generate(), Key.generate(), freshTopic()];
  const dep = await client.deployment();
  const head = (await client.health()).log_head;
  const intent = propose(alice, topic, { n: 1 });
  const [sub, lease] = await client.batch([intent, claim(bob, dep, intent, 30_000)]);
  assert.deepEqual([sub.record.hash, sub.record.seq], [intent.hash, head + 1]);
  assert.deepEqual([lease.lease.intent, lease.lease.token], [intent.hash, 1]);
  const answer = fact(bob, topic, { g: 1 }, [intent], { resolves: { intent, token: 1 } });
  const next = propose(bob, `${topic}/next`, { n: 2 }, [answer]);
  const done = await client.batch([answer, next]);
  assert.deepEqual(done.map((d) => d.record.seq), [head + 3, head + 4]);
  const [resolved] = (await client.intents({ topic, state: "resolved" })).intents;
  assert.equal(resolved.state.fact, answer.hash);
  await rejects(client.batch([propose(alice, topic, { n: 3 }), claim(alice, dep, intent, 30_000)]), (e) => {
    assert.deepEqual([e.code, e.status, e.details.item], ["already_resolved", 409, 1]);
  });
  assert.equal((await client.health()).log_head, head + 4);
  await assert.rejects(client.batch(["not a record"]), TypeError);
});
