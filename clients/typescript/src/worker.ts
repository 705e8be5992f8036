/**
 * The worker runtime: claims messages over HTTP, runs their handlers with at most
 * `concurrency` at once, keeps each lease alive with heartbeats, and reports outcomes through
 * a coalescing Reporter. The same semantics as the Python runtime (app/worker/runtime.py).
 *
 * A refused heartbeat (404/409: the lease expired, the batch was cancelled) means someone else
 * owns the job now: the worker aborts the job's `ctx.signal`, stops waiting for it and reports
 * nothing. Graceful stop (stop(), SIGTERM, SIGINT): no new claims; a claim already on its way
 * is let return, because its messages are started and would otherwise burn an attempt; running
 * jobs finish and are reported; then the worker is stopped.
 */
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { BatchqClient, sleep } from "./client.js";
import { BatchqError, PermanentError } from "./errors.js";
import type { FetchLike } from "./http.js";
import { Reporter } from "./reporter.js";
import type { AddJobsReply, Compensation, JobInput, JsonObject, Message, ReportItem } from "./types.js";
import { consoleLogger, type Logger } from "./log.js";
import { Slots } from "./slots.js";

/** Return this from a handler to update a chain's context along with the result. */
export class JobResult<R = unknown> {
  constructor(
    readonly result: R = null as R,
    readonly context?: JsonObject,
  ) {}
}

/** What a handler sees besides its args. */
export interface JobContext {
  jobId: string;
  batchId: string;
  attempt: number;
  name: string;
  kind: string;
  position: number;
  queue: string;
  /** The batch's accumulated context (a chain's steps see earlier steps' updates). */
  context: JsonObject;
  /** On compensation jobs: what is being undone, and why. */
  compensation: Compensation | undefined;
  lease: string | undefined;
  timeoutS: number | undefined;
  /** The message as delivered. */
  message: Message;
  /** Aborted when the lease is lost (the job is no longer ours) or the worker gives up on it. */
  signal: AbortSignal;
  /** Append jobs to this job's batch (not retried: adding twice would run them twice). */
  addJobs(jobs: JobInput[]): Promise<AddJobsReply>;
}

/**
 * A job handler: return the result (any JSON value), or `new JobResult(result, context)` /
 * a plain `{result, context}` object (only those keys, `context` present) to update a chain's
 * context. Throw to fail the attempt (retried while attempts remain); throw a PermanentError
 * to fail it for good. Long work should be asynchronous: a handler that blocks the event loop
 * also blocks its heartbeats.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Handler<A extends JsonObject = any> = (args: A, ctx: JobContext) => unknown;

/** Job name -> handler. */
export class Registry {
  private readonly handlers = new Map<string, Handler>();

  constructor(handlers: Record<string, Handler> = {}) {
    for (const [name, fn] of Object.entries(handlers)) this.register(name, fn);
  }

  register(name: string, fn: Handler): this {
    if (!name || !name.trim()) throw new TypeError("a job name must not be empty");
    if (typeof fn !== "function") throw new TypeError(`the handler of ${name} is not a function`);
    const known = this.handlers.get(name);
    if (known && known !== fn) throw new TypeError(`job ${name} already has a handler`);
    this.handlers.set(name, fn);
    return this;
  }

  get(name: string): Handler | undefined {
    return this.handlers.get(name);
  }

  get names(): string[] {
    return [...this.handlers.keys()].sort();
  }
}

export interface WorkerOptions {
  /** One API URL or several (a connection error or 502/503/504 moves on to the next). */
  apiUrl: string | string[];
  /** Sent as `Authorization: Bearer <apiKey>`. */
  apiKey?: string | undefined;
  handlers: Registry | Record<string, Handler>;
  /** Queues to claim from (default ["default"]). */
  queues?: string[] | undefined;
  /** Jobs run at once (default 1). */
  concurrency?: number | undefined;
  /**
   * Messages claimed ahead of a free slot (default: concurrency). They are started (their
   * leases kept by heartbeats) and run as slots free, so a slot that frees finds work waiting
   * instead of a round trip to the API. 0 for long jobs spread over many workers.
   */
  prefetch?: number | undefined;
  /** Long-poll wait of a claim in seconds (default 5); a stop waits at most this for a claim on its way. */
  pollWaitS?: number | undefined;
  /** Heartbeat period; default a third of the job's timeout_s. */
  heartbeatIntervalMs?: number | undefined;
  /** How long a report is retried before the worker gives up on it (default 300 000 ms). */
  reportRetryMs?: number | undefined;
  /** Most reports in one call (default 100). */
  maxReportBatch?: number | undefined;
  /** Names this worker in the API's attempt records (default host:pid:random). */
  workerId?: string | undefined;
  logger?: Logger | undefined;
  /** A fetch to use instead of the global one. */
  fetch?: FetchLike | undefined;
  /** Per-request timeout for calls other than the long-poll (default 30 000 ms). */
  timeoutMs?: number | undefined;
}

export interface WorkerStats {
  claimed: number;
  completed: number;
  failed: number;
  /** A heartbeat or report was refused (the attempt was no longer ours), or the report could not be sent. */
  abandoned: number;
  heartbeats: number;
}

export interface StopOptions {
  /** Give up on jobs still running after this long: their signals are aborted, nothing is reported. */
  timeoutMs?: number | undefined;
}

interface Running {
  message: Message;
  controller: AbortController;
  done: Promise<void>;
}

export class Worker {
  readonly client: BatchqClient;
  readonly reporter: Reporter;
  readonly registry: Registry;
  readonly queues: string[];
  readonly concurrency: number;
  readonly prefetch: number;
  readonly workerId: string;
  readonly stats: WorkerStats = { claimed: 0, completed: 0, failed: 0, abandoned: 0, heartbeats: 0 };
  private readonly pollWaitS: number;
  private readonly heartbeatIntervalMs: number | undefined;
  private readonly log: Logger;
  private readonly slots: Slots; // handlers running
  private readonly held: Slots; // messages this worker holds: running, reporting, or waiting for a slot
  private readonly running = new Set<Running>(); // every message held, waiting ones included
  private handlersRunning = 0;
  private fetchers: Promise<void>[] = [];
  private stopping = new AbortController();
  private started = false;
  private stopped: Promise<void> | null = null;
  // Resolves on run()'s second signal: give up on running jobs and unsent reports now.
  private forcedStop: Promise<void> | null = null;

  constructor(options: WorkerOptions) {
    const concurrency = options.concurrency ?? 1;
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new TypeError("concurrency must be an integer of at least 1");
    const prefetch = options.prefetch ?? concurrency;
    if (!Number.isInteger(prefetch) || prefetch < 0) throw new TypeError("prefetch must be an integer of at least 0");
    const queues = [...new Set(options.queues ?? ["default"])];
    if (queues.length === 0) throw new TypeError("give at least one queue");
    this.registry = options.handlers instanceof Registry ? options.handlers : new Registry(options.handlers);
    this.queues = queues;
    this.concurrency = concurrency;
    this.prefetch = prefetch;
    this.pollWaitS = options.pollWaitS ?? 5;
    this.heartbeatIntervalMs = options.heartbeatIntervalMs;
    this.log = options.logger ?? consoleLogger();
    this.workerId = options.workerId ?? `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
    this.client = new BatchqClient({ apiUrl: options.apiUrl, apiKey: options.apiKey, fetch: options.fetch, timeoutMs: options.timeoutMs });
    this.reporter = new Reporter(this.client, {
      retryMs: options.reportRetryMs,
      maxBatch: options.maxReportBatch,
      onRetry: (err, delayMs, reports) =>
        this.log.warn(`reporting failed (${describe(err)}); trying again in ${Math.round(delayMs)} ms`, { reports }),
    });
    this.slots = new Slots(concurrency);
    this.held = new Slots(concurrency + prefetch);
  }

  /** POST /v1/reports calls made so far. */
  get reportCalls(): number {
    return this.reporter.calls;
  }

  /** Jobs whose handlers run now (prefetched messages waiting for a slot are not counted). */
  get active(): number {
    return this.handlersRunning;
  }

  /** Start claiming (returns at once). */
  start(): void {
    if (this.started) return;
    if (this.stopped) throw new Error("a stopped worker cannot be started again: make a new one");
    this.started = true;
    this.fetchers = this.queues.map((queue) => this.fetchLoop(queue));
    this.log.info(
      `worker ${this.workerId} serving ${this.queues.join(", ")} (concurrency ${this.concurrency}, prefetch ${this.prefetch}) from ${this.client.http.urls.join(", ")} with jobs: ${this.registry.names.join(", ") || "(none)"}`,
    );
  }

  /** Stop claiming, let running jobs finish and report, then resolve. Safe to call more than once. */
  stop(options: StopOptions = {}): Promise<void> {
    this.stopped ??= this.shutdown(options.timeoutMs);
    return this.stopped;
  }

  /**
   * Start, and serve until stop() is called or the process gets SIGTERM or SIGINT (graceful
   * stop; a second signal gives up on running jobs at once).
   */
  async run(options: { signals?: boolean } = {}): Promise<void> {
    const signals = options.signals ?? true;
    let forced: (() => void) | undefined;
    const forcedNow = new Promise<void>((resolve) => (forced = resolve));
    let seen = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      seen += 1;
      this.log.info(seen === 1 ? `${signal}: stopping after the running jobs` : `${signal} again: giving up on running jobs`);
      if (seen === 1) void this.stop();
      else forced?.();
    };
    if (signals) {
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
    }
    this.forcedStop = forcedNow;
    try {
      this.start();
      await this.whenStopRequested();
      await this.stop();
    } finally {
      if (signals) {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
      }
    }
  }

  private whenStopRequested(): Promise<void> {
    const signal = this.stopping.signal;
    return new Promise((resolve) => (signal.aborted ? resolve() : signal.addEventListener("abort", () => resolve(), { once: true })));
  }

  private async shutdown(timeoutMs: number | undefined): Promise<void> {
    this.stopping.abort();
    if (!this.started) return;
    // Claims on their way are let return: their messages are started and get run.
    await Promise.all(this.fetchers);
    const jobs = Promise.all([...this.running].map((r) => r.done));
    const limits: Promise<unknown>[] = [jobs];
    const timer = new AbortController();
    if (timeoutMs !== undefined) limits.push(sleep(timeoutMs, timer.signal));
    if (this.forcedStop) limits.push(this.forcedStop);
    await Promise.race(limits);
    timer.abort();
    for (const job of this.running) {
      job.controller.abort(new Error("the worker stopped before the job finished"));
    }
    // Reports already handed in are still sent (and retried), unless a second signal says go now.
    await Promise.race([this.reporter.drain(), ...(this.forcedStop ? [this.forcedStop] : [])]);
    this.log.info(`worker ${this.workerId} stopped`, { ...this.stats });
  }

  // ---- claiming --------------------------------------------------------------------------

  private async fetchLoop(queue: string): Promise<void> {
    // Each queue's loop takes at most its share of what the worker may hold, so a long-poll
    // on an empty queue never takes it all while another queue has work.
    const share = Math.max(1, Math.min(100, Math.floor((this.concurrency + this.prefetch) / this.queues.length)));
    let delay = 500;
    while (!this.stopping.signal.aborted) {
      if (!(await this.held.acquire(this.stopping.signal))) return;
      if (this.stopping.signal.aborted) {
        this.held.release(); // granted just as the stop came
        return;
      }
      let taken = 1;
      while (taken < share && this.held.tryAcquire()) taken++;
      let messages: Message[] = [];
      try {
        messages = await this.client.claim(queue, { max: taken, waitS: this.pollWaitS, worker: this.workerId });
        delay = 500;
      } catch (err) {
        this.held.release(taken);
        this.log.warn(`claiming from ${queue} failed (${describe(err)}); trying again in ${delay} ms`, { queue });
        await sleep(delay, this.stopping.signal);
        delay = Math.min(delay * 2, 5_000);
        continue;
      }
      this.stats.claimed += messages.length;
      if (messages.length < taken) this.held.release(taken - messages.length);
      messages.forEach((message, i) => this.launch(message, i < taken));
    }
  }

  private launch(message: Message, holdsSlot: boolean): void {
    const controller = new AbortController();
    const job: Running = { message, controller, done: Promise.resolve() };
    this.running.add(job);
    job.done = this.runJob(message, controller)
      .catch((err) => this.log.error(`unexpected error running a job: ${describe(err)}`, fields(message)))
      .finally(() => {
        this.running.delete(job);
        if (holdsSlot) this.held.release();
      });
  }

  // ---- running one message ---------------------------------------------------------------

  private async runJob(message: Message, controller: AbortController): Promise<void> {
    const handler = this.registry.get(message.name);
    if (!handler) {
      const known = this.registry.names.join(", ") || "none";
      const error = `UnknownJob: no handler for job ${JSON.stringify(message.name)} on worker ${this.workerId} (it knows: ${known})`;
      this.log.error(error, fields(message));
      await this.report(message, { outcome: "failed", error, retryable: false });
      return;
    }
    const lost = new Promise<typeof LOST>((resolve) => controller.signal.addEventListener("abort", () => resolve(LOST), { once: true }));
    const state = { handlerDone: false, stop: new AbortController() };
    // The lease runs from the claim: heartbeats keep it while the message waits for a slot.
    const heartbeats = this.heartbeat(message, controller, state);
    try {
      if (!(await this.slots.acquire(controller.signal))) {
        this.stats.abandoned += 1;
        this.log.warn(`abandoning a job that waited for a slot: ${describe(controller.signal.reason)}`, fields(message));
        return;
      }
      this.handlersRunning += 1;
      const call = Promise.resolve().then(() => handler(message.args ?? {}, this.context(message, controller.signal)));
      call.catch(() => undefined); // an abandoned call's late failure is nobody's business
      let value: unknown;
      try {
        value = await Promise.race([call, lost]);
      } catch (err) {
        value = new Failure(err);
      } finally {
        state.handlerDone = true;
        this.handlersRunning -= 1;
        this.slots.release(); // the next message runs while this one reports
      }
      if (value === LOST || controller.signal.aborted) {
        this.stats.abandoned += 1;
        this.log.warn(`abandoning the job: ${describe(controller.signal.reason)}`, fields(message));
        return;
      }
      // The lease stays alive (heartbeats go on) until the report is settled.
      if (value instanceof Failure) {
        const permanent = isPermanent(value.error);
        if (!permanent) this.log.info(`job failed: ${describe(value.error)}`, fields(message));
        await this.report(message, { outcome: "failed", error: describe(value.error), retryable: !permanent });
      } else {
        await this.report(message, completion(value));
      }
    } finally {
      state.stop.abort();
      await heartbeats;
    }
  }

  private context(message: Message, signal: AbortSignal): JobContext {
    const args = (message.args ?? {}) as JsonObject;
    return {
      jobId: message.job_id,
      batchId: message.batch_id,
      attempt: Number(message.attempt),
      name: message.name,
      kind: message.kind ?? "job",
      position: message.position ?? 0,
      queue: message.queue ?? "default",
      context: { ...(message.context ?? {}) },
      compensation: message.compensation ?? (args["_compensation"] as Compensation | undefined),
      lease: message.lease,
      timeoutS: message.timeout_s ?? undefined,
      message,
      signal,
      addJobs: (jobs) => this.client.addJobs(message.batch_id, jobs),
    };
  }

  private async heartbeat(message: Message, job: AbortController, state: { handlerDone: boolean; stop: AbortController }): Promise<void> {
    const interval = this.heartbeatIntervalMs ?? Math.max(50, (leaseSeconds(message) * 1000) / 3);
    // A heartbeat unanswered for half a lease is given up (or sent to the next URL) in time for another.
    const timeoutMs = Math.min(30_000, Math.max(2_000, interval * 1.5));
    const until = state.stop.signal;
    for (;;) {
      await sleep(interval, until);
      if (until.aborted) return;
      try {
        await this.client.heartbeat(message.job_id, message.attempt, message.lease, { timeoutMs });
        this.stats.heartbeats += 1;
      } catch (err) {
        if (err instanceof BatchqError && (err.status === 404 || err.status === 409)) {
          // While reporting, the report's own answer decides what happened.
          if (!state.handlerDone) {
            this.log.info(`heartbeat refused (${err.status} ${err.code}): the lease is lost`, fields(message));
            job.abort(err);
          }
          return;
        }
        // Try again next beat: the lease has slack.
        this.log.warn(`heartbeat failed: ${describe(err)}`, fields(message));
      }
    }
  }

  private async report(message: Message, outcome: Outcome): Promise<void> {
    const item: ReportItem = { job_id: message.job_id, attempt: message.attempt, lease: message.lease ?? null, ...outcome };
    if (typeof message.traceparent === "string") item.traceparent = message.traceparent;
    if (item.outcome === "failed") item.error = (item.error || "error").slice(0, 20_000);
    try {
      await this.reporter.report(item);
      if (item.outcome === "completed") this.stats.completed += 1;
      else this.stats.failed += 1;
    } catch (err) {
      this.stats.abandoned += 1;
      if (err instanceof BatchqError && (err.status === 404 || err.status === 409)) {
        this.log.warn(`report refused (${err.status} ${err.code}): ${err.message}`, fields(message));
      } else {
        this.log.error(`could not report the job; its lease will run out and it may run again: ${describe(err)}`, fields(message));
      }
    }
  }
}

const LOST = Symbol("lost");

/** A handler's error, told apart from a value it returned. */
class Failure {
  constructor(readonly error: unknown) {}
}

type Outcome = Pick<ReportItem, "outcome" | "result" | "context" | "error" | "retryable">;

/** The report of a handler's return value, or a permanent failure when it cannot be sent as JSON. */
function completion(value: unknown): Outcome {
  let result: unknown = value;
  let context: unknown;
  if (value instanceof JobResult) {
    ({ result, context } = value);
  } else if (isResultShape(value)) {
    result = value["result"];
    context = value["context"];
  }
  if (context !== undefined && context !== null && !isPlainObject(context)) {
    return { outcome: "failed", error: `TypeError: a context update must be an object, got ${typeName(context)}`, retryable: false };
  }
  try {
    JSON.stringify(result ?? null);
    JSON.stringify(context ?? null);
  } catch (err) {
    return { outcome: "failed", error: `TypeError: the result is not JSON serializable: ${describe(err)}`, retryable: false };
  }
  const outcome: Outcome = { outcome: "completed", result: result === undefined ? null : result };
  if (context !== undefined && context !== null) outcome.context = context as JsonObject;
  return outcome;
}

/** A plain object with a `context` and nothing but `result` beside it. */
function isResultShape(value: unknown): value is { result?: unknown; context: unknown } {
  if (!isPlainObject(value)) return false;
  const keys = Object.keys(value);
  return keys.includes("context") && keys.every((k) => k === "context" || k === "result");
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function isPermanent(err: unknown): boolean {
  // By name too, so a PermanentError from another copy of this package still counts.
  return err instanceof PermanentError || (err instanceof Error && err.name === "PermanentError");
}

function typeName(value: unknown): string {
  return Array.isArray(value) ? "array" : value === null ? "null" : typeof value;
}

export function describe(err: unknown): string {
  if (err instanceof Error) return err.message ? `${err.name}: ${err.message}` : err.name;
  return String(err);
}

/** Seconds a lease lasts: the job's timeout_s, else what is left of lease_expires_at, else 60. */
function leaseSeconds(message: Message): number {
  if (typeof message.timeout_s === "number" && message.timeout_s > 0) return message.timeout_s;
  const expires = parseTimestamp(message.lease_expires_at);
  if (expires) return Math.max(1, (expires.getTime() - Date.now()) / 1000);
  return 60;
}

/** An RFC 3339 string or Unix seconds (milliseconds if large) as a Date; undefined if neither. */
export function parseTimestamp(value: unknown): Date | undefined {
  if (typeof value === "number" && Number.isFinite(value)) {
    return new Date(value > 1e11 ? value : value * 1000);
  }
  if (typeof value === "string" && value.trim() !== "") {
    const text = value.trim();
    if (/^-?\d+(\.\d+)?$/.test(text)) return parseTimestamp(Number(text));
    const ms = Date.parse(text);
    return Number.isNaN(ms) ? undefined : new Date(ms);
  }
  return undefined;
}

function fields(message: Message): Record<string, unknown> {
  return { job_id: message.job_id, batch_id: message.batch_id, attempt: message.attempt, job: message.name };
}
