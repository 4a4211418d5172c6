/** The typed answers of {@link Client} (`nexus_wire::body`). */

import type { JsonObject } from "./canonical.js";
import type { Action, Record } from "./records.js";

/** Answer to a record submission (`POST /v1/intents|facts|hints`). */
export interface Submitted {
  hash: string;
  kind: string;
  duplicate: boolean;
  /** Its log position; `null` for a duplicate. */
  seq: number | null;
}

/** Answer to a claim or renewal. */
export interface Lease {
  intent: string;
  token: number;
  lease_until: number;
  takeover: boolean;
}

/** Answer to a withdrawal. */
export interface Withdrawn {
  intent: string;
  state: string;
}

/** Answer to a Hint's retraction. */
export interface Retracted {
  hint: string;
  seq: number | null;
}

/** What one item of a batch did (`POST /v1/batch`): its own route's answer, under the name of what it was. */
export type BatchResult =
  | { record: Submitted }
  | { lease: Lease }
  | { withdrawn: Withdrawn }
  | { retracted: Retracted };

/** An Intent's state with the members of that state. */
export interface IntentState {
  state: "available" | "claimed" | "resolved" | "withdrawn" | string;
  token: number;
  holder?: string;
  lease_until?: number;
  fact?: string;
  by?: string;
}

/** One Intent of a listing (its record verified). */
export interface IntentItem {
  record: Record;
  state: IntentState;
  priority: number;
}

export interface IntentPage {
  intents: IntentItem[];
  /** The cursor of the next page, `null` on the last. */
  next: string | null;
}

export interface FactPage {
  facts: Record[];
  next: string | null;
}

/** `GET /v1/records/{id}`: the record (verified), its kind and every link. */
export interface RecordInfo {
  record: Record;
  kind: string;
  parents: string[];
}

/** `GET /v1/records/{id}/provenance`: the root first, then its ancestors. */
export interface Provenance {
  root: string;
  records: Record[];
}

/** An active Hint (`GET /v1/hints`). */
export interface HintItem {
  hash: string;
  hint: Record;
}

/** One commit log entry: `seq`, commit time `at`, its record or action (verified), and `raw`, the entry as sent. */
export interface LogEntry {
  seq: number;
  at: number;
  record?: Record;
  action?: Action;
  /** The record or the action. */
  item: Record | Action;
  raw: JsonObject;
}

export interface LogPage {
  head: number;
  entries: LogEntry[];
}

/** `GET /v1/health`: `status` is `ok` or `degraded` (then `reason` and `message` say why). */
export interface Health {
  status: string;
  ok: boolean;
  log_head: number;
  deployment: string | null;
  reason?: string;
  message?: string;
}

export interface ContractRule {
  name: string;
  topic: string;
  threshold: number;
  within_ms: number | null;
}

/** `GET /v1/contract`: the version in force. */
export interface Contract {
  version: number;
  hash: string;
  name: string;
  source: string;
  rules: ContractRule[];
  upgrade_keys: string[];
  upgrade_quorum: JsonObject | null;
}

/** One deployment of `GET /v1/contract/history`. */
export interface ContractVersion {
  version: number;
  hash: string;
  name: string;
  deployer: string;
  at: number;
  deploy: string;
  approvals: string[];
  previous: string | null;
}

/** Answer to `POST /v1/contract`. */
export interface Deployed {
  hash: string;
  version: number;
  name: string;
  deploy: string;
  previous: string | null;
  approvals: string[];
  duplicate: boolean;
  seq: number | null;
}
