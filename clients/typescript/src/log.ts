/** The worker's logging: any object with these methods (console-like loggers fit). */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";
const ORDER: LogLevel[] = ["debug", "info", "warn", "error", "silent"];

/** Lines on stderr, `key=value` fields after the message (job_id, batch_id, attempt on job lines). */
export function consoleLogger(level: LogLevel = "warn"): Logger {
  const min = ORDER.indexOf(level);
  const line = (lvl: LogLevel) => (message: string, fields?: Record<string, unknown>) => {
    if (ORDER.indexOf(lvl) < min) return;
    const extra = fields ? Object.entries(fields).map(([k, v]) => ` ${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join("") : "";
    process.stderr.write(`${new Date().toISOString()} ${lvl.toUpperCase()} batchq.worker: ${message}${extra}\n`);
  };
  return { debug: line("debug"), info: line("info"), warn: line("warn"), error: line("error") };
}
