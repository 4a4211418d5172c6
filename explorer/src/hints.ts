// The Hints in force: effect, selector, reason, and where each came from (the
// contract and rule, and the Facts that triggered it, each one click from its DAG).
import type { Client } from "../../clients/js/src/index.js";
import { member, short, verdict } from "./api.js";

/** Renders the Hints in force into `host`. */
export async function renderHints(client: Client, host: HTMLElement, open: (id: string) => void): Promise<void> {
  const body = await client.getJson("/v1/hints");
  const hints = member(body, "hints");
  const items: HTMLElement[] = [];
  for (const h of Array.isArray(hints) ? hints : []) {
    const wire = member(h, "hint");
    const v = verdict(wire);
    const li = document.createElement("li");
    li.dataset["hash"] = String(member(wire, "hash") ?? "");
    const effect = member(wire, "effect");
    const sel = member(wire, "selector");
    const head = document.createElement("div");
    const mark = document.createElement("span");
    mark.className = v.ok ? "ok" : "bad";
    mark.textContent = v.ok ? "✓" : "✗ fails verification";
    mark.title = v.why;
    head.append(mark, ` ${typeof effect === "string" ? effect : JSON.stringify(effect)} ${JSON.stringify(sel)} — ${String(member(wire, "reason") ?? "")}`);
    li.append(head);
    const src = member(wire, "source");
    if (src !== undefined) {
      const from = document.createElement("div");
      from.textContent = `contract ${short(member(src, "contract"))}, rule ${String(member(src, "rule") ?? "?")}, Facts: `;
      const facts = member(src, "facts");
      for (const f of Array.isArray(facts) ? facts : []) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "hint-fact inline";
        b.textContent = short(f);
        b.addEventListener("click", () => open(String(f)));
        from.append(b, " ");
      }
      li.append(from);
    } else {
      const by = document.createElement("div");
      by.textContent = `posted by ${short(member(wire, "author"))}`;
      li.append(by);
    }
    const show = document.createElement("button");
    show.type = "button";
    show.textContent = "provenance";
    show.addEventListener("click", () => open(String(member(wire, "hash"))));
    li.append(show);
    items.push(li);
  }
  if (items.length === 0) {
    const li = document.createElement("li");
    li.textContent = "none";
    items.push(li);
  }
  host.replaceChildren(...items);
}
