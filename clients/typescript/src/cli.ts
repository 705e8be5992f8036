#!/usr/bin/env node
/**
 * batchq-worker-ts MODULE [--queue Q]... [--concurrency N] [--prefetch N] [--api-url URL[,URL...]] [--poll-wait S]
 *
 * MODULE exports `handlers` (a Registry or an object of job name -> handler), or has one as
 * its default export. BATCHQ_API_URL and BATCHQ_API_KEY are read from the environment,
 * BATCHQ_LOG_LEVEL (debug, info, warn, error) sets the logging. SIGTERM / SIGINT stop
 * gracefully; a second signal gives up on running jobs.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { consoleLogger, type LogLevel } from "./log.js";
import { Registry, Worker, type Handler } from "./worker.js";

const USAGE = "usage: batchq-worker-ts MODULE [--queue Q]... [--concurrency N] [--prefetch N] [--api-url URL[,URL...]] [--poll-wait S]";

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      queue: { type: "string", multiple: true, short: "q" },
      concurrency: { type: "string", short: "c" },
      prefetch: { type: "string" },
      "api-url": { type: "string" },
      "poll-wait": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || positionals.length !== 1) {
    process.stderr.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  const apiUrl = values["api-url"] ?? process.env["BATCHQ_API_URL"] ?? "http://127.0.0.1:8000";
  const module = (await import(pathToFileURL(resolve(positionals[0]!)).href)) as Record<string, unknown>;
  const handlers = (module["handlers"] ?? module["default"]) as Registry | Record<string, Handler> | undefined;
  if (!handlers || typeof handlers !== "object") {
    process.stderr.write(`${positionals[0]} exports no \`handlers\` (nor a default export)\n`);
    return 2;
  }
  const worker = new Worker({
    apiUrl,
    apiKey: process.env["BATCHQ_API_KEY"] || undefined,
    handlers,
    queues: values.queue ?? ["default"],
    concurrency: values.concurrency ? Number(values.concurrency) : 1,
    prefetch: values.prefetch ? Number(values.prefetch) : undefined,
    pollWaitS: values["poll-wait"] ? Number(values["poll-wait"]) : undefined,
    logger: consoleLogger((process.env["BATCHQ_LOG_LEVEL"] as LogLevel | undefined) ?? "info"),
  });
  await worker.run();
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
