/**
 * HTTP to one or more API URLs, with failover.
 *
 * A call goes to the URL that answered last. On a connection error or a 502/503/504 it moves
 * on to the next URL, each URL once per call; the first that answers becomes the current
 * one. A call that is not safe to send twice (creating a batch without an idempotency key,
 * adding jobs, retrying) moves on only when the request cannot have been acted upon: the
 * connection was refused, or the answer was 503.
 */
import { BatchqError } from "./errors.js";

export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface HttpOptions {
  /** One base URL, several (tried in order, failing over), or a comma-separated list. */
  apiUrl: string | string[];
  /** Sent as `Authorization: Bearer <apiKey>`. */
  apiKey?: string | undefined;
  /** Per-request timeout (default 30 s); a claim adds its long-poll wait to it. */
  timeoutMs?: number | undefined;
  /** A fetch to use instead of the global one (tests, custom agents). */
  fetch?: FetchLike | undefined;
  /** Extra headers on every request. */
  headers?: Record<string, string> | undefined;
}

export type Query = Record<string, string | number | boolean | null | undefined>;

export interface RequestOptions {
  query?: Query | undefined;
  body?: unknown;
  headers?: Record<string, string> | undefined;
  timeoutMs?: number | undefined;
  /** Safe to send again to another URL after a failure in flight (default: true for GET). */
  idempotent?: boolean | undefined;
  signal?: AbortSignal | undefined;
}

/** A whole answer, its body read. */
interface Answer {
  status: number;
  statusText: string;
  headers: Headers;
  text: string;
}

const FAILOVER_STATUSES = new Set([502, 503, 504]);
// The request never reached a server: safe to send elsewhere whatever it does.
const NOT_SENT_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL"]);

export function parseUrls(apiUrl: string | string[]): string[] {
  const list = (Array.isArray(apiUrl) ? apiUrl : apiUrl.split(","))
    .map((u) => u.trim().replace(/\/+$/, ""))
    .filter((u) => u.length > 0);
  if (list.length === 0) throw new TypeError("give at least one API URL");
  for (const url of list) {
    if (!/^https?:\/\//i.test(url)) throw new TypeError(`not an http(s) URL: ${url}`);
  }
  return list;
}

export class Http {
  readonly urls: readonly string[];
  private current = 0;
  private readonly fetchImpl: FetchLike;
  private readonly timeoutMs: number;
  private readonly headers: Record<string, string>;

  constructor(options: HttpOptions) {
    this.urls = parseUrls(options.apiUrl);
    this.fetchImpl = options.fetch ?? ((input, init) => fetch(input, init));
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.headers = { accept: "application/json", ...options.headers };
    if (options.apiKey) this.headers["authorization"] = `Bearer ${options.apiKey}`;
  }

  /** The base URL calls go to now. */
  get currentUrl(): string {
    return this.urls[this.current]!;
  }

  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const idempotent = options.idempotent ?? method === "GET";
    const start = this.current;
    let lastError: BatchqError | undefined;
    for (let i = 0; i < this.urls.length; i++) {
      const index = (start + i) % this.urls.length;
      const base = this.urls[index]!;
      let response: Answer;
      try {
        response = await this.send(method, base + path + queryString(options.query), options);
      } catch (err) {
        if (options.signal?.aborted) throw err;
        lastError = err instanceof BatchqError ? err : unreachable(base, err);
        if (idempotent || notSent(err)) continue;
        throw lastError;
      }
      if (FAILOVER_STATUSES.has(response.status) && (idempotent || response.status === 503)) {
        lastError = errorFrom(response, base);
        continue;
      }
      this.current = index;
      if (response.status < 200 || response.status > 299) throw errorFrom(response, base);
      return readJson(response, base) as T;
    }
    throw lastError!;
  }

  private async send(method: string, url: string, options: RequestOptions): Promise<Answer> {
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onAbort = () => controller.abort();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const headers: Record<string, string> = { ...this.headers, ...options.headers };
      const init: RequestInit = { method, headers, signal: controller.signal };
      if (options.body !== undefined) {
        headers["content-type"] = "application/json";
        init.body = JSON.stringify(options.body);
      }
      const response = await this.fetchImpl(url, init);
      // The body is read under the same timeout and abort signal.
      const text = await response.text();
      return { status: response.status, statusText: response.statusText, headers: response.headers, text };
    } catch (err) {
      if (timedOut) {
        throw new BatchqError(0, "timeout", `no answer from ${origin(url)} within ${timeoutMs} ms`, { url: origin(url), cause: err });
      }
      throw err;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    }
  }
}

function queryString(query: Query | undefined): string {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

function origin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}

function errorCode(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: unknown; errors?: { code?: unknown }[] } } | undefined)?.cause;
  if (!cause) return undefined;
  if (typeof cause.code === "string") return cause.code;
  const codes = (cause.errors ?? []).map((e) => e?.code).filter((c): c is string => typeof c === "string");
  // Happy eyeballs tried several addresses: refused only if every one refused.
  return codes.length > 0 && codes.every((c) => NOT_SENT_CODES.has(c)) ? codes[0] : codes[codes.length - 1];
}

function notSent(err: unknown): boolean {
  const code = errorCode(err);
  return code !== undefined && NOT_SENT_CODES.has(code);
}

function unreachable(base: string, err: unknown): BatchqError {
  const code = errorCode(err);
  const why = code ?? (err instanceof Error ? err.message : String(err));
  return new BatchqError(0, "unreachable", `cannot reach ${base}: ${why}`, { url: base, cause: err });
}

/** `Retry-After` in milliseconds: delta-seconds or an HTTP date. */
export function retryAfterMs(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const seconds = Number(value.trim());
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

function readJson(response: Answer, base: string): unknown {
  const text = response.text;
  if (text === "") return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new BatchqError(response.status, "invalid_response", `${base} answered ${response.status} with a body that is not JSON: ${text.slice(0, 200)}`, { url: base });
  }
}

/** A BatchqError from an error answer: the API's `{"error": {...}}` shape, or the raw text. */
function errorFrom(response: Answer, base: string): BatchqError {
  const text = response.text;
  const extra = { retryAfterMs: retryAfterMs(response.headers.get("retry-after")), url: base };
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; field?: unknown } };
    const e = body?.error;
    if (e && typeof e === "object" && typeof e.code === "string") {
      const message = typeof e.message === "string" ? e.message : e.code;
      return new BatchqError(response.status, e.code, message, { ...extra, field: typeof e.field === "string" ? e.field : undefined });
    }
  } catch {
    // not JSON: a proxy's page, say
  }
  const detail = text.trim().slice(0, 300) || response.statusText;
  return new BatchqError(response.status, "http_error", `${response.status} from ${base}: ${detail}`, extra);
}
