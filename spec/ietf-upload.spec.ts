// The IETF resumable-upload protocol (draft-ietf-httpbis-resumable-upload) at TusPath: raw HTTP for interop
// versions 8 and 3, the 104 seen on the socket, resumption after a dropped connection, the problem types, and
// tus-js-client's 'ietf-draft-03' and 'ietf-draft-05' protocols end to end (bytes checked by GET).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { rawRequest, type RawResponse } from './helpers/http.js';
import { exchange, head } from './helpers/socket.js';
import { grantFor, tusUpload } from './helpers/tus-client.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const run = promisify(execFile);
const PARTIAL = 'application/partial-upload';
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const problemOf = (res: RawResponse) => JSON.parse(res.body.toString()) as Record<string, unknown>;

describe('IETF resumable uploads (draft-ietf-httpbis-resumable-upload)', function () {
  this.timeout(60_000);
  let server: TestServer;
  let auth: Record<string, string>;
  const v8 = () => ({ ...auth, 'Upload-Draft-Interop-Version': '8' });
  const path_ = (location: string) => new URL(location).pathname;

  before(async () => {
    server = await startTestServer({ TusUploadExpiry: '1h', MaxUploadSize: '64MiB' });
    auth = { Authorization: `Bearer ${await grantFor(server, { subject: 'alice', maxSize: 32 * 1024 * 1024 })}` };
  });
  after(() => server.close());

  const create = async (headers: Record<string, string | number>, body?: Buffer) => {
    const res = await rawRequest(server.url, 'POST', '/files/', { ...v8(), ...headers }, body);
    assert.equal(res.status, 201, res.body.toString());
    return { res, location: String(res.headers.location) };
  };
  const append = (location: string, offset: number, body: Buffer, done: boolean, extra: Record<string, string | number> = {}) =>
    rawRequest(server.url, 'PATCH', path_(location), { ...v8(), 'Upload-Offset': offset, 'Upload-Complete': done ? '?1' : '?0', 'Content-Type': PARTIAL, 'Content-Length': body.length, ...extra }, body);

  describe('interop version 8 over raw HTTP', () => {
    // "If the Upload-Complete header field is set to false [...] the server MUST include the Location response
    // header field pointing to the upload resource and MUST include the Upload-Limit header field".
    it('creates an upload without content, appends with ?0 then completes with ?1, and commits it', async () => {
      const { res, location } = await create({ 'Upload-Complete': '?0', 'Upload-Length': 10, 'Content-Disposition': 'inline; filename="report 1.txt"', 'Content-Type': 'text/plain' });
      assert.match(location, new RegExp(`^${server.url}/files/[0-9a-f]{32}$`));
      assert.equal(res.headers['upload-complete'], '?0');
      assert.match(String(res.headers['upload-limit']), /^max-size=33554432, max-age=\d+$/);
      // "A successful response to a HEAD request against an upload resource MUST include the offset [...] the
      // completeness state [...] the length [...] the limits [...] and SHOULD include Cache-Control: no-store".
      const state = await rawRequest(server.url, 'HEAD', path_(location), v8());
      assert.equal(state.status, 204);
      assert.equal(state.headers['upload-offset'], '0');
      assert.equal(state.headers['upload-complete'], '?0');
      assert.equal(state.headers['upload-length'], '10');
      assert.match(String(state.headers['upload-limit']), /max-size=33554432/);
      assert.equal(state.headers['cache-control'], 'no-store');
      const first = await append(location, 0, Buffer.from('abcd'), false);
      assert.equal(first.status, 204);
      assert.equal(first.headers['upload-complete'], '?0');
      assert.equal(first.headers['upload-offset'], '4');
      const last = await append(location, 4, Buffer.from('efghij'), true);
      assert.equal(last.status, 200, last.body.toString());
      assert.equal(last.headers['upload-complete'], '?1');
      const download = String(last.headers['x-download-url']);
      assert.match(download, /\/upload\/[0-9a-f]{32}\/report%201\.txt$/);
      const got = await rawRequest(server.url, 'GET', download);
      assert.equal(got.body.toString(), 'abcdefghij');
      assert.equal(got.headers['content-type'], 'text/plain');
      const done = await rawRequest(server.url, 'HEAD', path_(location), v8());
      assert.equal(done.headers['upload-complete'], '?1');
      assert.equal(done.headers['upload-offset'], '10');
      // "If the upload is already complete, the server MUST NOT modify the upload resource and MUST reject the request."
      const again = await append(location, 10, Buffer.from('x'), true);
      assert.equal(again.status, 400);
      assert.equal(again.headers['content-type'], 'application/problem+json');
      assert.equal(problemOf(again).type, 'https://iana.org/assignments/http-problem-types#completed-upload');
      assert.equal((await rawRequest(server.url, 'GET', download)).body.toString(), 'abcdefghij');
    });

    // "the server SHOULD announce the upload resource by sending an interim response with the 104 (Upload
    // Resumption Supported) status code [...] it MUST include Location [...] and [...] Upload-Limit".
    it('sends 104 Upload Resumption Supported with the Location before the final answer (read on the socket)', async () => {
      const body = Buffer.from('complete in one request');
      const answer = await exchange(server.url, [
        head('POST', '/files/', { ...v8(), Host: new URL(server.url).host, 'Upload-Complete': '?1', 'Content-Length': body.length, 'Content-Type': 'text/plain', 'Content-Disposition': 'inline; filename="one.txt"', Connection: 'close' }),
        body,
      ]);
      const [interim, final] = answer.split(/\r\n\r\n/);
      assert.match(interim!, /^HTTP\/1\.1 104 Upload Resumption Supported\r\n/);
      const location = /\r\nLocation: (\S+)/.exec(interim!)?.[1];
      assert.match(location ?? '', /\/files\/[0-9a-f]{32}$/);
      assert.match(interim!, /\r\nUpload-Limit: max-size=\d+/);
      assert.match(interim!, /\r\nUpload-Draft-Interop-Version: 8/);
      assert.match(final!, /^HTTP\/1\.1 201 Created\r\n/);
      assert.ok(final!.toLowerCase().includes(`location: ${location!.toLowerCase()}`), 'the same Location in the final answer');
      assert.match(final!, /upload-complete: \?1/i);
      const download = /x-download-url: (\S+)/i.exec(final!)?.[1];
      assert.equal((await rawRequest(server.url, 'GET', download!)).body.toString(), 'complete in one request');
    });

    it('sends no 104 to a request that came through a proxy, which may take it for the final answer', async () => {
      const answer = await exchange(server.url, [
        head('POST', '/files/', { ...v8(), Host: new URL(server.url).host, 'X-Forwarded-For': '192.0.2.10', 'Upload-Complete': '?1', 'Content-Length': 2, Connection: 'close' }),
        'ok',
      ]);
      assert.match(answer, /^HTTP\/1\.1 201 Created\r\n/);
      assert.ok(!answer.includes(' 104 '), answer);
    });

    // "If the server does not process the entire request content [...] the server SHOULD append as much of the
    // request content as possible to the upload resource, allowing the client to resume the upload from where
    // it was interrupted."
    it('resumes after a dropped connection from the offset HEAD reports', async () => {
      const data = randomBytes(256 * 1024);
      const sent = 96 * 1024;
      const location = await new Promise<string>((resolve, reject) => {
        const url = new URL(server.url);
        let text = '';
        const socket = net.connect(Number(url.port), url.hostname, () => {
          socket.write(head('POST', '/files/', { ...v8(), Host: url.host, 'Upload-Complete': '?1', 'Content-Length': data.length }));
          socket.write(data.subarray(0, sent));
        });
        socket.on('data', (chunk: Buffer) => {
          text += chunk.toString('latin1');
          const found = /^HTTP\/1\.1 104 [^\r]*\r\n(?:[^\r]*\r\n)*?Location: (\S+)\r\n/.exec(text);
          // The connection drops once the client has the upload's URL and the server some of the bytes.
          if (found) setTimeout(() => socket.destroy(), 300).unref();
          if (found) resolve(found[1]!);
        });
        socket.on('error', reject);
      });
      await new Promise((r) => setTimeout(r, 400));
      const state = await rawRequest(server.url, 'HEAD', path_(location), v8());
      assert.equal(state.status, 204);
      assert.equal(state.headers['upload-complete'], '?0');
      const offset = Number(state.headers['upload-offset']);
      // What reached the server before the drop is kept ("as much of the request content as possible").
      assert.ok(offset > 0 && offset <= sent, `${offset} of ${sent} bytes kept`);
      assert.equal(state.headers['upload-length'], String(data.length));
      const rest = await append(location, offset, data.subarray(offset), true);
      assert.equal(rest.status, 200, rest.body.toString());
      assert.equal(sha256((await rawRequest(server.url, 'GET', String(rest.headers['x-download-url']))).body), sha256(data));
    });

    // "If a server receives a new request to retrieve the offset [...] while a previous request for creating the
    // upload or appending representation data to the same upload resource is still ongoing, the server SHOULD
    // [...] terminate the previous request before processing the new request."
    it('ends an append still running when a HEAD for the same upload arrives, and reports what it kept', async () => {
      const { location } = await create({ 'Upload-Complete': '?0' });
      const url = new URL(server.url);
      const stalled = net.connect(Number(url.port), url.hostname);
      const closed = new Promise<void>((resolve) => stalled.on('close', () => resolve()));
      stalled.on('error', () => undefined);
      stalled.write(head('PATCH', path_(location), { ...v8(), Host: url.host, 'Upload-Offset': 0, 'Upload-Complete': '?0', 'Content-Type': PARTIAL, 'Content-Length': 100_000 }));
      stalled.write(randomBytes(40_000));
      // The rest never comes: to the client this connection looks dead.
      await new Promise((r) => setTimeout(r, 300));
      const started = Date.now();
      const state = await rawRequest(server.url, 'HEAD', path_(location), v8());
      assert.equal(state.status, 204);
      assert.ok(Date.now() - started < 5000, 'the HEAD did not wait for the stalled append');
      const offset = Number(state.headers['upload-offset']);
      assert.ok(offset > 0 && offset <= 40_000, String(offset));
      await closed;
      const rest = await append(location, offset, randomBytes(10), true);
      assert.equal(rest.status, 200, rest.body.toString());
    });

    // "If the Upload-Offset request header field value does not match the current offset, the server MUST reject
    // the request with a 409 (Conflict) status code. The response MUST include the correct offset".
    it('answers a mismatching offset with 409, the correct Upload-Offset and the problem type', async () => {
      const { location } = await create({ 'Upload-Complete': '?0' });
      assert.equal((await append(location, 0, Buffer.from('12345'), false)).status, 204);
      const res = await append(location, 2, Buffer.from('xx'), false);
      assert.equal(res.status, 409);
      assert.equal(res.headers['upload-offset'], '5');
      assert.equal(res.headers['upload-complete'], '?0');
      assert.equal(res.headers['content-type'], 'application/problem+json');
      assert.deepEqual(problemOf(res), {
        type: 'https://iana.org/assignments/http-problem-types#mismatching-upload-offset',
        title: 'Upload-Offset does not match the offset of the upload',
        'expected-offset': 5,
        'provided-offset': 2,
      });
      assert.equal((await rawRequest(server.url, 'HEAD', path_(location), v8())).headers['upload-offset'], '5');
    });

    // "If indicators (1) and (2) are both present in the same request, their indicated lengths MUST match."
    // "the server MUST prevent the offset from exceeding the upload length by rejecting the request once the
    // offset exceeds the length, marking the upload resource invalid".
    it('refuses inconsistent lengths, and a body beyond the length ends the upload', async () => {
      const inconsistent = await rawRequest(server.url, 'POST', '/files/', { ...v8(), 'Upload-Complete': '?1', 'Upload-Length': 10, 'Content-Length': 4 }, Buffer.from('abcd'));
      assert.equal(inconsistent.status, 400);
      assert.equal(problemOf(inconsistent).type, 'https://iana.org/assignments/http-problem-types#inconsistent-upload-length');
      const { location } = await create({ 'Upload-Complete': '?0', 'Upload-Length': 4 });
      const beyond = await append(location, 0, Buffer.from('abcdef'), false);
      assert.equal(beyond.status, 400);
      assert.equal(problemOf(beyond).type, 'https://iana.org/assignments/http-problem-types#inconsistent-upload-length');
      assert.equal((await rawRequest(server.url, 'HEAD', path_(location), v8())).status, 404);
      // Completing short of the declared length is inconsistent too.
      const short = await create({ 'Upload-Complete': '?0', 'Upload-Length': 4 });
      assert.equal((await append(short.location, 0, Buffer.from('ab'), true)).status, 400);
    });

    it('refuses an upload over the grant with 413 and Upload-Limit, and one that grows past it while being sent', async () => {
      const over = await rawRequest(server.url, 'POST', '/files/', { ...v8(), 'Upload-Complete': '?0', 'Upload-Length': 32 * 1024 * 1024 + 1 });
      assert.equal(over.status, 413);
      assert.match(String(over.headers['upload-limit']), /^max-size=33554432/);
      const small = { Authorization: `Bearer ${await grantFor(server, { subject: 'alice', maxSize: 8 })}`, 'Upload-Draft-Interop-Version': '8' };
      const created = await rawRequest(server.url, 'POST', '/files/', { ...small, 'Upload-Complete': '?0' });
      assert.equal(created.status, 201);
      const grown = await rawRequest(server.url, 'PATCH', path_(String(created.headers.location)), { ...small, 'Upload-Offset': 0, 'Upload-Complete': '?0', 'Content-Type': PARTIAL, 'Content-Length': 9 }, Buffer.from('123456789'));
      assert.equal(grown.status, 413);
      assert.match(String(grown.headers['upload-limit']), /^max-size=8/);
    });

    it('refuses a PATCH that is not application/partial-upload (415), a missing Upload-Complete (400) and an unknown interop version (400)', async () => {
      const { location } = await create({ 'Upload-Complete': '?0' });
      const typed = await append(location, 0, Buffer.from('a'), false, { 'Content-Type': 'application/offset+octet-stream' });
      assert.equal(typed.status, 415);
      const missing = await rawRequest(server.url, 'POST', '/files/', { ...v8() });
      assert.equal(missing.status, 400);
      assert.equal(missing.body.toString(), 'Upload-Complete must be ?0 or ?1\n');
      const unknown = await rawRequest(server.url, 'POST', '/files/', { ...auth, 'Upload-Draft-Interop-Version': '99', 'Upload-Complete': '?1' });
      assert.equal(unknown.status, 400);
      assert.match(unknown.body.toString(), /Unsupported Upload-Draft-Interop-Version/);
    });

    it('refuses malformed Upload-Length, Upload-Offset and Upload-Metadata with 400', async () => {
      const post = (headers: Record<string, string>) => rawRequest(server.url, 'POST', '/files/', { ...v8(), 'Upload-Complete': '?0', ...headers });
      assert.equal((await post({ 'Upload-Length': '-1' })).body.toString(), 'Upload-Length must be a non-negative integer\n');
      assert.equal((await post({ 'Upload-Metadata': 'filename !!notbase64' })).body.toString(), 'Invalid Upload-Metadata\n');
      const { location } = await create({ 'Upload-Complete': '?0' });
      const noOffset = await rawRequest(server.url, 'PATCH', path_(location), { ...v8(), 'Upload-Complete': '?0', 'Content-Type': PARTIAL, 'Content-Length': 1 }, Buffer.from('x'));
      assert.equal(noOffset.status, 400);
      assert.equal(noOffset.body.toString(), 'Upload-Offset must be a non-negative integer\n');
      assert.equal((await rawRequest(server.url, 'HEAD', path_(location), v8())).headers['upload-offset'], '0');
    });

    it('keeps the grant and the owner: 401 without a grant, 403 for another subject', async () => {
      const noGrant = await rawRequest(server.url, 'POST', '/files/', { 'Upload-Draft-Interop-Version': '8', 'Upload-Complete': '?0' });
      assert.equal(noGrant.status, 401);
      const { location } = await create({ 'Upload-Complete': '?0' });
      const bob = { Authorization: `Bearer ${await grantFor(server, { subject: 'bob' })}`, 'Upload-Draft-Interop-Version': '8' };
      assert.equal((await rawRequest(server.url, 'HEAD', path_(location), bob)).status, 403);
      assert.equal((await rawRequest(server.url, 'DELETE', path_(location), bob)).status, 403);
    });

    it('counts its uploads with the tus ones for file_server_tus_uploads_total', async () => {
      const before = { ...server.running.tus!.counters };
      const { location } = await create({ 'Upload-Complete': '?0' });
      assert.equal((await append(location, 0, Buffer.from('counted'), true)).status, 200);
      const cancelled = await create({ 'Upload-Complete': '?0' });
      assert.equal((await rawRequest(server.url, 'DELETE', path_(cancelled.location), v8())).status, 204);
      const after = server.running.tus!.counters;
      assert.deepEqual([after.created - before.created, after.finished - before.finished, after.terminated - before.terminated], [2, 1, 1]);
      assert.equal(after.bytesReceived - before.bytesReceived, 7);
    });

    // "Upon receiving a DELETE request, the server SHOULD deactivate the upload resource."
    it('cancels an upload with DELETE', async () => {
      const { location } = await create({ 'Upload-Complete': '?0' });
      assert.equal((await append(location, 0, Buffer.from('abc'), false)).status, 204);
      const res = await rawRequest(server.url, 'DELETE', path_(location), v8());
      assert.equal(res.status, 204);
      assert.equal((await rawRequest(server.url, 'HEAD', path_(location), v8())).status, 404);
    });

    // "When responding to an OPTIONS request [...] the server MUST include the Accept-Patch header field [...]
    // The Upload-Limit header field SHOULD be included".
    it('answers OPTIONS with Accept-Patch: application/partial-upload and Upload-Limit', async () => {
      const res = await rawRequest(server.url, 'OPTIONS', '/files/');
      assert.equal(res.headers['accept-patch'], PARTIAL);
      assert.match(String(res.headers['upload-limit']), /^max-size=67108864/);
      assert.ok(String(res.headers['access-control-allow-headers']).includes('Upload-Complete'));
    });
  });

  describe('interop version 3 (draft-01, Upload-Incomplete)', () => {
    const v3 = () => ({ ...auth, 'Upload-Draft-Interop-Version': '3' });

    it('creates with Upload-Incomplete: ?1, answers 201 to every append, and completes with a PATCH that has no Upload-Incomplete', async () => {
      const created = await rawRequest(server.url, 'POST', '/files/', { ...v3(), 'Upload-Incomplete': '?1', 'Content-Length': 3 }, Buffer.from('abc'));
      assert.equal(created.status, 201);
      assert.equal(created.headers['upload-incomplete'], '?1');
      assert.equal(created.headers['upload-offset'], '3');
      assert.equal(created.headers['upload-complete'], undefined);
      const location = path_(String(created.headers.location));
      const state = await rawRequest(server.url, 'HEAD', location, v3());
      assert.equal(state.status, 204);
      assert.equal(state.headers['upload-incomplete'], '?1');
      assert.equal(state.headers['upload-offset'], '3');
      const middle = await rawRequest(server.url, 'PATCH', location, { ...v3(), 'Upload-Offset': 3, 'Upload-Incomplete': '?1', 'Content-Length': 3 }, Buffer.from('def'));
      assert.equal(middle.status, 201);
      assert.equal(middle.headers['upload-incomplete'], '?1');
      // draft-01: a PATCH "MUST" carry Upload-Incomplete: ?1 unless it is the last one.
      const last = await rawRequest(server.url, 'PATCH', location, { ...v3(), 'Upload-Offset': 6, 'Content-Length': 2 }, Buffer.from('gh'));
      assert.equal(last.status, 201, last.body.toString());
      assert.equal(last.headers['upload-incomplete'], '?0');
      assert.equal((await rawRequest(server.url, 'GET', String(last.headers['x-download-url']))).body.toString(), 'abcdefgh');
      assert.equal((await rawRequest(server.url, 'HEAD', location, v3())).headers['upload-incomplete'], '?0');
    });

    it('sends the 104 with Upload-Draft-Interop-Version: 3', async () => {
      const answer = await exchange(server.url, [head('POST', '/files/', { ...v3(), Host: new URL(server.url).host, 'Upload-Incomplete': '?0', 'Content-Length': 1, Connection: 'close' }), 'x']);
      assert.match(answer, /^HTTP\/1\.1 104 Upload Resumption Supported\r\n(?:[^\r]*\r\n)*Upload-Draft-Interop-Version: 3\r\n/);
      assert.match(answer, /\r\n\r\nHTTP\/1\.1 201 Created\r\n/);
    });
  });

  for (const protocol of ['ietf-draft-03', 'ietf-draft-05'] as const) {
    describe(`tus-js-client with protocol '${protocol}'`, () => {
      const download = async (url: string) => Buffer.from(await (await fetch(url)).arrayBuffer());

      it('uploads a whole file in one request', async () => {
        const data = randomBytes(1024 * 1024 + 3);
        const { downloadUrl } = await tusUpload(server, data, auth.Authorization!.slice(7), { protocol, metadata: { filename: 'whole.bin' } });
        assert.equal(sha256(await download(downloadUrl)), sha256(data));
      });

      it('uploads in chunks, and with data in the creation request', async () => {
        const data = randomBytes(1024 * 1024 + 5);
        const chunked = await tusUpload(server, data, auth.Authorization!.slice(7), { protocol, chunkSize: 200 * 1024 });
        assert.equal(sha256(await download(chunked.downloadUrl)), sha256(data));
        const early = await tusUpload(server, data, auth.Authorization!.slice(7), { protocol, chunkSize: 300 * 1024, uploadDataDuringCreation: true });
        assert.equal(sha256(await download(early.downloadUrl)), sha256(data));
      });

      it('uploads with a deferred length from a stream', async () => {
        const data = randomBytes(700 * 1024 + 1);
        const { downloadUrl } = await tusUpload(server, data, auth.Authorization!.slice(7), { protocol, stream: true, uploadLengthDeferred: true, chunkSize: 256 * 1024 });
        assert.equal(sha256(await download(downloadUrl)), sha256(data));
      });

      it('resumes from a new process an upload whose first process stopped halfway', async () => {
        const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-ietf-resume-'));
        try {
          const data = randomBytes(2 * 1024 * 1024);
          const dataFile = path.join(dir, 'data.bin');
          await writeFile(dataFile, data);
          const client = path.resolve(import.meta.dirname, 'fixtures/tus-js-resume.ts');
          const args = ['--import', 'tsx', client, `${server.url}/files/`, auth.Authorization!.slice(7), dataFile, path.join(dir, 'urls.json'), protocol];
          const firstUrl = (await run(process.execPath, [...args, 'first'])).stdout.trim();
          const [url, resumedAt, downloadUrl] = (await run(process.execPath, [...args, 'resume'])).stdout.trim().split(' ');
          // The same upload, continued from where the server was, not from zero.
          assert.equal(url, firstUrl);
          assert.ok(Number(resumedAt) >= data.length / 2, `resumed at ${resumedAt}`);
          assert.match(downloadUrl!, /\/upload\/[0-9a-f]{32}\/resumed\.bin$/);
          assert.equal(sha256(await download(downloadUrl!)), sha256(data));
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      });
    });
  }
});
