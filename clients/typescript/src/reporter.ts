/**
 * Sends attempts' outcomes to POST /v1/reports, coalescing those that finish together.
 *
 * One call is on its way at a time. A report is sent at once when the line is free; reports
 * finishing meanwhile wait and go together in the next call (up to `maxBatch`). Nothing waits
 * on a timer, so a lone job is reported as fast as with /complete, and a busy worker makes
 * far fewer calls.
 *
 * A call that gets no answer, a 429 or a 5xx is tried again with exponential backoff and full
 * jitter (never sooner than a `Retry-After`), until `retryMs` has passed since its oldest
 * report was handed in; reports arriving meanwhile join the retry. Retrying is safe: the API
 * treats a repeated report of the same attempt as a duplicate. A 422 for several reports is
 * split so one bad report cannot sink the others.
 */
import type { BatchqClient } from "./client.js";
import { sleep } from "./client.js";
import { BatchqError } from "./errors.js";
import type { ReportItem, ReportOutcome } from "./types.js";

export interface ReporterOptions {
  /** Most reports in one call (the API takes up to 500). */
  maxBatch?: number | undefined;
  /** How long to keep retrying a report before giving up (default 300 000 ms). */
  retryMs?: number | undefined;
  backoffBaseMs?: number | undefined;
  backoffMaxMs?: number | undefined;
  /** Told about each failed call that will be tried again. */
  onRetry?: ((error: unknown, delayMs: number, reports: number) => void) | undefined;
}

interface Pending {
  item: ReportItem;
  since: number;
  resolve: (outcome: ReportOutcome) => void;
  reject: (error: unknown) => void;
}

export class Reporter {
  /** POST /v1/reports calls made, retries included. */
  calls = 0;
  private queue: Pending[] = [];
  private pump: Promise<void> | null = null;
  private readonly maxBatch: number;
  private readonly retryMs: number;
  private readonly backoffBaseMs: number;
  private readonly backoffMaxMs: number;

  constructor(
    private readonly client: BatchqClient,
    private readonly options: ReporterOptions = {},
  ) {
    this.maxBatch = Math.max(1, Math.min(500, options.maxBatch ?? 100));
    this.retryMs = options.retryMs ?? 300_000;
    this.backoffBaseMs = options.backoffBaseMs ?? 200;
    this.backoffMaxMs = options.backoffMaxMs ?? 10_000;
  }

  /** Send one report. Resolves with the API's outcome; rejects with a BatchqError (404/409 for a refused report). */
  report(item: ReportItem): Promise<ReportOutcome> {
    return new Promise((resolve, reject) => {
      this.queue.push({ item, since: Date.now(), resolve, reject });
      // setImmediate: outcomes settled in this same turn of the event loop go in one call.
      this.pump ??= new Promise<void>((done) => setImmediate(done)).then(() => this.run());
    });
  }

  /** Resolves once every report handed in so far is settled. */
  async drain(): Promise<void> {
    while (this.pump) await this.pump;
  }

  private async run(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        await this.send(this.take([]));
      }
    } finally {
      this.pump = null;
    }
  }

  /** Waiting reports, up to the batch size, after those already in hand. */
  private take(batch: Pending[]): Pending[] {
    const room = this.maxBatch - batch.length;
    return room > 0 ? batch.concat(this.queue.splice(0, room)) : batch;
  }

  private async send(batch: Pending[]): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      let outcomes: ReportOutcome[];
      try {
        this.calls++;
        outcomes = await this.client.reports(batch.map((p) => p.item));
      } catch (err) {
        if (err instanceof BatchqError && err.status === 422 && batch.length > 1) {
          for (const one of batch) await this.send([one]);
          return;
        }
        const delay = this.delay(err, attempt);
        const oldest = Math.min(...batch.map((p) => p.since));
        if (delay === undefined || Date.now() + delay > oldest + this.retryMs) {
          for (const p of batch) p.reject(err);
          return;
        }
        this.options.onRetry?.(err, delay, batch.length);
        await sleep(delay);
        batch = this.take(batch);
        continue;
      }
      batch.forEach((p, i) => settle(p, outcomes[i]));
      return;
    }
  }

  /** Milliseconds before the next try, or undefined when trying again cannot help. */
  private delay(err: unknown, attempt: number): number | undefined {
    if (!(err instanceof BatchqError) || !err.transient) return undefined;
    const ceiling = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** attempt);
    const jittered = Math.random() * ceiling;
    return Math.max(jittered, err.retryAfterMs ?? 0);
  }
}

function settle(pending: Pending, outcome: ReportOutcome | undefined): void {
  if (outcome === undefined) {
    pending.reject(new BatchqError(0, "invalid_response", `the API gave no outcome for the report of job ${pending.item.job_id}`));
  } else if (outcome.status_code === 200) {
    pending.resolve(outcome);
  } else {
    const status = outcome.status_code ?? 409;
    const code = outcome.error?.code ?? "conflict";
    pending.reject(new BatchqError(status, code, outcome.error?.message ?? `report refused (${status})`));
  }
}
