// The neXus provenance explorer (read-only): a live feed of commits (the event stream),
// the Intent board, the provenance DAG of any record, the Hints in force, and a verdict
// on every record shown (hash recomputed, Ed25519 signature checked in the browser).
import { ApiError, type Client } from "../../clients/js/src/index.js";
import { client, counts, member, onTally, readToken, saveToken, short } from "./api.js";
import { Board } from "./board.js";
import { Dag } from "./dag.js";
import { renderHints } from "./hints.js";

const FEED_MAX = 100;

function el<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (e === null) throw new Error(`the page has no #${id}`);
  return e as T;
}

function status(text: string, bad = false): void {
  const s = el("status");
  s.textContent = text;
  s.className = bad ? "bad" : "";
}

function describeError(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function needsToken(e: unknown): boolean {
  return e instanceof ApiError && e.status === 401;
}

async function start(c: Client): Promise<void> {
  const dag = new Dag(c, el("dag"), el("detail"), el("dag-root"));
  const open = (id: string) => {
    const params = new URLSearchParams(location.hash.slice(1));
    params.set("record", id);
    history.replaceState(null, "", `#${params.toString()}`);
    void dag.show(id).catch((e: unknown) => dag.fail(e));
  };
  const board = new Board(c, el("board"), open);
  const hintsHost = el("hints");
  const hints = () => renderHints(c, hintsHost, open).catch((e: unknown) => status(`hints: ${describeError(e)}`, true));
  el<HTMLFormElement>("goto").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = el<HTMLInputElement>("goto-id").value.trim();
    if (id) open(id);
  });
  onTally(() => {
    const [ok, bad] = counts();
    const v = el("verdicts");
    v.textContent = `${ok} records verified${bad ? `, ${bad} FAILING` : ""}`;
    v.className = bad ? "bad" : "ok";
  });
  const health = await c.getJson("/v1/health");
  const head = Number(member(health, "log_head") ?? 0);
  await Promise.all([board.refresh(), hints()]);
  const wanted = () => new URLSearchParams(location.hash.slice(1)).get("record");
  const first = wanted();
  if (first) open(first);
  // A link or a typed address `#record=ID` shows that record.
  window.addEventListener("hashchange", () => {
    const id = wanted();
    if (id) open(id);
  });
  status(`${location.host} · deployment ${String(member(health, "deployment") ?? "?")} · live`);
  const feed = el("feed");
  const stream = c.events({ from: Math.max(1, head - FEED_MAX + 1) });
  for await (const entry of stream) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    const item = entry.item;
    const topic = "topic" in item ? (item as { topic?: string }).topic : undefined;
    // Entries of the stream are verified by the client (it refuses one that is not).
    b.textContent = `✓ #${entry.seq} ${item.kind} ${short(item.hash)} ${topic ?? ""}`;
    const target = entry.record !== undefined ? item.hash : String(member(entry.raw["action"] ?? null, "intent") ?? member(entry.raw["action"] ?? null, "hint") ?? "");
    b.addEventListener("click", () => open(target));
    li.dataset["seq"] = String(entry.seq);
    li.append(b);
    feed.prepend(li);
    while (feed.children.length > FEED_MAX) feed.lastElementChild?.remove();
    board.soon();
    if (item.kind === "hint" || item.kind === "retract" || (topic ?? "").startsWith("nexus/contract")) void hints();
    status(`${location.host} · live · seq ${entry.seq}`);
  }
}

function main(): void {
  const form = el<HTMLFormElement>("token-form");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    saveToken(el<HTMLInputElement>("token").value.trim());
    location.reload();
  });
  start(client(readToken())).catch((e: unknown) => {
    if (needsToken(e)) {
      status("this server needs a read token", true);
      form.hidden = false;
      el<HTMLInputElement>("token").focus();
    } else {
      status(`error: ${describeError(e)}`, true);
    }
  });
}

main();
