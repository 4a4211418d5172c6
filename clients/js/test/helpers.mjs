// The real `nexus serve` (NEXUS_BIN, default <repo>/target/debug/nexus) for the tests.
import { spawn, spawnSync } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const LISTENING = "nexus listening on ";

export function nexusBin() {
  const p = process.env.NEXUS_BIN || join(REPO, "target", "debug", "nexus");
  try {
    accessSync(p, constants.X_OK);
  } catch {
    throw new Error(`no nexus binary at ${p}: build it (cargo build -p nexus) or set NEXUS_BIN`);
  }
  return p;
}

const made = [];
process.on("exit", () => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** A fresh directory under the system's temporary one, removed when the test process exits. */
export function tempDir(name) {
  const d = mkdtempSync(join(tmpdir(), `nexus-js-${name}-`));
  made.push(d);
  return d;
}

/** One `nexus serve --open` on a data directory of its own, on 127.0.0.1. */
export class Server {
  constructor(data) {
    this.data = data;
    this.url = "";
    this.proc = undefined;
    this.stderr = "";
  }

  static async start(name = "srv") {
    const dir = tempDir(name);
    const s = new Server(join(dir, "data"));
    s.dir = dir;
    await s.start();
    return s;
  }

  start(addr = "127.0.0.1:0") {
    const args = ["serve", "--data", this.data, "--addr", addr, "--open"];
    const proc = spawn(nexusBin(), args, { stdio: ["ignore", "pipe", "pipe"] });
    this.proc = proc;
    proc.stderr.on("data", (d) => (this.stderr = (this.stderr + d).slice(-4000)));
    return new Promise((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => fail("no `nexus listening on` within 30 s"), 30_000);
      const fail = (why) => {
        clearTimeout(timer);
        proc.kill("SIGKILL");
        reject(new Error(`nexus ${args.join(" ")}: ${why}\n${this.stderr}`));
      };
      proc.on("exit", (code) => fail(`exited with ${code}`));
      proc.stdout.on("data", (d) => {
        out += d;
        const line = out.split("\n").find((l) => l.startsWith(LISTENING));
        if (line !== undefined) {
          clearTimeout(timer);
          proc.removeAllListeners("exit");
          this.url = line.slice(LISTENING.length).trim();
          resolve(this);
        }
      });
    });
  }

  async stop() {
    const proc = this.proc;
    this.proc = undefined;
    if (proc === undefined || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    proc.kill("SIGTERM");
    const t = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(t);
  }

  /** Stops and starts the server again on the same address and data. */
  async restart() {
    const addr = this.url.replace(/^http:\/\//, "");
    await this.stop();
    await this.start(addr);
  }

  async close() {
    await this.stop();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }

  /** Runs the nexus CLI against this server. */
  cli(args, { check = true } = {}) {
    const r = spawnSync(nexusBin(), args, { encoding: "utf8", env: { ...process.env, NEXUS_SERVER: this.url }, timeout: 60_000 });
    if (check && r.status !== 0) throw new Error(`nexus ${args.join(" ")} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
    return r;
  }
}

let n = 0;
/** A topic no other test uses. */
export function freshTopic() {
  return `jstest/${process.pid}-${Date.now().toString(36)}-${n++}`;
}
