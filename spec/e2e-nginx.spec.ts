// The shipped nginx configuration in front of the server: TLS, streamed bodies both ways, Range, tus, and the
// client IP carried in X-Forwarded-For from a trusted proxy.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import https from 'node:https';
import { signedPath } from './helpers/http.js';
import { startNginx, type RunningNginx } from './helpers/nginx.js';
import { grantFor } from './helpers/tus-client.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** An HTTPS request through nginx (self-signed certificate), optionally from another loopback address. */
function viaNginx(nginx: RunningNginx, method: string, path: string, headers: Record<string, string | number> = {}, body?: Buffer, localAddress = '127.0.0.1'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: nginx.port, method, path, headers, rejectUnauthorized: false, localAddress, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('end to end: behind the shipped nginx configuration', function () {
  this.timeout(120_000);
  let server: TestServer;
  let nginx: RunningNginx;
  before(async function () {
    this.timeout(600_000);
    server = await startTestServer({ MaxUploadSize: '64MiB' });
    nginx = await startNginx(Number(new URL(server.url).port));
  });
  after(async () => {
    await nginx?.stop();
    await server?.close();
  });

  it('passes a 20 MB legacy PUT through and serves it back whole and by range', async () => {
    const data = randomBytes(20 * 1024 * 1024);
    const put = await viaNginx(nginx, 'PUT', signedPath(server, 'nginx/big.bin', data.length), { 'Content-Length': data.length }, data);
    assert.equal(put.status, 201, put.body.toString());
    const got = await viaNginx(nginx, 'GET', '/upload/nginx/big.bin');
    assert.equal(got.status, 200);
    assert.equal(sha256(got.body), sha256(data));
    const range = await viaNginx(nginx, 'GET', '/upload/nginx/big.bin', { Range: 'bytes=1000-1999' });
    assert.equal(range.status, 206);
    assert.deepEqual(range.body, data.subarray(1000, 2000));
    assert.equal(range.headers['x-content-type-options'], 'nosniff');
  });

  it('logs the real client address that nginx forwards, for fail2ban', async () => {
    // The client connects from 127.0.0.7; the server sees nginx (127.0.0.1) and believes its X-Forwarded-For.
    const res = await viaNginx(nginx, 'PUT', `/upload/nginx/x.txt?v=${'0'.repeat(64)}`, { 'Content-Length': 1 }, Buffer.from('x'), '127.0.0.7');
    assert.equal(res.status, 403);
    assert.match((await server.waitForLog(/auth\.failed .*nginx\/x\.txt/)) ?? '', /warn auth\.failed client=127\.0\.0\.7 /);
  });

  it("carries a tus upload (POST, PATCH, HEAD) with an absolute Location on nginx's address", async () => {
    const grant = await grantFor(server);
    const headers = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${grant}` };
    const data = randomBytes(3 * 1024 * 1024);
    const created = await viaNginx(nginx, 'POST', '/files/', { ...headers, 'Upload-Length': data.length, 'Upload-Metadata': `filename ${Buffer.from('t.bin').toString('base64')}` });
    assert.equal(created.status, 201);
    // nginx forwards Host and X-Forwarded-Proto; the server believes them from a trusted proxy.
    const { origin, pathname: location } = new URL(String(created.headers.location));
    assert.equal(origin, `https://127.0.0.1:${nginx.port}`);
    assert.match(location, /^\/files\/[0-9a-f]{32}$/);
    const half = data.length / 2;
    const first = await viaNginx(nginx, 'PATCH', location, { ...headers, 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': half }, data.subarray(0, half));
    assert.equal(first.status, 204);
    assert.equal((await viaNginx(nginx, 'HEAD', location, headers)).headers['upload-offset'], String(half));
    const last = await viaNginx(nginx, 'PATCH', location, { ...headers, 'Upload-Offset': half, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': half }, data.subarray(half));
    assert.equal(last.status, 204);
    const download = new URL(String(last.headers['x-download-url']));
    assert.equal(download.origin, `https://127.0.0.1:${nginx.port}`);
    const got = await viaNginx(nginx, 'GET', download.pathname);
    assert.equal(sha256(got.body), sha256(data));
  });

  // nginx 1.22 takes an upstream 1xx other than 101 for the final answer and sends the real one as its body; the
  // server sends no 104 through it, so the answer a client gets is the real one.
  it('carries an IETF resumable upload (interop 8) with its real 201, and an append', async () => {
    const grant = await grantFor(server);
    const headers = { 'Upload-Draft-Interop-Version': '8', Authorization: `Bearer ${grant}` };
    const created = await viaNginx(nginx, 'POST', '/files/', { ...headers, 'Upload-Complete': '?0', 'Content-Length': 5 }, Buffer.from('hello'));
    assert.equal(created.status, 201, created.body.toString());
    assert.equal(created.headers['upload-offset'], '5');
    const location = new URL(String(created.headers.location));
    assert.equal(location.origin, `https://127.0.0.1:${nginx.port}`);
    const done = await viaNginx(nginx, 'PATCH', location.pathname, { ...headers, 'Upload-Offset': 5, 'Upload-Complete': '?1', 'Content-Type': 'application/partial-upload', 'Content-Length': 6 }, Buffer.from(' world'));
    assert.equal(done.status, 200, done.body.toString());
    const got = await viaNginx(nginx, 'GET', new URL(String(done.headers['x-download-url'])).pathname);
    assert.equal(got.body.toString(), 'hello world');
  });
});
