// The scenarios. Each starts the servers it needs below its own temp folder, measures every applicable target
// `runs` times (the order of the targets rotates from run to run), verifies every uploaded byte, and returns
// rows of medians. A scenario that throws (a refused upload, a byte that does not verify, its deadline) fails.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { open, stat, statfs } from 'node:fs/promises';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { EICAR } from '../spec/helpers/clamd.js';
import { createBucket, startS3 } from '../spec/helpers/ceph.js';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { davDoor, legacyDoor, request, tusDoor, verifyUpload, VerifyError, type Door, type Uploaded } from './client.js';
import { newPayload, type Payload } from './payload.js';
import { cpuSecondsOf, rssOf, samplePeak } from './proc.js';
import { measured, row, type Row } from './report.js';
import { GiB, KiB, MiB, percentile, pool, prng, sizeLabel } from './stats.js';
import { startNginx, startOurs, startTusBaseline, type Build, type OursTarget } from './targets.js';

const run = promisify(execFile);

export interface Profile {
  quick: boolean;
  /** The "1 GiB" of the single-file scenarios. */
  big: number;
  /** The "8 MiB" PATCHes of the chunked tus upload. */
  patch: number;
  /** The "200 × 1 MiB, 200 in flight" load. */
  many: number;
  manySize: number;
  /** The "1000 random 64 KiB Range GETs, 8 in flight". */
  ranges: number;
  rangeSize: number;
  rangeConcurrency: number;
  /**
   * Untimed Range GETs each server gets first, so the runs measure it warmed up (a server in use has its
   * code compiled and its caches filled; nginx has nothing to warm, ours runs in a JIT).
   */
  rangeWarmUp: number;
  /** Cost vs work: concurrent small uploads. */
  levels: number[];
  smallSize: number;
  levelCount(concurrency: number): number;
  /** Untimed uploads a reused server gets before its first run. */
  warmUp: number;
  /** Cost vs work: large files, this many at once (fewer when the disk is short). */
  largeSizes: number[];
  largeConcurrency: number;
  /** How long a server is left alone before its idle memory is read. */
  settleMs: number;
  sampleMs: number;
  /** Every scenario stops by itself after this long. */
  scenarioTimeoutMs: number;
}

export function profileFor(quick: boolean): Profile {
  if (quick) {
    return {
      quick,
      big: 4 * MiB,
      patch: 1 * MiB,
      many: 20,
      manySize: MiB,
      ranges: 50,
      rangeSize: 64 * KiB,
      rangeConcurrency: 8,
      rangeWarmUp: 50,
      // 1000 at once needs 1000 uploads per door, half of the quick run's time: the full run has it.
      levels: [1, 10, 100],
      smallSize: 4 * KiB,
      levelCount: (c) => Math.max(20, c),
      warmUp: 50,
      largeSizes: [256 * KiB, 1 * MiB, 4 * MiB],
      largeConcurrency: 10,
      settleMs: 500,
      sampleMs: 10,
      scenarioTimeoutMs: 5 * 60_000,
    };
  }
  return {
    quick,
    big: GiB,
    patch: 8 * MiB,
    many: 200,
    manySize: MiB,
    ranges: 1000,
    rangeSize: 64 * KiB,
    rangeConcurrency: 8,
    rangeWarmUp: 1000,
    levels: [1, 10, 100, 1000],
    smallSize: 64 * KiB,
    levelCount: (c) => Math.max(200, 2 * c),
    warmUp: 500,
    largeSizes: [10 * MiB, 100 * MiB, GiB],
    largeConcurrency: 100,
    settleMs: 3000,
    sampleMs: 20,
    scenarioTimeoutMs: 4 * 3600_000,
  };
}

export interface Ctx {
  profile: Profile;
  runs: number;
  build: Build;
  /** This scenario's temp folder (removed afterwards); every target's store goes below it. */
  dir: string;
  /** Aborted at the scenario's deadline. */
  signal: AbortSignal;
  log(line: string): void;
  /** A message for the report (a size skipped, a count scaled down). */
  note(text: string): void;
  /** Rows finished early: kept in the report even if a later part of the scenario fails. */
  emit(...rows: Row[]): void;
  /** A real clamd (started on first use, shared by the scenarios): its socket path. */
  clamdSocket(): Promise<string>;
}

export interface Scenario {
  id: string;
  title: string;
  /** Free bytes the scenario needs at most at once (checked before it starts; it is skipped when short). */
  diskNeed(profile: Profile): number;
  run(ctx: Ctx): Promise<Row[]>;
}

// --- shared pieces ----------------------------------------------------------------------------------------

/** The largest upload of any scenario, as MaxUploadSize and the grants allow it. */
const MAX_UPLOAD = 2 * GiB;

export async function freeBytes(dir: string): Promise<number> {
  const fs = await statfs(dir);
  return fs.bavail * fs.bsize;
}

/** Flushes every dirty page of the machine, so one run's writeback does not slow the next run down. */
async function syncAll(): Promise<void> {
  await run('sync');
}

const mibps = (bytes: number, ms: number) => bytes / MiB / (ms / 1000);

/** A started target behind one door. */
interface Started {
  door: Door;
  stop(): Promise<void>;
}

interface Side {
  label: string;
  start(): Promise<Started>;
}

async function ours(ctx: Ctx, features: boolean): Promise<OursTarget> {
  const target = await startOurs(ctx.build, ctx.dir, { maxUploadSize: MAX_UPLOAD, ...(features ? { clamdSocket: await ctx.clamdSocket() } : {}) });
  if (features) {
    try {
      await checkFeatures(target, ctx.signal);
    } catch (err) {
      await target.stop();
      throw err;
    }
  }
  return target;
}

const FEATURES = 'AES+dedup+ClamAV';

function oursLegacy(ctx: Ctx, features = false): Side {
  return {
    label: `hmac-file-server legacy PUT${features ? ` (${FEATURES})` : ''}`,
    start: async () => {
      const target = await ours(ctx, features);
      return { door: legacyDoor(target), stop: () => target.stop() };
    },
  };
}

function oursTus(ctx: Ctx, patch: number, features = false): Side {
  return {
    label: `hmac-file-server tus${features ? ` (${FEATURES})` : ''}`,
    start: async () => {
      const target = await ours(ctx, features);
      return { door: tusDoor(target, patch, await target.grant(MAX_UPLOAD)), stop: () => target.stop() };
    },
  };
}

function nginxDav(ctx: Ctx): Side {
  return {
    label: 'nginx WebDAV PUT',
    start: async () => {
      const target = await startNginx(ctx.dir);
      return { door: davDoor(target), stop: () => target.stop() };
    },
  };
}

function bareTus(ctx: Ctx, patch: number): Side {
  return {
    label: 'bare @tus/server',
    start: async () => {
      const target = await startTusBaseline(ctx.build, ctx.dir);
      return { door: tusDoor(target, patch), stop: () => target.stop() };
    },
  };
}

/** The sides in the order of run r: rotated, so no target always goes first (or right after a heavy one). */
function rotated<T>(items: readonly T[], r: number): T[] {
  const k = r % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/**
 * The features really are on: an EICAR upload is refused by clamd's verdict, two uploads of the same bytes
 * share one inode (deduplication), and the stored bytes are not the plaintext (AES).
 */
async function checkFeatures(target: OursTarget, signal: AbortSignal): Promise<void> {
  const eicar = await request(`${target.url}${target.legacyPath('bench-check/eicar.txt', EICAR.length, 'text/plain')}`, 'PUT', {
    headers: { 'Content-Length': EICAR.length, 'Content-Type': 'text/plain' },
    body: EICAR,
    signal,
  });
  if (eicar.status !== 422) throw new Error(`features check: the EICAR test file was answered ${eicar.status}, not 422 (is ClamAV scanning?)`);
  const door = legacyDoor(target);
  const payload = newPayload(64 * KiB);
  const a = await door.upload('bench-check/a.bin', payload, { signal });
  const b = await door.upload('bench-check/b.bin', payload, { signal });
  const [sa, sb] = await Promise.all([stat(a.file), stat(b.file)]);
  if (sa.ino !== sb.ino) throw new Error('features check: two uploads of the same bytes do not share a blob (deduplication off?)');
  const handle = await open(a.file, 'r');
  const head = Buffer.alloc(4096);
  try {
    await handle.read(head, 0, head.length, 0);
  } finally {
    await handle.close();
  }
  if (head.equals(payload.bytes(0, head.length))) throw new Error('features check: the stored file is the plaintext (AES off?)');
  await verifyUpload(door, a, payload, { signal });
}

/** A burst while the summed RSS of the door's processes is sampled: the burst and its peak resident bytes. */
async function sampledBurst(door: Door, payloads: readonly Payload[], concurrency: number, prefix: string, ctx: Ctx): Promise<{ wallMs: number; uploads: Uploaded[]; peak: number }> {
  const sampler = await samplePeak(door.pids(), ctx.profile.sampleMs);
  try {
    const result = await burst(door, payloads, concurrency, prefix, ctx.signal);
    return { ...result, peak: await sampler.stop() };
  } finally {
    await sampler.stop();
  }
}

/** count uploads through door, `concurrency` at once over keep-alive connections; the answer time of each. */
async function burst(door: Door, payloads: readonly Payload[], concurrency: number, prefix: string, signal: AbortSignal): Promise<{ wallMs: number; uploads: Uploaded[] }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  try {
    const start = performance.now();
    const uploads = await pool(payloads.length, concurrency, (i, stop) => door.upload(`${prefix}/${i}.bin`, payloads[i]!, { agent, signal: stop }), signal);
    return { wallMs: performance.now() - start, uploads };
  } finally {
    agent.destroy();
  }
}

async function verifyAll(door: Door, uploads: readonly Uploaded[], payloads: readonly Payload[], signal: AbortSignal): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  try {
    await pool(uploads.length, 4, (i, stop) => verifyUpload(door, uploads[i]!, payloads[i]!, { agent, signal: stop }), signal);
  } finally {
    agent.destroy();
  }
}

/**
 * An untimed, verified burst before the runs on a server that is reused across them: Node's JIT (ours, the
 * bare tus server) and the connection paths are warm when the clock starts, as on a server that has been up.
 */
async function warmUp(door: Door, count: number, size: number, concurrency: number, signal: AbortSignal): Promise<void> {
  const sent = payloads(count, size);
  const { uploads } = await burst(door, sent, concurrency, 'warm-up', signal);
  await verifyAll(door, uploads, sent, signal);
}

function payloads(count: number, size: number): Payload[] {
  const list = Array.from({ length: count }, () => newPayload(size));
  for (const p of list) p.digest();
  return list;
}

/**
 * One upload of `size` per side and run, each on a freshly started target (so every run finds an empty store
 * and no earlier file in the page cache): MiB/s at the answer and once the file was fsynced.
 */
interface SingleResult {
  answer: number[];
  disk: number[];
  /** Server CPU seconds per GiB received (utime + stime of its processes, start to answer). */
  cpu: number[];
}

async function singleUploads(ctx: Ctx, sides: readonly Side[], size: number): Promise<Map<Side, SingleResult>> {
  const payload = newPayload(size);
  payload.digest();
  const results = new Map(sides.map((s) => [s, { answer: [] as number[], disk: [] as number[], cpu: [] as number[] }]));
  for (let r = 0; r < ctx.runs; r++) {
    for (const side of rotated(sides, r)) {
      ctx.signal.throwIfAborted();
      const started = await side.start();
      try {
        await syncAll();
        const cpuBefore = await cpuSecondsOf(started.door.pids());
        const up = await started.door.upload(`run-${r}/file-${size}.bin`, payload, { sync: true, signal: ctx.signal });
        const cpu = ((await cpuSecondsOf(started.door.pids())) - cpuBefore) / (size / GiB);
        await verifyUpload(started.door, up, payload, { signal: ctx.signal });
        const result = results.get(side)!;
        result.answer.push(mibps(size, up.answerMs));
        result.disk.push(mibps(size, up.diskMs!));
        result.cpu.push(cpu);
        ctx.log(`  ${side.label}: ${mibps(size, up.answerMs).toFixed(1)} MiB/s at answer, ${mibps(size, up.diskMs!).toFixed(1)} on disk, ${cpu.toFixed(2)} CPU s/GiB`);
      } finally {
        await started.stop();
      }
    }
  }
  return results;
}

function singleUploadRows(ctx: Ctx, group: string, results: Map<Side, SingleResult>, ours: Side, baseline: Side, answerNote?: string): Row[] {
  const o = results.get(ours)!;
  const b = results.get(baseline)!;
  return [
    row(group, 'MiB/s at answer', 'MiB/s', 'higher', measured(ours.label, o.answer), measured(baseline.label, b.answer), answerNote),
    row(group, 'MiB/s on disk (fsync)', 'MiB/s', 'higher', measured(ours.label, o.disk), measured(baseline.label, b.disk)),
    row(group, 'server CPU per GiB received', 's', 'lower', measured(ours.label, o.cpu), measured(baseline.label, b.cpu), ctx.profile.quick ? 'per GiB, from a small file: coarse' : undefined),
  ];
}

// --- the scenarios -----------------------------------------------------------------------------------------

const putBig: Scenario = {
  id: 'put-1g',
  title: 'Legacy PUT of one big file vs nginx WebDAV PUT',
  diskNeed: (p) => 2 * p.big,
  async run(ctx) {
    const ours = oursLegacy(ctx);
    const nginx = nginxDav(ctx);
    const results = await singleUploads(ctx, [ours, nginx], ctx.profile.big);
    // The legacy door fsyncs the staging file before it answers (stores/staging.ts); nginx answers from the page cache.
    return singleUploadRows(ctx, `Legacy PUT ${sizeLabel(ctx.profile.big)}`, results, ours, nginx, 'ours fsyncs before answering');
  },
};

const tusSingle: Scenario = {
  id: 'tus-1g-single',
  title: 'tus upload of one big file in one PATCH vs bare @tus/server',
  diskNeed: (p) => 2 * p.big,
  async run(ctx) {
    const ours = oursTus(ctx, 0);
    const bare = bareTus(ctx, 0);
    const results = await singleUploads(ctx, [ours, bare], ctx.profile.big);
    return singleUploadRows(ctx, `tus ${sizeLabel(ctx.profile.big)}, one PATCH`, results, ours, bare);
  },
};

const tusChunked: Scenario = {
  id: 'tus-1g-chunked',
  title: 'tus upload of one big file in PATCHes of 8 MiB vs bare @tus/server',
  diskNeed: (p) => 2 * p.big,
  async run(ctx) {
    const ours = oursTus(ctx, ctx.profile.patch);
    const bare = bareTus(ctx, ctx.profile.patch);
    const results = await singleUploads(ctx, [ours, bare], ctx.profile.big);
    return singleUploadRows(ctx, `tus ${sizeLabel(ctx.profile.big)}, ${sizeLabel(ctx.profile.patch)} PATCHes`, results, ours, bare);
  },
};

const putMany: Scenario = {
  id: 'put-200x1m',
  title: '200 PUTs of 1 MiB, all in flight at once, vs nginx WebDAV PUT',
  diskNeed: (p) => 3 * p.many * p.manySize * 4,
  async run(ctx) {
    const { many, manySize } = ctx.profile;
    const sides = [oursLegacy(ctx), nginxDav(ctx)];
    const started = new Map<Side, Started>();
    const rps = new Map(sides.map((s) => [s, [] as number[]]));
    const p99 = new Map(sides.map((s) => [s, [] as number[]]));
    try {
      for (const side of sides) started.set(side, await side.start());
      for (const s of started.values()) await warmUp(s.door, many, manySize, many, ctx.signal);
      for (let r = 0; r < ctx.runs; r++) {
        for (const side of rotated(sides, r)) {
          const { door } = started.get(side)!;
          const sent = payloads(many, manySize);
          await syncAll();
          const { wallMs, uploads } = await burst(door, sent, many, `run-${r}`, ctx.signal);
          await verifyAll(door, uploads, sent, ctx.signal);
          rps.get(side)!.push(many / (wallMs / 1000));
          p99.get(side)!.push(percentile(uploads.map((u) => u.answerMs), 99));
          ctx.log(`  ${side.label}: ${(many / (wallMs / 1000)).toFixed(0)} req/s, p99 ${percentile(uploads.map((u) => u.answerMs), 99).toFixed(1)} ms`);
        }
      }
    } finally {
      for (const s of started.values()) await s.stop();
    }
    const group = `${many} × ${sizeLabel(manySize)} PUT, ${many} in flight`;
    const [o, n] = sides as [Side, Side];
    return [
      row(group, 'requests/s', 'req/s', 'higher', measured(o.label, rps.get(o)!), measured(n.label, rps.get(n)!)),
      row(group, 'p99 latency', 'ms', 'lower', measured(o.label, p99.get(o)!), measured(n.label, p99.get(n)!)),
    ];
  },
};

/** ours, nginx and the bare tus server, each holding the same big payload; their download URLs. */
async function withBigFileEverywhere<T>(ctx: Ctx, which: { tus: boolean }, body: (downloads: Array<{ label: string; url: string; pids: () => number[] }>, payload: Payload) => Promise<T>): Promise<T> {
  const payload = newPayload(ctx.profile.big);
  payload.digest();
  const stops: Array<() => Promise<void>> = [];
  try {
    const server = await startOurs(ctx.build, ctx.dir, { maxUploadSize: MAX_UPLOAD });
    stops.push(() => server.stop());
    const nginx = await startNginx(ctx.dir);
    stops.push(() => nginx.stop());
    const doors: Array<{ label: string; door: Door }> = [
      { label: 'hmac-file-server GET', door: legacyDoor(server) },
      { label: 'nginx static', door: davDoor(nginx) },
    ];
    if (which.tus) {
      const bare = await startTusBaseline(ctx.build, ctx.dir);
      stops.push(() => bare.stop());
      doors.push({ label: 'bare @tus/server GET', door: tusDoor(bare, 0) });
    }
    const downloads = [];
    for (const { label, door } of doors) {
      const up = await door.upload('download/big.bin', payload, { signal: ctx.signal });
      await verifyUpload(door, up, payload, { signal: ctx.signal });
      // A first full download: checks the bytes served and leaves the file in the page cache.
      const warm = await request(up.download, 'GET', { sink: 'hash', signal: ctx.signal });
      if (warm.status !== 200 || warm.sha256 !== payload.digest()) throw new VerifyError(`${label}: GET ${up.download} gave HTTP ${warm.status}, SHA-256 ${warm.sha256}`);
      downloads.push({ label, url: up.download, pids: () => door.pids() });
    }
    return await body(downloads, payload);
  } finally {
    for (const stop of stops.reverse()) await stop();
  }
}

const getBig: Scenario = {
  id: 'get-1g',
  title: 'GET of one big file with a hot page cache, and the server CPU it costs, vs nginx static and bare @tus/server',
  diskNeed: (p) => 4 * p.big,
  async run(ctx) {
    return withBigFileEverywhere(ctx, { tus: true }, async (downloads, payload) => {
      const speed = new Map(downloads.map((d) => [d, [] as number[]]));
      const cpu = new Map(downloads.map((d) => [d, [] as number[]]));
      for (let r = 0; r < ctx.runs; r++) {
        for (const d of rotated(downloads, r)) {
          const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
          try {
            const cpuBefore = await cpuSecondsOf(d.pids());
            const start = performance.now();
            const answer = await request(d.url, 'GET', { sink: 'count', agent, signal: ctx.signal });
            const ms = performance.now() - start;
            const cpuAfter = await cpuSecondsOf(d.pids());
            if (answer.status !== 200 || answer.bytes !== payload.size) throw new VerifyError(`${d.label}: GET gave HTTP ${answer.status}, ${answer.bytes} of ${payload.size} bytes`);
            speed.get(d)!.push(mibps(payload.size, ms));
            cpu.get(d)!.push((cpuAfter - cpuBefore) / (payload.size / GiB));
            ctx.log(`  ${d.label}: ${mibps(payload.size, ms).toFixed(0)} MiB/s, ${((cpuAfter - cpuBefore) / (payload.size / GiB)).toFixed(2)} CPU s/GiB`);
          } finally {
            agent.destroy();
          }
        }
      }
      const [o, ...baselines] = downloads as [(typeof downloads)[number], ...typeof downloads];
      const group = `GET ${sizeLabel(payload.size)}, hot page cache`;
      const cpuNote = ctx.profile.quick ? 'per GiB, from a small file: coarse' : undefined;
      return [
        ...baselines.map((b) => row(group, 'MiB/s', 'MiB/s', 'higher', measured(o.label, speed.get(o)!), measured(b.label, speed.get(b)!))),
        ...baselines.map((b) => row(group, 'server CPU per GiB sent', 's', 'lower', measured(o.label, cpu.get(o)!), measured(b.label, cpu.get(b)!), cpuNote)),
      ];
    });
  },
};

const rangeGets: Scenario = {
  id: 'range-64k',
  title: 'Random 64 KiB Range GETs, 8 in flight, vs nginx static',
  diskNeed: (p) => 3 * p.big,
  async run(ctx) {
    const { ranges, rangeSize, rangeConcurrency } = ctx.profile;
    return withBigFileEverywhere(ctx, { tus: false }, async (downloads, payload) => {
      const random = prng(0x5eed);
      const offsets = Array.from({ length: ranges }, () => Math.floor(random() * (payload.size - rangeSize + 1)));
      const rps = new Map(downloads.map((d) => [d, [] as number[]]));
      const p50 = new Map(downloads.map((d) => [d, [] as number[]]));
      /** count Range GETs at offsets from the list, each checked against the bytes uploaded; their latencies. */
      const round = async (d: (typeof downloads)[number], count: number): Promise<number[]> => {
        const agent = new http.Agent({ keepAlive: true, maxSockets: rangeConcurrency });
        try {
          return await pool(
            count,
            rangeConcurrency,
            async (i, stop) => {
              const from = offsets[i % offsets.length]!;
              const t = performance.now();
              const answer = await request(d.url, 'GET', { headers: { Range: `bytes=${from}-${from + rangeSize - 1}` }, agent, signal: stop });
              const ms = performance.now() - t;
              if (answer.status !== 206 || !answer.body.equals(payload.bytes(from, from + rangeSize))) {
                throw new VerifyError(`${d.label}: Range bytes=${from}-${from + rangeSize - 1} gave HTTP ${answer.status}, ${answer.body.length} bytes that ${answer.status === 206 ? 'differ from' : 'are not'} the bytes sent`);
              }
              return ms;
            },
            ctx.signal,
          );
        } finally {
          agent.destroy();
        }
      };
      for (const d of downloads) await round(d, ctx.profile.rangeWarmUp);
      for (let r = 0; r < ctx.runs; r++) {
        for (const d of rotated(downloads, r)) {
          const start = performance.now();
          const latencies = await round(d, ranges);
          const wallMs = performance.now() - start;
          rps.get(d)!.push(ranges / (wallMs / 1000));
          p50.get(d)!.push(percentile(latencies, 50));
          ctx.log(`  ${d.label}: ${(ranges / (wallMs / 1000)).toFixed(0)} req/s, p50 ${percentile(latencies, 50).toFixed(2)} ms`);
        }
      }
      const [o, n] = downloads as [(typeof downloads)[number], (typeof downloads)[number]];
      const group = `${ranges} × ${sizeLabel(rangeSize)} Range GET, ${rangeConcurrency} in flight`;
      return [
        row(group, 'requests/s', 'req/s', 'higher', measured(o.label, rps.get(o)!), measured(n.label, rps.get(n)!)),
        row(group, 'p50 latency', 'ms', 'lower', measured(o.label, p50.get(o)!), measured(n.label, p50.get(n)!)),
      ];
    });
  },
};

const memory: Scenario = {
  id: 'rss',
  title: 'Resident memory: idle after start, peak during 200 × 1 MiB uploads in flight, idle again (legacy vs nginx, tus vs bare @tus/server)',
  diskNeed: (p) => 4 * p.many * p.manySize,
  async run(ctx) {
    const { many, manySize, settleMs } = ctx.profile;
    const pairs: Array<[string, Side, Side]> = [
      [`Memory, ${many} × ${sizeLabel(manySize)} PUT in flight`, oursLegacy(ctx), nginxDav(ctx)],
      [`Memory, ${many} × ${sizeLabel(manySize)} tus in flight`, oursTus(ctx, 0), bareTus(ctx, 0)],
    ];
    const sides = pairs.flatMap(([, o, b]) => [o, b]);
    const idle = new Map(sides.map((s) => [s, [] as number[]]));
    const peak = new Map(sides.map((s) => [s, [] as number[]]));
    const after = new Map(sides.map((s) => [s, [] as number[]]));
    for (let r = 0; r < ctx.runs; r++) {
      const sent = payloads(many, manySize);
      for (const side of rotated(sides, r)) {
        ctx.signal.throwIfAborted();
        const started = await side.start();
        try {
          const pids = started.door.pids();
          await sleep(settleMs);
          idle.get(side)!.push((await rssOf(pids)) / MiB);
          const { uploads, peak: highest } = await sampledBurst(started.door, sent, many, `run-${r}`, ctx);
          peak.get(side)!.push(highest / MiB);
          await sleep(settleMs);
          after.get(side)!.push((await rssOf(pids)) / MiB);
          await verifyAll(started.door, uploads, sent, ctx.signal);
          ctx.log(`  ${side.label}: idle ${idle.get(side)!.at(-1)!.toFixed(1)} MiB, peak ${peak.get(side)!.at(-1)!.toFixed(1)}, after ${after.get(side)!.at(-1)!.toFixed(1)}`);
        } finally {
          await started.stop();
        }
      }
    }
    const nginxNote = 'nginx: master + 1 worker';
    return pairs.flatMap(([group, o, b]) => {
      const note = b.label.startsWith('nginx') ? nginxNote : undefined;
      return [
        row(group, 'RSS idle after start', 'MiB', 'lower', measured(o.label, idle.get(o)!), measured(b.label, idle.get(b)!), note),
        row(group, 'peak RSS during the load', 'MiB', 'lower', measured(o.label, peak.get(o)!), measured(b.label, peak.get(b)!), note),
        row(group, 'RSS idle after the load', 'MiB', 'lower', measured(o.label, after.get(o)!), measured(b.label, after.get(b)!), note),
      ];
    });
  },
};

const workSmall: Scenario = {
  id: 'work-small',
  title: 'Cost vs work: small uploads at 1, 10, 100 and 1000 at once, legacy and tus, features off and on (AES + dedup + ClamAV)',
  diskNeed: (p) => 6 * p.levels.reduce((sum, c) => sum + p.levelCount(c), 0) * p.smallSize * 2 * 3,
  async run(ctx) {
    const { levels, smallSize } = ctx.profile;
    const stops: Array<() => Promise<void>> = [];
    try {
      const off = await ours(ctx, false);
      stops.push(() => off.stop());
      const on = await ours(ctx, true);
      stops.push(() => on.stop());
      const nginx = await startNginx(ctx.dir);
      stops.push(() => nginx.stop());
      const bare = await startTusBaseline(ctx.build, ctx.dir);
      stops.push(() => bare.stop());
      const doors = {
        legacyOff: legacyDoor(off),
        legacyOn: legacyDoor(on),
        tusOff: tusDoor(off, 0, await off.grant(MAX_UPLOAD)),
        tusOn: tusDoor(on, 0, await on.grant(MAX_UPLOAD)),
        nginx: davDoor(nginx),
        bare: tusDoor(bare, 0),
      };
      const labels: Record<keyof typeof doors, string> = {
        legacyOff: 'hmac-file-server legacy PUT',
        legacyOn: `hmac-file-server legacy PUT (${FEATURES})`,
        tusOff: 'hmac-file-server tus',
        tusOn: `hmac-file-server tus (${FEATURES})`,
        nginx: 'nginx WebDAV PUT',
        bare: 'bare @tus/server',
      };
      const keys = Object.keys(doors) as Array<keyof typeof doors>;
      for (const key of keys) await warmUp(doors[key], ctx.profile.warmUp, smallSize, 100, ctx.signal);
      for (const c of levels) {
        const count = ctx.profile.levelCount(c);
        const rate = new Map(keys.map((k) => [k, [] as number[]]));
        for (let r = 0; r < ctx.runs; r++) {
          for (const key of rotated(keys, r)) {
            const door = doors[key];
            const sent = payloads(count, smallSize);
            const { wallMs, uploads } = await burst(door, sent, c, `c${c}-run-${r}`, ctx.signal);
            await verifyAll(door, uploads, sent, ctx.signal);
            rate.get(key)!.push(count / (wallMs / 1000));
            ctx.log(`  ${labels[key]}, ${c} at once: ${(count / (wallMs / 1000)).toFixed(0)} uploads/s`);
          }
        }
        const group = `${count} × ${sizeLabel(smallSize)} uploads, ${c} at once`;
        const m = (k: keyof typeof doors) => measured(labels[k], rate.get(k)!);
        ctx.emit(
          row(group, 'uploads/s, legacy', 'uploads/s', 'higher', m('legacyOff'), m('nginx')),
          row(group, `uploads/s, legacy, ${FEATURES}`, 'uploads/s', 'higher', m('legacyOn'), m('nginx')),
          row(group, 'uploads/s, tus', 'uploads/s', 'higher', m('tusOff'), m('bare')),
          row(group, `uploads/s, tus, ${FEATURES}`, 'uploads/s', 'higher', m('tusOn'), m('bare')),
        );
      }
    } finally {
      for (const stop of stops.reverse()) await stop();
    }
    return [];
  },
};

/** Free bytes kept aside whatever the large-file scenario scales to. */
const DISK_RESERVE = 4 * GiB;

const workLarge: Scenario = {
  id: 'work-large',
  title: 'Cost vs work: peak RSS with 100 large uploads at once (10 MiB, 100 MiB, 1 GiB), legacy and tus, features off and on',
  // Checked per file size below: the count is scaled to the free space.
  diskNeed: (p) => 2 * Math.min(...p.largeSizes) + DISK_RESERVE,
  async run(ctx) {
    const { largeSizes, largeConcurrency } = ctx.profile;
    for (const size of largeSizes) {
      const free = await freeBytes(ctx.dir);
      const fits = Math.floor((free - DISK_RESERVE) / (size * 1.05));
      const count = Math.min(largeConcurrency, fits);
      if (count < 2) {
        ctx.note(`${sizeLabel(size)} files skipped: ${(free / GiB).toFixed(1)} GiB free is not enough for 2 at once`);
        continue;
      }
      const note = count < largeConcurrency ? `scaled from ${largeConcurrency} to ${count} at once: ${(free / GiB).toFixed(1)} GiB free` : undefined;
      if (note) ctx.note(`${sizeLabel(size)} files: ${note}`);
      const sides: Array<{ key: string; side: Side }> = [
        { key: 'legacyOff', side: oursLegacy(ctx) },
        { key: 'legacyOn', side: oursLegacy(ctx, true) },
        { key: 'nginx', side: nginxDav(ctx) },
        { key: 'tusOff', side: oursTus(ctx, 0) },
        { key: 'tusOn', side: oursTus(ctx, 0, true) },
        { key: 'bare', side: bareTus(ctx, 0) },
      ];
      // Each side and run has a fresh store, so the same bytes can be sent to all (their digests made once).
      const sent = payloads(count, size);
      const peak = new Map(sides.map((s) => [s.key, [] as number[]]));
      const speed = new Map(sides.map((s) => [s.key, [] as number[]]));
      for (let r = 0; r < ctx.runs; r++) {
        for (const { key, side } of rotated(sides, r)) {
          ctx.signal.throwIfAborted();
          const started = await side.start();
          try {
            await syncAll();
            const { wallMs, uploads, peak: highest } = await sampledBurst(started.door, sent, count, `run-${r}`, ctx);
            peak.get(key)!.push(highest / MiB);
            speed.get(key)!.push(mibps(size * count, wallMs));
            await verifyAll(started.door, uploads, sent, ctx.signal);
            ctx.log(`  ${side.label}, ${count} × ${sizeLabel(size)}: peak ${peak.get(key)!.at(-1)!.toFixed(1)} MiB, ${speed.get(key)!.at(-1)!.toFixed(0)} MiB/s`);
          } finally {
            await started.stop();
          }
        }
      }
      const group = `${count} × ${sizeLabel(size)} uploads at once`;
      const m = (key: string) => measured(sides.find((s) => s.key === key)!.side.label, peak.get(key)!);
      const s = (key: string) => measured(sides.find((x) => x.key === key)!.side.label, speed.get(key)!);
      ctx.emit(
        row(group, 'peak RSS, legacy', 'MiB', 'lower', m('legacyOff'), m('nginx'), note),
        row(group, `peak RSS, legacy, ${FEATURES}`, 'MiB', 'lower', m('legacyOn'), m('nginx'), note),
        row(group, 'peak RSS, tus', 'MiB', 'lower', m('tusOff'), m('bare'), note),
        row(group, `peak RSS, tus, ${FEATURES}`, 'MiB', 'lower', m('tusOn'), m('bare'), note),
        row(group, 'MiB/s, legacy', 'MiB/s', 'higher', s('legacyOff'), s('nginx')),
        row(group, `MiB/s, legacy, ${FEATURES}`, 'MiB/s', 'higher', s('legacyOn'), s('nginx')),
        row(group, 'MiB/s, tus', 'MiB/s', 'higher', s('tusOff'), s('bare')),
        row(group, `MiB/s, tus, ${FEATURES}`, 'MiB/s', 'higher', s('tusOn'), s('bare')),
      );
    }
    return [];
  },
};

/** Hashes a stream as it is read; its byte count and SHA-256. */
async function drain(body: Readable): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of body) {
    bytes += (chunk as Buffer).length;
    hash.update(chunk as Buffer);
  }
  return { bytes, sha256: hash.digest('hex') };
}

const s3Backend: Scenario = {
  id: 's3',
  title: 'StorageBackend = "s3" on a local Ceph radosgw: one big PUT, 200 × 1 MiB PUTs, a GET and 64 KiB Range GETs, vs the same requests made to radosgw itself with the AWS SDK',
  diskNeed: (p) => 2 * Math.min(p.big, 256 * MiB) + 4 * p.many * p.manySize,
  async run(ctx) {
    const { many, manySize, ranges, rangeSize, rangeConcurrency } = ctx.profile;
    // radosgw keeps its objects in memory here (a memstore OSD): 256 MiB per big file keeps every run in it.
    const big = Math.min(ctx.profile.big, 256 * MiB);
    if (big < ctx.profile.big) ctx.note(`the big file is ${sizeLabel(big)}, not ${sizeLabel(ctx.profile.big)}: radosgw holds every object of the runs in memory`);
    const s3 = await startS3({ memoryBytes: 8 * GiB });
    const stops: Array<() => Promise<void> | void> = [() => s3.dispose()];
    try {
      const bucket = await createBucket(s3);
      stops.push(() => bucket.dispose());
      const server = await startOurs(ctx.build, ctx.dir, { maxUploadSize: MAX_UPLOAD, s3: bucket.config });
      stops.push(() => server.stop());
      const door = legacyDoor(server);
      const ours = 'hmac-file-server on S3';
      const direct = 'radosgw direct (AWS SDK)';
      const { client } = bucket;
      const put = (key: string, payload: Payload) => client.send(new PutObjectCommand({ Bucket: bucket.name, Key: key, Body: payload.stream(), ContentLength: payload.size }));
      const getDirect = async (key: string, range?: string) => (await client.send(new GetObjectCommand({ Bucket: bucket.name, Key: key, ...(range ? { Range: range } : {}) }))).Body as Readable;
      const checkDirect = async (key: string, payload: Payload) => {
        const got = await drain(await getDirect(key));
        if (got.sha256 !== payload.digest()) throw new VerifyError(`${direct}: ${key} has SHA-256 ${got.sha256}, sent ${payload.digest()}`);
      };
      const series = () => new Map([ours, direct].map((label) => [label, [] as number[]]));

      // One big PUT per side and run.
      const payload = newPayload(big);
      payload.digest();
      const putSpeed = series();
      let download = '';
      for (let r = 0; r < ctx.runs; r++) {
        for (const side of rotated([ours, direct], r)) {
          const start = performance.now();
          if (side === ours) {
            const up = await door.upload(`big-${r}.bin`, payload, { signal: ctx.signal });
            await verifyUpload(door, up, payload, { signal: ctx.signal });
            download = up.download;
            putSpeed.get(side)!.push(mibps(big, up.answerMs));
          } else {
            await put(`direct/big-${r}.bin`, payload);
            putSpeed.get(side)!.push(mibps(big, performance.now() - start));
            await checkDirect(`direct/big-${r}.bin`, payload);
          }
          ctx.log(`  ${side}: PUT ${sizeLabel(big)} at ${putSpeed.get(side)!.at(-1)!.toFixed(0)} MiB/s`);
        }
      }

      // Many small PUTs at once.
      const rps = series();
      const warm = payloads(Math.min(many, 20), manySize);
      await burst(door, warm, warm.length, 'warm-up', ctx.signal);
      await pool(warm.length, warm.length, (i) => put(`direct/warm-up/${i}.bin`, warm[i]!), ctx.signal);
      for (let r = 0; r < ctx.runs; r++) {
        const sent = payloads(many, manySize);
        for (const side of rotated([ours, direct], r)) {
          const start = performance.now();
          if (side === ours) {
            const { wallMs, uploads } = await burst(door, sent, many, `many-${r}`, ctx.signal);
            rps.get(side)!.push(many / (wallMs / 1000));
            await verifyAll(door, uploads, sent, ctx.signal);
          } else {
            await pool(many, many, (i) => put(`direct/many-${r}/${i}.bin`, sent[i]!), ctx.signal);
            rps.get(side)!.push(many / ((performance.now() - start) / 1000));
            await pool(many, 8, (i) => checkDirect(`direct/many-${r}/${i}.bin`, sent[i]!), ctx.signal);
          }
          ctx.log(`  ${side}: ${many} × ${sizeLabel(manySize)} PUT at ${rps.get(side)!.at(-1)!.toFixed(0)} req/s`);
        }
      }

      // The big file whole, then random ranges of it.
      const getSpeed = series();
      const rangeRate = series();
      const random = prng(0x5eed);
      const offsets = Array.from({ length: ranges }, () => Math.floor(random() * (big - rangeSize + 1)));
      const agent = new http.Agent({ keepAlive: true, maxSockets: rangeConcurrency });
      try {
        for (let r = 0; r < ctx.runs; r++) {
          for (const side of rotated([ours, direct], r)) {
            let start = performance.now();
            const whole = side === ours ? await request(download, 'GET', { sink: 'hash', agent, signal: ctx.signal }) : { status: 200, ...(await drain(await getDirect('direct/big-0.bin'))) };
            getSpeed.get(side)!.push(mibps(big, performance.now() - start));
            if (whole.status !== 200 || whole.sha256 !== payload.digest()) throw new VerifyError(`${side}: GET of the big file gave HTTP ${whole.status}, SHA-256 ${whole.sha256}`);
            start = performance.now();
            await pool(
              ranges,
              rangeConcurrency,
              async (i, stop) => {
                const from = offsets[i]!;
                const range = `bytes=${from}-${from + rangeSize - 1}`;
                const body = side === ours ? (await request(download, 'GET', { headers: { Range: range }, agent, signal: stop })).body : Buffer.concat(await (await getDirect('direct/big-0.bin', range)).toArray());
                if (!body.equals(payload.bytes(from, from + rangeSize))) throw new VerifyError(`${side}: Range ${range} gave other bytes than those sent`);
              },
              ctx.signal,
            );
            rangeRate.get(side)!.push(ranges / ((performance.now() - start) / 1000));
            ctx.log(`  ${side}: GET at ${getSpeed.get(side)!.at(-1)!.toFixed(0)} MiB/s, ${ranges} Range GETs at ${rangeRate.get(side)!.at(-1)!.toFixed(0)} req/s`);
          }
        }
      } finally {
        agent.destroy();
      }
      const m = (values: Map<string, number[]>, label: string) => measured(label, values.get(label)!);
      return [
        row(`S3: legacy PUT ${sizeLabel(big)}`, 'MiB/s at answer', 'MiB/s', 'higher', m(putSpeed, ours), m(putSpeed, direct), 'ours receives the whole file, then uploads it to S3'),
        row(`S3: ${many} × ${sizeLabel(manySize)} PUT, ${many} in flight`, 'requests/s', 'req/s', 'higher', m(rps, ours), m(rps, direct)),
        row(`S3: GET ${sizeLabel(big)}`, 'MiB/s', 'MiB/s', 'higher', m(getSpeed, ours), m(getSpeed, direct)),
        row(`S3: ${ranges} × ${sizeLabel(rangeSize)} Range GET, ${rangeConcurrency} in flight`, 'requests/s', 'req/s', 'higher', m(rangeRate, ours), m(rangeRate, direct)),
      ];
    } finally {
      for (const stop of stops.reverse()) await stop();
    }
  },
};

export const SCENARIOS: readonly Scenario[] = [putBig, tusSingle, tusChunked, putMany, getBig, rangeGets, memory, workSmall, workLarge, s3Backend];
