// Locks that hold across every instance sharing one Redis: the tus locker, the commit path's per-path and
// per-blob locks, and the lease that lets one instance at a time run a sweep.
//
//   hfs:lock:<key>    the holder's random token, with a lease (PX) the holder renews while it works
//   hfs:lock:events   pub/sub: "release <key>" asks the holder to let go (a newer request for the same tus
//                     upload: its client has probably gone); "freed <key>" wakes whoever waits for it
//
// A holder that dies (SIGKILL, a lost network) renews nothing: its lease runs out and a waiter takes over.
// Pub/sub only makes waiting short; correctness rests on SET NX, the compare-and-delete and the lease.
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { ERRORS, type Lock, type Locker, type RequestRelease } from '@tus/utils';
import { httpError, RETRY_AFTER_SECONDS } from './errors.js';
import type { Logger } from './logger.js';
import type { PathLock } from '../hooks/path-lock.js';

const CHANNEL = 'hfs:lock:events';
const keyOf = (name: string) => `hfs:lock:${name}`;
const RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
const RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

export interface LeaseTuning {
  /** How long a lease lasts unrenewed: how long a dead holder blocks others. Renewed every third of it. */
  leaseMs: number;
  /** How often a waiter tries again when no "freed" arrives (a holder that died says nothing). */
  pollMs: number;
  /** How often a waiter repeats its release request while the holder keeps the lock. */
  askAgainMs: number;
}

export const DEFAULT_LEASE_TUNING: LeaseTuning = { leaseMs: 10_000, pollMs: 100, askAgainMs: 1000 };

export interface Lease {
  /** Aborted when the lease was lost (it ran out while Redis was away, or someone else holds it now). */
  readonly lost: AbortSignal;
  release(): Promise<void>;
}

/** Thrown when a lock could not be had in time (someone holds it) or the signal gave up waiting. */
export class LockTimeout extends Error {
  constructor(readonly key: string) {
    super(`lock ${key} not acquired in time`);
    this.name = 'LockTimeout';
  }
}

interface Holder {
  token: string;
  onReleaseRequest?: RequestRelease;
}

export interface AcquireOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  /** Called when another request asks for this lock while it is held here. */
  onReleaseRequest?: RequestRelease;
}

/** Refused with 503: the lock service could not be reached, so nothing can be done safely now. */
function unavailable(cause: unknown) {
  return httpError('E_COORDINATION_DOWN', { cause, headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) } });
}

/** Calls a holder's release callback; whatever it throws is its own business, never the process's. */
function askToRelease(holder: Holder | undefined): void {
  if (!holder?.onReleaseRequest) return;
  const { onReleaseRequest } = holder;
  void Promise.resolve()
    .then(() => onReleaseRequest())
    .catch(() => undefined);
}

export class RedisLeases {
  private readonly holders = new Map<string, Holder>();
  private readonly waiters = new Map<string, Set<() => void>>();

  private constructor(
    private readonly redis: Redis,
    private readonly subscriber: Redis,
    private readonly logger: Logger,
    private readonly tuning: LeaseTuning,
  ) {
    subscriber.on('message', (_channel: string, message: string) => this.heard(message));
    subscriber.on('error', (err: Error) => logger.debug('redis.error', { cause: err.message, client: 'lock-events' }));
  }

  /**
   * The subscriber is a second connection (a subscribed one can send nothing else). It subscribes on every
   * connect: one that failed while Redis was away (at start) would otherwise never be made again.
   */
  static open(redis: Redis, logger: Logger, tuning: LeaseTuning = DEFAULT_LEASE_TUNING): RedisLeases {
    const subscriber = redis.duplicate();
    const leases = new RedisLeases(redis, subscriber, logger, tuning);
    subscriber.on('ready', () => {
      subscriber.subscribe(CHANNEL).catch((err: unknown) => logger.warn('lock.events_unavailable', { cause: err instanceof Error ? err.message : String(err) }));
    });
    return leases;
  }

  private heard(message: string): void {
    const space = message.indexOf(' ');
    const verb = message.slice(0, space);
    const name = message.slice(space + 1);
    if (verb === 'release') askToRelease(this.holders.get(name));
    else if (verb === 'freed') this.wake(name);
  }

  private wake(name: string): void {
    for (const wake of this.waiters.get(name) ?? []) wake();
  }

  /** The lease if nobody holds name now, else undefined. Redis errors surface as 503. */
  async tryAcquire(name: string, onReleaseRequest?: RequestRelease): Promise<Lease | undefined> {
    const token = randomBytes(16).toString('hex');
    let answer: string | null;
    try {
      answer = await this.redis.set(keyOf(name), token, 'PX', this.tuning.leaseMs, 'NX');
    } catch (err) {
      throw unavailable(err);
    }
    return answer === 'OK' ? this.hold(name, { token, ...(onReleaseRequest ? { onReleaseRequest } : {}) }) : undefined;
  }

  /** Waits for name until timeoutMs (LockTimeout), asking its holder to let go when onReleaseRequest is given. */
  async acquire(name: string, options: AcquireOptions): Promise<Lease> {
    const deadline = Date.now() + options.timeoutMs;
    let askedAt = -Infinity;
    for (;;) {
      if (options.signal?.aborted) throw new LockTimeout(name);
      const lease = await this.tryAcquire(name, options.onReleaseRequest);
      if (lease) return lease;
      if (options.onReleaseRequest && Date.now() - askedAt >= this.tuning.askAgainMs) {
        askedAt = Date.now();
        // A holder in this process hears it at once; the others through Redis.
        askToRelease(this.holders.get(name));
        await this.redis.publish(CHANNEL, `release ${name}`).catch(() => undefined);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new LockTimeout(name);
      await this.until(name, Math.min(this.tuning.pollMs, left), options.signal);
    }
  }

  /** Resolves on a "freed" for name, after ms, or when the signal aborts, whichever is first. */
  private until(name: string, ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const set = this.waiters.get(name) ?? new Set();
      this.waiters.set(name, set);
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        set.delete(done);
        if (set.size === 0 && this.waiters.get(name) === set) this.waiters.delete(name);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener('abort', done);
      set.add(done);
    });
  }

  private hold(name: string, holder: Holder): Lease {
    this.holders.set(name, holder);
    const lost = new AbortController();
    let renewedAt = Date.now();
    const stop = () => {
      clearInterval(renewal);
      if (this.holders.get(name) === holder) this.holders.delete(name);
    };
    const lose = (why: string) => {
      stop();
      lost.abort(new Error(why));
      this.logger.warn('lock.lost', { lock: name, why });
      askToRelease(holder);
    };
    const renewal = setInterval(() => {
      this.redis.eval(RENEW, 1, keyOf(name), holder.token, this.tuning.leaseMs).then(
        (renewed) => {
          if (Number(renewed) === 1) renewedAt = Date.now();
          else lose('held by another');
        },
        () => {
          if (Date.now() - renewedAt >= this.tuning.leaseMs) lose('not renewed in time');
        },
      );
    }, Math.max(10, Math.floor(this.tuning.leaseMs / 3)));
    renewal.unref();
    let released = false;
    return {
      lost: lost.signal,
      release: async () => {
        if (released) return;
        released = true;
        stop();
        try {
          await this.redis.eval(RELEASE, 1, keyOf(name), holder.token);
          this.wake(name);
          await this.redis.publish(CHANNEL, `freed ${name}`);
        } catch (err) {
          // The lease runs out by itself; until then a waiter keeps trying.
          this.logger.warn('lock.release_failed', { lock: name, cause: err instanceof Error ? err.message : String(err) });
        }
      },
    };
  }

  /** Runs work if no instance runs it now (a sweep); the lease ends with it. Skips when Redis is away. */
  async once(name: string, work: () => Promise<void>): Promise<boolean> {
    const lease = await this.tryAcquire(name).catch(() => undefined);
    if (!lease) return false;
    try {
      await work();
      return true;
    } finally {
      await lease.release();
    }
  }

  close(): void {
    this.subscriber.disconnect();
  }
}

/** The tus locker over Redis leases: the same contract as the library's MemoryLocker. */
export class RedisLocker implements Locker {
  constructor(
    private readonly leases: RedisLeases,
    private readonly acquireTimeoutMs = 30_000,
  ) {}

  newLock(id: string): Lock {
    const { leases, acquireTimeoutMs } = this;
    let lease: Lease | undefined;
    return {
      async lock(signal: AbortSignal, requestRelease: RequestRelease): Promise<void> {
        try {
          lease = await leases.acquire(`tus:${id}`, { timeoutMs: acquireTimeoutMs, signal, onReleaseRequest: requestRelease });
        } catch (err) {
          // The library's own error, so that MemoryLocker and this one fail alike (toHttp makes it a 503).
          // eslint-disable-next-line @typescript-eslint/only-throw-error
          if (err instanceof LockTimeout) throw ERRORS.ERR_LOCK_TIMEOUT;
          throw err;
        }
      },
      async unlock(): Promise<void> {
        if (!lease) throw new Error('Releasing an unlocked lock!');
        const held = lease;
        lease = undefined;
        await held.release();
      },
    };
  }
}

/**
 * A PathLock (one holder per key at a time) over Redis leases, for the commit path's races between instances.
 * Work under it is short (a link, a rename), so nobody is asked to let go; a lock not had in time is a 503.
 */
export function redisPathLock(leases: RedisLeases, scope: string, timeoutMs = 30_000): PathLock {
  return async (key, work) => {
    let lease: Lease;
    try {
      lease = await leases.acquire(`${scope}:${key}`, { timeoutMs });
    } catch (err) {
      if (err instanceof LockTimeout) throw httpError('E_BUSY', { cause: err, headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) } });
      throw err;
    }
    try {
      return await work();
    } finally {
      await lease.release();
    }
  };
}
