// Builds the winston logger. Lines are "<ISO time> <level> <event> key=value …" so that grep and fail2ban
// can read them; the event names are fixed (http.request, upload.committed, auth.failed, …). LogFormat = "json"
// writes the same events and fields as one JSON object per line instead. LogFile is reopened by name on SIGHUP
// (reopenLogFile), which is what logrotate's postrotate asks for after renaming it.
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import winston from 'winston';
import type { Config } from './config.js';

export type Logger = winston.Logger;
export type LogFormat = 'text' | 'json';

const SKIP = new Set(['level', 'message', 'timestamp']);

function formatValue(value: unknown): string {
  const textValue = typeof value === 'string' ? value : JSON.stringify(value) ?? String(value);
  return /^[^\s"=]+$/.test(textValue) ? textValue : JSON.stringify(textValue);
}

export const lineFormat = winston.format.printf((info) => {
  const fields = Object.entries(info)
    .filter(([key]) => !SKIP.has(key))
    .map(([key, value]) => `${key}=${formatValue(value)}`);
  return [info.timestamp, info.level, info.message, ...fields].join(' ');
});

/** Values JSON has no form for: a bigint as its digits, an Error as its stack. */
function jsonValue(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Error) return value.stack ?? value.message;
  return value;
}

/**
 * `{"time":…,"level":…,"event":…,…fields}`: the fields of the text line, under the same names. JSON.stringify
 * escapes every newline, so one event stays one line (a stack included).
 */
export const jsonFormat = winston.format.printf((info) => {
  const line: Record<string, unknown> = { time: info.timestamp, level: info.level, event: info.message };
  for (const [key, value] of Object.entries(info)) {
    if (!SKIP.has(key) && !Object.hasOwn(line, key)) line[key] = value;
  }
  return JSON.stringify(line, jsonValue);
});

/** The whole format of a line: the time stamp, then text or JSON. */
export function logFormat(format: LogFormat = 'text'): winston.Logform.Format {
  return winston.format.combine(winston.format.timestamp(), format === 'json' ? jsonFormat : lineFormat);
}

function errorCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err));
}

function openAppend(file: string): number {
  mkdirSync(path.dirname(file), { recursive: true });
  return openSync(file, 'a', 0o640);
}

/**
 * LogFile, appended with plain synchronous writes: a line is in the file once the call returns, so nothing
 * waits in a buffer when the process exits, and a reopen cannot reorder lines. reopen() opens the path again
 * (the file logrotate created after renaming the old one) and only then lets go of the old descriptor.
 */
export class LogFileStream extends Writable {
  readonly file: string;
  private fd: number;
  /** The errno of the last failed write, reported once until a write succeeds again. */
  private failing: string | undefined;

  /** Throws when the file cannot be opened, so a wrong LogFile stops the start with its reason. */
  constructor(file: string) {
    super({ decodeStrings: true });
    this.file = file;
    this.fd = openAppend(file);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    try {
      for (let written = 0; written < chunk.length; ) written += writeSync(this.fd, chunk, written);
      this.failing = undefined;
    } catch (err) {
      // A full disk must not take the server down with it: say so once on stderr and keep serving.
      const code = errorCode(err);
      if (this.failing !== code) process.stderr.write(`hmac-file-server: cannot write LogFile ${this.file}: ${code}\n`);
      this.failing = code;
    }
    callback();
  }

  /** Opens the path again; on failure throws and keeps writing to the file it had. */
  reopen(): void {
    const fd = openAppend(this.file);
    const old = this.fd;
    this.fd = fd;
    closeSync(old);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
    callback(error);
  }
}

const logFiles = new WeakMap<Logger, LogFileStream>();

export type LoggerConfig = Pick<Config, 'LoggingEnabled' | 'LogLevel' | 'LogFile'> & Partial<Pick<Config, 'LogFormat'>>;

export function createLogger(config: LoggerConfig): Logger {
  const file = config.LogFile ? new LogFileStream(config.LogFile) : undefined;
  const transport = file ? new winston.transports.Stream({ stream: file, eol: '\n' }) : new winston.transports.Console({ eol: '\n' });
  const logger = winston.createLogger({
    level: config.LogLevel,
    silent: !config.LoggingEnabled,
    format: logFormat(config.LogFormat),
    transports: [transport],
  });
  if (file) logFiles.set(logger, file);
  return logger;
}

/**
 * SIGHUP: LogFile is opened again by name, so after logrotate's rename the next lines go to the new file
 * (`log.reopened` is its first line). If it cannot be opened, stderr says so and the lines keep going to the
 * file opened before (`log.reopen_failed` there). Without LogFile (standard output) there is nothing to do.
 */
export function reopenLogFile(logger: Logger): boolean {
  const file = logFiles.get(logger);
  if (!file) return true;
  try {
    file.reopen();
  } catch (err) {
    const cause = errorCode(err);
    process.stderr.write(`hmac-file-server: cannot reopen LogFile ${file.file}: ${cause}; still writing to the file opened before\n`);
    logger.error('log.reopen_failed', { file: file.file, cause });
    return false;
  }
  logger.info('log.reopened', { file: file.file });
  return true;
}

export interface AuthFailure {
  client: string;
  reason: string;
  method: string;
  path: string;
}

/**
 * The one line fail2ban matches: `<time> warn auth.failed client=<ip> reason=<why> …`.
 * The shipped filter (fail2ban/filter.d/hmac-auth.conf) depends on this exact prefix.
 */
export function logAuthFailure(logger: Logger, failure: AuthFailure): void {
  logger.warn('auth.failed', { client: failure.client, reason: failure.reason, method: failure.method, path: failure.path });
}
