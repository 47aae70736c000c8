// IPSource = "nginx-log": follows nginx's access log (NginxLogFile) like `tail -F` and counts the answers nginx
// gave by itself against their client, as if the server had refused them: 401 and 403 as authentication
// failures (reason nginx_<status>, towards rate limits and Fail2Ban bans), 400, 408, 413, 429 and 444 as refusals.
//
// Which answers are nginx's own:
// - the shipped format (log_format hmac_file_server in nginx/hmac-file-server.conf, nginx's `combined` plus
//   ` upstream=$upstream_addr`): those with `upstream=-`, i.e. never passed to the server. An answer that went
//   through the server was counted by the server already and is skipped.
// - nginx's default `combined` format says nothing about the upstream, so only the statuses the server itself
//   never sends count: 444 (nginx closed the connection) and 408 (nginx's client_header_timeout or
//   client_body_timeout; Node's own 408s are written by its HTTP parser, which the server does not count). A 400,
//   401, 403, 413 or 429 may be the server's and is skipped. Use the shipped format to count them all.
// - 499 is the client giving up, not a refusal: never counted.
//
// Following: starts at the end of the file (what was there before is history); polls every pollMs (250 ms);
// keeps a partial last line until its end arrives; after a rotation by rename (the path names another file:
// another inode) it reads what nginx still writes to the old file until that has been quiet for a second, and
// reads the new file from its start; after copytruncate (the file is shorter than our position) it starts again
// at 0; a missing file is retried quietly. A line that does not parse is counted and skipped.
import type { Stats } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import net from 'node:net';
import type { AbuseEvents } from './abuse.js';
import type { Logger } from './logger.js';

export interface NginxLogCounters {
  /** Log lines read. */
  lines: number;
  /** Answers nginx gave by itself that were counted against their client. */
  counted: number;
  /** Lines skipped because they are in neither format (or too long). */
  malformed: number;
  /** Times the file was replaced (rename) or truncated (copytruncate). */
  rotations: number;
}

export interface NginxLogFollower {
  counters: NginxLogCounters;
  stop(): Promise<void>;
}

export interface NginxLogDeps {
  file: string;
  events: AbuseEvents;
  logger: Logger;
  /** How often the file is looked at; 250 ms by default. */
  pollMs?: number;
}

/** What one access log line says; undefined when it is in neither format. */
export interface NginxLogLine {
  remoteAddr: string;
  status: number;
  /** $upstream_addr ("-" when nginx answered by itself); undefined in the combined format. */
  upstream?: string;
}

// $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
// then, in the shipped format, ` upstream=$upstream_addr`. nginx escapes `"` inside variables (\x22), so a quoted
// field holds no quote; $remote_user may hold spaces.
const LINE = /^(\S+) - .*? \[[^\]]+\] "[^"]*" (\d{3}) (?:\d+|-) "[^"]*" "[^"]*"(.*)$/;
const UPSTREAM = /^ upstream=(\S+)/;

export function parseNginxLine(line: string): NginxLogLine | undefined {
  const m = LINE.exec(line.endsWith('\r') ? line.slice(0, -1) : line);
  if (!m) return undefined;
  const [, remoteAddr, status, rest] = m as unknown as [string, string, string, string];
  if (net.isIP(remoteAddr) === 0) return undefined;
  if (rest === '') return { remoteAddr, status: Number(status) };
  const upstream = UPSTREAM.exec(rest);
  return upstream ? { remoteAddr, status: Number(status), upstream: upstream[1]! } : undefined;
}

const AUTH_FAILURES = new Set([401, 403]);
const REFUSALS = new Set([400, 408, 413, 429, 444]);
/** Without the upstream field: the statuses only nginx sends. */
const ONLY_NGINX = new Set([408, 444]);

/** Whether a line is an answer of nginx's own that counts (see the top of this file). */
export function isNginxOwnRefusal(entry: NginxLogLine): boolean {
  if (!AUTH_FAILURES.has(entry.status) && !REFUSALS.has(entry.status)) return false;
  return entry.upstream === undefined ? ONLY_NGINX.has(entry.status) : entry.upstream === '-';
}

const CHUNK = 64 * 1024;
/** Read per poll and file, so that a huge backlog cannot hold the event loop (the rest follows next poll). */
const MAX_READ_PER_POLL = 4 * 1024 * 1024;
/** A longer "line" is not nginx's: it is dropped up to its end. */
const MAX_LINE = 64 * 1024;
/** How long the file renamed away is still read after it stops growing (nginx reopens on USR1). */
const DRAIN_QUIET_MS = 1000;
const NEWLINE = 0x0a;

interface Reader {
  fh: FileHandle;
  ino: number;
  dev: number;
  position: number;
  /** The start of a line whose end has not arrived yet. */
  partial: Buffer[];
  partialLength: number;
  /** Dropping an overlong line up to its end. */
  skipping: boolean;
  /** The last time it grew (for the file renamed away). */
  grewAt: number;
}

export function followNginxLog(deps: NginxLogDeps): NginxLogFollower {
  const { file, events, logger } = deps;
  const pollMs = deps.pollMs ?? 250;
  const counters: NginxLogCounters = { lines: 0, counted: 0, malformed: 0, rotations: 0 };
  let current: Reader | undefined;
  /** The file renamed away, read until quiet. */
  let draining: Reader | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let polling: Promise<void> = Promise.resolve();
  let missingSaid = false;
  let errorSaid = false;
  let unparsedSaid = false;
  /** Until the file was seen missing or opened once, what it holds is the past: start at its end. */
  let fromEnd = true;

  const handleLine = (line: string) => {
    counters.lines += 1;
    if (line === '') return;
    const entry = parseNginxLine(line);
    if (!entry) {
      counters.malformed += 1;
      if (!unparsedSaid) {
        unparsedSaid = true;
        logger.warn('nginx_log.unparsed', { file, line: line.slice(0, 200), note: 'expected the combined or hmac_file_server log_format; further lines are skipped quietly' });
      }
      return;
    }
    if (!isNginxOwnRefusal(entry)) return;
    counters.counted += 1;
    if (AUTH_FAILURES.has(entry.status)) events.authFailureOf(entry.remoteAddr, `nginx_${entry.status}`);
    else events.refusedOf(entry.remoteAddr, entry.status);
  };

  const handleBytes = (reader: Reader, bytes: Buffer) => {
    let start = 0;
    for (;;) {
      const end = bytes.indexOf(NEWLINE, start);
      if (end === -1) break;
      const piece = bytes.subarray(start, end);
      start = end + 1;
      if (reader.skipping) {
        reader.skipping = false;
        continue;
      }
      const whole = reader.partialLength === 0 ? piece : Buffer.concat([...reader.partial, piece]);
      reader.partial = [];
      reader.partialLength = 0;
      if (whole.length > MAX_LINE) {
        counters.lines += 1;
        counters.malformed += 1;
        continue;
      }
      handleLine(whole.toString('utf8'));
    }
    const rest = bytes.subarray(start);
    if (rest.length === 0 || reader.skipping) return;
    if (reader.partialLength + rest.length > MAX_LINE) {
      counters.lines += 1;
      counters.malformed += 1;
      reader.partial = [];
      reader.partialLength = 0;
      reader.skipping = true;
      return;
    }
    // Copied: the read buffer is reused.
    reader.partial.push(Buffer.from(rest));
    reader.partialLength += rest.length;
  };

  /** Reads what is new in the reader's file; true if anything was. */
  const readNew = async (reader: Reader): Promise<boolean> => {
    const { size } = await reader.fh.stat();
    if (size < reader.position) {
      // copytruncate: the same file, emptied (and perhaps written again since).
      counters.rotations += 1;
      logger.info('nginx_log.truncated', { file });
      reader.position = 0;
      reader.partial = [];
      reader.partialLength = 0;
      reader.skipping = false;
    }
    const buffer = Buffer.allocUnsafe(CHUNK);
    let total = 0;
    while (!stopped && total < MAX_READ_PER_POLL) {
      const { bytesRead } = await reader.fh.read(buffer, 0, CHUNK, reader.position);
      if (bytesRead === 0) break;
      reader.position += bytesRead;
      total += bytesRead;
      handleBytes(reader, buffer.subarray(0, bytesRead));
    }
    if (total > 0) reader.grewAt = Date.now();
    return total > 0;
  };

  /** The partial line left in a file that is done with: nginx writes whole lines, so it is one. */
  const finish = async (reader: Reader) => {
    if (reader.partialLength > 0 && !reader.skipping) handleLine(Buffer.concat(reader.partial).toString('utf8'));
    reader.partial = [];
    reader.partialLength = 0;
    await reader.fh.close().catch(() => undefined);
  };

  const openReader = async (atEnd: boolean): Promise<Reader | undefined> => {
    let fh: FileHandle;
    try {
      fh = await open(file, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && !errorSaid) {
        errorSaid = true;
        logger.warn('nginx_log.unreadable', { file, cause: (err as Error).message, note: 'retried quietly' });
      }
      return undefined;
    }
    const s = await fh.stat();
    errorSaid = false;
    missingSaid = false;
    logger.info('nginx_log.following', { file, from: atEnd ? 'end' : 'start' });
    return { fh, ino: s.ino, dev: s.dev, position: atEnd ? s.size : 0, partial: [], partialLength: 0, skipping: false, grewAt: Date.now() };
  };

  const poll = async () => {
    if (draining) {
      const grew = await readNew(draining).catch(() => false);
      if (!grew && Date.now() - draining.grewAt >= DRAIN_QUIET_MS) {
        await finish(draining);
        draining = undefined;
      }
    }
    let named: Stats | undefined;
    try {
      named = await stat(file);
    } catch {
      named = undefined;
    }
    if (current) {
      await readNew(current);
      if (!named || named.ino !== current.ino || named.dev !== current.dev) {
        // Renamed (or removed): the old file may still get the lines nginx writes before it reopens.
        counters.rotations += 1;
        logger.info('nginx_log.rotated', { file });
        if (draining) await finish(draining);
        draining = current;
        current = undefined;
      }
    }
    if (!current) {
      if (!named) {
        fromEnd = false;
        if (!missingSaid) {
          missingSaid = true;
          logger.info('nginx_log.missing', { file, note: 'waiting for it to appear' });
        }
      } else {
        // At start-up the file's past is skipped; a file that appears later (rotation) is read from its start.
        current = await openReader(fromEnd);
        if (current) {
          fromEnd = false;
          await readNew(current);
        }
      }
    }
  };

  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      polling = poll()
        .catch((err: unknown) => {
          if (!errorSaid) {
            errorSaid = true;
            logger.warn('nginx_log.unreadable', { file, cause: err instanceof Error ? err.message : String(err), note: 'retried quietly' });
          }
        })
        .finally(schedule);
    }, pollMs);
    timer.unref();
  };

  // The first look is immediate, so that "the end of the file" is where it was when the server started.
  polling = poll()
    .catch(() => undefined)
    .finally(schedule);

  return {
    counters,
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await polling.catch(() => undefined);
      clearTimeout(timer);
      for (const reader of [current, draining]) await reader?.fh.close().catch(() => undefined);
      current = undefined;
      draining = undefined;
    },
  };
}
