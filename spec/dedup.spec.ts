// Deduplication: identical content is stored once, as hard links to one blob, and lives as long as one path
// still holds it; a Redis outage costs no upload.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { ConfigInput } from '../server/config-schema.js';
import { hmacHex } from '../middleware/slot-verifier-hmac.js';
import { rawRequest, signedPut } from './helpers/http.js';
import { startRedis, type RunningRedis } from './helpers/redis.js';
import { grantFor, tusUpload } from './helpers/tus-client.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';

async function blobNames(server: TestServer): Promise<string[]> {
  const entries = await readdir(path.join(server.storeDir, '.hmac', 'blobs'), { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile() && !e.name.endsWith('.json')).map((e) => e.name);
}

const del = (server: TestServer, slot: string) => rawRequest(server.url, 'DELETE', `/upload/${slot}?token=${hmacHex(TEST_SECRET, `${slot}\0dedup-delete`)}`);

for (const [label, extra] of [
  ['plain', {}],
  ['encrypted', { AESEnabled: true }],
] as Array<[string, Partial<ConfigInput>]>) {
  describe(`deduplication, embedded index (${label})`, function () {
    this.timeout(60_000);
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ DeduplicationEnabled: true, DeleteSecret: 'dedup-delete', ...extra });
    });
    after(() => server.close());

    it('stores ten paths of one content once, and removes it with the last path', async () => {
      const data = randomBytes(300_000);
      const slots = Array.from({ length: 10 }, (_, i) => `same/${i}/photo.jpg`);
      for (const slot of slots) assert.equal((await signedPut(server, slot, data)).status, 201);
      assert.equal((await blobNames(server)).length, 1);
      const inodes = new Set(await Promise.all(slots.map(async (slot) => (await stat(path.join(server.storeDir, 'upload', slot))).ino)));
      assert.equal(inodes.size, 1);
      const [blob] = await blobNames(server);
      const blobStat = await stat(path.join(server.storeDir, '.hmac', 'blobs', blob!.slice(0, 2), blob!));
      assert.equal(blobStat.size, data.length);
      for (const slot of slots) assert.deepEqual((await rawRequest(server.url, 'GET', `/upload/${slot}`)).body, data);
      for (const slot of slots.slice(0, 9)) assert.equal((await del(server, slot)).status, 204);
      assert.deepEqual((await rawRequest(server.url, 'GET', `/upload/${slots[9]}`)).body, data);
      assert.equal((await blobNames(server)).length, 1);
      assert.equal((await del(server, slots[9]!)).status, 204);
      assert.deepEqual(await blobNames(server), []);
    });

    it('converges twenty parallel identical uploads, through both doors, on one blob', async () => {
      const data = randomBytes(100_000);
      const legacy = Array.from({ length: 15 }, (_, i) => signedPut(server, `parallel/${i}.bin`, data));
      const grant = await grantFor(server);
      const viaTus = Array.from({ length: 5 }, () => tusUpload(server, data, grant, { chunkSize: 33_333 }));
      const answers = await Promise.all(legacy);
      assert.deepEqual(answers.map((a) => a.status), Array<number>(15).fill(201));
      for (const { downloadUrl } of await Promise.all(viaTus)) assert.deepEqual((await rawRequest(server.url, 'GET', new URL(downloadUrl).pathname)).body, data);
      assert.equal((await blobNames(server)).length, 1);
    });

    it('keeps content that a kept version still holds', async () => {
      const first = randomBytes(5000);
      const versioned = await startTestServer({ DeduplicationEnabled: true, EnableVersioning: true, MaxVersions: 1, StoreDir: server.storeDir, ...extra });
      try {
        assert.equal((await signedPut(versioned, 'kept/v.bin', first)).status, 201);
        assert.equal((await signedPut(versioned, 'kept/v.bin', randomBytes(10))).status, 201);
        assert.equal((await signedPut(versioned, 'kept/other.bin', first)).status, 201);
        // Pruning the version releases its reference; the blob stays while kept/other.bin holds it.
        assert.equal((await signedPut(versioned, 'kept/v.bin', randomBytes(11))).status, 201);
        assert.deepEqual((await rawRequest(versioned.url, 'GET', '/upload/kept/other.bin')).body, first);
      } finally {
        await versioned.close();
      }
    });
  });
}

describe('deduplication and FileTTL', () => {
  it('expires paths one by one and drops the blob with the last', async () => {
    const server = await startTestServer({ DeduplicationEnabled: true, FileTTL: '1h' });
    try {
      const data = randomBytes(20_000);
      assert.equal((await signedPut(server, 'ttl/old.bin', data)).status, 201);
      const oldBorn = Date.now();
      await new Promise((r) => setTimeout(r, 1100));
      assert.equal((await signedPut(server, 'ttl/new.bin', data)).status, 201);
      assert.equal(await server.running.expiry.sweep(oldBorn + 3_600_000 + 500), 1);
      assert.equal((await rawRequest(server.url, 'GET', '/upload/ttl/old.bin')).status, 404);
      assert.deepEqual((await rawRequest(server.url, 'GET', '/upload/ttl/new.bin')).body, data);
      assert.equal((await blobNames(server)).length, 1);
      assert.equal(await server.running.expiry.sweep(Date.now() + 2 * 3_600_000), 1);
      assert.deepEqual(await blobNames(server), []);
      assert.equal(server.running.expiry.counters.deletions, 2);
    } finally {
      await server.close();
    }
  });
});

describe('deduplication with Redis', function () {
  this.timeout(120_000);
  let redis: RunningRedis;
  before(async () => {
    redis = await startRedis();
  });
  after(() => redis.dispose());

  it('loses no upload while Redis is down and deduplicates again once it is back', async () => {
    const server = await startTestServer({ DeduplicationEnabled: true, RedisEnabled: true, RedisAddr: redis.addr, RedisHealthCheckInterval: '300ms' });
    try {
      const data = randomBytes(50_000);
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await signedPut(server, `r/before-${i}.bin`, data)).status);
      assert.equal((await blobNames(server)).length, 1);
      await redis.stop();
      for (let i = 0; i < 5; i++) statuses.push((await signedPut(server, `r/during-${i}.bin`, data)).status);
      assert.deepEqual(statuses, Array<number>(10).fill(201));
      assert.ok(server.logs.some((l) => l.includes('warn dedup.unavailable')));
      // Redis comes back empty; the next health check rebuilds the index from the metadata.
      await redis.start();
      assert.ok(await server.waitForLog(/dedup\.reconciled references=5/, 5000), server.logs.filter((l) => l.includes('dedup')).join('\n'));
      assert.equal((await signedPut(server, 'r/after.bin', data)).status, 201);
      const blob = (await blobNames(server))[0]!;
      const blobIno = (await stat(path.join(server.storeDir, '.hmac', 'blobs', blob.slice(0, 2), blob))).ino;
      assert.equal((await stat(path.join(server.storeDir, 'upload', 'r', 'after.bin'))).ino, blobIno);
      assert.equal((await stat(path.join(server.storeDir, 'upload', 'r', 'before-0.bin'))).ino, blobIno);
      for (const name of ['before-0', 'during-0', 'after']) assert.deepEqual((await rawRequest(server.url, 'GET', `/upload/r/${name}.bin`)).body, data);
    } finally {
      await server.close();
      await redis.start();
    }
  });
});
