// How downloads read what is stored: the metadata cache never serves what another instance sharing StoreDir
// has replaced or removed, and VerifyPlaintextDownloads decides whether a damaged plain file is cut off.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { hmacHex } from '../middleware/slot-verifier-hmac.js';
import { rawRequest, signedPut } from './helpers/http.js';
import { exchange, head } from './helpers/socket.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';
import { MetadataCache } from '../stores/metadata-cache.js';
import { openStored } from '../stores/committed-files.js';
import { keyRingFrom } from '../stores/key-ring.js';
import { truncate, writeFile } from 'node:fs/promises';

const DELETE_SECRET = 'delete-secret';
const deleteToken = (p: string) => hmacHex(TEST_SECRET, `${p}\0${DELETE_SECRET}`);

describe('downloads and other instances on the same StoreDir', () => {
  let storeDir: string;
  let a: TestServer;
  let b: TestServer;
  before(async () => {
    storeDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-shared-'));
    a = await startTestServer({ StoreDir: storeDir, EnableVersioning: true, DeleteSecret: DELETE_SECRET });
    b = await startTestServer({ StoreDir: storeDir, EnableVersioning: true, DeleteSecret: DELETE_SECRET });
  });
  after(async () => {
    await a.close();
    await b.close();
    await rm(storeDir, { recursive: true, force: true });
  });

  for (const [what, same] of [
    ['other bytes', false],
    ['the same bytes again', true],
  ] as const) {
    it(`serves at once what the other instance uploaded in its place (${what})`, async () => {
      const slot = `replaced-${same ? 'same' : 'other'}/file.bin`;
      const first = randomBytes(4096);
      assert.equal((await signedPut(a, slot, first)).status, 201);
      const before = await rawRequest(a.url, 'GET', `/upload/${slot}`);
      assert.deepEqual(before.body, first);
      // Twice, so the second answer is the cached one.
      assert.equal((await rawRequest(a.url, 'GET', `/upload/${slot}`, { Range: 'bytes=0-9' })).status, 206);
      const second = same ? first : randomBytes(4096);
      assert.equal((await signedPut(b, slot, second)).status, 201);
      const after = await rawRequest(a.url, 'GET', `/upload/${slot}`);
      assert.deepEqual(after.body, second);
      assert.notEqual(after.headers.etag, before.headers.etag, 'the new commit has its own ETag');
    });
  }

  it('answers 404 at once for a file the other instance deleted, and serves its next upload as new', async () => {
    const slot = 'deleted/file.bin';
    const bytes = randomBytes(1000);
    assert.equal((await signedPut(a, slot, bytes)).status, 201);
    const first = await rawRequest(a.url, 'GET', `/upload/${slot}`);
    assert.equal((await rawRequest(a.url, 'GET', `/upload/${slot}`)).status, 200);
    assert.equal((await rawRequest(b.url, 'DELETE', `/upload/${slot}?token=${deleteToken(slot)}`)).status, 204);
    assert.equal((await rawRequest(a.url, 'GET', `/upload/${slot}`)).status, 404);
    // The same bytes under the same name again: a new commit, which A must not take for the old one.
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal((await signedPut(b, slot, bytes)).status, 201);
    const again = await rawRequest(a.url, 'GET', `/upload/${slot}`);
    assert.deepEqual(again.body, bytes);
    assert.notEqual(again.headers.etag, first.headers.etag, 'the new commit has its own ETag');
  });
});

describe('downloads of a deduplicated file uploaded again', () => {
  it('serve the new commit at once, though its bytes are the same blob', async () => {
    const server = await startTestServer({ DeduplicationEnabled: true, EnableVersioning: true });
    try {
      const slot = 'dedup/same.bin';
      const bytes = randomBytes(4096);
      assert.equal((await signedPut(server, slot, bytes)).status, 201);
      const before = await rawRequest(server.url, 'GET', `/upload/${slot}`);
      assert.equal((await rawRequest(server.url, 'GET', `/upload/${slot}`, { Range: 'bytes=0-9' })).status, 206);
      await new Promise((resolve) => setTimeout(resolve, 5));
      assert.equal((await signedPut(server, slot, bytes)).status, 201);
      const after = await rawRequest(server.url, 'GET', `/upload/${slot}`);
      assert.deepEqual(after.body, bytes);
      assert.notEqual(after.headers.etag, before.headers.etag, 'the new commit has its own ETag');
    } finally {
      await server.close();
    }
  });
});

describe('the metadata cache', () => {
  it('keeps at most its capacity, dropping the least recently used', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-meta-cache-'));
    try {
      const cache = new MetadataCache(2);
      const write = async (name: string, size: number) => {
        const file = await open(path.join(dir, name), 'w');
        await file.writeFile(JSON.stringify({ path: name, size, contentType: 'text/plain', createdAt: new Date().toISOString() }));
        await file.close();
      };
      for (const name of ['a', 'b', 'c']) await write(name, 1);
      assert.equal((await cache.read(path.join(dir, 'a'), 'id-a'))?.path, 'a');
      assert.equal((await cache.read(path.join(dir, 'b'), 'id-b'))?.path, 'b');
      // a is used again, so b is the least recently used when c comes in.
      assert.equal((await cache.read(path.join(dir, 'a'), 'id-a'))?.path, 'a');
      assert.equal((await cache.read(path.join(dir, 'c'), 'id-c'))?.path, 'c');
      // Rewritten on disk: a cached entry answers with what it read, b is read afresh.
      await write('a', 2);
      await write('b', 2);
      assert.equal((await cache.read(path.join(dir, 'a'), 'id-a'))?.size, 1, 'a still cached');
      assert.equal((await cache.read(path.join(dir, 'b'), 'id-b'))?.size, 2, 'b was dropped');
      // Another identity of the data file: read afresh.
      assert.equal((await cache.read(path.join(dir, 'a'), 'id-a2'))?.size, 2);
      // Shared between requests: nobody can change an answer for the next one.
      const meta = await cache.read(path.join(dir, 'a'), 'id-a2');
      assert.throws(() => ((meta as { size: number }).size = 5), TypeError);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('short reads of stored files', () => {
  it('answers a short range in one read, and fails as damaged when the file shrank after it was opened', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-short-'));
    try {
      const file = path.join(dir, 'data');
      const bytes = randomBytes(1000);
      await writeFile(file, bytes);
      const meta = { path: 'x/data', size: 1000, contentType: 'application/octet-stream', createdAt: new Date().toISOString() };
      const policy = { keys: keyRingFrom({ Secret: 's', AESEnabled: false, XOREnabled: false, Method: 'aes', AESKey: '', XORKey: '', PreviousAESKeys: [], PreviousXORKeys: [] }), verifyPlaintext: false };
      const intact = await openStored(file, meta, policy, 'x/data');
      assert.deepEqual(await intact!.readShort(10, 19), bytes.subarray(10, 20));
      const shrinking = await openStored(file, meta, policy, 'x/data');
      await truncate(file, 500);
      await assert.rejects(shrinking!.readShort(400, 599)!, { code: 'E_INTEGRITY' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('VerifyPlaintextDownloads', () => {
  const data = randomBytes(50_000);

  async function damage(server: TestServer, slot: string): Promise<void> {
    const file = await open(path.join(server.storeDir, 'upload', ...slot.split('/')), 'r+');
    const byte = Buffer.alloc(1);
    await file.read(byte, 0, 1, 30_000);
    await file.write(Buffer.from([byte[0]! ^ 0xff]), 0, 1, 30_000);
    await file.close();
  }

  it('cuts off a whole-file download of a damaged plain file when true', async () => {
    const server = await startTestServer({ VerifyPlaintextDownloads: true });
    try {
      assert.equal((await signedPut(server, 'plain/flipped.bin', data)).status, 201);
      await damage(server, 'plain/flipped.bin');
      const answer = await exchange(server.url, [head('GET', '/upload/plain/flipped.bin')]);
      const body = Buffer.from(answer.slice(answer.indexOf('\r\n\r\n') + 4), 'latin1');
      assert.ok(body.length < data.length, `${body.length} bytes arrived`);
      assert.ok(await server.waitForLog(/request\.failed code=E_INTEGRITY .*sha256 [0-9a-f]{64} does not match/));
    } finally {
      await server.close();
    }
  });

  it('serves plain files as stored by default, without hashing them', async () => {
    const server = await startTestServer();
    try {
      assert.equal((await signedPut(server, 'plain/flipped.bin', data)).status, 201);
      await damage(server, 'plain/flipped.bin');
      const res = await rawRequest(server.url, 'GET', '/upload/plain/flipped.bin');
      assert.equal(res.status, 200);
      assert.equal(res.body.length, data.length);
      assert.notDeepEqual(res.body, data);
    } finally {
      await server.close();
    }
  });
});
