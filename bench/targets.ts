// The servers the bench measures, each a child process with its own folder below the bench's temp root (so
// every store is on the same disk): hmac-file-server (the CLI, compiled from this checkout into that root),
// Debian's nginx (a WebDAV PUT location and a static location over one folder) and a bare @tus/server.
// stop() ends a process and removes its folder; stopEverything() does that for whatever is still running.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { signSlot } from '../middleware/slot-verifier-hmac.js';
import { grantKey, mintGrant } from '../middleware/upload-grant.js';
import { encodeSlotPath } from '../server/cli-sign.js';
import { ensureDebianPackages } from '../spec/helpers/debian-packages.js';
import { acceptsConnections, freePort } from '../spec/helpers/local-daemon.js';
import { childrenOf } from './proc.js';

const run = promisify(execFile);
export const REPO = path.resolve(import.meta.dirname, '..');

const stoppers = new Set<() => Promise<void>>();

/** Stops every target and child process still running (on the way out, also after a failure or Ctrl-C). */
export async function stopEverything(): Promise<void> {
  for (const stop of [...stoppers]) await stop().catch(() => undefined);
}

/** A child process whose output is kept (the last 8 KB) for the error of a failed start. */
interface Child {
  pid: number;
  /** How many output chunks held the marker given to spawnChild. */
  marked(): number;
  alive(): boolean;
  tail(): string;
  /** SIGTERM, then SIGKILL after graceMs; nothing once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

/** The environment for children: no loader options of the bench's own tsx inherited by the servers. */
function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  return env;
}

/** Where a target that dies on its own is reported at once (the bench's log). */
let report: (line: string) => void = (line) => process.stderr.write(`${line}\n`);

export function reportTo(log: (line: string) => void): void {
  report = log;
}

/** What happened to targets that belongs in the report (a baseline that survived its library's crash). */
const events: string[] = [];

/** The events since the last call. */
export function takeEvents(): string[] {
  return events.splice(0);
}

function spawnChild(label: string, command: string, args: readonly string[], cwd: string, logFile?: string, marker?: string): Child {
  let output = '';
  let marks = 0;
  let exited = false;
  let stopping = false;
  const child: ChildProcess = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
  const collect = (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    if (marker !== undefined) marks += text.split(marker).length - 1;
    output = (output + text).slice(-8000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  child.on('error', (err) => collect(Buffer.from(`\n${command}: ${err.message}\n`)));
  const gone = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = true;
      if (!stopping) {
        const log = logFile && existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-3000) : '';
        report(`bench: ${label} (pid ${child.pid}) exited on its own (${signal ?? `code ${code}`}):\n${output.slice(-3000)}${log ? `\n--- its log ---\n${log}` : ''}`);
      }
      resolve();
    }),
  );
  return {
    pid: child.pid ?? -1,
    marked: () => marks,
    alive: () => !exited && child.pid !== undefined,
    tail: () => output,
    async stop(graceMs = 5000) {
      stopping = true;
      if (exited || child.pid === undefined) return;
      child.kill('SIGTERM');
      if (!(await Promise.race([gone.then(() => true), sleep(graceMs, false)]))) {
        child.kill('SIGKILL');
        await gone;
      }
    },
  };
}

async function waitForPort(label: string, child: Child, port: number, logFile: string | undefined, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await acceptsConnections(port))) {
    if (!child.alive() || Date.now() > deadline) {
      const log = logFile ? await readFile(logFile, 'utf8').catch(() => '') : '';
      await child.stop(1000);
      throw new Error(`${label} did not start (${child.alive() ? 'no listener' : 'exited'}):\n${child.tail()}\n${log.slice(-3000)}`);
    }
    await sleep(25);
  }
}

/** Registers a target's stop (child, then its folder) so that stopEverything() can reach it; safe to call twice. */
function stoppable(child: Child, dir: string): () => Promise<void> {
  let done: Promise<void> | undefined;
  const stop = () => {
    done ??= (async () => {
      stoppers.delete(stop);
      await child.stop();
      await rm(dir, { recursive: true, force: true });
    })();
    return done;
  };
  stoppers.add(stop);
  return stop;
}

// --- the build ----------------------------------------------------------------------------------------

export interface Build {
  /** hmac-file-server's CLI, compiled. */
  serverMain: string;
  /** bench/tus-baseline.ts, compiled. */
  tusBaseline: string;
  seconds: number;
  /** tsc's complaints, if it emitted despite them (another engineer's edit in progress). */
  warnings: string;
}

/**
 * Compiles the server (tsconfig.build.json) and the tus baseline with tsc into root/build, so both run as
 * plain node like `npm start` does (no tsx loader in the process whose memory and CPU are measured). Nothing
 * is written to the checkout.
 */
export async function buildServers(root: string): Promise<Build> {
  const started = Date.now();
  const dir = path.join(root, 'build');
  const out = path.join(dir, 'out');
  await mkdir(dir, { recursive: true });
  await symlink(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  const pkg = JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as { name: string; version: string };
  await writeFile(path.join(dir, 'package.json'), JSON.stringify({ name: pkg.name, version: pkg.version, type: 'module', private: true }));
  const tsconfig = path.join(dir, 'tsconfig.json');
  await writeFile(
    tsconfig,
    JSON.stringify({
      extends: path.join(REPO, 'tsconfig.build.json'),
      compilerOptions: { rootDir: REPO, outDir: out, noEmitOnError: false, incremental: false, declaration: false },
      include: ['server', 'middleware', 'stores', 'hooks'].map((d) => path.join(REPO, d)).concat(path.join(REPO, 'bench', 'tus-baseline.ts')),
    }),
  );
  let warnings = '';
  try {
    await run(process.execPath, [path.join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', tsconfig], { maxBuffer: 16 * 1024 * 1024, env: childEnv() });
  } catch (err) {
    warnings = String((err as { stdout?: string }).stdout ?? (err as Error).message).slice(0, 4000);
  }
  const serverMain = path.join(out, 'server', 'main.js');
  const tusBaseline = path.join(out, 'bench', 'tus-baseline.js');
  if (!existsSync(serverMain) || !existsSync(tusBaseline)) throw new Error(`tsc did not emit the servers:\n${warnings}`);
  return { serverMain, tusBaseline, seconds: (Date.now() - started) / 1000, warnings };
}

// --- hmac-file-server -----------------------------------------------------------------------------------

export interface OursOptions {
  /** Largest upload the bench will send (MaxUploadSize and the grants). */
  maxUploadSize: number;
  /** AES + deduplication + ClamAV scanning through this clamd socket; features off without it. */
  clamdSocket?: string;
  /** StorageBackend = "s3" and the S3 keys: committed files in a bucket, not on disk. */
  s3?: Record<string, string | boolean>;
}

/** Config keys the bench sets beyond Secret, ListenIP/Port and the folders, and why (README, "Performance"). */
export const BENCH_CONFIG = {
  // Every bench client connects from 127.0.0.1: a per-address cap would measure the cap.
  MaxConnectionsPerIP: 0,
  // 1000 uploads at once must queue rather than be refused; NumWorkers (64 bodies at once) stays the default.
  UploadQueueSize: 4096,
  LogLevel: 'info',
} as const;

/**
 * With the features on. ClamAVTimeout bounds a whole scan: its default (60s) is too short for 1 GiB files when
 * dozens arrive at once (the scans share the disk and two cores with everything else), and those uploads are
 * then refused with 503 (fail-closed), which measures the timeout rather than the work.
 */
export const FEATURES_CONFIG = { ClamAVTimeout: '15m' } as const;

export interface OursTarget {
  kind: 'ours';
  url: string;
  features: boolean;
  /** Committed files are on disk as the plaintext (no encryption, not in S3): verified by reading them. */
  plaintextOnDisk: boolean;
  storeDir: string;
  pids(): number[];
  /** Path and query of a v2-signed legacy PUT for slotPath. */
  legacyPath(slotPath: string, size: number, contentType?: string): string;
  /** The committed file's path on disk (plaintext unless features are on). */
  fileOf(slotPath: string): string;
  tusPath: string;
  grant(maxSize: number): Promise<string>;
  stop(): Promise<void>;
}

function toml(values: Record<string, string | number | boolean>): string {
  return Object.entries(values)
    .map(([key, value]) => `${key} = ${typeof value === 'string' ? JSON.stringify(value) : String(value)}\n`)
    .join('');
}

export async function startOurs(build: Build, parent: string, options: OursOptions): Promise<OursTarget> {
  const dir = await mkdtemp(path.join(parent, 'hmac-file-server-'));
  const storeDir = path.join(dir, 'store');
  const logFile = path.join(dir, 'server.log');
  const port = await freePort();
  const secret = randomBytes(24).toString('hex');
  const configFile = path.join(dir, 'config.toml');
  const features = options.clamdSocket !== undefined;
  await writeFile(
    configFile,
    toml({
      Secret: secret,
      ListenIP: '127.0.0.1',
      ListenPort: port,
      StoreDir: storeDir,
      LogFile: logFile,
      MaxUploadSize: Math.max(options.maxUploadSize, 1),
      ...BENCH_CONFIG,
      ...(features ? { AESEnabled: true, DeduplicationEnabled: true, ClamAVEnabled: true, ClamAVSocket: options.clamdSocket!, ...FEATURES_CONFIG } : {}),
      ...options.s3,
    }),
  );
  const child = spawnChild('hmac-file-server', process.execPath, [build.serverMain, '--config', configFile], dir, logFile);
  const stop = stoppable(child, dir);
  try {
    await waitForPort('hmac-file-server', child, port, logFile);
  } catch (err) {
    await stop();
    throw err;
  }
  const key = grantKey('', secret);
  return {
    kind: 'ours',
    url: `http://127.0.0.1:${port}`,
    features,
    plaintextOnDisk: !features && options.s3 === undefined,
    storeDir,
    pids: () => [child.pid],
    legacyPath: (slotPath, size, contentType = 'application/octet-stream') =>
      `/upload/${encodeSlotPath(slotPath)}?v2=${signSlot(secret, 'v2', slotPath, size, contentType)}`,
    fileOf: (slotPath) => path.join(storeDir, 'upload', ...slotPath.split('/')),
    tusPath: '/files/',
    grant: (maxSize) => mintGrant(key, { subject: 'bench', maxSize: Math.max(1, maxSize), ttlSeconds: 24 * 3600 }),
    stop,
  };
}

// --- nginx ------------------------------------------------------------------------------------------------

/**
 * Debian's nginx, with a module for `dav_methods PUT` (ngx_http_dav_module: built into nginx-light and
 * nginx-full on Debian 12). Returns what it had to install, for the report.
 */
export async function ensureNginxDav(): Promise<string[]> {
  const notes: string[] = [];
  await ensureDebianPackages({ nginx: 'nginx-light' });
  const version = async () => {
    const { stderr } = await run('nginx', ['-V']);
    return stderr;
  };
  let built = await version();
  if (!built.includes('--with-http_dav_module')) {
    // Packages that lack the DAV module: nginx-full has it (libnginx-mod-http-dav-ext adds only PROPFIND & co).
    await run('apt-get', ['install', '-y', '--no-install-recommends', 'nginx-full'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, maxBuffer: 64 * 1024 * 1024 });
    notes.push('installed nginx-full: the nginx found had no ngx_http_dav_module for dav_methods PUT');
    built = await version();
    if (!built.includes('--with-http_dav_module')) throw new Error('nginx still has no ngx_http_dav_module after installing nginx-full');
  }
  notes.push(`${built.split('\n')[0]?.replace('nginx version: ', '') ?? 'nginx'} with ngx_http_dav_module (dav_methods PUT)`);
  return notes;
}

export interface NginxTarget {
  kind: 'nginx';
  url: string;
  root: string;
  pids(): number[];
  davPath(name: string): string;
  staticPath(name: string): string;
  fileOf(name: string): string;
  stop(): Promise<void>;
}

export async function startNginx(parent: string): Promise<NginxTarget> {
  const dir = await mkdtemp(path.join(parent, 'nginx-'));
  const root = path.join(dir, 'root');
  const tmp = path.join(dir, 'tmp');
  await mkdir(root);
  await mkdir(tmp);
  const port = await freePort();
  const errorLog = path.join(dir, 'error.log');
  const conf = path.join(dir, 'nginx.conf');
  await writeFile(
    conf,
    [
      ...(process.getuid?.() === 0 ? ['user root;'] : []),
      'daemon off;',
      // One worker: one process against one Node process (the bench's client shares the same cores).
      'worker_processes 1;',
      'worker_rlimit_nofile 16384;',
      `pid ${path.join(dir, 'nginx.pid')};`,
      `error_log ${errorLog} warn;`,
      'events { worker_connections 8192; }',
      'http {',
      `  access_log ${path.join(dir, 'access.log')};`,
      '  sendfile on;',
      // nginx's own default. Debian's nginx.conf turns it on; then a 64 KiB Range answer on a keep-alive
      // connection often waits ~40 ms (TCP_CORK meets the client's delayed ACK): 200 instead of 1500 req/s.
      '  tcp_nopush off;',
      '  keepalive_requests 100000;',
      '  default_type application/octet-stream;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${path.join(tmp, t)};`),
      '  server {',
      `    listen 127.0.0.1:${port};`,
      '    client_max_body_size 0;',
      // WebDAV PUT: the body goes to client_body_temp_path (same disk), then is renamed into place.
      '    location /dav/ {',
      `      alias ${root}/;`,
      '      dav_methods PUT;',
      '      create_full_put_path on;',
      '      dav_access user:rw;',
      '    }',
      '    location /static/ {',
      `      alias ${root}/;`,
      '    }',
      '  }',
      '}',
      '',
    ].join('\n'),
  );
  const child = spawnChild('nginx', 'nginx', ['-c', conf, '-p', dir], dir, errorLog);
  const stop = stoppable(child, dir);
  let workers: number[] = [];
  try {
    await waitForPort('nginx', child, port, errorLog);
    for (let i = 0; i < 100 && workers.length === 0; i++) {
      workers = await childrenOf(child.pid);
      if (workers.length === 0) await sleep(20);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    kind: 'nginx',
    url: `http://127.0.0.1:${port}`,
    root,
    pids: () => [child.pid, ...workers],
    davPath: (name) => `/dav/${encodeSlotPath(name)}`,
    staticPath: (name) => `/static/${encodeSlotPath(name)}`,
    fileOf: (name) => path.join(root, ...name.split('/')),
    stop,
  };
}

// --- bare @tus/server --------------------------------------------------------------------------------------

export interface TusBaselineTarget {
  kind: 'tus';
  url: string;
  tusPath: string;
  pids(): number[];
  fileOf(id: string): string;
  stop(): Promise<void>;
}

export async function startTusBaseline(build: Build, parent: string): Promise<TusBaselineTarget> {
  const dir = await mkdtemp(path.join(parent, 'tus-baseline-'));
  const store = path.join(dir, 'store');
  await mkdir(store);
  const port = await freePort();
  const child = spawnChild('bare @tus/server', process.execPath, [build.tusBaseline, store, String(port)], dir, undefined, 'tus-baseline: survived');
  const stopTarget = stoppable(child, dir);
  const stop = async () => {
    await stopTarget();
    const marks = child.marked();
    if (marks > 0) {
      const text = `bare @tus/server survived its library's "ReadableStream is already closed" crash after a GET ${marks} time(s)`;
      report(`bench: ${text}`);
      events.push(text);
    }
  };
  try {
    await waitForPort('bare @tus/server', child, port, undefined);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    kind: 'tus',
    url: `http://127.0.0.1:${port}`,
    tusPath: '/files/',
    pids: () => [child.pid],
    fileOf: (id) => path.join(store, id),
    stop,
  };
}
