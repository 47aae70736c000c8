// The tus door over raw HTTP: protocol rules the stock library gets wrong, grants, owners, expiry.
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { runCli } from './helpers/cli.js';
import { exchange, head } from './helpers/socket.js';
import { grantFor } from './helpers/tus-client.js';
import { rawRequest, signedPut, type RawResponse } from './helpers/http.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const TUS = { 'Tus-Resumable': '1.0.0' };
const downloadUrlOf = (res: RawResponse) => String(res.headers['x-download-url']);
const meta = (fields: Record<string, string>) =>
  Object.entries(fields)
    .map(([k, v]) => `${k} ${Buffer.from(v).toString('base64')}`)
    .join(',');

describe('tus protocol over raw HTTP', () => {
  let server: TestServer;
  let alice: string;
  let bob: string;
  const auth = (grant: string) => ({ Authorization: `Bearer ${grant}` });

  async function create(grant: string, length: number, filename = 'a.jpg', extra: Record<string, string | number> = {}): Promise<string> {
    const res = await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(grant), 'Upload-Length': length, 'Upload-Metadata': meta({ filename }), ...extra });
    assert.equal(res.status, 201, res.body.toString());
    return res.headers.location!;
  }

  function patch(grant: string, location: string, offset: number, body: Buffer, extra: Record<string, string | number> = {}) {
    return rawRequest(server.url, 'PATCH', location, { ...TUS, ...auth(grant), 'Upload-Offset': offset, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': body.length, ...extra }, body);
  }

  before(async () => {
    server = await startTestServer({ AllowedExtensions: ['.jpg', '.txt'], MaxUploadSize: '10MiB' });
    alice = await grantFor(server, { subject: 'alice', maxSize: 1024 * 1024 });
    bob = await grantFor(server, { subject: 'bob' });
  });
  after(() => server.close());

  it('answers 412 with Tus-Version to an unsupported or missing Tus-Resumable', async () => {
    for (const headers of [{ 'Tus-Resumable': '0.2.2' }, {}] as Array<Record<string, string>>) {
      const res = await rawRequest(server.url, 'POST', '/files/', { ...headers, ...auth(alice), 'Upload-Length': 1 });
      assert.equal(res.status, 412);
      assert.equal(res.headers['tus-version'], '1.0.0');
      assert.equal(res.headers['access-control-allow-origin'], '*');
    }
  });

  it('answers 415 to a body that is not application/offset+octet-stream', async () => {
    const location = await create(alice, 4, 'm.txt');
    assert.equal((await patch(alice, location, 0, Buffer.from('abcd'), { 'Content-Type': 'text/plain' })).status, 415);
    const post = await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(alice), 'Upload-Length': 4, 'Upload-Metadata': meta({ filename: 'm.txt' }), 'Content-Type': 'text/plain' }, Buffer.from('abcd'));
    assert.equal(post.status, 415);
    assert.equal((await patch(alice, location, 0, Buffer.from('abcd'))).status, 204);
  });

  it('answers 409 to a PATCH at the wrong offset and keeps the offset', async () => {
    const location = await create(alice, 10);
    assert.equal((await patch(alice, location, 0, Buffer.from('01234'))).status, 204);
    assert.equal((await patch(alice, location, 3, Buffer.from('34567'))).status, 409);
    const head = await rawRequest(server.url, 'HEAD', location, { ...TUS, ...auth(alice) });
    assert.equal(head.headers['upload-offset'], '5');
  });

  const grantFailures: Array<[string, () => Promise<Record<string, string>>]> = [
    ['a missing grant', () => Promise.resolve({})],
    ['a malformed grant', () => Promise.resolve({ Authorization: 'Bearer not-a-jwt' })],
    ['an expired grant', async () => auth(await grantFor(server, { ttlSeconds: -5 }))],
    ['a forged grant', async () => auth(await new SignJWT({ max_size: 10 }).setProtectedHeader({ alg: 'HS256' }).setAudience('hmac-file-server:tus').setSubject('alice').setExpirationTime('1h').sign(new TextEncoder().encode('guess')))],
    ['a token for another audience', async () => auth(await new SignJWT({ max_size: 10 }).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setExpirationTime('1h').sign(new TextEncoder().encode(server.config.Secret)))],
    ['a grant without max_size', async () => auth(await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setAudience('hmac-file-server:tus').setSubject('alice').setExpirationTime('1h').sign(new TextEncoder().encode('x')))],
  ];
  for (const [what, headers] of grantFailures) {
    it(`answers 401 with WWW-Authenticate to ${what}, and logs it for fail2ban`, async () => {
      const before = server.logs.filter((l) => l.includes('auth.failed')).length;
      const res = await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...(await headers()), 'Upload-Length': 1, 'Upload-Metadata': meta({ filename: 'x.txt' }) });
      assert.equal(res.status, 401);
      assert.match(res.headers['www-authenticate'] ?? '', /^Bearer realm="hmac-file-server", error="invalid_token"/);
      assert.equal(server.logs.filter((l) => /warn auth\.failed client=127\.0\.0\.1 reason=grant_/.test(l)).length, before + 1);
    });
  }

  it('needs a grant on HEAD, PATCH and DELETE too, and accepts it as ?grant=', async () => {
    const location = await create(alice, 4);
    for (const method of ['HEAD', 'PATCH', 'DELETE']) assert.equal((await rawRequest(server.url, method, location, TUS)).status, 401, method);
    assert.equal((await rawRequest(server.url, 'HEAD', `${location}?grant=${alice}`, TUS)).status, 200);
  });

  it("refuses another subject's grant with 403", async () => {
    const location = await create(alice, 4);
    assert.equal((await rawRequest(server.url, 'HEAD', location, { ...TUS, ...auth(bob) })).status, 403);
    assert.equal((await patch(bob, location, 0, Buffer.from('abcd'))).status, 403);
    assert.equal((await rawRequest(server.url, 'DELETE', location, { ...TUS, ...auth(bob) })).status, 403);
    assert.equal((await patch(alice, location, 0, Buffer.from('abcd'))).status, 204);
  });

  it("enforces the grant's max_size, also for a length declared later", async () => {
    const res = await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(alice), 'Upload-Length': 1024 * 1024 + 1, 'Upload-Metadata': meta({ filename: 'big.jpg' }) });
    assert.equal(res.status, 413);
    const created = await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(alice), 'Upload-Defer-Length': 1, 'Upload-Metadata': meta({ filename: 'later.jpg' }) });
    assert.equal(created.status, 201);
    const deferred = created.headers.location!;
    const declare = await patch(alice, deferred, 0, Buffer.alloc(0), { 'Upload-Length': 1024 * 1024 + 1 });
    assert.equal(declare.status, 413);
    // Bob's grant allows more, but never more than MaxUploadSize.
    const tooBig = await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(bob), 'Upload-Length': 10 * 1024 * 1024 + 1, 'Upload-Metadata': meta({ filename: 'b.jpg' }) });
    assert.equal(tooBig.status, 413);
  });

  it('binds the file name when the grant names one', async () => {
    const named = await grantFor(server, { filename: 'only.txt' });
    const other = await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(named), 'Upload-Length': 1, 'Upload-Metadata': meta({ filename: 'other.txt' }) });
    assert.equal(other.status, 403);
    assert.equal((await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(named), 'Upload-Length': 1, 'Upload-Metadata': meta({ filename: 'only.txt' }) })).status, 201);
  });

  it('commits under the grant prefix', async () => {
    const prefixed = await grantFor(server, { prefix: 'team/alice' });
    const location = await create(prefixed, 3, 'p.txt');
    const res = await patch(prefixed, location, 0, Buffer.from('abc'));
    assert.match(downloadUrlOf(res), new RegExp(`^${server.url}/upload/team/alice/[0-9a-f]{32}/p\\.txt$`));
    assert.equal((await rawRequest(server.url, 'GET', downloadUrlOf(res))).body.toString(), 'abc');
  });

  it('honours X-HTTP-Method-Override', async () => {
    const location = await create(alice, 3, 'o.txt');
    const patched = await rawRequest(server.url, 'POST', location, { ...TUS, ...auth(alice), 'X-HTTP-Method-Override': 'PATCH', 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': 3 }, Buffer.from('xyz'));
    assert.equal(patched.status, 204);
    const head = await rawRequest(server.url, 'POST', location, { ...TUS, ...auth(alice), 'X-HTTP-Method-Override': 'HEAD' });
    assert.equal(head.headers['upload-offset'], '3');
  });

  it('decides a disallowed extension the same way as a legacy PUT', async () => {
    assert.equal((await signedPut(server, 'x/evil.exe', Buffer.from('MZ'))).status, 403);
    const res = await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(alice), 'Upload-Length': 2, 'Upload-Metadata': meta({ filename: 'evil.exe' }) });
    assert.equal(res.status, 403);
    assert.equal(res.body.toString(), 'File extension not allowed\n');
    assert.equal((await signedPut(server, 'x/GOOD.JPG', Buffer.from('ok'))).status, 201);
    assert.equal((await rawRequest(server.url, 'POST', '/files/', { ...TUS, ...auth(alice), 'Upload-Length': 2, 'Upload-Metadata': meta({ filename: 'GOOD.JPG' }) })).status, 201);
  });

  it('refuses ids that are not ours before they reach the store', async () => {
    const location = await create(alice, 4);
    // file-store takes ids as file names: "<id>.json" would delete the upload's record.
    assert.equal((await rawRequest(server.url, 'DELETE', `${location}.json`, { ...TUS, ...auth(alice) })).status, 404);
    assert.equal((await rawRequest(server.url, 'HEAD', '/files/..%2f..%2fconfig', { ...TUS, ...auth(alice) })).status, 404);
    assert.equal((await rawRequest(server.url, 'HEAD', location, { ...TUS, ...auth(alice) })).status, 200);
  });

  it('terminates an unfinished upload, and a finished one with its committed file', async () => {
    const open = await create(alice, 4);
    assert.equal((await rawRequest(server.url, 'DELETE', open, { ...TUS, ...auth(alice) })).status, 204);
    assert.equal((await rawRequest(server.url, 'HEAD', open, { ...TUS, ...auth(alice) })).status, 404);
    const done = await create(alice, 2, 'done.txt');
    const finished = await patch(alice, done, 0, Buffer.from('ok'));
    // Its staging link is never written again.
    assert.equal((await patch(alice, done, 2, Buffer.from('!!'))).status, 409);
    assert.equal((await rawRequest(server.url, 'GET', downloadUrlOf(finished))).body.toString(), 'ok');
    assert.equal((await rawRequest(server.url, 'DELETE', done, { ...TUS, ...auth(alice) })).status, 204);
    assert.equal((await rawRequest(server.url, 'GET', downloadUrlOf(finished))).status, 404);
  });

  it('answers GET of an unfinished upload only to its owner, and never with partial bytes', async () => {
    const location = await create(alice, 4);
    assert.equal((await rawRequest(server.url, 'GET', location)).status, 401);
    assert.equal((await rawRequest(server.url, 'GET', location, auth(bob))).status, 403);
    assert.equal((await rawRequest(server.url, 'GET', location, auth(alice))).status, 404);
  });

  it('sweeps abandoned staging uploads and leaves committed files', async () => {
    const abandoned = await create(alice, 100, 'abandoned.jpg');
    assert.equal((await patch(alice, abandoned, 0, randomBytes(50))).status, 204);
    const done = await create(alice, 3, 'kept.txt');
    const finished = await patch(alice, done, 0, Buffer.from('yes'));
    const removed = await server.running.tus!.sweep(Date.now() + 48 * 3600 * 1000);
    assert.ok(removed >= 2, String(removed));
    assert.equal((await rawRequest(server.url, 'HEAD', abandoned, { ...TUS, ...auth(alice) })).status, 404);
    assert.equal((await rawRequest(server.url, 'GET', downloadUrlOf(finished))).body.toString(), 'yes');
    assert.deepEqual(await readdir(path.join(server.storeDir, '.hmac', 'tus')), []);
  });
});

describe('tus expiration', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ TusUploadExpiry: '1s' });
  });
  after(() => server.close());

  it('announces Upload-Expires and answers 410 to a PATCH after it; the sweep then removes the upload', async () => {
    const grant = await grantFor(server);
    const headers = { ...TUS, Authorization: `Bearer ${grant}` };
    const created = await rawRequest(server.url, 'POST', '/files/', { ...headers, 'Upload-Length': 4, 'Upload-Metadata': meta({ filename: 'late.txt' }) });
    const announced = String(created.headers['upload-expires']);
    const expires = Date.parse(announced);
    assert.ok(expires > Date.now() - 1000 && expires <= Date.now() + 2000, announced);
    await new Promise((r) => setTimeout(r, 1500));
    const late = await rawRequest(server.url, 'PATCH', created.headers.location!, { ...headers, 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': 4 }, Buffer.from('late'));
    assert.equal(late.status, 410);
    assert.equal(await server.running.tus!.sweep(), 1);
    assert.equal((await rawRequest(server.url, 'HEAD', created.headers.location!, headers)).status, 404);
  });
});

describe('tus checksum and concatenation extensions', () => {
  let server: TestServer;
  let grant: string;
  const digest = (algorithm: string, body: Buffer) => createHash(algorithm).update(body).digest('base64');
  let headers: Record<string, string>;

  async function create(length: number, extra: Record<string, string | number> = {}): Promise<string> {
    const res = await rawRequest(server.url, 'POST', '/files/', { ...headers, 'Upload-Length': length, 'Upload-Metadata': meta({ filename: 'c.bin' }), ...extra });
    assert.equal(res.status, 201, res.body.toString());
    return res.headers.location!;
  }
  const patch = (location: string, offset: number, body: Buffer, extra: Record<string, string> = {}) =>
    rawRequest(server.url, 'PATCH', location, { ...headers, 'Upload-Offset': offset, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': body.length, ...extra }, body);
  const offsetOf = async (location: string) => (await rawRequest(server.url, 'HEAD', location, headers)).headers['upload-offset'];

  before(async () => {
    server = await startTestServer();
    grant = await grantFor(server);
    headers = { ...TUS, Authorization: `Bearer ${grant}` };
  });
  after(() => server.close());

  it('advertises exactly the extensions it implements, and the checksum algorithms', async () => {
    const res = await rawRequest(server.url, 'OPTIONS', '/files/');
    assert.equal(res.status, 204);
    const extensions = String(res.headers['tus-extension']).split(',');
    const implemented = ['creation', 'creation-with-upload', 'creation-defer-length', 'termination', 'expiration', 'checksum', 'checksum-trailer', 'concatenation', 'concatenation-unfinished'];
    assert.deepEqual([...extensions].sort(), [...implemented].sort());
    assert.equal(res.headers['tus-checksum-algorithm'], 'md5,sha1,sha256');
    assert.equal(res.headers['tus-version'], '1.0.0');
    assert.equal(res.headers['tus-max-size'], String(server.config.MaxUploadSize));
    assert.match(String(res.headers['access-control-allow-headers']), /Authorization/);
  });

  it('accepts chunks whose sha1, sha256 and md5 match', async () => {
    const location = await create(30);
    let offset = 0;
    for (const algorithm of ['sha1', 'sha256', 'md5']) {
      const chunk = randomBytes(10);
      const res = await patch(location, offset, chunk, { 'Upload-Checksum': `${algorithm} ${digest(algorithm, chunk)}` });
      assert.equal(res.status, 204, `${algorithm}: ${res.body.toString()}`);
      offset += 10;
    }
    assert.equal(await offsetOf(location), '30');
  });

  it('answers 460 to a wrong checksum and discards the chunk', async () => {
    const location = await create(20);
    const first = randomBytes(10);
    assert.equal((await patch(location, 0, first)).status, 204);
    const bad = await patch(location, 10, randomBytes(10), { 'Upload-Checksum': `sha256 ${digest('sha256', Buffer.from('other'))}` });
    assert.equal(bad.status, 460);
    assert.equal(await offsetOf(location), '10');
    const second = randomBytes(10);
    const res = await patch(location, 10, second, { 'Upload-Checksum': `sha1 ${digest('sha1', second)}` });
    assert.equal(res.status, 204);
    const got = await rawRequest(server.url, 'GET', String(res.headers['x-download-url']));
    assert.deepEqual(got.body, Buffer.concat([first, second]));
  });

  it('answers 400 to an unknown checksum algorithm and keeps the offset', async () => {
    const location = await create(10);
    const res = await patch(location, 0, randomBytes(10), { 'Upload-Checksum': `crc32 ${Buffer.from('abcd').toString('base64')}` });
    assert.equal(res.status, 400);
    assert.equal(await offsetOf(location), '0');
  });

  /** A chunked PATCH whose Upload-Checksum comes as a trailer (what Node's client sends with addTrailers). */
  const patchWithTrailer = (location: string, offset: number, body: Buffer, trailer: Record<string, string>, extra: Record<string, string> = {}) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const { hostname, port } = new URL(server.url);
      const req = http.request(
        {
          host: hostname,
          port,
          method: 'PATCH',
          path: new URL(location).pathname,
          agent: false,
          headers: { ...headers, 'Upload-Offset': offset, 'Content-Type': 'application/offset+octet-stream', 'Transfer-Encoding': 'chunked', Trailer: 'Upload-Checksum', ...extra },
        },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        },
      );
      req.on('error', reject);
      req.write(body.subarray(0, 3));
      req.write(body.subarray(3));
      req.addTrailers(trailer);
      req.end();
    });

  // tus 1.0.0, Checksum: "If the hash cannot be calculated at the beginning of the upload, it MAY be included as a
  // trailer. If the Server can handle trailers, this behavior MUST be announced by adding checksum-trailer to the
  // Tus-Extension header."
  it('checks an Upload-Checksum sent as a trailer of a chunked PATCH ("it MAY be included as a trailer")', async () => {
    const location = await create(20);
    const first = randomBytes(10);
    const ok = await patchWithTrailer(location, 0, first, { 'Upload-Checksum': `sha256 ${digest('sha256', first)}` });
    assert.equal(ok.status, 204, ok.body);
    assert.equal(await offsetOf(location), '10');
    // "In the first two cases the uploaded chunk MUST be discarded, and the upload and its offset MUST NOT be updated."
    const wrong = await patchWithTrailer(location, 10, randomBytes(10), { 'Upload-Checksum': `md5 ${digest('md5', Buffer.from('other'))}` });
    assert.equal(wrong.status, 460);
    assert.equal(await offsetOf(location), '10');
    const unknown = await patchWithTrailer(location, 10, randomBytes(10), { 'Upload-Checksum': `crc32 ${Buffer.from('abcd').toString('base64')}` });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.body, 'Unsupported checksum algorithm\n');
    assert.equal(await offsetOf(location), '10');
    // Announced, never sent: nothing to check the chunk against, so it is discarded too.
    const missing = await patchWithTrailer(location, 10, randomBytes(10), {});
    assert.equal(missing.status, 400);
    assert.equal(missing.body, 'Upload-Checksum trailer announced but not sent\n');
    assert.equal(await offsetOf(location), '10');
    const second = randomBytes(10);
    const last = await patchWithTrailer(location, 10, second, { 'Upload-Checksum': `sha1 ${digest('sha1', second)}` });
    assert.equal(last.status, 204, last.body);
    assert.deepEqual((await rawRequest(server.url, 'GET', location)).body, Buffer.concat([first, second]));
  });

  it('refuses an announced trailer without chunked transfer ("only allowed in chunked transfers")', async () => {
    const location = await create(10);
    // Raw: Node's client will not send a Trailer header with a Content-Length.
    const answer = await exchange(server.url, [
      head('PATCH', new URL(location).pathname, { ...headers, 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': 10, Trailer: 'Upload-Checksum', Connection: 'close' }),
      randomBytes(10),
    ]);
    assert.match(answer, /^HTTP\/1\.1 400 /);
    assert.ok(answer.endsWith('An Upload-Checksum trailer needs Transfer-Encoding: chunked\n'), answer);
    assert.equal(await offsetOf(location), '0');
  });

  it('joins finished partials into one committed file; partials alone commit nothing', async () => {
    const parts = [randomBytes(1000), randomBytes(1), randomBytes(5000)];
    const locations: string[] = [];
    const committedBefore = await readdir(path.join(server.storeDir, 'upload'));
    for (const part of parts) {
      const location = await create(part.length, { 'Upload-Concat': 'partial' });
      assert.equal((await patch(location, 0, part)).status, 204);
      locations.push(location);
    }
    assert.deepEqual(await readdir(path.join(server.storeDir, 'upload')), committedBefore);
    const final = await rawRequest(server.url, 'POST', '/files/', { ...headers, 'Upload-Concat': `final;${locations.join(' ')}`, 'Upload-Metadata': meta({ filename: 'joined.bin' }) });
    assert.equal(final.status, 201, final.body.toString());
    assert.match(String(final.headers.location), new RegExp(`^${server.url}/files/[0-9a-f]{32}$`));
    const got = await rawRequest(server.url, 'GET', String(final.headers['x-download-url']));
    assert.deepEqual(got.body, Buffer.concat(parts));
    assert.deepEqual((await rawRequest(server.url, 'GET', String(final.headers.location))).body, Buffer.concat(parts));
  });

  it("refuses to join another subject's partial or a non-partial", async () => {
    const unfinished = await create(10, { 'Upload-Concat': 'partial' });
    const join = (locations: string[], as = headers) =>
      rawRequest(server.url, 'POST', '/files/', { ...as, 'Upload-Concat': `final;${locations.join(' ')}`, 'Upload-Metadata': meta({ filename: 'j.bin' }) });
    const bobs = { ...TUS, Authorization: `Bearer ${await grantFor(server, { subject: 'bob' })}` };
    assert.equal((await join([unfinished], bobs)).status, 403);
    const whole = await create(1);
    assert.equal((await join([whole])).status, 400);
    assert.equal((await join(['/files/../etc'])).status, 400);
  });
});

describe('tus downloads and the grant command', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  it('serves a finished upload with CORS and survives clients that hang up early', async () => {
    const grant = await grantFor(server);
    const headers = { ...TUS, Authorization: `Bearer ${grant}` };
    const body = randomBytes(2 * 1024 * 1024);
    const created = await rawRequest(server.url, 'POST', '/files/', { ...headers, 'Upload-Length': body.length, 'Upload-Metadata': meta({ filename: 'big.bin' }), 'Content-Type': 'application/offset+octet-stream' }, body);
    assert.equal(created.status, 201);
    const location = String(created.headers.location);
    await Promise.all(Array.from({ length: 10 }, () => exchange(server.url, [head('GET', location)], { until: 'data' })));
    const res = await rawRequest(server.url, 'GET', location, { Range: 'bytes=-4' });
    assert.equal(res.status, 206);
    assert.deepEqual(res.body, body.subarray(-4));
    assert.equal(res.headers['access-control-allow-origin'], '*');
  });

  it('hmac-file-server grant prints a grant the server accepts', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-grant-'));
    try {
      const configFile = path.join(dir, 'config.toml');
      await writeFile(configFile, `Secret = "${server.config.Secret}"\n`);
      const result = await runCli(['grant', '--config', configFile, '--subject', 'carol', '--max-size', '1KB', '--ttl', '10m']);
      assert.equal(result.code, 0, result.stderr);
      const headers = { ...TUS, Authorization: `Bearer ${result.stdout.trim()}` };
      const ok = await rawRequest(server.url, 'POST', '/files/', { ...headers, 'Upload-Length': 1024, 'Upload-Metadata': meta({ filename: 'g.txt' }) });
      assert.equal(ok.status, 201);
      const tooBig = await rawRequest(server.url, 'POST', '/files/', { ...headers, 'Upload-Length': 1025, 'Upload-Metadata': meta({ filename: 'g.txt' }) });
      assert.equal(tooBig.status, 413);
      assert.equal((await runCli(['grant', '--config', configFile, '--subject', 'carol'])).code, 2);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('tus door switched off', () => {
  it('is not mounted when ResumableUploadsEnabled and ChunkedUploadsEnabled are both false', async () => {
    const server = await startTestServer({ ResumableUploadsEnabled: false, ChunkedUploadsEnabled: false });
    try {
      const res = await rawRequest(server.url, 'POST', '/files/', { ...TUS, Authorization: `Bearer ${await grantFor(server)}`, 'Upload-Length': 1 });
      assert.equal(res.status, 404);
      assert.equal(server.running.tus, undefined);
    } finally {
      await server.close();
    }
  });
});
