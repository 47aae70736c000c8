// Builds the winston logger. Lines are "<ISO time> <level> <event> key=value …" so that grep and fail2ban
// can read them; the event names are fixed (http.request, upload.committed, auth.failed, …).
import winston from 'winston';
import type { Config } from './config.js';

export type Logger = winston.Logger;

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

export function createLogger(config: Pick<Config, 'LoggingEnabled' | 'LogLevel' | 'LogFile'>): Logger {
  const transport = config.LogFile ? new winston.transports.File({ filename: config.LogFile }) : new winston.transports.Console();
  return winston.createLogger({
    level: config.LogLevel,
    silent: !config.LoggingEnabled,
    format: winston.format.combine(winston.format.timestamp(), lineFormat),
    transports: [transport],
  });
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
