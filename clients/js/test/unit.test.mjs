// Unit tests: bad input is refused with clear errors; strictness; the SSE reader on a fake fetch.
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ed25519 } from "@noble/curves/ed25519.js";
import {
  ApiError, Client, Key, KeyFileError, NonInteger, SIG_DOMAIN, UnexpectedAnswer, WireError,
  canonicalText, checkWire, claim, fact, fromHex, hint, parseJson, parseRecord, propose, selector, verifyStrict,
} from "../dist/index.js";
import { defaultKeyPath, loadKey, saveKey } from "../dist/node.js";
import { tempDir } from "./helpers.mjs";

const wireCode = (code) => (e) => e instanceof WireError && e.code === code;

test("parseJson keeps integers exact and literals that are not integers", () => {
  assert.equal(parseJson("9007199254740991"), 9007199254740991);
  assert.equal(parseJson("9007199254740992"), 9007199254740992n);
  assert.equal(parseJson("-18446744073709551616"), -18446744073709551616n);
  for (const t of ["1.0", "1e2", "-0", "-0.0", "10E+0"]) assert.deepEqual(parseJson(t), new NonInteger(t));
  assert.throws(() => canonicalText(parseJson("[1.5]")), wireCode("not_an_integer"));
  assert.throws(() => canonicalText(parseJson('{"a":9007199254740992}')), wireCode("out_of_range"));
});

test("parseJson refuses what is not JSON, naming where", () => {
  for (const [text, why] of [
    ['{"a":1,"a":2}', /duplicate member name "a"/],
    ["[1,]", /unexpected "]"/],
    ["[1] x", /trailing data/],
    ["NaN", /unexpected "N"/],
    ["01", /trailing data/],
    ['"\t"', /invalid string/],
    ["", /unexpected end of input/],
    ['{"a" 1}', /expected ':'/],
    ["[" .repeat(600), /nested deeper than 512/],
  ]) {
    assert.throws(() => parseJson(text), (e) => wireCode("invalid_json")(e) && why.test(e.message), text);
  }
  assert.throws(() => parseJson(new Uint8Array([0x22, 0xff, 0x22])), /not valid UTF-8/);
});

test("__proto__ is a member name like any other", () => {
  const v = parseJson('{"__proto__":{"polluted":1},"b":2}');
  assert.equal(Object.getPrototypeOf(v), Object.prototype);
  assert.equal({}.polluted, undefined);
  assert.equal(canonicalText(v), '{"__proto__":{"polluted":1},"b":2}');
});

test("canonicalText refuses values JSON cannot carry exactly", () => {
  assert.throws(() => canonicalText(0.5), wireCode("not_an_integer"));
  assert.throws(() => canonicalText(-0), wireCode("not_an_integer"));
  assert.throws(() => canonicalText(NaN), wireCode("not_an_integer"));
  assert.throws(() => canonicalText(2 ** 53), wireCode("out_of_range"));
  assert.throws(() => canonicalText(undefined), wireCode("malformed"));
  assert.throws(() => canonicalText(new Date(0)), wireCode("malformed"));
  assert.throws(() => canonicalText("\ud800"), wireCode("invalid_json"));
  assert.throws(() => canonicalText([[[1]]], 2), wireCode("too_deep"));
  assert.equal(canonicalText({ b: [1, "é\u2028"], a: null, "\u{1F600}": 1, "\uE000": 2 }), '{"a":null,"b":[1,"é\u2028"],"\u{1F600}":1,"\uE000":2}');
});

test("builders refuse bad input before signing, naming it", () => {
  const k = Key.fromSeedHex("02".repeat(32));
  assert.throws(() => propose(k, "a//b", {}), (e) => wireCode("malformed")(e) && /invalid topic "a\/\/b"/.test(e.message));
  assert.throws(() => propose(k, "a/..", {}), wireCode("malformed"));
  assert.throws(() => propose(k, "a", { x: 1.5 }), wireCode("not_an_integer"));
  assert.throws(() => propose(k, "a", "x".repeat(70_000)), wireCode("body_too_large"));
  assert.throws(() => propose(k, "a", {}, ["nothex"]), (e) => wireCode("malformed")(e) && /parents must be 64 lowercase hex/.test(e.message));
  const i = propose(k, "a", {});
  assert.throws(() => propose(k, "a", {}, [i, i]), wireCode("duplicate_parent"));
  assert.throws(() => claim(k, "bad deployment!", i, 1000), /deployment must be 1..=64/);
  assert.throws(() => claim(k, "d", i, 2 ** 53), wireCode("out_of_range"));
  assert.throws(() => claim(k, "d", i, -1), wireCode("malformed"));
  assert.throws(() => hint(k, selector("a/**"), "deny", ""), wireCode("reason"));
  assert.throws(() => hint(k, selector("a/**"), "maybe", "r"), /effect must be/);
  assert.throws(() => selector("a/**/b"), /invalid selector topic/);
  assert.throws(() => fact(k, "a", {}, [], { resolves: { intent: i, token: 1.5 } }), wireCode("malformed"));
  const other = Key.fromSeedHex("03".repeat(32));
  const signer = { author: k.author, sign: (h) => other.sign(h) };
  const forged = propose(signer, "a", {});
  assert.throws(() => parseRecord(forged.toJSON()), wireCode("bad_signature"), "a record signed by another key does not verify");
});

test("built records are in normal form and verify", () => {
  const k = Key.generate();
  const i = propose(k, "chem/x", { n: 1 }, [], { time: 5 });
  const f = fact(k, "chem/x", null, [i], { resolves: { intent: i, token: 1 }, time: 6 });
  const again = parseRecord(f.toJSONText());
  assert.equal(again.hash, f.hash);
  assert.deepEqual(again.resolves, { intent: i.hash, token: 1 });
  assert.deepEqual(again.links(), [i.hash, i.hash]);
  assert.ok(Object.isFrozen(f.wire));
  assert.equal(String(f), `Record(fact ${f.hash})`);
});

test("verification is strict where noble's default verify is not", () => {
  // small_order_author_forgery: identity key, R = identity, S = 0 — ZIP-215 accepts it for any message.
  const identity = new Uint8Array(32);
  identity[0] = 1;
  const sig = new Uint8Array(64);
  sig[0] = 1;
  const hash = "ab".repeat(32);
  const msg = new Uint8Array([...SIG_DOMAIN, ...fromHex(hash)]);
  assert.equal(ed25519.verify(sig, msg, identity, { zip215: true }), true, "the forgery passes ZIP-215");
  assert.equal(verifyStrict(identity, hash, sig), false);
  // A real signature whose R is replaced by a small-order point, and a non-canonical key encoding.
  const k = Key.fromSeedHex("01".repeat(32));
  const good = fromHex(k.sign(hash));
  assert.equal(verifyStrict(fromHex(k.author), hash, good), true);
  const smallR = Uint8Array.from(good);
  smallR.set(identity, 0);
  assert.equal(verifyStrict(fromHex(k.author), hash, smallR), false);
  const nonCanonical = new Uint8Array(32).fill(0xff);
  nonCanonical[0] = 0xee; // y = p + 1 (non-canonical encoding of y = 1 with the sign bit)
  nonCanonical[31] = 0x7f;
  assert.equal(verifyStrict(nonCanonical, hash, good), false);
  assert.equal(verifyStrict(fromHex(k.author), hash, good.subarray(0, 63)), false);
});

test("checkWire reports instead of throwing, and refuses non-objects", () => {
  assert.equal(checkWire([], "record").error.code, "malformed");
  assert.equal(checkWire({ kind: "fact" }, "action").error.code, "malformed");
  const r = checkWire({ kind: "intent" }, "record");
  assert.equal(r.error.code, "malformed");
  assert.match(r.error.message, /hash must be 64 lowercase hex digits/);
});

test("key file text: the CLI's format, and clear refusals", () => {
  const k = Key.fromSeedHex("01".repeat(32));
  const text = k.toKeyFileText();
  assert.deepEqual(JSON.parse(text), { version: 1, seed: "01".repeat(32), author: k.author });
  assert.equal(Key.fromKeyFileText(text).author, k.author);
  assert.equal(Key.fromKeyFileText("01".repeat(32) + "\n").author, k.author, "a bare seed is accepted");
  assert.ok(!String(k).includes("0101") && !JSON.stringify(k).includes("0101"), "the seed is never shown");
  for (const [bad, why] of [
    ['{"version":2,"seed":"' + "01".repeat(32) + '","author":"' + k.author + '"}', /unsupported version 2/],
    ['{"version":1,"seed":"' + "01".repeat(32) + '"}', /exactly the members/],
    ['{"version":1,"seed":"' + "01".repeat(32) + '","author":"' + "00".repeat(32) + '"}', /does not match the seed/],
    ["XYZ", /the seed must be 64 lowercase hex digits/],
    ["{oops", /not a neXus key file/],
  ]) {
    assert.throws(() => Key.fromKeyFileText(bad), (e) => e instanceof KeyFileError && why.test(e.message), bad);
  }
  assert.throws(() => new Key(new Uint8Array(31)), /a seed is 32 bytes/);
});

test("key files on disk: mode 0600, never replaced unless asked, group-readable ones refused", async () => {
  const dir = tempDir("keyfile");
  const path = join(dir, "sub", "key");
  const k = Key.generate();
  assert.equal(await saveKey(k, path), path);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.equal(statSync(join(dir, "sub")).mode & 0o777, 0o700);
  assert.equal((await loadKey(path)).author, k.author);
  await assert.rejects(saveKey(Key.generate(), path), (e) => e instanceof KeyFileError && /already exists/.test(e.message));
  assert.equal((await loadKey(path)).author, k.author, "the existing key is untouched");
  const k2 = Key.generate();
  await saveKey(k2, path, { overwrite: true });
  assert.equal((await loadKey(path)).author, k2.author);
  chmodSync(path, 0o644);
  await assert.rejects(loadKey(path), (e) => e instanceof KeyFileError && /readable by group or others \(mode 644\)/.test(e.message));
  await assert.rejects(loadKey(join(dir, "none")), (e) => e instanceof KeyFileError && /no key file here/.test(e.message) && e.path === join(dir, "none"));
  mkdirSync(join(dir, "adir"), { mode: 0o700 });
  await assert.rejects(loadKey(join(dir, "adir")), /not a regular file/);
  writeFileSync(join(dir, "junk"), "hello", { mode: 0o600 });
  await assert.rejects(loadKey(join(dir, "junk")), (e) => e.path === join(dir, "junk") && /the seed must be/.test(e.message));
  assert.equal(defaultKeyPath({ NEXUS_HOME: "/x" }), "/x/key");
  assert.equal(defaultKeyPath({ HOME: "/h" }), "/h/.config/nexus/key");
  assert.throws(() => defaultKeyPath({}), /set NEXUS_HOME/);
});

/** A fetch that answers each call with the next of `answers` (each a list of chunks to stream), recording the requests. */
function sseFetch(answers) {
  const requests = [];
  const fetch = async (url, init) => {
    requests.push({ url: String(url), headers: { ...init.headers } });
    const answer = answers.shift();
    if (answer === undefined) throw new TypeError("fetch failed", { cause: { code: "ECONNREFUSED" } });
    if (typeof answer === "function") return answer();
    const enc = new TextEncoder();
    const body = new ReadableStream({
      start(ctl) {
        for (const chunk of answer) ctl.enqueue(enc.encode(chunk));
        ctl.close();
      },
    });
    return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  };
  return { fetch, requests };
}

function entryEvent(seq, record, eol = "\n") {
  const data = JSON.stringify({ seq, at: 1000 + seq, record: record.toJSON() });
  return `id: ${seq}${eol}event: entry${eol}data: ${data}${eol}${eol}`;
}

test("the SSE reader: line endings, split chunks, comments, an event cut short, Last-Event-ID", async () => {
  const k = Key.generate();
  const rs = [1, 2, 3, 4].map((n) => propose(k, "t", { n }, [], { time: n }));
  const second = entryEvent(2, rs[1], "\r\n");
  const { fetch, requests } = sseFetch([
    // The first connection: a retry, a heartbeat, entry 1, entry 2 in two chunks, then entry 3 cut short.
    ["retry: 10\n\n: heartbeat\n\n", entryEvent(1, rs[0]), second.slice(0, 30), second.slice(30), entryEvent(3, rs[2]).slice(0, 40)],
    // The reconnection resumes after 2: entries 3 and 4 (the server skips what was given).
    [entryEvent(3, rs[2], "\r"), entryEvent(4, rs[3])],
  ]);
  const c = new Client("http://nexus.test", { fetch });
  const stream = c.events({ from: 1, topic: "t/**", giveUpAfterMs: 1000 });
  const got = [];
  for await (const e of stream) {
    got.push(e);
    if (got.length === 4) break;
  }
  assert.deepEqual(got.map((e) => e.seq), [1, 2, 3, 4]);
  assert.deepEqual(got.map((e) => e.record.hash), rs.map((r) => r.hash));
  assert.equal(requests.length, 2);
  assert.equal(requests[0].url, "http://nexus.test/v1/events?from=1&topic=t%2F**");
  assert.equal(requests[0].headers["last-event-id"], undefined);
  assert.equal(requests[1].headers["last-event-id"], "2");
  assert.equal(stream.connections, 2);
});

test("the SSE reader: tampered entries, error answers and going back are errors, not entries", async () => {
  const k = Key.generate();
  const r = propose(k, "t", {}, [], { time: 1 });
  const tampered = `event: entry\ndata: ${JSON.stringify({ seq: 1, at: 1, record: { ...r.toJSON(), body: { x: 1 } } })}\n\n`;
  const c1 = new Client("http://nexus.test", { fetch: sseFetch([[tampered]]).fetch });
  await assert.rejects(c1.events().next(), (e) => e.name === "InvalidRecordFromServer" && e.cause.code === "hash_mismatch");

  const refused = () => new Response(JSON.stringify({ error: { code: "bad_request", message: "bad topic" } }), { status: 400 });
  const c2 = new Client("http://nexus.test", { fetch: sseFetch([refused]).fetch });
  await assert.rejects(c2.events().next(), (e) => e instanceof ApiError && e.code === "bad_request" && e.status === 400);

  const back = [entryEvent(2, r), entryEvent(1, r)];
  const c3 = new Client("http://nexus.test", { fetch: sseFetch([back]).fetch });
  const s3 = c3.events();
  assert.equal((await s3.next()).value.seq, 2);
  await assert.rejects(s3.next(), (e) => e instanceof UnexpectedAnswer && /the stream went back/.test(e.message));

  // Without reconnect the stream ends with its connection; with it, it gives up once it cannot reconnect.
  const c4 = new Client("http://nexus.test", { fetch: sseFetch([[entryEvent(1, r)]]).fetch });
  const s4 = c4.events({ reconnect: false });
  assert.equal((await s4.next()).value.seq, 1);
  assert.deepEqual(await s4.next(), { done: true, value: undefined });
  const c5 = new Client("http://nexus.test", { fetch: sseFetch([["retry: 5\n\n", entryEvent(1, r)]]).fetch });
  const s5 = c5.events({ giveUpAfterMs: 50 });
  assert.equal((await s5.next()).value.seq, 1);
  await assert.rejects(s5.next(), (e) => e.name === "Unreachable");
});

test("the main entry uses Web APIs only: no module but node.js and cli.js imports node:, reads process or Buffer", async () => {
  const { readdirSync, readFileSync } = await import("node:fs");
  const dist = new URL("../dist/", import.meta.url);
  const files = readdirSync(dist).filter((f) => f.endsWith(".js") && f !== "node.js" && f !== "cli.js");
  assert.ok(files.includes("index.js") && files.includes("client.js"));
  for (const f of files) {
    const src = readFileSync(new URL(f, dist), "utf8");
    assert.doesNotMatch(src, /from "node:|require\(|\bprocess\.|\bBuffer\b|from "\.\/node\.js"/, f);
  }
});

test("a built record is a frozen deep copy: changing the input afterwards changes nothing", () => {
  const k = Key.generate();
  const body = { list: [1, 2], nested: { a: 1 } };
  const r = propose(k, "t", body);
  body.list.push(3);
  body.nested.a = 2;
  assert.deepEqual(r.body, { list: [1, 2], nested: { a: 1 } });
  assert.ok(Object.isFrozen(r.body.list) && Object.isFrozen(r.body.nested));
  assert.throws(() => {
    "use strict";
    r.body.nested.a = 3;
  }, TypeError);
  assert.equal(parseRecord(r.toJSON()).hash, r.hash);
});

test("bodies: only plain JSON; safe bigints are held as numbers", () => {
  const k = Key.generate();
  assert.throws(() => propose(k, "t", { when: new Date(0) }), (e) => wireCode("malformed")(e) && /a Date/.test(e.message));
  assert.throws(() => propose(k, "t", { m: new Map() }), /a Map/);
  const r = propose(k, "t", { n: 5n });
  assert.equal(r.body.n, 5);
  assert.equal(JSON.stringify(r.toJSON()).includes('"n":5'), true);
  assert.throws(() => propose(k, "t", { n: 2n ** 53n }), wireCode("out_of_range"));
});

test("the SSE reader: a silent connection counts as dropped and is resumed after the last entry", async () => {
  const k = Key.generate();
  const [r1, r2] = [1, 2].map((n) => propose(k, "t", { n }, [], { time: n }));
  const enc = new TextEncoder();
  const silentAfter = (text) => () =>
    new Response(new ReadableStream({ start: (ctl) => ctl.enqueue(enc.encode(text)) }), { status: 200 }); // never closes
  const { fetch, requests } = sseFetch([silentAfter("retry: 1\n\n" + entryEvent(1, r1)), [entryEvent(2, r2)]]);
  const stream = new Client("http://nexus.test", { fetch }).events({ idleTimeoutMs: 100 });
  const t0 = Date.now();
  assert.equal((await stream.next()).value.seq, 1);
  assert.equal((await stream.next()).value.seq, 2);
  assert.ok(Date.now() - t0 >= 100, "it waited out the silence");
  assert.equal(requests[1].headers["last-event-id"], "1");
  stream.close();
});
