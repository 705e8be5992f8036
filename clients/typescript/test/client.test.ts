/** The client's methods against a real batchq server, and BatchqError on 404/409/422. */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { BatchqError } from "../src/index.js";
import { handlers } from "./fixtures/handlers.js";
import { client, deadUrl, queue, startWorker } from "./helpers.js";

const api = client();

async function rejects(call: Promise<unknown>, status: number, code: string): Promise<BatchqError> {
  const err = await call.then(
    () => assert.fail(`expected a ${status}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof BatchqError, `not a BatchqError: ${String(err)}`);
  assert.equal(err.status, status, err.message);
  assert.equal(err.code, code);
  return err;
}

test("create, read and list a batch", { timeout: 60_000 }, async (t) => {
  const q = queue("read");
  const created = await api.createBatch(
    { queue: q, jobs: ["Noop", { name: "Echo", args: { x: 1 } }], context: { tenant: "acme" } },
    { idempotencyKey: randomUUID() },
  );
  assert.equal(typeof created.id, "string");
  assert.equal(created.type, "parallel");
  assert.equal(created.total, 2);
  assert.equal(created.queue, q);

  const progress = await api.getProgress(created.id);
  assert.equal(progress.total, 2);
  assert.equal(typeof progress.percentage, "number");

  const listed = await api.listBatches({ queue: q });
  assert.deepEqual(listed.batches.map((b) => b.id), [created.id]);
  assert.equal(listed.next, null);

  const queues = await api.listQueues();
  assert.ok(queues.some((info) => info.name === q), "the batch's queue is listed");

  startWorker(t, { handlers, queues: [q], concurrency: 2 });
  const done = await api.waitForBatch(created.id, { timeoutMs: 45_000 });
  assert.equal(done.status, "completed");
  assert.equal(done.completed, 2);
  assert.equal((await api.getBatch(created.id)).status, "completed");

  const { jobs } = await api.listJobs(created.id, { status: "completed" });
  assert.deepEqual(jobs.map((j) => j.name), ["Noop", "Echo"]);
  const echo = await api.getJob(created.id, jobs[1]!.id);
  assert.equal(echo.attempt_history.length, 1);
  assert.equal(echo.attempt_history[0]!.status, "completed");

  const results = await api.getResults(created.id);
  assert.equal(results.status, "completed");
  assert.deepEqual(results.context, { tenant: "acme" });
  assert.equal(results.results[jobs[0]!.id], null);
  assert.deepEqual((results.results[jobs[1]!.id] as { echo: unknown }).echo, { tenant: "acme", x: 1 });

  const { events } = await api.listEvents(created.id);
  assert.ok(events.length > 0);
  assert.ok(events.every((e) => e.batch_id === created.id));
  assert.match(events[events.length - 1]!.type, /complete/, events.map((e) => e.type).join(", "));
  const later = await api.listEvents(created.id, { after: Number(events[0]!.id) });
  assert.equal(later.events.length, events.length - 1);

  assert.deepEqual(await api.listCallbacks(created.id), []);
});

test("add jobs, cancel, and a 409 once the batch has ended", { timeout: 60_000 }, async () => {
  const q = queue("steer");
  const batch = await api.createBatch({ queue: q, jobs: ["Noop"] });
  const added = await api.addJobs(batch.id, ["Noop", { name: "Echo", args: { y: 2 } }]);
  assert.equal(added.batch.total, 3);
  assert.deepEqual(added.job_ids, [`${batch.id}.1`, `${batch.id}.2`]);

  const cancelled = await api.cancelBatch(batch.id);
  assert.equal(cancelled.status, "cancelled");
  const err = await rejects(api.addJobs(batch.id, ["Noop"]), 409, "conflict");
  assert.match(err.message, /cancelled/);
});

test("retry a failed batch, and retry chosen jobs", { timeout: 60_000 }, async (t) => {
  const q = queue("retry");
  startWorker(t, { handlers, queues: [q], concurrency: 2 });
  const batch = await api.createBatch({
    queue: q,
    failure_policy: "allow_failures",
    jobs: [{ name: "Fail", args: { permanent: true } }, { name: "Fail", args: { permanent: true } }, "Noop"],
  });
  let done = await api.waitForBatch(batch.id, { timeoutMs: 45_000 });
  assert.equal(done.status, "completed_with_failures");
  assert.equal(done.failed, 2);
  assert.equal(done.completed, 1);
  const failed = (await api.listJobs(batch.id, { status: "failed" })).jobs.map((j) => j.id);
  assert.equal(failed.length, 2);

  const one = await api.retryJobs(batch.id, [failed[0]!]);
  assert.equal(one.retried, 1);
  done = await api.waitForBatch(batch.id, { timeoutMs: 45_000 });
  assert.equal(done.status, "completed_with_failures");
  assert.equal((await api.getJob(batch.id, failed[0]!)).attempts, 2);

  const all = await api.retryBatch(batch.id);
  assert.equal(all.retried, 2);
  done = await api.waitForBatch(batch.id, { timeoutMs: 45_000 });
  assert.equal(done.status, "completed_with_failures");

  // Not a failed job of the batch: 422 naming it, nothing retried.
  const completed = (await api.listJobs(batch.id, { status: "completed" })).jobs[0]!.id;
  const err = await rejects(api.retryJobs(batch.id, [completed]), 422, "validation_error");
  assert.ok(err.field, "the 422 names a field");
});

test("BatchqError carries status, code, message and field", { timeout: 30_000 }, async () => {
  const missing = await rejects(api.getBatch("no-such-batch"), 404, "not_found");
  assert.match(missing.message, /no-such-batch/);
  assert.equal(missing.field, undefined);
  assert.ok(missing instanceof Error);
  assert.equal(missing.name, "BatchqError");

  await rejects(api.getJob("no-such-batch", "no-such-job"), 404, "not_found");
  await rejects(api.listEvents("no-such-batch"), 404, "not_found");

  const invalid = await rejects(api.createBatch({ jobs: ["Ok", { name: "" }] }), 422, "validation_error");
  assert.equal(invalid.field, "jobs[1].name");

  const shape = await rejects(api.createBatch({}), 422, "validation_error");
  assert.equal(shape.field, "jobs");

  const status = await rejects(api.listBatches({ status: "bogus" as never }), 422, "validation_error");
  assert.equal(status.field, "status");
});

test("an unreachable server is a BatchqError with status 0", { timeout: 30_000 }, async () => {
  const dead = client(await deadUrl());
  const err = await rejects(dead.getBatch("x"), 0, "unreachable");
  assert.ok(err.unreachable);
  assert.ok(err.transient);
});
