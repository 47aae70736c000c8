// Locks in memory and over Redis: one contract for both, then what only Redis locks must do across
// instances: hand a lock over when asked, take it from a holder that died, keep it while the holder works.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MemoryLocker } from '@tus/server';
import { Redis } from 'ioredis';
import { createPathLock } from '../hooks/path-lock.js';
import { toHttp } from '../server/errors.js';
import { createRedis } from '../server/redis.js';
import { RedisLeases, RedisLocker, redisPathLock, type LeaseTuning } from '../server/redis-locks.js';
import { lockerContract, pathLockContract } from './contracts/locker.contract.js';
import { memoryLogger } from './helpers/memory-logger.js';
import { startRedis, type RunningRedis } from './helpers/redis.js';
import { rawRequest, signedPut } from './helpers/http.js';
import { startTestServer } from './helpers/test-server.js';
import { grantFor, tusUpload } from './helpers/tus-client.js';

lockerContract('memory', (timeout) => Promise.resolve(new MemoryLocker({ acquireLockTimeout: timeout })));
pathLockContract('memory', () => Promise.resolve(createPathLock()));

const TUNING: LeaseTuning = { leaseMs: 600, pollMs: 50, askAgainMs: 200 };

describe('with a private Redis', function () {
  this.timeout(60_000);
  let redis: RunningRedis;
  const opened: Array<{ leases: RedisLeases; client: Redis }> = [];
  const ready = (client: Redis) => new Promise((resolve) => (client.status === 'ready' ? resolve(undefined) : client.once('ready', resolve)));
  /** One "instance": its own connection (the server's client) and its own leases, as a server process has. */
  const connect = async (logger = memoryLogger().logger) => {
    const client = await createRedis({ RedisAddr: redis.addr, RedisPassword: '', RedisDBIndex: 0, RedisSentinels: [], RedisSentinelName: '' });
    client.on('error', () => undefined);
    const leases = RedisLeases.open(client, logger, TUNING);
    opened.push({ leases, client });
    return { client, leases };
  };
  const instance = async () => {
    const { client, leases } = await connect();
    await ready(client);
    // The subscriber must be listening before a test relies on hearing "release".
    await sleep(100);
    return leases;
  };
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const { leases, client } of opened) {
      leases.close();
      client.disconnect();
    }
    await redis.dispose();
  });

  lockerContract('redis', async (timeout) => new RedisLocker(await instance(), timeout));
  pathLockContract('redis', async () => redisPathLock(await instance(), 'contract'));

  it('asks a holder on another instance to let go, and gets the lock as soon as it does', async () => {
    const [a, b] = [new RedisLocker(await instance()), new RedisLocker(await instance())];
    const upload = randomBytes(8).toString('hex');
    const held = a.newLock(upload);
    let asked = false;
    await held.lock(new AbortController().signal, () => {
      asked = true;
      void held.unlock();
    });
    const started = Date.now();
    const taken = b.newLock(upload);
    await taken.lock(new AbortController().signal, () => undefined);
    assert.equal(asked, true);
    // Well inside the lease: it was handed over, not taken after expiry.
    assert.ok(Date.now() - started < TUNING.leaseMs, `took ${Date.now() - started} ms`);
    await taken.unlock();
  });

  it('hears release requests on an instance that started while Redis was down', async () => {
    await redis.stop();
    const { client, leases: late } = await connect();
    await sleep(300);
    await redis.start();
    await ready(client);
    await sleep(300);
    const upload = randomBytes(8).toString('hex');
    const held = new RedisLocker(late).newLock(upload);
    await held.lock(new AbortController().signal, () => void held.unlock());
    // The holder renews its lease: only hearing the request lets the other instance in.
    const taken = new RedisLocker(await instance(), 3000).newLock(upload);
    await taken.lock(new AbortController().signal, () => undefined);
    await taken.unlock();
  });

  it('takes the lock from a holder whose instance vanished once its lease runs out, not before', async () => {
    const dead = await instance();
    const upload = randomBytes(8).toString('hex');
    const held = new RedisLocker(dead).newLock(upload);
    await held.lock(new AbortController().signal, () => undefined);
    // The holder's process dies: no unlock, no renewal, no answer to the release request.
    const entry = opened.find((o) => o.leases === dead)!;
    entry.leases.close();
    entry.client.disconnect();
    const started = Date.now();
    const taken = new RedisLocker(await instance()).newLock(upload);
    await taken.lock(new AbortController().signal, () => undefined);
    const waited = Date.now() - started;
    assert.ok(waited >= TUNING.leaseMs - 300, `took the lock after ${waited} ms, inside the dead holder's lease`);
    assert.ok(waited < TUNING.leaseMs * 4, `waited ${waited} ms`);
    await taken.unlock();
  });

  it('keeps a lock while its holder works longer than one lease', async () => {
    const [a, b] = [await instance(), await instance()];
    const lease = (await a.tryAcquire('long-work'))!;
    assert.ok(lease);
    for (let i = 0; i < 4; i++) {
      await sleep(TUNING.leaseMs / 2);
      assert.equal(await b.tryAcquire('long-work'), undefined, 'another instance took a lock that was being renewed');
    }
    assert.equal(lease.lost.aborted, false);
    await lease.release();
    const next = await b.tryAcquire('long-work');
    assert.ok(next, 'free after release');
    await next.release();
  });

  it('tells a holder whose lease was taken from it, so it stops', async () => {
    const a = await instance();
    let told = false;
    const lease = (await a.tryAcquire('stolen', () => {
      told = true;
    }))!;
    // What a long Redis outage does: the lease ran out and someone else has the key now.
    const other = new Redis({ port: redis.port, host: '127.0.0.1' });
    await other.set('hfs:lock:stolen', 'someone-else', 'PX', 5000);
    await sleep(TUNING.leaseMs);
    other.disconnect();
    assert.equal(lease.lost.aborted, true);
    assert.equal(told, true);
    await lease.release();
  });

  it('tells a holder that Redis left for longer than its lease, and releases without throwing', async () => {
    const log = memoryLogger();
    const { client, leases } = await connect(log.logger);
    await ready(client);
    let told = false;
    const lease = (await leases.tryAcquire('outlived', () => {
      told = true;
    }))!;
    await redis.stop();
    try {
      await sleep(TUNING.leaseMs * 2);
      assert.equal(lease.lost.aborted, true);
      assert.equal(told, true);
      await lease.release();
      assert.ok(await log.waitFor(/warn lock\.release_failed lock=outlived/));
    } finally {
      await redis.start();
    }
  });

  it('answers 503 E_BUSY when a commit lock is not had in time', async () => {
    const [a, b] = [await instance(), await instance()];
    const held = (await a.tryAcquire('busy:upload/x'))!;
    try {
      const err = await redisPathLock(b, 'busy', 300)('upload/x', () => Promise.resolve()).then(
        () => undefined,
        (e: unknown) => e,
      );
      const answer = toHttp(err);
      assert.equal(answer.status, 503);
      assert.equal(answer.code, 'E_BUSY');
      assert.equal(answer.headers['Retry-After'], '10');
    } finally {
      await held.release();
    }
  });

  it('runs a sweep on one instance at a time', async () => {
    const instances = [await instance(), await instance(), await instance()];
    let inside = 0;
    let runs = 0;
    const results = await Promise.all(
      instances.map((leases) =>
        leases.once('sweep', async () => {
          inside += 1;
          runs += 1;
          assert.equal(inside, 1);
          await sleep(100);
          inside -= 1;
        }),
      ),
    );
    assert.equal(runs, 1);
    assert.deepEqual(results.sort(), [false, false, true]);
  });

  it('answers 503 while Redis is down, and locks again once it is back', async () => {
    const leases = await instance();
    const lock = redisPathLock(leases, 'outage');
    await redis.stop();
    try {
      const err = await lock('a', () => Promise.resolve()).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err, 'locked without Redis');
      const answer = toHttp(err);
      assert.equal(answer.status, 503);
      assert.equal(answer.code, 'E_COORDINATION_DOWN');
      assert.equal(answer.headers['Retry-After'], '10');
      assert.equal(await leases.once('sweep-outage', () => Promise.resolve()), false);
    } finally {
      await redis.start();
    }
    for (let i = 0; ; i++) {
      try {
        assert.equal(await lock('a', () => Promise.resolve('ok')), 'ok');
        break;
      } catch (err) {
        if (i > 50) throw err;
        await sleep(100);
      }
    }
  });

  it('a server with RedisEnabled: tus requests and versioned commits answer 503 while Redis is down, and resume after', async () => {
    const server = await startTestServer({ RedisEnabled: true, RedisAddr: redis.addr, EnableVersioning: true });
    try {
      const auth = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${await grantFor(server)}` };
      const data = randomBytes(10_000);
      const created = await rawRequest(server.url, 'POST', '/files/', { ...auth, 'Upload-Length': data.length, 'Upload-Metadata': `filename ${Buffer.from('outage.bin').toString('base64')}` });
      assert.equal(created.status, 201);
      const location = created.headers.location!;
      const half = data.subarray(0, 5000);
      assert.equal((await rawRequest(server.url, 'PATCH', location, { ...auth, 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream' }, half)).status, 204);
      await redis.stop();
      try {
        const refused = await rawRequest(server.url, 'PATCH', location, { ...auth, 'Upload-Offset': 5000, 'Content-Type': 'application/offset+octet-stream' }, data.subarray(5000));
        assert.equal(refused.status, 503);
        assert.equal(refused.headers['retry-after'], '10');
        assert.match(refused.body.toString(), /Shared state unavailable/);
        // A versioned commit needs its path's lock: refused, and the file that was there stays.
        assert.equal((await signedPut(server, 'v/doc.txt', Buffer.from('one'))).status, 503);
      } finally {
        await redis.start();
      }
      // Back: the upload resumes where it was, and versioned commits work again.
      const deadline = Date.now() + 10_000;
      let head;
      do {
        head = await rawRequest(server.url, 'HEAD', location, auth);
        if (head.status !== 200) await sleep(200);
      } while (head.status !== 200 && Date.now() < deadline);
      assert.equal(head.headers['upload-offset'], '5000');
      const done = await rawRequest(server.url, 'PATCH', location, { ...auth, 'Upload-Offset': 5000, 'Content-Type': 'application/offset+octet-stream' }, data.subarray(5000));
      assert.equal(done.status, 204);
      assert.deepEqual((await rawRequest(server.url, 'GET', location)).body, data);
      assert.equal((await signedPut(server, 'v/doc.txt', Buffer.from('one'))).status, 201);
      assert.equal((await signedPut(server, 'v/doc.txt', Buffer.from('two'))).status, 201);
      assert.equal((await rawRequest(server.url, 'GET', '/upload/v/doc.txt')).body.toString(), 'two');
      // And a full round with tus-js-client through the Redis locks.
      const again = await tusUpload(server, data, await grantFor(server), { chunkSize: 4096 });
      assert.deepEqual((await rawRequest(again.downloadUrl, 'GET', new URL(again.downloadUrl).pathname)).body, data);
    } finally {
      await server.close();
    }
  });
});
