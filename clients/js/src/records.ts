/**
 * Records (Intent, Fact, Hint) and actions (claim, renew, withdraw, retract).
 *
 * Building: {@link propose}, {@link fact}, {@link hint}, {@link claim}, {@link renew},
 * {@link withdraw} and {@link retract} validate their input against the default
 * {@link Limits}, put the content in normal form, hash it (FihHash of the canonical
 * encoding) and sign it. Actions are wire format v2: signed for one deployment
 * (`Client.deployment()`).
 *
 * Reading: {@link parseRecord}, {@link parseAction} (and {@link parseWire} for either)
 * check a wire form in the order of spec/README.md ("Validation order") and throw
 * {@link WireError} with the code of the first rule it breaks; {@link checkWire} reports
 * the code, canonical content and computed hash instead.
 */

import { MAX_SAFE_INTEGER, type JsonObject, type JsonValue, canonicalBytes, canonicalText, jsonForMessage, parseJson, setMember, utf8 } from "./canonical.js";
import { fihHash, fromHex, isAuthorKey, verifyStrict } from "./crypto.js";
import { WireError } from "./errors.js";

export const RECORD_KINDS = ["fact", "intent", "hint"] as const;
export const ACTION_KINDS = ["claim", "renew", "withdraw", "retract"] as const;
export type RecordKind = (typeof RECORD_KINDS)[number];
export type ActionKind = (typeof ACTION_KINDS)[number];
export type WireType = "record" | "action";

/** The limits records are checked against (`nexus_core::record::Limits::default()`). */
export interface Limits {
  readonly maxBodyBytes: number;
  readonly maxParents: number;
  readonly maxJsonDepth: number;
  readonly maxReasonBytes: number;
  readonly maxSelectorBytes: number;
  readonly maxTopicDepth: number;
  readonly maxTopicBytes: number;
}

export const DEFAULT_LIMITS: Limits = Object.freeze({
  maxBodyBytes: 64 * 1024,
  maxParents: 64,
  maxJsonDepth: 32,
  maxReasonBytes: 1024,
  maxSelectorBytes: 4096,
  maxTopicDepth: 16,
  maxTopicBytes: 256,
});

/** The current time in ms since the Unix epoch. */
export function nowMs(): number {
  return Date.now();
}

// ------------------------------------------------------------------------------------
// Shape checks and normal form.

const HEX = /^[0-9a-f]*$/;
const SEGMENT = /^[A-Za-z0-9\-_.~:+=,]+$/;
const DEPLOYMENT = /^[A-Za-z0-9._-]{1,64}$/;
const U64_MAX = 2n ** 64n - 1n;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

function malformed(detail: string): never {
  throw new WireError("malformed", detail);
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function has(o: JsonObject, k: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, k);
}

function lowerHex(value: unknown, nBytes: number, what: string): string {
  if (typeof value !== "string" || value.length !== 2 * nBytes || !HEX.test(value)) {
    malformed(`${what} must be ${2 * nBytes} lowercase hex digits, got ${jsonForMessage(value)}`);
  }
  return value;
}

/** `value` if it is a FihHash (64 lowercase hex digits), else `malformed`. */
export function checkHash(value: unknown, what = "hash"): string {
  return lowerHex(value, 32, what);
}

/** `value` if it is an author key (64 lowercase hex digits of a curve point). */
export function checkAuthor(value: unknown, what = "author"): string {
  const v = lowerHex(value, 32, what);
  if (!isAuthorKey(fromHex(v))) malformed(`${what} ${v} is not an Ed25519 point`);
  return v;
}

/** `value` if it is a deployment id: 1..=64 bytes of `[A-Za-z0-9._-]`. */
export function checkDeployment(value: unknown): string {
  if (typeof value !== "string" || !DEPLOYMENT.test(value)) {
    malformed(`deployment must be 1..=64 of [A-Za-z0-9._-], got ${jsonForMessage(value)}`);
  }
  return value;
}

function asBig(value: unknown): bigint | undefined {
  if (typeof value === "bigint") return value;
  if (typeof value === "number" && Number.isInteger(value) && !Object.is(value, -0)) return BigInt(value);
  return undefined;
}

function u64(value: unknown, what: string): void {
  const n = asBig(value);
  if (n === undefined || n < 0n || n > U64_MAX) malformed(`${what} must be a non-negative integer, got ${jsonForMessage(value)}`);
}

function u53(value: unknown, what: string): void {
  const n = asBig(value);
  if (n !== undefined && n > BigInt(MAX_SAFE_INTEGER)) throw new WireError("out_of_range", `${what} = ${n}`);
}

/** `value` if it is a topic (or, with `glob`, a topic glob), else `malformed`. */
export function checkTopic(value: unknown, glob = false, what = "topic", limits: Limits = DEFAULT_LIMITS): string {
  if (typeof value !== "string") malformed(`${what} must be a string, got ${jsonForMessage(value)}`);
  const segs = value.split("/");
  let bad = value === "" || utf8(value).length > limits.maxTopicBytes || segs.length > limits.maxTopicDepth;
  segs.forEach((seg, i) => {
    if (glob && (seg === "*" || seg === "**")) {
      if (seg === "**" && i + 1 !== segs.length) bad = true;
      return;
    }
    if (seg === "." || seg === ".." || !SEGMENT.test(seg)) bad = true;
  });
  if (bad) malformed(`invalid ${what} ${JSON.stringify(value)}`);
  return value;
}

function obj(value: unknown, what: string, allowed: readonly string[], required: readonly string[]): JsonObject {
  if (!isObject(value)) malformed(`${what} must be an object`);
  const unknown = Object.keys(value).filter((k) => !allowed.includes(k)).sort();
  if (unknown.length) malformed(`unknown field(s) ${unknown.join(", ")} in ${what}`);
  const missing = required.filter((k) => !has(value, k)).sort();
  if (missing.length) malformed(`missing field(s) ${missing.join(", ")} in ${what}`);
  return value;
}

function hashes(value: unknown, what: string): string[] {
  if (!Array.isArray(value)) malformed(`${what} must be an array`);
  return value.map((h) => lowerHex(h, 32, what));
}

/** Optional members: absent or null (null is then refused as not normal). */
function present(d: JsonObject, key: string): boolean {
  return has(d, key) && d[key] !== null;
}

function checkParents(parents: string[], what: string, limits: Limits): void {
  if (parents.length > limits.maxParents) {
    throw new WireError("too_many_parents", `${parents.length} ${what}, at most ${limits.maxParents}`);
  }
  if (new Set(parents).size !== parents.length) throw new WireError("duplicate_parent", `a hash is listed twice in ${what}`);
}

function bodyCanon(body: unknown, what: string, limits: Limits): void {
  const size = canonicalBytes(body, limits.maxJsonDepth).length;
  if (size > limits.maxBodyBytes) throw new WireError("body_too_large", `${what} is ${size} bytes, at most ${limits.maxBodyBytes}`);
}

function shapeHint(c: JsonObject, limits: Limits): void {
  obj(c, "hint", ["kind", "selector", "effect", "reason", "source", "expires", "author", "time"], ["kind", "selector", "effect", "reason", "author", "time"]);
  const sel: JsonObject = { ...obj(c["selector"], "selector", ["topic", "body"], []) };
  for (const k of ["topic", "body"]) if (!present(sel, k)) delete sel[k];
  if (has(sel, "topic")) checkTopic(sel["topic"], true, "selector.topic", limits);
  if (has(sel, "body") && !isObject(sel["body"])) malformed("selector.body must be an object");
  c["selector"] = sel;
  const eff = c["effect"];
  if (isObject(eff)) {
    obj(eff, "effect", ["priority"], ["priority"]);
    const p = asBig(eff["priority"]);
    if (p === undefined || p < I64_MIN || p > I64_MAX) malformed(`effect.priority must be an i64, got ${jsonForMessage(eff["priority"])}`);
  } else if (eff !== "deny" && eff !== "allow") {
    malformed(`effect must be "deny", "allow" or {"priority": n}, got ${jsonForMessage(eff)}`);
  }
  if (typeof c["reason"] !== "string") malformed("reason must be a string");
  if (present(c, "source")) {
    const src: JsonObject = { ...obj(c["source"], "source", ["contract", "rule", "facts"], []) };
    for (const k of ["contract", "rule"]) if (!present(src, k)) delete src[k];
    if (has(src, "contract")) lowerHex(src["contract"], 32, "source.contract");
    if (has(src, "rule") && typeof src["rule"] !== "string") malformed("source.rule must be a string");
    src["facts"] = hashes(has(src, "facts") ? src["facts"] : [], "source.facts");
    c["source"] = src;
  } else {
    delete c["source"];
  }
  if (present(c, "expires")) u64(c["expires"], "expires");
  else delete c["expires"];
}

/**
 * Checks a wire form's content (without `hash` and `sig`) as the Rust core does, in its
 * order, and returns its normal form: what is canonically encoded and hashed.
 */
export function normalContent(content: unknown, ty: WireType, limits: Limits = DEFAULT_LIMITS): JsonObject {
  if (!isObject(content)) malformed(`a ${ty} must be a JSON object`);
  const kind = content["kind"];
  const kinds: readonly string[] = ty === "record" ? RECORD_KINDS : ACTION_KINDS;
  if (typeof kind !== "string" || !kinds.includes(kind)) malformed(`kind must be one of ${kinds.join(", ")}, got ${jsonForMessage(kind)}`);
  const c: JsonObject = { ...content };
  // 1. Shape: fields, types, topics, keys.
  if (kind === "fact" || kind === "intent") {
    const fields = ["kind", "topic", "body", "parents", "author", "time", ...(kind === "fact" ? ["resolves"] : [])];
    obj(c, kind, fields, ["kind", "topic", "body", "author", "time"]);
    checkTopic(c["topic"], false, "topic", limits);
    c["parents"] = hashes(has(c, "parents") ? c["parents"] : [], "parents");
    if (kind === "fact" && present(c, "resolves")) {
      const r = obj(c["resolves"], "resolves", ["intent", "token"], ["intent", "token"]);
      lowerHex(r["intent"], 32, "resolves.intent");
      u64(r["token"], "resolves.token");
    } else {
      delete c["resolves"];
    }
  } else if (kind === "hint") {
    shapeHint(c, limits);
  } else {
    const target = kind === "retract" ? "hint" : "intent";
    const extra = kind === "claim" ? ["lease_ms"] : kind === "renew" ? ["lease_ms", "token"] : [];
    const required = ["kind", target, "author", "time", ...extra];
    // Wire format v2 adds `deployment` (absent: a version 1 action of an old log).
    obj(c, kind, [...required, "deployment"], required);
    if (present(c, "deployment")) checkDeployment(c["deployment"]);
    else delete c["deployment"];
    lowerHex(c[target], 32, target);
    for (const k of ["lease_ms", "token"]) if (has(c, k)) u64(c[k], k);
  }
  checkAuthor(c["author"]);
  u64(c["time"], "time");

  // 2. Content rules, in the order the Rust encoder meets them.
  if (kind === "fact" || kind === "intent") {
    checkParents(c["parents"] as string[], "parents", limits);
    bodyCanon(c["body"], "body", limits);
    if (has(c, "resolves")) u53((c["resolves"] as JsonObject)["token"], "resolves.token");
  } else if (kind === "hint") {
    const n = utf8(c["reason"] as string).length;
    if (n < 1 || n > limits.maxReasonBytes) throw new WireError("reason", `reason is ${n} bytes, must be 1..=${limits.maxReasonBytes}`);
    const eff = c["effect"];
    if (isObject(eff)) {
      const p = asBig(eff["priority"])!;
      if (p > BigInt(MAX_SAFE_INTEGER) || p < -BigInt(MAX_SAFE_INTEGER)) throw new WireError("out_of_range", `effect.priority = ${p}`);
    }
    if (has(c, "expires")) u53(c["expires"], "expires");
    const sel = c["selector"] as JsonObject;
    if (has(sel, "body")) bodyCanon(sel["body"], "selector.body", limits);
    const size = canonicalBytes(sel, limits.maxJsonDepth).length;
    if (size > limits.maxSelectorBytes) throw new WireError("selector_too_large", `selector is ${size} bytes, at most ${limits.maxSelectorBytes}`);
    if (has(c, "source")) checkParents((c["source"] as JsonObject)["facts"] as string[], "source.facts", limits);
  } else if (has(c, "lease_ms")) {
    u53(c["lease_ms"], "lease_ms");
  }
  u53(c["time"], "time");
  if (kind === "renew") u53(c["token"], "token");
  return c;
}

// ------------------------------------------------------------------------------------
// Signed wire forms.

/** A deep copy of a JSON value, frozen at every level (a record never changes after it is hashed). */
function frozenCopy<T extends JsonValue>(v: T): T {
  if (Array.isArray(v)) return Object.freeze(v.map(frozenCopy)) as T;
  if (isObject(v)) {
    const out: JsonObject = {};
    for (const k of Object.keys(v)) setMember(out, k, frozenCopy(v[k]!));
    return Object.freeze(out) as T;
  }
  // A bigint here is within ±(2^53 − 1) (the content was checked): held as a number.
  return (typeof v === "bigint" ? Number(v) : v) as T;
}

/** A verified record or action: its wire form (normal form plus `hash` and `sig`). */
export abstract class Signed {
  /** The wire form, a deep copy frozen at every level. */
  readonly wire: Readonly<JsonObject>;
  constructor(wire: JsonObject) {
    this.wire = frozenCopy(wire);
  }
  /** Its FihHash. */
  get hash(): string {
    return this.wire["hash"] as string;
  }
  get sig(): string {
    return this.wire["sig"] as string;
  }
  get kind(): string {
    return this.wire["kind"] as string;
  }
  get author(): string {
    return this.wire["author"] as string;
  }
  /** The author's stated time, ms since the Unix epoch. */
  get time(): number {
    return this.wire["time"] as number;
  }
  /** The content: the wire form without `hash` and `sig`. */
  get content(): JsonObject {
    const { hash: _h, sig: _s, ...rest } = this.wire;
    return rest;
  }
  /** The wire form as canonical JSON text (what is sent). */
  toJSONText(): string {
    return canonicalText(this.wire);
  }
  /** `JSON.stringify` support: the wire form. */
  toJSON(): JsonObject {
    return { ...this.wire };
  }
  toString(): string {
    return `${this.constructor.name}(${this.kind} ${this.hash})`;
  }
}

/** An Intent, Fact or Hint. */
export class Record extends Signed {
  /** The topic of an Intent or Fact (`undefined` for a Hint). */
  get topic(): string | undefined {
    const t = this.wire["topic"];
    return typeof t === "string" ? t : undefined;
  }
  /** The body of an Intent or Fact (`undefined` for a Hint). */
  get body(): JsonValue | undefined {
    return this.wire["body"];
  }
  /** Its parents (`[]` for a Hint). */
  get parents(): string[] {
    const p = this.wire["parents"];
    return Array.isArray(p) ? [...(p as string[])] : [];
  }
  /** `{intent, token}` of a Fact that resolves an Intent. */
  get resolves(): { intent: string; token: number } | undefined {
    const r = this.wire["resolves"];
    return isObject(r) ? { intent: r["intent"] as string, token: r["token"] as number } : undefined;
  }
  /** Every record it links to: parents, the resolved Intent, a Hint's source Facts. */
  links(): string[] {
    const out = this.parents;
    const r = this.resolves;
    if (r !== undefined) out.push(r.intent);
    const src = this.wire["source"];
    if (isObject(src) && Array.isArray(src["facts"])) out.push(...(src["facts"] as string[]));
    return out;
  }
}

/** A claim, renewal, withdrawal or retraction. */
export class Action extends Signed {
  /** The Intent it acts on (the Hint for a retraction). */
  get target(): string {
    return this.wire[this.kind === "retract" ? "hint" : "intent"] as string;
  }
  /** The deployment it is signed for (`undefined`: a version 1 action). */
  get deployment(): string | undefined {
    const d = this.wire["deployment"];
    return typeof d === "string" ? d : undefined;
  }
}

/** What {@link checkWire} found: the first error (or undefined), the canonical content and its FihHash. */
export interface WireCheck {
  error: WireError | undefined;
  canonical: string | undefined;
  hash: string | undefined;
}

/** Checks a wire form in the order of spec/README.md and reports, rather than throws, what is wrong. */
export function checkWire(wire: unknown, ty: WireType, limits: Limits = DEFAULT_LIMITS): WireCheck {
  if (!isObject(wire)) return { error: new WireError("malformed", `a ${ty} must be a JSON object`), canonical: undefined, hash: undefined };
  const { hash: stated0, sig: sig0, ...content } = wire;
  let contentError: WireError | undefined;
  let canonical: string | undefined;
  let computed: string | undefined;
  try {
    canonical = canonicalText(normalContent(content, ty, limits));
    computed = fihHash(utf8(canonical));
    // One wire form per hash: what was sent, canonicalised, must be what is hashed.
    if (canonicalText(content) !== canonical) {
      contentError = new WireError("malformed", "not in normal form (a null member, a missing `parents`, …)");
    }
  } catch (e) {
    if (!(e instanceof WireError)) throw e;
    contentError = e;
  }
  let stated: string;
  let sig: string;
  try {
    stated = lowerHex(stated0, 32, "hash");
    sig = lowerHex(sig0, 64, "sig");
  } catch (e) {
    return { error: e as WireError, canonical, hash: computed };
  }
  if (contentError !== undefined) return { error: contentError, canonical, hash: computed };
  if (stated !== computed) return { error: new WireError("hash_mismatch", `stated ${stated}, computed ${computed}`), canonical, hash: computed };
  const author = wire["author"] as string;
  if (!verifyStrict(fromHex(author), stated, fromHex(sig))) {
    return { error: new WireError("bad_signature", `does not verify for author ${author}`), canonical, hash: computed };
  }
  return { error: undefined, canonical, hash: computed };
}

/** A verified {@link Record} or {@link Action} from its wire form (an object, or JSON text); {@link WireError} when it does not verify. */
export function parseWire(value: unknown, ty: WireType, limits: Limits = DEFAULT_LIMITS): Record | Action {
  const v = typeof value === "string" || value instanceof Uint8Array ? parseJson(value) : value;
  const check = checkWire(v, ty, limits);
  if (check.error !== undefined) throw check.error;
  return ty === "record" ? new Record(v as JsonObject) : new Action(v as JsonObject);
}

/** A verified Intent, Fact or Hint (see {@link parseWire}). */
export function parseRecord(value: unknown, limits: Limits = DEFAULT_LIMITS): Record {
  return parseWire(value, "record", limits) as Record;
}

/** A verified claim, renewal, withdrawal or retraction (see {@link parseWire}). */
export function parseAction(value: unknown, limits: Limits = DEFAULT_LIMITS): Action {
  return parseWire(value, "action", limits) as Action;
}

// ------------------------------------------------------------------------------------
// Builders.

/** What signs: an author key and a signature over a hash (a `Key`). */
export interface Signer {
  readonly author: string;
  sign(hashHex: string): string;
}

function signContent(key: Signer, content: JsonObject, ty: WireType): JsonObject {
  const normal = normalContent(content, ty);
  const canonical = canonicalText(normal);
  if (canonicalText(content) !== canonical) malformed("the content is not in normal form");
  if (normal["author"] !== key.author) malformed(`the author ${jsonForMessage(normal["author"])} is not the signing key ${key.author}`);
  const h = fihHash(utf8(canonical));
  return { ...normal, hash: h, sig: key.sign(h) };
}

/** Signs any record content with `key` (which must be its author). */
export function signRecord(key: Signer, content: JsonObject): Record {
  return new Record(signContent(key, content, "record"));
}

/** Signs any action content with `key` (which must be its author). */
export function signAction(key: Signer, content: JsonObject): Action {
  return new Action(signContent(key, content, "action"));
}

/** A hash, or a signed record or action standing for its hash. */
export type Ref = string | Signed;

function ref(target: Ref): string {
  return target instanceof Signed ? target.hash : target;
}

function hashList(list: readonly Ref[] | undefined, what: string): string[] {
  if (list === undefined) return [];
  if (!Array.isArray(list)) malformed(`${what} must be an array of hashes`);
  return list.map(ref);
}

/** Options common to every builder: the stated `time` (default: now). */
export interface TimeOption {
  time?: number;
}

/** An Intent (proposed now, or at `opts.time` ms). */
export function propose(key: Signer, topic: string, body: JsonValue, parents?: readonly Ref[], opts: TimeOption = {}): Record {
  return signRecord(key, {
    kind: "intent",
    topic,
    body,
    parents: hashList(parents, "parents"),
    author: key.author,
    time: opts.time ?? nowMs(),
  });
}

export interface FactOptions extends TimeOption {
  /** Resolves this Intent with the fencing token of the author's claim. */
  resolves?: { intent: Ref; token: number };
}

/** A Fact; `opts.resolves = {intent, token}` resolves that Intent with the claim's fencing token. */
export function fact(key: Signer, topic: string, body: JsonValue, parents?: readonly Ref[], opts: FactOptions = {}): Record {
  const content: JsonObject = {
    kind: "fact",
    topic,
    body,
    parents: hashList(parents, "parents"),
    author: key.author,
    time: opts.time ?? nowMs(),
  };
  if (opts.resolves !== undefined) {
    const { intent, token } = opts.resolves as { intent?: Ref; token?: number };
    if (intent === undefined || token === undefined) malformed("resolves must be {intent, token}");
    content["resolves"] = { intent: ref(intent), token };
  }
  return signRecord(key, content);
}

export interface Selector {
  topic?: string;
  body?: JsonObject;
}

/** A Hint selector: a topic glob (`*` one segment, a final `**` any number) and/or top-level body members that must be equal. */
export function selector(topic?: string, body?: JsonObject): JsonObject {
  const sel: JsonObject = {};
  if (topic !== undefined) sel["topic"] = checkTopic(topic, true, "selector topic");
  if (body !== undefined) {
    if (!isObject(body)) malformed("a selector body must be a JSON object");
    sel["body"] = { ...body };
  }
  return sel;
}

export type Effect = "deny" | "allow" | { priority: number };

/** The effect `{"priority": n}`. */
export function priority(n: number): { priority: number } {
  return { priority: n };
}

export interface HintOptions extends TimeOption {
  source?: { contract?: string; rule?: string; facts?: readonly Ref[] };
  expires?: number;
}

/** A Hint: `effect` is `"deny"`, `"allow"` or {@link priority}; `source` and `expires` (ms) are optional. */
export function hint(key: Signer, sel: Selector | JsonObject, effect: Effect, reason: string, opts: HintOptions = {}): Record {
  const content: JsonObject = {
    kind: "hint",
    selector: { ...(sel as JsonObject) },
    effect: (typeof effect === "object" && effect !== null ? { ...effect } : effect) as JsonValue,
    reason,
    author: key.author,
    time: opts.time ?? nowMs(),
  };
  if (opts.source !== undefined) {
    const src: JsonObject = {};
    if (opts.source.contract !== undefined) src["contract"] = opts.source.contract;
    if (opts.source.rule !== undefined) src["rule"] = opts.source.rule;
    src["facts"] = hashList(opts.source.facts, "source.facts");
    content["source"] = src;
  }
  if (opts.expires !== undefined) content["expires"] = opts.expires;
  return signRecord(key, content);
}

function action(key: Signer, kind: ActionKind, deployment: string, target: [string, Ref], time: number | undefined, extra: JsonObject = {}): Action {
  return signAction(key, {
    kind,
    [target[0]]: ref(target[1]),
    ...extra,
    author: key.author,
    deployment: checkDeployment(deployment),
    time: time ?? nowMs(),
  });
}

/** A claim on `intent` for `leaseMs`, signed for `deployment`. */
export function claim(key: Signer, deployment: string, intent: Ref, leaseMs: number, opts: TimeOption = {}): Action {
  return action(key, "claim", deployment, ["intent", intent], opts.time, { lease_ms: leaseMs });
}

/** A renewal of the claim with fencing `token` for another `leaseMs` from now. */
export function renew(key: Signer, deployment: string, intent: Ref, token: number, leaseMs: number, opts: TimeOption = {}): Action {
  return action(key, "renew", deployment, ["intent", intent], opts.time, { token, lease_ms: leaseMs });
}

/** A withdrawal of `intent` (by its proposer). */
export function withdraw(key: Signer, deployment: string, intent: Ref, opts: TimeOption = {}): Action {
  return action(key, "withdraw", deployment, ["intent", intent], opts.time);
}

/** A retraction of Hint `hintRef` (by its author, or an operator key). */
export function retract(key: Signer, deployment: string, hintRef: Ref, opts: TimeOption = {}): Action {
  return action(key, "retract", deployment, ["hint", hintRef], opts.time);
}

export const CONTRACT_DEPLOY_TOPIC = "nexus/contract";

/** The Fact that deploys a contract (`POST /v1/contract`): its source and the hash of the version it replaces (`null` for the first). */
export function contractDeployment(key: Signer, source: string, expected: string | null = null, opts: TimeOption = {}): Record {
  if (typeof source !== "string" || source === "") malformed("a contract source is a non-empty string");
  if (expected !== null) checkHash(expected, "expected");
  return fact(key, CONTRACT_DEPLOY_TOPIC, { source, expected }, [], opts);
}
