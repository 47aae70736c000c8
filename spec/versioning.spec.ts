// EnableVersioning: an upload to a taken path keeps the previous file as a version, at most MaxVersions of them,
// reachable only with the path's versions MAC.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { hmacHex, versionsMessage } from '../middleware/slot-verifier-hmac.js';
import { encodeSlotPath } from '../server/cli-sign.js';
import type { VersionInfo } from '../stores/storage.js';
import { rawRequest, signedPut } from './helpers/http.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';

const versionsUrl = (slot: string, extra = '') => `/upload/${encodeSlotPath(slot)}?versions=${hmacHex(TEST_SECRET, versionsMessage(slot))}${extra}`;

async function listed(server: TestServer, slot: string): Promise<VersionInfo[]> {
  const res = await rawRequest(server.url, 'GET', versionsUrl(slot));
  assert.equal(res.status, 200);
  return JSON.parse(res.body.toString()) as VersionInfo[];
}

for (const [label, extra] of [
  ['plain', {}],
  ['encrypted', { AESEnabled: true }],
] as const) {
  describe(`versioning (${label})`, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ EnableVersioning: true, MaxVersions: 3, DeleteSecret: 'delete-me', ...extra });
    });
    after(() => server.close());

    it('keeps exactly the newest MaxVersions versions plus the current file', async () => {
      const slot = 'v/report.pdf';
      const uploads = Array.from({ length: 6 }, (_, i) => randomBytes(1000 + i));
      for (const body of uploads) {
        assert.equal((await signedPut(server, slot, body, { contentType: 'application/pdf' })).status, 201);
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.deepEqual((await rawRequest(server.url, 'GET', `/upload/${slot}`)).body, uploads[5]);
      const versions = await listed(server, slot);
      assert.deepEqual(versions.map((v) => v.size), [1004, 1003, 1002]);
      for (const [i, version] of versions.entries()) {
        const res = await rawRequest(server.url, 'GET', versionsUrl(slot, `&id=${version.id}`));
        assert.equal(res.status, 200);
        assert.deepEqual(res.body, uploads[4 - i]);
        assert.equal(res.headers['content-type'], 'application/pdf');
      }
      const dirs = await readdir(path.join(server.storeDir, '.hmac', 'versions'));
      assert.equal(dirs.length, 1);
      assert.equal((await readdir(path.join(server.storeDir, '.hmac', 'versions', dirs[0]!))).length, 6);
    });

    it('refuses version access without the right MAC, anonymous or forged', async () => {
      const slot = 'v/secret.txt';
      assert.equal((await signedPut(server, slot, Buffer.from('one'))).status, 201);
      assert.equal((await signedPut(server, slot, Buffer.from('two'))).status, 201);
      const [version] = await listed(server, slot);
      assert.equal((await rawRequest(server.url, 'GET', `/upload/${slot}?versions`)).status, 403);
      assert.equal((await rawRequest(server.url, 'GET', `/upload/${slot}?versions=${'0'.repeat(64)}&id=${version!.id}`)).status, 403);
      assert.equal((await rawRequest(server.url, 'GET', `/upload/${slot}?versions=${hmacHex(TEST_SECRET, versionsMessage('v/other.txt'))}`)).status, 403);
      assert.equal((await rawRequest(server.url, 'GET', versionsUrl(slot, '&id=000000000000000-00000000'))).status, 404);
      assert.equal((await rawRequest(server.url, 'GET', versionsUrl(slot, '&id=../../meta'))).status, 404);
      assert.equal((await rawRequest(server.url, 'GET', versionsUrl(slot, `&id=${version!.id}`))).body.toString(), 'one');
    });

    it('takes parallel uploads of one path one after another, all 201', async () => {
      const slot = 'v/busy.bin';
      const answers = await Promise.all(Array.from({ length: 10 }, () => signedPut(server, slot, randomBytes(2000))));
      assert.deepEqual(answers.map((a) => a.status), Array<number>(10).fill(201));
      assert.equal((await listed(server, slot)).length, 3);
    });

    it('removes the versions with the file on DELETE', async () => {
      const slot = 'v/gone.txt';
      for (const text of ['a', 'b', 'c']) assert.equal((await signedPut(server, slot, Buffer.from(text))).status, 201);
      assert.equal((await listed(server, slot)).length, 2);
      const token = hmacHex(TEST_SECRET, `${slot}\0delete-me`);
      assert.equal((await rawRequest(server.url, 'DELETE', `/upload/${slot}?token=${token}`)).status, 204);
      assert.deepEqual(await listed(server, slot), []);
      assert.equal((await rawRequest(server.url, 'GET', `/upload/${slot}`)).status, 404);
    });
  });
}

describe('versioning off', () => {
  it('still answers 409 to a second upload of a path', async () => {
    const server = await startTestServer();
    try {
      assert.equal((await signedPut(server, 'x/a.txt', Buffer.from('1'))).status, 201);
      assert.equal((await signedPut(server, 'x/a.txt', Buffer.from('2'))).status, 409);
    } finally {
      await server.close();
    }
  });
});

describe('versions and expiry', () => {
  it('a TTL sweep removes expired versions and files alike', async () => {
    const server = await startTestServer({ EnableVersioning: true, MaxVersions: 5, FileTTL: '1h' });
    try {
      for (const text of ['a', 'b', 'c']) assert.equal((await signedPut(server, 'ttl/v.txt', Buffer.from(text))).status, 201);
      assert.equal((await listed(server, 'ttl/v.txt')).length, 2);
      assert.equal(await server.running.expiry.sweep(Date.now() + 2 * 3_600_000), 3);
      assert.equal((await rawRequest(server.url, 'GET', '/upload/ttl/v.txt')).status, 404);
      assert.deepEqual(await listed(server, 'ttl/v.txt'), []);
      assert.equal(server.running.expiry.counters.deletions, 3);
    } finally {
      await server.close();
    }
  });
});
