/**
 * Agent keys, in the key file format of the CLI and the Rust client:
 * `{"version":1,"seed":"<64 hex>","author":"<64 hex>"}`. A file holding nothing but the
 * 64 hex digits of the seed is accepted too. Reading and writing files is in the
 * `@nexus/client/node` entry (this module uses Web APIs only).
 */

import { KeyFileError } from "./errors.js";
import { fromHex, publicKey, sign, toHex } from "./crypto.js";
import type { Signer } from "./records.js";

const SEED = /^[0-9a-f]{64}$/;
const seeds = new WeakMap<Key, Uint8Array>();

/** An agent's Ed25519 signing key. `toString` and `JSON.stringify` show the author, never the seed. */
export class Key implements Signer {
  /** The public key records name as their author (64 hex digits). */
  readonly author: string;

  /** The key of a 32-byte seed. */
  constructor(seed: Uint8Array) {
    if (!(seed instanceof Uint8Array) || seed.length !== 32) throw new KeyFileError("a seed is 32 bytes");
    const copy = Uint8Array.from(seed);
    seeds.set(this, copy);
    this.author = publicKey(copy);
  }

  /** A fresh key from 32 bytes of the platform's cryptographic randomness. */
  static generate(): Key {
    return new Key(globalThis.crypto.getRandomValues(new Uint8Array(32)));
  }

  /** The key of a 64-hex-digit seed (e.g. a fixed test key). */
  static fromSeedHex(seedHex: string): Key {
    if (typeof seedHex !== "string" || !SEED.test(seedHex)) throw new KeyFileError("the seed must be 64 lowercase hex digits");
    return new Key(fromHex(seedHex));
  }

  /** The key in a key file's text (JSON, or bare seed hex); {@link KeyFileError} naming what is wrong. */
  static fromKeyFileText(text: string): Key {
    const trimmed = text.trim();
    let seedHex: unknown = trimmed;
    let author: unknown;
    if (trimmed.startsWith("{")) {
      let j: unknown;
      try {
        j = JSON.parse(trimmed);
      } catch (e) {
        throw new KeyFileError(`not a neXus key file: ${(e as Error).message}`);
      }
      const members = typeof j === "object" && j !== null && !Array.isArray(j) ? Object.keys(j).sort().join(",") : "";
      if (members !== "author,seed,version") {
        throw new KeyFileError('not a neXus key file: expected exactly the members "version", "seed" and "author"');
      }
      const o = j as { version: unknown; seed: unknown; author: unknown };
      if (o.version !== 1) throw new KeyFileError(`not a neXus key file: unsupported version ${JSON.stringify(o.version)}`);
      seedHex = o.seed;
      author = o.author;
    }
    if (typeof seedHex !== "string" || !SEED.test(seedHex)) throw new KeyFileError("not a neXus key file: the seed must be 64 lowercase hex digits");
    const key = Key.fromSeedHex(seedHex);
    if (author !== undefined && author !== key.author) {
      throw new KeyFileError(`not a neXus key file: the author ${String(author)} does not match the seed (which gives ${key.author})`);
    }
    return key;
  }

  /** The key file text: `{"version":1,"seed":…,"author":…}` and a newline. Keep it secret. */
  toKeyFileText(): string {
    return JSON.stringify({ version: 1, seed: this.seedHex, author: this.author }) + "\n";
  }

  /** The secret seed, as 64 hex digits. Keep it secret. */
  get seedHex(): string {
    return toHex(seeds.get(this)!);
  }

  /** Signs a FihHash (64 hex digits): the signature as 128 hex digits. */
  sign(hashHex: string): string {
    return sign(seeds.get(this)!, hashHex);
  }

  toString(): string {
    return `Key(author=${this.author})`;
  }

  toJSON(): { author: string } {
    return { author: this.author };
  }
}
