// What any local server a test starts needs (Prosody, ejabberd, …): a free port, a probe, a supervised process.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** Asks the kernel for a free loopback port. Another process could take it before the server binds; unlikely. */
export async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', resolve);
  });
  const { port } = probe.address() as net.AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
export async function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** A server process started for a test, its output kept for the report of a failed start. */
export interface Daemon {
  /**
   * Polls ready() every pollMs until it holds. Fails, with the process's output and the end of its log file, when
   * the process cannot be started, exits first, or is not ready within timeoutMs (the error then says notReady).
   */
  waitUntilReady(ready: () => Promise<boolean>, options: { timeoutMs: number; pollMs: number; notReady: string }): Promise<void>;
  /** Asks the process to end (ask, SIGTERM by default), gives it graceMs, then kills it; nothing once it has exited. */
  stop(options: { graceMs: number; ask?: () => Promise<unknown> }): Promise<void>;
}

/** Spawns command in the foreground (stdin closed); label names it in errors, logFile is where it logs. */
export function startDaemon(label: string, command: string, args: readonly string[], options: { logFile: string; env?: NodeJS.ProcessEnv }): Daemon {
  let output = '';
  let hasExited = false;
  const child: ChildProcess = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(options.env ? { env: options.env } : {}) });
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-8000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve())).then(() => {
    hasExited = true;
  });
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const failure = async (why: string): Promise<Error> => {
    const log = await readFile(options.logFile, 'utf8').catch(() => '');
    return new Error(`${why}\n--- ${command} output ---\n${output}\n--- ${options.logFile} ---\n${log.slice(-4000)}`);
  };

  return {
    async waitUntilReady(ready, { timeoutMs, pollMs, notReady }) {
      const deadline = Date.now() + timeoutMs;
      while (!(await ready())) {
        const err = await Promise.race([spawnError, sleep(pollMs, undefined)]);
        if (err) throw await failure(`${command} could not be started: ${err.message}`);
        if (hasExited) throw await failure(`${label} exited during startup`);
        if (Date.now() > deadline) throw await failure(notReady);
      }
    },
    async stop({ graceMs, ask }) {
      if (child.pid === undefined || hasExited) return;
      if (ask) await ask();
      else child.kill('SIGTERM');
      if (!(await Promise.race([exited.then(() => true), sleep(graceMs, false)]))) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** A service a test stops and starts again in its own folder; dispose() stops it and removes the folder. */
export interface Restartable {
  /** Starts the service (again, after stop()); nothing while it runs. */
  start(): Promise<void>;
  stop(): Promise<void>;
  dispose(): Promise<void>;
}

export function restartable(
  dir: string,
  launch: () => Daemon,
  ready: { check: () => Promise<boolean>; timeoutMs: number; notReady: string },
): Restartable {
  let daemon: Daemon | undefined;
  const service: Restartable = {
    async start() {
      if (daemon) return;
      daemon = launch();
      await daemon.waitUntilReady(ready.check, { timeoutMs: ready.timeoutMs, pollMs: 50, notReady: ready.notReady });
    },
    async stop() {
      await daemon?.stop({ graceMs: 5000 });
      daemon = undefined;
    },
    async dispose() {
      await service.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return service;
}
