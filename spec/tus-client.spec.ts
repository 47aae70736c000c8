// tus-js-client against the server: every result checked by the sha256 of what GET returns.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import * as tus from 'tus-js-client';
import { grantFor, tusUpload } from './helpers/tus-client.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function download(url: string): Promise<Buffer> {
  const res = await fetch(url);
  assert.equal(res.status, 200);
  return Buffer.from(await res.arrayBuffer());
}

describe('tus uploads with tus-js-client', function () {
  this.timeout(60_000);
  let server: TestServer;
  let grant: string;
  before(async () => {
    server = await startTestServer({ MaxUploadSize: '64MiB' });
    grant = await grantFor(server);
  });
  after(() => server.close());

  it('uploads a whole file in one request, served by GET at the download URL and the upload URL', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 7);
    const { url, downloadUrl } = await tusUpload(server, data, grant, { metadata: { filename: 'whole photo.jpg', filetype: 'image/jpeg' } });
    assert.match(downloadUrl, /\/upload\/[0-9a-f]{32}\/whole%20photo\.jpg$/);
    assert.equal(sha256(await download(downloadUrl)), sha256(data));
    assert.equal(sha256(await download(url)), sha256(data));
    const res = await fetch(downloadUrl);
    assert.equal(res.headers.get('content-type'), 'image/jpeg');
  });

  it('uploads in 256 KiB chunks', async () => {
    const data = randomBytes(2 * 1024 * 1024 + 12345);
    const { downloadUrl } = await tusUpload(server, data, grant, { chunkSize: 256 * 1024 });
    assert.equal(sha256(await download(downloadUrl)), sha256(data));
  });

  it('resumes an upload aborted halfway from the stored URL, at the server offset', async () => {
    const data = randomBytes(4 * 1024 * 1024);
    const firstUrl = await new Promise<string>((resolve, reject) => {
      const upload: tus.Upload = new tus.Upload(data, {
        endpoint: `${server.url}/files/`,
        headers: { Authorization: `Bearer ${grant}` },
        metadata: { filename: 'resumed.bin' },
        chunkSize: 256 * 1024,
        retryDelays: [],
        onError: reject,
        onChunkComplete: (_chunk, accepted) => {
          if (accepted >= data.length / 2) void upload.abort().then(() => resolve(upload.url!));
        },
      });
      upload.start();
    });
    const head = await fetch(firstUrl, { method: 'HEAD', headers: { Authorization: `Bearer ${grant}`, 'Tus-Resumable': '1.0.0' } });
    const serverOffset = Number(head.headers.get('upload-offset'));
    assert.ok(serverOffset >= data.length / 2 && serverOffset < data.length, String(serverOffset));

    let firstReported: number | undefined;
    const { url, downloadUrl } = await tusUpload(server, data, grant, {
      uploadUrl: firstUrl,
      chunkSize: 256 * 1024,
      onProgress: (sent) => (firstReported ??= sent),
    });
    assert.equal(url, firstUrl);
    // The new client continued where the server was, not from zero.
    assert.ok(firstReported! >= serverOffset, `first progress ${firstReported} before offset ${serverOffset}`);
    assert.equal(sha256(await download(downloadUrl)), sha256(data));
  });

  it('uploads with a deferred length from a stream', async () => {
    const data = randomBytes(1024 * 1024 + 1);
    const { downloadUrl } = await tusUpload(server, data, grant, { stream: true, uploadLengthDeferred: true, chunkSize: 300 * 1024 });
    assert.equal(sha256(await download(downloadUrl)), sha256(data));
  });

  it('sends data with the creation request (creation-with-upload)', async () => {
    const data = randomBytes(200 * 1024);
    const { downloadUrl } = await tusUpload(server, data, grant, { uploadDataDuringCreation: true });
    assert.equal(sha256(await download(downloadUrl)), sha256(data));
  });

  it('uploads with parallelUploads: 4 (concatenation) and leaves no partial behind', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 5);
    const { downloadUrl } = await tusUpload(server, data, grant, { parallelUploads: 4, metadata: { filename: 'parallel.bin' } });
    assert.equal(sha256(await download(downloadUrl)), sha256(data));
    const committed = await readdir(path.join(server.storeDir, 'upload'), { recursive: true });
    assert.equal(committed.filter((name) => name.endsWith('parallel.bin')).length, 1);
  });

  it('uploads an empty file', async () => {
    const { downloadUrl } = await tusUpload(server, Buffer.alloc(0), grant, { metadata: { filename: 'empty.txt', filetype: 'text/plain' } });
    assert.equal((await download(downloadUrl)).length, 0);
  });

  it('counts what it received for the metrics', () => {
    const counters = server.running.tus!.counters;
    assert.ok(counters.created >= 6, JSON.stringify(counters));
    assert.ok(counters.finished >= 6, JSON.stringify(counters));
    assert.ok(counters.bytesReceived >= 3 * 1024 * 1024 + 2 * 1024 * 1024 + 4 * 1024 * 1024, JSON.stringify(counters));
  });
});
