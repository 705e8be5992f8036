/** Failover between API URLs, report retries honouring Retry-After, and the API key. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { BatchqClient, BatchqError } from "../src/index.js";
import { handlers } from "./fixtures/handlers.js";
import { apiUrl, client, deadUrl, proxy, queue, startWorker, waitFor } from "./helpers.js";

const api = client();

test("the client fails over from a dead URL to a live one, and stays there", { timeout: 30_000 }, async () => {
  const dead = await deadUrl();
  const both = client([dead, apiUrl()]);
  // Creating is not idempotent, but a refused connection proves nothing was sent.
  const batch = await both.createBatch({ queue: queue("failover-client"), jobs: ["Noop"] });
  assert.equal(both.http.currentUrl, apiUrl());
  assert.equal((await both.getBatch(batch.id)).id, batch.id);
  await both.cancelBatch(batch.id);
});

test("a worker fails over from a dead URL to a live one", { timeout: 60_000 }, async (t) => {
  const q = queue("failover-worker");
  const worker = startWorker(t, { apiUrl: [await deadUrl(), apiUrl()], handlers, queues: [q], concurrency: 2 });
  const batch = await api.createBatch({ queue: q, jobs: Array.from({ length: 4 }, (_, i) => ({ name: "Echo", args: { i } })) });
  const done = await api.waitForBatch(batch.id, { timeoutMs: 45_000 });
  assert.equal(done.status, "completed");
  assert.equal(worker.stats.completed, 4);
  assert.equal(worker.client.http.currentUrl, apiUrl());
});

test("502/503/504 fail over; a non-idempotent call only on 503", { timeout: 30_000 }, async (t) => {
  const unavailable = await proxy(t, apiUrl(), () => ({ status: 503, body: "down for maintenance" }));
  const gateway = await proxy(t, apiUrl(), () => ({ status: 502, body: "<html>bad gateway</html>" }));

  const viaUnavailable = client([unavailable.url, apiUrl()]);
  const batch = await viaUnavailable.createBatch({ queue: queue("failover-503"), jobs: ["Noop"] });
  assert.equal((await viaUnavailable.getBatch(batch.id)).id, batch.id);

  const viaGateway = client([gateway.url, apiUrl()]);
  assert.equal((await viaGateway.getProgress(batch.id)).total, 1); // a read fails over on 502
  // Adding jobs after a 502 might have been done already: not sent again elsewhere.
  const stuck = client([gateway.url, apiUrl()]);
  const err = await stuck.addJobs(batch.id, ["Noop"]).then(
    () => assert.fail("expected the 502"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof BatchqError);
  assert.equal(err.status, 502);
  assert.equal(err.code, "http_error");
  assert.match(err.message, /bad gateway/);
  assert.equal((await api.getBatch(batch.id)).total, 1);
  await api.cancelBatch(batch.id);
});

test("a report refused with 503 is retried after Retry-After", { timeout: 60_000 }, async (t) => {
  let refusals = 0;
  const front = await proxy(t, apiUrl(), (req) => {
    if (req.url === "/v1/reports" && refusals < 2) {
      refusals += 1;
      return { status: 503, headers: { "retry-after": "1" }, body: '{"error": {"code": "unavailable", "message": "try later"}}' };
    }
    return undefined;
  });
  const q = queue("report-retry");
  const worker = startWorker(t, { apiUrl: front.url, handlers, queues: [q] });
  const batch = await api.createBatch({ queue: q, jobs: [{ name: "Echo", args: { z: 1 } }] });
  const done = await api.waitForBatch(batch.id, { timeoutMs: 45_000 });
  assert.equal(done.status, "completed");
  assert.equal(worker.stats.completed, 1);
  const reports = front.seen.filter((r) => r.path === "/v1/reports");
  assert.deepEqual(reports.map((r) => r.answered), [503, 503, 0]);
  // Each try waited at least the second the API asked for.
  assert.ok(reports[1]!.at - reports[0]!.at >= 950, `${reports[1]!.at - reports[0]!.at} ms between tries`);
  assert.ok(reports[2]!.at - reports[1]!.at >= 950, `${reports[2]!.at - reports[1]!.at} ms between tries`);
  assert.equal(worker.reportCalls, 3);
});

test("a report still failing after reportRetryMs is given up", { timeout: 60_000 }, async (t) => {
  const front = await proxy(t, apiUrl(), (req) => (req.url === "/v1/reports" ? { status: 500, body: "boom" } : undefined));
  const q = queue("report-give-up");
  const worker = startWorker(t, { apiUrl: front.url, handlers, queues: [q], reportRetryMs: 1_500 });
  const batch = await api.createBatch({ queue: q, jobs: [{ name: "Noop", timeout_s: 30 }] });
  await waitFor(() => worker.stats.abandoned === 1, "the worker to give up on the report");
  assert.ok(worker.reportCalls >= 2, `${worker.reportCalls} calls`);
  assert.equal(worker.stats.completed, 0);
  assert.equal((await api.getBatch(batch.id)).status, "running");
  await api.cancelBatch(batch.id);
});

test("the API key is sent as a bearer token, and the idempotency key as a header", { timeout: 60_000 }, async (t) => {
  const front = await proxy(t, apiUrl());
  const q = queue("auth");
  const keyed = startWorker(t, { apiUrl: front.url, apiKey: "secret-1", handlers, queues: [q] });
  const keyedClient = new BatchqClient({ apiUrl: front.url, apiKey: "secret-2" });
  const batch = await keyedClient.createBatch({ queue: q, jobs: ["Noop"] }, { idempotencyKey: "key-123" });
  await api.waitForBatch(batch.id, { timeoutMs: 45_000 });
  await keyed.stop();
  const create = front.seen.find((r) => r.method === "POST" && r.path === "/v1/batches")!;
  assert.equal(create.headers["authorization"], "Bearer secret-2");
  assert.equal(create.headers["idempotency-key"], "key-123");
  const workerCalls = front.seen.filter((r) => r.path.startsWith("/v1/queues/") || r.path === "/v1/reports");
  assert.ok(workerCalls.length >= 2);
  for (const call of workerCalls) assert.equal(call.headers["authorization"], "Bearer secret-1");
});
