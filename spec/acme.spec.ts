// ACME against Debian's pebble on loopback: a host name without a certificate gets one and it is served by SNI
// without a restart; a renewal on demand replaces it; a restart from the same CertDir uses the stored certificate
// without asking the CA; a failing CA is logged with its reason, retried with back-off, and the server keeps serving.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { ConfigInput } from '../server/config-schema.js';
import type { StartOptions } from '../server/run.js';
import { presentedCertificate } from './helpers/certs.js';
import { signedPath } from './helpers/http.js';
import { freePort } from './helpers/local-daemon.js';
import { startPebble, type RunningPebble } from './helpers/pebble.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';
import { httpsRequest, portOf } from './helpers/tls-server.js';

// The mock DNS answers every name with 127.0.0.1.
const HOST = 'files.hfs.test';
const ISSUED = /info acme\.issued host=files\.hfs\.test notAfter=\S+/;
const FAILED = /error acme\.failed host=files\.hfs\.test cause=/;

/** Fast enough for a test: pebble answers at once, and a CA that is down must not be asked five more times. */
const FAST: StartOptions = { acme: { backoffMs: 300, maxBackoffMs: 5_000, pollMinMs: 100, pollMaxMs: 500, requestRetries: 0 } };

function plainGet(port: number, requestPath: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: requestPath, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', reject);
  });
}

function countOf(server: TestServer, pattern: RegExp): number {
  return server.logs.filter((l) => pattern.test(l)).length;
}

async function waitForCount(server: TestServer, pattern: RegExp, count: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (countOf(server, pattern) < count) {
    if (Date.now() > deadline) throw new Error(`fewer than ${count} lines like ${pattern}:\n${server.logs.join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('ACME (pebble)', function () {
  this.timeout(120_000);
  let dir: string;
  let pebble: RunningPebble;
  let challengePort: number;
  let certDir: string;
  let server: TestServer | undefined;
  let issuedFingerprint: string;
  let root: string;

  const config = (overrides: Partial<ConfigInput> = {}): Partial<ConfigInput> => ({
    EnableTLS: true,
    ACMEEnabled: true,
    ACMEDirectoryURL: pebble.directoryUrl,
    ACMECAFile: pebble.apiCaFile,
    ACMEEmail: 'admin@hfs.test',
    ACMEHTTPPort: challengePort,
    CertDir: certDir,
    Hostnames: [HOST],
    StoreDir: path.join(dir, 'store'),
    ...overrides,
  });
  const restart = async (overrides: Partial<ConfigInput> = {}, options: StartOptions = FAST) => {
    await server?.close();
    server = undefined;
    server = await startTestServer(config(overrides), options);
    return server;
  };

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-acme-'));
    certDir = path.join(dir, 'certs');
    challengePort = await freePort();
    pebble = await startPebble({ httpPort: challengePort });
  });

  after(async () => {
    await server?.close();
    await pebble?.dispose();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('obtains a certificate for a host name without one and serves it by SNI, without a restart', async () => {
    const s = await restart();
    const port = portOf(s);
    assert.match(s.url, /^https:/);
    const line = await s.waitForLog(ISSUED, 60_000);
    assert.ok(line, s.logs.join('\n'));
    root = await pebble.root();
    const presented = await presentedCertificate(port, HOST, root);
    assert.ok(presented.authorized, `${presented.authorizationError}\n${s.logs.join('\n')}`);
    assert.equal(presented.altNames, `DNS:${HOST}`);
    assert.match(presented.issuer, /^Pebble Intermediate CA/);
    assert.ok(line.includes(`notAfter=${s.running.tls!.certificate(HOST)!.notAfter.toISOString()}`));
    issuedFingerprint = presented.fingerprint;
    // Stored as certbot would, the keys readable by the owner only.
    assert.equal((await stat(path.join(certDir, HOST, 'privkey.pem'))).mode & 0o777, 0o600);
    assert.equal((await stat(path.join(certDir, '.acme', 'account.pem'))).mode & 0o777, 0o600);
    assert.match(await readFile(path.join(certDir, HOST, 'fullchain.pem'), 'utf8'), /(-----BEGIN CERTIFICATE-----[^]*){2}/);
    // And HTTPS works through the name, verified up to pebble's root.
    const body = randomBytes(500);
    const put = await httpsRequest(port, signedPath(s, 'acme/file.bin', body.length), { servername: HOST, ca: root, method: 'PUT', body });
    assert.equal(put.status, 201);
    const get = await httpsRequest(port, `/${s.config.UploadSubDir}/acme/file.bin`, { servername: HOST, ca: root });
    assert.deepEqual(get.body, body);
  });

  it('answers only challenge tokens on ACMEHTTPPort, 404 for everything else', async () => {
    assert.equal(server!.running.acme!.challengeAddress, `http://127.0.0.1:${challengePort}`);
    assert.equal(await plainGet(challengePort, '/'), 404);
    assert.equal(await plainGet(challengePort, '/.well-known/acme-challenge/not-a-token'), 404);
    assert.equal(await plainGet(challengePort, `/${server!.config.UploadSubDir}/acme/file.bin`), 404);
  });

  it('renews on demand and serves the new certificate without a restart', async () => {
    const s = server!;
    const before = countOf(s, ISSUED);
    assert.equal(await s.running.acme!.renewNow(HOST), true, s.logs.join('\n'));
    assert.equal(countOf(s, ISSUED), before + 1);
    const presented = await presentedCertificate(portOf(s), HOST, root);
    assert.ok(presented.authorized, presented.authorizationError);
    assert.notEqual(presented.fingerprint, issuedFingerprint);
    issuedFingerprint = presented.fingerprint;
  });

  it('logs a refused order with the CA\'s reason, retries with back-off, and keeps serving the certificate it has', async () => {
    // The challenge listener is not where pebble validates, and every certificate counts as due: each order fails
    // at pebble's validation.
    const s = await restart({ ACMEHTTPPort: await freePort() }, { acme: { ...FAST.acme, renewBeforeMs: 100 * 365 * 86_400_000 } });
    await waitForCount(s, FAILED, 2, 60_000);
    const [first, second] = s.logs.filter((l) => FAILED.test(l));
    assert.match(first!, /connection refused|Connection refused/i);
    assert.match(first!, /retryIn=300ms/);
    assert.match(second!, /retryIn=600ms/);
    assert.equal(countOf(s, ISSUED), 0);
    assert.equal((await presentedCertificate(portOf(s), HOST, root)).fingerprint, issuedFingerprint);
  });

  it('logs why when the directory URL is wrong, and keeps serving', async () => {
    const s = await restart({ ACMEDirectoryURL: `${pebble.directoryUrl.replace(/\/dir$/, '')}/no-such-directory` }, { acme: { ...FAST.acme, renewBeforeMs: 100 * 365 * 86_400_000 } });
    await waitForCount(s, FAILED, 1, 30_000);
    assert.match(s.logs.find((l) => FAILED.test(l))!, /cause="[^"]*404[^"]*no-such-directory/);
    assert.equal((await presentedCertificate(portOf(s), HOST)).fingerprint, issuedFingerprint);
  });

  it('starts while no certificate exists yet, refusing handshakes until ACME has one', async () => {
    const s = await restart({ CertDir: path.join(dir, 'no-certs-yet'), ACMEDirectoryURL: `${pebble.directoryUrl.replace(/\/dir$/, '')}/no-such-directory` });
    await waitForCount(s, FAILED, 1, 30_000);
    assert.ok(s.logs.some((l) => /info tls\.certificate_missing host=files\.hfs\.test .*cause=ENOENT/.test(l)));
    await assert.rejects(presentedCertificate(portOf(s), HOST));
    await assert.rejects(presentedCertificate(portOf(s)));
  });

  it('restarts from the same CertDir with the stored certificate without asking the CA (pebble stopped)', async () => {
    await pebble.stop();
    const s = await restart();
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(countOf(s, /acme\.(issued|failed)/), 0, s.logs.join('\n'));
    const presented = await presentedCertificate(portOf(s), HOST, root);
    assert.ok(presented.authorized, presented.authorizationError);
    assert.equal(presented.fingerprint, issuedFingerprint);
  });

  it('logs why when the CA cannot be reached, and keeps serving', async () => {
    const s = server!;
    assert.equal(await s.running.acme!.renewNow(HOST), false);
    const line = s.logs.find((l) => FAILED.test(l));
    assert.ok(line, s.logs.join('\n'));
    assert.match(line, /ECONNREFUSED/);
    assert.equal((await presentedCertificate(portOf(s), HOST)).fingerprint, issuedFingerprint);
  });

});
