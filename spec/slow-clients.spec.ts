// Slow and greedy clients: bodies nobody asked for, headers that never end, upload bodies that stop, and
// one address opening connection after connection. Each is bounded in count and time; a legitimate upload
// from another address goes through meanwhile.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { head } from './helpers/socket.js';
import { rawRequest, signedPath, signedPut } from './helpers/http.js';
import { grantFor } from './helpers/tus-client.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

interface Trickle {
  /** Everything the server sent. */
  answer: string;
  /** How many of the trickled parts were written before the server closed the connection. */
  partsSent: number;
  closedByServer: boolean;
}

/** Sends first, then one byte every stepMs, up to parts times; stops when the server closes the socket. */
function trickle(url: string, first: string | Buffer, parts: number, stepMs: number, localAddress?: string): Promise<Trickle> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    let answer = '';
    let partsSent = 0;
    let closedByServer = false;
    const socket = net.connect({ port: Number(port), host: hostname, ...(localAddress ? { localAddress } : {}) });
    const timer = setInterval(() => {
      if (partsSent >= parts) {
        clearInterval(timer);
        socket.destroy();
        return;
      }
      partsSent += 1;
      socket.write('x');
    }, stepMs);
    socket.on('connect', () => socket.write(first));
    socket.on('data', (c: Buffer) => (answer += c.toString('latin1')));
    socket.on('end', () => (closedByServer = true));
    socket.on('error', () => (closedByServer = true));
    socket.on('close', () => {
      clearInterval(timer);
      resolve({ answer, partsSent, closedByServer });
    });
  });
}

/** Opens a connection from localAddress and resolves once it is accepted (or refused with an answer). */
function openIdle(url: string, localAddress: string): Promise<{ socket: net.Socket; early: Promise<string> }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port: Number(port), host: hostname, localAddress });
    let text = '';
    const early = new Promise<string>((done) => {
      socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
      socket.on('close', () => done(text));
    });
    socket.once('connect', () => resolve({ socket, early }));
    socket.once('error', reject);
  });
}

const stagingOf = (server: TestServer) => readdir(path.join(server.storeDir, '.hmac', 'staging'));

describe('slow and greedy clients', () => {
  describe('bodies on routes that take none', () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer();
      assert.equal((await signedPut(server, 'pub/file.txt', Buffer.from('public'))).status, 201);
    });
    after(() => server.close());

    const routes: Array<[string, string, number]> = [
      ['OPTIONS', '/upload/pub/file.txt', 204],
      ['GET', '/upload/pub/file.txt', 200],
      ['HEAD', '/upload/pub/file.txt', 200],
      ['GET', '/upload/none/such.txt', 404],
      ['GET', '/elsewhere', 404],
      ['DELETE', '/upload/pub/file.txt', 405],
      ['OPTIONS', '/files/', 204],
      ['HEAD', '/files/0123456789abcdef0123456789abcdef', 404],
    ];
    for (const [method, url, status] of routes) {
      it(`${method} ${url} with "Content-Length: 1000000000" is answered ${status} and its socket closed at once`, async () => {
        const result = await trickle(server.url, head(method, url, { 'Content-Length': 1_000_000_000, 'Tus-Resumable': '1.0.0' }), 40, 100);
        assert.match(result.answer, new RegExp(`^HTTP/1\\.1 ${status} `));
        assert.match(result.answer, /\r\nConnection: close\r\n/i);
        assert.ok(result.closedByServer, 'the server kept the connection');
        assert.ok(result.partsSent < 40, `the server drained ${result.partsSent} trickled bytes before closing`);
      });
    }
  });

  describe('ReadHeaderTimeout', () => {
    let server: TestServer;
    before(async () => (server = await startTestServer({ ReadHeaderTimeout: '1s' })));
    after(() => server.close());

    it('closes a connection whose headers trickle in for longer than ReadHeaderTimeout', async () => {
      const result = await trickle(server.url, 'GET /upload/a/b.txt HTTP/1.1\r\nHost: test\r\nX-Slow: ', 60, 100);
      assert.ok(result.closedByServer, 'the server waited for the headers');
      assert.ok(result.partsSent < 40, `still open after ${result.partsSent} parts`);
    });

    it('rejects ReadHeaderTimeout = "0" in the configuration', async () => {
      await assert.rejects(startTestServer({ ReadHeaderTimeout: '0' }), /ReadHeaderTimeout/);
    });
  });

  describe('UploadStallTimeout', () => {
    let server: TestServer;
    before(async () => (server = await startTestServer({ UploadStallTimeout: '1s' })));
    after(() => server.close());

    it('cuts a legacy PUT whose body stops moving, keeps nothing, and still takes the next upload', async () => {
      const body = randomBytes(1000);
      const first = Buffer.concat([Buffer.from(head('PUT', signedPath(server, 'stall/put.bin', body.length), { 'Content-Length': body.length })), body.subarray(0, 100)]);
      const result = await trickle(server.url, first, 0, 10_000);
      assert.match(result.answer, /^HTTP\/1\.1 400 /);
      assert.match(result.answer, /Upload stalled/);
      assert.deepEqual(await stagingOf(server), []);
      assert.equal((await rawRequest(server.url, 'GET', '/upload/stall/put.bin')).status, 404);
      assert.equal((await signedPut(server, 'stall/put.bin', body)).status, 201);
    });

    it('cuts a tus PATCH whose body stops moving and keeps the bytes that arrived as the offset', async () => {
      const grant = await grantFor(server);
      const auth = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${grant}` };
      const created = await rawRequest(server.url, 'POST', '/files/', { ...auth, 'Upload-Length': 200, 'Upload-Metadata': `filename ${Buffer.from('s.bin').toString('base64')}` });
      assert.equal(created.status, 201);
      const location = created.headers.location!;
      const data = randomBytes(200);
      const first = Buffer.concat([Buffer.from(head('PATCH', location, { ...auth, 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': 200 })), data.subarray(0, 50)]);
      const result = await trickle(server.url, first, 0, 10_000);
      assert.match(result.answer, /^HTTP\/1\.1 400 /);
      const headRes = await rawRequest(server.url, 'HEAD', location, auth);
      assert.equal(headRes.headers['upload-offset'], '50');
      const rest = await rawRequest(server.url, 'PATCH', location, { ...auth, 'Upload-Offset': 50, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': 150 }, data.subarray(50));
      assert.equal(rest.status, 204);
      const got = await rawRequest(server.url, 'GET', String(rest.headers['x-download-url']));
      assert.deepEqual(got.body, data);
    });
    it('cuts a creation-with-upload whose body stops moving and keeps no upload nobody can resume', async () => {
      const grant = await grantFor(server);
      const data = randomBytes(200);
      const headers = {
        'Tus-Resumable': '1.0.0',
        Authorization: `Bearer ${grant}`,
        'Upload-Length': 200,
        'Upload-Metadata': `filename ${Buffer.from('c.bin').toString('base64')}`,
        'Content-Type': 'application/offset+octet-stream',
        'Content-Length': 200,
      };
      const before = await readdir(path.join(server.storeDir, '.hmac', 'tus'));
      const result = await trickle(server.url, Buffer.concat([Buffer.from(head('POST', '/files/', headers)), data.subarray(0, 50)]), 0, 10_000);
      assert.match(result.answer, /^HTTP\/1\.1 400 /);
      assert.doesNotMatch(result.answer, /\r\nLocation:/i);
      assert.deepEqual(await readdir(path.join(server.storeDir, '.hmac', 'tus')), before);
    });
  });

  describe('MaxConnectionsPerIP', () => {
    let server: TestServer;
    // 127.0.0.1 is the trusted proxy here; other loopback addresses are clients of their own.
    before(async () => (server = await startTestServer({ MaxConnectionsPerIP: 4, TrustedProxies: ['127.0.0.1/32'] })));
    after(() => server.close());

    it('answers the fifth connection from one address 503 with Retry-After, while another address uploads', async () => {
      const held = await Promise.all([1, 2, 3, 4].map(() => openIdle(server.url, '127.0.0.9')));
      try {
        const extra = await openIdle(server.url, '127.0.0.9');
        extra.socket.write(head('GET', '/upload/x.txt'));
        const refused = await extra.early;
        assert.match(refused, /^HTTP\/1\.1 503 /);
        assert.match(refused, /\r\nRetry-After: \d+\r\n/);
        const put = await rawRequest(server.url, 'PUT', signedPath(server, 'cap/other.bin', 3), { 'Content-Length': 3 }, Buffer.from('abc'), { localAddress: '127.0.0.10' });
        assert.equal(put.status, 201);
      } finally {
        for (const { socket } of held) socket.destroy();
      }
      await new Promise((r) => setTimeout(r, 100));
      const again = await rawRequest(server.url, 'GET', '/upload/cap/other.bin', {}, undefined, { localAddress: '127.0.0.9' });
      assert.equal(again.status, 200);
    });

    it('counts requests through a trusted proxy per forwarded client IP', async () => {
      const body = randomBytes(100);
      // Four uploads from one forwarded client that stop halfway hold its four places.
      const pending = await Promise.all(
        [1, 2, 3, 4].map(async (i) => {
          const { socket } = await openIdle(server.url, '127.0.0.1');
          socket.write(head('PUT', signedPath(server, `proxied/${i}.bin`, body.length), { 'Content-Length': body.length, 'X-Forwarded-For': '198.51.100.7' }));
          socket.write(body.subarray(0, 10));
          return socket;
        }),
      );
      try {
        await new Promise((r) => setTimeout(r, 200));
        const refused = await rawRequest(server.url, 'GET', '/upload/cap/other.bin', { 'X-Forwarded-For': '198.51.100.7' }, undefined, { localAddress: '127.0.0.1' });
        assert.equal(refused.status, 503);
        assert.ok(refused.headers['retry-after']);
        const other = await rawRequest(server.url, 'GET', '/upload/cap/other.bin', { 'X-Forwarded-For': '198.51.100.8' }, undefined, { localAddress: '127.0.0.1' });
        assert.equal(other.status, 200);
      } finally {
        for (const socket of pending) socket.destroy();
      }
    });
  });

  describe('many slow bodies at once', () => {
    let server: TestServer;
    before(async () => (server = await startTestServer({ MaxConnectionsPerIP: 16, TrustedProxies: [] })));
    after(() => server.close());

    it('keeps serving uploads from another address while one address trickles 40 upload bodies', async () => {
      const attackers = Array.from({ length: 40 }, (_, i) =>
        trickle(server.url, head('PUT', signedPath(server, `slow/${i}.bin`, 1000), { 'Content-Length': 1000 }), 20, 100, '127.0.0.20'),
      );
      await new Promise((r) => setTimeout(r, 300));
      const puts = await Promise.all([1, 2, 3].map((i) => rawRequest(server.url, 'PUT', signedPath(server, `legit/${i}.bin`, 5), { 'Content-Length': 5 }, Buffer.from('hello'), { localAddress: '127.0.0.30' })));
      assert.deepEqual(puts.map((p) => p.status), [201, 201, 201]);
      const results = await Promise.all(attackers);
      const refused = results.filter((r) => /^HTTP\/1\.1 503 /.test(r.answer));
      // 16 were let in (and trickled on); every connection beyond them was answered 503 at once.
      assert.equal(refused.length, 24);
      assert.ok(refused.every((r) => r.closedByServer && r.partsSent < 5));
    });
  });
});
