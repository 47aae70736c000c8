// A private redis-server on a random loopback port (never the machine's shared one), that a test can stop and
// start again on the same port; it keeps nothing on disk, so a restart comes back empty.
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { ensureDebianPackages } from './debian-packages.js';
import { freePort, restartable, startDaemon, type Restartable } from './local-daemon.js';

export interface RunningRedis extends Restartable {
  port: number;
  addr: string;
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
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', logFile];
  const redis: RunningRedis = {
    port,
    addr: `127.0.0.1:${port}`,
    ...restartable(dir, () => startDaemon('redis-server', 'redis-server', args, { logFile }), {
      check: () => answers(port),
      timeoutMs: 15_000,
      notReady: 'redis-server did not answer PING within 15 s',
    }),
  };
  await redis.start();
  return redis;
}
