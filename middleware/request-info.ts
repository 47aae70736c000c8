// What the logs and answers say about a request: its path without the query (which holds MACs and grants)
// and its client IP (X-Forwarded-For only from TrustedProxies, through Express's trust proxy setting).
import net from 'node:net';
import type { Request } from 'express';
import type { AbuseEvents } from '../server/abuse.js';
import { logAuthFailure, type Logger } from '../server/logger.js';

export function requestPath(req: Pick<Request, 'originalUrl'>): string {
  const end = req.originalUrl.indexOf('?');
  return end === -1 ? req.originalUrl : req.originalUrl.slice(0, end);
}

const CLIENT = Symbol('client ip');
const PEER = Symbol('peer ip');
const ABUSE = Symbol('abuse events');
type Recorded = { [CLIENT]?: string; [PEER]?: string; [ABUSE]?: AbuseEvents };

/**
 * Fixes the request's client and peer IP at its start. Express computes req.ip from req.socket on every read,
 * and a failed body stream detaches the socket: a log line written after that must not throw. A forwarded
 * value from a trusted proxy that is not an address is ignored: the peer is then the client.
 */
export function recordClient(req: Request): string {
  const peer = req.socket?.remoteAddress ?? 'unknown';
  let ip: string | undefined;
  try {
    ip = req.ip;
  } catch {
    ip = undefined;
  }
  const recorded = req as Recorded;
  recorded[PEER] = peer;
  return (recorded[CLIENT] = ip !== undefined && net.isIP(ip) !== 0 ? ip : peer);
}

export function clientIp(req: object): string {
  return (req as Recorded)[CLIENT] ?? 'unknown';
}

/** The address the connection came from (a trusted proxy, or the client itself). */
export function peerIp(req: object): string {
  return (req as Recorded)[PEER] ?? 'unknown';
}

/** Where this request's refusals are counted (rate limits, bans); set once at the top of the app. */
export function attachAbuseEvents(req: object, events: AbuseEvents): void {
  (req as Recorded)[ABUSE] = events;
}

/** The fail2ban line for a refused signature or grant on this request. */
export function logRefusal(logger: Logger, req: Request, reason: string): void {
  logAuthFailure(logger, { client: clientIp(req), reason, method: req.method, path: requestPath(req) });
  (req as Recorded)[ABUSE]?.authFailure(req, reason);
}
