// Every vector of spec/vectors.json through the package's own code.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  DEFAULT_LIMITS, HASH_CONTEXT, Key, MAX_SAFE_INTEGER, SIG_DOMAIN, WireError,
  canonicalText, checkWire, fihHash, parseJson, parseWire, toHex, utf8,
} from "../dist/index.js";

const DOC = parseJson(readFileSync(new URL("../../../spec/vectors.json", import.meta.url)));

test("the header matches the package", () => {
  assert.equal(DOC.version, 2);
  assert.equal(DOC.hash_context, HASH_CONTEXT);
  assert.equal(DOC.sig_domain_hex, toHex(SIG_DOMAIN));
  assert.equal(DOC.max_safe_integer, MAX_SAFE_INTEGER);
  assert.deepEqual(DOC.limits, {
    max_body_bytes: DEFAULT_LIMITS.maxBodyBytes,
    max_json_depth: DEFAULT_LIMITS.maxJsonDepth,
    max_parents: DEFAULT_LIMITS.maxParents,
    max_reason_bytes: DEFAULT_LIMITS.maxReasonBytes,
    max_selector_bytes: DEFAULT_LIMITS.maxSelectorBytes,
  });
  assert.ok(DOC.canonical.length > 40 && DOC.records.length > 50);
});

for (const v of DOC.canonical) {
  test(`canonical/${v.name}`, () => {
    if (v.error !== undefined) {
      assert.throws(() => canonicalText(parseJson(v.input)), (e) => e instanceof WireError && e.code === v.error);
    } else {
      const got = canonicalText(parseJson(v.input));
      assert.equal(got, v.canonical);
      assert.equal(fihHash(utf8(got)), v.hash);
    }
  });
}

for (const v of DOC.records) {
  test(`records/${v.name}`, () => {
    const check = checkWire(v.record, v.type);
    assert.equal(check.canonical, v.canonical);
    assert.equal(check.hash, v.hash);
    if (v.valid) {
      assert.equal(check.error, undefined, check.error?.message);
      const parsed = parseWire(v.record, v.type);
      assert.equal(parsed.hash, v.record.hash);
      assert.deepEqual(parseJson(parsed.toJSONText()), v.record);
      if (v.seed_hex !== undefined) {
        const key = Key.fromSeedHex(v.seed_hex);
        assert.equal(key.author, v.record.author);
        assert.equal(key.sign(v.record.hash), v.record.sig, "signing is deterministic");
      }
    } else {
      assert.equal(check.error?.code, v.error, check.error?.message);
      assert.throws(() => parseWire(v.record, v.type), (e) => e instanceof WireError && e.code === v.error);
    }
  });
}
