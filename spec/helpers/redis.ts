// A private redis-server on a random loopback port (never the machine's shared one), that a test can stop and
// start again on the same port; it keeps nothing on disk, so a restart comes back empty.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { ensureDebianPackages } from './debian-packages.js';
import { freePort, startDaemon, type Daemon } from './local-daemon.js';

export interface RunningRedis {
  port: number;
  addr: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  dispose(): Promise<void>;
}

async function answers(port: number): Promise<boolean> {
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

export async function startRedis(): Promise<RunningRedis> {
  await ensureDebianPackages({ 'redis-server': 'redis-server' });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-redis-'));
  const port = await freePort();
  const logFile = path.join(dir, 'redis.log');
  let daemon: Daemon | undefined;
  const redis: RunningRedis = {
    port,
    addr: `127.0.0.1:${port}`,
    async start() {
      if (daemon) return;
      daemon = startDaemon('redis-server', 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', logFile], { logFile });
      await daemon.waitUntilReady(() => answers(port), { timeoutMs: 15_000, pollMs: 50, notReady: 'redis-server did not answer PING within 15 s' });
    },
    async stop() {
      await daemon?.stop({ graceMs: 5000 });
      daemon = undefined;
    },
    async dispose() {
      await redis.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  await redis.start();
  return redis;
}
