import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { rawRequest, signedPut } from './helpers/http.js';
import { exchange, head } from './helpers/socket.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const DIR = '5f0c1d7e-8a9b-4c3d-9e8f-0123456789ab';

describe('legacy GET and HEAD', () => {
  let server: TestServer;
  const body = randomBytes(10_000);
  const file = `/upload/${DIR}/data.bin`;
  before(async () => {
    server = await startTestServer();
    assert.equal((await signedPut(server, `${DIR}/data.bin`, body)).status, 201);
  });
  after(() => server.close());

  it('serves the whole file with validators and safety headers, without authentication', async () => {
    const res = await rawRequest(server.url, 'GET', file);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, body);
    assert.equal(res.headers['content-length'], '10000');
    assert.equal(res.headers['accept-ranges'], 'bytes');
    assert.match(res.headers.etag ?? '', /^"[0-9a-f]+-[0-9a-f]+"$/);
    assert.ok(res.headers['last-modified']);
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.equal(res.headers['content-security-policy'], "default-src 'none'; sandbox");
    assert.equal(res.headers['access-control-allow-origin'], '*');
  });

  it('answers HEAD with the same headers and no body', async () => {
    const res = await rawRequest(server.url, 'HEAD', file);
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-length'], '10000');
    assert.equal(res.body.length, 0);
  });

  const ranges: Array<[string, number, number]> = [
    ['bytes=0-0', 0, 0],
    ['bytes=100-199', 100, 199],
    ['bytes=9990-', 9990, 9999],
    ['bytes=-17', 9983, 9999],
    ['bytes=5000-999999', 5000, 9999],
  ];
  for (const [range, start, end] of ranges) {
    it(`serves ${range} as 206 with its Content-Range`, async () => {
      const res = await rawRequest(server.url, 'GET', file, { Range: range });
      assert.equal(res.status, 206);
      assert.equal(res.headers['content-range'], `bytes ${start}-${end}/10000`);
      assert.deepEqual(res.body, body.subarray(start, end + 1));
    });
  }

  it('answers 416 with the size to an unsatisfiable range', async () => {
    const res = await rawRequest(server.url, 'GET', file, { Range: 'bytes=10000-' });
    assert.equal(res.status, 416);
    assert.equal(res.headers['content-range'], 'bytes */10000');
  });

  it('serves the whole file for a malformed range or several ranges', async () => {
    for (const range of ['bytes=abc', 'items=0-1', 'bytes=0-1,5-6']) {
      const res = await rawRequest(server.url, 'GET', file, { Range: range });
      assert.equal(res.status, 200, range);
      assert.equal(res.body.length, 10_000);
    }
  });

  it('answers 304 to a matching If-None-Match or If-Modified-Since', async () => {
    const first = await rawRequest(server.url, 'HEAD', file);
    assert.equal((await rawRequest(server.url, 'GET', file, { 'If-None-Match': first.headers.etag! })).status, 304);
    assert.equal((await rawRequest(server.url, 'GET', file, { 'If-Modified-Since': first.headers['last-modified']! })).status, 304);
    assert.equal((await rawRequest(server.url, 'GET', file, { 'If-None-Match': '"other"' })).status, 200);
  });

  it('honours Range only while If-Range still matches', async () => {
    const { etag } = (await rawRequest(server.url, 'HEAD', file)).headers;
    assert.equal((await rawRequest(server.url, 'GET', file, { Range: 'bytes=0-9', 'If-Range': etag! })).status, 206);
    const stale = await rawRequest(server.url, 'GET', file, { Range: 'bytes=0-9', 'If-Range': '"stale"' });
    assert.equal(stale.status, 200);
    assert.equal(stale.body.length, 10_000);
  });

  it('answers 404 for a file that was never uploaded', async () => {
    assert.equal((await rawRequest(server.url, 'GET', `/upload/${DIR}/missing.bin`)).status, 404);
    assert.equal((await rawRequest(server.url, 'GET', '/elsewhere')).status, 404);
  });

  it('serves an empty file', async () => {
    assert.equal((await signedPut(server, `${DIR}/empty.txt`, Buffer.alloc(0), { contentType: 'text/plain' })).status, 201);
    const res = await rawRequest(server.url, 'GET', `/upload/${DIR}/empty.txt`);
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-length'], '0');
  });

  const dispositions: Array<[string, string]> = [
    ['image/jpeg', 'inline'],
    ['video/mp4', 'inline'],
    ['audio/ogg', 'inline'],
    ['text/plain; charset=utf-8', 'inline'],
    ['text/html', 'attachment'],
    ['image/svg+xml', 'attachment'],
    ['application/pdf', 'attachment'],
    ['application/octet-stream', 'attachment'],
  ];
  for (const [type, disposition] of dispositions) {
    it(`serves ${type} ${disposition} with its stored type`, async () => {
      const name = `${type.replace(/\W/g, '_')}.bin`;
      assert.equal((await signedPut(server, `${DIR}/${name}`, Buffer.from('content'), { contentType: type })).status, 201);
      const res = await rawRequest(server.url, 'GET', `/upload/${DIR}/${name}`);
      assert.equal(res.headers['content-type'], type);
      assert.equal(res.headers['content-disposition'], `${disposition}; filename=${name}`);
    });
  }

  it('survives clients that hang up in the middle of a download', async () => {
    const big = randomBytes(4 * 1024 * 1024);
    assert.equal((await signedPut(server, `${DIR}/big.bin`, big)).status, 201);
    await Promise.all(Array.from({ length: 10 }, () => exchange(server.url, [head('GET', `/upload/${DIR}/big.bin`)], { until: 'data' })));
    const res = await rawRequest(server.url, 'GET', `/upload/${DIR}/big.bin`, { Range: 'bytes=-5' });
    assert.equal(res.status, 206);
    assert.deepEqual(res.body, big.subarray(-5));
  });
});

describe('legacy GET with ResumableDownloadsEnabled = false', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ ResumableDownloadsEnabled: false });
  });
  after(() => server.close());

  it('ignores Range and says so in Accept-Ranges', async () => {
    assert.equal((await signedPut(server, 'a/b.bin', Buffer.from('0123456789'))).status, 201);
    const res = await rawRequest(server.url, 'GET', '/upload/a/b.bin', { Range: 'bytes=2-3' });
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), '0123456789');
    assert.equal(res.headers['accept-ranges'], 'none');
  });
});

describe('a damaged metadata record', () => {
  it('answers 500 for that file only, without its details, and keeps serving the others', async () => {
    const server = await startTestServer();
    try {
      assert.equal((await signedPut(server, 'meta/broken.txt', Buffer.from('a'))).status, 201);
      assert.equal((await signedPut(server, 'meta/fine.txt', Buffer.from('b'))).status, 201);
      const metaFile = server.running.tenants[0]!.layout.metaPath('meta/broken.txt');
      await writeFile(metaFile, '{"path": truncated');
      const res = await rawRequest(server.url, 'GET', '/upload/meta/broken.txt');
      assert.equal(res.status, 500);
      assert.equal(res.body.toString(), 'Internal server error\n');
      assert.ok(await server.waitForLog(/error request\.failed code=E_INTERNAL .*meta\/broken\.txt/));
      assert.equal((await rawRequest(server.url, 'GET', '/upload/meta/fine.txt')).body.toString(), 'b');
    } finally {
      await server.close();
    }
  });
});
