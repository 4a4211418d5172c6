/**
 * Offline verification of an export (what `nexus verify FILE` checks, without
 * `--replay`), with the rules and messages of the Python client's `verify_export`.
 *
 * An export is JSON lines, one per commit log entry in commit order: the entries of
 * `GET /v1/log`. {@link verifyExport} re-derives every hash and checks every signature
 * (strictly), checks that `seq` runs 1, 2, 3, … without gaps, that every record links
 * (parents, resolved Intent, Hint source Facts) only to records that appeared earlier,
 * that no record appears twice, that every action names an Intent (a retraction: a
 * Hint) that appeared earlier and is applied once, and that a Fact's `resolves` names
 * an Intent. It stops at the first broken entry and throws {@link VerifyError} naming
 * its line.
 */

import type { LogEntry } from "./answers.js";
import { type JsonObject, type JsonValue, parseJson } from "./canonical.js";
import { NexusError, WireError } from "./errors.js";
import { Action, DEFAULT_LIMITS, type Limits, Record, type WireType, checkWire } from "./records.js";

/** Longest line accepted, in bytes (UTF-16 code units for a string line). */
export const MAX_LINE_BYTES = 4 << 20;

/** What a verified export holds. */
export interface VerifyReport {
  lines: number;
  records: number;
  facts: number;
  resolvingFacts: number;
  intents: number;
  hints: number;
  actions: number;
  claims: number;
  renewals: number;
  withdrawals: number;
  retractions: number;
  /** The last `seq` (0 for an empty export). */
  head: number;
}

/**
 * The first broken entry: its 1-based `line`, its `seq` and stated `hash` when they
 * could be read, a `code` naming the check (`malformed_json`, `bad_entry`, `seq_gap`,
 * `hash_mismatch`, `bad_signature`, `invalid`, `duplicate_record`, `duplicate_action`,
 * `dangling_link`, `unknown_intent`, `not_an_intent`, `not_a_hint`, `line_too_long`)
 * and the `problem`.
 */
export class VerifyError extends NexusError {
  constructor(readonly line: number, readonly code: string, readonly problem: string, readonly seq?: number, readonly hash?: string) {
    let where = `line ${line}`;
    if (seq !== undefined && hash !== undefined) where += ` (seq ${seq}, ${hash})`;
    else if (seq !== undefined) where += ` (seq ${seq})`;
    else if (hash !== undefined) where += ` (${hash})`;
    super(`${where}: ${problem}`);
  }
}

/** One line of an export: its text (or bytes), a parsed entry, or a {@link LogEntry}. */
export type ExportLine = string | Uint8Array | JsonObject | LogEntry;

const COUNTERS = { claim: "claims", renew: "renewals", withdraw: "withdrawals", retract: "retractions" } as const;

function isObj(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function isLogEntry(v: unknown): v is LogEntry {
  return isObj(v) && "raw" in v && "item" in v && isObj((v as { raw: unknown }).raw);
}

function wireProblem(e: WireError, what: string, stated: string | undefined, computed: string | undefined): [string, string] {
  if (e.code === "hash_mismatch") return ["hash_mismatch", `hash mismatch: the entry states ${stated} but its content hashes to ${computed}`];
  if (e.code === "bad_signature") return ["bad_signature", `bad signature: ${e.detail}`];
  return ["invalid", `invalid ${what}: ${e.message}`];
}

function showInt(v: unknown): string {
  return typeof v === "bigint" ? v.toString() : typeof v === "string" ? JSON.stringify(v) : String(v);
}

/** Checks export lines one at a time ({@link verifyExport} and {@link verifyExportAsync} drive it). */
export class ExportVerifier {
  readonly report: VerifyReport = {
    lines: 0, records: 0, facts: 0, resolvingFacts: 0, intents: 0, hints: 0,
    actions: 0, claims: 0, renewals: 0, withdrawals: 0, retractions: 0, head: 0,
  };
  private readonly seen = new Map<string, [kind: string, line: number]>();
  private readonly applied = new Map<string, number>();

  constructor(readonly limits: Limits = DEFAULT_LIMITS) {}

  /** Checks the next line; throws {@link VerifyError} when it is broken. */
  check(raw: ExportLine): void {
    const r = this.report;
    const line = ++r.lines;
    const fail = (code: string, problem: string, seq?: number, hash?: string) => new VerifyError(line, code, problem, seq, hash);

    let entry: JsonValue;
    if (isLogEntry(raw)) {
      entry = raw.raw;
    } else if (typeof raw === "string" || raw instanceof Uint8Array) {
      if (raw.length > MAX_LINE_BYTES + 2) throw fail("line_too_long", `line is longer than ${MAX_LINE_BYTES} bytes`);
      try {
        entry = parseJson(raw);
      } catch (e) {
        throw fail("malformed_json", `malformed JSON: ${e instanceof WireError ? e.detail || e.message : String(e)}`);
      }
    } else {
      entry = raw;
    }
    if (!isObj(entry)) throw fail("bad_entry", "not a log entry: expected a JSON object");
    const { seq, at, ...rest } = entry;
    if (typeof seq !== "number" || !Number.isInteger(seq) || seq < 0) {
      throw fail("bad_entry", "not a log entry: " + (seq === undefined ? "missing `seq`" : `\`seq\` must be a non-negative integer, got ${showInt(seq)}`));
    }
    if (seq !== r.head + 1) throw fail("seq_gap", `gap in seq: expected ${r.head + 1}, found ${seq}`, seq);
    if (typeof at !== "number" || !Number.isInteger(at) || at < 0) {
      throw fail("bad_entry", "not a log entry: " + (at === undefined ? "missing `at`" : `\`at\` must be a non-negative integer, got ${showInt(at)}`), seq);
    }
    const hasR = "record" in rest;
    const hasA = "action" in rest;
    if (hasR === hasA) throw fail("bad_entry", "not a log entry: " + (hasR ? "has both `record` and `action`" : "has neither `record` nor `action`"), seq);
    const what: WireType = hasR ? "record" : "action";
    const { [what]: body, ...extra } = rest;
    const unexpected = Object.keys(extra)[0];
    if (unexpected !== undefined) throw fail("bad_entry", `not a log entry: unexpected member \`${unexpected}\``, seq);
    const stated = isObj(body) && typeof body["hash"] === "string" ? body["hash"] : undefined;
    const check = checkWire(body, what, this.limits);
    if (check.error !== undefined) {
      const [code, problem] = wireProblem(check.error, what, stated, check.hash);
      throw fail(code, problem, seq, stated);
    }
    const item = hasR ? new Record(body as JsonObject) : new Action(body as JsonObject);
    const h = item.hash;
    if (item instanceof Record) {
      const earlier = this.seen.get(h);
      if (earlier !== undefined) throw fail("duplicate_record", `record already appeared on line ${earlier[1]}`, seq, h);
      for (const link of item.links()) {
        if (!this.seen.has(link)) throw fail("dangling_link", `dangling link: ${link} does not appear earlier in the export`, seq, h);
      }
      if (item.kind === "fact") {
        r.facts++;
        const res = item.resolves;
        if (res !== undefined) {
          r.resolvingFacts++;
          const kind = this.seen.get(res.intent)![0];
          if (kind !== "intent") throw fail("not_an_intent", `resolves.intent names ${res.intent}, which is a ${kind}, not an intent`, seq, h);
        }
      } else if (item.kind === "intent") {
        r.intents++;
      } else {
        r.hints++;
      }
      r.records++;
      this.seen.set(h, [item.kind, line]);
    } else {
      const action = item as Action;
      const target = action.target;
      const retract = action.kind === "retract";
      const known = this.seen.get(target);
      if (known === undefined) {
        if (retract) throw fail("dangling_link", `dangling link: ${target} does not appear earlier in the export`, seq, h);
        throw fail("unknown_intent", `the action's intent ${target} does not appear earlier in the export`, seq, h);
      }
      if (retract && known[0] !== "hint") throw fail("not_a_hint", `the retraction names ${target}, which is a ${known[0]}, not a hint`, seq, h);
      if (!retract && known[0] !== "intent") throw fail("not_an_intent", `the action's intent names ${target}, which is a ${known[0]}, not an intent`, seq, h);
      const before = this.applied.get(h);
      if (before !== undefined) throw fail("duplicate_action", `action already applied on line ${before}`, seq, h);
      this.applied.set(h, line);
      r.actions++;
      r[COUNTERS[action.kind as keyof typeof COUNTERS]]++;
    }
    r.head = seq;
  }
}

/** The lines of an export's text (a final newline ends the last line; blank lines count as lines). */
export function exportLines(text: string): string[] {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  return lines;
}

/**
 * Verifies an export: its whole text, or an iterable of lines (text or bytes), parsed
 * entries or {@link LogEntry}. Answers what it holds; throws {@link VerifyError} at the
 * first broken entry.
 */
export function verifyExport(source: string | Iterable<ExportLine>, limits: Limits = DEFAULT_LIMITS): VerifyReport {
  const v = new ExportVerifier(limits);
  for (const line of typeof source === "string" ? exportLines(source) : source) v.check(line);
  return v.report;
}

/** {@link verifyExport} over an async iterable of lines (a stream of a file, `Client.exportLines()`, `Client.logEntries()`). */
export async function verifyExportAsync(source: AsyncIterable<ExportLine> | Iterable<ExportLine>, limits: Limits = DEFAULT_LIMITS): Promise<VerifyReport> {
  const v = new ExportVerifier(limits);
  for await (const line of source) v.check(typeof line === "string" && line.endsWith("\n") ? line.slice(0, -1) : line);
  return v.report;
}
