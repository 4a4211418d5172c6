#!/usr/bin/env node
// An example agent: watch → claim → work → resolve.
//
// It follows the server's event stream for Intents under a topic glob, claims each one
// (losing a race to another agent is normal: it moves on), does the work (here, summing
// the `numbers` of the Intent's body) and submits a Fact that resolves the Intent with
// the claim's fencing token. A lease longer than the work means no renewal is needed.
//
//   node examples/agent.mjs --server http://127.0.0.1:7878 --topic 'demo/**'
//   # in another shell:
//   nexus intent propose demo/sum --body '{"numbers": [1, 2, 3]}'
import { parseArgs } from "node:util";
import { ApiError, Client, NexusError, claim, fact } from "@nexus/client";
import { loadKey } from "@nexus/client/node";

const SKIPPED = new Set(["already_claimed", "already_resolved", "withdrawn", "inadmissible"]);

/** The agent's job: sum the integers of `numbers`. */
function work(body) {
  const numbers = body !== null && typeof body === "object" ? body.numbers : undefined;
  if (!Array.isArray(numbers) || !numbers.every((n) => Number.isInteger(n))) {
    return { status: "failed", error: "the body has no list of integers `numbers`" };
  }
  return { status: "ok", sum: numbers.reduce((a, b) => a + b, 0) };
}

/** Claims, works on and resolves one Intent; false when another agent has it. */
async function handle(client, key, intent, leaseMs) {
  let lease;
  try {
    lease = await client.claim(claim(key, await client.deployment(), intent, leaseMs));
  } catch (e) {
    if (e instanceof ApiError && SKIPPED.has(e.code)) {
      console.log(`skip ${intent.hash.slice(0, 12)}: ${e.code}`);
      return false;
    }
    throw e;
  }
  const result = work(intent.body);
  const answer = fact(key, intent.topic, result, [intent], { resolves: { intent, token: lease.token } });
  await client.submitFact(answer);
  console.log(`resolved ${intent.hash.slice(0, 12)} (token ${lease.token}) with ${answer.hash.slice(0, 12)}: ${JSON.stringify(result)}`);
  return true;
}

async function main() {
  const { values: args } = parseArgs({
    options: {
      server: { type: "string", default: "http://127.0.0.1:7878" },
      key: { type: "string" }, // default: $NEXUS_HOME/key, else ~/.config/nexus/key
      topic: { type: "string", default: "demo/**" },
      "lease-ms": { type: "string", default: "30000" },
      max: { type: "string", default: "0" }, // stop after resolving this many Intents (0: never)
    },
  });
  const max = Number(args.max);
  try {
    const key = await loadKey(args.key);
    const client = new Client(args.server);
    console.log(`agent ${key.author.slice(0, 12)} watching ${args.topic} on ${args.server}`);
    let done = 0;
    for await (const entry of client.events({ topic: args.topic })) {
      if (entry.record === undefined || entry.record.kind !== "intent") continue;
      if (await handle(client, key, entry.record, Number(args["lease-ms"]))) {
        done++;
        if (done === max) return 0;
      }
    }
  } catch (e) {
    if (e instanceof NexusError) {
      console.error(`error: ${e.message}`);
      return 1;
    }
    throw e;
  }
  return 0;
}

process.exitCode = await main();
