/** The worker against a real batchq server: batches, chains, retries, heartbeats, coalescing, stop. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { JobResult, Registry, type JobContext } from "../src/index.js";
import { handlers, sleep } from "./fixtures/handlers.js";
import { apiUrl, client, queue, startWorker, waitFor } from "./helpers.js";

const api = client();

async function resultsByPosition(batchId: string): Promise<Record<number, unknown>> {
  const [{ jobs }, { results }] = await Promise.all([api.listJobs(batchId, { limit: 1000 }), api.getResults(batchId)]);
  return Object.fromEntries(jobs.map((j) => [j.position, results[j.id]]));
}

test("a parallel batch completes through the worker", { timeout: 60_000 }, async (t) => {
  const q = queue("parallel");
  const worker = startWorker(t, { handlers, queues: [q], concurrency: 4 });
  const batch = await api.createBatch({ queue: q, jobs: Array.from({ length: 8 }, (_, i) => ({ name: "Echo", args: { n: i } })) });
  const done = await api.waitForBatch(batch.id, { timeoutMs: 45_000 });
  assert.equal(done.status, "completed");
  assert.equal(done.completed, 8);
  const byPosition = await resultsByPosition(batch.id);
  for (let i = 0; i < 8; i++) {
    assert.deepEqual((byPosition[i] as { echo: unknown }).echo, { n: i });
  }
  assert.equal(worker.stats.completed, 8);
});

test("at most `concurrency` jobs run at once, over several queues", { timeout: 60_000 }, async (t) => {
  const [q1, q2] = [queue("limit-a"), queue("limit-b")];
  let running = 0;
  let most = 0;
  const registry = new Registry({
    Busy: async (args: { i: number }) => {
      running += 1;
      most = Math.max(most, running);
      await sleep(200);
      running -= 1;
      return args.i;
    },
  });
  const worker = startWorker(t, { handlers: registry, queues: [q1, q2], concurrency: 2 });
  const jobs = (n: number) => Array.from({ length: n }, (_, i) => ({ name: "Busy", args: { i } }));
  const [a, b] = await Promise.all([api.createBatch({ queue: q1, jobs: jobs(5) }), api.createBatch({ queue: q2, jobs: jobs(5) })]);
  for (const batch of [a, b]) {
    const done = await api.waitForBatch(batch.id, { timeoutMs: 45_000 });
    assert.equal(done.status, "completed");
    assert.equal(done.completed, 5);
  }
  assert.equal(worker.stats.completed, 10);
  assert.ok(most <= 2, `${most} jobs ran at once`);
});

test("a chain accumulates its context step by step", { timeout: 60_000 }, async (t) => {
  const q = queue("chain");
  startWorker(t, { handlers, queues: [q], concurrency: 2 });
  const chain = await api.createChain({ queue: q, jobs: [1, 2, 3].map((value) => ({ name: "Add", args: { value } })), context: { total: 100 } });
  assert.equal(chain.type, "chain");
  const done = await api.waitForBatch(chain.id, { timeoutMs: 45_000 });
  assert.equal(done.status, "completed");
  assert.equal(done.context["total"], 106);
  assert.deepEqual(await resultsByPosition(chain.id), { 0: 101, 1: 103, 2: 106 });
});

test("a plain {result, context} return value updates a chain's context too", { timeout: 60_000 }, async (t) => {
  const q = queue("shape");
  const registry = new Registry({
    Step: (args: { add: number }, ctx: JobContext) => {
      const seen = Number(ctx.context["seen"] ?? 0) + args.add;
      return { result: seen, context: { seen } };
    },
    // Other keys beside result/context: the whole object is the result.
    Other: () => ({ result: 1, context: { seen: -1 }, extra: true }),
  });
  startWorker(t, { handlers: registry, queues: [q] });
  const chain = await api.createChain({ queue: q, jobs: [{ name: "Step", args: { add: 2 } }, { name: "Step", args: { add: 5 } }, "Other"] });
  const done = await api.waitForBatch(chain.id, { timeoutMs: 45_000 });
  assert.equal(done.status, "completed");
  assert.equal(done.context["seen"], 7);
  assert.deepEqual(await resultsByPosition(chain.id), { 0: 2, 1: 7, 2: { result: 1, context: { seen: -1 }, extra: true } });
});

test("a failing job is retried; a PermanentError fails at once; an unknown job fails for good", { timeout: 60_000 }, async (t) => {
  const q = queue("failures");
  startWorker(t, { handlers, queues: [q], concurrency: 3 });
  const flaky = await api.createBatch({ queue: q, jobs: [{ name: "Flaky", args: { succeedOn: 3 }, max_attempts: 3 }] });
  const permanent = await api.createBatch({ queue: q, jobs: [{ name: "Fail", args: { permanent: true, message: "no way" }, max_attempts: 3 }] });
  const unknown = await api.createBatch({ queue: q, jobs: [{ name: "NoSuchJob", max_attempts: 3 }] });

  const ok = await api.waitForBatch(flaky.id, { timeoutMs: 45_000 });
  assert.equal(ok.status, "completed");
  const [flakyJob] = (await api.listJobs(flaky.id)).jobs;
  assert.equal(flakyJob!.attempts, 3);
  assert.deepEqual(flakyJob!.result, { attempt: 3 });
  const detail = await api.getJob(flaky.id, flakyJob!.id);
  assert.deepEqual(
    detail.attempt_history.map((a) => a.status),
    ["failed", "failed", "completed"],
  );
  assert.match(detail.attempt_history[0]!.error ?? "", /Error: attempt 1 fails/);

  const failed = await api.waitForBatch(permanent.id, { timeoutMs: 45_000 });
  assert.equal(failed.status, "failed");
  assert.equal(failed.failed, 1);
  const [permanentJob] = (await api.listJobs(permanent.id)).jobs;
  assert.equal(permanentJob!.attempts, 1);
  assert.match(permanentJob!.error ?? "", /PermanentError: no way/);

  const lost = await api.waitForBatch(unknown.id, { timeoutMs: 45_000 });
  assert.equal(lost.status, "failed");
  const [unknownJob] = (await api.listJobs(unknown.id)).jobs;
  assert.equal(unknownJob!.attempts, 1);
  assert.match(unknownJob!.error ?? "", /UnknownJob: no handler for job "NoSuchJob"/);
});

test("reports of jobs finishing together are coalesced into fewer calls", { timeout: 60_000 }, async (t) => {
  const q = queue("coalesce");
  const jobs = 20;
  let started = 0;
  let release!: () => void;
  const together = new Promise<void>((resolve) => (release = resolve));
  const registry = new Registry({
    // Every job waits until all have started, then they all finish in the same turn.
    Barrier: async (args: { i: number }) => {
      started += 1;
      if (started === jobs) release();
      await together;
      return args.i;
    },
  });
  const worker = startWorker(t, { handlers: registry, queues: [q], concurrency: jobs });
  const batch = await api.createBatch({ queue: q, jobs: Array.from({ length: jobs }, (_, i) => ({ name: "Barrier", args: { i } })) });
  const done = await api.waitForBatch(batch.id, { timeoutMs: 45_000 });
  assert.equal(done.status, "completed");
  assert.equal(done.completed, jobs);
  assert.equal(worker.stats.completed, jobs);
  assert.ok(worker.reportCalls < jobs / 2, `${jobs} reports took ${worker.reportCalls} calls`);
});

test("heartbeats keep a job alive past its lease", { timeout: 60_000 }, async (t) => {
  const q = queue("heartbeat");
  const worker = startWorker(t, { handlers, queues: [q] });
  // A 3 s lease and a 7 s job: without heartbeats the lease would run out and, with one
  // attempt only, the job would fail.
  const batch = await api.createBatch({ queue: q, jobs: [{ name: "Sleep", args: { seconds: 7 }, timeout_s: 3, max_attempts: 1 }] });
  const done = await api.waitForBatch(batch.id, { timeoutMs: 45_000 });
  assert.equal(done.status, "completed");
  const [job] = (await api.listJobs(batch.id)).jobs;
  assert.equal(job!.attempts, 1);
  assert.deepEqual(job!.result, { slept: 7, attempt: 1 });
  assert.ok(worker.stats.heartbeats >= 2, `only ${worker.stats.heartbeats} heartbeats`);
});

test("a refused heartbeat (the batch was cancelled) abandons the job and aborts its signal", { timeout: 60_000 }, async (t) => {
  const q = queue("lost");
  let aborted: unknown;
  const registry = new Registry({
    Long: async (_args, ctx: JobContext) => {
      await sleep(30_000, ctx.signal);
      aborted = ctx.signal.reason;
      return "finished anyway";
    },
  });
  const worker = startWorker(t, { handlers: registry, queues: [q], heartbeatIntervalMs: 300 });
  const batch = await api.createBatch({ queue: q, jobs: [{ name: "Long", timeout_s: 30 }] });
  await waitFor(() => worker.active === 1, "the job to run");
  const cancelled = await api.cancelBatch(batch.id);
  assert.equal(cancelled.status, "cancelled");
  await waitFor(() => worker.stats.abandoned === 1, "the worker to abandon the job");
  await waitFor(() => aborted !== undefined, "the job's signal to be aborted");
  assert.equal((aborted as { status?: number }).status, 409);
  assert.equal(worker.stats.completed, 0);
  assert.equal(worker.active, 0);
});

test("ctx.addJobs appends jobs to the running batch", { timeout: 60_000 }, async (t) => {
  const q = queue("dynamic");
  const registry = new Registry({
    Spawn: async (args: { n: number }, ctx: JobContext) => {
      const reply = await ctx.addJobs(Array.from({ length: args.n }, (_, i) => ({ name: "Child", args: { i } })));
      return reply.added;
    },
    Child: (args: { i: number }) => args.i * 10,
  });
  startWorker(t, { handlers: registry, queues: [q], concurrency: 2 });
  const batch = await api.createBatch({ queue: q, jobs: [{ name: "Spawn", args: { n: 3 } }] });
  const done = await api.waitForBatch(batch.id, { timeoutMs: 45_000 });
  assert.equal(done.status, "completed");
  assert.equal(done.total, 4);
  assert.equal(done.completed, 4);
  const results = Object.values((await api.getResults(batch.id)).results).sort();
  assert.deepEqual(results, [0, 10, 20, 3]);
});

test("a result that is not JSON fails the job for good with a clear error", { timeout: 60_000 }, async (t) => {
  const q = queue("badresult");
  const registry = new Registry({
    Big: () => 10n,
    BadContext: () => new JobResult(1, [1, 2] as unknown as Record<string, unknown>),
  });
  startWorker(t, { handlers: registry, queues: [q] });
  const batch = await api.createBatch({ queue: q, failure_policy: "allow_failures", jobs: [{ name: "Big", max_attempts: 2 }, { name: "BadContext", max_attempts: 2 }] });
  const done = await api.waitForBatch(batch.id, { timeoutMs: 45_000 });
  assert.equal(done.status, "completed_with_failures");
  const jobs = (await api.listJobs(batch.id)).jobs;
  assert.match(jobs[0]!.error ?? "", /not JSON serializable/);
  assert.match(jobs[1]!.error ?? "", /context update must be an object/);
  assert.deepEqual(jobs.map((j) => j.attempts), [1, 1]);
});

test("stop() lets running and prefetched jobs finish and report, and claims nothing more", { timeout: 60_000 }, async (t) => {
  const q = queue("stop");
  const worker = startWorker(t, { handlers, queues: [q], concurrency: 1, prefetch: 1 });
  const sleeps = [0, 1, 2].map(() => ({ name: "Sleep", args: { seconds: 2 } }));
  const batch = await api.createBatch({ queue: q, jobs: sleeps });
  await waitFor(async () => {
    const [first, second] = (await api.listJobs(batch.id)).jobs;
    return worker.active === 1 && first!.status === "running" && second!.status === "running";
  }, "the first job to run and the second to be prefetched");
  await worker.stop();
  assert.equal(worker.active, 0);
  assert.equal(worker.stats.completed, 2);
  const jobs = (await api.listJobs(batch.id)).jobs;
  assert.deepEqual(jobs.map((j) => j.status), ["completed", "completed", "queued"]);
  await api.cancelBatch(batch.id);
});

test("the worker sends a message's traceparent back with its report", { timeout: 60_000 }, async (t) => {
  const q = queue("trace");
  const caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  const reported: unknown[] = [];
  const watching: typeof fetch = async (input, init) => {
    if (String(input).endsWith("/v1/reports")) reported.push(...(JSON.parse(String(init?.body)) as { reports: unknown[] }).reports);
    return fetch(input, init);
  };
  const created = await fetch(`${apiUrl()}/v1/batches`, {
    method: "POST",
    headers: { "content-type": "application/json", traceparent: caller },
    body: JSON.stringify({ queue: q, jobs: [{ name: "Echo", args: { n: 1 } }, { name: "Echo", args: { n: 2 } }] }),
  });
  assert.equal(created.status, 201);
  const batch = (await created.json()) as { id: string };
  startWorker(t, { handlers, queues: [q], concurrency: 2, fetch: watching });
  assert.equal((await api.waitForBatch(batch.id, { timeoutMs: 45_000 })).status, "completed");
  assert.equal(reported.length, 2);
  for (const item of reported) assert.equal((item as { traceparent?: string }).traceparent, caller);
});

for (const prefetch of [1, 0]) {
  test(`prefetched messages wait for a slot with their leases kept (prefetch ${prefetch})`, { timeout: 60_000 }, async (t) => {
    const q = queue(`prefetch-${prefetch}`);
    let runningNow = 0;
    let most = 0;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const registry = new Registry({
      Hold: async (args: { first: boolean }) => {
        runningNow += 1;
        most = Math.max(most, runningNow);
        if (args.first) await released;
        runningNow -= 1;
      },
    });
    // A 3 s lease (heartbeats every 1 s); the second job waits 4.5 s for the first one's slot.
    const jobs = [0, 1].map((i) => ({ name: "Hold", args: { first: i === 0 }, timeout_s: 3 }));
    const batch = await api.createBatch({ queue: q, jobs });
    const worker = startWorker(t, { handlers: registry, queues: [q], concurrency: 1, prefetch });
    const second = await waitFor(async () => {
      const [first, next] = (await api.listJobs(batch.id)).jobs;
      return runningNow === 1 && first!.status === "running" && (next!.status === "running" || !prefetch) ? next : undefined;
    }, "the first job running");
    // Prefetched: started (its lease taken), but its handler waits for the one slot.
    assert.equal(second.status, prefetch ? "running" : "queued");
    await sleep(4_500); // past the second one's lease, had nothing kept it
    release();
    const done = await api.waitForBatch(batch.id, { timeoutMs: 45_000 });
    assert.equal(done.status, "completed");
    assert.equal(most, 1);
    assert.deepEqual((await api.listJobs(batch.id)).jobs.map((j) => j.attempts), [1, 1]);
    assert.equal(worker.stats.completed, 2);
    assert.equal(worker.stats.abandoned, 0);
  });
}
