import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { EmbeddedDedupIndex } from '../stores/dedup-index-embedded.js';
import { RedisDedupIndex } from '../stores/dedup-index-redis.js';
import { dedupIndexContract } from './contracts/dedup-index.contract.js';
import { startRedis, type RunningRedis } from './helpers/redis.js';

const embeddedDirs: string[] = [];
dedupIndexContract('embedded', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-refs-'));
  embeddedDirs.push(dir);
  return new EmbeddedDedupIndex(dir);
});
after(() => Promise.all(embeddedDirs.map((dir) => rm(dir, { recursive: true, force: true }))));

describe('with a private Redis', function () {
  this.timeout(60_000);
  let redis: RunningRedis;
  before(async () => {
    redis = await startRedis();
  });
  after(() => redis.dispose());
  dedupIndexContract('redis', () => Promise.resolve(new RedisDedupIndex(new Redis({ port: redis.port, host: '127.0.0.1' }))));
});
