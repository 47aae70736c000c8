import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import request from 'supertest';
import { rawRequest, signedPath, signedPut } from './helpers/http.js';
import { exchange, head } from './helpers/socket.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const UUID = '0bd8b7c2-1a2b-4c3d-9e8f-0123456789ab';

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

describe('legacy PUT', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ MaxUploadSize: 1024 * 1024, AllowedExtensions: ['.txt', '.jpg', '.bin', '.tar.gz'] });
  });
  after(() => server.close());

  it('stores the bytes with v, v2 and token and answers 201', async () => {
    for (const protocol of ['v', 'v2', 'token'] as const) {
      const body = randomBytes(1000);
      const slot = `${UUID}/${protocol}.bin`;
      const res = await signedPut(server, slot, body, { protocol, contentType: 'application/x-test; charset=binary' });
      assert.equal(res.status, 201, `${protocol}: ${res.body.toString()}`);
      assert.deepEqual(await readFile(path.join(server.storeDir, 'upload', UUID, `${protocol}.bin`)), body);
      const got = await request(server.url).get(`/upload/${UUID}/${protocol}.bin`).buffer(true).parse((r, cb) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => cb(null, Buffer.concat(chunks)));
      });
      assert.equal(got.status, 200);
      assert.deepEqual(got.body, body);
      // The uploader's Content-Type is stored and served back verbatim.
      assert.equal(got.headers['content-type'], 'application/x-test; charset=binary');
    }
  });

  it('signs the decoded path: a name with spaces, %, & and non-ASCII letters', async () => {
    const slot = `${UUID}/café & 100% ünïcode.txt`;
    const body = Buffer.from('hello world');
    const res = await signedPut(server, slot, body, { contentType: 'text/plain' });
    assert.equal(res.status, 201);
    // Uppercase escapes (as aiohttp re-encodes) name the same file.
    const upper = `/upload/${UUID}/caf%C3%A9%20%26%20100%25%20%C3%BCn%C3%AFcode.txt`;
    const got = await rawRequest(server.url, 'GET', upper);
    assert.equal(got.status, 200);
    assert.equal(got.body.toString(), 'hello world');
  });

  it('answers 409 for a path that exists and keeps the first file', async () => {
    const slot = `${UUID}/exists.txt`;
    assert.equal((await signedPut(server, slot, Buffer.from('first'))).status, 201);
    const second = await signedPut(server, slot, Buffer.from('other'));
    assert.equal(second.status, 409);
    assert.equal(await readFile(path.join(server.storeDir, 'upload', UUID, 'exists.txt'), 'utf8'), 'first');
  });

  it('answers 409 when a file stands where a directory of the path would go', async () => {
    assert.equal((await signedPut(server, `${UUID}-f/a.txt`, Buffer.from('x'))).status, 201);
    assert.equal((await signedPut(server, `${UUID}-f/a.txt/b.txt`, Buffer.from('y'))).status, 409);
  });

  it('gives exactly one 201 among twenty parallel PUTs of one path', async () => {
    const slot = `${UUID}/race.bin`;
    const bodies = Array.from({ length: 20 }, () => randomBytes(64 * 1024));
    const answers = await Promise.all(bodies.map((b) => signedPut(server, slot, b)));
    const statuses = answers.map((a) => a.status).sort();
    assert.deepEqual(statuses, [201, ...Array<number>(19).fill(409)]);
    const winner = bodies[answers.findIndex((a) => a.status === 201)]!;
    assert.deepEqual(await readFile(path.join(server.storeDir, 'upload', UUID, 'race.bin')), winner);
    assert.deepEqual(await filesUnder(path.join(server.storeDir, '.hmac', 'staging')), []);
  });

  const refusals: Array<[string, () => Promise<{ status: number; headers: Record<string, unknown> }>, number]> = [
    ['a bad MAC', () => rawRequest(server.url, 'PUT', `/upload/${UUID}/bad.txt?v2=${'0'.repeat(64)}`, { 'Content-Length': 3 }, Buffer.from('abc')), 403],
    ['a MAC for another size', () => signedPut(server, `${UUID}/size.txt`, Buffer.from('abc'), { size: 4 }), 403],
    ['a MAC for another content type', () => signedPut(server, `${UUID}/type.txt`, Buffer.from('abc'), { contentType: 'text/html', signedType: 'text/plain' }), 403],
    ['a MAC made with another secret', () => signedPut(server, `${UUID}/secret.txt`, Buffer.from('abc'), { secret: 'nope' }), 403],
    ['no MAC at all', () => rawRequest(server.url, 'PUT', `/upload/${UUID}/none.txt`, { 'Content-Length': 3 }, Buffer.from('abc')), 403],
    ['a disallowed extension', () => signedPut(server, `${UUID}/evil.exe`, Buffer.from('abc')), 403],
    ['a name that only looks like an allowed extension', () => signedPut(server, `${UUID}/.txt`, Buffer.from('abc')), 403],
  ];
  for (const [what, send, status] of refusals) {
    it(`answers ${status} to ${what} and stores nothing`, async () => {
      const before = await filesUnder(path.join(server.storeDir, 'upload'));
      const res = await send();
      assert.equal(res.status, status);
      assert.deepEqual(await filesUnder(path.join(server.storeDir, 'upload')), before);
    });
  }

  it('accepts extensions case-insensitively, including multi-part ones', async () => {
    assert.equal((await signedPut(server, `${UUID}/PHOTO.JPG`, Buffer.from('jpg'))).status, 201);
    assert.equal((await signedPut(server, `${UUID}/backup.tar.gz`, Buffer.from('tgz'))).status, 201);
  });

  it('logs every auth failure in the fail2ban line format with the client IP', async () => {
    await rawRequest(server.url, 'PUT', `/upload/${UUID}/log.txt?v=${'a'.repeat(64)}`, { 'Content-Length': 1 }, Buffer.from('x'));
    const line = server.logs.find((l) => l.includes('auth.failed') && l.includes('log.txt'));
    assert.match(line ?? '', /^\S+ warn auth\.failed client=127\.0\.0\.1 reason=mac_invalid method=PUT path=\/upload\//);
  });

  it('answers 411 without Content-Length', async () => {
    const res = await rawRequest(server.url, 'PUT', signedPath(server, `${UUID}/chunked.txt`, 3), { 'Transfer-Encoding': 'chunked' }, Buffer.from('abc'));
    assert.equal(res.status, 411);
  });

  it('answers 413 over MaxUploadSize before reading the body', async () => {
    const size = 1024 * 1024 + 1;
    // Only the headers are sent: the answer must come without the body.
    const res = await exchange(server.url, [head('PUT', signedPath(server, `${UUID}/big.bin`, size), { 'Content-Length': size })], { until: 'head' });
    assert.match(res, /^HTTP\/1\.1 413 /);
    assert.match(res, /connection: close/i);
  });

  it('answers 100 Continue only to an accepted PUT', async () => {
    const ask = async (pathAndQuery: string) =>
      (await exchange(server.url, [head('PUT', pathAndQuery, { 'Content-Length': 3, Expect: '100-continue' })], { until: 'data' })).split('\r\n')[0];
    assert.equal(await ask(`/upload/${UUID}/continue.txt?v2=${'1'.repeat(64)}`), 'HTTP/1.1 403 Forbidden');
    assert.equal(await ask(signedPath(server, `${UUID}/continue.txt`, 3)), 'HTTP/1.1 100 Continue');
    // That client hung up after the 100: wait until the server has dropped its staging file.
    assert.ok(await server.waitForLog(/request\.rejected code=E_INCOMPLETE .*continue\.txt/));
  });

  it('answers 400 when fewer bytes arrive than announced, and leaves nothing behind', async () => {
    const slot = `${UUID}/short.bin`;
    const metaBefore = await filesUnder(path.join(server.storeDir, '.hmac'));
    // The client gives up: its side of the connection closes with 600 bytes missing.
    await exchange(server.url, [head('PUT', signedPath(server, slot, 1000), { 'Content-Length': 1000 }), randomBytes(400), 100], { end: true });
    // The server notices the short body when the connection ends.
    assert.match((await server.waitForLog(/request\.rejected .*short\.bin/)) ?? '', /code=E_INCOMPLETE status=400 /);
    assert.deepEqual(await filesUnder(path.join(server.storeDir, '.hmac')), metaBefore);
    assert.equal((await rawRequest(server.url, 'GET', `/upload/${UUID}/short.bin`)).status, 404);
    // The path is still free: a complete upload succeeds.
    assert.equal((await signedPut(server, slot, randomBytes(1000))).status, 201);
  });

  it('answers 405 with Allow to other methods and CORS preflights with 204', async () => {
    const post = await request(server.url).post(`/upload/${UUID}/x.txt`).send('abc');
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET, HEAD, PUT, OPTIONS');
    const options = await request(server.url).options(`/upload/${UUID}/x.txt`).set('Origin', 'https://chat.example').set('Access-Control-Request-Method', 'PUT');
    assert.equal(options.status, 204);
    assert.equal(options.headers['access-control-allow-origin'], '*');
    assert.equal(options.headers['access-control-allow-methods'], 'GET, HEAD, PUT, OPTIONS');
    assert.equal(options.headers['access-control-allow-headers'], 'Content-Type, Authorization');
    assert.equal(options.headers['access-control-max-age'], '7200');
  });

  it('puts CORS and safety headers on refusals too', async () => {
    const res = await rawRequest(server.url, 'PUT', `/upload/${UUID}/cors.txt`, { 'Content-Length': 1 }, Buffer.from('x'));
    assert.equal(res.status, 403);
    assert.equal(res.headers['access-control-allow-origin'], '*');
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
  });
});

describe('request log', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  it('logs one http.request line per request with the bytes that really arrived', async () => {
    const body = randomBytes(300_000);
    assert.equal((await signedPut(server, `${UUID}/logged.bin`, body)).status, 201);
    const line = server.logs.find((l) => l.includes('http.request') && l.includes('/logged.bin'));
    const match = /method=PUT path=\/upload\/\S+\/logged\.bin status=201 bytesIn=(\d+) bytesOut=(\d+) ms=\d+ client=127\.0\.0\.1$/.exec(line ?? '');
    assert.ok(match, line);
    // The body plus the request line and headers.
    assert.ok(Number(match[1]) > body.length && Number(match[1]) < body.length + 1000, match[1]);
  });
});

describe('client IP', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ TrustedProxies: ['10.0.0.0/8'] });
  });
  after(() => server.close());

  it('ignores X-Forwarded-For from a peer that is not a trusted proxy', async () => {
    await rawRequest(server.url, 'PUT', `/upload/${UUID}/spoof.txt`, { 'Content-Length': 1, 'X-Forwarded-For': '203.0.113.9' }, Buffer.from('x'));
    const line = server.logs.find((l) => l.includes('auth.failed') && l.includes('spoof.txt'));
    assert.match(line ?? '', / client=127\.0\.0\.1 /);
  });
});
