/** Shared by the tests: the server under test, unique queues, workers that always stop. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";
import type { TestContext } from "node:test";
import { BatchqClient, Worker, type LogLevel, type WorkerOptions, consoleLogger } from "../src/index.js";

/** The real batchq server the tests talk to (tests/test_typescript_client.py starts one). */
export function apiUrl(): string {
  const url = process.env["BATCHQ_TEST_API_URL"];
  if (!url) {
    throw new Error("BATCHQ_TEST_API_URL is not set: point it at a running batchq server (tests/test_typescript_client.py does)");
  }
  return url.replace(/\/+$/, "");
}

/** A queue of the test's own, so concurrent tests never take each other's jobs. */
export function queue(name: string): string {
  return `ts-${name}-${randomBytes(4).toString("hex")}`;
}

export function client(url: string | string[] = apiUrl()): BatchqClient {
  return new BatchqClient({ apiUrl: url });
}

/** A started worker that is stopped when the test ends. */
export function startWorker(t: TestContext, options: Partial<WorkerOptions> & Pick<WorkerOptions, "handlers" | "queues">): Worker {
  const worker = new Worker({
    apiUrl: apiUrl(),
    pollWaitS: 1,
    logger: consoleLogger((process.env["BATCHQ_TEST_LOG_LEVEL"] as LogLevel | undefined) ?? "silent"),
    ...options,
  });
  worker.start();
  t.after(() => worker.stop({ timeoutMs: 5_000 }));
  return worker;
}

/** Poll `check` until it returns something truthy; fail after `timeoutMs`. */
export async function waitFor<T>(check: () => T | Promise<T>, what: string, timeoutMs = 30_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A URL where nothing listens (a port that was free a moment ago). */
export async function deadUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

export type Intercept = (req: IncomingMessage, body: string) => { status: number; headers?: Record<string, string>; body?: string } | undefined;

/**
 * An HTTP server in front of `target` that passes requests on, unless `intercept` answers
 * one itself. Records every request's method, path and headers.
 */
export async function proxy(t: TestContext, target: string, intercept: Intercept = () => undefined) {
  const seen: { method: string; path: string; headers: IncomingMessage["headers"]; at: number; answered: number }[] = [];
  const server: Server = createServer((req, res) => void handle(req, res));
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString();
    const own = intercept(req, body);
    seen.push({ method: req.method ?? "", path: req.url ?? "", headers: req.headers, at: Date.now(), answered: own ? own.status : 0 });
    if (own) {
      res.writeHead(own.status, own.headers ?? {});
      res.end(own.body ?? "");
      return;
    }
    try {
      const headers: Record<string, string> = {};
      for (const name of ["content-type", "authorization", "idempotency-key", "accept"]) {
        const value = req.headers[name];
        if (typeof value === "string") headers[name] = value;
      }
      const init: RequestInit = { method: req.method ?? "GET", headers };
      if (body) init.body = body;
      const answer = await fetch(target + (req.url ?? "/"), init);
      const text = await answer.text();
      res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" });
      res.end(text);
    } catch (err) {
      res.writeHead(502);
      res.end(String(err));
    }
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, seen };
}
