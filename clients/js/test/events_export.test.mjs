// The event stream, exports and offline verification, and key files shared with the CLI.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import {
  Client, Key, NexusError, VerifyError, claim, fact, hint, priority, propose, retract, selector, signAction,
  verifyExport, verifyExportAsync,
} from "../dist/index.js";
import { loadKey, saveKey, verifyExportFile } from "../dist/node.js";
import { Server, freshTopic, tempDir } from "./helpers.mjs";

const CLI = new URL("../dist/cli.js", import.meta.url).pathname;

/** n Intents, each claimed: 2n log entries; answers their hashes in log order. */
async function populate(c, key, topic, n) {
  const hashes = [];
  const dep = await c.deployment();
  for (let i = 0; i < n; i++) {
    const intent = propose(key, `${topic}/${i}`, { i });
    await c.propose(intent);
    const a = claim(key, dep, intent, 30_000);
    await c.claim(a);
    hashes.push(intent.hash, a.hash);
  }
  return hashes;
}

async function take(stream, n) {
  const out = [];
  for (;;) {
    if (out.length === n) return out;
    const r = await stream.next();
    if (r.done) return out;
    out.push(r.value);
  }
}

test("the event stream gives every entry once, in order, across a reconnect", async () => {
  const s = await Server.start("events");
  try {
    const alice = Key.generate();
    const c = new Client(s.url);
    const before = await populate(c, alice, "ev", 3);
    const stream = c.events({ giveUpAfterMs: 20_000 });
    const got = await take(stream, before.length);
    assert.deepEqual([stream.connections, stream.lastSeq], [1, before.length]);
    // The server goes away mid-stream (its stream ends) and comes back.
    await s.restart();
    const later = await populate(new Client(s.url), alice, "ev2", 2);
    got.push(...(await take(stream, later.length)));
    stream.close();
    assert.ok(stream.connections >= 2, "the stream reconnected");
    assert.deepEqual(got.map((e) => e.seq), Array.from({ length: got.length }, (_, i) => i + 1), "every entry once, in order");
    assert.deepEqual(got.map((e) => e.item.hash), [...before, ...later]);
    assert.equal(got[0].record.kind, "intent");
    assert.equal(got[1].action.kind, "claim");
    assert.deepEqual(await stream.next(), { done: true, value: undefined }, "closed, it ends");
  } finally {
    await s.close();
  }
});

test("live entries and the topic filter (with gaps in seq)", async () => {
  const s = await Server.start("live");
  try {
    const alice = Key.generate();
    const c = new Client(s.url);
    await populate(c, alice, "other", 1);
    const got = [];
    const reading = (async () => {
      for await (const e of c.events({ topic: "wanted/**", reconnect: false })) {
        got.push(e);
        if (got.length === 2) break; // leaving the loop closes the stream
      }
    })();
    const wanted = await populate(c, alice, "wanted", 1); // committed while the stream waits
    await reading;
    assert.deepEqual(got.map((e) => e.item.hash), wanted);
    assert.deepEqual(got.map((e) => e.seq), [3, 4], "the filter leaves gaps in seq");
    assert.throws(() => c.events({ topic: "bad topic" }), (e) => e instanceof NexusError && /topic filter/.test(e.message));
    assert.throws(() => c.events({ from: -1 }), /from must be/);
  } finally {
    await s.close();
  }
});

test("an export verifies offline, and a corrupted one names its first bad line as nexus verify does", async () => {
  const s = await Server.start("export");
  const dir = tempDir("export");
  try {
    const alice = Key.generate();
    const c = new Client(s.url);
    const hashes = await populate(c, alice, "ex", 3);
    const dep = await c.deployment();
    const intent = propose(alice, "ex/done", {});
    await c.propose(intent);
    const lease = await c.claim(claim(alice, dep, intent, 30_000));
    await c.submitFact(fact(alice, "ex/done", { ok: true }, [intent], { resolves: { intent, token: lease.token } }));
    const h = hint(alice, selector("ex/**"), priority(2), "up");
    await c.submitHint(h);
    await c.retract(retract(alice, dep, h));

    let text = "";
    for await (const line of c.exportLines()) text += line;
    const path = join(dir, "export.jsonl");
    writeFileSync(path, text);
    const n = (await c.health()).log_head;
    assert.equal(n, hashes.length + 5);
    const pages = [];
    for await (const p of c.logPages(1, 4)) pages.push(p.entries.length);
    assert.deepEqual(pages, [4, 4, 3]);

    const report = await verifyExportFile(path);
    assert.deepEqual([report.lines, report.head, report.intents, report.facts, report.resolvingFacts], [n, n, 4, 1, 1]);
    assert.deepEqual([report.claims, report.hints, report.retractions], [4, 1, 1]);
    assert.equal((await verifyExportAsync(c.logEntries())).head, n, "the live log verifies as it streams");
    assert.equal(JSON.parse(s.cli(["verify", "--json", path]).stdout).ok, true);

    const lines = text.split("\n");
    lines[4] = lines[4].replace('"i":2', '"i":3'); // the third Intent's body
    const badPath = join(dir, "bad.jsonl");
    writeFileSync(badPath, lines.join("\n"));
    await assert.rejects(verifyExportFile(badPath), (e) => {
      assert.ok(e instanceof VerifyError);
      assert.deepEqual([e.line, e.code, e.hash], [5, "hash_mismatch", hashes[4]]);
      assert.ok(e.message.startsWith(`line 5 (seq 5, ${hashes[4]}): hash mismatch`), e.message);
      const cli = s.cli(["verify", "--json", badPath], { check: false });
      const verdict = JSON.parse(cli.stdout);
      assert.equal(cli.status, 1);
      assert.equal(verdict.line, 5, "the CLI names the same line");
      assert.equal(verdict.problem, e.problem, "and says the same");
      return true;
    });
    assert.throws(() => verifyExport(readFileSync(badPath, "utf8")), (e) => e instanceof VerifyError && e.line === 5);

    // The command line: `nexus-client verify FILE`.
    const cli = (file) => spawnSync(process.execPath, [CLI, "verify", file], { encoding: "utf8", timeout: 30_000 });
    const good = cli(path);
    assert.equal(good.status, 0, good.stderr);
    assert.equal(good.stdout.split("\n")[0], `ok: ${n} entries verified (seq 1..${n})`);
    assert.match(good.stdout, /6 records: 4 intents, 1 fact \(1 resolving\), 1 hint\n  5 actions: 4 claims, 0 renewals, 0 withdrawals, 1 retraction/);
    const bad = cli(badPath);
    assert.equal(bad.status, 1);
    assert.ok(bad.stderr.startsWith(`error: ${badPath} does not verify: line 5 (seq 5, ${hashes[4]}): hash mismatch`), bad.stderr);
    const missing = cli(join(dir, "none.jsonl"));
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /cannot read .*none\.jsonl/);
  } finally {
    await s.close();
  }
});

/** Three good entries (two Intents, a claim) built offline. */
function entries(key) {
  const i = propose(key, "v/a", {}, [], { time: 1 });
  const j = propose(key, "v/b", {}, [i], { time: 2 });
  const a = claim(key, "d", i, 1000, { time: 3 });
  return [
    { seq: 1, at: 10, record: i.toJSON() },
    { seq: 2, at: 11, record: j.toJSON() },
    { seq: 3, at: 12, action: a.toJSON() },
  ];
}

const CASES = [
  ["a seq that skips", (e) => (e[1] = { ...e[1], seq: 3 }), 2, "seq_gap"],
  ["entries out of order", (e) => e.unshift(e.splice(1, 1)[0]), 1, "seq_gap"],
  ["a link to a later record", (e) => { e[0].seq = 2; e[1].seq = 1; e.unshift(e.splice(1, 1)[0]); }, 1, "dangling_link"],
  ["a record twice", (e) => e.push({ seq: 4, at: 13, record: e[0].record }), 4, "duplicate_record"],
  ["an action twice", (e) => e.push({ seq: 4, at: 13, action: e[2].action }), 4, "duplicate_action"],
  ["an unknown entry member", (e) => (e[2] = { ...e[2], extra: 1 }), 3, "bad_entry"],
  ["neither record nor action", (e) => (e[2] = { seq: 3, at: 12 }), 3, "bad_entry"],
  ["a line that is not JSON", (e) => (e[0] = "{not json"), 1, "malformed_json"],
  ["a bad signature", (e) => (e[2].action = { ...e[2].action, sig: "00".repeat(64) }), 3, "bad_signature"],
  ["a null optional member", (e) => (e[0].record = { ...e[0].record, resolves: null }), 1, "invalid"],
];

for (const [name, mutate, line, code] of CASES) {
  test(`offline verification names the line: ${name}`, () => {
    const alice = Key.fromSeedHex("01".repeat(32));
    assert.equal(verifyExport(entries(alice).map((x) => JSON.stringify(x))).head, 3);
    const bad = entries(alice);
    mutate(bad);
    assert.throws(
      () => verifyExport(bad.map((x) => (typeof x === "string" ? x : JSON.stringify(x)))),
      (e) => e instanceof VerifyError && e.line === line && e.code === code,
    );
  });
}

test("actions must name an earlier Intent; v1 actions verify", () => {
  const alice = Key.generate();
  const i = propose(alice, "v/a", {}, [], { time: 1 });
  const v1 = signAction(alice, { kind: "withdraw", intent: i.hash, author: alice.author, time: 2 });
  assert.equal(v1.deployment, undefined);
  const ok = [{ seq: 1, at: 1, record: i.toJSON() }, { seq: 2, at: 2, action: v1.toJSON() }];
  assert.equal(verifyExport(ok).withdrawals, 1);
  assert.throws(() => verifyExport([{ seq: 1, at: 2, action: v1.toJSON() }]), (e) => e.code === "unknown_intent" && e.message.includes(i.hash));
  const r = retract(alice, "d", i, { time: 3 });
  assert.throws(() => verifyExport([...ok, { seq: 3, at: 3, action: r.toJSON() }]), (e) => e.code === "not_a_hint");
});

test("key files: the JS client's work in the CLI, the CLI's in the JS client", async () => {
  const s = await Server.start("keys");
  const dir = tempDir("keys");
  try {
    const topic = freshTopic();
    const jsKey = Key.generate();
    const jsPath = await saveKey(jsKey, join(dir, "js", "key"));
    const out = s.cli(["--key", jsPath, "--json", "intent", "propose", topic, "--body", '{"from":"js"}']);
    const c = new Client(s.url);
    assert.equal((await c.record(JSON.parse(out.stdout).hash)).record.author, jsKey.author);

    const cliPath = join(dir, "cli", "key");
    s.cli(["keygen", "--out", cliPath]);
    const cliKey = await loadKey(cliPath);
    assert.equal(JSON.parse(readFileSync(cliPath, "utf8")).author, cliKey.author);
    const intent = propose(cliKey, topic, { from: "js, with the CLI's key" });
    await c.propose(intent);
    assert.ok(s.cli(["--json", "show", intent.hash]).stdout.includes(cliKey.author));
  } finally {
    await s.close();
  }
});
