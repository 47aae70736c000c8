// What the logs and answers say about a request: its path without the query (which holds MACs and grants)
// and its client IP (X-Forwarded-For only from TrustedProxies, through Express's trust proxy setting).
import type { Request } from 'express';
import { logAuthFailure, type Logger } from '../server/logger.js';

export function requestPath(req: Pick<Request, 'originalUrl'>): string {
  const end = req.originalUrl.indexOf('?');
  return end === -1 ? req.originalUrl : req.originalUrl.slice(0, end);
}

const CLIENT = Symbol('client ip');
type WithClient = { [CLIENT]?: string };

/**
 * Fixes the request's client IP at its start. Express computes req.ip from req.socket on every read, and a
 * failed body stream detaches the socket: a log line written after that must not throw.
 */
export function recordClient(req: Request): string {
  let ip: string | undefined;
  try {
    ip = req.ip;
  } catch {
    ip = undefined;
  }
  return ((req as WithClient)[CLIENT] = ip ?? req.socket?.remoteAddress ?? 'unknown');
}

export function clientIp(req: object): string {
  const recorded = (req as WithClient)[CLIENT];
  if (recorded !== undefined) return recorded;
  return 'unknown';
}

/** The fail2ban line for a refused signature or grant on this request. */
export function logRefusal(logger: Logger, req: Request, reason: string): void {
  logAuthFailure(logger, { client: clientIp(req), reason, method: req.method, path: requestPath(req) });
}
