// TLS on the server itself (EnableTLS, ACMEEnabled = false): certificates from CertDir in certbot's layout, one per
// host name and chosen by SNI; replaced certificates are picked up without a restart (watch, reload() as on SIGHUP),
// a broken replacement keeps the previous certificate, and a start without any usable certificate fails.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { certbotLayout, makeCa, makeLeaf, presentedCertificate, type CertbotLayout, type Leaf, type TestCa } from './helpers/certs.js';
import { signedPath } from './helpers/http.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';
import { httpsRequest, portOf } from './helpers/tls-server.js';

const FILES = 'files.example.test';
const SHARE = 'share.example.test';

describe('TLS from CertDir', function () {
  this.timeout(60_000);
  let dir: string;
  let ca: TestCa;
  let certbot: CertbotLayout;
  let server: TestServer;
  let port: number;
  const served = new Map<string, Leaf>();

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-tls-'));
    ca = await makeCa(dir);
    certbot = certbotLayout(path.join(dir, 'letsencrypt'));
    for (const host of [FILES, SHARE]) {
      const leaf = await makeLeaf(ca, host);
      await certbot.install(host, leaf);
      served.set(host, leaf);
    }
    server = await startTestServer({ EnableTLS: true, ACMEEnabled: false, CertDir: certbot.live, Hostnames: [FILES, SHARE] });
    port = portOf(server);
  });

  after(async () => {
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('serves each host name its own certificate by SNI, and the first one without SNI or for an unknown name', async () => {
    assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const files = await presentedCertificate(port, FILES, ca.pem);
    assert.equal(files.subject, FILES);
    assert.equal(files.altNames, `DNS:${FILES}`);
    assert.ok(files.authorized, files.authorizationError);
    const share = await presentedCertificate(port, SHARE, ca.pem);
    assert.equal(share.altNames, `DNS:${SHARE}`);
    assert.equal(share.fingerprint, served.get(SHARE)!.fingerprint);
    // Case does not matter in SNI, as in DNS.
    assert.equal((await presentedCertificate(port, SHARE.toUpperCase())).fingerprint, served.get(SHARE)!.fingerprint);
    assert.equal((await presentedCertificate(port)).fingerprint, served.get(FILES)!.fingerprint);
    assert.equal((await presentedCertificate(port, 'unknown.example.test')).fingerprint, served.get(FILES)!.fingerprint);
    assert.ok(await server.waitForLog(new RegExp(`info tls\\.certificate_loaded host=${SHARE.replace(/\./g, '\\.')} notAfter=`)));
  });

  it('answers HTTPS through each name, verified against the CA: an upload and its download through the legacy door', async () => {
    for (const host of [FILES, SHARE]) {
      const body = randomBytes(1000);
      const slot = `tls/${host}.bin`;
      const put = await httpsRequest(port, signedPath(server, slot, body.length), { servername: host, ca: ca.pem, method: 'PUT', body });
      assert.equal(put.status, 201, put.body.toString());
      assert.equal(put.fingerprint, served.get(host)!.fingerprint);
      const get = await httpsRequest(port, `/${server.config.UploadSubDir}/${slot}`, { servername: host, ca: ca.pem });
      assert.equal(get.status, 200);
      assert.deepEqual(get.body, body);
    }
  });

  it('picks up a certificate certbot replaced (new files, swapped symlinks) without a restart; an open keep-alive connection keeps working', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const before = await httpsRequest(port, '/upload/none/missing.txt', { servername: SHARE, ca: ca.pem, agent });
      assert.equal(before.status, 404);
      assert.equal(before.fingerprint, served.get(SHARE)!.fingerprint);
      const renewed = await makeLeaf(ca, SHARE);
      await certbot.install(SHARE, renewed);
      assert.ok(await server.waitForLog(new RegExp(`tls\\.certificate_loaded host=${SHARE.replace(/\./g, '\\.')} .*fingerprint=${renewed.fingerprint}`), 10_000), server.logs.join('\n'));
      // The open connection keeps the certificate it was opened with; a new one gets the new certificate.
      const again = await httpsRequest(port, '/upload/none/missing.txt', { servername: SHARE, ca: ca.pem, agent });
      assert.equal(again.status, 404);
      assert.ok(again.reusedSocket, 'the keep-alive connection was dropped');
      assert.equal(again.fingerprint, served.get(SHARE)!.fingerprint);
      assert.equal((await presentedCertificate(port, SHARE, ca.pem)).fingerprint, renewed.fingerprint);
      // The other name is untouched.
      assert.equal((await presentedCertificate(port, FILES)).fingerprint, served.get(FILES)!.fingerprint);
      served.set(SHARE, renewed);
    } finally {
      agent.destroy();
    }
  });

  it('re-reads the certificates on reload() (what SIGHUP calls), also a change no watcher sees', async () => {
    // A file rewritten behind the live/ symlink: nothing changes in the watched folders, and the poll is a minute away.
    const renewed = await makeLeaf(ca, FILES);
    const target = certbot.current(FILES);
    await writeFile(target.fullchain, renewed.fullchain);
    await writeFile(target.privkey, renewed.privkey);
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await presentedCertificate(port, FILES)).fingerprint, served.get(FILES)!.fingerprint);
    await server.running.tls!.reload();
    assert.equal((await presentedCertificate(port, FILES, ca.pem)).fingerprint, renewed.fingerprint);
    // Clients without SNI get the first host name's certificate: the new one.
    assert.equal((await presentedCertificate(port)).fingerprint, renewed.fingerprint);
    served.set(FILES, renewed);
  });

  it('keeps the previous certificate when a replacement is broken or its key does not match, and logs it', async () => {
    const previous = served.get(SHARE)!;
    const other = await makeLeaf(ca, SHARE);
    await certbot.install(SHARE, { fullchain: '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n', privkey: other.privkey });
    const broken = await server.waitForLog(/error tls\.certificate_failed host=share\.example\.test .*cause=/, 10_000);
    assert.ok(broken, server.logs.join('\n'));
    assert.match(broken, /fullchain\.pem/);
    assert.match(broken, new RegExp(`keeping=${previous.fingerprint}`));
    assert.equal((await presentedCertificate(port, SHARE)).fingerprint, previous.fingerprint);

    // A valid certificate with somebody else's key.
    await certbot.install(SHARE, { fullchain: other.fullchain, privkey: (await makeLeaf(ca, SHARE)).privkey });
    assert.ok(await server.waitForLog(/error tls\.certificate_failed host=share\.example\.test .*cause="[^"]*key values mismatch"/, 10_000), server.logs.join('\n'));
    assert.equal((await presentedCertificate(port, SHARE)).fingerprint, previous.fingerprint);

    // A good certificate again is taken up.
    await certbot.install(SHARE, other);
    assert.ok(await server.waitForLog(new RegExp(`tls\\.certificate_loaded host=share\\.example\\.test .*fingerprint=${other.fingerprint}`), 10_000));
    assert.equal((await presentedCertificate(port, SHARE)).fingerprint, other.fingerprint);
    served.set(SHARE, other);
  });
});

describe('TLS start-up', function () {
  this.timeout(30_000);
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-tls-start-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('refuses to start with EnableTLS, ACMEEnabled = false and no usable certificate, naming the files', async () => {
    const certDir = path.join(dir, 'certs');
    await mkdir(path.join(certDir, SHARE), { recursive: true });
    await writeFile(path.join(certDir, SHARE, 'fullchain.pem'), 'garbage');
    await writeFile(path.join(certDir, SHARE, 'privkey.pem'), 'garbage');
    const storeDir = path.join(dir, 'store');
    await assert.rejects(startTestServer({ EnableTLS: true, ACMEEnabled: false, CertDir: certDir, Hostnames: [FILES, SHARE], StoreDir: storeDir }), (err: Error) => {
      assert.match(err.message, /no usable certificate/);
      assert.ok(err.message.includes(path.join(certDir, FILES, 'fullchain.pem')), err.message);
      assert.ok(err.message.includes(path.join(certDir, FILES, 'privkey.pem')), err.message);
      assert.match(err.message, /ENOENT/);
      assert.ok(err.message.includes(path.join(certDir, SHARE, 'fullchain.pem')), err.message);
      return true;
    });
  });

  it('needs at least one host name, and host names that are folder names', async () => {
    const storeDir = path.join(dir, 'store');
    await assert.rejects(startTestServer({ EnableTLS: true, ACMEEnabled: false, CertDir: dir, Hostnames: [], StoreDir: storeDir }), /Hostnames = \[\]: expected at least one host name/);
    await assert.rejects(startTestServer({ EnableTLS: true, CertDir: dir, Hostnames: ['../etc'], StoreDir: storeDir }), /Hostnames\[0\] = "\.\.\/etc": expected a host name/);
  });
});
