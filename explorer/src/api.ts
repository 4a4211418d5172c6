// The explorer's connection to the server it was served by: same origin only, with an
// optional read token taken from the URL fragment (`#token=…`, never sent anywhere:
// fragments stay in the browser) or typed in the page, kept in sessionStorage.
import { Client, checkWire, type JsonValue, type WireType } from "../../clients/js/src/index.js";

const TOKEN_KEY = "nexus-explorer-token";

/** The token from `#token=…` (then removed from the address bar) or this tab's storage. */
export function readToken(): string | undefined {
  const params = new URLSearchParams(location.hash.slice(1));
  const t = params.get("token");
  if (t) {
    sessionStorage.setItem(TOKEN_KEY, t);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
}

/** Keeps `token` for this tab. */
export function saveToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

/** A client for this page's own origin. */
export function client(token: string | undefined): Client {
  return new Client(location.origin, token ? { token } : {});
}

/** The verdict on one wire form: its hash recomputed and its signature checked (strict Ed25519). */
export interface Verdict {
  ok: boolean;
  why: string;
}

const tally = { ok: 0, bad: 0, seen: new Set<string>() };
const listeners: Array<() => void> = [];

/** Checks a record or action as received and counts it once in the page's tally. */
export function verdict(wire: JsonValue | undefined, ty: WireType = "record"): Verdict {
  const c = checkWire(wire, ty);
  const v: Verdict = c.error === undefined ? { ok: true, why: "hash and signature verify" } : { ok: false, why: c.error.message };
  const key = `${ty}:${JSON.stringify(wire)}`;
  if (!tally.seen.has(key)) {
    tally.seen.add(key);
    if (v.ok) tally.ok++;
    else tally.bad++;
    for (const l of listeners) l();
  }
  return v;
}

/** `[verified, failing]` records shown so far. */
export function counts(): [number, number] {
  return [tally.ok, tally.bad];
}

/** Calls `f` whenever the tally changes. */
export function onTally(f: () => void): void {
  listeners.push(f);
}

/** A JSON object's member (or undefined). */
export function member(v: JsonValue | undefined, k: string): JsonValue | undefined {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as { [k: string]: JsonValue })[k] : undefined;
}

/** The first 12 hex digits of a hash or key. */
export function short(h: unknown): string {
  return typeof h === "string" ? h.slice(0, 12) : "?";
}
