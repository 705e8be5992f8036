/** The CLI as a real process: SIGTERM lets the running job finish and report, then it exits. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { apiUrl, client, queue, waitFor } from "./helpers.js";

const cli = fileURLToPath(new URL("../src/cli.js", import.meta.url));
const handlersModule = fileURLToPath(new URL("./fixtures/handlers.js", import.meta.url));
const api = client();

test("SIGTERM: the running and the prefetched job finish and are reported, nothing more is claimed, the process exits 0", { timeout: 60_000 }, async (t) => {
  const q = queue("sigterm");
  const args = [cli, handlersModule, "--queue", q, "--concurrency", "1", "--prefetch", "1", "--poll-wait", "1"];
  const child = spawn(process.execPath, args, {
    env: { ...process.env, BATCHQ_API_URL: apiUrl(), BATCHQ_LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  t.after(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });

  const batch = await api.createBatch({ queue: q, jobs: [0, 1, 2].map(() => ({ name: "Sleep", args: { seconds: 2 } })) });
  await waitFor(async () => {
    const [first, second] = (await api.listJobs(batch.id)).jobs;
    return first!.status === "running" && second!.status === "running";
  }, "the first job to run and the second to be prefetched");
  child.kill("SIGTERM");
  const [code, signal] = await exited;
  assert.equal(signal, null, output);
  assert.equal(code, 0, output);
  assert.match(output, /SIGTERM: stopping after the running jobs/);

  const jobs = (await api.listJobs(batch.id)).jobs;
  assert.deepEqual(jobs.map((j) => j.status), ["completed", "completed", "queued"], output);
  assert.deepEqual(jobs[0]!.result, { slept: 2, attempt: 1 });
  assert.deepEqual(jobs[1]!.result, { slept: 2, attempt: 1 });
  await api.cancelBatch(batch.id);
});

test("the CLI refuses a module without handlers", { timeout: 30_000 }, async () => {
  const helpers = fileURLToPath(new URL("./helpers.js", import.meta.url));
  const child = spawn(process.execPath, [cli, helpers], { env: { ...process.env, BATCHQ_API_URL: apiUrl() }, stdio: ["ignore", "ignore", "pipe"] });
  let errors = "";
  child.stderr.on("data", (chunk: Buffer) => (errors += chunk.toString()));
  const [code] = (await once(child, "exit")) as [number | null];
  assert.equal(code, 2);
  assert.match(errors, /exports no `handlers`/);
});
