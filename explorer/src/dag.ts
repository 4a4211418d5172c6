// The provenance DAG: records as nodes, their links (parents, the Intent a Fact
// resolves, the Facts behind a Hint) as edges, laid out by dagre (layered, for DAGs).
// A node whose links are not all loaded can be expanded (click, Enter or Space): its
// own provenance is fetched and merged in.
import { graphlib, layout } from "@dagrejs/dagre";
import type { Client, JsonValue } from "../../clients/js/src/index.js";
import { member, short, verdict, type Verdict } from "./api.js";

interface Node {
  hash: string;
  wire: JsonValue;
  verdict: Verdict;
}

const SVG = "http://www.w3.org/2000/svg";
const W = 168;
const H = 38;

/** The links of a record's wire form: parents, `resolves.intent`, `source.facts`. */
export function links(wire: JsonValue): string[] {
  const out: string[] = [];
  const parents = member(wire, "parents");
  if (Array.isArray(parents)) for (const p of parents) if (typeof p === "string") out.push(p);
  const intent = member(member(wire, "resolves"), "intent");
  if (typeof intent === "string") out.push(intent);
  const facts = member(member(wire, "source"), "facts");
  if (Array.isArray(facts)) for (const f of facts) if (typeof f === "string") out.push(f);
  // A Fact names the Intent it resolves as a parent too: one edge.
  return [...new Set(out)];
}

/** The DAG view in `host`, details of the selected record in `detail`. */
export class Dag {
  private nodes = new Map<string, Node>();
  private root: string | undefined;
  private selected: string | undefined;

  constructor(
    private readonly client: Client,
    private readonly host: HTMLElement,
    private readonly detail: HTMLElement,
    private readonly title: HTMLElement,
  ) {}

  /** Shows the provenance of `id` (a hash or prefix), replacing what was shown. */
  async show(id: string): Promise<void> {
    this.nodes.clear();
    this.root = undefined;
    this.selected = undefined;
    const root = await this.load(id);
    this.root = root;
    this.selected = root;
    this.title.textContent = `of ${short(root)}`;
    this.render();
  }

  /** Fetches the provenance of `id` and merges it in; answers the root's hash. */
  private async load(id: string): Promise<string> {
    const body = await this.client.getJson(`/v1/records/${encodeURIComponent(id)}/provenance?depth=3`);
    const root = member(body, "root");
    const records = member(body, "records");
    if (typeof root !== "string" || !Array.isArray(records)) throw new Error("not a provenance answer");
    for (const wire of records) {
      const hash = member(wire, "hash");
      if (typeof hash === "string" && !this.nodes.has(hash)) this.nodes.set(hash, { hash, wire, verdict: verdict(wire) });
    }
    return root;
  }

  private async expand(hash: string): Promise<void> {
    this.selected = hash;
    if (links(this.nodes.get(hash)?.wire ?? null).some((l) => !this.nodes.has(l))) await this.load(hash);
    this.render();
    const g = this.host.querySelector<SVGGElement>(`g.node[data-hash="${hash}"]`);
    g?.focus();
  }

  private render(): void {
    const g = new graphlib.Graph();
    g.setGraph({ rankdir: "TB", nodesep: 18, ranksep: 36, marginx: 8, marginy: 8 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const n of this.nodes.values()) g.setNode(n.hash, { width: W, height: H });
    const edges: Array<[string, string]> = [];
    for (const n of this.nodes.values()) {
      for (const l of links(n.wire)) {
        if (this.nodes.has(l)) {
          g.setEdge(l, n.hash);
          edges.push([n.hash, l]);
        }
      }
    }
    layout(g);
    const graph = g.graph();
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("width", String(Math.ceil(graph.width ?? W)));
    svg.setAttribute("height", String(Math.ceil(graph.height ?? H)));
    svg.setAttribute("role", "group");
    svg.setAttribute("aria-label", `provenance graph of ${this.nodes.size} records`);
    for (const [from, to] of edges) {
      const e = g.edge(to, from);
      const path = document.createElementNS(SVG, "path");
      path.setAttribute("class", "edge");
      path.setAttribute("data-from", from);
      path.setAttribute("data-to", to);
      path.setAttribute("d", (e.points ?? []).map((p, i) => `${i ? "L" : "M"}${p.x},${p.y}`).join(" "));
      svg.append(path);
    }
    for (const n of this.nodes.values()) {
      const pos = g.node(n.hash);
      const kind = String(member(n.wire, "kind") ?? "?");
      const more = links(n.wire).some((l) => !this.nodes.has(l));
      const el = document.createElementNS(SVG, "g");
      el.setAttribute("class", `node ${kind}${n.verdict.ok ? "" : " bad"}${n.hash === this.root ? " root" : ""}`);
      el.setAttribute("data-hash", n.hash);
      el.setAttribute("data-verdict", n.verdict.ok ? "ok" : "bad");
      el.setAttribute("tabindex", "0");
      el.setAttribute("role", "button");
      el.setAttribute("aria-label", `${kind} ${short(n.hash)}, ${n.verdict.ok ? "verified" : "fails verification"}${more ? ", expandable" : ""}`);
      el.setAttribute("transform", `translate(${pos.x - W / 2},${pos.y - H / 2})`);
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("width", String(W));
      rect.setAttribute("height", String(H));
      rect.setAttribute("rx", "5");
      const t1 = document.createElementNS(SVG, "text");
      t1.setAttribute("x", "6");
      t1.setAttribute("y", "15");
      t1.textContent = `${n.verdict.ok ? "✓" : "✗"} ${kind} ${short(n.hash)}${more ? " +" : ""}`;
      const t2 = document.createElementNS(SVG, "text");
      t2.setAttribute("x", "6");
      t2.setAttribute("y", "30");
      const topic = member(n.wire, "topic");
      const status = member(member(n.wire, "body"), "status");
      t2.textContent = `${typeof topic === "string" ? topic.split("/").slice(-1)[0] : String(member(n.wire, "effect") ?? "")}${typeof status === "string" ? ` · ${status}` : ""}`.slice(0, 24);
      el.append(rect, t1, t2);
      const act = () => {
        void this.expand(n.hash).catch((e: unknown) => this.fail(e));
      };
      el.addEventListener("click", act);
      el.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          act();
        }
      });
      svg.append(el);
    }
    this.host.replaceChildren(svg);
    this.describe();
  }

  private describe(): void {
    const n = this.selected === undefined ? undefined : this.nodes.get(this.selected);
    if (n === undefined) {
      this.detail.textContent = "";
      return;
    }
    const head = n.verdict.ok ? `✓ verified: ${n.verdict.why}` : `✗ FAILS VERIFICATION: ${n.verdict.why}`;
    this.detail.className = n.verdict.ok ? "" : "bad";
    this.detail.textContent = `${head}\n${JSON.stringify(n.wire, null, 2)}`;
  }

  /** Shows an error in the detail pane. */
  fail(e: unknown): void {
    this.detail.className = "bad";
    this.detail.textContent = `error: ${e instanceof Error ? e.message : String(e)}`;
  }
}
