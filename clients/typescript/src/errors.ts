/** Errors thrown by the client, and the one a handler throws to fail a job for good. */

/**
 * Any failed call to the API. `status` is the HTTP status, or 0 when no answer came
 * (`code` "unreachable" or "timeout"). `code`, `message` and `field` come from the API's
 * one error shape `{"error": {"code", "message", "field"?}}`.
 */
export class BatchqError extends Error {
  override readonly name = "BatchqError";
  readonly status: number;
  readonly code: string;
  readonly field: string | undefined;
  /** From a `Retry-After` header, when the API sent one. */
  readonly retryAfterMs: number | undefined;
  /** The base URL that gave this answer (or could not be reached). */
  readonly url: string | undefined;

  constructor(
    status: number,
    code: string,
    message: string,
    extra: { field?: string | undefined; retryAfterMs?: number | undefined; url?: string | undefined; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.status = status;
    this.code = code;
    this.field = extra.field;
    this.retryAfterMs = extra.retryAfterMs;
    this.url = extra.url;
  }

  /** No HTTP answer at all (connection refused, reset, DNS, timeout). */
  get unreachable(): boolean {
    return this.status === 0;
  }

  /** Worth trying again later: no answer, a gateway error, 429 or any 5xx. */
  get transient(): boolean {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

/** Throw from a handler when retrying cannot help: the job fails without further attempts. */
export class PermanentError extends Error {
  override readonly name: string = "PermanentError";
}
