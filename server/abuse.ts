// Abuse accounting: one place that says whose refusals count and where they go. Everything that protects the
// server per client (rate limits, the authentication-failure limit, active Fail2Ban bans, the nginx log
// follower) looks at the same subject: the client IP, except that a peer in TrustedProxies and the loopback
// peers 127.0.0.1 and ::1 (nginx, local health checks) are never limited or banned themselves; a trusted
// proxy's forwarded clients are.
import type { AddressMatcher } from './address-list.js';
import { clientIp, peerIp } from '../middleware/request-info.js';

/** What a limiter or a banner is told. ip is always a subject (never an exempt peer). */
export interface AbuseListener {
  /** A refused signature, token or grant, or a refusal by the IP lists. */
  authFailure?(ip: string, reason: string): void;
  /** An answer >= 400 that was not counted when its request started (or one nginx gave by itself). */
  refused?(ip: string, status: number): void;
}

/** What request handlers report; the subject is worked out here. */
export interface AbuseEvents {
  authFailure(req: object, reason: string): void;
  refused(req: object, status: number): void;
  /** The same, for an address known without a request (the nginx log). */
  authFailureOf(ip: string, reason: string): void;
  refusedOf(ip: string, status: number): void;
}

const LOOPBACK_PEERS = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1']);

export interface Subjects {
  /** The address a request is accounted to; undefined for an exempt peer speaking for itself. */
  of(req: object): string | undefined;
  isExempt(ip: string): boolean;
}

export function subjects(trusted: AddressMatcher): Subjects {
  const isExempt = (ip: string) => LOOPBACK_PEERS.has(ip) || trusted(ip);
  return {
    of(req) {
      const client = clientIp(req);
      // A client that differs from its peer was forwarded by a trusted proxy: it is the subject.
      if (client !== peerIp(req)) return client;
      return isExempt(client) || client === 'unknown' ? undefined : client;
    },
    isExempt,
  };
}

export function abuseEvents(who: Subjects, listeners: readonly AbuseListener[]): AbuseEvents {
  const authFailureOf = (ip: string, reason: string) => {
    if (who.isExempt(ip)) return;
    for (const l of listeners) l.authFailure?.(ip, reason);
  };
  const refusedOf = (ip: string, status: number) => {
    if (who.isExempt(ip)) return;
    for (const l of listeners) l.refused?.(ip, status);
  };
  return {
    authFailure(req, reason) {
      const ip = who.of(req);
      if (ip !== undefined) for (const l of listeners) l.authFailure?.(ip, reason);
    },
    refused(req, status) {
      const ip = who.of(req);
      if (ip !== undefined) for (const l of listeners) l.refused?.(ip, status);
    },
    authFailureOf,
    refusedOf,
  };
}
