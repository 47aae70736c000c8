// The IP lists at the door: a refused client gets 403 and a fail2ban line before any other work is done.
// Exempt peers (trusted proxies, 127.0.0.1, ::1) speaking for themselves pass; a proxy's forwarded client is
// judged like any other (see server/abuse.ts).
import type { RequestHandler } from 'express';
import { httpError } from '../server/errors.js';
import type { Subjects } from '../server/abuse.js';
import type { IpLists } from '../server/ip-lists.js';
import type { Logger } from '../server/logger.js';
import { logRefusal } from './request-info.js';

export interface IpFilterCounters {
  blocked: number;
}

export function ipFilter(deps: { lists: IpLists; subjects: Subjects; logger: Logger; counters: IpFilterCounters }): RequestHandler {
  return (req, _res, next) => {
    const ip = deps.subjects.of(req);
    const verdict = ip === undefined ? undefined : deps.lists.verdict(ip);
    if (verdict === undefined) return next();
    deps.counters.blocked += 1;
    logRefusal(deps.logger, req, verdict === 'blocked' ? 'ip_blocked' : 'ip_not_allowed');
    throw httpError('E_IP_REFUSED');
  };
}
