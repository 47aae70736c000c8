// FileTTL and per-file expiry: expired files go with their metadata, fresh ones stay, deletions are counted.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { signSlot } from '../middleware/slot-verifier-hmac.js';
import { fileShareToken } from './helpers/jwt.js';
import { rawRequest, signedPut } from './helpers/http.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function metaCount(server: TestServer): Promise<number> {
  const entries = await readdir(path.join(server.storeDir, '.hmac', 'meta'), { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).length;
}

describe('FileTTL', function () {
  this.timeout(20_000);

  it('deletes files older than the TTL on its own schedule and keeps fresh ones', async () => {
    const server = await startTestServer({
      FileTTL: '2s',
      Tenants: [{ Prefix: 'upload/t.example', Secret: 'tenant-secret', Protocols: ['v'] }],
    });
    try {
      assert.equal((await signedPut(server, 'old/a.txt', Buffer.from('old'))).status, 201);
      const body = Buffer.from('tenant file');
      const mac = signSlot('tenant-secret', 'v', 'x/t.txt', body.length, '');
      assert.equal((await rawRequest(server.url, 'PUT', `/upload/t.example/x/t.txt?v=${mac}`, { 'Content-Length': body.length }, body)).status, 201);
      await sleep(1500);
      assert.equal((await signedPut(server, 'new/b.txt', Buffer.from('new'))).status, 201);
      // The sweep runs every FileTTL / 10 (at least every second) without being asked.
      await server.waitForLog(/file\.expired path=upload\/old\/a\.txt/, 3000);
      await server.waitForLog(/file\.expired path=upload\/t\.example\/x\/t\.txt/, 3000);
      assert.equal((await rawRequest(server.url, 'GET', '/upload/old/a.txt')).status, 404);
      assert.equal((await rawRequest(server.url, 'GET', '/upload/t.example/x/t.txt')).status, 404);
      assert.deepEqual(await readdir(path.join(server.storeDir, 'upload', 'old')), []);
      assert.equal((await rawRequest(server.url, 'GET', '/upload/new/b.txt')).body.toString(), 'new');
      assert.equal(await metaCount(server), 1);
      assert.equal(server.running.expiry.counters.deletions, 2);
      // The path is free again.
      assert.equal((await signedPut(server, 'old/a.txt', randomBytes(3))).status, 201);
    } finally {
      await server.close();
    }
  });

  it('catches up after a restart', async () => {
    const storeDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-ttl-'));
    try {
      const first = await startTestServer({ StoreDir: storeDir });
      assert.equal((await signedPut(first, 'kept/while/off.txt', Buffer.from('x'))).status, 201);
      await first.close();
      await sleep(1200);
      const second = await startTestServer({ StoreDir: storeDir, FileTTL: '1s' });
      try {
        assert.ok(await second.waitForLog(/file\.expired path=upload\/kept\/while\/off\.txt/));
        assert.equal((await rawRequest(second.url, 'GET', '/upload/kept/while/off.txt')).status, 404);
      } finally {
        await second.close();
      }
    } finally {
      await rm(storeDir, { recursive: true, force: true });
    }
  });

  it("deletes a file-share upload at its token's expires, while neighbours stay", async () => {
    const server = await startTestServer();
    try {
      const put = async (slot: string, expires: number) => {
        const body = Buffer.from(slot);
        const token = await fileShareToken(server.config.Secret, { slot, filename: 'f.txt', filesize: body.length, expires });
        return rawRequest(server.url, 'PUT', `/upload/${slot}/f.txt`, { 'Content-Length': body.length, Authorization: `Bearer ${token}` }, body);
      };
      const now = Math.floor(Date.now() / 1000);
      assert.equal((await put('soon', now + 1)).status, 201);
      assert.equal((await put('later', now + 3600)).status, 201);
      assert.equal(await server.running.expiry.sweep(Date.now() + 5000), 1);
      assert.equal((await rawRequest(server.url, 'GET', '/upload/soon/f.txt')).status, 404);
      assert.equal((await rawRequest(server.url, 'GET', '/upload/later/f.txt')).status, 200);
      assert.deepEqual(await readdir(path.join(server.storeDir, 'upload', 'soon')), []);
    } finally {
      await server.close();
    }
  });
});
