// The Redis client, built once from config: a plain address or Sentinels. Calls fail at once while Redis is
// away (no offline queue, one short timeout) so that no upload waits on it; the client reconnects by itself.
// ioredis is imported by createRedis, not here: it weighs several MiB, and a server without RedisEnabled never
// needs it.
import type { Redis, RedisOptions } from 'ioredis';
import type { Config } from './config.js';

const COMMAND_TIMEOUT_MS = 1000;

function hostPort(address: string, defaultPort: number): { host: string; port: number } {
  const at = address.lastIndexOf(':');
  return at === -1 ? { host: address, port: defaultPort } : { host: address.slice(0, at), port: Number(address.slice(at + 1)) };
}

export async function createRedis(config: Pick<Config, 'RedisAddr' | 'RedisPassword' | 'RedisDBIndex' | 'RedisSentinels' | 'RedisSentinelName'>): Promise<Redis> {
  const { Redis } = await import('ioredis');
  const common: RedisOptions = {
    db: config.RedisDBIndex,
    ...(config.RedisPassword ? { password: config.RedisPassword } : {}),
    commandTimeout: COMMAND_TIMEOUT_MS,
    connectTimeout: COMMAND_TIMEOUT_MS,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  };
  if (config.RedisSentinels.length > 0) {
    return new Redis({ ...common, sentinels: config.RedisSentinels.map((a) => hostPort(a, 26379)), name: config.RedisSentinelName });
  }
  return new Redis({ ...common, ...hostPort(config.RedisAddr, 6379) });
}
