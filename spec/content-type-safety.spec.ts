// The media-type rule end to end: what an uploader names as the type never makes a download render as HTML,
// and every answer of the server carries nosniff and a sandboxing CSP.
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { signSlot } from '../middleware/slot-verifier-hmac.js';
import { exchange, head } from './helpers/socket.js';
import { fileShareToken } from './helpers/jwt.js';
import { rawRequest, signedPut, type RawResponse } from './helpers/http.js';
import { grantFor } from './helpers/tus-client.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';

const TUS = { 'Tus-Resumable': '1.0.0' };
const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

function assertSafe(res: RawResponse): void {
  assert.equal(res.headers['x-content-type-options'], 'nosniff');
  assert.equal(res.headers['content-security-policy'], "default-src 'none'; sandbox");
}

describe('content types chosen by uploaders', () => {
  let server: TestServer;
  let grant: string;
  before(async () => {
    server = await startTestServer();
    grant = await grantFor(server);
  });
  after(() => server.close());

  async function tusUpload(filetype: string, body: Buffer): Promise<{ status: number; location?: string; text: string }> {
    const res = await rawRequest(
      server.url,
      'POST',
      '/files/',
      { ...TUS, Authorization: `Bearer ${grant}`, 'Upload-Length': body.length, 'Upload-Metadata': `filename ${b64('page.png')},filetype ${b64(filetype)}`, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': body.length },
      body,
    );
    return { status: res.status, text: res.body.toString(), ...(res.headers.location ? { location: res.headers.location } : {}) };
  }

  it('serves a tus upload typed "image/png,text/html" as a download of unknown bytes', async () => {
    const up = await tusUpload('image/png,text/html', Buffer.from('<script>alert(1)</script>'));
    assert.equal(up.status, 201, up.text);
    const res = await rawRequest(server.url, 'GET', up.location!);
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'application/octet-stream');
    assert.match(res.headers['content-disposition'] ?? '', /^attachment/);
    assertSafe(res);
  });

  const legacyCases: Array<[string, string, boolean]> = [
    ['image/png,text/html', 'application/octet-stream', false],
    ['image/png, text/html', 'application/octet-stream', false],
    ['text/html', 'text/html', false],
    ['image/svg+xml', 'image/svg+xml', false],
    ['application/xhtml+xml', 'application/xhtml+xml', false],
    ['IMAGE/PNG', 'image/png', true],
    ['text/plain; charset=utf-8', 'text/plain; charset=utf-8', true],
    ['text/plain; charset="utf-8, text/html"', 'text/plain', true],
    ['video/mp4', 'video/mp4', true],
    ['not a type', 'application/octet-stream', false],
  ];
  legacyCases.forEach(([sent, served, inline], i) => {
    it(`serves a v-slot upload sent as ${JSON.stringify(sent)} as ${served}, ${inline ? 'inline' : 'attachment'}`, async () => {
      const slot = `ct/${i}/f.bin`;
      const body = Buffer.from('<html><meta http-equiv="refresh" content="0;url=https://example.invalid"></html>');
      // v signs no type: any Content-Type is accepted with it.
      const put = await signedPut(server, slot, body, { protocol: 'v', contentType: sent });
      assert.equal(put.status, 201, put.body.toString());
      const res = await rawRequest(server.url, 'GET', `/upload/${slot}`);
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-type'], served);
      assert.match(res.headers['content-disposition'] ?? '', inline ? /^inline/ : /^attachment/);
      assertSafe(res);
    });
  });

  it('puts nosniff and the sandbox CSP on every answer: 404, refusals, OPTIONS, tus', async () => {
    const answers = [
      await rawRequest(server.url, 'GET', '/nothing-here'),
      await rawRequest(server.url, 'GET', '/upload/none/such.txt'),
      await rawRequest(server.url, 'PUT', '/upload/x/y.txt', { 'Content-Length': 0 }),
      await rawRequest(server.url, 'OPTIONS', '/upload/x/y.txt'),
      await rawRequest(server.url, 'POST', '/files/', { ...TUS, 'Upload-Length': 1 }),
      await rawRequest(server.url, 'OPTIONS', '/files/'),
      await rawRequest(server.url, 'POST', '/files/', { ...TUS, Authorization: `Bearer ${grant}`, 'Upload-Length': 1, 'Upload-Metadata': `filename ${b64('x.bin')}` }),
    ];
    assert.deepEqual(answers.map((a) => a.status), [404, 404, 403, 204, 401, 204, 201]);
    for (const res of answers) assertSafe(res);
  });

  it('refuses a tus filetype with control characters at creation, and stores nothing', async () => {
    for (const filetype of ['text/plain\r\nX-Evil: 1', 'image/png\u0001', 'text/html\u007f']) {
      const up = await tusUpload(filetype, Buffer.from('abc'));
      assert.equal(up.status, 400, `${JSON.stringify(filetype)}: ${up.text}`);
      assert.match(up.text, /content type/i);
    }
  });

  it('refuses a file-share token whose filetype has control characters', async () => {
    const body = Buffer.from('hello');
    const token = await fileShareToken(TEST_SECRET, { slot: 'slot-ct', filename: 'a.txt', filesize: body.length, filetype: 'text/plain\r\nSet-Cookie: x=1' });
    const res = await rawRequest(server.url, 'PUT', '/upload/slot-ct/a.txt', { Authorization: `Bearer ${token}`, 'Content-Length': body.length }, body);
    assert.equal(res.status, 400);
    assert.equal((await rawRequest(server.url, 'GET', '/upload/slot-ct/a.txt')).status, 404);
  });

  it('refuses a PUT whose Content-Type has a control character, and stores nothing', async () => {
    const body = 'abcd';
    const mac = signSlot(TEST_SECRET, 'v', 'ctl/f.txt', body.length, '');
    const answer = await exchange(server.url, [head('PUT', `/upload/ctl/f.txt?v=${mac}`, { 'Content-Length': body.length, 'Content-Type': 'text/plain\u0001' }), body]);
    assert.match(answer, /^HTTP\/1\.1 400 /);
    assert.equal((await rawRequest(server.url, 'GET', '/upload/ctl/f.txt')).status, 404);
  });

  it('serves a file whose stored type is broken (an older release stored it) as a download, not a 500', async () => {
    const body = Buffer.from('old');
    assert.equal((await signedPut(server, 'old/broken.txt', body, { protocol: 'v' })).status, 201);
    const metaRoot = path.join(server.storeDir, '.hmac', 'meta');
    const { readdir, readFile } = await import('node:fs/promises');
    for (const entry of await readdir(metaRoot, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const file = path.join(entry.parentPath, entry.name);
      const meta = JSON.parse(await readFile(file, 'utf8')) as { path: string; contentType: string };
      if (meta.path !== 'old/broken.txt') continue;
      meta.contentType = 'text/html\r\nX-Injected: 1';
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, JSON.stringify(meta));
    }
    for (const method of ['GET', 'HEAD']) {
      const res = await rawRequest(server.url, method, '/upload/old/broken.txt');
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-type'], 'application/octet-stream');
      assert.equal(res.headers['x-injected'], undefined);
    }
  });
});
