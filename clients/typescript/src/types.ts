/**
 * Shapes of the API's requests and replies (openapi/openapi.json, openapi/message.schema.json).
 *
 * Typed loosely on purpose where the contract is moving: timestamps may be RFC 3339 strings
 * or Unix seconds, ids are opaque strings, counters that are being renamed are optional, and
 * every reply may carry fields added later.
 */

/** RFC 3339 string (e.g. "2026-01-02T03:04:05Z") or Unix time in seconds. */
export type Timestamp = string | number;

/** A JSON value (what results, args and contexts are made of). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: unknown };

export type BatchType = "parallel" | "chain";
export type BatchStatus =
  | "running"
  | "compensating"
  | "completed"
  | "completed_with_failures"
  | "failed"
  | "cancelled";
export type JobStatus = "waiting" | "queued" | "running" | "completed" | "failed" | "cancelled";
export type JobKind = "job" | "compensation" | "callback";
export type FailurePolicy = "fail_fast" | "allow_failures";

export const FINISHED_STATUSES: readonly string[] = ["completed", "completed_with_failures", "failed", "cancelled"];

// ---- defining work ---------------------------------------------------------------------

export interface CompensationSpec {
  name: string;
  args?: JsonObject;
  max_attempts?: number;
}

export interface JobSpec {
  name: string;
  args?: JsonObject;
  compensation?: string | CompensationSpec;
  max_attempts?: number;
  timeout_s?: number;
  queue?: string;
}

/** A job: "Name", ["Name", "CompensationName"] or the full object. */
export type JobInput = string | [string] | [string, string] | JobSpec;

export interface WebhookSpec {
  url: string;
  headers?: Record<string, string>;
}

export interface CallbackSpec {
  url?: string;
  headers?: Record<string, string>;
  job?: { name: string; args?: JsonObject };
}

export interface EventHookSpec extends WebhookSpec {
  events?: string[];
}

export interface BatchInput {
  type?: BatchType;
  jobs?: JobInput[];
  /** Shorthand: one `job` per item of `items` (the item is its `item` argument). */
  job?: string;
  items?: unknown[];
  context?: JsonObject;
  queue?: string;
  failure_policy?: FailurePolicy;
  max_concurrency?: number;
  max_attempts?: number;
  timeout_s?: number;
  on_complete?: CallbackSpec;
  on_failure?: CallbackSpec;
  on_event?: EventHookSpec;
}

export type ChainInput = Omit<BatchInput, "type" | "max_concurrency">;

// ---- reading ---------------------------------------------------------------------------

export interface Progress {
  batch_id?: string;
  status: BatchStatus | (string & {});
  type: BatchType | (string & {});
  /** The batch's own jobs (compensations and callbacks are not counted). */
  total: number;
  /** Not dispatched yet: a later chain step, over max_concurrency, or retried. */
  waiting: number;
  /** A message is on its way to a worker. */
  queued: number;
  /** A worker holds the lease. */
  running: number;
  completed: number;
  failed: number;
  cancelled: number;
  percentage: number;
  compensations?: { open: number; completed: number; failed: number; cancelled: number };
  [key: string]: unknown;
}

export interface Batch extends Progress {
  id: string;
  queue: string;
  context: JsonObject;
  failure_policy: FailurePolicy | (string & {});
  max_concurrency: number | null;
  on_complete?: CallbackSpec | null;
  on_failure?: CallbackSpec | null;
  on_event?: EventHookSpec | null;
  error?: string | null;
  created_at?: Timestamp | null;
  updated_at?: Timestamp | null;
  finished_at?: Timestamp | null;
}

export interface BatchList {
  batches: Batch[];
  /** The `before` of the next page, or null on the last one. */
  next: string | null;
}

export interface Job {
  id: string;
  batch_id: string;
  position: number;
  kind: JobKind | (string & {});
  name: string;
  queue: string;
  args: JsonObject;
  compensation?: unknown;
  status: JobStatus | (string & {});
  attempts: number;
  max_attempts: number | null;
  timeout_s: number | null;
  error: string | null;
  /** Present once completed (a null result stays null). */
  result?: unknown;
  original_job_id?: string;
  cancel_reason?: string;
  created_at?: Timestamp | null;
  queued_at?: Timestamp | null;
  started_at?: Timestamp | null;
  finished_at?: Timestamp | null;
  failed_at?: Timestamp | null;
  [key: string]: unknown;
}

export interface Attempt {
  attempt: number;
  status: string;
  worker: string | null;
  error: string | null;
  queued_at?: Timestamp | null;
  started_at?: Timestamp | null;
  finished_at?: Timestamp | null;
  lease_expires_at?: Timestamp | null;
  [key: string]: unknown;
}

export interface JobDetail extends Job {
  attempt_history: Attempt[];
}

export interface JobList {
  jobs: Job[];
  limit: number;
  offset: number;
}

export interface Results {
  batch_id: string;
  status: BatchStatus | (string & {});
  context: JsonObject;
  /** job id -> result, for completed jobs. */
  results: Record<string, unknown>;
}

export interface AddJobsReply {
  /** The batch, without its context. */
  batch: Batch;
  added: number;
  job_ids: string[];
}

export interface RetryReply {
  /** The batch, without its context. */
  batch: Batch;
  /** How many jobs run again. */
  retried: number;
}

export interface BatchEvent {
  id: number | string;
  type: string;
  batch_id: string;
  data: JsonObject;
  at?: Timestamp | null;
  [key: string]: unknown;
}

export interface EventPage {
  events: BatchEvent[];
}

export interface Webhook {
  id: number | string;
  event_type: string;
  url: string;
  status: string;
  attempts: number;
  last_error: string | null;
  deliveries: unknown[];
  created_at?: Timestamp | null;
  delivered_at?: Timestamp | null;
  [key: string]: unknown;
}

export interface QueueInfo {
  name: string;
  declared: boolean;
  depth: number;
  queued: number;
  running: number;
  oldest_age_s: number;
  [key: string]: unknown;
}

// ---- the worker protocol ---------------------------------------------------------------

export interface Compensation {
  batch_id: string;
  original_job_id: string;
  original_job_name: string;
  original_args: JsonObject;
  error: string | null;
  failed_job_id: string;
  context: JsonObject;
}

/** One started delivery (attempt) of a job, as returned by claim. */
export interface Message {
  job_id: string;
  batch_id: string;
  attempt: number;
  lease?: string;
  lease_expires_at?: Timestamp;
  name: string;
  kind: JobKind | (string & {});
  args: JsonObject;
  context: JsonObject;
  position: number;
  queue: string;
  timeout_s?: number | null;
  max_attempts?: number | null;
  compensation?: Compensation;
  /** W3C trace context of the batch's creation, when it had one: the worker sends it back with the report. */
  traceparent?: string | null;
  [key: string]: unknown;
}

export interface ReportItem {
  job_id: string;
  attempt: number;
  lease: string | null;
  outcome: "completed" | "failed";
  result?: unknown;
  context?: JsonObject;
  error?: string;
  retryable?: boolean;
  /** The message's traceparent, as it came: the server's span of the report joins the batch's trace. */
  traceparent?: string;
}

/** The API's answer for one report: `status_code` 200, or 404/409 for that report alone. */
export interface ReportOutcome {
  job_id: string;
  attempt: number;
  status_code: number;
  duplicate?: boolean;
  error?: { code: string; message: string };
  [key: string]: unknown;
}
