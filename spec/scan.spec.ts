// Virus scanning with a real clamd: nothing becomes visible before it is scanned, infected uploads leave
// nothing behind, and without a verdict the default is to refuse.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { ConfigInput } from '../server/config-schema.js';
import { EICAR, scanCounter, startClamd, type RunningClamd } from './helpers/clamd.js';
import { rawRequest, signedPut } from './helpers/http.js';
import { grantFor, tusUpload } from './helpers/tus-client.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

async function filesIn(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
  } catch {
    return [];
  }
}

/** An infected upload must leave no byte anywhere: not in the tree, not in staging, not in tus. */
async function assertNothingOf(server: TestServer, before: string[]): Promise<void> {
  assert.deepEqual(await filesIn(server.storeDir), before);
}

const INFECTED_INSIDE = Buffer.concat([randomBytes(1000), EICAR, randomBytes(1000)]);

describe('virus scanning with clamd', function () {
  this.timeout(120_000);
  let clamd: RunningClamd;
  before(async function () {
    this.timeout(600_000);
    clamd = await startClamd({ streamMaxLength: '2M' });
  });
  after(() => clamd?.dispose());

  for (const [label, extra] of [
    ['plain', {}],
    ['with AES encryption', { AESEnabled: true }],
  ] as Array<[string, Partial<ConfigInput>]>) {
    describe(label, () => {
      let server: TestServer;
      before(async () => {
        server = await startTestServer({ ...extra, ClamAVEnabled: true, ClamAVSocket: clamd.socketPath, AuditLogFile: 'audit.log' });
      });
      after(() => server.close());

      it('lets clean files through both doors and serves them', async () => {
        const data = randomBytes(100_000);
        assert.equal((await signedPut(server, 'clean/a.bin', data)).status, 201);
        assert.deepEqual((await rawRequest(server.url, 'GET', '/upload/clean/a.bin')).body, data);
        const { downloadUrl } = await tusUpload(server, data, await grantFor(server), { chunkSize: 30_000 });
        assert.deepEqual((await rawRequest(server.url, 'GET', new URL(downloadUrl).pathname)).body, data);
        assert.equal(server.running.scan!.counters.scanned, 2);
      });

      it('refuses EICAR through a legacy PUT with 422, logs it for fail2ban, and keeps nothing', async () => {
        const before = await filesIn(server.storeDir);
        const res = await signedPut(server, 'bad/eicar.txt', EICAR);
        assert.equal(res.status, 422);
        assert.equal(res.body.toString(), 'File rejected: malware detected\n');
        assert.equal((await rawRequest(server.url, 'GET', '/upload/bad/eicar.txt')).status, 404);
        await assertNothingOf(server, before);
        const line = await server.waitForLog(/scan\.infected/);
        assert.match(line ?? '', /^\S+ warn scan\.infected client=127\.0\.0\.1 signature=Eicar-Test-Body\.UNOFFICIAL path=bad\/eicar\.txt$/);
        const audit = (await readFile(path.join(server.storeDir, 'audit.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
        assert.deepEqual(
          audit.filter((l) => l.action === 'infected').map((l) => [l.path, l.door, l.client, l.size]),
          [['bad/eicar.txt', 'legacy', '127.0.0.1', EICAR.length]],
        );
      });

      it('refuses a file with EICAR inside through tus and keeps nothing of it', async () => {
        const before = await filesIn(server.storeDir);
        await assert.rejects(tusUpload(server, INFECTED_INSIDE, await grantFor(server), { chunkSize: 700, metadata: { filename: 'inside.bin' } }), /response code: 422/);
        await assertNothingOf(server, before);
        assert.equal(server.running.scan!.counters.infected, 2);
      });
    });
  }

  describe('without a verdict', () => {
    it('refuses with 503 and Retry-After while clamd is down, and works again once it is back', async () => {
      const server = await startTestServer({ ClamAVEnabled: true, ClamAVSocket: clamd.socketPath, ClamAVHealthCheckInterval: '200ms' });
      try {
        await clamd.stop();
        const before = await filesIn(server.storeDir);
        const res = await signedPut(server, 'down/a.bin', randomBytes(1000));
        assert.equal(res.status, 503);
        assert.equal(res.headers['retry-after'], '30');
        await assertNothingOf(server, before);
        await new Promise((r) => setTimeout(r, 500));
        assert.equal(server.running.scan!.health().healthy, false);
        await clamd.start();
        assert.equal((await signedPut(server, 'down/a.bin', randomBytes(1000))).status, 201);
        await new Promise((r) => setTimeout(r, 500));
        assert.equal(server.running.scan!.health().healthy, true);
      } finally {
        await server.close();
        await clamd.start();
      }
    });

    it('keeps a tus upload whose commit met a 503, and commits it at the HEAD a resuming client sends', async () => {
      const server = await startTestServer({ ClamAVEnabled: true, ClamAVSocket: clamd.socketPath, ClamAVHealthCheckInterval: '200ms' });
      const tusHeaders = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${await grantFor(server)}` };
      try {
        const data = randomBytes(5000);
        const created = await rawRequest(server.url, 'POST', '/files/', { ...tusHeaders, 'Upload-Length': data.length, 'Upload-Metadata': `filename ${Buffer.from('kept.bin').toString('base64')}` });
        assert.equal(created.status, 201);
        const location = created.headers.location!;
        await clamd.stop();
        const patch = await rawRequest(server.url, 'PATCH', location, { ...tusHeaders, 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream' }, data);
        assert.equal(patch.status, 503);
        assert.equal((await rawRequest(server.url, 'GET', location, tusHeaders)).status, 404);
        // Still down: the HEAD tries the commit again and says 503 again; nothing is lost.
        assert.equal((await rawRequest(server.url, 'HEAD', location, tusHeaders)).status, 503);
        await clamd.start();
        await new Promise((r) => setTimeout(r, 500));
        const head = await rawRequest(server.url, 'HEAD', location, tusHeaders);
        assert.equal(head.status, 200);
        assert.equal(head.headers['upload-offset'], String(data.length));
        // Committed: the upload's URL serves the file to anyone, as for an upload committed at its last PATCH.
        assert.deepEqual((await rawRequest(server.url, 'GET', location)).body, data);
        assert.ok(server.logs.some((l) => /upload\.committed .*via=tus/.test(l)));
        assert.equal((await rawRequest(server.url, 'HEAD', location, tusHeaders)).status, 200);
        assert.equal(server.logs.filter((l) => /upload\.committed .*via=tus/.test(l)).length, 1);
      } finally {
        await server.close();
        await clamd.start();
      }
    });

    it('refuses with 503 when clamd is slower than ClamAVTimeout', async () => {
      const slow = await scanCounter(clamd, 2000);
      const server = await startTestServer({ ClamAVEnabled: true, ClamAVSocket: slow.url, ClamAVTimeout: '300ms' });
      try {
        const before = await filesIn(server.storeDir);
        const res = await signedPut(server, 'slow/a.bin', randomBytes(1000));
        assert.equal(res.status, 503);
        assert.equal(res.headers['retry-after'], '30');
        await assertNothingOf(server, before);
        assert.match((await server.waitForLog(/request\.failed code=E_SCANNER_DOWN/)) ?? '', /no answer within 300 ms/);
      } finally {
        await server.close();
        await slow.close();
      }
    });

    it('with ClamAVFailOpen stores the file and logs it as unscanned', async () => {
      const server = await startTestServer({ ClamAVEnabled: true, ClamAVSocket: clamd.socketPath, ClamAVFailOpen: true });
      try {
        await clamd.stop();
        assert.equal((await signedPut(server, 'open/a.bin', randomBytes(1000))).status, 201);
        const line = await server.waitForLog(/scan\.skipped/);
        assert.match(line ?? server.logs.join('\n'), /warn scan\.skipped client=127\.0\.0\.1 path=open\/a\.bin reason=.*unscanned/);
        assert.equal(server.running.scan!.counters.unscanned, 1);
      } finally {
        await clamd.start();
        await server.close();
      }
    });

    it("answers 413 for a file over clamd's StreamMaxLength, or stores it unscanned when failing open", async () => {
      const big = randomBytes(3 * 1024 * 1024);
      const closed = await startTestServer({ ClamAVEnabled: true, ClamAVSocket: clamd.socketPath });
      try {
        const before = await filesIn(closed.storeDir);
        const res = await signedPut(closed, 'big/a.bin', big);
        assert.equal(res.status, 413);
        assert.equal(res.body.toString(), 'File too large for the virus scanner\n');
        await assertNothingOf(closed, before);
      } finally {
        await closed.close();
      }
      const open = await startTestServer({ ClamAVEnabled: true, ClamAVSocket: clamd.socketPath, ClamAVFailOpen: true });
      try {
        assert.equal((await signedPut(open, 'big/a.bin', big)).status, 201);
        assert.ok(await open.waitForLog(/scan\.skipped .*StreamMaxLength/));
      } finally {
        await open.close();
      }
    });
  });

  describe('workers and queue', () => {
    it('never runs more than NumScanWorkers scans at once (over tcp://)', async () => {
      const relay = await scanCounter(clamd, 150);
      const server = await startTestServer({ ClamAVEnabled: true, ClamAVSocket: relay.url, NumScanWorkers: 2 });
      try {
        const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => signedPut(server, `many/${i}.bin`, randomBytes(50_000))));
        assert.deepEqual(answers.map((a) => a.status), Array<number>(10).fill(201));
        // Two at a time, not one: the limit is reached and not exceeded.
        assert.equal(relay.maxInFlight(), 2);
        assert.deepEqual(server.running.scan!.queue(), { active: 0, waiting: 0 });
      } finally {
        await server.close();
        await relay.close();
      }
    });

    it('turns uploads away with 503 once UploadQueueSize are waiting', async () => {
      const relay = await scanCounter(clamd, 300);
      const server = await startTestServer({ ClamAVEnabled: true, ClamAVSocket: relay.url, NumScanWorkers: 1, UploadQueueSize: 2 });
      try {
        const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => signedPut(server, `queue/${i}.bin`, randomBytes(10_000))));
        const statuses = answers.map((a) => a.status).sort();
        assert.ok(statuses.includes(201) && statuses.includes(503), statuses.join(','));
        assert.ok(statuses.filter((s) => s === 201).length <= 3, statuses.join(','));
        const refused = answers.find((a) => a.status === 503)!;
        assert.equal(refused.body.toString(), 'Too many uploads waiting for the virus scanner, try again later\n');
      } finally {
        await server.close();
        await relay.close();
      }
    });
  });
});
