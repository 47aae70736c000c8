// The Redis dedup index, for several instances sharing one StoreDir: a set per blob.
//
//   hfs:dedup:<sha>    SET of refs
//
// It is handed its ioredis client (built in server/ with short timeouts and no offline queue), so a Redis
// outage fails a call at once instead of holding an upload.
import type { Redis } from 'ioredis';
import type { DedupIndex } from './dedup-index.js';

const key = (sha: string) => `hfs:dedup:${sha}`;

export class RedisDedupIndex implements DedupIndex {
  constructor(private readonly redis: Redis) {}

  async addRef(sha: string, ref: string): Promise<boolean> {
    const result = await this.redis.multi().sadd(key(sha), ref).scard(key(sha)).exec();
    const [added, count] = (result ?? []).map(([err, value]) => {
      if (err) throw err;
      return Number(value);
    });
    return added === 1 && count === 1;
  }

  async removeRef(sha: string, ref: string): Promise<boolean> {
    const result = await this.redis.multi().srem(key(sha), ref).scard(key(sha)).exec();
    const [, count] = (result ?? []).map(([err, value]) => {
      if (err) throw err;
      return Number(value);
    });
    return count === 0;
  }

  async ping(): Promise<boolean> {
    return (await this.redis.ping()) === 'PONG';
  }

  refs(sha: string): Promise<string[]> {
    return this.redis.smembers(key(sha));
  }

  async close(): Promise<void> {
    this.redis.disconnect();
    return Promise.resolve();
  }
}
