// Rate limiting (EnableRateLimiting), per subject IP (server/abuse.ts: exempt peers, i.e. TrustedProxies and
// 127.0.0.1/::1 speaking for themselves, are never counted or limited; a trusted proxy's forwarded clients are).
//
// Two fixed-window limiters, both of RateLimitInterval:
// - the general one: RequestsPerMinute points per window. Every request that starts work or is refused costs
//   one point when it arrives: legacy PUT, tus POST, DELETE, GET/HEAD, OPTIONS, anything, to any path. The
//   exceptions are PATCH and HEAD to a tus upload (`${TusPath}<id>`; a POST with X-HTTP-Method-Override PATCH or
//   HEAD counts as that method), so that a big upload sent in many chunks is never throttled half-way; such a
//   request costs its point after all when its answer is >= 400. listener.refused (an answer given outside,
//   e.g. by nginx) costs a point too. Over the limit: 429 E_RATE_LIMITED with Retry-After and RateLimit-Limit,
//   -Remaining (0) and -Reset, and one fail2ban-readable line `warn rate.limited client=<ip> method=<m> path=<p>`;
//   a counted request that is let through carries RateLimit-Limit, -Remaining and -Reset as well.
// - the authentication-failure one: AuthFailuresPerMinute refused signatures, tokens or grants per window
//   (listener.authFailure). Once an address has used them up, every request from it, counted or not, is
//   answered 429 at once (before the general count, which it does not cost) until its window ends, with
//   Retry-After from that window, and logged `warn rate.limited client=<ip> method=<m> path=<p> limit=auth_failures`.
//   Brute force is thus slowed long before the general limit would stop it.
//
// With Redis (RedisEnabled) both windows live there under hfs:rl:<ip> and hfs:authfail:<ip>, shared by every
// instance; a memory limiter of the same settings is the insurance while Redis is away (not ready: at once,
// without trying), so no request fails or waits for it. Redis keeps whole seconds only, so with Redis a
// RateLimitInterval is rounded up to whole seconds (at least 1). Without Redis the memory limiters alone count.
import type { Request, RequestHandler, Response } from 'express';
import type { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { AbuseListener, Subjects } from './abuse.js';
import type { Config } from './config.js';
import { httpError } from './errors.js';
import type { Logger } from './logger.js';
import { requestPath } from '../middleware/request-info.js';

export interface RateLimitCounters {
  /** Requests answered 429 by the general limit. */
  limited: number;
  /** Requests answered 429 because their address failed authentication too often. */
  authLimited: number;
}

export interface RateLimit {
  /** Mounted after the IP filter: counts a request (or skips it) and answers 429 over the limit. */
  middleware: RequestHandler;
  /** authFailure feeds the stricter authentication-failure limiter; refused counts a late refusal. */
  listener: AbuseListener;
  counters: RateLimitCounters;
  close(): Promise<void>;
}

export interface RateLimitDeps {
  config: Pick<Config, 'RequestsPerMinute' | 'RateLimitInterval' | 'AuthFailuresPerMinute' | 'TusPath'>;
  /** Shared by every instance when RedisEnabled; the memory store is the insurance while it is away. */
  redis?: Redis;
  subjects: Subjects;
  logger: Logger;
}

export const GENERAL_PREFIX = 'hfs:rl';
export const AUTH_FAILURE_PREFIX = 'hfs:authfail';

/** Methods a tus client repeats for every chunk of one upload. */
const CHUNK_METHODS = new Set(['PATCH', 'HEAD']);

interface Limiter {
  limiter: RateLimiterAbstract;
  /** The memory store: the limiter itself, or its insurance; cleared on close. */
  memory: RateLimiterMemory;
}

function limiterOf(keyPrefix: string, points: number, intervalMs: number, redis: Redis | undefined): Limiter {
  if (!redis) {
    const memory = new RateLimiterMemory({ keyPrefix, points, duration: intervalMs / 1000 });
    return { limiter: memory, memory };
  }
  const duration = Math.max(1, Math.ceil(intervalMs / 1000));
  const memory = new RateLimiterMemory({ keyPrefix, points, duration });
  const limiter = new RateLimiterRedis({
    storeClient: redis,
    useRedisPackage: false,
    rejectIfRedisNotReady: true,
    keyPrefix,
    points,
    duration,
    insuranceLimiter: memory,
  });
  return { limiter, memory };
}

/** Whole seconds until the window ends, at least 1 (Retry-After: 0 would invite an immediate retry). */
function secondsLeft(res: RateLimiterRes): number {
  return Math.max(1, Math.ceil(res.msBeforeNext / 1000));
}

/** The method the request is handled as: the tus door honours X-HTTP-Method-Override on a POST. */
function effectiveMethod(req: Request): string {
  const override = req.method === 'POST' ? req.get('X-HTTP-Method-Override')?.toUpperCase() : undefined;
  return override || req.method;
}

export function createRateLimit(deps: RateLimitDeps): RateLimit {
  const { config, redis, subjects, logger } = deps;
  const general = limiterOf(GENERAL_PREFIX, config.RequestsPerMinute, config.RateLimitInterval, redis);
  const authFailures = limiterOf(AUTH_FAILURE_PREFIX, config.AuthFailuresPerMinute, config.RateLimitInterval, redis);
  const counters: RateLimitCounters = { limited: 0, authLimited: 0 };
  const pending = new Set<Promise<unknown>>();
  let closed = false;

  /** Fire and forget, but close() waits for it; a store error is only worth a debug line. */
  const track = (work: () => Promise<unknown>) => {
    if (closed) return;
    const done: Promise<unknown> = work()
      .catch((err: unknown) => {
        if (!(err instanceof RateLimiterRes)) logger.debug('rate_limit.store_failed', { cause: err instanceof Error ? err.message : String(err) });
      })
      .finally(() => pending.delete(done));
    pending.add(done);
  };
  const charge = (ip: string) => track(() => general.limiter.penalty(ip));

  /** PATCH or HEAD to `${TusPath}<id>`: one chunk (or offset probe) of an upload already counted at its POST. */
  const isChunk = (method: string, path: string) => {
    if (!CHUNK_METHODS.has(method) || !path.startsWith(config.TusPath)) return false;
    const id = path.slice(config.TusPath.length);
    return id !== '' && !id.includes('/');
  };

  /** The remaining auth-failure window of ip, if it has used up its failures. */
  const authBlocked = async (ip: string): Promise<RateLimiterRes | undefined> => {
    let res: RateLimiterRes | null;
    try {
      res = await authFailures.limiter.get(ip);
    } catch (err) {
      logger.debug('rate_limit.store_failed', { cause: err instanceof Error ? err.message : String(err) });
      return undefined;
    }
    return res && res.consumedPoints >= config.AuthFailuresPerMinute && res.msBeforeNext > 0 ? res : undefined;
  };

  const middleware: RequestHandler = async (req: Request, res: Response, next) => {
    const ip = closed ? undefined : subjects.of(req);
    if (ip === undefined) return next();
    const method = effectiveMethod(req);
    const path = requestPath(req);

    const blocked = await authBlocked(ip);
    if (blocked) {
      counters.authLimited += 1;
      logger.warn('rate.limited', { client: ip, method, path, limit: 'auth_failures' });
      throw httpError('E_RATE_LIMITED', { headers: { 'Retry-After': String(secondsLeft(blocked)) } });
    }

    if (isChunk(method, path)) {
      res.once('finish', () => {
        if (res.statusCode >= 400) charge(ip);
      });
      return next();
    }

    let verdict: RateLimiterRes;
    try {
      verdict = await general.limiter.consume(ip);
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) {
        // Only without an insurance could this happen; a broken store must not refuse anybody.
        logger.debug('rate_limit.store_failed', { cause: err instanceof Error ? err.message : String(err) });
        return next();
      }
      counters.limited += 1;
      logger.warn('rate.limited', { client: ip, method, path });
      const reset = secondsLeft(err);
      throw httpError('E_RATE_LIMITED', {
        headers: {
          'Retry-After': String(reset),
          'RateLimit-Limit': String(config.RequestsPerMinute),
          'RateLimit-Remaining': '0',
          'RateLimit-Reset': String(reset),
        },
      });
    }
    res.setHeader('RateLimit-Limit', String(config.RequestsPerMinute));
    res.setHeader('RateLimit-Remaining', String(verdict.remainingPoints));
    res.setHeader('RateLimit-Reset', String(secondsLeft(verdict)));
    next();
  };

  return {
    middleware,
    listener: {
      authFailure: (ip) => track(() => authFailures.limiter.penalty(ip)),
      refused: (ip) => charge(ip),
    },
    counters,
    close: async () => {
      closed = true;
      await Promise.allSettled([...pending]);
      // The memory store keeps one timer per address until its window ends.
      for (const { memory } of [general, authFailures]) {
        for (const { key } of memory.dump().storage) await memory.delete(key);
      }
    },
  };
}
