// Prosody's mod_http_file_share pointed at this server: PUT with "Authorization: Bearer <JWT>".
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { encodeSlotPath } from '../server/cli-sign.js';
import { fileShareToken, type FileShareClaims } from './helpers/jwt.js';
import { rawRequest } from './helpers/http.js';
import { exchange, head } from './helpers/socket.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';

function put(server: TestServer, slotPath: string, body: Buffer, token: string, headers: Record<string, string | number> = {}) {
  return rawRequest(server.url, 'PUT', `/upload/${encodeSlotPath(slotPath)}`, { 'Content-Length': body.length, Authorization: `Bearer ${token}`, ...headers }, body);
}

function claimsFor(slotPath: string, body: Buffer, extra: Partial<FileShareClaims> = {}): FileShareClaims {
  const [slot, filename] = slotPath.split('/');
  return { slot: slot!, filename: filename!, filesize: body.length, filetype: 'image/png', ...extra };
}

describe('Prosody file-share JWT slots', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ PreviousSecrets: ['rotated-out-soon'], MaxUploadSize: 1_000_000 });
  });
  after(() => server.close());

  it('stores a JWT upload under /upload/ with the token filetype and uploader, and serves it', async () => {
    const slotPath = `${randomUUID()}/holiday photo ü.png`;
    const body = randomBytes(5000);
    const token = await fileShareToken(TEST_SECRET, claimsFor(slotPath, body), { sub: 'alice@example.test' });
    // The request's own Content-Type does not override the signed filetype.
    const res = await put(server, slotPath, body, token, { 'Content-Type': 'text/html' });
    assert.equal(res.status, 201, res.body.toString());
    const got = await rawRequest(server.url, 'GET', `/upload/${encodeSlotPath(slotPath)}`);
    assert.deepEqual(got.body, body);
    assert.equal(got.headers['content-type'], 'image/png');
    const metaDir = path.join(server.storeDir, '.hmac', 'meta');
    const metas = await Promise.all(
      (await readdir(metaDir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => readFile(path.join(e.parentPath, e.name), 'utf8')),
    );
    assert.ok(metas.some((m) => (JSON.parse(m) as { owner?: string }).owner === 'alice@example.test'));
    // The uploader's JID is metadata, not an info-level log field.
    assert.ok(!server.logs.some((l) => / info /.test(l) && l.includes('alice@example.test')));
  });

  it('answers refusals with their status and a one-line reason a client can show', async () => {
    const slotPath = `${randomUUID()}/doc.png`;
    const body = randomBytes(100);
    const cases: Array<[string, string, Buffer, number, string]> = [
      ['expired', await fileShareToken(TEST_SECRET, claimsFor(slotPath, body), { expiresIn: -1 }), body, 403, 'Upload slot expired'],
      ['forged', await fileShareToken('not-the-secret', claimsFor(slotPath, body)), body, 403, 'Invalid upload token'],
      ['slot mismatch', await fileShareToken(TEST_SECRET, claimsFor(`${randomUUID()}/doc.png`, body)), body, 403, 'Upload slot does not match the URL'],
      ['size mismatch', await fileShareToken(TEST_SECRET, claimsFor(slotPath, body, { filesize: 99 })), body, 413, 'Size does not match the upload slot'],
    ];
    for (const [what, token, payload, status, reason] of cases) {
      const res = await put(server, slotPath, payload, token);
      assert.equal(res.status, status, what);
      assert.equal(res.body.toString(), `${reason}\n`, what);
    }
    assert.equal((await rawRequest(server.url, 'GET', `/upload/${slotPath}`)).status, 404);
    assert.ok(server.logs.some((l) => /warn auth\.failed client=127\.0\.0\.1 reason=slot_expired /.test(l)));
  });

  it('refuses a slot larger than MaxUploadSize even with a valid token', async () => {
    const slotPath = `${randomUUID()}/big.bin`;
    const token = await fileShareToken(TEST_SECRET, { slot: slotPath.split('/')[0]!, filename: 'big.bin', filesize: 2_000_000 });
    const res = await exchange(server.url, [head('PUT', `/upload/${slotPath}`, { Authorization: `Bearer ${token}`, 'Content-Length': 2_000_000 })], { until: 'head' });
    assert.match(res, /^HTTP\/1\.1 413 /);
  });

  it('answers 409 to a token reused for a file that exists', async () => {
    const slotPath = `${randomUUID()}/once.png`;
    const body = randomBytes(10);
    const token = await fileShareToken(TEST_SECRET, claimsFor(slotPath, body));
    assert.equal((await put(server, slotPath, body, token)).status, 201);
    assert.equal((await put(server, slotPath, body, token)).status, 409);
  });

  it('keeps nothing when fewer bytes arrive than filesize', async () => {
    const slotPath = `${randomUUID()}/short.png`;
    const token = await fileShareToken(TEST_SECRET, { slot: slotPath.split('/')[0]!, filename: 'short.png', filesize: 1000 });
    await exchange(server.url, [head('PUT', `/upload/${slotPath}`, { Authorization: `Bearer ${token}`, 'Content-Length': 1000 }), randomBytes(10)], { end: true });
    assert.match((await server.waitForLog(/request\.rejected .*short\.png/)) ?? '', /code=E_INCOMPLETE status=400 /);
    assert.deepEqual(await readdir(path.join(server.storeDir, '.hmac', 'staging')), []);
    assert.equal((await rawRequest(server.url, 'GET', `/upload/${slotPath}`)).status, 404);
  });

  it('accepts slots signed with a previous secret during a rotation', async () => {
    const slotPath = `${randomUUID()}/rotated.png`;
    const body = randomBytes(10);
    assert.equal((await put(server, slotPath, body, await fileShareToken('rotated-out-soon', claimsFor(slotPath, body)))).status, 201);
  });

  it('serves a file until its token expires field, then answers 410 while neighbours stay', async () => {
    const soon = `${randomUUID()}/soon.png`;
    const later = `${randomUUID()}/later.png`;
    const body = randomBytes(10);
    const inTwoSeconds = Math.floor(Date.now() / 1000) + 2;
    assert.equal((await put(server, soon, body, await fileShareToken(TEST_SECRET, claimsFor(soon, body, { expires: inTwoSeconds })))).status, 201);
    assert.equal((await put(server, later, body, await fileShareToken(TEST_SECRET, claimsFor(later, body, { expires: inTwoSeconds + 3600 })))).status, 201);
    assert.equal((await rawRequest(server.url, 'GET', `/upload/${soon}`)).status, 200);
    await new Promise((r) => setTimeout(r, (inTwoSeconds + 1) * 1000 - Date.now()));
    const gone = await rawRequest(server.url, 'GET', `/upload/${soon}`);
    assert.equal(gone.status, 410);
    assert.equal(gone.body.toString(), 'File expired\n');
    assert.equal((await rawRequest(server.url, 'GET', `/upload/${later}`)).status, 200);
  });
});

describe('Prosody file-share JWT after a rotation ends', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  it('refuses slots of the retired secret', async () => {
    const slotPath = `${randomUUID()}/late.png`;
    const body = randomBytes(10);
    const res = await put(server, slotPath, body, await fileShareToken('rotated-out-soon', claimsFor(slotPath, body)));
    assert.equal(res.status, 403);
  });
});
