// SIGTERM to the real command line (server/main.ts as a child process): a legacy PUT whose body is half sent
// finishes within GracefulShutdownTimeout and is served after a restart on the same StoreDir; a tus PATCH that
// is still running when the grace runs out is cut and stays resumable from what reached the disk; new
// connections are refused at once, an idle keep-alive connection is closed at once, and the exit code is 0.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { encodeSlotPath } from '../server/cli-sign.js';
import { signSlot } from '../middleware/slot-verifier-hmac.js';
import { grantKey, mintGrant } from '../middleware/upload-grant.js';
import { startChildServer, type ChildServer } from './helpers/child-server.js';
import { rawRequest } from './helpers/http.js';
import { connects, openConnection } from './helpers/raw-connection.js';
import { head } from './helpers/socket.js';

const SECRET = 'graceful-shutdown-secret';
const GRACE_MS = 4000;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('graceful shutdown of the real command line (SIGTERM)', function () {
  this.timeout(120_000);
  let storeDir: string;
  const servers: ChildServer[] = [];
  const start = async () => {
    const server = await startChildServer({ config: { Secret: SECRET, StoreDir: storeDir, GracefulShutdownTimeout: `${GRACE_MS / 1000}s` } });
    servers.push(server);
    return server;
  };
  before(async () => {
    storeDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-graceful-'));
  });
  after(async () => {
    for (const server of servers) await server.stop();
    if (storeDir) await rm(storeDir, { recursive: true, force: true });
  });

  it('finishes the PUT, cuts the PATCH resumably when the grace runs out, refuses new connections and exits 0', async () => {
    const first = await start();
    const grant = await mintGrant(grantKey('', SECRET), { subject: 'alice', maxSize: 64 * 1024 * 1024, ttlSeconds: 3600 });
    const tusHeaders = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${grant}` };

    // The tus upload exists before the stop; its PATCH will send only part of the body.
    const tusData = randomBytes(4 * 1024 * 1024);
    const created = await rawRequest(first.url, 'POST', '/files/', { ...tusHeaders, 'Upload-Length': tusData.length, 'Upload-Metadata': `filename ${Buffer.from('cut.bin').toString('base64')}` });
    assert.equal(created.status, 201, created.body.toString());
    // The path: the restarted server listens on another port.
    const location = new URL(String(created.headers.location)).pathname;
    const uploadId = location.split('/').pop()!;

    // An idle keep-alive connection: one answered request, then nothing.
    const idle = await openConnection(first.url);
    await idle.write(head('GET', '/upload/nothing/here.txt', { Connection: 'keep-alive' }));
    await idle.waitFor(/^HTTP\/1\.1 404 [^]*\r\n\r\n/);

    // A legacy PUT with half its body sent.
    const putData = randomBytes(512 * 1024);
    const slot = 'graceful/put.bin';
    const mac = signSlot(SECRET, 'v2', slot, putData.length, 'application/octet-stream');
    const put = await openConnection(first.url);
    await put.write(head('PUT', `/upload/${encodeSlotPath(slot)}?v2=${mac}`, { 'Content-Length': putData.length, 'Content-Type': 'application/octet-stream' }));
    await put.write(putData.subarray(0, putData.length / 2));

    // A tus PATCH that announces the whole rest but sends only its first 1 MiB.
    const sent = 1024 * 1024;
    const patch = await openConnection(first.url);
    await patch.write(head('PATCH', location, { ...tusHeaders, 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': tusData.length }));
    await patch.write(tusData.subarray(0, sent));
    const tusFile = path.join(storeDir, '.hmac', 'tus', uploadId);
    await eventually(async () => (await stat(tusFile)).size === sent, 'the first MiB of the PATCH on disk');

    // Still open, waiting: the keep-alive connection for its next request, the PUT and the PATCH for their bodies.
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual([idle.closedAt, put.closedAt, put.received, patch.closedAt, patch.received], [undefined, undefined, '', undefined, '']);
    const signalled = Date.now();
    process.kill(first.pid, 'SIGTERM');
    await eventually(() => first.stdout.some((line) => / info server\.stopping signal=SIGTERM /.test(line)), 'server.stopping');

    // New connections are refused while the running transfers go on; the idle connection is closed at once.
    await eventually(async () => !(await connects(first.url)), 'a new connection refused', 2000);
    assert.ok(first.alive(), 'still running for the PUT and the PATCH');
    const idleClosed = await idle.closed(2000);
    assert.ok(idleClosed - signalled < 1500, `the idle connection closed ${idleClosed - signalled} ms after SIGTERM`);

    // The rest of the PUT arrives within the grace: it is committed and answered.
    await new Promise((r) => setTimeout(r, 500));
    await put.write(putData.subarray(putData.length / 2));
    await put.waitFor(/^HTTP\/1\.1 201 /, GRACE_MS);
    assert.ok(first.alive(), 'still running for the PATCH');

    // The PATCH never sends the rest: the grace runs out, its connection is cut, the process exits 0.
    const exit = await first.waitForExit(GRACE_MS + 10_000);
    const exitedAfter = Date.now() - signalled;
    assert.deepEqual(exit, { code: 0, signal: null }, [...first.stdout, ...first.stderr].slice(-20).join('\n'));
    assert.ok(exitedAfter >= GRACE_MS - 200, `exited ${exitedAfter} ms after SIGTERM, before the grace of ${GRACE_MS} ms ran out`);
    assert.ok(exitedAfter < GRACE_MS + 5000, `exited ${exitedAfter} ms after SIGTERM`);
    assert.ok(patch.closedAt !== undefined, 'the PATCH connection was closed');
    assert.doesNotMatch(patch.received, /^HTTP\/1\.1 2/);
    assert.ok(first.stdout.some((line) => / info server\.stopped/.test(line)), 'server.stopped logged');
    assert.deepEqual(first.stderr, []);

    // Restarted on the same StoreDir: the PUT's file is served, the tus upload resumes where the disk says.
    const second = await start();
    const got = await rawRequest(second.url, 'GET', `/upload/${encodeSlotPath(slot)}`);
    assert.equal(got.status, 200);
    assert.equal(sha256(got.body), sha256(putData));

    const onDisk = (await stat(tusFile)).size;
    assert.ok(onDisk > 0 && onDisk <= sent, `${onDisk} bytes of the PATCH on disk`);
    const headAnswer = await rawRequest(second.url, 'HEAD', location, tusHeaders);
    assert.equal(headAnswer.status, 200);
    assert.equal(headAnswer.headers['upload-offset'], String(onDisk));
    assert.equal(headAnswer.headers['upload-length'], String(tusData.length));
    const rest = tusData.subarray(onDisk);
    const finished = await rawRequest(second.url, 'PATCH', location, { ...tusHeaders, 'Upload-Offset': onDisk, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': rest.length }, rest);
    assert.equal(finished.status, 204, finished.body.toString());
    assert.equal(finished.headers['upload-offset'], String(tusData.length));
    const download = await rawRequest(second.url, 'GET', String(finished.headers['x-download-url']));
    assert.equal(download.status, 200);
    assert.equal(sha256(download.body), sha256(tusData));
    // Nothing of the cut PATCH was left in staging for nobody.
    assert.deepEqual((await readdir(path.join(storeDir, '.hmac', 'staging'))).length, 0);

    process.kill(second.pid, 'SIGTERM');
    assert.deepEqual(await second.waitForExit(10_000), { code: 0, signal: null });
  });
});
