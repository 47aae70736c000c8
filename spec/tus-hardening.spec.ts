// tus answers a hostile or unusual client gets right: grant limits, malformed concatenation, Expect:
// 100-continue, and what HEAD reveals of an upload.
import assert from 'node:assert/strict';
import net from 'node:net';
import { SignJWT } from 'jose';
import { grantKey, GRANT_AUDIENCE } from '../middleware/upload-grant.js';
import { runCli } from './helpers/cli.js';
import { rawRequest } from './helpers/http.js';
import { grantFor } from './helpers/tus-client.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const TUS = { 'Tus-Resumable': '1.0.0' };
const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
const metadataOf = (header: string | string[] | undefined): Record<string, string> =>
  Object.fromEntries<string>(
    String(header ?? '')
      .split(',')
      .filter(Boolean)
      .map((pair) => {
        const [key, value = ''] = pair.trim().split(' ');
        return [key ?? '', Buffer.from(value, 'base64').toString('utf8')] as const;
      }),
  );

/** Sends head, waits for the interim 100 (or fails after waitMs), then sends body; resolves with the whole answer. */
function expectContinue(url: string, headText: string, body: Buffer, waitMs = 3000): Promise<{ sawContinue: boolean; answer: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    let text = '';
    let sawContinue = false;
    const socket = net.connect(Number(port), hostname, () => socket.write(headText));
    const timer = setTimeout(() => socket.destroy(), waitMs);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (!sawContinue && text.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) {
        sawContinue = true;
        text = text.slice('HTTP/1.1 100 Continue\r\n\r\n'.length);
        clearTimeout(timer);
        socket.write(body);
      }
      if (/\r\n\r\n/.test(text) && /^HTTP\/1\.1 [2-5]\d\d/.test(text)) socket.end();
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ sawContinue, answer: text });
    });
    socket.on('error', reject);
  });
}

describe('tus hardening', () => {
  let server: TestServer;
  let grant: string;
  const auth = (g: string) => ({ Authorization: `Bearer ${g}` });

  before(async () => {
    server = await startTestServer({ MaxUploadSize: '10MiB' });
    grant = await grantFor(server);
  });
  after(() => server.close());

  const zeroGrant = () =>
    new SignJWT({ max_size: 0 })
      .setProtectedHeader({ alg: 'HS256' })
      .setAudience(GRANT_AUDIENCE)
      .setSubject('alice')
      .setExpirationTime('1h')
      .sign(grantKey(server.config.GrantSecret, server.config.Secret));

  it('refuses a grant with max_size 0 (the library would read it as "no limit"), also for a deferred length', async () => {
    const token = await zeroGrant();
    const lengths: Array<Record<string, number>> = [{ 'Upload-Length': 1024 ** 3 }, { 'Upload-Defer-Length': 1 }];
    for (const lengthHeaders of lengths) {
      const res = await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(token), ...lengthHeaders, 'Upload-Metadata': `filename ${b64('big.bin')}` });
      assert.equal(res.status, 401);
      assert.match(res.body.toString(), /max_size, a positive integer/);
    }
  });

  it('refuses grants with a negative, fractional or non-numeric max_size', async () => {
    for (const maxSize of [-1, 1.5, '100', null]) {
      const token = await new SignJWT({ max_size: maxSize })
        .setProtectedHeader({ alg: 'HS256' })
        .setAudience(GRANT_AUDIENCE)
        .setSubject('alice')
        .setExpirationTime('1h')
        .sign(grantKey(server.config.GrantSecret, server.config.Secret));
      const res = await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(token), 'Upload-Length': 1, 'Upload-Metadata': `filename ${b64('a.bin')}` });
      assert.equal(res.status, 401, String(maxSize));
    }
  });

  it('the grant command refuses --max-size 0', async () => {
    const result = await runCli(['grant', '--subject', 'alice', '--max-size', '0', '--ttl', '1h', '--config', '/dev/null']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /max-size must be at least 1 byte/);
  });

  for (const header of ['final;http://[', 'final;http://[::1', 'final; ', 'final;%', 'final;http://a b']) {
    it(`answers 400 to Upload-Concat: ${header}`, async () => {
      const res = await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(grant), 'Upload-Concat': header, 'Upload-Metadata': `filename ${b64('c.bin')}` });
      assert.equal(res.status, 400, res.body.toString());
    });
  }

  it('answers Expect: 100-continue on a creation-with-upload POST once the gates passed', async () => {
    const body = Buffer.from('0123456789');
    const headText =
      `POST /files/ HTTP/1.1\r\nHost: test\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer ${grant}\r\nUpload-Length: ${body.length}\r\n` +
      `Upload-Metadata: filename ${b64('e.bin')}\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`;
    const { sawContinue, answer } = await expectContinue(server.url, headText, body);
    assert.ok(sawContinue, `no 100 Continue; got ${JSON.stringify(answer)}`);
    assert.match(answer, /^HTTP\/1\.1 201 /);
  });

  it('answers Expect: 100-continue on a PATCH, and refuses without it when the grant is wrong', async () => {
    const created = await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(grant), 'Upload-Length': 4, 'Upload-Metadata': `filename ${b64('p.bin')}` });
    assert.equal(created.status, 201);
    const patchHead = (token: string) =>
      `PATCH ${created.headers.location} HTTP/1.1\r\nHost: test\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer ${token}\r\nUpload-Offset: 0\r\n` +
      `Content-Type: application/offset+octet-stream\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`;
    const ok = await expectContinue(server.url, patchHead(grant), Buffer.from('abcd'));
    assert.ok(ok.sawContinue, `no 100 Continue; got ${JSON.stringify(ok.answer)}`);
    assert.match(ok.answer, /^HTTP\/1\.1 204 /);
    const refused = await expectContinue(server.url, patchHead('forged'), Buffer.from('abcd'), 1000);
    assert.equal(refused.sawContinue, false);
    assert.match(refused.answer, /^HTTP\/1\.1 401 /);
  });

  it("shows its owner only the client's own metadata on HEAD, never the server's keys", async () => {
    const metadata = `filename ${b64('h.bin')},filetype ${b64('image/png')},album ${b64('holidays')},hfs_owner ${b64('mallory')}`;
    const created = await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(grant), 'Upload-Length': 3, 'Upload-Metadata': metadata });
    assert.equal(created.status, 201);
    const headRes = await rawRequest(server.url, 'HEAD', created.headers.location!, { ...TUS, ...auth(grant) });
    assert.equal(headRes.status, 200);
    assert.deepEqual(metadataOf(headRes.headers['upload-metadata']), { filename: 'h.bin', filetype: 'image/png', album: 'holidays' });
    // The upload still belongs to its grant's subject, not to the name a client tried to set.
    const patch = await rawRequest(server.url, 'PATCH', created.headers.location!, { ...TUS, ...auth(grant), 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': 3 }, Buffer.from('xyz'));
    assert.equal(patch.status, 204);
    const after = await rawRequest(server.url, 'HEAD', created.headers.location!, { ...TUS, ...auth(grant) });
    assert.deepEqual(metadataOf(after.headers['upload-metadata']), { filename: 'h.bin', filetype: 'image/png', album: 'holidays' });
  });
});
