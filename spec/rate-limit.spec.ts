// Rate limiting (EnableRateLimiting) on real servers: exact counts per window with the RateLimit-* headers, the
// subject of a request (exempt loopback peer, trusted proxy's forwarded clients, a spoofed X-Forwarded-For not
// believed), what counts (everything but the PATCH and HEAD chunks of a tus upload, which count only when
// refused), the stricter authentication-failure limit, refusals reported from outside, two instances sharing
// the limit through Redis, and Redis going away mid-run with the memory insurance taking over.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { createRateLimit, AUTH_FAILURE_PREFIX, GENERAL_PREFIX } from '../server/rate-limit.js';
import { subjects } from '../server/abuse.js';
import { addressMatcher } from '../server/address-list.js';
import { rawRequest, signedPath, signedPut, type RawResponse } from './helpers/http.js';
import { startRedis, type RunningRedis } from './helpers/redis.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';
import { grantFor, tusUpload } from './helpers/tus-client.js';

const FILE = '/upload/rl/file.txt';
const LIMITED_BODY = 'Too many requests, slow down\n';

const LIMITS = {
  EnableRateLimiting: true,
  // 127.0.0.1 is the trusted proxy; the other loopback addresses are clients of their own.
  TrustedProxies: ['127.0.0.1/32'],
  RequestsPerMinute: 5,
  RateLimitInterval: '2s',
};

const from = (server: TestServer, localAddress: string, headers: Record<string, string> = {}, method = 'GET', path = FILE) =>
  rawRequest(server.url, method, path, headers, undefined, { localAddress });
const via = (server: TestServer, forwarded: string, method = 'GET', path = FILE) => from(server, '127.0.0.1', { 'X-Forwarded-For': forwarded }, method, path);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

function assertLimited(res: RawResponse, limit: number): number {
  assert.equal(res.status, 429);
  assert.equal(res.body.toString(), LIMITED_BODY);
  const retryAfter = Number(res.headers['retry-after']);
  assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After ${String(res.headers['retry-after'])}`);
  assert.equal(res.headers['ratelimit-limit'], String(limit));
  assert.equal(res.headers['ratelimit-remaining'], '0');
  assert.equal(res.headers['ratelimit-reset'], String(retryAfter));
  return retryAfter;
}

function assertServed(res: RawResponse, remaining: number, limit = 5): void {
  assert.equal(res.status, 200, res.body.toString());
  assert.equal(res.headers['ratelimit-limit'], String(limit));
  assert.equal(res.headers['ratelimit-remaining'], String(remaining));
  const reset = Number(res.headers['ratelimit-reset']);
  assert.ok(Number.isInteger(reset) && reset >= 1, `RateLimit-Reset ${String(res.headers['ratelimit-reset'])}`);
}

/** Uses up a subject's window (5 requests, each served) and checks that the next one is refused. */
async function exhaust(send: () => Promise<RawResponse>): Promise<number> {
  for (let remaining = 4; remaining >= 0; remaining--) assertServed(await send(), remaining);
  return assertLimited(await send(), 5);
}

describe('rate limiting', () => {
  describe('the general limit', () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer(LIMITS);
      // From 127.0.0.1 itself: exempt, so it costs nobody anything.
      assert.equal((await signedPut(server, 'rl/file.txt', Buffer.from('limited'))).status, 201);
    });
    after(() => server.close());

    it('serves exactly RequestsPerMinute requests per window, then 429 with Retry-After and RateLimit-*, and again after the window', async () => {
      const retryAfter = await exhaust(() => from(server, '127.0.0.2'));
      assert.ok(retryAfter <= 2, `Retry-After ${retryAfter} within a 2 s window`);
      assert.equal(server.running.guards.counters.rateLimit?.limited, 1);
      assert.ok(await server.waitForLog(new RegExp(`warn rate\\.limited client=127\\.0\\.0\\.2 method=GET path=${escape(FILE)}$`)));
      // Still refused while the window lasts, and each refusal is counted and logged.
      assertLimited(await from(server, '127.0.0.2'), 5);
      assert.equal(server.running.guards.counters.rateLimit?.limited, 2);
      // Another address is unaffected.
      assertServed(await from(server, '127.0.0.3'), 4);
      await sleep(retryAfter * 1000 + 100);
      assertServed(await from(server, '127.0.0.2'), 4);
    });

    it('never limits 127.0.0.1 speaking for itself (nor tells it about limits)', async () => {
      for (let i = 0; i < 12; i++) {
        const res = await from(server, '127.0.0.1');
        assert.equal(res.status, 200);
        assert.equal(res.headers['ratelimit-limit'], undefined);
      }
      assert.ok(!server.logs.some((l) => l.includes('rate.limited client=127.0.0.1 ')));
    });

    it('does not believe X-Forwarded-For from an untrusted peer: the peer is charged', async () => {
      await exhaust(() => from(server, '127.0.0.9', { 'X-Forwarded-For': '198.51.100.1' }));
      assert.ok(await server.waitForLog(/warn rate\.limited client=127\.0\.0\.9 method=GET /));
      assert.ok(!server.logs.some((l) => l.includes('client=198.51.100.1')));
      // The claimed address, arriving through the trusted proxy, has a fresh window.
      assertServed(await via(server, '198.51.100.1'), 4);
    });

    it('limits the clients forwarded by the trusted proxy one by one, never the proxy', async () => {
      await exhaust(() => via(server, '198.51.100.2'));
      assert.ok(await server.waitForLog(/warn rate\.limited client=198\.51\.100\.2 method=GET /));
      assertServed(await via(server, '198.51.100.3'), 4);
      assertServed(await via(server, '198.51.100.3'), 3);
      assert.equal((await from(server, '127.0.0.1')).status, 200);
    });

    it('counts every kind of request, refused ones included: OPTIONS, HEAD, DELETE, tus POST, PUT, a tus HEAD that fails', async () => {
      const client = '127.0.0.5';
      const send = (method: string, path: string, headers: Record<string, string | number> = {}, body?: Buffer) =>
        rawRequest(server.url, method, path, headers, body, { localAddress: client });
      const answers = [
        await send('OPTIONS', server.config.TusPath),
        await send('HEAD', FILE),
        await send('DELETE', FILE),
        // Without a grant: 401, and an authentication failure (one of the ten allowed by default).
        await send('POST', server.config.TusPath, { 'Tus-Resumable': '1.0.0', 'Upload-Length': 3 }),
      ];
      assert.deepEqual(
        answers.map((r) => r.headers['ratelimit-remaining']),
        ['4', '3', '2', '1'],
      );
      // A HEAD to a tus upload is not counted when it arrives, but its 404 is.
      const head = await send('HEAD', `${server.config.TusPath}${'0'.repeat(32)}`, { 'Tus-Resumable': '1.0.0' });
      assert.equal(head.status, 404);
      assert.equal(head.headers['ratelimit-remaining'], undefined);
      const put = await send('PUT', signedPath(server, 'rl/late.txt', 1), { 'Content-Length': 1 }, Buffer.from('x'));
      assertLimited(put, 5);
      assert.ok(await server.waitForLog(/warn rate\.limited client=127\.0\.0\.5 method=PUT path=\/upload\/rl\/late\.txt$/));
    });

    it('charges a general point for each refusal reported from outside (listener.refused)', async () => {
      for (let i = 0; i < 5; i++) server.running.guards.events.refusedOf('127.0.0.6', 404);
      assertLimited(await from(server, '127.0.0.6'), 5);
      // The exempt peer is never charged.
      for (let i = 0; i < 10; i++) server.running.guards.events.refusedOf('127.0.0.1', 404);
      assert.equal((await from(server, '127.0.0.1')).status, 200);
    });
  });

  describe('tus uploads in many chunks', function () {
    this.timeout(60_000);
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ ...LIMITS, RateLimitInterval: '60s' });
      assert.equal((await signedPut(server, 'rl/file.txt', Buffer.from('limited'))).status, 201);
    });
    after(() => server.close());

    it('finishes a 2 MiB upload in 64 KiB chunks (32 PATCHes) under RequestsPerMinute = 5: only the POST counts', async () => {
      const grant = await grantFor(server);
      const headers = { Authorization: `Bearer ${grant}`, 'X-Forwarded-For': '198.51.100.20' };
      const data = randomBytes(2 * 1024 * 1024);
      const { downloadUrl } = await tusUpload(server, data, grant, { chunkSize: 64 * 1024, headers, metadata: { filename: 'chunked.bin' } });
      // The same again with every PATCH sent as a POST with X-HTTP-Method-Override: PATCH.
      await tusUpload(server, data, grant, { chunkSize: 64 * 1024, headers, overridePatchMethod: true, metadata: { filename: 'override.bin' } });
      assert.equal(server.running.guards.counters.rateLimit?.limited, 0);
      // 2 MiB in 64 KiB chunks: 32 PATCHes each (the overridden ones are logged as the PATCHes they became).
      assert.ok(server.logs.filter((l) => / http\.request method=PATCH .* status=204 .*client=198\.51\.100\.20$/.test(l)).length >= 64);
      // Two POSTs so far, this GET the third.
      const get = await via(server, '198.51.100.20', 'GET', new URL(downloadUrl).pathname);
      assert.equal(get.status, 200);
      assert.ok(get.body.equals(data));
      assert.equal(get.headers['ratelimit-remaining'], '2');
    });

    it('counts a refused chunk: a PATCH to an unknown upload costs a point once answered', async () => {
      const grant = await grantFor(server);
      const patch = await rawRequest(
        server.url,
        'PATCH',
        `${server.config.TusPath}${'f'.repeat(32)}`,
        { Authorization: `Bearer ${grant}`, 'Tus-Resumable': '1.0.0', 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': 1, 'X-Forwarded-For': '198.51.100.21' },
        Buffer.from('x'),
      );
      assert.equal(patch.status, 404);
      assert.equal(patch.headers['ratelimit-remaining'], undefined);
      assertServed(await via(server, '198.51.100.21'), 3);
    });
  });

  describe('the authentication-failure limit', () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ ...LIMITS, RequestsPerMinute: 100, AuthFailuresPerMinute: 3 });
    });
    after(() => server.close());

    const badPut = (localAddress: string) =>
      rawRequest(server.url, 'PUT', `/upload/rl/guess.txt?v2=${'0'.repeat(64)}`, { 'Content-Length': 5 }, Buffer.from('guess'), { localAddress });
    const goodPut = (localAddress: string, slot: string) => {
      const body = Buffer.from('right');
      return rawRequest(server.url, 'PUT', signedPath(server, slot, body.length), { 'Content-Length': body.length }, body, { localAddress });
    };

    it('answers 429 to any request from an address after AuthFailuresPerMinute bad signatures, long before the general limit', async () => {
      for (let i = 0; i < 3; i++) assert.equal((await badPut('127.0.0.20')).status, 403);
      const next = await from(server, '127.0.0.20');
      assert.equal(next.status, 429);
      assert.equal(next.body.toString(), LIMITED_BODY);
      const retryAfter = Number(next.headers['retry-after']);
      assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 2, `Retry-After ${String(next.headers['retry-after'])}`);
      // Even with a right signature, while the window lasts.
      assert.equal((await goodPut('127.0.0.20', 'rl/brute.txt')).status, 429);
      assert.equal(server.running.guards.counters.rateLimit?.authLimited, 2);
      assert.equal(server.running.guards.counters.rateLimit?.limited, 0);
      assert.ok(await server.waitForLog(new RegExp(`warn rate\\.limited client=127\\.0\\.0\\.20 method=GET path=${escape(FILE)} limit=auth_failures$`)));
      // Another address is unaffected.
      const other = await goodPut('127.0.0.21', 'rl/honest.txt');
      assert.equal(other.status, 201);
      assert.equal(other.headers['ratelimit-remaining'], '99');
      // After the window the address is served again.
      await sleep(retryAfter * 1000 + 100);
      assert.equal((await goodPut('127.0.0.20', 'rl/later.txt')).status, 201);
    });

    it('counts refused grants too, and never the exempt peer', async () => {
      const post = (headers: Record<string, string>) => rawRequest(server.url, 'POST', server.config.TusPath, { 'Tus-Resumable': '1.0.0', 'Upload-Length': 3, Authorization: 'Bearer nonsense', ...headers });
      for (let i = 0; i < 3; i++) assert.equal((await post({ 'X-Forwarded-For': '198.51.100.30' })).status, 401);
      assert.equal((await via(server, '198.51.100.30')).status, 429);
      for (let i = 0; i < 5; i++) assert.equal((await post({})).status, 401);
      assert.equal((await from(server, '127.0.0.1')).status, 404);
    });
  });

  describe('close()', () => {
    it('clears the timers of its memory store', async () => {
      // The memory store keeps one timer per address and window; count the ones it starts and clears.
      const live = new Set<unknown>();
      const { setTimeout: realSet, clearTimeout: realClear } = globalThis;
      const patched = globalThis as unknown as { setTimeout: (...args: unknown[]) => unknown; clearTimeout: (t: unknown) => void };
      patched.setTimeout = (...args: unknown[]) => {
        const timer = (realSet as (...a: unknown[]) => unknown)(...args);
        live.add(timer);
        return timer;
      };
      patched.clearTimeout = (timer: unknown) => {
        live.delete(timer);
        realClear(timer as NodeJS.Timeout);
      };
      try {
        const silent = { debug: () => undefined, warn: () => undefined } as unknown as Parameters<typeof createRateLimit>[0]['logger'];
        const limit = createRateLimit({
          config: { RequestsPerMinute: 5, RateLimitInterval: 60_000, AuthFailuresPerMinute: 3, TusPath: '/files/' },
          subjects: subjects(addressMatcher([])),
          logger: silent,
        });
        for (let i = 2; i < 12; i++) {
          limit.listener.refused?.(`127.0.1.${i}`, 404);
          limit.listener.authFailure?.(`127.0.1.${i}`, 'mac_invalid');
        }
        assert.equal(live.size, 20);
        await limit.close();
        assert.equal(live.size, 0);
        // Nothing reported after close starts a timer again.
        limit.listener.refused?.('127.0.1.2', 404);
        assert.equal(live.size, 0);
      } finally {
        globalThis.setTimeout = realSet;
        globalThis.clearTimeout = realClear;
      }
    });
  });

  describe('with Redis', function () {
    this.timeout(60_000);
    let redis: RunningRedis;
    let a: TestServer;
    let b: TestServer;
    /** What Redis holds at key, from a connection of its own (undefined if Redis does not answer). */
    const stored = async (key: string): Promise<string | null | undefined> => {
      const probe = new Redis({ port: redis.port, host: '127.0.0.1', lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
      probe.on('error', () => undefined);
      try {
        await probe.connect();
        return await probe.get(key);
      } catch {
        return undefined;
      } finally {
        probe.disconnect();
      }
    };
    before(async () => {
      redis = await startRedis();
      const shared = { ...LIMITS, RateLimitInterval: '10s', AuthFailuresPerMinute: 3, RedisEnabled: true, RedisAddr: redis.addr };
      a = await startTestServer(shared);
      b = await startTestServer(shared);
      for (const server of [a, b]) assert.equal((await signedPut(server, 'rl/file.txt', Buffer.from('limited'))).status, 201);
    });
    after(async () => {
      await a?.close();
      await b?.close();
      await redis?.dispose();
    });

    it('shares one limit between two instances: 3 requests to A and 3 to B, the 6th refused', async () => {
      assertServed(await from(a, '127.0.0.30'), 4);
      assertServed(await from(a, '127.0.0.30'), 3);
      assertServed(await from(a, '127.0.0.30'), 2);
      assertServed(await from(b, '127.0.0.30'), 1);
      assertServed(await from(b, '127.0.0.30'), 0);
      const retryAfter = assertLimited(await from(b, '127.0.0.30'), 5);
      assert.ok(retryAfter <= 10);
      assert.equal(b.running.guards.counters.rateLimit?.limited, 1);
      // A refuses it as well now.
      assertLimited(await from(a, '127.0.0.30'), 5);
      assert.equal(await stored(`${GENERAL_PREFIX}:127.0.0.30`), '7');
    });

    it('shares the authentication-failure limit too', async () => {
      for (const server of [a, b, a]) {
        const res = await rawRequest(server.url, 'PUT', `/upload/rl/guess.txt?v2=${'0'.repeat(64)}`, { 'Content-Length': 1 }, Buffer.from('x'), { localAddress: '127.0.0.31' });
        assert.equal(res.status, 403);
      }
      assert.equal((await from(b, '127.0.0.31')).status, 429);
      assert.equal(await stored(`${AUTH_FAILURE_PREFIX}:127.0.0.31`), '3');
    });

    it('keeps serving and limiting from memory while Redis is down, and counts in Redis again once it is back', async () => {
      await redis.stop();
      try {
        const statuses: number[] = [];
        for (let i = 0; i < 8; i++) statuses.push((await from(a, '127.0.0.32')).status);
        assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
        // Uploads carry on: the exempt peer's, and a counted client's.
        assert.equal((await signedPut(a, 'rl/while-down.txt', Buffer.from('down'))).status, 201);
        const put = await rawRequest(a.url, 'PUT', signedPath(a, 'rl/counted-down.txt', 4), { 'Content-Length': 4 }, Buffer.from('down'), { localAddress: '127.0.0.33' });
        assert.equal(put.status, 201);
        assert.equal(put.headers['ratelimit-remaining'], '4');
        assert.ok(!a.logs.some((l) => / error /.test(l) && !l.includes('redis.error')), 'no error logged but the client\'s own');
      } finally {
        await redis.start();
      }
      // Redis comes back empty; the client reconnects by itself (every 2 s at most), then counts land there again.
      const deadline = Date.now() + 15_000;
      for (let n = 1; ; n++) {
        const client = `198.51.100.${100 + n}`;
        const res = await via(a, client);
        assert.equal(res.status, 200);
        if ((await stored(`${GENERAL_PREFIX}:${client}`)) === '1') break;
        assert.ok(Date.now() < deadline, 'no count reached Redis after its restart');
        await sleep(200);
      }
    });
  });
});
