// Listeners and timeouts as an operator configures them: IPv6 literals, the unix socket, ReadTimeout,
// IdleTimeout, and a graceful stop that lets running uploads finish.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { signedPath } from './helpers/http.js';
import { exchange, head } from './helpers/socket.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

function get(options: http.RequestOptions): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get({ ...options, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', reject);
  });
}

describe('listeners', () => {
  it('listens on an IPv6 literal', async () => {
    const server = await startTestServer({ ListenIP: '::1' });
    try {
      assert.match(server.url, /^http:\/\/\[::1\]:\d+$/);
      assert.equal(await get({ host: '::1', port: Number(new URL(server.url).port), path: '/upload/a/none.txt' }), 404);
    } finally {
      await server.close();
    }
  });

  it('listens on a unix socket instead of TCP and removes it on stop', async () => {
    const socketPath = path.join(os.tmpdir(), `hfs-${process.pid}-${Date.now()}.sock`);
    const server = await startTestServer({ UnixSocket: true, UnixSocketPath: socketPath });
    try {
      assert.equal(server.url, socketPath);
      assert.equal(await get({ socketPath, path: '/upload/a/none.txt' }), 404);
    } finally {
      await server.close();
    }
    assert.ok(!(await readdir(os.tmpdir())).includes(path.basename(socketPath)));
  });
});

describe('timeouts', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ ReadTimeout: '1s', IdleTimeout: '1s' });
  });
  after(() => server.close());

  it('cuts an upload that does not arrive within ReadTimeout and keeps nothing', async () => {
    const answer = await exchange(server.url, [head('PUT', signedPath(server, 'slow/file.bin', 1000), { 'Content-Length': 1000 }), randomBytes(10)]);
    // Node answers 408 when it can, or just closes; either way the connection ends and nothing is kept.
    assert.ok(answer === '' || answer.startsWith('HTTP/1.1 408'), answer);
    for (let i = 0; i < 50 && (await readdir(path.join(server.storeDir, '.hmac', 'staging'))).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(await readdir(path.join(server.storeDir, '.hmac', 'staging')), []);
  });

  it('closes an idle keep-alive connection after IdleTimeout', async () => {
    const started = Date.now();
    await exchange(server.url, [head('GET', '/upload/a/none.txt')]);
    // Closed by the server, not by the test: it would otherwise stay open until mocha's timeout.
    assert.ok(Date.now() - started >= 900);
  });
});

describe('graceful stop', () => {
  it('lets an upload that is running finish before the server stops', async () => {
    const server = await startTestServer({ GracefulShutdownTimeout: '5s' });
    const port = Number(new URL(server.url).port);
    const body = randomBytes(2000);
    // The rest of the body arrives after the stop began.
    const answer = exchange(server.url, [head('PUT', signedPath(server, 'grace/file.bin', body.length), { 'Content-Length': body.length }), body.subarray(0, 1000), 300, body.subarray(1000)], { until: 'head' });
    await new Promise((r) => setTimeout(r, 100));
    const stopped = server.running.close(5000);
    assert.match(await answer, /^HTTP\/1\.1 201 /);
    await stopped;
    await assert.rejects(get({ host: '127.0.0.1', port, path: '/' }), /ECONNREFUSED/);
    await server.close();
  });
});

describe('staging left by a crash', () => {
  it('is swept at start-up once older than ReadTimeout, while fresh staging files stay', async () => {
    const storeDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-crash-'));
    const staging = path.join(storeDir, '.hmac', 'staging');
    await mkdir(staging, { recursive: true });
    await writeFile(path.join(staging, 'old.part'), 'left by a crash');
    await writeFile(path.join(staging, 'new.part'), 'a request still running elsewhere');
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000);
    await utimes(path.join(staging, 'old.part'), twoHoursAgo, twoHoursAgo);
    const server = await startTestServer({ StoreDir: storeDir, ReadTimeout: '1h' });
    try {
      assert.ok(await server.waitForLog(/staging\.swept removed=1/));
      assert.deepEqual(await readdir(staging), ['new.part']);
    } finally {
      await server.close();
      await rm(storeDir, { recursive: true, force: true });
    }
  });
});
