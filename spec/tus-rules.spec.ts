// tus 1.0.0 rules over raw HTTP (https://tus.io/protocols/resumable-upload): uploads without a filename,
// Upload-Concat echoed, final uploads, Upload-Expires on every answer, termination of finished uploads.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
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
      assert.equal(res.headers['x-download-url'], `${tus.server.url}/upload/${idOf(location)}/${idOf(location)}`);
      assert.equal((await tus.get(String(res.headers['x-download-url']))).body.toString(), 'abc');
    });

    it('names an upload with a filetype but no filename <id>.<extension> for a common type ("The Server MAY decide to ignore or use this information")', async () => {
      const location = created(await tus.post({ 'Upload-Length': 4, 'Upload-Metadata': meta({ filetype: 'image/png' }) }));
      const res = await tus.patch(location, 0, Buffer.from([0x89, 0x50, 0x4e, 0x47]));
      assert.equal(res.headers['x-download-url'], `${tus.server.url}/upload/${idOf(location)}/${idOf(location)}.png`);
      const got = await tus.get(String(res.headers['x-download-url']));
      assert.equal(got.headers['content-type'], 'image/png');
      // An uncommon type adds nothing.
      const other = created(await tus.post({ 'Upload-Length': 1, 'Upload-Metadata': meta({ filetype: 'application/x-odd' }) }));
      assert.equal((await tus.patch(other, 0, Buffer.from('x'))).headers['x-download-url'], `${tus.server.url}/upload/${idOf(other)}/${idOf(other)}`);
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
      assert.equal(res.headers['x-download-url'], `${tus.server.url}/upload/${idOf(location)}/${idOf(location)}.txt`);
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
    // One as a path, one as the absolute URL the server handed out.
    const value = `final;${new URL(a.location).pathname} ${b.location}`;
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

describe('tus rules: concatenation of unfinished partial uploads', () => {
  const tus = tusSession({ TusUploadExpiry: '1h' });
  const partial = async (extra: Record<string, string | number> = {}) => created(await tus.post({ 'Upload-Concat': 'partial', ...extra }));
  const final = (locations: string[], fields: Record<string, string> = { filename: 'joined.txt' }) =>
    tus.post({ 'Upload-Concat': `final;${locations.join(' ')}`, 'Upload-Metadata': meta(fields) });
  const patched = async (location: string, offset: number, body: string, extra: Record<string, string | number> = {}) => {
    const res = await tus.patch(location, offset, Buffer.from(body), extra);
    assert.equal(res.status, 204, res.body.toString());
  };

  it('advertises concatenation-unfinished ("This feature MUST be explicitly announced by the Server")', async () => {
    const res = await rawRequest(tus.server.url, 'OPTIONS', '/files/');
    assert.ok(String(res.headers['tus-extension']).split(',').includes('concatenation-unfinished'), String(res.headers['tus-extension']));
  });

  // tus 1.0.0, Concatenation: "The Client MAY send the concatenation request while the partial uploads are still
  // in progress." "The response to a HEAD request for a final upload SHOULD NOT contain the Upload-Offset header
  // unless the concatenation has been successfully finished. After successful concatenation, the Upload-Offset
  // and Upload-Length MUST be set and their values MUST be equal."
  it('creates a final upload before its partials are finished and joins it by itself when the last one finishes ("MAY send the concatenation request while the partial uploads are still in progress")', async () => {
    const a = await partial({ 'Upload-Length': 5 });
    const b = await partial({ 'Upload-Length': 6 });
    await patched(a, 0, 'hel');
    const res = await final([a, b]);
    const location = created(res);
    assert.equal(res.headers['upload-concat'], `final;${a} ${b}`);
    assert.ok(res.headers['upload-expires'], 'an unfinished final upload expires like any other');
    assert.equal(res.headers['x-download-url'], undefined);
    const waiting = await tus.head(location);
    assert.equal(waiting.status, 200);
    assert.equal(waiting.headers['upload-offset'], undefined, '"SHOULD NOT contain the Upload-Offset header"');
    assert.equal(waiting.headers['upload-length'], '11');
    assert.equal(waiting.headers['upload-concat'], `final;${a} ${b}`);
    assert.equal(waiting.headers['upload-expires'], res.headers['upload-expires']);
    assert.equal(waiting.headers['cache-control'], 'no-store');
    // Not there to be downloaded yet.
    assert.equal((await rawRequest(tus.server.url, 'GET', location, tus.headers)).status, 404);
    await patched(a, 3, 'lo');
    await patched(b, 0, ' world');
    const done = await tus.head(location);
    assert.equal(done.status, 200);
    assert.equal(done.headers['upload-offset'], '11', '"the Upload-Offset and Upload-Length MUST be set and their values MUST be equal"');
    assert.equal(done.headers['upload-length'], '11');
    assert.equal(done.headers['upload-concat'], `final;${a} ${b}`);
    assert.equal(done.headers['upload-expires'], undefined);
    assert.equal((await tus.get(location)).body.toString(), 'hello world');
    // The partials are gone once joined ("The Server MAY delete partial uploads after concatenation").
    for (const part of [a, b]) assert.equal((await tus.head(part)).status, 404);
  });

  it('joins a final upload whose partials finished in another order, and one with a partial of deferred length', async () => {
    const a = await partial({ 'Upload-Length': 2 });
    const b = await partial({ 'Upload-Defer-Length': 1 });
    const location = created(await final([a, b]));
    const head = await tus.head(location);
    assert.equal(head.headers['upload-length'], undefined, 'the length is not known yet');
    assert.equal(head.headers['upload-offset'], undefined);
    await patched(b, 0, 'cd', { 'Upload-Length': 2 });
    assert.equal((await tus.head(location)).headers['upload-length'], '4');
    await patched(a, 0, 'ab');
    const done = await tus.head(location);
    assert.equal(done.headers['upload-offset'], '4');
    assert.equal((await tus.get(location)).body.toString(), 'abcd');
  });

  it('lets a partial serve two final uploads, and removes it after the last ("They MAY however be used multiple times to form a final resource")', async () => {
    const a = await partial({ 'Upload-Length': 3 });
    const one = created(await final([a], { filename: 'one.txt' }));
    const two = created(await final([a, a], { filename: 'two.txt' }));
    await patched(a, 0, 'abc');
    assert.equal((await tus.get(one)).body.toString(), 'abc');
    assert.equal((await tus.get(two)).body.toString(), 'abcabc');
    assert.equal((await tus.head(a)).status, 404);
    // Joined and removed: a later final upload cannot name it.
    assert.equal((await final([a])).status, 400);
  });

  it("refuses a final upload that names another subject's unfinished partial with 403", async () => {
    const bob = { ...TUS, Authorization: `Bearer ${await grantFor(tus.server, { subject: 'bob' })}` };
    const hers = await partial({ 'Upload-Length': 4 });
    const res = await rawRequest(tus.server.url, 'POST', '/files/', { ...bob, 'Upload-Concat': `final;${hers}`, 'Upload-Metadata': meta({ filename: 'b.txt' }) });
    assert.equal(res.status, 403);
    // Her own final upload still works.
    const location = created(await final([hers]));
    await patched(hers, 0, 'mine');
    assert.equal((await tus.get(location)).body.toString(), 'mine');
  });

  it('removes a final upload whose joined length exceeds the grant, once that length is known', async () => {
    const small = { ...TUS, Authorization: `Bearer ${await grantFor(tus.server, { subject: 'alice', maxSize: 4 })}` };
    const a = created(await rawRequest(tus.server.url, 'POST', '/files/', { ...small, 'Upload-Concat': 'partial', 'Upload-Length': 3 }));
    const b = created(await rawRequest(tus.server.url, 'POST', '/files/', { ...small, 'Upload-Concat': 'partial', 'Upload-Defer-Length': 1 }));
    const location = created(await rawRequest(tus.server.url, 'POST', '/files/', { ...small, 'Upload-Concat': `final;${a} ${b}`, 'Upload-Metadata': meta({ filename: 'big.txt' }) }));
    await patched(a, 0, 'abc');
    await patched(b, 0, 'de', { 'Upload-Length': 2 });
    assert.equal((await tus.head(location)).status, 404);
    // Known lengths over the limit are refused at creation.
    assert.equal((await rawRequest(tus.server.url, 'POST', '/files/', { ...small, 'Upload-Concat': `final;${a} ${a}`, 'Upload-Metadata': meta({ filename: 'big.txt' }) })).status, 413);
  });

  it('sweeps an unfinished final upload when it expires, like its partials, and forgets it', async () => {
    const a = await partial({ 'Upload-Length': 3 });
    const location = created(await final([a]));
    assert.ok(tus.server.running.tus!.waitingFinals() >= 1);
    assert.ok((await tus.server.running.tus!.sweep(Date.now() + 2 * 3600_000)) >= 2);
    assert.equal((await tus.head(location)).status, 404);
    assert.equal((await tus.head(a)).status, 404);
    assert.equal(tus.server.running.tus!.waitingFinals(), 0);
  });

  it('joins a final upload whose partial finished on a restarted server at its next HEAD', async () => {
    const storeDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-concat-'));
    try {
      const first = await startTestServer({ StoreDir: storeDir });
      const headers = { ...TUS, Authorization: `Bearer ${await grantFor(first, { subject: 'alice' })}` };
      // Paths: the second server listens on another port.
      const a = new URL(created(await rawRequest(first.url, 'POST', '/files/', { ...headers, 'Upload-Concat': 'partial', 'Upload-Length': 4 }))).pathname;
      const location = new URL(created(await rawRequest(first.url, 'POST', '/files/', { ...headers, 'Upload-Concat': `final;${a}`, 'Upload-Metadata': meta({ filename: 'r.txt' }) }))).pathname;
      await first.close();
      const second = await startTestServer({ StoreDir: storeDir });
      try {
        const patch = await rawRequest(second.url, 'PATCH', a, { ...headers, 'Upload-Offset': 0, 'Content-Type': OCTETS }, Buffer.from('late'));
        assert.equal(patch.status, 204, patch.body.toString());
        const head = await rawRequest(second.url, 'HEAD', location, headers);
        assert.equal(head.headers['upload-offset'], '4');
        assert.equal((await rawRequest(second.url, 'GET', location)).body.toString(), 'late');
      } finally {
        await second.close();
      }
    } finally {
      await rm(storeDir, { recursive: true, force: true });
    }
  });

  // "When creating a new final upload the partial uploads' metadata SHALL NOT be transferred to the new final
  // upload. All metadata SHOULD be included in the concatenation request using the Upload-Metadata header."
  it("shows only the final upload's own metadata, never the partials' or the server's (\"the partial uploads' metadata SHALL NOT be transferred\")", async () => {
    const a = await partial({ 'Upload-Length': 2, 'Upload-Metadata': meta({ filename: 'part.txt', secret: 'p' }) });
    await patched(a, 0, 'ok');
    const named = await final([a], { filename: 'whole.txt' });
    assert.equal(named.status, 201);
    const head = await tus.head(String(named.headers.location));
    assert.equal(head.headers['upload-metadata'], meta({ filename: 'whole.txt' }));
    assert.match(String(named.headers['x-download-url']), /\/whole\.txt$/);
    const b = await partial({ 'Upload-Length': 2, 'Upload-Metadata': meta({ filename: 'part.txt' }) });
    await patched(b, 0, 'ok');
    const bare = await tus.post({ 'Upload-Concat': `final;${b}` });
    const location = created(bare);
    assert.equal((await tus.head(location)).headers['upload-metadata'], undefined);
    // Named after its own id, not after a partial.
    assert.equal(bare.headers['x-download-url'], `${tus.server.url}/upload/${idOf(location)}/${idOf(location)}`);
    // While it waits, the same holds.
    const c = await partial({ 'Upload-Length': 1, 'Upload-Metadata': meta({ filename: 'part.txt' }) });
    const waiting = created(await final([c], { filename: 'later.txt' }));
    assert.equal((await tus.head(waiting)).headers['upload-metadata'], meta({ filename: 'later.txt' }));
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

// tus 1.0.0 leaves the form of Location open, and several clients cannot resolve a relative one: the server hands
// out absolute URLs, built from PublicURL, else from how the request reached it.
describe('tus rules: absolute Location and X-Download-URL', () => {
  const upload = async (server: TestServer, headers: Record<string, string>) => {
    const auth = { ...TUS, Authorization: `Bearer ${await grantFor(server, { subject: 'alice' })}` };
    const res = await rawRequest(server.url, 'POST', '/files/', { ...auth, ...headers, 'Upload-Length': 2, 'Upload-Metadata': meta({ filename: 'u.txt' }) }, undefined);
    const location = created(res);
    // Sent to the server itself: the URL may name a proxy's address and prefix.
    const done = await rawRequest(server.url, 'PATCH', `/files/${idOf(location)}`, { ...auth, ...headers, 'Upload-Offset': 0, 'Content-Type': OCTETS }, Buffer.from('ok'));
    assert.equal(done.status, 204, done.body.toString());
    return { location, downloadUrl: String(done.headers['x-download-url']), auth };
  };

  describe('without PublicURL', () => {
    const tus = tusSession({});

    it("uses the request's Host", async () => {
      const { location, downloadUrl } = await upload(tus.server, { Host: 'files.example.org:8443' });
      assert.match(location, /^http:\/\/files\.example\.org:8443\/files\/[0-9a-f]{32}$/);
      assert.equal(downloadUrl, `http://files.example.org:8443/upload/${idOf(location)}/u.txt`);
    });

    it('believes X-Forwarded-Proto and X-Forwarded-Host from a trusted proxy (loopback is one by default)', async () => {
      const { location, downloadUrl } = await upload(tus.server, { Host: 'internal:8080', 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'files.example.org, other.example' });
      assert.match(location, /^https:\/\/files\.example\.org\/files\/[0-9a-f]{32}$/);
      assert.ok(downloadUrl.startsWith('https://files.example.org/upload/'), downloadUrl);
    });

    it('gives a path alone for a Host that is no host name', async () => {
      for (const host of ['evil.example/phish', 'a b', 'x@evil.example']) {
        const { location, downloadUrl } = await upload(tus.server, { Host: host });
        assert.match(location, /^\/files\/[0-9a-f]{32}$/, host);
        assert.ok(downloadUrl.startsWith('/upload/'), downloadUrl);
      }
    });
  });

  describe('from a peer that is not a trusted proxy', () => {
    const tus = tusSession({ TrustedProxies: [] });

    it('ignores its X-Forwarded-Proto and X-Forwarded-Host', async () => {
      const { location, downloadUrl } = await upload(tus.server, { Host: 'files.example.org', 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'evil.example' });
      assert.match(location, /^http:\/\/files\.example\.org\/files\//);
      assert.ok(downloadUrl.startsWith('http://files.example.org/upload/'), downloadUrl);
    });
  });

  describe('with PublicURL', () => {
    const tus = tusSession({ PublicURL: 'https://files.example.org/share/' });

    it('builds every URL from it, whatever the request says', async () => {
      const { location, downloadUrl, auth } = await upload(tus.server, { Host: 'internal:8080', 'X-Forwarded-Host': 'evil.example', 'X-Forwarded-Proto': 'http' });
      assert.match(location, /^https:\/\/files\.example\.org\/share\/files\/[0-9a-f]{32}$/);
      assert.equal(downloadUrl, `https://files.example.org/share/upload/${idOf(location)}/u.txt`);
      const part = created(await rawRequest(tus.server.url, 'POST', '/files/', { ...auth, 'Upload-Concat': 'partial', 'Upload-Length': 1 }));
      assert.ok(part.startsWith('https://files.example.org/share/files/'), part);
      const final = await rawRequest(tus.server.url, 'POST', '/files/', { ...auth, 'Upload-Concat': `final;${part}`, 'Upload-Metadata': meta({ filename: 'f.txt' }) });
      assert.match(created(final), /^https:\/\/files\.example\.org\/share\/files\/[0-9a-f]{32}$/);
    });
  });
});


describe('tus rules: one CORS policy', () => {
  const tus = tusSession({ TusUploadExpiry: '1h' });
  const list = (value: unknown) => String(value).split(',').map((name) => name.trim().toLowerCase());

  it('answers a preflight with each allowed header once, Upload-Checksum among them', async () => {
    const res = await rawRequest(tus.server.url, 'OPTIONS', '/files/0123456789abcdef0123456789abcdef', {
      Origin: 'http://app.example',
      'Access-Control-Request-Method': 'PATCH',
      'Access-Control-Request-Headers': 'authorization,tus-resumable,upload-offset,upload-checksum,content-type',
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers['access-control-allow-origin'], '*');
    const allowed = list(res.headers['access-control-allow-headers']);
    assert.equal(new Set(allowed).size, allowed.length, `no name twice: ${allowed.join(', ')}`);
    for (const name of ['authorization', 'tus-resumable', 'upload-offset', 'upload-checksum', 'content-type', 'upload-length', 'upload-metadata', 'upload-concat', 'upload-defer-length']) assert.ok(allowed.includes(name), name);
    assert.ok(list(res.headers['access-control-allow-methods']).includes('patch'));
  });

  it('exposes the same headers on every answer: gates, the library, its refusals and the finishing PATCH', async () => {
    const created = await tus.post({ 'Upload-Length': 4, 'Upload-Metadata': meta({ filename: 'c.txt' }) });
    const location = String(created.headers.location);
    const answers = {
      creation: created,
      head: await tus.head(location),
      conflict: await tus.patch(location, 2, Buffer.from('xx')),
      unauthenticated: await rawRequest(tus.server.url, 'HEAD', location, TUS),
      finished: await tus.patch(location, 0, Buffer.from('done')),
      download: await tus.get(location),
    };
    assert.equal(answers.conflict.status, 409);
    assert.equal(answers.unauthenticated.status, 401);
    for (const [what, res] of Object.entries(answers)) {
      assert.equal(res.headers['access-control-allow-origin'], '*', what);
      const exposed = list(res.headers['access-control-expose-headers']);
      assert.equal(new Set(exposed).size, exposed.length, what);
      for (const name of ['location', 'upload-offset', 'upload-expires', 'x-download-url', 'www-authenticate', 'content-disposition']) assert.ok(exposed.includes(name), `${what}: ${name}`);
      // Request headers mean nothing to a page reading an answer.
      for (const name of ['authorization', 'x-forwarded-host', 'x-http-method-override', 'content-type']) assert.ok(!exposed.includes(name), `${what}: ${name}`);
    }
  });
});
