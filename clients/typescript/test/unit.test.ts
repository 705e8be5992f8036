/** Pure helpers and the reporter over a fake fetch: no server needed. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { BatchqClient, BatchqError, Registry, Reporter, parseTimestamp, parseUrls, retryAfterMs, type FetchLike, type ReportItem } from "../src/index.js";

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

/** A BatchqClient whose POST /v1/reports is answered by `answer` (no server). */
function fakeReports(answer: (items: ReportItem[]) => { status: number; body: unknown; headers?: Record<string, string> }) {
  const calls: ReportItem[][] = [];
  const fetch: FetchLike = async (_url, init) => {
    const items = (JSON.parse(String(init.body)) as { reports: ReportItem[] }).reports;
    calls.push(items);
    const { status, body, headers } = answer(items);
    return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
  };
  return { client: new BatchqClient({ apiUrl: "http://batchq.invalid", fetch }), calls };
}

const accepted = (items: ReportItem[]) => ({
  status: 200,
  body: { results: items.map((i) => ({ job_id: i.job_id, attempt: i.attempt, status_code: 200 })) },
});

function item(job: string, extra: Partial<ReportItem> = {}): ReportItem {
  return { job_id: job, attempt: 1, lease: "l", outcome: "completed", result: null, ...extra };
}

test("reporter: reports handed in together go in one call; each gets its own outcome", async () => {
  const { client, calls } = fakeReports((items) => ({
    status: 200,
    body: {
      results: items.map((i) =>
        i.job_id === "stale"
          ? { job_id: i.job_id, attempt: 1, status_code: 409, error: { code: "conflict", message: "expired" } }
          : { job_id: i.job_id, attempt: 1, status_code: 200 },
      ),
    },
  }));
  const reporter = new Reporter(client);
  const outcomes = await Promise.allSettled(["a", "b", "stale", "c"].map((job) => reporter.report(item(job))));
  assert.equal(calls.length, 1);
  assert.deepEqual(outcomes.map((o) => o.status), ["fulfilled", "fulfilled", "rejected", "fulfilled"]);
  const refused = (outcomes[2] as PromiseRejectedResult).reason as BatchqError;
  assert.ok(refused instanceof BatchqError);
  assert.equal(refused.status, 409);
  assert.equal(refused.message, "expired");
});

test("reporter: reports finishing while a call is on its way go together in the next one", async () => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const calls: number[] = [];
  const fetch: FetchLike = async (_url, init) => {
    const items = (JSON.parse(String(init.body)) as { reports: ReportItem[] }).reports;
    calls.push(items.length);
    if (calls.length === 1) await gate;
    return new Response(JSON.stringify(accepted(items).body), { status: 200 });
  };
  const reporter = new Reporter(new BatchqClient({ apiUrl: "http://batchq.invalid", fetch }));
  const first = reporter.report(item("first"));
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  const later = ["x", "y", "z"].map((job) => reporter.report(item(job)));
  release();
  await Promise.all([first, ...later]);
  assert.deepEqual(calls, [1, 3]);
  assert.equal(reporter.calls, 2);
});

test("reporter: a 503 is retried after Retry-After, reports arriving meanwhile join it; a 422 is split", async () => {
  let failures = 1;
  const { client, calls } = fakeReports((items) => {
    if (failures-- > 0) return { status: 503, body: { error: { code: "unavailable", message: "later" } }, headers: { "retry-after": "0.2" } };
    const bad = items.findIndex((i) => i.error === "bad");
    if (bad >= 0) return { status: 422, body: { error: { code: "validation_error", message: "bad", field: `reports[${bad}].error` } } };
    return accepted(items);
  });
  const retries: number[] = [];
  const reporter = new Reporter(client, { backoffBaseMs: 1, onRetry: (_e, delayMs, n) => retries.push(delayMs, n) });
  const first = ["a", "b", "c"].map((job) => reporter.report(item(job, job === "b" ? { outcome: "failed", error: "bad" } : {})));
  // Handed in while the retry waits out its Retry-After (timers fire in order of expiry).
  const late = new Promise<unknown>((resolve) => setTimeout(() => resolve(reporter.report(item("d"))), 50));
  const settled = await Promise.allSettled([...first, late]);
  assert.deepEqual(settled.map((s) => s.status), ["fulfilled", "rejected", "fulfilled", "fulfilled"]);
  assert.equal(((settled[1] as PromiseRejectedResult).reason as BatchqError).status, 422);
  assert.deepEqual(retries, [200, 3]);
  // 503 for three, 422 for the four together, then one call each.
  assert.deepEqual(
    calls.map((c) => c.map((i) => i.job_id).join("")),
    ["abc", "abcd", "a", "b", "c", "d"],
  );
});

test("reporter: a 400-class answer other than 422/429 is not retried", async () => {
  const { client, calls } = fakeReports(() => ({ status: 401, body: { error: { code: "unauthorized", message: "wrong token" } } }));
  const reporter = new Reporter(client, { backoffBaseMs: 1 });
  await assert.rejects(reporter.report(item("a")), (err: unknown) => err instanceof BatchqError && err.status === 401 && err.code === "unauthorized");
  assert.equal(calls.length, 1);
});
