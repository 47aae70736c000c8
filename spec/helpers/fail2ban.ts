// A private fail2ban-server for a test: the shipped filter and jail (fail2ban/) copied into a config folder of
// its own, with its socket, pid file, sqlite database and log in a temp folder, the jail polling a log file the
// test writes, and a recording action instead of a firewall: a ban appends `ban <ip>` to actions.log. No
// firewall is ever touched and nothing outside the temp folder is read or written by it.
import { execFile } from 'node:child_process';
import { appendFile, chmod, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ensureDebianPackages } from './debian-packages.js';
import { startDaemon } from './local-daemon.js';

const run = promisify(execFile);
const SHIPPED = path.resolve(import.meta.dirname, '../../fail2ban');
export const JAIL = 'hmac-auth';

export interface JailStatus {
  currentlyFailed: number;
  totalFailed: number;
  banned: string[];
}

export interface RunningFail2Ban {
  dir: string;
  socket: string;
  /** The file the jail watches (created empty). */
  logFile: string;
  /** Where the recording action writes `ban <ip>` and `unban <ip>`. */
  actionsFile: string;
  /** A script that runs `fail2ban-client -s <socket> "$@"` and first appends its arguments to calls.log. */
  clientWrapper: string;
  callsFile: string;
  /** fail2ban-client against this server; rejects on a non-zero exit. */
  client(...args: string[]): Promise<string>;
  status(jail?: string): Promise<JailStatus>;
  /** The lines the recording action wrote. */
  actions(): Promise<string[]>;
  /** The argument lines the wrapper was called with. */
  calls(): Promise<string[]>;
  /** Polls check() every 100 ms until it holds; fails with the jail's status and fail2ban's log after timeoutMs. */
  waitFor(what: string, check: () => Promise<boolean>, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface Fail2BanOptions {
  /** The server's environment (TZ, to show that the log's UTC times are read as UTC). */
  env?: NodeJS.ProcessEnv;
}

const lines = async (file: string) => (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean);

export async function startFail2Ban(options: Fail2BanOptions = {}): Promise<RunningFail2Ban> {
  await ensureDebianPackages({ 'fail2ban-server': 'fail2ban', 'fail2ban-client': 'fail2ban' });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-f2b-'));
  const conf = path.join(dir, 'conf');
  for (const sub of ['filter.d', 'action.d', 'jail.d']) await mkdir(path.join(conf, sub), { recursive: true });
  const socket = path.join(dir, 'f2b.sock');
  const pidFile = path.join(dir, 'f2b.pid');
  const serverLog = path.join(dir, 'fail2ban.log');
  const logFile = path.join(dir, 'hmac.log');
  const actionsFile = path.join(dir, 'actions.log');
  const callsFile = path.join(dir, 'calls.log');
  const clientWrapper = path.join(dir, 'fail2ban-client-wrapper');

  await writeFile(
    path.join(conf, 'fail2ban.conf'),
    ['[Definition]', 'loglevel = INFO', `logtarget = ${serverLog}`, 'syslogsocket = auto', `socket = ${socket}`, `pidfile = ${pidFile}`, `dbfile = ${path.join(dir, 'f2b.sqlite3')}`, 'dbpurgeage = 1d', 'allowipv6 = auto', ''].join('\n'),
  );
  await writeFile(path.join(conf, 'jail.conf'), ['[DEFAULT]', 'backend = polling', 'usedns = no', ''].join('\n'));
  await writeFile(
    path.join(conf, 'action.d', 'record.conf'),
    ['[Definition]', 'actionstart =', 'actionstop =', 'actioncheck =', `actionban = echo "ban <ip>" >> ${actionsFile}`, `actionunban = echo "unban <ip>" >> ${actionsFile}`, ''].join('\n'),
  );
  // The shipped files as they are; the test's own settings in a jail.d file read after them.
  await copyFile(path.join(SHIPPED, 'filter.d', `${JAIL}.conf`), path.join(conf, 'filter.d', `${JAIL}.conf`));
  await copyFile(path.join(SHIPPED, 'jail.d', `${JAIL}.local`), path.join(conf, 'jail.d', `${JAIL}.local`));
  await writeFile(path.join(conf, 'jail.d', 'zz-test.local'), [`[${JAIL}]`, `logpath = ${logFile}`, 'backend = polling', 'action = record', ''].join('\n'));
  await writeFile(logFile, '');
  await writeFile(clientWrapper, `#!/bin/sh\nprintf '%s\\n' "$*" >> '${callsFile}'\nexec fail2ban-client -s '${socket}' "$@"\n`);
  await chmod(clientWrapper, 0o755);

  const client = async (...args: string[]) => (await run('fail2ban-client', ['-s', socket, ...args], { timeout: 10_000 })).stdout;
  const status = async (jail = JAIL): Promise<JailStatus> => {
    const text = await client('status', jail);
    const number = (label: string) => Number(new RegExp(`${label}:\\s*(\\d+)`).exec(text)?.[1] ?? NaN);
    const list = /Banned IP list:[ \t]*(.*)/.exec(text)?.[1]?.trim() ?? '';
    return { currentlyFailed: number('Currently failed'), totalFailed: number('Total failed'), banned: list === '' ? [] : list.split(/\s+/) };
  };

  const env = { ...process.env, ...options.env };
  const daemon = startDaemon('fail2ban-server', 'fail2ban-server', ['-f', '-x', '-c', conf, '-s', socket, '-p', pidFile], { logFile: serverLog, env });
  try {
    await daemon.waitUntilReady(
      () =>
        status()
          .then(() => true)
          .catch(() => false),
      { timeoutMs: 20_000, pollMs: 100, notReady: `fail2ban-server did not offer the ${JAIL} jail within 20 s` },
    );
  } catch (err) {
    await daemon.stop({ graceMs: 3000 });
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  return {
    dir,
    socket,
    logFile,
    actionsFile,
    clientWrapper,
    callsFile,
    client,
    status,
    actions: () => lines(actionsFile),
    calls: () => lines(callsFile),
    async waitFor(what, check, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (!(await check())) {
        if (Date.now() > deadline) {
          const state = await status().catch((e: unknown) => String(e));
          const log = (await readFile(serverLog, 'utf8').catch(() => '')).slice(-3000);
          throw new Error(`fail2ban: ${what} did not happen within ${timeoutMs} ms\n--- status ---\n${JSON.stringify(state)}\n--- fail2ban.log ---\n${log}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    stop: async () => {
      await daemon.stop({ graceMs: 5000, ask: () => client('stop').catch(() => undefined) });
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Copies a test server's captured log lines into a file as they come, as its LogFile transport would. */
export function pumpLogs(logs: readonly string[], file: string, everyMs = 50): { flush(): Promise<void>; stop(): Promise<void> } {
  let copied = logs.length;
  let chain: Promise<void> = Promise.resolve();
  const flush = () => {
    chain = chain.then(async () => {
      const fresh = logs.slice(copied);
      copied += fresh.length;
      if (fresh.length > 0) await appendFile(file, `${fresh.join('\n')}\n`);
    });
    return chain;
  };
  const timer = setInterval(() => void flush(), everyMs);
  return {
    flush,
    stop: async () => {
      clearInterval(timer);
      await flush();
    },
  };
}
