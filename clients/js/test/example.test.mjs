// examples/agent.mjs against a real server: every Intent is claimed, worked on and
// resolved by the agent's key, with the right result.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { Client, Key, propose } from "@nexus/client";
import { saveKey } from "@nexus/client/node";
import { Server, freshTopic, tempDir } from "./helpers.mjs";

const AGENT = fileURLToPath(new URL("../examples/agent.mjs", import.meta.url));

function run(args) {
  const proc = spawn(process.execPath, [AGENT, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => (err += d));
  const done = new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`the agent did not finish within 60 s:\n${out}\n${err}`));
    }, 60_000);
    proc.on("exit", (code) => {
      clearTimeout(t);
      resolve({ code, out, err });
    });
  });
  return done;
}

let server;
before(async () => (server = await Server.start("agent")));
after(async () => server?.close());

test("the agent loop resolves every Intent with the right result", async () => {
  const dir = tempDir("agent");
  const alice = Key.generate();
  const agentKey = Key.generate();
  const keyPath = await saveKey(agentKey, join(dir, "agent-key"));
  const topic = freshTopic();
  const jobs = { a: [1, 2, 3], b: [10, -4], c: [] };
  const c = new Client(server.url);
  await c.propose(propose(alice, `${topic}/a`, { numbers: jobs.a })); // in the backlog when the agent starts
  const finished = run(["--server", server.url, "--key", keyPath, "--topic", `${topic}/**`, "--max", "4"]);
  for (const n of ["b", "c"]) await c.propose(propose(alice, `${topic}/${n}`, { numbers: jobs[n] }));
  await c.propose(propose(alice, `${topic}/bad`, { numbers: "three" }));
  const { code, out, err } = await finished;
  assert.equal(code, 0, err);
  assert.equal(out.split("resolved ").length - 1, 4, out);
  const results = {};
  for await (const item of c.allIntents({ topic, state: "resolved" })) {
    assert.equal(item.state.by, agentKey.author);
    const f = (await c.record(item.state.fact)).record;
    assert.equal(f.author, agentKey.author);
    assert.deepEqual(f.resolves, { intent: item.record.hash, token: item.state.token });
    results[item.record.topic] = f.body;
  }
  assert.deepEqual(results, {
    [`${topic}/a`]: { status: "ok", sum: 6 },
    [`${topic}/b`]: { status: "ok", sum: 6 },
    [`${topic}/c`]: { status: "ok", sum: 0 },
    [`${topic}/bad`]: { status: "failed", error: "the body has no list of integers `numbers`" },
  });
});

test("the agent reports a missing key", async () => {
  const missing = join(tempDir("agent-nokey"), "none");
  const { code, err } = await run(["--server", server.url, "--key", missing]);
  assert.equal(code, 1);
  assert.match(err, /no key file here/);
});
