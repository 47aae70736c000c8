// Upload admission: NumWorkers bodies are received at once, UploadQueueSize more wait (a waiting PUT gets its
// 100 Continue only when admitted), the rest get 503 with Retry-After and leave nothing behind; 0 is no limit.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { head } from './helpers/socket.js';
import { rawRequest, signedPath, signedPut } from './helpers/http.js';
import { grantFor } from './helpers/tus-client.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

interface Held {
  socket: net.Socket;
  /** Everything the server sent so far. */
  text(): string;
  /** Resolves once the server's text matches. */
  until(pattern: RegExp, timeoutMs?: number): Promise<boolean>;
}

/** Sends a PUT's head with Expect: 100-continue and holds the connection, sending nothing more yet. */
function hold(server: TestServer, slot: string, size: number): Held {
  const { hostname, port } = new URL(server.url);
  const socket = net.connect(Number(port), hostname);
  let text = '';
  socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
  socket.on('error', () => undefined);
  socket.write(head('PUT', signedPath(server, slot, size), { 'Content-Length': size, Expect: '100-continue' }));
  return {
    socket,
    text: () => text,
    until: async (pattern, timeoutMs = 3000) => {
      const deadline = Date.now() + timeoutMs;
      while (!pattern.test(text)) {
        if (Date.now() > deadline) return false;
        await new Promise((r) => setTimeout(r, 20));
      }
      return true;
    },
  };
}

const stagingOf = (server: TestServer) => readdir(path.join(server.storeDir, '.hmac', 'staging'));

describe('upload admission', () => {
  describe('NumWorkers = 2, UploadQueueSize = 1', () => {
    let server: TestServer;
    before(async () => (server = await startTestServer({ NumWorkers: 2, UploadQueueSize: 1 })));
    after(() => server.close());

    it('receives two at once, lets the third wait for its 100 Continue, and turns the fourth away with 503', async () => {
      const bodies = [1, 2, 3].map(() => randomBytes(1000));
      const first = hold(server, 'adm/1.bin', 1000);
      const second = hold(server, 'adm/2.bin', 1000);
      assert.ok(await first.until(/^HTTP\/1\.1 100 Continue/));
      assert.ok(await second.until(/^HTTP\/1\.1 100 Continue/));
      const third = hold(server, 'adm/3.bin', 1000);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(third.text(), '', 'the waiting upload was told to send its body');
      assert.deepEqual(server.running.guards.admission.state(), { active: 2, waiting: 1 });

      const fourth = await rawRequest(server.url, 'PUT', signedPath(server, 'adm/4.bin', 10), { 'Content-Length': 10 }, randomBytes(10));
      assert.equal(fourth.status, 503);
      assert.ok(Number(fourth.headers['retry-after']) > 0);
      assert.equal(fourth.body.toString(), 'Too many uploads at once, try again later\n');
      assert.equal((await rawRequest(server.url, 'GET', '/upload/adm/4.bin')).status, 404);

      first.socket.write(bodies[0]!);
      assert.ok(await first.until(/HTTP\/1\.1 201 /));
      assert.ok(await third.until(/^HTTP\/1\.1 100 Continue/), 'the waiting upload was not admitted when a place came free');
      second.socket.write(bodies[1]!);
      third.socket.write(bodies[2]!);
      assert.ok(await second.until(/HTTP\/1\.1 201 /));
      assert.ok(await third.until(/HTTP\/1\.1 201 /));
      for (const held of [first, second, third]) held.socket.destroy();
      for (const [i, body] of bodies.entries()) assert.deepEqual((await rawRequest(server.url, 'GET', `/upload/adm/${i + 1}.bin`)).body, body);
      assert.deepEqual(await stagingOf(server), []);
      assert.equal(server.running.guards.counters.admission.refused, 1);
    });

    it('drops a client that gives up while waiting from the queue', async () => {
      const a = hold(server, 'adm/a.bin', 10);
      const b = hold(server, 'adm/b.bin', 10);
      assert.ok(await a.until(/100 Continue/));
      assert.ok(await b.until(/100 Continue/));
      const waiting = hold(server, 'adm/c.bin', 10);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(server.running.guards.admission.state().waiting, 1);
      waiting.socket.destroy();
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(server.running.guards.admission.state().waiting, 0);
      a.socket.destroy();
      b.socket.destroy();
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(server.running.guards.admission.state(), { active: 0, waiting: 0 });
      assert.equal((await signedPut(server, 'adm/after.bin', Buffer.from('ok'))).status, 201);
    });

    it('counts tus PATCH bodies too', async () => {
      const grant = await grantFor(server);
      const auth = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${grant}` };
      const created = await rawRequest(server.url, 'POST', '/files/', { ...auth, 'Upload-Length': 4, 'Upload-Metadata': `filename ${Buffer.from('t.bin').toString('base64')}` });
      assert.equal(created.status, 201);
      const a = hold(server, 'adm/ta.bin', 10);
      const b = hold(server, 'adm/tb.bin', 10);
      const c = hold(server, 'adm/tc.bin', 10);
      assert.ok(await a.until(/100 Continue/));
      assert.ok(await b.until(/100 Continue/));
      // The third upload must be the one waiting before the PATCH arrives, however slow the machine is.
      for (const deadline = Date.now() + 3000; server.running.guards.admission.state().waiting < 1 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
      assert.equal(server.running.guards.admission.state().waiting, 1);
      const patch = await rawRequest(server.url, 'PATCH', created.headers.location!, { ...auth, 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': 4 }, Buffer.from('abcd'));
      assert.equal(patch.status, 503);
      assert.ok(patch.headers['retry-after']);
      for (const held of [a, b, c]) held.socket.destroy();
      await new Promise((r) => setTimeout(r, 100));
      const retry = await rawRequest(server.url, 'PATCH', created.headers.location!, { ...auth, 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': 4 }, Buffer.from('abcd'));
      assert.equal(retry.status, 204);
    });
  });

  describe('NumWorkers = 0', () => {
    let server: TestServer;
    before(async () => (server = await startTestServer({ NumWorkers: 0, UploadQueueSize: 1 })));
    after(() => server.close());

    it('admits every upload at once', async () => {
      const held = Array.from({ length: 10 }, (_, i) => hold(server, `free/${i}.bin`, 10));
      const continued = await Promise.all(held.map((h) => h.until(/100 Continue/)));
      assert.ok(continued.every(Boolean));
      for (const h of held) h.socket.destroy();
    });
  });

  describe('the defaults', () => {
    let server: TestServer;
    before(async () => (server = await startTestServer()));
    after(() => server.close());

    it('serve 200 concurrent 1 MiB uploads without a refusal', async function () {
      this.timeout(120_000);
      const body = randomBytes(1024 * 1024);
      const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => signedPut(server, `many/${i}.bin`, body)));
      assert.deepEqual([...new Set(answers.map((a) => a.status))], [201]);
    });
  });
});
