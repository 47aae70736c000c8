// tus 1.0.0 rules over raw HTTP (https://tus.io/protocols/resumable-upload): uploads without a filename,
// Upload-Concat echoed, final uploads, Upload-Expires on every answer, termination of finished uploads.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { grantFor } from './helpers/tus-client.js';
import { rawRequest, type RawResponse } from './helpers/http.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const TUS = { 'Tus-Resumable': '1.0.0' };
const OCTETS = 'application/offset+octet-stream';
const meta = (fields: Record<string, string>) =>
  Object.entries(fields)
    .map(([k, v]) => `${k} ${Buffer.from(v).toString('base64')}`)
    .join(',');
const idOf = (location: string) => location.slice(location.lastIndexOf('/') + 1);

/** One test server and a grant, with the few tus requests the tests speak. */
function tusSession(options: Record<string, unknown>) {
  const session = {
    server: undefined as unknown as TestServer,
    headers: {} as Record<string, string>,
    post(extra: Record<string, string | number>, body?: Buffer) {
      return rawRequest(session.server.url, 'POST', '/files/', { ...session.headers, ...extra }, body);
    },
    patch(location: string, offset: number, body: Buffer, extra: Record<string, string | number> = {}) {
      return rawRequest(session.server.url, 'PATCH', location, { ...session.headers, 'Upload-Offset': offset, 'Content-Type': OCTETS, 'Content-Length': body.length, ...extra }, body);
    },
    head(location: string, extra: Record<string, string> = {}) {
      return rawRequest(session.server.url, 'HEAD', location, { ...session.headers, ...extra });
    },
    get(path: string) {
      return rawRequest(session.server.url, 'GET', path);
    },
  };
  before(async () => {
    session.server = await startTestServer(options);
    session.headers = { ...TUS, Authorization: `Bearer ${await grantFor(session.server, { subject: 'alice' })}` };
  });
  after(() => session.server.close());
  return session;
}

function created(res: RawResponse): string {
  assert.equal(res.status, 201, res.body.toString());
  return String(res.headers.location);
}

describe('tus rules: uploads without a filename', () => {
  describe('with AllowedExtensions empty', () => {
    const tus = tusSession({});

    // tus 1.0.0, Creation: "The Client MAY supply the Upload-Metadata header [...] The Server MAY decide to
    // ignore or use this information to further process the request or to reject it."
    it('accepts an upload without Upload-Metadata ("The Client MAY supply the Upload-Metadata header") and commits it as <id>', async () => {
      const location = created(await tus.post({ 'Upload-Length': 3 }));
      const res = await tus.patch(location, 0, Buffer.from('abc'));
      assert.equal(res.status, 204, res.body.toString());
      assert.equal(res.headers['x-download-url'], `/upload/${idOf(location)}/${idOf(location)}`);
      assert.equal((await tus.get(String(res.headers['x-download-url']))).body.toString(), 'abc');
    });

    it('names an upload with a filetype but no filename <id>.<extension> for a common type ("The Server MAY decide to ignore or use this information")', async () => {
      const location = created(await tus.post({ 'Upload-Length': 4, 'Upload-Metadata': meta({ filetype: 'image/png' }) }));
      const res = await tus.patch(location, 0, Buffer.from([0x89, 0x50, 0x4e, 0x47]));
      assert.equal(res.headers['x-download-url'], `/upload/${idOf(location)}/${idOf(location)}.png`);
      const got = await tus.get(String(res.headers['x-download-url']));
      assert.equal(got.headers['content-type'], 'image/png');
      // An uncommon type adds nothing.
      const other = created(await tus.post({ 'Upload-Length': 1, 'Upload-Metadata': meta({ filetype: 'application/x-odd' }) }));
      assert.equal((await tus.patch(other, 0, Buffer.from('x'))).headers['x-download-url'], `/upload/${idOf(other)}/${idOf(other)}`);
    });

    it('still requires the name of a grant with a filename claim', async () => {
      const named = { ...TUS, Authorization: `Bearer ${await grantFor(tus.server, { filename: 'only.txt' })}` };
      const res = await rawRequest(tus.server.url, 'POST', '/files/', { ...named, 'Upload-Length': 1 });
      assert.equal(res.status, 403);
      const typed = await rawRequest(tus.server.url, 'POST', '/files/', { ...named, 'Upload-Length': 1, 'Upload-Metadata': meta({ filetype: 'text/plain' }) });
      assert.equal(typed.status, 403);
    });
  });

  describe('with AllowedExtensions set', () => {
    const tus = tusSession({ AllowedExtensions: ['.jpg', '.txt'] });

    it('refuses at creation with 400 when the derived name has no allowed extension ("[...] or to reject it")', async () => {
      const variants: Array<Record<string, string>> = [{}, { 'Upload-Metadata': meta({ filetype: 'image/png' }) }, { 'Upload-Metadata': meta({ other: 'x' }) }];
      for (const extra of variants) {
        const res = await tus.post({ 'Upload-Length': 1, ...extra });
        assert.equal(res.status, 400);
        assert.equal(res.body.toString(), 'Upload-Metadata has no filename, and its filetype gives no allowed extension\n');
      }
    });

    it('accepts a filetype whose extension is allowed', async () => {
      const location = created(await tus.post({ 'Upload-Length': 2, 'Upload-Metadata': meta({ filetype: 'text/plain' }) }));
      const res = await tus.patch(location, 0, Buffer.from('ok'));
      assert.equal(res.headers['x-download-url'], `/upload/${idOf(location)}/${idOf(location)}.txt`);
    });

    it('keeps 403 for a named file with a disallowed extension', async () => {
      assert.equal((await tus.post({ 'Upload-Length': 1, 'Upload-Metadata': meta({ filename: 'evil.exe' }) })).status, 403);
    });
  });
});

describe('tus rules: concatenation', () => {
  const tus = tusSession({});

  async function finishedPartial(body: Buffer): Promise<{ location: string; res: RawResponse }> {
    const res = await tus.post({ 'Upload-Length': body.length, 'Upload-Concat': 'partial' });
    const location = created(res);
    assert.equal((await tus.patch(location, 0, body)).status, 204);
    return { location, res };
  }

  // "The Upload-Concat request and response header MUST be set in both partial and final upload creation
  // requests." and "Response to HEAD request against partial or final upload MUST include the Upload-Concat
  // header and its value as received in the upload creation request."
  it('echoes Upload-Concat: partial on creation and HEAD of a partial ("MUST include the Upload-Concat header")', async () => {
    const { location, res } = await finishedPartial(Buffer.from('abc'));
    assert.equal(res.headers['upload-concat'], 'partial');
    const head = await tus.head(location);
    assert.equal(head.status, 200);
    assert.equal(head.headers['upload-concat'], 'partial');
    // An ordinary upload says nothing about concatenation.
    const plain = created(await tus.post({ 'Upload-Length': 1, 'Upload-Metadata': meta({ filename: 'p.txt' }) }));
    assert.equal((await tus.head(plain)).headers['upload-concat'], undefined);
  });

  it('echoes Upload-Concat: final;<urls> as the client named them, on creation and HEAD ("its value as received in the upload creation request")', async () => {
    const a = await finishedPartial(Buffer.from('hello'));
    const b = await finishedPartial(Buffer.from(' world'));
    const absolute = `${tus.server.url}${b.location}`;
    const value = `final;${a.location} ${absolute}`;
    const final = await tus.post({ 'Upload-Concat': value, 'Upload-Metadata': meta({ filename: 'hw.txt' }) });
    const location = created(final);
    assert.equal(final.headers['upload-concat'], value);
    const head = await tus.head(location);
    assert.equal(head.status, 200);
    assert.equal(head.headers['upload-concat'], value);
    assert.equal(head.headers['upload-length'], '11');
    assert.equal(head.headers['upload-offset'], '11');
    assert.equal((await tus.get(String(final.headers['x-download-url']))).body.toString(), 'hello world');
  });

  it('answers 400 to a final upload with Upload-Length ("The Client MUST NOT include the Upload-Length header in the final upload creation")', async () => {
    const a = await finishedPartial(Buffer.from('xy'));
    const res = await tus.post({ 'Upload-Concat': `final;${a.location}`, 'Upload-Length': 2, 'Upload-Metadata': meta({ filename: 'l.txt' }) });
    assert.equal(res.status, 400);
    assert.equal(res.body.toString(), 'Upload-Length must not be sent with Upload-Concat: final\n');
    // The partial is still there to be joined properly.
    created(await tus.post({ 'Upload-Concat': `final;${a.location}`, 'Upload-Metadata': meta({ filename: 'l.txt' }) }));
  });

  it('answers 403 to a PATCH against a final upload ("The Server MUST respond with the 403 Forbidden status to PATCH requests against a final upload URL")', async () => {
    const a = await finishedPartial(Buffer.from('12'));
    const final = await tus.post({ 'Upload-Concat': `final;${a.location}`, 'Upload-Metadata': meta({ filename: 'f.txt' }) });
    const location = created(final);
    for (const offset of [2, 0]) assert.equal((await tus.patch(location, offset, Buffer.from('!!'))).status, 403);
    assert.equal((await tus.get(String(final.headers['x-download-url']))).body.toString(), '12');
  });
});

describe('tus rules: Upload-Expires', () => {
  const tus = tusSession({ TusUploadExpiry: '1h' });
  const expiresOf = (res: RawResponse) => res.headers['upload-expires'];

  // tus 1.0.0, Expiration: "If the expiration is known at the creation, the Upload-Expires header MUST be
  // included in the response to the initial POST request." "This header MUST be included in every PATCH
  // response if the upload is going to expire." "The Client SHOULD use this header to determine if an upload
  // is still valid before attempting to resume the upload."
  it('carries Upload-Expires on creation, HEAD and every PATCH of an unfinished upload ("MUST be included in every PATCH response")', async () => {
    const res = await tus.post({ 'Upload-Length': 6, 'Upload-Metadata': meta({ filename: 'e.txt' }) });
    const location = created(res);
    const expires = expiresOf(res);
    assert.ok(expires, 'creation');
    const at = Date.parse(String(expires));
    assert.ok(at > Date.now() + 3500_000 && at <= Date.now() + 3600_000, String(expires));
    assert.equal(expiresOf(await tus.head(location)), expires, 'HEAD');
    const first = await tus.patch(location, 0, Buffer.from('abc'));
    assert.equal(first.status, 204);
    assert.equal(expiresOf(first), expires, 'PATCH');
    const wrong = await tus.patch(location, 1, Buffer.from('x'));
    assert.equal(wrong.status, 409);
    assert.equal(expiresOf(wrong), expires, 'refused PATCH');
    assert.equal(expiresOf(await tus.head(location)), expires, 'HEAD after a PATCH');
    // "[...] the time after which the unfinished upload expires": a finished upload has none.
    const last = await tus.patch(location, 3, Buffer.from('def'));
    assert.equal(last.status, 204);
    assert.equal(expiresOf(last), undefined, 'finishing PATCH');
    assert.equal(expiresOf(await tus.head(location)), undefined, 'HEAD of a finished upload');
  });

  it('carries it for a deferred length and for a partial until it is finished ("If the expiration is known at the creation")', async () => {
    const deferred = await tus.post({ 'Upload-Defer-Length': 1, 'Upload-Metadata': meta({ filename: 'd.txt' }) });
    assert.ok(expiresOf(deferred));
    assert.equal(expiresOf(await tus.head(created(deferred))), expiresOf(deferred));
    const partial = await tus.post({ 'Upload-Length': 2, 'Upload-Concat': 'partial' });
    const location = created(partial);
    assert.ok(expiresOf(partial));
    assert.equal(expiresOf(await tus.head(location)), expiresOf(partial));
    const done = await tus.patch(location, 0, Buffer.from('ok'));
    assert.equal(done.status, 204);
    assert.equal(expiresOf(done), undefined);
    assert.equal(expiresOf(await tus.head(location)), undefined);
  });
});

describe('tus rules: termination of a finished upload', () => {
  const tus = tusSession({ DeduplicationEnabled: true });
  const del = (location: string, headers = tus.headers) => rawRequest(tus.server.url, 'DELETE', location, headers);
  const staging = () => readdir(path.join(tus.server.storeDir, '.hmac', 'tus'));
  const blobs = async () => {
    const entries = await readdir(path.join(tus.server.storeDir, '.hmac', 'blobs'), { recursive: true, withFileTypes: true }).catch(() => []);
    return entries.filter((e) => e.isFile() && !e.name.endsWith('.json')).map((e) => e.name);
  };

  async function finished(body: Buffer, filename: string): Promise<{ location: string; downloadUrl: string }> {
    const location = created(await tus.post({ 'Upload-Length': body.length, 'Upload-Metadata': meta({ filename }) }));
    const res = await tus.patch(location, 0, body);
    assert.equal(res.status, 204, res.body.toString());
    return { location, downloadUrl: String(res.headers['x-download-url']) };
  }

  // tus 1.0.0, Termination: "When receiving a DELETE request for an existing upload the Server SHOULD free
  // associated resources and MUST respond with the 204 No Content status confirming that the upload was
  // terminated. For all future requests to this URL, the Server SHOULD respond with the 404 Not Found or 410
  // Gone status."
  it("answers 204 to its owner's DELETE and frees the record, the staging link and the committed file (\"MUST respond with the 204 No Content status\")", async () => {
    const body = Buffer.from('same bytes, twice');
    const one = await finished(body, 'one.txt');
    const two = await finished(body, 'two.txt');
    assert.equal((await blobs()).length, 1);
    const res = await del(one.location);
    assert.equal(res.status, 204);
    assert.equal(res.headers['tus-resumable'], '1.0.0');
    assert.equal((await tus.head(one.location)).status, 404);
    assert.equal((await tus.get(one.location)).status, 404);
    assert.equal((await tus.get(one.downloadUrl)).status, 404);
    const names = await staging();
    assert.ok(!names.some((n) => n.startsWith(idOf(one.location))), names.join(' '));
    // The other copy keeps the shared blob; the last one releases it.
    assert.equal((await tus.get(two.downloadUrl)).body.toString(), 'same bytes, twice');
    assert.equal((await blobs()).length, 1);
    assert.equal((await del(two.location)).status, 204);
    assert.deepEqual(await blobs(), []);
    assert.equal((await del(two.location)).status, 404);
  });

  it("refuses another subject's DELETE of a finished upload with 403 and keeps it", async () => {
    const done = await finished(Buffer.from('mine'), 'mine.txt');
    const bob = { ...TUS, Authorization: `Bearer ${await grantFor(tus.server, { subject: 'bob' })}` };
    assert.equal((await del(done.location, bob)).status, 403);
    assert.equal((await tus.get(done.downloadUrl)).body.toString(), 'mine');
    assert.equal((await tus.head(done.location)).status, 200);
  });

  it('terminates a finished partial upload too ("SHOULD free associated resources")', async () => {
    const location = created(await tus.post({ 'Upload-Length': 2, 'Upload-Concat': 'partial' }));
    assert.equal((await tus.patch(location, 0, Buffer.from('pp'))).status, 204);
    assert.equal((await del(location)).status, 204);
    assert.equal((await tus.head(location)).status, 404);
  });
});
