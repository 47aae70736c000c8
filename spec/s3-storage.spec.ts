// StorageBackend = "s3" against a real radosgw (spec/helpers/ceph.ts): committed files, versions and dedup
// blobs as objects, Range reads decrypted from any offset, expiry deleting objects, and S3 going away (503,
// nothing visible, a tus upload resumable once it is back). Each test gets its own bucket.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { hmacHex, versionsMessage } from '../middleware/slot-verifier-hmac.js';
import { createBucket, startS3, type RunningS3, type TestBucket } from './helpers/ceph.js';
import { rawRequest, signedPut } from './helpers/http.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';
import { grantFor, tusUpload } from './helpers/tus-client.js';
import type { ConfigInput } from '../server/config-schema.js';

const AES_KEY = 'a'.repeat(64);
const MiB = 1024 * 1024;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** Files (not folders) anywhere below dir. */
async function filesBelow(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

describe('object storage (StorageBackend = "s3", Ceph radosgw)', function () {
  this.timeout(120_000);
  let s3: RunningS3;
  before(async function () {
    this.timeout(600_000);
    s3 = await startS3();
  });
  after(() => s3?.dispose());

  /** A server on a new bucket; parts of 5 MiB (S3's least) so that multipart uploads stay small. */
  async function withServer(overrides: Partial<ConfigInput>, test: (server: TestServer, bucket: TestBucket) => Promise<void>): Promise<void> {
    const bucket = await createBucket(s3);
    const server = await startTestServer({ ...bucket.config, ...overrides }, { s3: { partBytes: 5 * MiB } });
    try {
      await test(server, bucket);
    } finally {
      await server.close();
      bucket.dispose();
    }
  }

  it('commits a PUT as objects, serves it whole and in ranges, and keeps nothing of it under StoreDir', () =>
    withServer({}, async (server, bucket) => {
      const data = randomBytes(300_000);
      assert.equal((await signedPut(server, 'a/b.bin', data)).status, 201);
      const [meta] = await bucket.keys('meta/');
      const [object] = await bucket.keys('data/');
      assert.ok(meta && object, 'one metadata object and one data object');
      assert.deepEqual(await bucket.object(object), data);
      const whole = await rawRequest(server.url, 'GET', '/upload/a/b.bin');
      assert.equal(whole.status, 200);
      assert.deepEqual(whole.body, data);
      const part = await rawRequest(server.url, 'GET', '/upload/a/b.bin', { Range: 'bytes=1000-1999' });
      assert.equal(part.status, 206);
      assert.equal(part.headers['content-range'], `bytes 1000-1999/${data.length}`);
      assert.deepEqual(part.body, data.subarray(1000, 2000));
      const tail = await rawRequest(server.url, 'GET', '/upload/a/b.bin', { Range: 'bytes=-10' });
      assert.deepEqual(tail.body, data.subarray(-10));
      const head = await rawRequest(server.url, 'HEAD', '/upload/a/b.bin');
      assert.equal(head.headers['content-length'], String(data.length));
      assert.equal((await rawRequest(server.url, 'GET', '/upload/a/none.bin')).status, 404);
      assert.equal((await signedPut(server, 'a/b.bin', randomBytes(10))).status, 409);
      assert.deepEqual(await bucket.keys('data/'), [object], 'the refused upload left no object');
      assert.deepEqual(await filesBelow(path.join(server.storeDir, 'upload')), []);
      assert.deepEqual(await filesBelow(path.join(server.storeDir, '.hmac', 'staging')), []);
      assert.deepEqual(await filesBelow(path.join(server.storeDir, '.hmac', 'meta')), []);
      assert.ok(server.logs.some((l) => /server\.listening .*storage=s3:hfs-test-/.test(l)));
    }));

  it('streams a large PUT up in parts and reads any range of it back, across part boundaries', () =>
    withServer({ MaxUploadSize: '64MiB' }, async (server, bucket) => {
      const data = randomBytes(12 * MiB + 17);
      assert.equal((await signedPut(server, 'big.bin', data)).status, 201);
      const [object] = await bucket.keys('data/');
      assert.match(await bucket.etag(object!), /-3"$/, 'a multipart object of three parts');
      const whole = await rawRequest(server.url, 'GET', '/upload/big.bin');
      assert.equal(sha256(whole.body), sha256(data));
      const across = await rawRequest(server.url, 'GET', '/upload/big.bin', { Range: `bytes=${5 * MiB - 10}-${5 * MiB + 9}` });
      assert.deepEqual(across.body, data.subarray(5 * MiB - 10, 5 * MiB + 10));
    }));

  it('stores encrypted bytes and decrypts a Range from any offset', () =>
    withServer({ AESEnabled: true, AESKey: AES_KEY }, async (server, bucket) => {
      const data = Buffer.from('plain text that must not reach the bucket '.repeat(2000));
      assert.equal((await signedPut(server, 'secret.txt', data, { contentType: 'text/plain' })).status, 201);
      const [object] = await bucket.keys('data/');
      const stored = await bucket.object(object!);
      assert.equal(stored.length, data.length);
      assert.ok(!stored.includes(Buffer.from('plain text')), 'the object holds ciphertext');
      assert.deepEqual((await rawRequest(server.url, 'GET', '/upload/secret.txt')).body, data);
      const part = await rawRequest(server.url, 'GET', '/upload/secret.txt', { Range: 'bytes=12345-54321' });
      assert.equal(part.status, 206);
      assert.deepEqual(part.body, data.subarray(12345, 54322));
    }));

  it('gives exactly one of 10 racing PUTs of one path the path, and leaves no object of the others', () =>
    withServer({}, async (server, bucket) => {
      const bodies = Array.from({ length: 10 }, () => randomBytes(200_000));
      const answers = await Promise.all(bodies.map((body) => signedPut(server, 'race.bin', body)));
      assert.deepEqual(answers.map((a) => a.status).sort(), [201, ...Array<number>(9).fill(409)]);
      const winner = bodies[answers.findIndex((a) => a.status === 201)]!;
      assert.deepEqual((await rawRequest(server.url, 'GET', '/upload/race.bin')).body, winner);
      assert.equal((await bucket.keys('data/')).length, 1);
    }));

  it('deduplicates into one blob object that goes with the last copy', () =>
    withServer({ DeduplicationEnabled: true, DeleteSecret: 'delete-me' }, async (server, bucket) => {
      const data = randomBytes(100_000);
      for (const slot of ['d/1.bin', 'd/2.bin', 'd/3.bin']) assert.equal((await signedPut(server, slot, data)).status, 201);
      const sha = sha256(data);
      assert.deepEqual(await bucket.keys('blobs/'), [`blobs/${sha}`, `blobs/${sha}.json`]);
      assert.deepEqual(await bucket.keys('data/'), [], 'no copy of its own');
      const del = (slot: string) => rawRequest(server.url, 'DELETE', `/upload/${slot}?token=${hmacHex(TEST_SECRET, `${slot}\0delete-me`)}`);
      assert.equal((await del('d/1.bin')).status, 204);
      assert.equal((await del('d/2.bin')).status, 204);
      assert.equal((await bucket.keys('blobs/')).length, 2, 'still used by d/3.bin');
      assert.deepEqual((await rawRequest(server.url, 'GET', '/upload/d/3.bin')).body, data);
      assert.equal((await del('d/3.bin')).status, 204);
      assert.deepEqual(await bucket.keys('blobs/'), []);
      assert.deepEqual(await bucket.keys('meta/'), []);
    }));

  it('keeps MaxVersions earlier versions as objects, serves one by id, and deletes what is pruned', () =>
    withServer({ EnableVersioning: true, MaxVersions: 2 }, async (server, bucket) => {
      const bodies = [1, 2, 3, 4].map((n) => Buffer.from(`version ${n} `.repeat(1000)));
      for (const body of bodies) {
        assert.equal((await signedPut(server, 'v.txt', body)).status, 201);
        // Each replacement is served at once by the instance that made it.
        assert.deepEqual((await rawRequest(server.url, 'GET', '/upload/v.txt')).body, body);
      }
      const list = await rawRequest(server.url, 'GET', `/upload/v.txt?versions=${hmacHex(TEST_SECRET, versionsMessage('v.txt'))}`);
      const versions = JSON.parse(list.body.toString()) as { id: string; size: number }[];
      assert.equal(versions.length, 2);
      const newest = await rawRequest(server.url, 'GET', `/upload/v.txt?versions=${hmacHex(TEST_SECRET, versionsMessage('v.txt'))}&id=${versions[0]!.id}`);
      assert.deepEqual(newest.body, bodies[2]);
      const ranged = await rawRequest(server.url, 'GET', `/upload/v.txt?versions=${hmacHex(TEST_SECRET, versionsMessage('v.txt'))}&id=${versions[1]!.id}`, { Range: 'bytes=10-19' });
      assert.deepEqual(ranged.body, bodies[1]!.subarray(10, 20));
      assert.equal((await bucket.keys('versions/')).length, 2);
      assert.equal((await bucket.keys('data/')).length, 3, 'the current file and two versions; the first is gone');
    }));

  it("sees another instance's replacement within 2 s (the whole earlier file until then) and its removal at once", async () => {
    const bucket = await createBucket(s3);
    const config = { ...bucket.config, EnableVersioning: true, DeleteSecret: 'delete-me' };
    const a = await startTestServer(config);
    const b = await startTestServer(config);
    try {
      const [one, two] = [Buffer.from('one '.repeat(5000)), Buffer.from('two '.repeat(6000))];
      assert.equal((await signedPut(a, 'shared.txt', one)).status, 201);
      assert.deepEqual((await rawRequest(a.url, 'GET', '/upload/shared.txt')).body, one);
      assert.equal((await signedPut(b, 'shared.txt', two)).status, 201);
      const soon = (await rawRequest(a.url, 'GET', '/upload/shared.txt')).body;
      assert.ok(soon.equals(one) || soon.equals(two), 'a whole file, the earlier or the new one');
      await new Promise((r) => setTimeout(r, 2100));
      assert.deepEqual((await rawRequest(a.url, 'GET', '/upload/shared.txt')).body, two);
      const token = hmacHex(TEST_SECRET, 'shared.txt\0delete-me');
      assert.equal((await rawRequest(b.url, 'DELETE', `/upload/shared.txt?token=${token}`)).status, 204);
      assert.equal((await rawRequest(a.url, 'GET', '/upload/shared.txt')).status, 404);
    } finally {
      await Promise.all([a.close(), b.close()]);
      bucket.dispose();
    }
  });

  it('expires files and versions by deleting their objects', () =>
    withServer({ FileTTL: '1h', EnableVersioning: true }, async (server, bucket) => {
      assert.equal((await signedPut(server, 'old.txt', Buffer.from('one'))).status, 201);
      assert.equal((await signedPut(server, 'old.txt', Buffer.from('two'))).status, 201);
      assert.equal(await server.running.expiry.sweep(Date.now()), 0);
      assert.equal(await server.running.expiry.sweep(Date.now() + 2 * 3_600_000), 2);
      assert.equal((await rawRequest(server.url, 'GET', '/upload/old.txt')).status, 404);
      assert.deepEqual(await bucket.keys(), []);
    }));

  it('answers 503 with Retry-After while S3 is down, makes nothing visible, and stores again once it is back', () =>
    withServer({ MetricsEnabled: true, MetricsPort: 0 }, async (server, bucket) => {
      const kept = randomBytes(5000);
      assert.equal((await signedPut(server, 'kept.bin', kept)).status, 201);
      const readyz = `${server.running.metricsAddress!}/readyz`;
      await s3.gateway.stop();
      try {
        const put = await signedPut(server, 'lost.bin', randomBytes(300_000));
        assert.equal(put.status, 503, server.logs.filter((l) => /request.failed/.test(l)).join("\n"));
        assert.equal(put.headers['retry-after'], '10');
        assert.match(put.body.toString(), /Storage unavailable/);
        assert.equal((await rawRequest(server.url, 'GET', '/upload/kept.bin')).status, 503);
        const ready = await fetch(readyz);
        assert.equal(ready.status, 503);
        assert.match(((await ready.json()) as { checks: Record<string, string> }).checks.s3 ?? '', /^down/);
        assert.deepEqual(await filesBelow(path.join(server.storeDir, '.hmac', 'staging')), []);
      } finally {
        await s3.gateway.start();
      }
      assert.equal((await rawRequest(server.url, 'GET', '/upload/lost.bin')).status, 404);
      assert.equal((await bucket.keys('meta/')).length, 1);
      assert.deepEqual((await rawRequest(server.url, 'GET', '/upload/kept.bin')).body, kept);
      assert.equal((await signedPut(server, 'lost.bin', Buffer.from('again'))).status, 201);
      assert.equal((await fetch(readyz)).status, 200);
    }));

  it('starts while S3 is down and says so, answers 503 and sweeps nothing until it is back, then serves', async () => {
    const bucket = await createBucket(s3);
    await s3.gateway.stop();
    let server: TestServer | undefined;
    try {
      server = await startTestServer({ ...bucket.config, FileTTL: '1h' });
      assert.ok(server.logs.some((l) => /warn storage\.unavailable backend=s3 bucket=hfs-test-/.test(l)), 'no storage.unavailable line');
      assert.equal((await signedPut(server, 'early.bin', randomBytes(100))).status, 503);
      // The sweep's listing breaks off: said, and nothing else happens.
      assert.equal(await server.running.expiry.sweep(Date.now() + 2 * 3_600_000), 0);
      assert.ok(server.logs.some((l) => /warn expiry\.failed cause=/.test(l)), 'no expiry.failed line');
    } finally {
      await s3.gateway.start();
    }
    try {
      const data = randomBytes(1000);
      assert.equal((await signedPut(server, 'later.bin', data)).status, 201);
      assert.deepEqual((await rawRequest(server.url, 'GET', '/upload/later.bin')).body, data);
    } finally {
      await server.close();
      bucket.dispose();
    }
  });

  it('answers 503 when S3 goes away in the middle of a multipart upload, and nothing of the file becomes visible', () =>
    withServer({ MaxUploadSize: '128MiB' }, async (server, bucket) => {
      const data = randomBytes(60 * MiB);
      let cut: string | undefined;
      // The commit's multipart upload takes a fraction of a second here: try again should it finish first.
      for (let attempt = 0; attempt < 3 && cut === undefined; attempt++) {
        const slot = `cut-${attempt}.bin`;
        let answered = false;
        const put = signedPut(server, slot, data).finally(() => (answered = true));
        while (!answered && (await bucket.multipartUploads()) === 0) await new Promise((r) => setTimeout(r, 5));
        if (answered) {
          assert.equal((await put).status, 201);
          continue;
        }
        await s3.gateway.stop();
        try {
          const answer = await put;
          assert.equal(answer.status, 503);
          assert.equal(answer.headers['retry-after'], '10');
          cut = slot;
        } finally {
          await s3.gateway.start();
        }
      }
      assert.ok(cut, 'S3 was never stopped during a multipart upload');
      assert.equal((await rawRequest(server.url, 'GET', `/upload/${cut}`)).status, 404);
      assert.equal((await rawRequest(server.url, 'HEAD', `/upload/${cut}`)).status, 404);
      assert.ok(!(await bucket.keys('meta/')).some((k) => k.includes(cut)), 'no metadata for the cut upload');
      assert.deepEqual(await filesBelow(path.join(server.storeDir, '.hmac', 'staging')), []);
      assert.equal((await signedPut(server, cut, data)).status, 201, 'the same PUT again once S3 is back');
      assert.equal(sha256((await rawRequest(server.url, 'GET', `/upload/${cut}`)).body), sha256(data));
    }));

  it('commits tus uploads to S3, and keeps one whose last PATCH met S3 down until a HEAD commits it', () =>
    withServer({}, async (server, bucket) => {
      const grant = await grantFor(server);
      const data = randomBytes(3 * MiB);
      const done = await tusUpload(server, data, grant, { chunkSize: MiB });
      assert.equal(sha256((await rawRequest(server.url, 'GET', new URL(done.downloadUrl).pathname)).body), sha256(data));

      const tusHeaders = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${grant}` };
      const late = randomBytes(100_000);
      const created = await rawRequest(server.url, 'POST', '/files/', { ...tusHeaders, 'Upload-Length': late.length, 'Upload-Metadata': `filename ${Buffer.from('late.bin').toString('base64')}` });
      assert.equal(created.status, 201);
      const location = new URL(created.headers.location!).pathname;
      const half = late.length / 2;
      const first = await rawRequest(server.url, 'PATCH', location, { ...tusHeaders, 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream' }, late.subarray(0, half));
      assert.equal(first.status, 204);
      // S3 goes away in the middle of the upload: the bytes still arrive, the commit cannot happen.
      await s3.gateway.stop();
      try {
        const patch = await rawRequest(server.url, 'PATCH', location, { ...tusHeaders, 'Upload-Offset': half, 'Content-Type': 'application/offset+octet-stream' }, late.subarray(half));
        assert.equal(patch.status, 503);
        assert.equal((await rawRequest(server.url, 'HEAD', location, tusHeaders)).status, 503);
      } finally {
        await s3.gateway.start();
      }
      assert.equal((await bucket.keys('meta/')).length, 1, 'only the first upload is visible');
      const head = await rawRequest(server.url, 'HEAD', location, tusHeaders);
      assert.equal(head.status, 200);
      assert.equal(head.headers['upload-offset'], String(late.length));
      assert.deepEqual((await rawRequest(server.url, 'GET', location)).body, late);
      assert.equal((await bucket.keys('meta/')).length, 2);
    }));
});
