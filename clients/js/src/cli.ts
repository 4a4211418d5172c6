#!/usr/bin/env node
/**
 * `nexus-client verify EXPORT.jsonl`: exit 0 when the export verifies, 1 when it does
 * not (the first bad line is printed), 2 when it cannot be read. The same output as
 * `python -m nexus_client verify`.
 */

import { verifyExportFile } from "./node.js";
import { VerifyError } from "./verify.js";

function n(count: number, word: string, plural = word + "s"): string {
  return `${count} ${count === 1 ? word : plural}`;
}

async function main(argv: string[]): Promise<number> {
  const [command, file, ...rest] = argv;
  if (command !== "verify" || file === undefined || rest.length > 0 || file === "-h" || file === "--help") {
    console.error("usage: nexus-client verify EXPORT.jsonl");
    return 2;
  }
  try {
    const r = await verifyExportFile(file);
    console.log(`ok: ${n(r.lines, "entry", "entries")} verified (seq 1..${r.head})`);
    console.log(`  ${n(r.records, "record")}: ${n(r.intents, "intent")}, ${n(r.facts, "fact")} (${r.resolvingFacts} resolving), ${n(r.hints, "hint")}`);
    console.log(`  ${n(r.actions, "action")}: ${n(r.claims, "claim")}, ${n(r.renewals, "renewal")}, ${n(r.withdrawals, "withdrawal")}, ${n(r.retractions, "retraction")}`);
    return 0;
  } catch (e) {
    if (e instanceof VerifyError) {
      console.error(`error: ${file} does not verify: ${e.message}`);
      return 1;
    }
    const err = e as NodeJS.ErrnoException;
    if (typeof err.code === "string") {
      console.error(`error: cannot read ${file}: ${err.message}`);
      return 2;
    }
    throw e;
  }
}

process.exitCode = await main(process.argv.slice(2));
