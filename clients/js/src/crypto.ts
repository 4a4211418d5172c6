/**
 * FihHash (BLAKE3 derive_key), Ed25519 signing, and strict verification.
 *
 * Verification is strict as ed25519-dalek's `verify_strict` (spec/README.md,
 * "Signatures"): S < L, the author key and R canonical curve points not of small order,
 * and the recomputed R = [S]B − [k]A compared by encoding (no cofactor). It is written on
 * noble's point arithmetic rather than noble's `verify`, whose checks differ (ZIP-215 by
 * default, cofactored, no small-order refusal).
 */

import { ed25519 } from "@noble/curves/ed25519.js";
import { blake3 } from "@noble/hashes/blake3.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { utf8 } from "./canonical.js";

export const HASH_CONTEXT = "neXus 2026-11 FihHash v1";
/** `"neXus sig v1\0"`, signed before the 32 raw hash bytes. */
export const SIG_DOMAIN: Uint8Array = utf8("neXus sig v1\u0000");
/** The order of the Ed25519 base point. */
export const L = 2n ** 252n + 27742317777372353535851937790883648493n;

const CONTEXT_BYTES = utf8(HASH_CONTEXT);
const Point = ed25519.Point;
type Point = InstanceType<typeof Point>;

const HEX = /^[0-9a-f]*$/;

/** Lowercase hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Bytes of lowercase hex (throws `TypeError` on anything else). */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !HEX.test(hex)) throw new TypeError(`not lowercase hex: ${JSON.stringify(hex)}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** The FihHash of canonical bytes, as 64 lowercase hex digits. */
export function fihHash(canonical: Uint8Array): string {
  return toHex(blake3(canonical, { context: CONTEXT_BYTES }));
}

function decode(enc: Uint8Array, canonical: boolean): Point | undefined {
  try {
    return Point.fromBytes(enc, !canonical);
  } catch {
    return undefined;
  }
}

/** True when `author` (32 bytes) decodes to a curve point (what the wire shape requires). */
export function isAuthorKey(author: Uint8Array): boolean {
  return author.length === 32 && decode(author, false) !== undefined;
}

function message(hashHex: string): Uint8Array {
  const h = fromHex(hashHex);
  if (h.length !== 32) throw new TypeError("a FihHash is 32 bytes");
  const m = new Uint8Array(SIG_DOMAIN.length + 32);
  m.set(SIG_DOMAIN);
  m.set(h, SIG_DOMAIN.length);
  return m;
}

function leToBigint(bytes: Uint8Array): bigint {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]!);
  return n;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

/** Strict Ed25519 verification of `sig` (64 bytes) by `author` (32 bytes) over the signed message for `hashHex`. */
export function verifyStrict(author: Uint8Array, hashHex: string, sig: Uint8Array): boolean {
  if (sig.length !== 64 || author.length !== 32) return false;
  const a = decode(author, true);
  const rBytes = sig.subarray(0, 32);
  const r = decode(rBytes, true);
  if (a === undefined || r === undefined || a.isSmallOrder() || r.isSmallOrder()) return false;
  const s = leToBigint(sig.subarray(32));
  if (s >= L) return false;
  const m = message(hashHex);
  const kInput = new Uint8Array(64 + m.length);
  kInput.set(rBytes);
  kInput.set(author, 32);
  kInput.set(m, 64);
  const k = leToBigint(sha512(kInput)) % L;
  const sb = s === 0n ? Point.ZERO : Point.BASE.multiply(s);
  const ka = k === 0n ? Point.ZERO : a.multiplyUnsafe(k);
  return equalBytes(sb.subtract(ka).toBytes(), rBytes);
}

/** The signature (128 hex digits) of the key with 32-byte `seed` over `hashHex`. */
export function sign(seed: Uint8Array, hashHex: string): string {
  return toHex(ed25519.sign(message(hashHex), seed));
}

/** The author key (64 hex digits) of the 32-byte `seed`. */
export function publicKey(seed: Uint8Array): string {
  return toHex(ed25519.getPublicKey(seed));
}
