// Active Fail2Ban banning (Fail2BanEnabled): counts authentication failures per address in a sliding window of
// Fail2BanFindTime and, when an address reaches Fail2BanMaxRetry failures, asks fail2ban to ban it with
// `<Fail2BanCommand> set <Fail2BanJail> banip <ip>`, run without a shell. One ban is asked per address per
// window: the failures that follow a ban (the client may still be connected, or the ban failed) start nothing
// until a window has passed since the ban; then the failures of the last window count again. Counts are
// forgotten once they leave the window, and at most maxTracked addresses are counted at once. The command runs
// in the background: a failing, hanging or missing command is logged (`error fail2ban.failed client=<ip>
// cause=<why>`) and counted, and never delays or fails a request.
// Exempt peers (TrustedProxies, 127.0.0.1, ::1) never get here: server/abuse.ts filters them out.
import { execFile } from 'node:child_process';
import net from 'node:net';
import type { AbuseListener } from './abuse.js';
import type { Config } from './config.js';
import type { Logger } from './logger.js';

export interface BanCounters {
  /** Bans asked of fail2ban-client. */
  banned: number;
  /** Calls of fail2ban-client that failed (missing command, timeout, non-zero exit). */
  failed: number;
}

export interface Banner {
  /** authFailure counts towards a ban of that address. */
  listener: AbuseListener;
  counters: BanCounters;
  /** How many addresses are being counted now (bounded by maxTracked). */
  tracked(): number;
  /** Forgets every count and kills the commands still running. */
  stop(): void;
}

/**
 * Runs a command without a shell; rejects on a non-zero exit or after timeoutMs (the command is then killed).
 * signal, when given, ends the command early (the banner stops).
 */
export type RunCommand = (file: string, args: readonly string[], timeoutMs: number, signal?: AbortSignal) => Promise<void>;

export interface BannerDeps {
  config: Pick<Config, 'Fail2BanCommand' | 'Fail2BanJail' | 'Fail2BanMaxRetry' | 'Fail2BanFindTime'>;
  logger: Logger;
  /** execFile by default; tests may record calls instead. */
  run?: RunCommand;
  /** How long one call of the command may take before it is killed and counted as failed; 5 s by default. */
  timeoutMs?: number;
  /** Most addresses counted at once (10 000 by default); beyond that the longest quiet ones are forgotten. */
  maxTracked?: number;
  /** Most commands running at once (8 by default); more bans wait their turn. */
  maxRunning?: number;
  /** A monotonic clock, in ms (performance.now by default). */
  now?: () => number;
}

const DEFAULT_TIMEOUT_MS = 5000;
const DEFAULT_MAX_TRACKED = 10_000;
const DEFAULT_MAX_RUNNING = 8;
/** Bans waiting for a free slot; past this the ban is given up (and logged): the command cannot keep up. */
const MAX_WAITING = 1000;
/** What the command may print before it is cut off (fail2ban-client prints a line or two). */
const MAX_OUTPUT = 64 * 1024;

/** A command's failure, in one short line for the log. */
function causeOf(err: unknown, timeoutMs: number): string {
  const e = err as { code?: unknown; killed?: boolean; signal?: unknown; stderr?: unknown; stdout?: unknown; message?: unknown; name?: unknown };
  if (e?.name === 'AbortError') return 'stopped';
  if (e?.killed === true && e.code !== 'ABORT_ERR') return `timed out after ${timeoutMs} ms`;
  const output = [e?.stderr, e?.stdout].map((o) => (typeof o === 'string' ? o.trim() : '')).find((o) => o !== '') ?? '';
  const firstLine = output.split('\n')[0]?.slice(0, 200) ?? '';
  if (typeof e?.code === 'number') return `exit code ${e.code}${firstLine ? `: ${firstLine}` : ''}`;
  if (typeof e?.signal === 'string') return `killed by ${e.signal}`;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return message.split('\n')[0]!.slice(0, 200);
}

/** child_process.execFile: no shell, killed (SIGKILL) after timeoutMs, a small output buffer. */
export const execFileCommand: RunCommand = (file, args, timeoutMs, signal) =>
  new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err === undefined) resolve();
      else reject(err);
    };
    // execFile's own timeout kills the command; its callback waits for the output pipes to close, which a
    // grandchild of the command could hold open, so our own timer settles the promise at the same moment.
    const timer = setTimeout(() => settle(Object.assign(new Error('timed out'), { killed: true })), timeoutMs + 50);
    timer.unref();
    try {
      execFile(file, [...args], { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT, windowsHide: true, ...(signal ? { signal } : {}) }, (err, stdout, stderr) =>
        settle(err ? Object.assign(err, { stdout: String(stdout), stderr: String(stderr) }) : undefined),
      );
    } catch (err) {
      settle(err instanceof Error ? err : new Error('the command could not be started', { cause: err }));
    }
  });

interface Tracked {
  /** Times of the failures in the window, oldest first; at most Fail2BanMaxRetry of them. */
  failures: number[];
  /** When a ban was last asked for this address. */
  bannedAt?: number;
  /** The latest failure: the map is kept in this order (oldest first). */
  last: number;
}

/** The address fail2ban should ban: IPv4-mapped IPv6 (::ffff:a.b.c.d) as plain IPv4; undefined if not an address. */
function banTarget(ip: string): string | undefined {
  if (typeof ip !== 'string') return undefined;
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(ip);
  const candidate = mapped ? mapped[1]! : ip;
  return net.isIP(candidate) === 0 ? undefined : candidate;
}

export function createBanner(deps: BannerDeps): Banner {
  const { config, logger } = deps;
  const run = deps.run ?? execFileCommand;
  const timeoutMs = deps.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxTracked = Math.max(1, deps.maxTracked ?? DEFAULT_MAX_TRACKED);
  const maxRunning = Math.max(1, deps.maxRunning ?? DEFAULT_MAX_RUNNING);
  const now = deps.now ?? (() => performance.now());
  const window = config.Fail2BanFindTime;
  const maxRetry = Math.max(1, config.Fail2BanMaxRetry);
  const counters: BanCounters = { banned: 0, failed: 0 };

  const tracked = new Map<string, Tracked>();
  const waiting: string[] = [];
  let running = 0;
  let stopped = false;
  const aborter = new AbortController();

  /** Forgets the addresses whose latest failure (and ban) left the window; the map is ordered by it. */
  const prune = (at: number) => {
    for (const [ip, entry] of tracked) {
      if (at - entry.last < window) break;
      tracked.delete(ip);
    }
  };

  const failed = (ip: string, cause: string) => {
    counters.failed += 1;
    logger.error('fail2ban.failed', { client: ip, cause });
  };

  const startNext = () => {
    while (!stopped && running < maxRunning && waiting.length > 0) {
      const ip = waiting.shift()!;
      running += 1;
      let outcome: Promise<void>;
      try {
        outcome = run(config.Fail2BanCommand, ['set', config.Fail2BanJail, 'banip', ip], timeoutMs, aborter.signal);
      } catch (err) {
        outcome = Promise.reject(err instanceof Error ? err : new Error(String(err)));
      }
      void outcome
        .then(
          () => {
            counters.banned += 1;
            if (stopped) return;
            logger.warn('fail2ban.banned', { client: ip, jail: config.Fail2BanJail });
          },
          // A command killed because the banner stopped is the shutdown's doing, and the logger may be closed.
          (err: unknown) => (stopped ? undefined : failed(ip, causeOf(err, timeoutMs))),
        )
        .finally(() => {
          running -= 1;
          startNext();
        });
    }
  };

  const ban = (ip: string) => {
    if (waiting.length >= MAX_WAITING) return failed(ip, `${MAX_WAITING} bans already waiting for the command`);
    waiting.push(ip);
    startNext();
  };

  const authFailure = (rawIp: string, _reason: string) => {
    if (stopped) return;
    const ip = banTarget(rawIp);
    if (ip === undefined) return;
    const at = now();
    prune(at);
    const entry = tracked.get(ip) ?? { failures: [], last: at };
    // Re-inserted so that the map stays ordered by the latest failure.
    tracked.delete(ip);
    entry.last = at;
    entry.failures = entry.failures.filter((t) => at - t < window);
    entry.failures.push(at);
    if (entry.failures.length > maxRetry) entry.failures.shift();
    if (entry.bannedAt !== undefined && at - entry.bannedAt >= window) delete entry.bannedAt;
    if (entry.failures.length >= maxRetry && entry.bannedAt === undefined) {
      entry.bannedAt = at;
      entry.failures = [];
      ban(ip);
    }
    while (tracked.size >= maxTracked) tracked.delete(tracked.keys().next().value!);
    tracked.set(ip, entry);
  };

  return {
    listener: { authFailure },
    counters,
    tracked: () => {
      prune(now());
      return tracked.size;
    },
    stop: () => {
      stopped = true;
      tracked.clear();
      waiting.length = 0;
      aborter.abort();
    },
  };
}
