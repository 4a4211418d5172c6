/**
 * Node-only helpers (`@nexus/client/node`): key files on disk, in the CLI's format and
 * locations, and verification of an export file read line by line.
 *
 * A key file is written with mode 0600 (its directory, when created, 0700); one that
 * group or others may read is refused on load. The default location is
 * `$NEXUS_HOME/key` when `NEXUS_HOME` is set and not empty, else `~/.config/nexus/key`.
 */

import { createReadStream } from "node:fs";
import { chmod, link, mkdir, open, rename, rm, stat, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { KeyFileError } from "./errors.js";
import { Key } from "./keys.js";
import { DEFAULT_LIMITS, type Limits } from "./records.js";
import { type VerifyReport, ExportVerifier } from "./verify.js";

export const KEY_FILE_NAME = "key";
export const MAX_KEY_FILE_BYTES = 4096;

/** `$NEXUS_HOME/key` when `NEXUS_HOME` is set and not empty, else `$HOME/.config/nexus/key`. */
export function defaultKeyPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env["NEXUS_HOME"]) return join(env["NEXUS_HOME"], KEY_FILE_NAME);
  if (!env["HOME"]) throw new KeyFileError("cannot find a default key location: set NEXUS_HOME (or HOME)");
  return join(env["HOME"], ".config", "nexus", KEY_FILE_NAME);
}

function errnoMessage(e: unknown): string {
  return (e as Error).message ?? String(e);
}

/** Loads a key file (JSON, or bare seed hex); the default path when `path` is omitted. */
export async function loadKey(path?: string): Promise<Key> {
  const p = path ?? defaultKeyPath();
  let st;
  try {
    st = await stat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new KeyFileError("no key file here (create one with `nexus keygen`)", p);
    throw new KeyFileError(errnoMessage(e), p);
  }
  if (!st.isFile()) throw new KeyFileError("not a neXus key file: not a regular file", p);
  const mode = st.mode & 0o777;
  if (process.platform !== "win32" && (mode & 0o077) !== 0) {
    throw new KeyFileError(`the key file is readable by group or others (mode ${mode.toString(8)}); run \`chmod 600\` on it`, p);
  }
  if (st.size > MAX_KEY_FILE_BYTES) throw new KeyFileError(`not a neXus key file: ${st.size} bytes is too large for a key file`, p);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(await readFile(p));
  } catch (e) {
    throw new KeyFileError(`not a neXus key file: ${errnoMessage(e)}`, p);
  }
  try {
    return Key.fromKeyFileText(text);
  } catch (e) {
    throw new KeyFileError((e as Error).message, p);
  }
}

async function writeNewPrivate(path: string, data: string): Promise<void> {
  const fh = await open(path, "wx", 0o600);
  try {
    await fh.chmod(0o600); // regardless of the umask
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes `key` (mode 0600) to `path` (default: {@link defaultKeyPath}), creating missing
 * directories (mode 0700). An existing file is an error unless `overwrite`, which
 * replaces it atomically. Answers the path.
 */
export async function saveKey(key: Key, path?: string, opts: { overwrite?: boolean } = {}): Promise<string> {
  const p = path ?? defaultKeyPath();
  const data = key.toKeyFileText();
  try {
    await mkdir(dirname(p), { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new KeyFileError(errnoMessage(e), dirname(p));
  }
  const tmp = `${p}.tmp-${process.pid}-${Date.now()}`;
  try {
    await writeNewPrivate(tmp, data);
    if (opts.overwrite) {
      await rename(tmp, p);
    } else {
      // link() fails when `p` exists, so no existing key is ever replaced.
      await link(tmp, p);
      await rm(tmp);
    }
  } catch (e) {
    await rm(tmp, { force: true });
    if ((e as NodeJS.ErrnoException).code === "EEXIST") throw new KeyFileError("a key file already exists (refusing to overwrite it)", p);
    throw new KeyFileError(errnoMessage(e), p);
  }
  await chmod(p, 0o600);
  return p;
}

/** Verifies an export file, reading it line by line (see `verifyExport`). */
export async function verifyExportFile(path: string, limits: Limits = DEFAULT_LIMITS): Promise<VerifyReport> {
  const v = new ExportVerifier(limits);
  const lines = createInterface({ input: createReadStream(path), crlfDelay: Infinity });
  try {
    for await (const line of lines) v.check(line);
  } finally {
    lines.close();
  }
  return v.report;
}
