/** Typed methods for the batchq API: define work, read it, steer it, and the worker calls. */
import { BatchqError } from "./errors.js";
import { Http, type HttpOptions, type RequestOptions } from "./http.js";
import {
  FINISHED_STATUSES,
  type AddJobsReply,
  type Batch,
  type BatchInput,
  type BatchList,
  type ChainInput,
  type EventPage,
  type JobDetail,
  type JobInput,
  type JobKind,
  type JobList,
  type JobStatus,
  type Message,
  type Progress,
  type QueueInfo,
  type ReportItem,
  type ReportOutcome,
  type Results,
  type RetryReply,
  type Webhook,
  type BatchStatus,
} from "./types.js";

export type ClientOptions = HttpOptions;

export interface CreateOptions {
  /** Sent as `Idempotency-Key`: the same key creates the batch once. Also makes the call safe to fail over. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface ListBatchesOptions {
  status?: BatchStatus;
  queue?: string;
  type?: "parallel" | "chain";
  limit?: number;
  /** The `next` of the previous page. */
  before?: string;
}

export interface ListJobsOptions {
  status?: JobStatus;
  kind?: JobKind;
  limit?: number;
  offset?: number;
}

export interface ClaimOptions {
  max?: number;
  /** Long-poll for up to this many seconds when the queue is empty. */
  waitS?: number;
  worker?: string;
  signal?: AbortSignal;
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  signal?: AbortSignal;
}

const seg = encodeURIComponent;

export class BatchqClient {
  readonly http: Http;

  constructor(options: ClientOptions) {
    this.http = new Http(options);
  }

  // ---- defining work -------------------------------------------------------------------

  /** POST /v1/batches: a parallel batch (or a chain with `type: "chain"`). */
  createBatch(batch: BatchInput, options: CreateOptions = {}): Promise<Batch> {
    return this.create("/v1/batches", batch, options);
  }

  /** POST /v1/chains: jobs one after another, passing a context along. */
  createChain(chain: ChainInput, options: CreateOptions = {}): Promise<Batch> {
    return this.create("/v1/chains", chain, options);
  }

  private create(path: string, body: unknown, options: CreateOptions): Promise<Batch> {
    const key = options.idempotencyKey;
    return this.http.request<Batch>("POST", path, {
      body,
      headers: key ? { "idempotency-key": key } : undefined,
      idempotent: Boolean(key),
      signal: options.signal,
    });
  }

  /** POST /v1/batches/{id}/jobs: append jobs to a running batch (409 once it has ended). */
  addJobs(batchId: string, jobs: JobInput[]): Promise<AddJobsReply> {
    return this.http.request("POST", `/v1/batches/${seg(batchId)}/jobs`, { body: { jobs }, idempotent: false });
  }

  // ---- reading -------------------------------------------------------------------------

  getBatch(batchId: string): Promise<Batch> {
    return this.http.request("GET", `/v1/batches/${seg(batchId)}`);
  }

  getProgress(batchId: string): Promise<Progress> {
    return this.http.request("GET", `/v1/batches/${seg(batchId)}/progress`);
  }

  /** Newest first; pass the reply's `next` as `before` for the next page. */
  listBatches(options: ListBatchesOptions = {}): Promise<BatchList> {
    return this.http.request("GET", "/v1/batches", { query: { ...options } });
  }

  listJobs(batchId: string, options: ListJobsOptions = {}): Promise<JobList> {
    return this.http.request("GET", `/v1/batches/${seg(batchId)}/jobs`, { query: { ...options } });
  }

  /** One job, with its result and every attempt. */
  getJob(batchId: string, jobId: string): Promise<JobDetail> {
    return this.http.request("GET", `/v1/batches/${seg(batchId)}/jobs/${seg(jobId)}`);
  }

  /** `{job_id: result}` of the completed jobs, with the batch's status and context. */
  getResults(batchId: string): Promise<Results> {
    return this.http.request("GET", `/v1/batches/${seg(batchId)}/results`);
  }

  /** The batch's events as one JSON page (`after`: only events with a larger id). */
  listEvents(batchId: string, options: { after?: number } = {}): Promise<EventPage> {
    return this.http.request("GET", `/v1/batches/${seg(batchId)}/events`, { query: { stream: false, after: options.after } });
  }

  /** Every webhook of the batch and each delivery attempt. */
  async listCallbacks(batchId: string): Promise<Webhook[]> {
    const reply = await this.http.request<{ webhooks: Webhook[] }>("GET", `/v1/batches/${seg(batchId)}/callbacks`);
    return reply.webhooks;
  }

  async listQueues(): Promise<QueueInfo[]> {
    const reply = await this.http.request<{ queues: QueueInfo[] }>("GET", "/v1/queues");
    return reply.queues;
  }

  /** Poll the batch until it has ended (completed, completed_with_failures, failed, cancelled). */
  async waitForBatch(batchId: string, options: WaitOptions = {}): Promise<Batch> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const batch = await this.getBatch(batchId);
      if (FINISHED_STATUSES.includes(batch.status)) return batch;
      if (Date.now() >= deadline) {
        throw new BatchqError(0, "timeout", `batch ${batchId} still ${batch.status} after ${timeoutMs} ms`);
      }
      await sleep(options.intervalMs ?? 200, options.signal);
    }
  }

  // ---- steering ------------------------------------------------------------------------

  /** Nothing more of the batch is dispatched; reports of its jobs get 409. */
  cancelBatch(batchId: string): Promise<Batch> {
    return this.http.request("POST", `/v1/batches/${seg(batchId)}/cancel`, { idempotent: true });
  }

  /** Run every failed job of the batch again, with a fresh attempt budget. */
  retryBatch(batchId: string): Promise<RetryReply> {
    return this.http.request("POST", `/v1/batches/${seg(batchId)}/retry`, { idempotent: false });
  }

  /** Run the chosen failed jobs again (422 naming any id that is not a failed job of the batch). */
  retryJobs(batchId: string, jobIds: string[]): Promise<RetryReply> {
    return this.http.request("POST", `/v1/batches/${seg(batchId)}/jobs/retry`, { body: { job_ids: jobIds }, idempotent: false });
  }

  // ---- the worker calls ----------------------------------------------------------------

  /** POST /v1/queues/{queue}/claim: long-polls, returns started messages (each with its lease). */
  async claim(queue: string, options: ClaimOptions = {}): Promise<Message[]> {
    const waitS = options.waitS ?? 0;
    const body: Record<string, unknown> = { max: options.max ?? 1, wait_s: waitS };
    if (options.worker) body["worker"] = options.worker;
    const request: RequestOptions = {
      body,
      idempotent: true,
      timeoutMs: waitS * 1000 + 30_000,
      signal: options.signal,
    };
    const reply = await this.http.request<{ messages: Message[] }>("POST", `/v1/queues/${seg(queue)}/claim`, request);
    return reply.messages;
  }

  /** Extend the lease of a running attempt; a 404/409 (BatchqError) means the lease is lost. */
  heartbeat(jobId: string, attempt: number, lease: string | null | undefined, options: { timeoutMs?: number } = {}): Promise<Record<string, unknown>> {
    const body = { attempt, lease: lease ?? null };
    return this.http.request("POST", `/v1/jobs/${seg(jobId)}/heartbeat`, { body, idempotent: true, timeoutMs: options.timeoutMs });
  }

  /** Several outcomes in one call; each gets its own `status_code` (200, or 404/409 for it alone). */
  async reports(items: ReportItem[]): Promise<ReportOutcome[]> {
    const reply = await this.http.request<{ results: ReportOutcome[] }>("POST", "/v1/reports", { body: { reports: items }, idempotent: true });
    return reply.results;
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
