/** Pure helpers: no server needed. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Registry, parseTimestamp, parseUrls, retryAfterMs } from "../src/index.js";

test("timestamps: RFC 3339 strings or Unix seconds", () => {
  const at = Date.UTC(2026, 0, 2, 3, 4, 5, 500);
  assert.equal(parseTimestamp("2026-01-02T03:04:05.500Z")?.getTime(), at);
  assert.equal(parseTimestamp("2026-01-02T04:04:05.5+01:00")?.getTime(), at);
  assert.equal(parseTimestamp(at / 1000)?.getTime(), at);
  assert.equal(parseTimestamp(String(at / 1000))?.getTime(), at);
  assert.equal(parseTimestamp(at)?.getTime(), at); // milliseconds, by size
  assert.equal(parseTimestamp("not a time"), undefined);
  assert.equal(parseTimestamp(null), undefined);
});

test("Retry-After: seconds or an HTTP date", () => {
  assert.equal(retryAfterMs("3"), 3000);
  assert.equal(retryAfterMs("0.5"), 500);
  assert.equal(retryAfterMs(null), undefined);
  assert.equal(retryAfterMs("soon"), undefined);
  const now = Date.UTC(2026, 0, 1, 0, 0, 0);
  assert.equal(retryAfterMs("Thu, 01 Jan 2026 00:00:10 GMT", now), 10_000);
  assert.equal(retryAfterMs("Wed, 31 Dec 2025 00:00:00 GMT", now), 0);
});

test("API URLs: a list or a comma-separated string, trailing slashes dropped", () => {
  assert.deepEqual(parseUrls("http://a:1/, http://b:2"), ["http://a:1", "http://b:2"]);
  assert.deepEqual(parseUrls(["https://x/api/"]), ["https://x/api"]);
  assert.throws(() => parseUrls(""), /at least one/);
  assert.throws(() => parseUrls("ftp://x"), /not an http/);
});

test("a registry refuses empty names and a second handler for a name", () => {
  const noop = () => null;
  const registry = new Registry({ B: noop }).register("A", noop).register("A", noop);
  assert.deepEqual(registry.names, ["A", "B"]);
  assert.throws(() => registry.register("A", () => 1), /already has a handler/);
  assert.throws(() => registry.register(" ", noop), /must not be empty/);
});
