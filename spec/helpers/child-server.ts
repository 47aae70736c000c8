// The real command line (server/main.ts through tsx) as a child process, with its own config.toml in a temp
// folder, so a test can squeeze what only a whole process has (its descriptor limit, via prlimit) and
// watch it survive.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { freePort } from './local-daemon.js';

const run = promisify(execFile);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface ChildServerOptions {
  /** Extra config.toml keys (Secret, ListenIP, ListenPort and StoreDir are set here unless given). */
  config?: Record<string, string | number | boolean | string[]>;
  /** Start under `prlimit --nofile=N:N` already (Node's module loader needs many descriptors at start-up). */
  nofileAtSpawn?: number;
  /** How long to wait for server.listening. */
  startTimeoutMs?: number;
  /** Called with the pid as soon as the process is spawned, while it is still starting. */
  onSpawn?: (pid: number) => void;
}

type Exit = { code: number | null; signal: NodeJS.Signals | null };

export interface ChildServer {
  pid: number;
  /** http://127.0.0.1:PORT */
  url: string;
  dir: string;
  /** The config.toml it was started with (rewrite it and send SIGHUP to reload the IP lists). */
  configFile: string;
  /** Its StoreDir: below dir (removed by stop()), or the caller's own if config gave one (kept). */
  storeDir: string;
  /** Where it logs: config's LogFile made absolute (relative to dir, as the config loader does), if set. */
  logFile: string | undefined;
  secret: string;
  stdout: string[];
  stderr: string[];
  /** Set once the process has exited. */
  exit: Exit | undefined;
  /** Resolves with the exit once the process has exited; rejects after timeoutMs. */
  waitForExit(timeoutMs?: number): Promise<Exit>;
  /** Its log lines so far: standard output, or LogFile when one is set. */
  logLines(): Promise<string[]>;
  /** The process exists (signal 0 reaches it) and has not exited. */
  alive(): boolean;
  /** The descriptor numbers the process holds now. */
  descriptors(): Promise<number[]>;
  /** Lowers (or raises) the running process's soft and hard RLIMIT_NOFILE with prlimit --pid. */
  limitDescriptors(n: number): Promise<void>;
  /** Kills the process (SIGTERM, then SIGKILL) and removes its folder. Safe to call twice. */
  stop(): Promise<void>;
}

/** A flat TOML table; a JSON array of strings is TOML too. */
export function toml(values: Record<string, string | number | boolean | string[]>): string {
  return Object.entries(values)
    .map(([key, value]) => `${key} = ${typeof value === 'string' || Array.isArray(value) ? JSON.stringify(value) : String(value)}\n`)
    .join('');
}

function collectLines(stream: NodeJS.ReadableStream, into: string[]): void {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop() ?? '';
    into.push(...lines.filter(Boolean));
  });
  stream.on('end', () => rest && into.push(rest));
}

export async function startChildServer(options: ChildServerOptions = {}): Promise<ChildServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-child-'));
  const storeDir = typeof options.config?.StoreDir === 'string' ? options.config.StoreDir : path.join(dir, 'store');
  const logFile = typeof options.config?.LogFile === 'string' && options.config.LogFile !== '' ? path.resolve(dir, options.config.LogFile) : undefined;
  const port = await freePort();
  const secret = `child-secret-${port}`;
  const configFile = path.join(dir, 'config.toml');
  await writeFile(configFile, toml({ Secret: secret, ListenIP: '127.0.0.1', ListenPort: port, StoreDir: storeDir, LogLevel: 'info', ...options.config }));

  const node = [process.execPath, '--import', 'tsx', path.join(REPO, 'server', 'main.ts'), '--config', configFile];
  const [command, ...args] = options.nofileAtSpawn === undefined ? node : ['prlimit', `--nofile=${options.nofileAtSpawn}:${options.nofileAtSpawn}`, ...node];
  // prlimit sets the limit on itself and then execs node, so the pid is the server's.
  const child: ChildProcess = spawn(command!, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid !== undefined) options.onSpawn?.(child.pid);
  const stdout: string[] = [];
  const stderr: string[] = [];
  collectLines(child.stdout!, stdout);
  collectLines(child.stderr!, stderr);
  let exit: Exit | undefined;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      resolve();
    }),
  );
  let stopped = false;

  const server: ChildServer = {
    pid: child.pid!,
    url: `http://127.0.0.1:${port}`,
    dir,
    configFile,
    storeDir,
    logFile,
    secret,
    stdout,
    stderr,
    get exit() {
      return exit;
    },
    async waitForExit(timeoutMs = 20_000) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`the server did not exit within ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        await Promise.race([exited, timeout]);
      } finally {
        clearTimeout(timer);
      }
      return exit!;
    },
    async logLines() {
      if (logFile === undefined) return [...stdout];
      const text = await readFile(logFile, 'utf8').catch(() => '');
      return text.split('\n').filter(Boolean);
    },
    alive() {
      if (exit !== undefined) return false;
      try {
        process.kill(child.pid!, 0);
        return true;
      } catch {
        return false;
      }
    },
    async descriptors() {
      const names = await readdir(`/proc/${child.pid}/fd`);
      return names.map(Number).sort((a, b) => a - b);
    },
    async limitDescriptors(n) {
      await run('prlimit', ['--pid', String(child.pid), `--nofile=${n}:${n}`]);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (exit === undefined) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };

  const deadline = Date.now() + (options.startTimeoutMs ?? 20_000);
  // The text line (` info server.listening `) or the JSON one (LogFormat = "json").
  const listening = (line: string) => / info server\.listening /.test(line) || line.includes('"event":"server.listening"');
  while (!(await server.logLines()).some(listening)) {
    if (exit !== undefined || Date.now() > deadline) {
      await server.stop();
      throw new Error(`the server did not start (${exit ? `exit ${exit.code ?? exit.signal}` : 'timeout'}):\n${[...stdout, ...stderr].slice(-20).join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return server;
}
