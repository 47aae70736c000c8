// Certificates for the TLS tests, made with openssl: a private CA, leaf certificates it signs for a host name,
// certbot's live/ + archive/ layout (live/<host>/fullchain.pem is a symlink into archive/, replaced on renewal),
// and a TLS client that reports which certificate a server presents for a name.
import { execFile } from 'node:child_process';
import { mkdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { randomBytes, X509Certificate } from 'node:crypto';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { ensureDebianPackages } from './debian-packages.js';

const run = promisify(execFile);

export interface TestCa {
  cert: string;
  key: string;
  pem: string;
}

export interface Leaf {
  /** The leaf followed by the CA certificate, as certbot's fullchain.pem. */
  fullchain: string;
  privkey: string;
  /** SHA-256 fingerprint of the leaf, as X509Certificate.fingerprint256 prints it. */
  fingerprint: string;
}

/** A CA in dir (ca.pem, ca.key); EC keys, so that making many certificates stays quick. */
export async function makeCa(dir: string, name = 'hfs test CA'): Promise<TestCa> {
  await ensureDebianPackages({ openssl: 'openssl' });
  const cert = path.join(dir, 'ca.pem');
  const key = path.join(dir, 'ca.key');
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-keyout', key, '-out', cert,
  ]);
  return { cert, key, pem: await readFile(cert, 'utf8') };
}

/** A certificate for host (CN and SAN) signed by ca, valid for days. */
export async function makeLeaf(ca: TestCa, host: string, days = 2): Promise<Leaf> {
  const dir = path.dirname(ca.cert);
  const id = randomBytes(6).toString('hex');
  const key = path.join(dir, `${id}.key`);
  const csr = path.join(dir, `${id}.csr`);
  const crt = path.join(dir, `${id}.crt`);
  const ext = path.join(dir, `${id}.ext`);
  await writeFile(ext, `subjectAltName=DNS:${host}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${host}`, '-keyout', key, '-out', csr]);
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', String(days), '-extfile', ext, '-out', crt]);
  const leaf = await readFile(crt, 'utf8');
  return { fullchain: leaf + ca.pem, privkey: await readFile(key, 'utf8'), fingerprint: new X509Certificate(leaf).fingerprint256 };
}

/** certbot's layout below root: CertDir is root/live. */
export interface CertbotLayout {
  live: string;
  /** Writes archive/<host>/fullchainN.pem and privkeyN.pem, then points the live/<host>/ symlinks at them (as certbot renew does). */
  install(host: string, files: { fullchain: string; privkey: string }): Promise<void>;
  /** The archive files the live/<host>/ symlinks point at now. */
  current(host: string): { fullchain: string; privkey: string };
}

export function certbotLayout(root: string): CertbotLayout {
  const live = path.join(root, 'live');
  const versions = new Map<string, number>();
  const archived = (host: string, n: number) => ({
    fullchain: path.join(root, 'archive', host, `fullchain${n}.pem`),
    privkey: path.join(root, 'archive', host, `privkey${n}.pem`),
  });
  return {
    live,
    async install(host, files) {
      const n = (versions.get(host) ?? 0) + 1;
      versions.set(host, n);
      const target = archived(host, n);
      await mkdir(path.dirname(target.fullchain), { recursive: true });
      await mkdir(path.join(live, host), { recursive: true });
      await writeFile(target.fullchain, files.fullchain);
      await writeFile(target.privkey, files.privkey, { mode: 0o600 });
      for (const name of ['fullchain', 'privkey'] as const) {
        const link = path.join(live, host, `${name}.pem`);
        const temp = `${link}.new`;
        await symlink(path.relative(path.dirname(link), target[name]), temp);
        await rename(temp, link);
      }
    },
    current(host) {
      return archived(host, versions.get(host) ?? 0);
    },
  };
}

export interface Presented {
  subject: string;
  /** subjectaltname as Node prints it: "DNS:files.example.test". */
  altNames: string;
  issuer: string;
  fingerprint: string;
  /** Whether the chain verified against ca (only when ca was given). */
  authorized: boolean;
  authorizationError?: string;
}

/** Connects to 127.0.0.1:port, sending servername as SNI (none without it), and reports the certificate presented. */
export function presentedCertificate(port: number, servername?: string, ca?: string | string[]): Promise<Presented> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ...(servername !== undefined ? { servername } : {}),
      ...(ca !== undefined ? { ca } : {}),
      rejectUnauthorized: false,
    });
    socket.setTimeout(10_000, () => socket.destroy(new Error('TLS handshake timed out')));
    socket.once('secureConnect', () => {
      const cert = socket.getPeerCertificate();
      resolve({
        subject: String(cert.subject?.CN ?? ''),
        altNames: cert.subjectaltname ?? '',
        issuer: String(cert.issuer?.CN ?? ''),
        fingerprint: cert.fingerprint256,
        authorized: ca !== undefined && socket.authorized,
        ...(socket.authorizationError ? { authorizationError: String(socket.authorizationError) } : {}),
      });
      socket.end();
    });
    socket.once('error', reject);
  });
}
