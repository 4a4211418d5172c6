/**
 * Canonical JSON: RFC 8785 (JCS) restricted to integers in the i53 range (spec/README.md).
 *
 * {@link parseJson} reads JSON text keeping what canonicalisation must see: an integer
 * literal outside the safe range becomes a `bigint` (never a rounded number), a literal
 * with a fraction or an exponent, or `-0`, becomes a {@link NonInteger}; repeated member
 * names are refused. {@link canonicalText} encodes a value canonically or throws
 * {@link WireError} (`not_an_integer`, `out_of_range`, `too_deep`, `invalid_json`).
 */

import { WireError } from "./errors.js";

export const MAX_SAFE_INTEGER = 9007199254740991;

/** A JSON number literal that is not an integer (fraction, exponent or `-0`). */
export class NonInteger {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

/**
 * A JSON value as this package holds it. `bigint` is an integer literal outside
 * ±(2^53 − 1) (canonically refused, but seen exactly for the u64/i64 shape checks).
 */
export type JsonValue = null | boolean | number | bigint | string | NonInteger | JsonValue[] | JsonObject;
export interface JsonObject {
  [member: string]: JsonValue;
}

/** Parsing stops past this nesting (the wire limit is 32; this only protects the stack). */
const MAX_PARSE_DEPTH = 512;

const utf8Decoder = new TextDecoder("utf-8", { fatal: true });
const utf8Encoder = new TextEncoder();

/** UTF-8 bytes of a string. */
export function utf8(s: string): Uint8Array {
  return utf8Encoder.encode(s);
}

/** Sets a member without ever touching the prototype (`__proto__` is a name like any other). */
export function setMember(obj: JsonObject, name: string, value: JsonValue): void {
  if (name === "__proto__") {
    Object.defineProperty(obj, name, { value, enumerable: true, writable: true, configurable: true });
  } else {
    obj[name] = value;
  }
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;

class Parser {
  i = 0;
  constructor(readonly s: string) {}

  fail(what: string): never {
    throw new WireError("invalid_json", `${what} at offset ${this.i}`);
  }

  ws(): void {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) this.i++;
      else break;
    }
  }

  value(depth: number): JsonValue {
    this.ws();
    const c = this.s[this.i];
    if (c === "{" || c === "[") {
      if (depth >= MAX_PARSE_DEPTH) this.fail(`nested deeper than ${MAX_PARSE_DEPTH}`);
      return c === "{" ? this.object(depth) : this.array(depth);
    }
    if (c === '"') return this.string();
    if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) return this.number();
    for (const [word, v] of [["true", true], ["false", false], ["null", null]] as const) {
      if (this.s.startsWith(word, this.i)) {
        this.i += word.length;
        return v;
      }
    }
    return this.fail(c === undefined ? "unexpected end of input" : `unexpected ${JSON.stringify(c)}`);
  }

  object(depth: number): JsonObject {
    const obj: JsonObject = {};
    const seen = new Set<string>();
    this.i++;
    this.ws();
    if (this.s[this.i] === "}") {
      this.i++;
      return obj;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail("expected a member name");
      const name = this.string();
      if (seen.has(name)) this.fail(`duplicate member name ${JSON.stringify(name)}`);
      seen.add(name);
      this.ws();
      if (this.s[this.i] !== ":") this.fail("expected ':'");
      this.i++;
      setMember(obj, name, this.value(depth + 1));
      if (this.ended("}")) return obj;
    }
  }

  array(depth: number): JsonValue[] {
    const out: JsonValue[] = [];
    this.i++;
    this.ws();
    if (this.s[this.i] === "]") {
      this.i++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth + 1));
      if (this.ended("]")) return out;
    }
  }

  /** After a member or element: true at `close`, false after a `,`. */
  ended(close: "}" | "]"): boolean {
    this.ws();
    const c = this.s[this.i];
    if (c === close || c === ",") {
      this.i++;
      return c === close;
    }
    return this.fail(`expected ',' or '${close}'`);
  }

  string(): string {
    STRING.lastIndex = this.i;
    const m = STRING.exec(this.s);
    if (m === null) this.fail("invalid string");
    this.i += m[0].length;
    return JSON.parse(m[0]) as string;
  }

  number(): JsonValue {
    NUMBER.lastIndex = this.i;
    const m = NUMBER.exec(this.s);
    if (m === null) this.fail("invalid number");
    const text = m[0];
    this.i += text.length;
    if (m[1] !== undefined || m[2] !== undefined || text === "-0") return new NonInteger(text);
    const n = Number(text);
    return Number.isSafeInteger(n) ? n : BigInt(text);
  }
}

/**
 * Parses JSON text (or UTF-8 bytes). Integers stay exact (`bigint` beyond ±(2^53 − 1));
 * fractions, exponents and `-0` become {@link NonInteger}; repeated member names,
 * invalid UTF-8 and trailing data are refused (`invalid_json`).
 */
export function parseJson(input: string | Uint8Array): JsonValue {
  let text: string;
  if (typeof input === "string") {
    text = input;
  } else {
    try {
      text = utf8Decoder.decode(input);
    } catch {
      throw new WireError("invalid_json", "not valid UTF-8");
    }
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const p = new Parser(text);
  const v = p.value(0);
  p.ws();
  if (p.i !== text.length) p.fail("trailing data");
  return v;
}

const SHORT_ESCAPES: Record<number, string> = { 0x22: '\\"', 0x5c: "\\\\", 0x08: "\\b", 0x0c: "\\f", 0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t" };

function canonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const short = SHORT_ESCAPES[c];
    if (short !== undefined) out += short;
    else if (c < 0x20) out += "\\u" + c.toString(16).padStart(4, "0");
    else if (c >= 0xd800 && c <= 0xdfff) {
      const next = s.charCodeAt(i + 1);
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        out += s[i]! + s[i + 1]!;
        i++;
      } else {
        throw new WireError("invalid_json", "lone surrogate in a string");
      }
    } else out += s[i]!;
  }
  return out + '"';
}

/** Member names in canonical order: by UTF-16 code units, which is how JS compares strings. */
function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function canon(value: unknown, maxDepth: number | undefined, depth: number): string {
  if (value === null) return "null";
  if (value === true) return "true";
  if (value === false) return "false";
  if (value instanceof NonInteger) throw new WireError("not_an_integer", value.text);
  if (typeof value === "number") {
    if (!Number.isFinite(value) || !Number.isInteger(value) || Object.is(value, -0)) {
      throw new WireError("not_an_integer", String(Object.is(value, -0) ? "-0" : value));
    }
    if (!Number.isSafeInteger(value)) throw new WireError("out_of_range", String(value));
    return String(value);
  }
  if (typeof value === "bigint") {
    if (value > BigInt(MAX_SAFE_INTEGER) || value < -BigInt(MAX_SAFE_INTEGER)) throw new WireError("out_of_range", value.toString());
    return value.toString();
  }
  if (typeof value === "string") return canonString(value);
  if (typeof value === "object") {
    if (maxDepth !== undefined && depth >= maxDepth) throw new WireError("too_deep", `deeper than ${maxDepth}`);
    if (Array.isArray(value)) return "[" + value.map((v) => canon(v, maxDepth, depth + 1)).join(",") + "]";
    const proto = Object.getPrototypeOf(value) as unknown;
    if (proto !== Object.prototype && proto !== null) {
      const name = (value as { constructor?: { name?: string } }).constructor?.name ?? "object";
      throw new WireError("malformed", `not a JSON value: a ${name} (only plain objects, arrays, strings, integers, booleans and null)`);
    }
    const obj = value as Record<string, unknown>;
    const names = Object.keys(obj).sort(byCodeUnits);
    return "{" + names.map((k) => canonString(k) + ":" + canon(obj[k], maxDepth, depth + 1)).join(",") + "}";
  }
  throw new WireError("malformed", `not a JSON value: ${String(value)} (${typeof value})`);
}

/** The canonical encoding of `value`. `maxDepth` bounds the nesting of arrays and objects (`too_deep` past it). */
export function canonicalText(value: unknown, maxDepth?: number): string {
  return canon(value, maxDepth, 0);
}

/** {@link canonicalText} as UTF-8 bytes. */
export function canonicalBytes(value: unknown, maxDepth?: number): Uint8Array {
  return utf8(canon(value, maxDepth, 0));
}

/** `value` as canonical JSON for an error message, or as `String(value)` when it has none. */
export function jsonForMessage(value: unknown): string {
  try {
    return canon(value, undefined, 0);
  } catch {
    return String(value);
  }
}
