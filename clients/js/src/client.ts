/**
 * A client for the neXus v1 HTTP+JSON API (spec/api.md) on `fetch`: Node ≥ 20,
 * browsers and Workers alike.
 *
 * Every route has a method with a typed answer (./answers.ts). Records and actions in
 * answers are verified (hash and strict signature) before they are handed out, so a
 * client never trusts the server for authorship. An error answer throws
 * {@link ApiError} (status, stable `code`, message, details).
 */

import type {
  BatchResult, Contract, ContractRule, ContractVersion, Deployed, FactPage, Health, HintItem, IntentItem, IntentPage,
  IntentState, Lease, LogEntry, LogPage, Provenance, RecordInfo, Retracted, Submitted, Withdrawn,
} from "./answers.js";
import { type JsonObject, type JsonValue, canonicalText, jsonForMessage, parseJson } from "./canonical.js";
import { ApiError, InvalidRecordFromServer, NexusError, TransportError, UnexpectedAnswer, Unreachable, WireError } from "./errors.js";
import {
  Action, DEFAULT_LIMITS, type Limits, Record, checkDeployment, checkTopic, parseAction, parseRecord,
} from "./records.js";

export const DEFAULT_TIMEOUT_MS = 30_000;
/** Largest answer body read. */
export const MAX_RESPONSE_BYTES = 256 << 20;
/** Entries asked for per `GET /v1/log` page by {@link Client.logPages} (the server's maximum). */
export const LOG_PAGE_SIZE = 1000;
/** Silence after which an event stream counts as dropped (the server sends a heartbeat every 15 s). */
export const EVENT_IDLE_TIMEOUT_MS = 60_000;

export interface ClientOptions {
  /** Sent as `Authorization: Bearer <token>` (for a server whose reads need one). */
  token?: string;
  /** Bound on each request, from sending it to the last byte of its answer (default 30 s). */
  timeoutMs?: number;
  /** The limits records in answers are verified against (the server's, when configured otherwise). */
  limits?: Limits;
  /** Replaces the global `fetch` (a proxy, or a mock in tests). */
  fetch?: typeof fetch;
}

export interface IntentFilters {
  state?: "available" | "claimed" | "resolved" | "withdrawn";
  topic?: string;
  limit?: number;
  cursor?: string;
}

export interface FactFilters {
  topic?: string;
  since?: number;
  until?: number;
  limit?: number;
  cursor?: string;
}

export interface EventOptions {
  /** The first `seq` to give (default 1: the whole log). */
  from?: number;
  /** A topic glob: only records and actions under it (and no Hints). */
  topic?: string;
  /** Reconnect with `Last-Event-ID` when the connection drops (default true). */
  reconnect?: boolean;
  /** Give up when no connection could be made for this long (default 30 s). */
  giveUpAfterMs?: number;
  /** Silence after which the connection counts as dropped (default 60 s). */
  idleTimeoutMs?: number;
}

type Where = readonly [method: string, url: string, status: number];
type Tag = "string" | "int" | "bool" | "array" | "object" | "string?" | "int?" | "object?";

function snippet(text: string): string {
  return text.length > 200 ? text.slice(0, 200) + "…" : text;
}

function isObj(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function fits(v: unknown, tag: Tag): boolean {
  switch (tag.replace("?", "")) {
    case "string":
      return typeof v === "string";
    case "int":
      return typeof v === "number" && Number.isInteger(v);
    case "bool":
      return typeof v === "boolean";
    case "array":
      return Array.isArray(v);
    default:
      return isObj(v);
  }
}

/** The members of `spec` from the answer object `v`, each checked; an optional one absent is `null`. */
function shape<T>(where: Where, v: unknown, what: string, spec: { [k: string]: Tag }, given: object = {}): T {
  if (!isObj(v)) throw new UnexpectedAnswer(where[0], where[1], where[2], `expected a JSON object for ${what}`);
  const out: { [k: string]: unknown } = { ...given };
  for (const [name, tag] of Object.entries(spec)) {
    if (name in given) continue;
    const x = v[name];
    if (x === undefined || x === null) {
      if (tag.endsWith("?")) {
        out[name] = null;
        continue;
      }
      throw new UnexpectedAnswer(where[0], where[1], where[2], `the answer has no \`${name}\` (${what})`);
    }
    if (!fits(x, tag)) throw new UnexpectedAnswer(where[0], where[1], where[2], `\`${name}\` of ${what} is not a ${tag.replace("?", "")}`);
    out[name] = x;
  }
  return out as T;
}

function list(where: Where, v: unknown, name: string): unknown[] {
  const items = isObj(v) ? v[name] : undefined;
  if (!Array.isArray(items)) throw new UnexpectedAnswer(where[0], where[1], where[2], `the answer has no \`${name}\` list`);
  return items;
}

/** The {@link ApiError} of an error body, or undefined when it is not one. */
export function apiErrorOf(method: string, url: string, status: number, body: string): ApiError | undefined {
  let v: JsonValue;
  try {
    v = parseJson(body);
  } catch {
    return undefined;
  }
  const err = isObj(v) ? v["error"] : undefined;
  if (!isObj(err) || typeof err["code"] !== "string") return undefined;
  const details: { [k: string]: unknown } = {};
  for (const [k, x] of Object.entries(err)) if (k !== "code" && k !== "message" && k !== "status") details[k] = x;
  const message = typeof err["message"] === "string" ? err["message"] : "";
  return new ApiError(method, url, status, err["code"], message, details);
}

function raiseFor(method: string, url: string, status: number, body: string): void {
  if (status >= 200 && status < 300) return;
  throw apiErrorOf(method, url, status, body) ?? new UnexpectedAnswer(method, url, status, `not an API error body: ${snippet(body)}`);
}

const UNREACHABLE_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "UND_ERR_CONNECT_TIMEOUT"]);

function transportError(method: string, url: string, e: unknown, timedOut: boolean, timeoutMs: number): TransportError {
  if (timedOut) return new TransportError(method, url, `no answer within ${timeoutMs} ms`);
  const cause = (e as { cause?: { code?: unknown; message?: unknown } } | undefined)?.cause;
  const code = typeof cause?.code === "string" ? cause.code : undefined;
  const detail = [String((e as Error)?.message ?? e), code ?? (typeof cause?.message === "string" ? cause.message : undefined)].filter(Boolean).join(": ");
  if (code !== undefined && UNREACHABLE_CODES.has(code)) return new Unreachable(method, url, `cannot reach the neXus server: ${detail}`);
  return new TransportError(method, url, detail);
}

async function readCapped(body: ReadableStream<Uint8Array> | null, method: string, url: string): Promise<string> {
  if (body === null) return "";
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let size = 0;
  let text = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > MAX_RESPONSE_BYTES) {
      await reader.cancel();
      throw new TransportError(method, url, `the answer is larger than ${MAX_RESPONSE_BYTES} bytes`);
    }
    text += decoder.decode(value, { stream: true });
  }
  return text + decoder.decode();
}

function validateBaseUrl(baseUrl: unknown): string {
  if (typeof baseUrl !== "string") throw new NexusError(`invalid server URL ${String(baseUrl)}: it must be a string`);
  const base = baseUrl.replace(/\/+$/, "");
  const m = /^https?:\/\/(.*)$/.exec(base);
  if (m === null) throw new NexusError(`invalid server URL ${JSON.stringify(baseUrl)}: it must start with http:// or https://`);
  if (m[1] === "" || m[1]!.startsWith("/")) throw new NexusError(`invalid server URL ${JSON.stringify(baseUrl)}: it names no host`);
  if (/[?#\s]/.test(base)) throw new NexusError(`invalid server URL ${JSON.stringify(baseUrl)}: it must not contain a query, fragment or spaces`);
  try {
    new URL(base);
  } catch {
    throw new NexusError(`invalid server URL ${JSON.stringify(baseUrl)}: not a URL`);
  }
  return base;
}

function query(params: { [k: string]: string | number | undefined | null }): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}

const SUBMITTED = { hash: "string", kind: "string", duplicate: "bool", seq: "int?" } as const;
const LEASE = { intent: "string", token: "int", lease_until: "int", takeover: "bool" } as const;

/**
 * A client for one neXus server at `baseUrl` (`http://host:port` or `https://…`,
 * optionally with a path prefix).
 */
export class Client {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly limits: Limits;
  private readonly headers: { [k: string]: string };
  private readonly fetchFn: typeof fetch;
  private deploymentId: string | undefined;

  constructor(baseUrl: string, opts: ClientOptions = {}) {
    this.baseUrl = validateBaseUrl(baseUrl);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (typeof timeoutMs !== "number" || !(timeoutMs > 0) || !Number.isFinite(timeoutMs)) {
      throw new NexusError(`timeoutMs must be a positive number of milliseconds, got ${String(timeoutMs)}`);
    }
    this.timeoutMs = timeoutMs;
    this.limits = opts.limits ?? DEFAULT_LIMITS;
    this.headers = {};
    if (opts.token !== undefined) {
      if (typeof opts.token !== "string" || opts.token.trim() === "") throw new NexusError("the bearer token is empty");
      this.headers["authorization"] = `Bearer ${opts.token.trim()}`;
    }
    const f = opts.fetch ?? globalThis.fetch;
    if (typeof f !== "function") throw new NexusError("no fetch: pass opts.fetch on a platform without a global fetch");
    this.fetchFn = f.bind(globalThis);
  }

  toString(): string {
    return `Client(${this.baseUrl})`;
  }

  // ---- raw requests ----

  /** Sends a request; answers its URL, status and body text (a transport failure throws). */
  private async send(method: string, path: string, body?: string): Promise<readonly [method: string, url: string, status: number, body: string]> {
    const url = this.baseUrl + path;
    const ctl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctl.abort();
    }, this.timeoutMs);
    try {
      const headers: { [k: string]: string } = { ...this.headers };
      if (body !== undefined) headers["content-type"] = "application/json";
      let r: Response;
      try {
        r = await this.fetchFn(url, { method, headers, body, signal: ctl.signal });
      } catch (e) {
        throw transportError(method, url, e, timedOut, this.timeoutMs);
      }
      try {
        return [method, url, r.status, await readCapped(r.body, method, url)];
      } catch (e) {
        if (e instanceof NexusError) throw e;
        throw transportError(method, url, e, timedOut, this.timeoutMs);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  private async json(method: string, path: string, body?: string): Promise<[Where, JsonValue]> {
    const [m, url, status, text] = await this.send(method, path, body);
    raiseFor(m, url, status, text);
    try {
      return [[m, url, status], parseJson(text)];
    } catch (e) {
      throw new UnexpectedAnswer(m, url, status, `${(e as Error).message}: ${snippet(text)}`);
    }
  }

  /** `GET path` (with its query): the JSON body of a 2xx answer, for routes the typed methods do not cover. */
  async getJson(path: string): Promise<JsonValue> {
    return (await this.json("GET", path))[1];
  }

  /** `POST path` with `body` as `application/json` (sent as given): the JSON body of a 2xx answer. */
  async postJson(path: string, body: string): Promise<JsonValue> {
    return (await this.json("POST", path, body))[1];
  }

  private verify<T>(where: Where, value: unknown, parse: (v: unknown, l: Limits) => T): T {
    try {
      return parse(value, this.limits);
    } catch (e) {
      if (e instanceof WireError) throw new InvalidRecordFromServer(where[0], where[1], e);
      throw e;
    }
  }

  private record_(where: Where, value: unknown): Record {
    return this.verify(where, value, parseRecord);
  }

  /** A log entry of an answer or an event, its record or action verified. */
  private entry(where: Where, value: unknown): LogEntry {
    if (!isObj(value) || !Number.isInteger(value["seq"]) || !Number.isInteger(value["at"])) {
      throw new UnexpectedAnswer(where[0], where[1], where[2], `not a log entry: ${snippet(jsonForMessage(value))}`);
    }
    const base = { seq: value["seq"] as number, at: value["at"] as number, raw: value };
    if ("record" in value) {
      const record = this.record_(where, value["record"]);
      return { ...base, record, item: record };
    }
    if ("action" in value) {
      const action = this.verify(where, value["action"], parseAction);
      return { ...base, action, item: action };
    }
    throw new UnexpectedAnswer(where[0], where[1], where[2], "a log entry with neither `record` nor `action`");
  }

  // ---- health ----

  /** `GET /v1/health`. A degraded server (`503` with a health body) answers `status: "degraded"`; any other failure throws. */
  async health(): Promise<Health> {
    const [m, url, status, text] = await this.send("GET", "/v1/health");
    const where: Where = [m, url, status];
    if (status === 503) {
      try {
        const v = parseJson(text);
        if (isObj(v) && v["status"] === "degraded") return this.healthOf(where, v);
      } catch {
        // not a health body: reported below
      }
    }
    raiseFor(m, url, status, text);
    let v: JsonValue;
    try {
      v = parseJson(text);
    } catch (e) {
      throw new UnexpectedAnswer(m, url, status, (e as Error).message);
    }
    return this.healthOf(where, v);
  }

  private healthOf(where: Where, v: unknown): Health {
    const h = shape<Omit<Health, "ok" | "reason" | "message"> & { reason: string | null; message: string | null }>(
      where, v, "Health", { status: "string", log_head: "int", deployment: "string?", reason: "string?", message: "string?" },
    );
    const out: Health = { status: h.status, ok: h.status === "ok", log_head: h.log_head, deployment: h.deployment };
    if (h.reason !== null) out.reason = h.reason;
    if (h.message !== null) out.message = h.message;
    return out;
  }

  /** The server's deployment id (from `GET /v1/health`, read once per client): what actions sent to it must be signed for. */
  async deployment(): Promise<string> {
    if (this.deploymentId === undefined) {
      const d = (await this.health()).deployment;
      try {
        this.deploymentId = checkDeployment(d);
      } catch {
        throw new UnexpectedAnswer("GET", this.baseUrl + "/v1/health", 200, `the answer names no valid deployment id (${String(d)}): a server older than wire format v2?`);
      }
    }
    return this.deploymentId;
  }

  // ---- writes ----

  private async submitTo(path: string, record: Record, kind?: string): Promise<Submitted> {
    if (!(record instanceof Record)) throw new TypeError(`expected a Record (see the builders propose, fact, hint), got ${describe(record)}`);
    if (kind !== undefined && record.kind !== kind) throw new NexusError(`a ${record.kind} cannot be sent to ${path}`);
    const [where, v] = await this.json("POST", path, record.toJSONText());
    return shape<Submitted>(where, v, "Submitted", SUBMITTED);
  }

  /** Submits a record to the route of its kind (`/v1/intents`, `/v1/facts`, `/v1/hints`). */
  submit(record: Record): Promise<Submitted> {
    if (!(record instanceof Record)) throw new TypeError(`expected a Record (see the builders propose, fact, hint), got ${describe(record)}`);
    return this.submitTo(`/v1/${record.kind}s`, record);
  }

  /** `POST /v1/intents`: proposes an Intent. */
  propose(intent: Record): Promise<Submitted> {
    return this.submitTo("/v1/intents", intent, "intent");
  }

  /** `POST /v1/facts` (a Fact with `resolves` resolves its Intent atomically). */
  submitFact(fact: Record): Promise<Submitted> {
    return this.submitTo("/v1/facts", fact, "fact");
  }

  /** `POST /v1/hints` (`deny` and `allow` need an operator key). */
  submitHint(hint: Record): Promise<Submitted> {
    return this.submitTo("/v1/hints", hint, "hint");
  }

  private async postAction(action: Action, verb: "claim" | "renew" | "withdraw" | "retract"): Promise<[Where, JsonValue]> {
    if (!(action instanceof Action)) throw new TypeError(`expected an Action (see the builders claim, renew, withdraw, retract), got ${describe(action)}`);
    if (action.kind !== verb) throw new NexusError(`a ${action.kind} action cannot be sent to /${verb}`);
    const on = verb === "retract" ? "hints" : "intents";
    return this.json("POST", `/v1/${on}/${action.target}/${verb}`, action.toJSONText());
  }

  /** `POST /v1/intents/{intent}/claim`: the fencing token and the lease. */
  async claim(action: Action): Promise<Lease> {
    const [where, v] = await this.postAction(action, "claim");
    return shape<Lease>(where, v, "Lease", LEASE);
  }

  /** `POST /v1/intents/{intent}/renew`. */
  async renew(action: Action): Promise<Lease> {
    const [where, v] = await this.postAction(action, "renew");
    return shape<Lease>(where, v, "Lease", LEASE);
  }

  /** `POST /v1/intents/{intent}/withdraw`. */
  async withdraw(action: Action): Promise<Withdrawn> {
    const [where, v] = await this.postAction(action, "withdraw");
    return shape<Withdrawn>(where, v, "Withdrawn", { intent: "string", state: "string" });
  }

  /** `POST /v1/hints/{hint}/retract`. */
  async retract(action: Action): Promise<Retracted> {
    const [where, v] = await this.postAction(action, "retract");
    return shape<Retracted>(where, v, "Retracted", { hint: "string", seq: "int?" });
  }

  /** Sends an action to the route of its kind. */
  act(action: Action): Promise<Lease | Withdrawn | Retracted> {
    if (!(action instanceof Action)) throw new TypeError(`expected an Action (see the builders claim, renew, withdraw, retract), got ${describe(action)}`);
    switch (action.kind) {
      case "claim":
        return this.claim(action);
      case "renew":
        return this.renew(action);
      case "withdraw":
        return this.withdraw(action);
      default:
        return this.retract(action);
    }
  }

  /**
   * `POST /v1/batch`: commits every item (records and actions, 1 to 64), in order, in one
   * atomic commit; each item sees what the ones before it did (propose an Intent and claim
   * it; resolve one and propose follow-ups that derive from the Fact). Answers each item's
   * result; if any item fails, nothing is stored and the {@link ApiError} names it
   * (`details.item`, from 0).
   */
  async batch(items: ReadonlyArray<Record | Action>): Promise<BatchResult[]> {
    const wire = items.map((item) => {
      if (item instanceof Record) return { record: item.toJSON() };
      if (item instanceof Action) return { action: item.toJSON() };
      throw new TypeError(`a batch item is a Record or an Action, got ${describe(item)}`);
    });
    const [where, v] = await this.json("POST", "/v1/batch", canonicalText({ items: wire }));
    const results = isObj(v) ? v.results : undefined;
    if (!Array.isArray(results) || results.length !== items.length) {
      throw new UnexpectedAnswer(where[0], where[1], where[2], `expected ${items.length} batch results`);
    }
    return results.map((r): BatchResult => {
      const names = isObj(r) ? Object.keys(r) : [];
      const body = isObj(r) ? r[names[0] ?? ""] : undefined;
      switch (names.length === 1 ? names[0] : "") {
        case "record":
          return { record: shape<Submitted>(where, body, "Submitted", SUBMITTED) };
        case "lease":
          return { lease: shape<Lease>(where, body, "Lease", LEASE) };
        case "withdrawn":
          return { withdrawn: shape<Withdrawn>(where, body, "Withdrawn", { intent: "string", state: "string" }) };
        case "retracted":
          return { retracted: shape<Retracted>(where, body, "Retracted", { hint: "string", seq: "int?" }) };
        default:
          throw new UnexpectedAnswer(where[0], where[1], where[2], "not a batch result");
      }
    });
  }

  // ---- reads ----

  /** `GET /v1/intents` (one page, from `filters.cursor`). */
  async intents(filters: IntentFilters = {}): Promise<IntentPage> {
    const [where, v] = await this.json("GET", "/v1/intents" + query({ ...filters }));
    const intents = list(where, v, "intents").map((i): IntentItem => {
      const o = isObj(i) ? i : {};
      const record = this.record_(where, o["record"]);
      const state = shape<IntentState>(where, o["state"], "IntentState", { state: "string", token: "int" });
      const st = o["state"] as JsonObject;
      for (const k of ["holder", "fact", "by"] as const) if (typeof st[k] === "string") state[k] = st[k] as string;
      if (Number.isInteger(st["lease_until"])) state.lease_until = st["lease_until"] as number;
      return shape<IntentItem>(where, i, "IntentItem", { priority: "int" }, { record, state });
    });
    return { intents, next: cursorOf(where, v) };
  }

  /** `GET /v1/facts` (one page, oldest first, from `filters.cursor`). */
  async facts(filters: FactFilters = {}): Promise<FactPage> {
    const [where, v] = await this.json("GET", "/v1/facts" + query({ ...filters }));
    return { facts: list(where, v, "facts").map((f) => this.record_(where, f)), next: cursorOf(where, v) };
  }

  private async *pages<T>(fetchPage: (cursor: string | undefined) => Promise<[T[], string | null]>, cursor: string | undefined): AsyncGenerator<T> {
    for (;;) {
      const [items, next] = await fetchPage(cursor);
      yield* items;
      if (next === null) return;
      if (next === cursor) throw new UnexpectedAnswer("GET", this.baseUrl, 200, `the server returned the same cursor ${next} again`);
      cursor = next;
    }
  }

  /** Every Intent matching the filters, following `next` cursors page by page. */
  allIntents(filters: IntentFilters = {}): AsyncGenerator<IntentItem> {
    return this.pages(async (cursor) => {
      const p = await this.intents({ ...filters, cursor });
      return [p.intents, p.next];
    }, filters.cursor);
  }

  /** Every Fact matching the filters, following `next` cursors page by page. */
  allFacts(filters: FactFilters = {}): AsyncGenerator<Record> {
    return this.pages(async (cursor) => {
      const p = await this.facts({ ...filters, cursor });
      return [p.facts, p.next];
    }, filters.cursor);
  }

  /** `GET /v1/records/{id}` (a full hash or a prefix of at least 8 hex digits). */
  async record(id: string): Promise<RecordInfo> {
    const [where, v] = await this.json("GET", `/v1/records/${encodeURIComponent(id)}`);
    const record = this.record_(where, isObj(v) ? v["record"] : undefined);
    return shape<RecordInfo>(where, v, "RecordInfo", { kind: "string", parents: "array" }, { record });
  }

  /** `GET /v1/records/{id}/provenance`: the DAG above the record, breadth first. */
  async provenance(id: string, depth?: number): Promise<Provenance> {
    const [where, v] = await this.json("GET", `/v1/records/${encodeURIComponent(id)}/provenance` + query({ depth }));
    const records = list(where, v, "records").map((r) => this.record_(where, r));
    return shape<Provenance>(where, v, "Provenance", { root: "string" }, { records });
  }

  /** `GET /v1/hints`: the Hints in force (each verified, and checked to be the Hint it is listed as). */
  async hints(): Promise<HintItem[]> {
    const [where, v] = await this.json("GET", "/v1/hints");
    return list(where, v, "hints").map((h) => {
      const hint = this.record_(where, isObj(h) ? h["hint"] : undefined);
      const item = shape<HintItem>(where, h, "HintItem", { hash: "string" }, { hint });
      if (hint.hash !== item.hash || hint.kind !== "hint") {
        throw new UnexpectedAnswer(where[0], where[1], where[2], `hint ${item.hash} is not the Hint record it lists`);
      }
      return item;
    });
  }

  // ---- contract ----

  /** `GET /v1/contract`: the version in force, `null` when none is deployed. */
  async contract(): Promise<Contract | null> {
    let where: Where;
    let v: JsonValue;
    try {
      [where, v] = await this.json("GET", "/v1/contract");
    } catch (e) {
      if (e instanceof ApiError && e.code === "not_found") return null;
      throw e;
    }
    const rules = (isObj(v) && Array.isArray(v["rules"]) ? v["rules"] : []).map((r) =>
      shape<ContractRule>(where, r, "ContractRule", { name: "string", topic: "string", threshold: "int", within_ms: "int?" }),
    );
    return shape<Contract>(where, v, "Contract", {
      version: "int", hash: "string", name: "string", source: "string", upgrade_keys: "array", upgrade_quorum: "object?",
    }, { rules });
  }

  /** `GET /v1/contract/history`: every deployment, oldest first. */
  async contractHistory(): Promise<ContractVersion[]> {
    const [where, v] = await this.json("GET", "/v1/contract/history");
    return list(where, v, "versions").map((x) =>
      shape<ContractVersion>(where, x, "ContractVersion", {
        version: "int", hash: "string", name: "string", deployer: "string", at: "int", deploy: "string", approvals: "array", previous: "string?",
      }),
    );
  }

  /** `POST /v1/contract` with a deployment Fact (see `contractDeployment`). */
  async deployContract(deployment: Record): Promise<Deployed> {
    if (!(deployment instanceof Record) || deployment.kind !== "fact") throw new TypeError("a contract deployment is a Fact record (contractDeployment)");
    const [where, v] = await this.json("POST", "/v1/contract", deployment.toJSONText());
    return shape<Deployed>(where, v, "Deployed", {
      hash: "string", version: "int", name: "string", deploy: "string", previous: "string?", approvals: "array", duplicate: "bool", seq: "int?",
    });
  }

  // ---- the log ----

  /** `GET /v1/log`: one page of the commit log from `from` (the first entry is 1), each entry verified. */
  async log(from = 1, limit?: number): Promise<LogPage> {
    const [where, v] = await this.json("GET", "/v1/log" + query({ from, limit }));
    const entries = list(where, v, "entries");
    const head = isObj(v) ? v["head"] : undefined;
    if (typeof head !== "number" || !Number.isInteger(head)) throw new UnexpectedAnswer(where[0], where[1], where[2], "the answer has no `head`");
    return { head, entries: entries.map((e) => this.entry(where, e)) };
  }

  /** The commit log from `from` on, page by page, until the head the server reports. */
  async *logPages(from = 1, pageSize = LOG_PAGE_SIZE): AsyncGenerator<LogPage> {
    let next = Math.max(from, 1);
    for (;;) {
      const page = await this.log(next, pageSize);
      const last = page.entries.at(-1);
      if (last === undefined) return;
      if (last.seq < next) throw new UnexpectedAnswer("GET", `${this.baseUrl}/v1/log?from=${next}`, 200, `the page ends at seq ${last.seq}, before \`from\``);
      yield page;
      if (last.seq >= page.head) return;
      next = last.seq + 1;
    }
  }

  /** The commit log from `from` on, entry by entry. */
  async *logEntries(from = 1): AsyncGenerator<LogEntry> {
    for await (const page of this.logPages(from)) yield* page.entries;
  }

  /** The commit log from `from` on as an export (JSON lines, what `nexus verify` and `verifyExport` check). */
  async *exportLines(from = 1): AsyncGenerator<string> {
    for await (const entry of this.logEntries(from)) yield canonicalText(entry.raw) + "\n";
  }

  /**
   * `GET /v1/events`: the log from `from`, then each entry as it commits (spec/api.md,
   * "Live events"), as an async iterator of {@link LogEntry}. When the connection drops
   * (or is silent for `idleTimeoutMs`) it reconnects with `Last-Event-ID` (the last `seq`
   * it gave), so every entry comes once, in order; it throws the last error once it
   * could not reconnect for `giveUpAfterMs`. With `reconnect: false` it ends with the
   * connection.
   */
  events(opts: EventOptions = {}): EventStream {
    if (opts.topic !== undefined) {
      try {
        checkTopic(opts.topic, true, "topic filter");
      } catch (e) {
        throw new NexusError((e as Error).message);
      }
    }
    if (opts.from !== undefined && !(Number.isSafeInteger(opts.from) && opts.from >= 0)) {
      throw new NexusError(`from must be a non-negative integer, got ${String(opts.from)}`);
    }
    return new EventStream(this, opts, {
      url: this.baseUrl + "/v1/events" + query({ from: opts.from ?? 1, topic: opts.topic }),
      headers: this.headers,
      fetch: this.fetchFn,
      timeoutMs: this.timeoutMs,
      entry: (where, v) => this.entry(where, v),
    });
  }
}

function describe(v: unknown): string {
  return v === null ? "null" : typeof v === "object" ? (v.constructor?.name ?? "object") : typeof v;
}

function cursorOf(where: Where, v: unknown): string | null {
  const next = isObj(v) ? v["next"] : undefined;
  if (next === undefined || next === null) return null;
  if (typeof next !== "string") throw new UnexpectedAnswer(where[0], where[1], where[2], "`next` is not a cursor string");
  return next;
}

interface StreamWiring {
  url: string;
  headers: { [k: string]: string };
  fetch: typeof fetch;
  timeoutMs: number;
  entry: (where: Where, v: unknown) => LogEntry;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The entries of `GET /v1/events` (see {@link Client.events}); `close()` drops the connection and ends it. */
export class EventStream implements AsyncIterableIterator<LogEntry> {
  /** The `seq` of the last entry given (what a reconnection resumes after). */
  lastSeq: number | undefined;
  /** How many connections were made (1 + reconnections). */
  connections = 0;
  readonly url: string;
  private readonly reconnect: boolean;
  private readonly giveUpAfterMs: number;
  private readonly idleTimeoutMs: number;
  private retryMs = 1000;
  private closed = false;
  private ctl: AbortController | undefined;
  private reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  private decoder = new TextDecoder();
  private buffer = "";
  private lines: string[] = [];

  constructor(readonly client: Client, opts: EventOptions, private readonly w: StreamWiring) {
    this.url = w.url;
    this.reconnect = opts.reconnect ?? true;
    this.giveUpAfterMs = opts.giveUpAfterMs ?? 30_000;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? EVENT_IDLE_TIMEOUT_MS;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Drops the connection; the iterator ends. */
  close(): void {
    this.closed = true;
    this.drop();
  }

  async return(): Promise<IteratorResult<LogEntry>> {
    this.close();
    return { done: true, value: undefined };
  }

  private drop(): void {
    this.ctl?.abort();
    this.ctl = undefined;
    this.reader = undefined;
    this.buffer = "";
    this.lines = [];
    this.decoder = new TextDecoder();
  }

  private async open(): Promise<void> {
    const headers: { [k: string]: string } = { ...this.w.headers, accept: "text/event-stream" };
    if (this.lastSeq !== undefined) headers["last-event-id"] = String(this.lastSeq);
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.w.timeoutMs);
    let r: Response;
    try {
      r = await this.w.fetch(this.url, { headers, signal: ctl.signal });
    } catch (e) {
      throw transportError("GET", this.url, e, ctl.signal.aborted, this.w.timeoutMs);
    } finally {
      clearTimeout(timer);
    }
    if (r.status !== 200) {
      const body = await readCapped(r.body, "GET", this.url).catch(() => "");
      raiseFor("GET", this.url, r.status, body);
      throw new UnexpectedAnswer("GET", this.url, r.status, "not an event stream");
    }
    if (r.body === null) throw new UnexpectedAnswer("GET", this.url, r.status, "an event stream without a body");
    this.ctl = ctl;
    this.reader = r.body.getReader();
    this.connections++;
  }

  private async connect(): Promise<void> {
    const deadline = Date.now() + this.giveUpAfterMs;
    for (;;) {
      try {
        await this.open();
        return;
      } catch (e) {
        if (!(e instanceof TransportError) || !this.reconnect || this.connections === 0 || Date.now() >= deadline) throw e;
      }
      await sleep(this.retryMs);
      if (this.closed) return;
    }
  }

  /** The next line, or undefined when the connection ended or broke (or went silent). */
  private async line(): Promise<string | undefined> {
    for (;;) {
      const l = this.lines.shift();
      if (l !== undefined) return l;
      const reader = this.reader!;
      let idle: ReturnType<typeof setTimeout> | undefined;
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await Promise.race([
          reader.read(),
          new Promise<never>((_, reject) => {
            idle = setTimeout(() => reject(new Error("idle")), this.idleTimeoutMs);
          }),
        ]);
      } catch {
        return undefined;
      } finally {
        clearTimeout(idle);
      }
      if (chunk.done) return undefined;
      this.buffer += this.decoder.decode(chunk.value, { stream: true });
      // Lines end with \n, \r\n or \r; a trailing \r may be the first half of a \r\n.
      const parts = this.buffer.split(/\r\n|\n|\r(?!$)/);
      this.buffer = parts.pop()!;
      this.lines.push(...parts);
    }
  }

  async next(): Promise<IteratorResult<LogEntry>> {
    let data: string[] = [];
    let event = "";
    for (;;) {
      if (this.closed) return { done: true, value: undefined };
      if (this.reader === undefined) {
        await this.connect();
        continue;
      }
      const line = await this.line();
      if (line === undefined) {
        // The connection ended or broke: an event cut short is dropped.
        this.drop();
        data = [];
        event = "";
        if (!this.reconnect) this.closed = true;
        continue;
      }
      if (line === "") {
        if (data.length === 0) continue; // a comment (heartbeat) or a `retry:` block ended
        const text = data.join("\n");
        const kind = event || "message";
        data = [];
        event = "";
        if (kind === "error") {
          throw apiErrorOf("GET", this.url, 500, text) ?? new UnexpectedAnswer("GET", this.url, 200, `the stream failed: ${text}`);
        }
        if (kind !== "entry") continue;
        let value: JsonValue;
        try {
          value = parseJson(text);
        } catch (e) {
          throw new UnexpectedAnswer("GET", this.url, 200, `an event that is not JSON: ${(e as Error).message}`);
        }
        const entry = this.w.entry(["GET", this.url, 200], value);
        if (this.lastSeq !== undefined && entry.seq <= this.lastSeq) {
          throw new UnexpectedAnswer("GET", this.url, 200, `entry ${entry.seq} after ${this.lastSeq}: the stream went back`);
        }
        this.lastSeq = entry.seq;
        return { done: false, value: entry };
      }
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "data") data.push(value);
      else if (name === "event") event = value.trim();
      else if (name === "retry" && /^[0-9]+$/.test(value)) this.retryMs = Number(value);
      // `id:` equals the entry's seq; comments need nothing.
    }
  }
}
