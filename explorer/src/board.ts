// The Intent board: one column per state, holders and lease countdowns for claims,
// each Intent's record verified as received. Refreshed when commits arrive.
import type { Client, JsonValue } from "../../clients/js/src/index.js";
import { member, short, verdict } from "./api.js";

const STATES = ["available", "claimed", "resolved", "withdrawn"] as const;
const PAGE = 100;

/** Renders the board into `host`; `open(id)` shows a record's provenance. */
export class Board {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly client: Client,
    private readonly host: HTMLElement,
    private readonly open: (id: string) => void,
  ) {
    setInterval(() => this.tick(), 500);
  }

  /** Refreshes soon (commits come in bursts: one refresh per 300 ms at most). */
  soon(): void {
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.refresh();
    }, 300);
  }

  /** Reads every state's first page and redraws. */
  async refresh(): Promise<void> {
    if (this.running !== undefined) return this.running;
    this.running = (async () => {
      const pages = await Promise.all(STATES.map((s) => this.client.getJson(`/v1/intents?state=${s}&limit=${PAGE}`)));
      const cols = STATES.map((state, i) => this.column(state, pages[i] ?? null));
      this.host.replaceChildren(...cols);
      this.tick();
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private column(state: string, page: JsonValue): HTMLElement {
    const items = member(page, "intents");
    const list = Array.isArray(items) ? items : [];
    const more = member(page, "next") !== null && member(page, "next") !== undefined;
    const col = document.createElement("div");
    col.className = "column";
    col.dataset["state"] = state;
    const h = document.createElement("h3");
    h.textContent = `${state} (${list.length}${more ? "+" : ""})`;
    h.dataset["count"] = String(list.length);
    const ol = document.createElement("ol");
    for (const item of list) {
      const wire = member(item, "record");
      const st = member(item, "state");
      const v = verdict(wire);
      const hash = String(member(wire, "hash") ?? "");
      const b = document.createElement("button");
      b.className = "intent";
      b.type = "button";
      const topic = String(member(wire, "topic") ?? "");
      let text = `${v.ok ? "✓" : "✗"} ${short(hash)} ${topic}`;
      const holder = member(st, "holder");
      if (typeof holder === "string") text += ` @${holder.slice(0, 6)}`;
      b.textContent = text;
      b.title = v.ok ? topic : `fails verification: ${v.why}`;
      if (!v.ok) b.classList.add("bad");
      const until = member(st, "lease_until");
      if (typeof until === "number") {
        const c = document.createElement("span");
        c.className = "countdown";
        c.dataset["until"] = String(until);
        b.append(" ", c);
      }
      const fact = member(st, "fact");
      // A resolved Intent is shown through the Fact that resolved it: its DAG holds both.
      b.addEventListener("click", () => this.open(typeof fact === "string" ? fact : hash));
      const li = document.createElement("li");
      li.append(b);
      ol.append(li);
    }
    col.append(h, ol);
    return col;
  }

  private tick(): void {
    const now = Date.now();
    for (const c of this.host.querySelectorAll<HTMLElement>(".countdown")) {
      const left = Number(c.dataset["until"]) - now;
      c.textContent = left > 0 ? `${(left / 1000).toFixed(1)}s` : "lapsed";
    }
  }
}
