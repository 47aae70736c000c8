import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { hmacHex } from '../middleware/slot-verifier-hmac.js';
import { rawRequest, signedPut } from './helpers/http.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';

const DELETE_SECRET = 'delete-secret';
const slot = 'MmQ5ZjQx/report.pdf';
const url = `/upload/${slot}`;
const token = (p: string, deleteSecret = DELETE_SECRET) => hmacHex(TEST_SECRET, `${p}\0${deleteSecret}`);

describe('legacy DELETE (Metronome token scheme)', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ DeleteSecret: DELETE_SECRET });
    assert.equal((await signedPut(server, slot, Buffer.from('%PDF'), { protocol: 'token' })).status, 201);
  });
  after(() => server.close());

  it('advertises DELETE in CORS and Allow when enabled', async () => {
    const res = await rawRequest(server.url, 'OPTIONS', url);
    assert.equal(res.headers['access-control-allow-methods'], 'GET, HEAD, PUT, OPTIONS, DELETE');
  });

  it('answers 403 to a missing token, a wrong token and a token for another path', async () => {
    assert.equal((await rawRequest(server.url, 'DELETE', url)).status, 403);
    assert.equal((await rawRequest(server.url, 'DELETE', `${url}?token=${token(slot, 'guess')}`)).status, 403);
    assert.equal((await rawRequest(server.url, 'DELETE', `${url}?token=${token('other/report.pdf')}`)).status, 403);
    assert.equal((await rawRequest(server.url, 'GET', url)).status, 200);
  });

  it('answers 204, removes file and metadata, and frees the path', async () => {
    assert.equal((await rawRequest(server.url, 'DELETE', `${url}?token=${token(slot).toUpperCase()}`)).status, 204);
    assert.equal((await rawRequest(server.url, 'GET', url)).status, 404);
    const left = await readdir(path.join(server.storeDir, '.hmac', 'meta'), { recursive: true, withFileTypes: true });
    assert.deepEqual(left.filter((e) => e.isFile()), []);
    assert.deepEqual(await readdir(path.join(server.storeDir, 'upload', 'MmQ5ZjQx')), []);
    assert.equal((await signedPut(server, slot, Buffer.from('%PDF-2'), { protocol: 'token' })).status, 201);
  });

  it('answers 404 for a path with no file', async () => {
    const missing = 'MmQ5ZjQx/none.pdf';
    assert.equal((await rawRequest(server.url, 'DELETE', `/upload/${missing}?token=${token(missing)}`)).status, 404);
  });
});

describe('legacy DELETE without DeleteSecret', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  it('is not allowed at all', async () => {
    const res = await rawRequest(server.url, 'DELETE', `${url}?token=${token(slot, '')}`);
    assert.equal(res.status, 405);
    assert.equal(res.headers.allow, 'GET, HEAD, PUT, OPTIONS');
  });
});
