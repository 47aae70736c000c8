// What the logs and answers say about a request: its path without the query (which holds MACs and grants)
// and its client IP (X-Forwarded-For only from TrustedProxies, through Express's trust proxy setting).
import type { Request } from 'express';
import { logAuthFailure, type Logger } from '../server/logger.js';

export function requestPath(req: Pick<Request, 'originalUrl'>): string {
  const end = req.originalUrl.indexOf('?');
  return end === -1 ? req.originalUrl : req.originalUrl.slice(0, end);
}

export function clientIp(req: Pick<Request, 'ip'>): string {
  return req.ip ?? 'unknown';
}

/** The fail2ban line for a refused signature or grant on this request. */
export function logRefusal(logger: Logger, req: Request, reason: string): void {
  logAuthFailure(logger, { client: clientIp(req), reason, method: req.method, path: requestPath(req) });
}
